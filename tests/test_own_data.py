"""Your own data (docs/datasets.md, "Your own data"): imagefolder, manifest and segfolder.

The class count comes from the data (the head and GRPO-RM's group have as many outputs as the
data has classes); what they load is checked against torchvision's ImageFolder on the same tree;
a manifest of the same images and splits gives the very numbers the folder gives; bad layouts
and bad manifest rows are named with their path (and file:line).
"""

from __future__ import annotations

import json
import re
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.cli import main
from bench.data import DATASETS, DatasetError
from bench.dataid import run_splits
from bench.suite import expand, load_suite
from test_suite import write

CLASSES = ("cat", "dog", "eel")
SUITE = """
name: {name}
data_root: data
defaults:
  backbone: {{name: dinov2_tiny, weights: random, img_size: 28}}
  model: {{trainable_blocks: 1}}
  data: {{name: {dataset}, params: {params}, num_workers: 0, eval_splits: [test, gen/contrast/3]}}
  train: {{epochs: 1, batch_size: 6}}
select:
  metric: top1
  tune: {{train.lr: [1.0e-4, 3.0e-3]}}
  seeds: [1000]
matrix:
  method: [sft, grpo_rm]
  seed: [0]
"""


@pytest.fixture(autouse=True)
def no_env_root(monkeypatch):
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_tree(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """``root``/{train,test}/<class>/*.png: 16×16 RGB noise whose mean brightness depends on the class
    (something to learn), one image of cat/ in a sub-folder and one non-image file (both as
    torchvision's ImageFolder treats them)."""
    rng = np.random.default_rng(seed)
    for split, n in (per_class or {"train": 6, "test": 3}).items():
        for c, name in enumerate(CLASSES):
            for i in range(n):
                pixels = np.clip(rng.normal(60 + 70 * c, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
                _png(root / split / name / (f"sub/{i}.png" if (name, i) == ("cat", 0) else f"{i}.png"), pixels)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    return root


def fingerprint(dataset: str, split: str, data_root: Path, **params) -> str:
    return DATASETS.get(dataset).split_fingerprint(split, data_root, **params)


# ---- imagefolder: what it loads ------------------------------------------------------------------

def test_imagefolder_loads_what_torchvision_imagefolder_loads(tmp_path):
    from torchvision.datasets import ImageFolder

    root = write_tree(tmp_path / "pets")
    entry = DATASETS.get("imagefolder")
    assert entry.classes_in(tmp_path, root="pets") == CLASSES and entry.class_count(tmp_path, root="pets") == 3
    for split in ("train", "test"):
        ours = entry.load(split, tmp_path, root="pets")
        theirs = ImageFolder(str(root / split))
        assert tuple(theirs.classes) == CLASSES
        assert list(ours.paths) == [p for p, _ in theirs.samples] and ours.labels.tolist() == theirs.targets
        assert all(np.array_equal(ours.image(i), np.asarray(theirs[i][0])) for i in range(len(ours)))
    assert entry.load("train", str(root), root="").paths == entry.load("train", tmp_path, root=str(root)).paths  # the data root itself; absolute


def test_a_val_folder_is_the_heldout_split_whole_and_train_is_not_carved(tmp_path):
    write_tree(tmp_path / "data" / "pets", {"train": 4, "val": 2, "test": 1})
    spec = expand(load_suite(path := write(tmp_path, SUITE.format(name="v", dataset="imagefolder", params="{root: pets}"))), path)[0]
    data = spec.config.data
    assert data.holdout.given == "val"
    assert [s for _, s, _ in run_splits(spec.config)] == ["train", "val"]  # a tuning run: trains on train/, scores heldout = val/
    heldout, train = data.load("heldout"), data.load("train")
    assert len(heldout) == 6 and len(train) == 12 and heldout.meta["heldout_split"] == "val" and train.meta["holdout_role"] == "train"
    with_val = fingerprint("imagefolder", "train", tmp_path / "data", root="pets")
    shutil.rmtree(tmp_path / "data" / "pets" / "val")
    assert spec.config.data.holdout.given is None and len(spec.config.data.load("train")) < 12  # carved from train/ again
    # the same train/ files, trained on otherwise: runs from before are other runs (stale-data)
    assert fingerprint("imagefolder", "train", tmp_path / "data", root="pets") != with_val


@pytest.mark.parametrize("damage, where, reason", [
    (lambda r: shutil.rmtree(r / "train"), "pets/train", "train/ folder not found"),
    (lambda r: [p.unlink() for p in (r / "test" / "eel").iterdir()], "pets/test/eel", "class folder holds no images"),
    (lambda r: (r / "test" / "cat").rename(r / "test" / "kat"), "pets/test/kat", "class folder 'kat' is not a class of train/"),
    (lambda r: [shutil.rmtree(r / "train" / c) for c in CLASSES], "pets/train", "no class folders"),
])
def test_layout_problems_are_named_with_their_path(tmp_path, capsys, damage, where, reason):
    damage(write_tree(tmp_path / "data" / "pets", {"train": 2, "test": 1}))
    suite = write(tmp_path, SUITE.format(name="bad", dataset="imagefolder", params="{root: pets}"))
    assert main(["data", "check", str(suite)]) == 3
    out = capsys.readouterr().out
    assert "MISSING imagefolder" in out and reason in out and f"expected: {tmp_path / 'data' / where}" in out
    assert "train/<class>/*." in out  # the layout needed


def test_fingerprint_sees_a_file_changed_in_place_and_not_where_the_tree_lives(tmp_path):
    write_tree(tmp_path / "a" / "pets", {"train": 2, "test": 1})
    before = {s: fingerprint("imagefolder", s, tmp_path / "a", root="pets") for s in ("train", "test", "gen/pixelate/2")}
    assert len(set(before.values())) == 3
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert {s: fingerprint("imagefolder", s, tmp_path / "b", root="pets") for s in before} == before
    image = tmp_path / "a" / "pets" / "test" / "dog" / "0.png"
    pixels = np.asarray(Image.open(image)).copy()
    size = image.stat().st_size
    pixels[0, 0] ^= 1  # one bit of one pixel: a change that keeps the file's size
    Image.fromarray(pixels).save(image)
    later = image.stat().st_mtime_ns + 10**9  # as a later edit stamps it (a rewrite within the clock's tick would not move it)
    os.utime(image, ns=(later, later))
    assert image.stat().st_size == size
    after = {s: fingerprint("imagefolder", s, tmp_path / "a", root="pets") for s in before}
    assert after["train"] == before["train"] and after["test"] != before["test"] and after["gen/pixelate/2"] != before["gen/pixelate/2"]
    (tmp_path / "a" / "pets" / "train" / "eel" / "0.png").rename(tmp_path / "a" / "pets" / "train" / "dog" / "9.png")  # relabelled
    assert fingerprint("imagefolder", "train", tmp_path / "a", root="pets") != before["train"]


# ---- the class count flows from the data ---------------------------------------------------------

def test_group_size_is_checked_against_the_classes_found_and_unreadable_data_is_not_an_error(tmp_path, capsys):
    write_tree(tmp_path / "data" / "pets", {"train": 2, "test": 1})
    text = SUITE.format(name="g", dataset="imagefolder", params="{root: pets}").replace("select:", "methods:\n  grpo_rm: {group: sampled, group_size: 4}\nselect:")
    assert main(["validate", str(write(tmp_path, text))]) == 2
    assert "group_size: 4 exceeds the 3 classes of imagefolder" in capsys.readouterr().out
    assert main(["validate", str(write(tmp_path, text.replace("group_size: 4", "group_size: 3"), name="ok.yaml"))]) == 0
    # where the data cannot be read (a login node) the count is unknown: validation passes, `bench data check` says why
    assert main(["validate", str(write(tmp_path, text.replace("root: pets", "root: elsewhere"), name="far.yaml"))]) == 0


# ---- end to end: imagefolder, then the same images through a manifest --------------------------

def _results(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/result.json"))]


def write_manifest(tmp_path: Path, root: Path, suffix: str = ".csv") -> Path:
    """A manifest of ``root``'s train and test images in torchvision ImageFolder's order (an
    independent listing), paths relative to the manifest's folder."""
    from torchvision.datasets import ImageFolder

    rows = []
    for split in ("train", "test"):
        folder = ImageFolder(str(root / split))
        rows += [(os.path.relpath(p, tmp_path / "data"), folder.classes[y], split) for p, y in folder.samples]
    frame = pd.DataFrame(rows, columns=["path", "label", "split"])
    file = tmp_path / "data" / f"pets{suffix}"
    frame.to_parquet(file) if suffix == ".parquet" else frame.to_csv(file, index=False)
    return file


def test_imagefolder_and_its_manifest_run_end_to_end_with_selection_and_a_shift_split_to_the_same_numbers(tmp_path):
    root = write_tree(tmp_path / "data" / "pets")
    write_manifest(tmp_path, root)
    numbers = {}
    for dataset, params in (("imagefolder", "{root: pets}"), ("manifest", "{file: pets.csv}")):
        suite = write(tmp_path, SUITE.format(name=dataset, dataset=dataset, params=params), name=f"{dataset}.yaml")
        assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]) == 0
        runs = _results(tmp_path / "results" / dataset)
        for r in runs:
            assert r["protocol"]["num_classes"] == 3 and r["protocol"]["train_split_facts"]["classes"] == list(CLASSES)
            assert r["protocol"]["train_split_facts"]["carved_from"] == "train"  # no val/: held out from train/
        tuned = [r for r in runs if r["stage"] == "tune"]
        assert len(tuned) == 4 and all(set(r["metrics"]) == {"heldout"} for r in tuned)  # the choice reads held-out numbers only
        finals = {r["method"]: r for r in runs if r["stage"] == "final"}
        assert len(finals) == len(runs) - 4 == 2
        for r in finals.values():
            assert set(r["metrics"]) == {"test", "gen/contrast/3"} and r["metrics"]["gen/contrast/3"]["shift"] and r["metrics"]["test"]["n"] == 9
            assert r["metrics"]["gen/contrast/3"]["split_facts"]["corruption_source"] == "generated"
        report = (tmp_path / "reports" / dataset / "report.md").read_text()
        assert "gen/contrast/3" in report and "random init" in report
        numbers[dataset] = {m: ({k: v for k, v in r["selection"].items() if k != "group"}, r["metrics"]) for m, r in finals.items()}  # group: an id that names the dataset
    assert numbers["manifest"] == numbers["imagefolder"]  # same images, labels, order and splits: the same runs


# ---- manifest ------------------------------------------------------------------------------------

def test_a_parquet_manifest_reads_as_its_csv(tmp_path):
    root = write_tree(tmp_path / "data" / "pets", {"train": 2, "test": 1})
    write_manifest(tmp_path, root)
    write_manifest(tmp_path, root, ".parquet")
    entry = DATASETS.get("manifest")
    for split in ("train", "test"):
        csv = entry.load(split, tmp_path / "data", file="pets.csv")
        parquet = entry.load(split, tmp_path / "data", file="pets.parquet")
        assert csv.paths == parquet.paths and csv.labels.tolist() == parquet.labels.tolist() and len(csv) == 3 * (2 if split == "train" else 1)
        assert csv.paths == entry.load(split, tmp_path, file=str(tmp_path / "data" / "pets.csv")).paths  # an absolute file


@pytest.mark.parametrize("edit, reason", [
    (lambda rows: rows.__setitem__(3, "pets/train/dog/7.png,dog,train"), "{file}:4: path: 'pets/train/dog/7.png' is not a file"),
    (lambda rows: rows.__setitem__(2, rows[2].replace(",train", ",tset")), "{file}:3: split: 'tset' is not one of train, val, test"),
    (lambda rows: rows.__setitem__(-1, rows[-1].replace(",eel,", ",emu,")), "{file}:{last}: label: 'emu' (test) is not the label of any train row"),
    (lambda rows: rows.append(rows[1]), "{file}:{last}: path: '{first}' is listed again (first at {file}:2)"),
    (lambda rows: rows.__setitem__(0, "file,label,split"), "{file}:1: path: no such column"),
])
def test_bad_manifest_rows_are_named_with_file_and_line(tmp_path, capsys, edit, reason):
    root = write_tree(tmp_path / "data" / "pets", {"train": 2, "test": 1})
    file = write_manifest(tmp_path, root)
    rows = file.read_text().splitlines()
    first = rows[1].split(",")[0]
    edit(rows)
    file.write_text("\n".join(rows) + "\n")
    suite = write(tmp_path, SUITE.format(name="m", dataset="manifest", params="{file: pets.csv}"))
    assert main(["data", "check", str(suite)]) == 3
    out = capsys.readouterr().out
    assert "MISSING manifest" in out and reason.format(file=file, first=first, last=len(rows)) in out


def test_a_manifest_without_a_split_column_is_all_train_and_says_there_is_no_test_split(tmp_path):
    root = write_tree(tmp_path / "data" / "pets", {"train": 2})
    rows = [f"{os.path.relpath(p, tmp_path / 'data')},{p.relative_to(root / 'train').parts[0]}" for p in sorted(root.glob("train/*/**/*.png"))]
    (tmp_path / "data" / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    entry = DATASETS.get("manifest")
    assert len(entry.load("train", tmp_path / "data", file="m.csv")) == 6 and entry.class_count(tmp_path / "data", file="m.csv") == 3
    with pytest.raises(DatasetError, match=r"split 'test' is empty \(the manifest has no split column, so every row is train\)"):
        entry.load("test", tmp_path / "data", file="m.csv")


def test_a_tsv_manifest_with_val_rows_and_blank_lines(tmp_path):
    root = write_tree(tmp_path / "data" / "pets", {"train": 2, "val": 1, "test": 1})
    rows = [f"{os.path.relpath(p, tmp_path / 'data')}\t{p.relative_to(root).parts[1]}\t{p.relative_to(root).parts[0]}"
            for p in sorted(root.glob("*/*/**/*.png"))]
    file = tmp_path / "data" / "m.tsv"
    file.write_text("path\tlabel\tsplit\n\n" + "\n".join(rows) + "\n")
    entry = DATASETS.get("manifest")
    assert entry.heldout_from_data("train", tmp_path / "data", file="m.tsv") == "val"  # val rows: the held-out split, whole
    assert [len(entry.load(s, tmp_path / "data", file="m.tsv")) for s in ("train", "val", "test")] == [6, 3, 3]
    file.write_text("path\tlabel\tsplit\n\n" + "\n".join(rows) + "\nnothing.png\tcat\ttrain\n")
    with pytest.raises(DatasetError, match=re.escape(f"{file}:{len(rows) + 3}: path: 'nothing.png' is not a file")):
        entry.load("train", tmp_path / "data", file="m.tsv")  # the line counts the blank line


# ---- segfolder -----------------------------------------------------------------------------------

SEG_SUITE = """
name: own-seg
data_root: data
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  model: {trainable_blocks: 1}
  data: {name: segfolder, params: {root: streets}, num_workers: 0}
  train: {epochs: 1, batch_size: 4}
  seg: {crop: 28, scale: [28, 28], ratio_range: [0.75, 1.5], test_scale: [28, 28], slide_stride: 14}
matrix:
  method: [sft, grpo_rm]
"""


def write_seg(root: Path, n: dict[str, int] | None = None, seed: int = 1) -> Path:
    """images/{train,val}/*.png with masks/…/*.png: background, road, car (values 0, 1, 2; a 255 border)."""
    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\nroad\n\ncar\n")
    for split, count in (n or {"train": 5, "val": 2}).items():
        for i in range(count):
            mask = np.zeros((20, 20), dtype=np.uint8)
            mask[10:] = 1
            mask[4:9, rng.integers(0, 12):][:, :6] = 2
            mask[0] = 255
            _png(root / "masks" / split / f"im{i}.png", mask)
            _png(root / "images" / split / f"im{i}.png", ((mask[..., None].astype(np.int64) * 90) % 256 + rng.integers(0, 40, (20, 20, 3))).astype(np.uint8))
    return root


def test_segfolder_runs_end_to_end_with_the_classes_of_its_class_list(tmp_path):
    write_seg(tmp_path / "data" / "streets")
    suite = write(tmp_path, SEG_SUITE)
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]) == 0
    runs = [json.loads(p.read_text()) for p in (tmp_path / "results" / "own-seg").glob("*/result.json")]
    assert {r["method"] for r in runs} == {"sft", "grpo_rm"}
    for r in runs:
        assert r["protocol"]["num_classes"] == 3 and r["method_params"]["ignore_index"] == 255
        assert len(r["metrics"]["val"]["per_class_iou"]) == 3 and r["metrics"]["val"]["n"] == 2


def test_segfolder_problems_name_the_file(tmp_path):
    root = write_seg(tmp_path / "streets", {"train": 2})
    entry = DATASETS.get("segfolder")
    split = entry.load("train", tmp_path, root="streets")
    assert entry.class_count(tmp_path, root="streets") == 3 and split.mask(0).max() == 255 and set(np.unique(split.mask(0))) == {0, 1, 2, 255}
    _png(root / "masks" / "train" / "im1.png", np.full((20, 20), 7, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"im1\.png: mask value\(s\) 7 are neither a class id 0…2"):
        entry.load("train", tmp_path, root="streets").mask(1)
    (root / "masks" / "train" / "im1.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 2 images have no mask") as missing:
        entry.check("train", tmp_path, root="streets")
    assert missing.value.expected == root / "masks" / "train" / "im1.png"
    (root / "classes.txt").write_text("background\nroad\nroad\n")
    with pytest.raises(DatasetError, match=re.escape(f"{root / 'classes.txt'}:3: class 'road' is listed again (first at line 2)")):
        entry.class_count(tmp_path, root="streets")
    (root / "classes.txt").write_text("background\nroad\ncar\n")
    with pytest.raises(DatasetError, match="images/val/ folder not found"):
        entry.check("val", tmp_path, root="streets")
