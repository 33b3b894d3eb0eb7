"""`bench samples`: per-image outputs of a finished suite, on hand-constructed predictions whose
disagreements are known, and the thumbnail sheet on a small CIFAR-10 fixture."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from bench.cli import main
from bench.report import build_report
from bench.suite import expand, load_suite
from data_fixtures import write_cifar10
from report_fixtures import split_metrics, write_run
from test_suite import write

N = 10
# (method, seed) → the test images it gets wrong; every other image is right
WRONG = {
    ("sft", 0): {2, 4, 5}, ("sft", 1): {2, 4}, ("sft", 2): {2},
    ("grpo_rm", 0): {4, 7, 9}, ("grpo_rm", 1): {5, 7}, ("grpo_rm", 2): {5, 7},
}
# majority over 3 seeds: image 2 SFT 0/3 vs GRPO-RM 3/3 and image 7 3/3 vs 0/3 (disagreement 1);
# image 4 SFT 1/3 vs 2/3 and image 5 2/3 vs 1/3 (1/3); image 9 is wrong in one seed of one method
# only (both majorities right): no difference. Ties in size and p_true spread go by image index.
DIFFER_ORDER = [2, 7, 4, 5]

SUITE = """
name: smp
description: per-sample outputs
{data_root}
defaults:
  backbone: {{name: dinov2_tiny, weights: random, img_size: 28}}
  data: {{name: cifar10, eval_splits: [test]}}
matrix:
  method: [sft, grpo_rm]
  seed: [0, 1, 2]
"""


def write_samples_suite(root, data_root=None):
    root.mkdir(parents=True, exist_ok=True)
    path = write(root, SUITE.format(data_root=f"data_root: {data_root}" if data_root else ""), "smp.yaml")
    specs = expand(load_suite(path), path)
    for spec in specs:
        key = (spec.config.method.name, spec.config.seed)
        correct = np.array([i not in WRONG[key] for i in range(N)])
        metrics = {"test": {**split_metrics(*key)["test"], "top1": float(correct.mean()), "n": N}}
        write_run(root / "results", spec, metrics, predictions={"test": correct})
    return path, specs


def run_samples(tmp_path, path, *extra, capsys):
    code = main(["samples", str(path), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), *extra])
    assert code == 0
    return capsys.readouterr().out


def image_lines(out: str) -> list[int]:
    return [int(line.split()[0]) for line in out.splitlines() if line.split() and line.split()[0].isdigit()]


def test_disagree_prints_exactly_the_images_where_the_methods_differ_largest_first(tmp_path, capsys):
    path, _ = write_samples_suite(tmp_path)
    out = run_samples(tmp_path, path, "--disagree", capsys=capsys)
    assert image_lines(out) == DIFFER_ORDER
    assert "4 of 10 images where the methods differ" in out
    line = next(x for x in out.splitlines() if x.startswith("2 ")).split()
    assert line[2] == "+++" and line[4] == "---"  # GRPO-RM (listed first) right on every seed, SFT wrong on every seed  # SFT wrong on every seed, GRPO-RM right on every seed
    assert "labels unknown" in out  # no CIFAR-10 on disk: the label column stays empty and says why


def test_samples_csv_has_one_row_per_image_with_per_seed_columns(tmp_path, capsys):
    path, _ = write_samples_suite(tmp_path)
    out = run_samples(tmp_path, path, capsys=capsys)
    assert image_lines(out) == list(range(N))
    folder = tmp_path / "reports" / "smp"
    table = pd.read_csv(folder / "samples.csv")
    assert list(table["image"]) == list(range(N)) and set(table["split"]) == {"test"}
    for (method, seed), wrong in WRONG.items():
        assert [not x for x in table[f"{method}.s{seed}.correct"]] == [i in wrong for i in range(N)]
        assert np.allclose(table[f"{method}.s{seed}.p_true"], [0.1 if i in wrong else 0.9 for i in range(N)])
    assert table["label"].isna().all()
    assert sorted(table.loc[table["differ"], "image"]) == sorted(DIFFER_ORDER)
    assert table.loc[table["image"] == 2, "disagreement"].item() == 1.0
    assert pd.read_parquet(folder / "samples.parquet")["sft.right"].tolist() == table["sft.right"].tolist()
    meta = json.loads((folder / "samples.json").read_text())
    assert meta["sheet"] is None and "could not be loaded" in meta["sheet_why"] and not (folder / "samples_sheet.png").exists()


def test_report_links_samples_csv_and_says_why_there_are_no_thumbnails(tmp_path, capsys):
    path, specs = write_samples_suite(tmp_path)
    run_samples(tmp_path, path, "--disagree", capsys=capsys)
    build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    page = (tmp_path / "reports" / "smp" / "report.html").read_text()
    assert 'id="samples"' in page and 'download="samples.csv"' in page
    assert "no thumbnails: split test of cifar10 could not be loaded" in page and 'id="samples-sheet"' not in page


def test_labels_and_thumbnail_sheet_when_the_split_loads(tmp_path, capsys):
    truth = write_cifar10(tmp_path / "data", n_test=N)
    path, specs = write_samples_suite(tmp_path, data_root=tmp_path / "data")
    out = run_samples(tmp_path, path, "--disagree", capsys=capsys)
    assert image_lines(out) == DIFFER_ORDER and "labels unknown" not in out
    folder = tmp_path / "reports" / "smp"
    table = pd.read_csv(folder / "samples.csv")
    assert table["label"].tolist() == truth["test"][1].tolist()
    from PIL import Image

    with Image.open(folder / "samples_sheet.png") as sheet:
        assert sheet.size[0] > 96 * len(DIFFER_ORDER)  # one row of four thumbnails
    assert json.loads((folder / "samples.json").read_text())["shown"] == DIFFER_ORDER
    build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    page = (tmp_path / "reports" / "smp" / "report.html").read_text()
    assert 'id="samples-sheet"' in page and "data:image/png;base64," in page
