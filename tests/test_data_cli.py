"""Real-format datasets through the whole tool: `bench data check`, the pre-launch check, data
root precedence, and a suite trained on CIFAR-10 fixtures evaluated on its shift sets."""

from __future__ import annotations

import json

import pytest

import data_fixtures as fx
from bench.cli import main
from bench.suite import expand, load_suite
from test_suite import write

CIFAR_SUITE = """
name: cifar-tiny
data_root: data
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  data: {name: cifar10, num_workers: 0, eval_splits: [test, stl10, "c/fog/*", cifar10.1-v6, gen/contrast/5]}
  train: {epochs: 1, batch_size: 8}
matrix:
  method: [sft, grpo_rm]
"""


@pytest.fixture
def cifar_tree(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    data = tmp_path / "data"
    fx.write_cifar10(data)
    fx.write_stl10(data)
    fx.write_cifar_c(data, "CIFAR-10-C", ["fog"])
    fx.write_cifar101(data)
    return write(tmp_path, CIFAR_SUITE)


def test_data_check_passes_then_names_what_is_missing(cifar_tree, tmp_path, capsys):
    assert main(["data", "check", str(cifar_tree)]) == 0
    out = capsys.readouterr().out
    assert "ok      cifar10: train, test, stl10, c/fog/1" in out and "MISSING" not in out
    (tmp_path / "data" / "CIFAR-10-C" / "fog.npy").unlink()
    assert main(["data", "check", str(cifar_tree)]) == 1
    out = capsys.readouterr().out
    assert "MISSING cifar10: c/fog/1, c/fog/2, c/fog/3, c/fog/4, c/fog/5" in out  # one report for the 5 severities
    assert str(tmp_path / "data" / "CIFAR-10-C" / "fog.npy") in out and "corruption file not found" in out


def test_run_refuses_to_launch_with_missing_data(cifar_tree, tmp_path, capsys):
    (tmp_path / "data" / "stl10_binary" / "test_X.bin").unlink()
    results = tmp_path / "results"
    assert main(["run", str(cifar_tree), "--results", str(results)]) == 2
    out = capsys.readouterr().out
    assert "stl10_binary/test_X.bin" in out and "nothing was launched" in out
    assert not results.exists() or not any(results.rglob("status.json"))


def test_data_root_precedence(cifar_tree, tmp_path, monkeypatch):
    suite = load_suite(cifar_tree)
    assert expand(suite, cifar_tree)[0].config.data.data_root == str(tmp_path / "data")  # relative to the suite file
    assert expand(suite, cifar_tree, data_root=tmp_path / "x")[0].config.data.data_root == str(tmp_path / "x")
    bare = write(tmp_path, CIFAR_SUITE.replace("data_root: data\n", ""), name="bare.yaml")
    assert expand(load_suite(bare), bare)[0].config.data.data_root is None  # then $BENCH_DATA_ROOT applies
    monkeypatch.setenv("BENCH_DATA_ROOT", str(tmp_path / "data"))
    assert main(["data", "check", str(bare)]) == 0
    ids = {s.run_id for s in expand(suite, cifar_tree)}
    assert ids == {s.run_id for s in expand(suite, cifar_tree, data_root=tmp_path / "x")}  # where data lives is not identity


def test_suite_trains_on_cifar10_and_scores_every_shift_set(cifar_tree, tmp_path):
    results = tmp_path / "results"
    assert main(["run", str(cifar_tree), "--results", str(results), "--reports", str(tmp_path / "reports")]) == 0
    runs = [json.loads(p.read_text()) for p in sorted((results / "cifar-tiny").glob("*/result.json"))]
    assert {r["method"] for r in runs} == {"sft", "grpo_rm"}
    for r in runs:
        m = r["metrics"]
        assert set(m) == {"test", "cifar10.1-v6", "stl10", *(f"c/fog/{s}" for s in range(1, 6)), "gen/contrast/5"}
        assert m["test"]["n"] == 6 and not m["test"]["shift"] and m["test"]["protocol"] == "id"
        assert m["stl10"]["label_space_size"] == 9 and m["stl10"]["n"] == 11 and m["stl10"]["shift"]  # 12 minus 1 monkey
        assert m["c/fog/4"]["split_facts"] == {"corruption": "fog", "severity": 4, "corruption_source": "prepared"}
        assert m["gen/contrast/5"]["split_facts"]["corruption_source"] == "generated"
        assert r["protocol"]["transform"] == {"crop_pct": 0.875, "resize": 32, "train_aug": "rrc_flip"}
        assert r["protocol"]["train_size"] == 20 and r["backbone"]["random_init"]
    table = (tmp_path / "reports" / "cifar-tiny" / "table.md").read_text()
    assert "c/fog/3" in table and "random init" in table
