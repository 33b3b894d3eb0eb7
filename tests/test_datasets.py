"""Real-dataset readers on tiny fixtures in the exact official formats, cross-checked against
torchvision's own dataset classes where they exist, plus label maps and layout errors."""

from __future__ import annotations

import shutil
import tarfile

import numpy as np
import pytest
import torch
import torchvision

from bench.data import DATASETS, DatasetError
from bench.data import shifts
from bench.data.classification import imagenet_wnids
from bench.data.segmentation import coco_raw_to_train
from bench.evaluate import evaluate_split
import data_fixtures as fx


@pytest.fixture
def no_env_root(monkeypatch):
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)


def _all_images(split) -> np.ndarray:
    return np.stack([split.image(i) for i in range(len(split))])


# --- classification -----------------------------------------------------------------------------

def test_cifar10_matches_written_batches_and_torchvision(tmp_path, monkeypatch, no_env_root):
    truth = fx.write_cifar10(tmp_path)
    entry = DATASETS.get("cifar10")
    # stock torchvision class, its md5 checks switched off for the fixture: the independent reference
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    for split in ("train", "test"):
        ours = entry.load(split, tmp_path)
        tv = torchvision.datasets.CIFAR10(str(tmp_path), train=split == "train")
        assert np.array_equal(ours.images, truth[split][0]) and np.array_equal(ours.labels, truth[split][1])
        assert np.array_equal(ours.images, tv.data) and ours.labels.tolist() == tv.targets
    assert entry.class_names(tmp_path) == tuple(tv.classes)
    assert len(entry.load("train", tmp_path)) == 20  # 5 batches × 4


def test_cifar100_fine_labels_and_names_from_meta(tmp_path, monkeypatch, no_env_root):
    truth = fx.write_cifar100(tmp_path)
    entry = DATASETS.get("cifar100")
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    tv = torchvision.datasets.CIFAR100(str(tmp_path), train=True)
    ours = entry.load("train", tmp_path)
    assert np.array_equal(ours.images, tv.data) and ours.labels.tolist() == tv.targets
    assert np.array_equal(ours.labels, truth["train"][1])
    assert entry.class_names(tmp_path)[:2] == ("fine00", "fine01") and entry.num_classes == 100


def test_stl10_binary_matches_torchvision(tmp_path, monkeypatch, no_env_root):
    truth = fx.write_stl10(tmp_path)
    monkeypatch.setattr(torchvision.datasets.stl10, "check_integrity", lambda *a, **k: True)
    for split in ("train", "test"):
        ours = DATASETS.get("stl10").load(split, tmp_path)
        tv = torchvision.datasets.STL10(str(tmp_path), split=split)
        assert np.array_equal(ours.images, truth[split][0]) and np.array_equal(ours.labels, truth[split][1])
        assert np.array_equal(ours.images, tv.data.transpose(0, 2, 3, 1)) and np.array_equal(ours.labels, tv.labels)
        assert np.array_equal(np.asarray(tv[3][0]), ours.image(3))


def test_tiny_imagenet_folders_and_val_annotations(tmp_path, no_env_root):
    truth = fx.write_tiny_imagenet(tmp_path)
    entry = DATASETS.get("tiny_imagenet")
    val = entry.load("val", tmp_path)
    assert np.array_equal(val.labels, truth["val_labels"]) and val.image(0).shape == (64, 64, 3)
    train = entry.load("train", tmp_path)
    tv = torchvision.datasets.ImageFolder(str(tmp_path / "tiny-imagenet-200" / "train"), allow_empty=True)
    # ImageFolder (sorted wnids) is the class order: same files, same labels
    assert [p for p, _ in tv.samples] == list(train.paths) and [y for _, y in tv.samples] == train.labels.tolist()
    assert np.array_equal(train.image(1), np.asarray(tv[1][0]))
    names = entry.class_names(tmp_path)
    assert len(names) == 200 and names[0] == f"thing {sorted(truth['wnids'])[0][-3:]}"


def test_imagenet_flat_val_labels_match_torchvision_devkit_parser(tmp_path, monkeypatch, no_env_root):
    truth = fx.write_imagenet(tmp_path)
    entry = DATASETS.get("imagenet")
    val = entry.load("val", tmp_path)
    assert np.array_equal(val.labels, truth["val_labels"])
    # torchvision's devkit parser on the same files (as a tarball), md5 check off
    devkit = tmp_path / "imagenet" / "ILSVRC2012_devkit_t12"
    tv_root = tmp_path / "tv"
    tv_root.mkdir()
    with tarfile.open(tv_root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        tar.add(devkit, arcname="ILSVRC2012_devkit_t12")
    monkeypatch.setattr(torchvision.datasets.imagenet, "_verify_archive", lambda *a, **k: None)
    torchvision.datasets.imagenet.parse_devkit_archive(str(tv_root))
    wnid_to_classes, val_wnids = torch.load(tv_root / "meta.bin", weights_only=False)
    assert [imagenet_wnids()[y] for y in val.labels] == list(val_wnids)
    assert set(wnid_to_classes) == set(truth["chosen"])  # the non-leaf synset is excluded by both

    train = entry.load("train", tmp_path)
    tv = torchvision.datasets.ImageFolder(str(tmp_path / "imagenet" / "train"))
    assert [p for p, _ in tv.samples] == list(train.paths)
    assert [imagenet_wnids().index(tv.classes[y]) for _, y in tv.samples] == train.labels.tolist()
    assert sorted(set(train.labels.tolist())) == [0, 3, 500, 999]


def test_imagenet_sorted_val_folders(tmp_path, no_env_root):
    truth = fx.write_imagenet(tmp_path, flat_val=False)
    shutil.rmtree(tmp_path / "imagenet" / "ILSVRC2012_devkit_t12")  # not needed when val is sorted
    val = DATASETS.get("imagenet").load("val", tmp_path)
    assert sorted(val.labels.tolist()) == sorted(truth["val_labels"].tolist())


# --- shift sets ---------------------------------------------------------------------------------

def test_cifar10_c_severity_slices_and_generated_fallback(tmp_path, no_env_root):
    fx.write_cifar10(tmp_path)
    truth = fx.write_cifar_c(tmp_path, "CIFAR-10-C", ["fog", "gaussian_noise"], per_severity=3)
    entry = DATASETS.get("cifar10")
    for sev in (1, 3, 5):
        split = entry.load(f"c/fog/{sev}", tmp_path)
        assert np.array_equal(split.images, truth["images"]["fog"][(sev - 1) * 3 : sev * 3])
        assert np.array_equal(split.labels, truth["labels"][(sev - 1) * 3 : sev * 3])
        assert split.meta["severity"] == sev and split.meta["corruption_source"] == "prepared"
    assert entry.is_shift("c/fog/2") and not entry.is_shift("test")
    with pytest.raises(DatasetError, match=r"corruption file not found") as err:
        entry.load("c/snow/1", tmp_path)
    assert str(tmp_path / "CIFAR-10-C" / "snow.npy") in str(err.value) and "gen/<corruption>/<severity>" in str(err.value)

    test = entry.load("test", tmp_path)
    gen = entry.load("gen/gaussian_noise/5", tmp_path)
    again = entry.load("gen/gaussian_noise/5", tmp_path)
    other_seed = entry.load("gen/gaussian_noise/5", tmp_path, corruption_seed=1)
    assert np.array_equal(gen.images, again.images) and not np.array_equal(gen.images, other_seed.images)
    assert np.array_equal(gen.labels, test.labels) and gen.meta["corruption_source"] == "generated"
    assert np.abs(gen.images.astype(int) - test.images).mean() > 20  # severity 5 noise is strong


def test_cifar_c_wrong_shape_is_a_layout_error(tmp_path, no_env_root):
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    np.save(folder / "fog.npy", np.zeros((7, 32, 32, 3), np.uint8))
    np.save(folder / "labels.npy", np.zeros(7, np.uint8))
    with pytest.raises(DatasetError, match=r"expected \(5·N, 32, 32, 3\) uint8"):
        DATASETS.get("cifar10").load("c/fog/1", tmp_path)


def test_cifar101_and_stl10_as_cifar10_shift(tmp_path, no_env_root):
    x, y = fx.write_cifar101(tmp_path)
    stl = fx.write_stl10(tmp_path)
    entry = DATASETS.get("cifar10")
    c101 = entry.load("cifar10.1-v6", tmp_path)
    assert np.array_equal(c101.images, x) and np.array_equal(c101.labels, y)

    shifted = entry.load("stl10", tmp_path)
    stl_x, stl_y = stl["test"]
    keep = stl_y != 7  # monkey has no CIFAR-10 class
    assert np.array_equal(shifted.images, stl_x[keep]) and shifted.meta["dropped"] == int((~keep).sum())
    stl_names = DATASETS.get("stl10").classes
    cifar_names = entry.classes
    renamed = {"car": "automobile"}
    for s_label, c_label in zip(stl_y[keep], shifted.labels):  # the same object class by name
        assert cifar_names[c_label] == renamed.get(stl_names[s_label], stl_names[s_label])
    assert shifted.label_space == tuple(i for i in range(10) if cifar_names[i] != "frog")


def test_cifar10_as_stl10_shift_by_class_name(tmp_path, monkeypatch, no_env_root):
    cifar = fx.write_cifar10(tmp_path, n_test=13)  # test labels 0..9, 0, 1, 2: one frog (6)
    fx.write_stl10(tmp_path)
    entry = DATASETS.get("stl10")
    assert entry.is_shift("cifar10") and entry.default_eval_splits == ("test", "cifar10")
    shifted = entry.load("cifar10", tmp_path)
    x, y = cifar["test"]
    keep = y != 6  # STL-10 has no frog
    assert np.array_equal(shifted.images, x[keep]) and shifted.meta["dropped"] == 1 and len(shifted) == 12
    # class names as each dataset's own files state them (torchvision reads batches.meta and class_names.txt)
    for module in (torchvision.datasets.cifar, torchvision.datasets.stl10):
        monkeypatch.setattr(module, "check_integrity", lambda *a, **k: True)
    cifar_names = torchvision.datasets.CIFAR10(str(tmp_path), train=False).classes
    stl_names = torchvision.datasets.STL10(str(tmp_path), split="test").classes
    assert tuple(stl_names) == entry.class_names(tmp_path)
    renamed = {"automobile": "car"}
    assert [stl_names[s] for s in shifted.labels] == [renamed.get(cifar_names[c], cifar_names[c]) for c in y[keep]]
    assert shifted.label_space == tuple(i for i in range(10) if stl_names[i] != "monkey")  # monkey is never predicted
    assert shifts.CIFAR_TO_STL == {c: s for s, c in shifts.STL_TO_CIFAR.items()} and entry.facts["cifar10_to_stl10"] == shifts.CIFAR_TO_STL
    entry.check("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DatasetError, match="batch file not found") as err:
        entry.check("cifar10", tmp_path)
    assert err.value.expected == tmp_path / "cifar-10-batches-py" / "test_batch"


def test_tiny_imagenet_c_matches_imagefolder_in_tiny_imagenet_class_order(tmp_path, no_env_root):
    fx.write_tiny_imagenet(tmp_path)
    truth = fx.write_tiny_imagenet_c(tmp_path, corruptions=("fog",), severities=(1, 3))
    entry = DATASETS.get("tiny_imagenet")
    c_splits = shifts.corruption_split_names("c", shifts.BENCHMARK_CORRUPTIONS)
    assert len(c_splits) == 75 and entry.default_eval_splits == ("val", *c_splits)
    assert all(entry.is_shift(s) for s in c_splits) and not entry.is_shift("val")
    # the source dataset's class order: ImageFolder over its train/ class folders
    train_order = torchvision.datasets.ImageFolder(str(tmp_path / "tiny-imagenet-200" / "train"), allow_empty=True).classes
    for sev in (1, 3):
        ours = entry.load(f"c/fog/{sev}", tmp_path)
        tv = torchvision.datasets.ImageFolder(str(tmp_path / "Tiny-ImageNet-C" / "fog" / str(sev)), allow_empty=True)
        assert tv.classes == train_order == sorted(fx.tiny_wnids())
        assert [p for p, _ in tv.samples] == list(ours.paths) and [y for _, y in tv.samples] == ours.labels.tolist()
        x, y = truth[("fog", sev)]
        assert np.array_equal(ours.labels, y) and sorted(set(y.tolist())) == [0, 57, 199]
        for i in range(len(ours)):
            assert np.array_equal(ours.image(i), np.asarray(tv[i][0]))
            assert np.abs(ours.image(i).astype(int) - x[i]).mean() < 3, i  # JPEG of a gradient: near exact
        assert ours.meta == {"corruption": "fog", "severity": sev, "corruption_source": "prepared"} and ours.label_space is None
    assert not np.array_equal(entry.load("c/fog/1", tmp_path).image(0), entry.load("c/fog/3", tmp_path).image(0))


def test_tiny_imagenet_c_layout_errors(tmp_path, no_env_root):
    fx.write_tiny_imagenet(tmp_path)
    fx.write_tiny_imagenet_c(tmp_path, corruptions=("fog",), severities=(1, 3), per_class=1)
    entry = DATASETS.get("tiny_imagenet")
    entry.check("c/fog/1", tmp_path)
    with pytest.raises(DatasetError, match="corruption folder not found") as err:
        entry.check("c/snow/2", tmp_path)
    message = str(err.value)
    assert err.value.expected == tmp_path / "Tiny-ImageNet-C" / "snow"
    assert "dataset 'tiny_imagenet (Tiny-ImageNet-C)', split 'c/snow/2'" in message
    assert f"nearest existing folder {tmp_path / 'Tiny-ImageNet-C'} holds fog/" in message
    for part in ("Tiny-ImageNet-C/<corruption>/<severity 1..5>/<wnid>/*.JPEG", "Tiny-ImageNet-C.tar", "Hendrycks & Dietterich",
                 "gen/<corruption>/<severity>", "--data-root"):
        assert part in message, message
    assert "http" not in message
    with pytest.raises(DatasetError, match="severity folder not found"):
        entry.load("c/fog/2", tmp_path)
    severity = tmp_path / "Tiny-ImageNet-C" / "fog" / "3"
    shutil.rmtree(severity / sorted(fx.tiny_wnids())[57])
    with pytest.raises(DatasetError, match="1 of 200 class folders missing") as err:
        entry.check("c/fog/3", tmp_path)
    assert err.value.expected == severity / sorted(fx.tiny_wnids())[57]
    (severity / "n99999999").mkdir()
    with pytest.raises(DatasetError, match=r"1 folder\(s\) are not Tiny-ImageNet wnids \(e.g. 'n99999999'\)"):
        entry.load("c/fog/3", tmp_path)
    shutil.rmtree(tmp_path / "tiny-imagenet-200")  # the class order comes from the source dataset's wnids.txt
    with pytest.raises(DatasetError, match="folder not found") as err:
        entry.check("c/fog/1", tmp_path)
    assert err.value.expected == tmp_path / "tiny-imagenet-200" and "split 'c/fog/1'" in str(err.value)


def test_data_check_sees_the_new_shift_sets(tmp_path, no_env_root, capsys):
    from bench.cli import main

    data = tmp_path / "data"
    fx.write_cifar10(data)
    fx.write_stl10(data)
    fx.write_tiny_imagenet(data)
    fx.write_tiny_imagenet_c(data, corruptions=("fog",), severities=(1, 2, 3, 4, 5), per_class=1)
    suite = tmp_path / "shifts.yaml"
    suite.write_text(
        "name: shifts\ndata_root: data\ndefaults:\n  backbone: {name: dinov2_tiny, weights: random, img_size: 28}\n"
        "  data: {num_workers: 0}\n  train: {epochs: 1, batch_size: 8}\nmatrix:\n  data.name: [stl10, tiny_imagenet]\n  method: [sft]\n"
    )
    assert main(["data", "check", str(suite)]) == 3  # default eval splits: Tiny-ImageNet-C has only fog here
    out = capsys.readouterr().out
    assert "ok      stl10: train, test, cifar10" in out
    assert "ok      tiny_imagenet: train, val, c/fog/1, c/fog/2, c/fog/3, c/fog/4" in out
    assert "MISSING tiny_imagenet: c/gaussian_noise/1" in out and "corruption folder not found" in out
    assert "MISSING stl10" not in out


def test_label_space_restricts_predictions():
    logits = torch.tensor([[0.0, 5.0, 1.0, 0.5], [3.0, 0.0, 0.0, 2.0]])
    labels = np.array([2, 3])
    full = evaluate_split(lambda x: x, [logits], labels, torch.device("cpu"))
    masked = evaluate_split(lambda x: x, [logits], labels, torch.device("cpu"), label_space=(2, 3))
    assert full["top1"] == 0.0 and masked["top1"] == 1.0 and masked["label_space_size"] == 2
    # NLL over the subset = softmax restricted to classes 2 and 3
    expect = -np.mean([np.log(np.exp(1) / (np.exp(1) + np.exp(0.5))), np.log(np.exp(2) / (np.exp(0) + np.exp(2)))])
    assert masked["nll"] == pytest.approx(expect, rel=1e-5)


def test_imagenet_shift_sets(tmp_path, no_env_root):
    wnids = imagenet_wnids()
    r_subset = shifts.imagenet_subset("r")
    a_subset = shifts.imagenet_subset("a")
    assert len(r_subset) == 200 and len(a_subset) == 200 and r_subset != a_subset
    fx.write_class_folders(tmp_path / "imagenetv2-matched-frequency-format-val", ["0", "2", "10", "999"], suffix=".jpeg")
    fx.write_class_folders(tmp_path / "imagenet-r", [wnids[r_subset[0]], wnids[r_subset[-1]]])
    fx.write_class_folders(tmp_path / "imagenet-a", [wnids[a_subset[5]]])
    fx.write_class_folders(tmp_path / "imagenet-sketch" / "sketch", [wnids[7], wnids[8]], suffix=".JPEG")
    fx.write_class_folders(tmp_path / "imagenet-c" / "fog" / "3", [wnids[1]], suffix=".JPEG")
    entry = DATASETS.get("imagenet")
    v2 = entry.load("v2", tmp_path)
    assert sorted(v2.labels.tolist()) == [0, 2, 10, 999]  # folder names are class indices, not sort ranks
    r = entry.load("r", tmp_path)
    assert r.label_space == r_subset and sorted(r.labels.tolist()) == sorted([r_subset[0], r_subset[-1]])
    assert r.meta["class_subset"] == 200
    assert entry.load("a", tmp_path).labels.tolist() == [a_subset[5]]
    assert entry.load("sketch", tmp_path).labels.tolist() == [7, 8]
    c = entry.load("c/fog/3", tmp_path)
    assert c.labels.tolist() == [1] and c.meta == {"corruption": "fog", "severity": 3, "corruption_source": "prepared"}
    # a class folder outside A's subset is a layout error
    outside = next(i for i in range(1000) if i not in a_subset)
    fx.write_class_folders(tmp_path / "imagenet-a", [wnids[outside]])
    with pytest.raises(DatasetError, match="outside the A 200-class subset"):
        entry.load("a", tmp_path)


# --- segmentation -------------------------------------------------------------------------------

def test_segmentation_protocol_facts():
    voc, ade, coco = (DATASETS.get(n) for n in ("voc2012", "ade20k", "coco_stuff164k"))
    assert (voc.num_classes, voc.reduce_zero_label, voc.ignore_index) == (21, False, 255)
    assert (ade.num_classes, ade.reduce_zero_label, ade.ignore_index) == (150, True, 255)
    assert (coco.num_classes, coco.reduce_zero_label, coco.ignore_index) == (171, False, 255)
    coco_names = coco.class_names()  # from torchvision's COCO table, read on demand
    assert voc.classes[0] == "background" and coco_names[0] == "person" and coco_names[80] == "banner"
    assert len(set(coco_names)) == 171


def test_voc_masks_match_torchvision(tmp_path, no_env_root):
    masks = fx.write_voc(tmp_path)
    for split in ("train", "val", "trainval"):
        ours = DATASETS.get("voc2012").load(split, tmp_path)
        tv = torchvision.datasets.VOCSegmentation(str(tmp_path), year="2012", image_set=split)
        assert len(ours) == len(tv)
        for i in range(len(tv)):
            image, target = tv[i]
            assert np.array_equal(ours.image(i), np.asarray(image))
            assert np.array_equal(ours.mask(i), np.asarray(target))
            assert np.array_equal(ours.mask(i), masks[tv.images[i].split("/")[-1][:-4]])
    assert 255 in ours.mask(0)  # boundaries stay 255 = ignore


def test_voc_train_aug_with_sbd_mat_files(tmp_path, no_env_root):
    voc_masks = fx.write_voc(tmp_path)
    sbd_masks = fx.write_sbd(tmp_path)
    aug = DATASETS.get("voc2012").load("train_aug", tmp_path)
    ids = [p.split("/")[-1][:-4] for p in aug.paths]
    # SBD train+val ∪ VOC train, minus VOC val (2007_000033 is in SBD val but VOC val)
    assert ids == sorted({"2007_000032", "2007_000039", "2008_000002", "2008_000003"})
    tv = torchvision.datasets.SBDataset(str(tmp_path / "benchmark_RELEASE" / "dataset"), image_set="train", mode="segmentation")
    for i, name in enumerate(ids):
        expect = voc_masks.get(name, sbd_masks.get(name))  # VOC's own mask wins where VOC has one
        assert np.array_equal(aug.mask(i), expect), name
    assert np.array_equal(aug.mask(ids.index("2008_000002")), np.asarray(tv[0][1]))  # SBD .mat as torchvision reads it
    shutil.rmtree(tmp_path / "benchmark_RELEASE")
    with pytest.raises(DatasetError, match="train_aug needs SBD"):
        DATASETS.get("voc2012").check("train_aug", tmp_path)


def test_ade20k_reduce_zero_label(tmp_path, no_env_root):
    truth = fx.write_ade(tmp_path)
    entry = DATASETS.get("ade20k")
    train = entry.load("train", tmp_path)
    raw = truth["train"][0]
    mask = train.mask(0)
    assert mask[0, 0] == 255 and mask[0, 1] == 0 and mask[0, 2] == 149
    expect = np.where(raw == 0, 255, raw.astype(int) - 1)
    assert np.array_equal(mask, expect) and mask.max() <= 149 or 255 in mask
    assert entry.class_names(tmp_path)[:2] == ("name1", "name2")
    (tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000002.png").unlink()
    with pytest.raises(DatasetError, match="1 of 3 images have no mask") as err:
        entry.load("val", tmp_path)
    assert "ADE_val_00000002.png" in str(err.value)


@pytest.mark.parametrize("converted", [True, False])
def test_coco_stuff_train_masks_come_from_train2017(tmp_path, no_env_root, converted):
    truth = fx.write_coco_stuff(tmp_path, converted)
    entry = DATASETS.get("coco_stuff164k")
    for split in ("train", "val"):
        ds = entry.load(split, tmp_path)
        assert ("train2017" if split == "train" else "val2017") in ds.mask_paths[0]
        raw = truth[split][0]
        expected = raw if converted else np.vectorize(lambda v: coco_raw_to_train().get(int(v), 255))(raw).astype(np.uint8)
        assert np.array_equal(ds.mask(0), expected)
    if not converted:
        m = entry.load("train", tmp_path).mask(0)
        assert tuple(m[0, :4]) == (0, 255, 80, 170) and m[-1, -1] == 255  # person, unused id, banner, last stuff


def test_coco_raw_to_train_map_is_the_171_class_one():
    table = coco_raw_to_train()
    assert sorted(table.values()) == list(range(171))
    unused = sorted(set(range(182)) - set(table))
    assert [u + 1 for u in unused] == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91]  # COCO ids without a class


# --- errors ------------------------------------------------------------------------------------

BROKEN = {
    "no_root": (lambda root: None, "cifar10", "train", "no data root is configured"),
    "cifar_missing_batch": (lambda root: (fx.write_cifar10(root), (root / "cifar-10-batches-py" / "data_batch_3").unlink()),
                            "cifar10", "train", "batch file not found"),
    "stl_missing_labels": (lambda root: (fx.write_stl10(root), (root / "stl10_binary" / "test_y.bin").unlink()),
                           "stl10", "test", "binary file not found"),
    "tiny_199_wnids": (lambda root: (fx.write_tiny_imagenet(root), (root / "tiny-imagenet-200" / "wnids.txt").write_text("\n".join(fx.tiny_wnids()[:199]))),
                       "tiny_imagenet", "val", "expected 200 distinct WordNet ids, found 199"),
    "tiny_missing_val_image": (lambda root: (fx.write_tiny_imagenet(root), (root / "tiny-imagenet-200" / "val" / "images" / "val_3.JPEG").unlink()),
                               "tiny_imagenet", "val", "listed in val_annotations.txt line 4 but missing"),
    "imagenet_flat_val_without_devkit": (lambda root: (fx.write_imagenet(root), shutil.rmtree(root / "imagenet" / "ILSVRC2012_devkit_t12")),
                                         "imagenet", "val", "devkit meta.mat not found"),
    "imagenet_unknown_class_folder": (lambda root: (fx.write_imagenet(root), (root / "imagenet" / "train" / "cats").mkdir()),
                                      "imagenet", "train", "are not known class ids (e.g. 'cats')"),
    "voc_missing_split_list": (lambda root: (fx.write_voc(root), (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()),
                               "voc2012", "val", "split list not found"),
    "coco_missing_annotations": (lambda root: (fx.write_coco_stuff(root, True), shutil.rmtree(root / "coco_stuff164k" / "annotations" / "train2017")),
                                 "coco_stuff164k", "train", "folder not found"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_layout_names_path_found_layout_and_source(tmp_path, no_env_root, case):
    make, dataset, split, problem = BROKEN[case]
    make(tmp_path)
    root = None if case == "no_root" else tmp_path
    entry = DATASETS.get(dataset)
    with pytest.raises(DatasetError) as err:
        entry.load(split, root)
    message = str(err.value)
    assert problem in message, message
    assert f"dataset '{dataset}', split '{split}'" in message
    for part in ("expected: ", "found: ", "layout needed (under the data root):", "official source: ", "--data-root"):
        assert part in message, message
    assert "http" not in message  # where the archive comes from, in words
    if root is not None:
        assert str(err.value.expected).startswith(str(tmp_path))
        # the cheap check fails the same way before anything is decoded (except decode-time problems)
        if case not in ("tiny_missing_val_image", "imagenet_unknown_class_folder", "imagenet_flat_val_without_devkit"):
            with pytest.raises(DatasetError, match=problem.split(" (")[0]):
                entry.check(split, root)


def test_env_var_is_the_fallback_root(tmp_path, monkeypatch):
    fx.write_cifar101(tmp_path)
    monkeypatch.setenv("BENCH_DATA_ROOT", str(tmp_path))
    assert len(DATASETS.get("cifar10").load("cifar10.1-v6")) == 7
    with pytest.raises(DatasetError, match="folder not found"):  # an explicit root wins over the environment
        DATASETS.get("cifar10").load("cifar10.1-v6", tmp_path / "elsewhere")


def test_generated_corruptions_grow_with_severity():
    from bench.data.corruptions import CORRUPTIONS, corrupt

    import skimage.data

    img = np.ascontiguousarray(skimage.data.astronaut()[::8, ::8])  # a real photo, 64×64
    for name in sorted(CORRUPTIONS):
        change = [np.abs(corrupt(img, name, s, np.random.default_rng(1)).astype(int) - img).mean() for s in (1, 3, 5)]
        assert change[0] < change[1] < change[2], (name, change)


def test_voc_mask_listed_but_missing_is_a_layout_error(tmp_path, no_env_root):
    fx.write_voc(tmp_path)
    (tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000039.png").unlink()
    with pytest.raises(DatasetError, match="mask listed in the split file not found") as err:
        DATASETS.get("voc2012").load("train", tmp_path)
    assert err.value.expected.name == "2007_000039.png"
