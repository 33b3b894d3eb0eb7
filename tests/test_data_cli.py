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
    assert main(["data", "check", str(cifar_tree)]) == 3  # missing data: exit 3 (bench --help lists the codes)
    out = capsys.readouterr().out
    assert "MISSING cifar10: c/fog/1, c/fog/2, c/fog/3, c/fog/4, c/fog/5" in out  # one report for the 5 severities
    assert str(tmp_path / "data" / "CIFAR-10-C" / "fog.npy") in out and "corruption file not found" in out


def test_run_refuses_to_launch_with_missing_data(cifar_tree, tmp_path, capsys):
    (tmp_path / "data" / "stl10_binary" / "test_X.bin").unlink()
    results = tmp_path / "results"
    assert main(["run", str(cifar_tree), "--results", str(results)]) == 3
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
        # 20 fixture images minus the held-out carve: 10% per class, at least one of each class with two or more
        facts = r["protocol"]["train_split_facts"]
        assert facts["holdout_role"] == "train" and r["protocol"]["train_size"] == facts["n"] == 14 and r["backbone"]["random_init"]
    table = (tmp_path / "reports" / "cifar-tiny" / "report.md").read_text()
    assert "| c/fog/3 |" in table and "cifar10-C (mean of 5 splits)" in table and "random init" in table


def test_transfer_evaluation_records_sr_and_knn_and_reuses_cached_features(cifar_tree, tmp_path, monkeypatch):
    import bench.transfer

    calls = []
    real = bench.transfer._extract
    monkeypatch.setattr(bench.transfer, "_extract", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    text = CIFAR_SUITE.replace("matrix:", "evaluations: [id, transfer]\nmatrix:").replace(
        "  train: {epochs: 1, batch_size: 8}\n",
        "  train: {epochs: 1, batch_size: 8}\n  transfer: {targets: [{name: stl10}], sr_cs: [0.1, 1.0], sr_holdout: 0.34}\n",
    )
    suite = write(tmp_path, text, name="transfer.yaml")
    results = tmp_path / "results"
    args = ["run", str(suite), "--results", str(results), "--reports", str(tmp_path / "reports")]
    assert main(args) == 0
    assert sorted(calls) == ["test", "test", "train", "train"]  # per run: the target's train and test split once
    runs = {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in (results / "cifar-tiny").glob("*/result.json")}
    for r in runs.values():
        knn, sr = r["metrics"]["transfer/stl10/knn"], r["metrics"]["transfer/stl10/sr"]
        assert knn["protocol"] == sr["protocol"] == "transfer" and knn["k"] == 20 and knn["temperature"] == 0.07
        assert sr["C"] in (0.1, 1.0) and sr["n"] == knn["n"] == 12 and sr["n_train"] == 6 and not sr["shift"]
        assert 0.0 <= knn["top1"] <= 1.0 and "test" in r["metrics"] and "stl10" not in r["metrics"]  # evaluations: id + transfer only
    assert main([*args, "--force"]) == 0  # same seed, same weights: features come from the cache
    assert len(calls) == 4
    again = {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in (results / "cifar-tiny").glob("*/result.json")}
    assert all(again[m]["metrics"]["transfer/stl10/knn"] == runs[m]["metrics"]["transfer/stl10/knn"] for m in runs)


@pytest.mark.parametrize("name", ["demo", "demo_seg", "ood", "segmentation"])
def test_shipped_suites_validate(name, capsys):
    from pathlib import Path

    path = Path(__file__).parent.parent / "suites" / f"{name}.yaml"
    assert main(["validate", str(path)]) == 0
    assert f"suite '{name.replace('_', '-')}'" in capsys.readouterr().out


def test_data_check_covers_transfer_targets(cifar_tree, tmp_path, capsys):
    text = CIFAR_SUITE.replace("matrix:", "evaluations: [id, transfer]\nmatrix:").replace(
        "  train: {epochs: 1, batch_size: 8}\n", "  train: {epochs: 1, batch_size: 8}\n  transfer: {targets: [{name: tiny_imagenet}]}\n")
    suite = write(tmp_path, text, name="t.yaml")
    assert main(["data", "check", str(suite)]) == 3
    assert "MISSING tiny_imagenet: train, val" in capsys.readouterr().out
