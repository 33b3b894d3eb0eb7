"""`bench reproduce` / `make reproduce-table`: it explains instead of launching when data or GPUs
are missing, and with them it runs the grid and renders expected vs actual."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import data_fixtures as fx
from bench.cli import main
from test_data_cli import CIFAR_SUITE
from test_suite import write

REPO = Path(__file__).resolve().parents[1]
MINI_PAPER = """
name: mini-paper
include: [cifar.yaml]
expected:
  - {quantity: delta, split: ood_avg, across: mean, value: 4.26, tolerance: 1.5, source: the paper}
  - {quantity: value, method: sft, split: test, value: 99.0, tolerance: 0.5, source: made up}
"""


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    """These tests describe a machine without CUDA, also when they run on one that has it."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def mini_paper(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    fx.write_cifar10(tmp_path / "data")
    fx.write_stl10(tmp_path / "data")
    fx.write_cifar_c(tmp_path / "data", "CIFAR-10-C", ["fog"])
    fx.write_cifar101(tmp_path / "data")
    write(tmp_path, CIFAR_SUITE.replace("data_root: data\n", ""), "cifar.yaml")
    return write(tmp_path, MINI_PAPER, "paper.yaml")


def test_paper_suite_without_data_root_explains_and_offers_the_demo(monkeypatch, capsys):
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    assert main(["reproduce", str(REPO / "suites" / "paper.yaml"), "--executor", "local"]) == 3  # no data root: missing input, nothing launched
    out = capsys.readouterr().out
    assert "nothing was launched" in out and "no data root is configured" in out and "no GPU here" in out
    assert "suite 'paper', 48 runs to tune each method on its held-out split, then 48 final runs at the chosen settings" in out
    assert ("ood/gpu: 24 tuning runs = cifar10, cifar100, stl10, tiny_imagenet × sft, grpo_rm × train.lr ∈ {1e-05, 2e-05, 5e-05} "
            "× seeds [1000]; evaluations heldout") in out
    assert "ood/gpu: then cifar10, cifar100, stl10, tiny_imagenet × sft, grpo_rm × seeds [0, 1, 2] at each method's chosen settings; evaluations id, shift, transfer" in out
    assert "segmentation/gpu: 18 tuning runs = voc2012, ade20k, coco_stuff164k" in out
    assert "imagenet/gpu: 6 tuning runs = imagenet × sft, grpo_rm" in out  # ImageNet-1k is part of the grid
    assert "+4.26 ± 1.50 points" in out and "make reproduce-table DATA_ROOT=/path/to/datasets EXECUTOR=slurm" in out
    assert "make demo" in out


def test_missing_splits_and_missing_gpu_are_both_named(mini_paper, tmp_path, capsys):
    (tmp_path / "data" / "stl10_binary" / "test_X.bin").unlink()
    args = ["reproduce", str(mini_paper), "--data-root", str(tmp_path / "data"), "--executor", "debug", "--results", str(tmp_path / "r")]
    assert main(args) == 3  # data missing wins over the missing GPU: exit 3
    out = capsys.readouterr().out
    assert f"the data root {tmp_path / 'data'} lacks cifar10: stl10 (details below)" in out and "stl10_binary/test_X.bin" in out
    assert "no GPU here" in out and "--allow-cpu" in out
    assert not (tmp_path / "r").exists()  # nothing launched


def test_with_data_it_runs_the_grid_and_renders_expected_vs_actual(mini_paper, tmp_path, capsys):
    reports = tmp_path / "reports"
    args = ["reproduce", str(mini_paper), "--data-root", str(tmp_path / "data"), "--executor", "debug", "--allow-cpu",
            "--results", str(tmp_path / "r"), "--reports", str(reports)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "## Expected vs actual" in out
    expected = pd.read_csv(reports / "mini-paper" / "expected.csv")
    assert list(expected["n"]) == [1, 1] and expected["dataset"].iloc[0] == "cifar10 (random init)"  # a mean over one dataset is that dataset
    # by hand from the result files: OOD sets stl10, cifar10.1-v6, CIFAR-10-C (5 fog severities), gen (contrast 5)
    runs = {r["method"]: r["metrics"] for r in (json.loads(p.read_text()) for p in (tmp_path / "r" / "cifar-tiny").glob("*/result.json"))}

    def ood(m):
        sets = [[m["stl10"]["top1"]], [m["cifar10.1-v6"]["top1"]], [m[f"c/fog/{s}"]["top1"] for s in range(1, 6)], [m["gen/contrast/5"]["top1"]]]
        return sum(sum(s) / len(s) for s in sets) / len(sets)

    first = expected.iloc[0]
    assert first["actual"] == pytest.approx(100 * (ood(runs["grpo_rm"]) - ood(runs["sft"])))
    assert first["verdict"] == "no interval"  # one seed: no interval, so no verdict either way
    assert expected["actual"].iloc[1] == pytest.approx(100 * runs["sft"]["test"]["top1"])
    assert expected["verdict"].iloc[1] == "no interval"  # 99% top-1 claimed, one seed: the point estimate alone never decides
    results = sorted((tmp_path / "r" / "cifar-tiny").glob("*/result.json"))  # stored under the included suite
    assert (reports / "mini-paper" / "report.html").is_file() and len(results) == 2
    before = {p: p.stat().st_mtime_ns for p in results}
    assert main(args) == 0  # everything done: renders again without rerunning anything
    assert {p: p.stat().st_mtime_ns for p in results} == before
    # with nothing left to launch, neither the data root nor a GPU is needed to render
    bare = ["reproduce", str(mini_paper), "--executor", "debug", "--results", str(tmp_path / "r"), "--reports", str(reports)]
    assert main(bare) == 0 and "nothing was launched" not in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in results} == before


def test_runs_already_submitted_are_not_resubmitted_when_slurm_cannot_be_asked(mini_paper, tmp_path, capsys, monkeypatch):
    import bench.reproduce
    from bench.store import RunDir
    from bench.suite import expand, load_suite

    specs = expand(load_suite(mini_paper), mini_paper, data_root=tmp_path / "data")
    RunDir.of(tmp_path / "r", specs[0].suite, specs[0].run_id).set_status("pending", executor="slurm", executor_job_id="77_0")
    monkeypatch.setattr(bench.reproduce, "active_job_ids", lambda: None)  # squeue timed out
    args = ["reproduce", str(mini_paper), "--data-root", str(tmp_path / "data"), "--executor", "debug", "--allow-cpu",
            "--results", str(tmp_path / "r"), "--reports", str(tmp_path / "reports")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "squeue did not answer: the 1 unfinished run(s) submitted before are not resubmitted" in out
    assert not RunDir.of(tmp_path / "r", specs[0].suite, specs[0].run_id).is_done()  # left to its Slurm job
    assert RunDir.of(tmp_path / "r", specs[1].suite, specs[1].run_id).is_done()


def test_pending_array_ranges_expand_to_one_state_per_task():
    from bench.launch import array_tasks

    assert array_tasks("180_3") == ["180_3"] and array_tasks("181") == ["181"]
    assert array_tasks("180_[0-1]") == ["180_0", "180_1"]
    assert array_tasks("182_[0-2,5%16]") == ["182_0", "182_1", "182_2", "182_5"]
