"""IDX reader against torchvision's MNIST reader; Fashion-MNIST discovery; composite generation."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch
import torchvision

from bench.data import DATASETS
from bench.data import composites, fashion_mnist
from bench.data.idx import IDXFormatError, read_idx, write_idx


def _fixture_fashion_mnist(root, n_train=40, n_test=30, seed=0):
    """Write the four official Fashion-MNIST files (gzip IDX) with known content."""
    rng = np.random.default_rng(seed)
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True)
    data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 8:20, 8:20] = 255  # a solid "garment" so composites have an object mask
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
        data[split] = (images, labels)
    return folder, data


def test_idx_matches_torchvision_reader(tmp_path):
    folder, data = _fixture_fashion_mnist(tmp_path)
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for split in ("train", "t10k"):
        for kind, reader in (("images-idx3", read_image_file), ("labels-idx1", read_label_file)):
            gz = folder / f"{split}-{kind}-ubyte.gz"
            raw = tmp_path / gz.stem
            with gzip.open(gz) as src, open(raw, "wb") as dst:
                shutil.copyfileobj(src, dst)
            ours = read_idx(gz)
            assert np.array_equal(ours, reader(str(raw)).numpy())
            assert np.array_equal(read_idx(raw), ours)


def test_fashion_mnist_loader_matches_torchvision_dataset(tmp_path):
    folder, data = _fixture_fashion_mnist(tmp_path)
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in folder.iterdir():
        with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    tv = torchvision.datasets.FashionMNIST(str(tmp_path / "tv"), train=False, download=False)
    ours = fashion_mnist.load_split("test", tmp_path)
    assert np.array_equal(ours.images, tv.data.numpy()) and np.array_equal(ours.labels, tv.targets.numpy())
    assert tuple(tv.classes) == fashion_mnist.CLASSES


def test_idx_errors_are_specific(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(IDXFormatError, match="two zero bytes"):
        read_idx(bad)
    short = tmp_path / "short-idx"
    short.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(IDXFormatError, match="promises 5 data bytes"):
        read_idx(short)
    for dtype in (np.int16, np.int32, np.float32, np.float64, np.int8):
        arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        write_idx(tmp_path / "x.idx", arr)
        back = read_idx(tmp_path / "x.idx")
        assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_missing_fashion_mnist_names_paths_and_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as err:
        fashion_mnist.load_split("train", tmp_path / "root")
    assert str(tmp_path / "root" / "fashion-mnist") in str(err.value)


def test_real_fashion_mnist_is_installed_and_balanced():
    train = fashion_mnist.load_split("train")
    assert train.images.shape == (60000, 28, 28)
    assert np.array_equal(np.bincount(train.labels), np.full(10, 6000))


def test_composites_deterministic_masks_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    folder, data = _fixture_fashion_mnist(tmp_path)
    entry = DATASETS.get("fmnist_composites")
    params = dict(img_size=56, train_size=20, eval_size=12)
    a = entry.load("train", tmp_path, **params)
    assert a.images.shape == (20, 56, 56, 3) and a.masks.shape == (20, 56, 56)
    # labels come from the fixture, masks hold label + 1 where the object is, 0 elsewhere
    assert set(a.labels) <= set(range(10))
    for img_mask, label in zip(a.masks, a.labels):
        assert set(np.unique(img_mask)) == {0, label + 1}
    cached = list((tmp_path / "cache" / "data" / "fmnist_composites").glob("train_*.npz"))
    assert len(cached) == 1
    fresh = composites.generate("train", data_root=tmp_path, img_size=56, size=20, seed=0, severity=3)
    assert np.array_equal(fresh.images, a.images)
    other_seed = composites.generate("train", data_root=tmp_path, img_size=56, size=20, seed=1, severity=3)
    assert not np.array_equal(other_seed.images, a.images)
    # shifted splits draw the same garments as test but change the pixels
    test = entry.load("test", tmp_path, **params)
    assert set(composites.OWN_SHIFTS) < set(entry.shift_splits) and entry.default_eval_splits == ("test", *composites.OWN_SHIFTS)
    for split in (*composites.OWN_SHIFTS, "gen/contrast/5"):
        shifted = entry.load(split, tmp_path, **params)
        assert np.array_equal(shifted.labels, test.labels)
        assert np.abs(shifted.images.astype(int) - test.images.astype(int)).mean() > 5
    # generated corruptions are the test split corrupted, more at higher severity
    diffs = [np.abs(entry.load(f"gen/gaussian_noise/{s}", tmp_path, **params).images.astype(int) - test.images).mean() for s in (1, 3, 5)]
    assert 0 < diffs[0] < diffs[1] < diffs[2]


def test_palette_shift_changes_hue_family(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    _fixture_fashion_mnist(tmp_path)
    entry = DATASETS.get("fmnist_composites")
    a = entry.load("test", tmp_path, img_size=56, eval_size=12)
    b = entry.load("shift_palette", tmp_path, img_size=56, eval_size=12)
    # palette A is red→green, B is cyan→magenta: blue dominates inside the object only for B
    def blue_share(arr):
        inside = arr.masks > 0
        px = arr.images[inside].astype(float)
        return (px[:, 2] > px[:, 0]).mean()
    assert blue_share(b) > blue_share(a) + 0.3


def test_plain_fashion_mnist_is_registered_like_the_others(tmp_path):
    folder, data = _fixture_fashion_mnist(tmp_path)
    entry = DATASETS.get("fashion_mnist")
    assert entry.num_classes == 10 and entry.task == "classification"
    test = entry.load("test", tmp_path)
    assert test.images.shape == (30, 28, 28, 3)
    assert np.array_equal(test.images[..., 1], data["t10k"][0]) and np.array_equal(test.labels, data["t10k"][1])
