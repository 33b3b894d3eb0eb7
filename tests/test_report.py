"""Aggregation and the Markdown table on synthetic result sets with known statistics."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest

from bench.report import build_report
from bench.report.aggregate import long_table, paired_delta, seed_summary, with_ood_average
from bench.store import RunDir
from bench.suite import expand, load_suite
from test_suite import GOOD, write

ACC = {  # (method, seed) → (test, shift_background, shift_palette, shift_corruption)
    ("sft", 0): (0.80, 0.60, 0.70, 0.50),
    ("sft", 1): (0.82, 0.64, 0.66, 0.52),
    ("grpo_rm", 0): (0.81, 0.66, 0.72, 0.55),
    ("grpo_rm", 1): (0.85, 0.66, 0.70, 0.53),
}
SPLITS = ("test", "shift_background", "shift_palette", "shift_corruption")


def fake_results(tmp_path, init="random init", skip=()):
    path = write(tmp_path, GOOD)
    specs = expand(load_suite(path), path)
    for spec in specs:
        key = (spec.config.method.name, spec.config.seed)
        if key in skip:
            continue
        RunDir.of(tmp_path / "results", spec.suite, spec.run_id).write_result({
            "run_id": spec.run_id, "method": key[0], "dataset": "fmnist_composites", "seed": key[1],
            "backbone": {"display": "tiny", "init": init, "random_init": init == "random init"},
            "metrics": {s: {"top1": a, "top5": 1.0, "nll": 0.5, "n": 100, "shift": s != "test"} for s, a in zip(SPLITS, ACC[key])},
        })
    return specs


def test_seed_summary_and_paired_delta_match_hand_computation(tmp_path):
    specs = fake_results(tmp_path)
    long, missing = long_table(specs, tmp_path / "results")
    assert not missing and len(long) == 4 * 4 * 3
    assert pd.api.types.is_float_dtype(long["value"])
    long = with_ood_average(long)
    summary = seed_summary(long).set_index(["method", "split"])
    assert summary.at[("sft", "test"), "mean"] == pytest.approx(0.81)
    assert summary.at[("sft", "test"), "std"] == pytest.approx(statistics.stdev([0.80, 0.82]))
    sft_ood = [statistics.mean(ACC[("sft", s)][1:]) for s in (0, 1)]
    assert summary.at[("sft", "ood_avg"), "mean"] == pytest.approx(statistics.mean(sft_ood))
    delta = paired_delta(long).set_index("split")
    assert delta.at["test", "mean"] == pytest.approx(statistics.mean([0.01, 0.03]))
    assert delta.at["test", "std"] == pytest.approx(statistics.stdev([0.01, 0.03]))
    grpo_ood = [statistics.mean(ACC[("grpo_rm", s)][1:]) for s in (0, 1)]
    assert delta.at["ood_avg", "mean"] == pytest.approx(statistics.mean(g - s for g, s in zip(grpo_ood, sft_ood)))


def test_markdown_table_and_files(tmp_path):
    specs = fake_results(tmp_path)
    report = build_report("t", specs, tmp_path / "results", tmp_path / "reports")
    md = report.markdown
    assert "random init (not pretrained)" in md and "SFT (random init)" in md
    assert "| SFT (random init) | 81.00 ± 1.41 (n=2) |" in md
    assert "| Δ GRPO-RM − SFT | +2.00 ± 1.41 (n=2) |" in md
    assert "test (ID)" in md and "shift_palette (OOD)" in md and "OOD avg" in md
    for path in report.files:
        assert path.is_file() and path.stat().st_size > 0
    assert (tmp_path / "reports" / "t" / "table.md").read_text() == md
    with open(tmp_path / "reports" / "t" / "accuracy.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_pretrained_runs_are_not_called_random_and_missing_runs_listed(tmp_path):
    specs = fake_results(tmp_path, init="pretrained: x.pth", skip={("grpo_rm", 1)})
    report = build_report("t", specs, tmp_path / "results", tmp_path / "reports")
    assert "random init" not in report.markdown
    assert len(report.missing) == 1 and "grpo_rm seed=1" in report.markdown
    # with one GRPO-RM seed missing, the paired Δ uses the one matching seed only
    assert "(n=1)" in report.markdown


def test_expected_vs_actual_judges_tolerance(tmp_path):
    from bench.suite import Expectation

    specs = fake_results(tmp_path)
    expected = [
        Expectation(quantity="delta", split="test", value=2.5, tolerance=1.0, source="made up"),  # actual +2.00: within
        Expectation(quantity="delta", split="ood_avg", value=4.26, tolerance=0.5, source="paper"),  # actual +3.33: outside
        Expectation(quantity="value", method="sft", split="test", value=90.0, tolerance=2.0),  # actual 81.00: outside
        Expectation(quantity="value", method="sft", split="shift_x", value=50.0, tolerance=2.0),  # no such split
    ]
    report = build_report("t", specs, tmp_path / "results", tmp_path / "reports", expected)
    table = pd.read_csv(tmp_path / "reports" / "t" / "expected.csv")
    assert list(table["verdict"]) == ["within", "outside", "outside", "missing"]
    assert table["actual"].iloc[0] == pytest.approx(2.0) and table["actual"].iloc[2] == pytest.approx(81.0)
    grpo_ood = statistics.mean(statistics.mean(ACC[("grpo_rm", s)][1:]) - statistics.mean(ACC[("sft", s)][1:]) for s in (0, 1))
    assert table["actual"].iloc[1] == pytest.approx(100 * grpo_ood)
    assert "## Expected vs actual" in report.markdown
    assert "| Δ GRPO-RM − SFT, test | fmnist_composites | +2.50 ± 1.00 | +2.00 (n=2) | within tolerance | made up |" in report.markdown


def test_transfer_average_is_per_probe_mean_over_target_datasets():
    import pandas as pd

    from bench.report.aggregate import LONG_COLUMNS, with_transfer_average

    base = dict(run_id="r", method="sft", dataset="cifar10", backbone="b", init="i", random_init=False, seed=0, shift=False, metric="top1")
    rows = [
        {**base, "split": "test", "value": 0.9},
        {**base, "split": "transfer/stl10/knn", "value": 0.6},
        {**base, "split": "transfer/cifar100/knn", "value": 0.4},
        {**base, "split": "transfer/stl10/sr", "value": 0.7},
    ]
    out = with_transfer_average(pd.DataFrame(rows, columns=LONG_COLUMNS)).set_index("split")["value"]
    assert out["transfer_avg/knn"] == pytest.approx(0.5) and out["transfer_avg/sr"] == pytest.approx(0.7)
    assert "transfer_avg/test" not in out.index and len(out) == 6
