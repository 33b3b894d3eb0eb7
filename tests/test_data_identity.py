"""Data identity (docs/reliability.md): a result computed on other data is never taken for this data.

A run id leaves out where the data lives, so each finished run records its splits' fingerprints
and every command compares them with the data on disk now; caches are keyed by them too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data_fixtures as fx
from bench.cli import main
from bench.data import DATASETS
from bench.data import composites, fashion_mnist
from bench.data.idx import write_idx
from bench.dataid import run_state
from bench.io import cache_dir
from bench.store import RunDir
from bench.suite import expand, load_suite
from test_suite import write

SUITE = """
name: did
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  model: {trainable_blocks: 1}
  data: {name: fmnist_composites, params: {img_size: 28, train_size: 40, eval_size: 20}, val_fraction: 0}
  train: {epochs: 1, batch_size: 20}
matrix:
  method: [sft]
  seed: [0]
"""


@pytest.fixture
def no_system_fmnist(monkeypatch):
    """Only the data roots a test writes hold Fashion-MNIST (not the system-wide copy, nor $BENCH_DATA_ROOT)."""
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", Path("/nonexistent/fashion-mnist"))
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)


def write_fmnist(root: Path, invert: bool = False, n_train: int = 60, n_test: int = 30, seed: int = 0) -> None:
    """Fashion-MNIST's four official IDX files under ``root``/fashion-mnist; ``invert``: the same
    images with every label k replaced by 9 − k (a hostile fake that looks like the real thing)."""
    rng = np.random.default_rng(seed)
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        image_name, label_name = fashion_mnist._FILES[split]
        write_idx(folder / image_name, images)
        write_idx(folder / label_name, (9 - labels) if invert else labels)


@pytest.fixture
def no_env_root(monkeypatch):
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)


def fingerprint(dataset: str, split: str, root: Path, **params) -> str:
    return DATASETS.get(dataset).split_fingerprint(split, root, **params)


# ---- fingerprints --------------------------------------------------------------------------------

def test_fingerprints_are_stable_across_calls_and_processes_and_ignore_the_mount_path(tmp_path, no_env_root):
    fx.write_cifar10(tmp_path / "a")
    fx.write_tiny_imagenet(tmp_path / "a")
    splits = [("cifar10", "train"), ("cifar10", "test"), ("cifar10", "gen/contrast/3"), ("tiny_imagenet", "val")]
    first = {f"{d} {s}": fingerprint(d, s, tmp_path / "a") for d, s in splits}
    assert first == {f"{d} {s}": fingerprint(d, s, tmp_path / "a") for d, s in splits}
    assert len(set(first.values())) == len(first)
    code = ("import json, sys; from bench.data import DATASETS; "
            f"print(json.dumps({{f'{{d}} {{s}}': DATASETS.get(d).split_fingerprint(s, sys.argv[1]) for d, s in {splits!r}}}))")
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    assert json.loads(other.stdout) == first
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")  # the same bytes under another path
    assert {f"{d} {s}": fingerprint(d, s, tmp_path / "elsewhere" / "b") for d, s in splits} == first


def test_changed_labels_change_the_fingerprint_of_array_and_folder_datasets(tmp_path, no_env_root):
    truth = fx.write_cifar10(tmp_path)
    before = {s: fingerprint("cifar10", s, tmp_path) for s in ("test", "gen/gaussian_noise/1")}
    x, y = truth["test"]
    fx._pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {"data": fx._cifar_rows(x), "labels": [int(9 - v) for v in y],
                                                                  "batch_label": "testing batch 1 of 1", "filenames": [f"t{i}.png" for i in range(len(y))]})
    assert fingerprint("cifar10", "test", tmp_path) != before["test"]
    assert fingerprint("cifar10", "gen/gaussian_noise/1", tmp_path) != before["gen/gaussian_noise/1"]  # generated from the changed split
    assert fingerprint("cifar10", "train", tmp_path) == fingerprint("cifar10", "train", tmp_path)

    fx.write_tiny_imagenet(tmp_path)
    tiny = fingerprint("tiny_imagenet", "val", tmp_path)
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    first, second = lines[0].split("\t"), lines[1].split("\t")
    assert first[1] != second[1]
    first[1], second[1] = second[1], first[1]  # two images' labels swapped: same files, same sizes
    ann.write_text("\n".join(["\t".join(first), "\t".join(second), *lines[2:]]) + "\n")
    assert fingerprint("tiny_imagenet", "val", tmp_path) != tiny


def test_every_registered_dataset_has_a_fingerprint():
    for name in DATASETS:
        assert DATASETS.get(name).fingerprint is not None, name


# ---- caches --------------------------------------------------------------------------------------

def test_composites_of_other_parameters_or_source_files_never_share_a_cache_entry(tmp_path, no_system_fmnist, monkeypatch):
    # a cache of its own: the session's is shared by every xdist worker, whose entries would
    # appear in this folder while the test counts them
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    write_fmnist(tmp_path / "real")
    write_fmnist(tmp_path / "fake", invert=True)
    folder = cache_dir("data", "fmnist_composites")
    params = dict(img_size=28, train_size=12, eval_size=12, seed=5)

    def entries() -> set[str]:
        return {p.name for p in folder.glob("test_*.npz")}

    before = entries()
    real = composites.load("test", tmp_path / "real", **params)
    after_real = entries() - before
    fake = composites.load("test", tmp_path / "fake", **params)
    after_fake = entries() - before - after_real
    assert len(after_real) == 1 and len(after_fake) == 1  # the fake garments got an entry of their own
    assert np.array_equal(fake.labels, 9 - real.labels)  # and it holds the fake labels, not the real ones
    assert np.array_equal(composites.load("test", tmp_path / "real", **params).labels, real.labels)  # read back from its entry
    other = composites.load("test", tmp_path / "real", **{**params, "seed": 6})
    assert len(entries() - before) == 3 and not np.array_equal(other.images, real.images)
    assert (fingerprint("fmnist_composites", "test", tmp_path / "real", **params)
            != fingerprint("fmnist_composites", "test", tmp_path / "fake", **params)
            != fingerprint("fmnist_composites", "test", tmp_path / "real", **{**params, "seed": 6}))


# ---- runs ----------------------------------------------------------------------------------------

def test_a_run_on_fake_data_is_stale_for_the_real_data_root_and_bench_run_recomputes_it(tmp_path, no_system_fmnist, capsys):
    write_fmnist(tmp_path / "fake", invert=True)
    write_fmnist(tmp_path / "real")
    suite = write(tmp_path, SUITE)
    results, reports = tmp_path / "results", tmp_path / "reports"

    def args(root: Path, results: Path = results) -> list[str]:
        return [str(suite), "--results", str(results), "--reports", str(reports), "--data-root", str(root)]

    assert main(["run", *args(tmp_path / "fake")]) == 0
    spec = expand(load_suite(suite), suite)[0]
    run_dir = RunDir.of(results, spec.suite, spec.run_id)
    fake = run_dir.read_result()
    assert {(e["dataset"], e["split"]) for e in fake["data"]["fingerprints"]} >= {("fmnist_composites", "train"), ("fmnist_composites", "test")}

    # a reference: the real data alone, in a store of its own
    assert main(["run", *args(tmp_path / "real", tmp_path / "reference")]) == 0
    reference = RunDir.of(tmp_path / "reference", spec.suite, spec.run_id).read_result()
    assert reference["run_id"] == fake["run_id"] and reference["metrics"] != fake["metrics"]
    capsys.readouterr()

    assert main(["status", *args(tmp_path / "real"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["runs"][0]
    assert row["state"] == "stale-data" and "data changed: fmnist_composites split" in row["error"]
    assert main(["report", *args(tmp_path / "real")]) == 0
    md = (reports / "did" / "report.md").read_text()
    assert "## Runs not in the tables (1 of 1)" in md and "| stale-data | data changed: fmnist_composites split" in md

    assert main(["run", *args(tmp_path / "real")]) == 0  # recomputed, not "done, skipped"
    again = run_dir.read_result()
    assert again["metrics"] == reference["metrics"] and again["data"] == reference["data"]
    assert len(list(run_dir.path.glob(f"result.json.stale-data-*"))) == 1  # the fake result kept aside
    assert "data changed" in run_dir.read_status()["resume_note"]
    capsys.readouterr()

    # the same real data at another path: the same run id, still done, nothing run again
    shutil.copytree(tmp_path / "real", tmp_path / "mounted" / "elsewhere")
    assert main(["status", *args(tmp_path / "mounted" / "elsewhere"), "--json"]) == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)["runs"]] == ["done"]
    assert expand(load_suite(suite), suite, data_root=str(tmp_path / "mounted" / "elsewhere"))[0].run_id == spec.run_id
    # no data root here (a login node): the run stays done and status says its data was not checked
    assert main(["status", str(suite), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "1 runs: 1 done" in out and "data could not be checked" in out
