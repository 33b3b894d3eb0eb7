"""Reports on synthetic result sets with statistics known by hand: aggregation, CIs, paired Δ,
OOD averages, the declared schema, table snapshots, missing/failed runs, expected vs actual."""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

import pandas as pd
import pytest

from bench.report import build_report
from bench.report.aggregate import long_table, paired_delta, seed_summary, severity_summary, t_interval, with_averages
from bench.report.expected import compare
from bench.report.schema import DTYPES, conform, read_long
from bench.suite import Expectation, load_suite
from report_fixtures import SPLITS, SUITE, value, write_suite

T975 = {1: 12.706204736174707, 2: 4.302652729911275}  # Student-t 0.975 quantiles (printed tables), df = 1, 2
SNAPSHOTS = Path(__file__).parent / "snapshots"


def half(values: list[float]) -> float:
    return T975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))


def summary_of(tmp_path, **kw):
    path, specs = write_suite(tmp_path, **kw)
    long = with_averages(long_table(specs, tmp_path / "results"))
    return path, specs, long


def at(frame: pd.DataFrame, **where) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for k, v in where.items():
        mask &= frame[k] == v
    rows = frame[mask]
    assert len(rows) == 1, (where, rows)
    return rows.iloc[0]


def test_t_interval_against_printed_t_table():
    low, high = t_interval([1.0, 2.0, 3.0])
    assert (low + high) / 2 == pytest.approx(2.0)
    assert (high - low) / 2 == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert (t_interval([0.5, 0.7])[1] - 0.6) == pytest.approx(12.706204736174707 * statistics.stdev([0.5, 0.7]) / math.sqrt(2))
    assert all(math.isnan(x) for x in t_interval([0.9]))  # one seed: no interval, not a zero-width one


def test_seed_aggregates_paired_delta_and_ood_average_match_hand_computation(tmp_path):
    _, _, long = summary_of(tmp_path)
    assert len(long[~long["derived"]]) == 6 * (7 * 3 + 2)  # runs × (splits × metrics + transfer top-1)
    summary, delta = seed_summary(long), paired_delta(long)
    sft_test = [value("sft", "test", s) for s in range(3)]
    row = at(summary, method="sft", split="test", metric="top1")
    assert row["mean"] == pytest.approx(statistics.mean(sft_test)) and row["std"] == pytest.approx(statistics.stdev(sft_test))
    assert row["n"] == 3 and row["ci_high"] - row["mean"] == pytest.approx(half(sft_test))

    # paired over seeds: the interval is over per-seed differences, not the two methods' spreads
    diffs = [value("grpo_rm", "test", s) - value("sft", "test", s) for s in range(3)]
    d = at(delta, split="test", metric="top1")
    assert d["mean"] == pytest.approx(statistics.mean(diffs)) and d["n"] == 3
    assert (d["ci_high"] - d["ci_low"]) / 2 == pytest.approx(half(diffs))

    # OOD average: CIFAR-10-C (mean of its 4 splits) counts once next to CIFAR-10.1
    def ood(method, seed):
        c = statistics.mean(value(method, s, seed) for s in ("c/fog/1", "c/fog/2", "c/snow/1", "c/snow/2"))
        return statistics.mean([c, value(method, "cifar10.1-v6", seed), value(method, "cifar10.1-v4", seed)])

    sft_ood = [ood("sft", s) for s in range(3)]
    assert at(summary, method="sft", split="ood_avg", metric="top1")["mean"] == pytest.approx(statistics.mean(sft_ood))
    plain = statistics.mean(value("sft", s, 0) for s, (p, *_) in SPLITS.items() if p == "shift")
    assert at(long, run_id=long[long["method"] == "sft"]["run_id"].iloc[0], split="ood_avg", metric="top1")["value"] != pytest.approx(plain)
    ood_diffs = [ood("grpo_rm", s) - ood("sft", s) for s in range(3)]
    assert at(delta, split="ood_avg", metric="top1")["mean"] == pytest.approx(statistics.mean(ood_diffs))
    assert at(summary, method="grpo_rm", split="c/mean", metric="top1")["mean"] == pytest.approx(
        statistics.mean(statistics.mean(value("grpo_rm", s, seed) for s in SPLITS if s.startswith("c/")) for seed in range(3)))
    knn = [statistics.mean([value("sft", "transfer/stl10/knn", s), value("sft", "transfer/cifar100/knn", s)]) for s in range(3)]
    assert at(summary, method="sft", split="transfer_avg/knn", metric="top1")["mean"] == pytest.approx(statistics.mean(knn))


def test_severity_curve_points_average_corruptions_and_start_at_the_clean_split(tmp_path):
    _, _, long = summary_of(tmp_path)
    sev = severity_summary(long)
    sev = sev[(sev["method"] == "sft") & (sev["metric"] == "top1")].set_index("severity")["mean"]
    assert list(sev.index) == [0, 1, 2]
    assert sev[0] == pytest.approx(statistics.mean(value("sft", "test", s) for s in range(3)))
    assert sev[2] == pytest.approx(statistics.mean((value("sft", "c/fog/2", s) + value("sft", "c/snow/2", s)) / 2 for s in range(3)))


def test_long_table_follows_the_declared_schema_and_round_trips(tmp_path):
    path, specs, long = summary_of(tmp_path)
    assert dict(long.dtypes.astype(str)) == DTYPES
    row = at(long, method="sft", seed=0, split="c/fog/2", metric="top1")
    assert (row["ood_set"], row["corruption"], row["severity"], row["protocol"]) == ("c", "fog", 2, "shift")
    assert row["git_commit"] == "abc123" and row["host"] == "testhost" and row["finished_utc"].endswith("+00:00")
    t = at(long, method="sft", seed=0, split="transfer/stl10/knn", metric="top1")
    assert (t["target"], t["probe"], t["protocol"]) == ("stl10", "knn", "transfer")
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    out = tmp_path / "reports" / "syn"
    for name in ("results_long.csv", "results_long.parquet"):
        back = read_long(out / name)
        pd.testing.assert_frame_equal(back, long, check_exact=False)
    assert out / "results_long.parquet" in report.files
    with pytest.raises(ValueError, match="not in the long-table schema"):
        conform(long.assign(surprise=1))


def snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if intended, rerun with UPDATE_SNAPSHOTS=1 and review the diff"


def test_markdown_and_latex_tables_match_snapshots(tmp_path):
    path, specs = write_suite(tmp_path)
    build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    out = tmp_path / "reports" / "syn"
    for name in ("table_id.md", "table_ood.md", "table_id.tex", "table_ood.tex"):
        snapshot(name, (out / name).read_text())
    tex = (out / "table_ood.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{" in tex and "cifar10.1-v6" in tex


def test_best_value_is_bold_per_row_and_ties_are_both_bold(tmp_path):
    path, specs = write_suite(tmp_path)
    build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    table = pd.read_csv(tmp_path / "reports" / "syn" / "table_ood.csv")
    for r in table.itertuples():
        g, s = round(r.grpo_rm_mean, 2), round(r.sft_mean, 2)
        assert r.best == ("grpo_rm" if g > s else "sft" if s > g else "grpo_rm;sft")
    md = (tmp_path / "reports" / "syn" / "table_ood.md").read_text()
    # CIFAR-10.1 v6: SFT 75 + mean offset 2 = 77.00 beats GRPO-RM 74 + 2 = 76.00; the half-widths are
    # t(0.975, 2) · s / √3 with s = 0.02 and √0.0003 (offsets 0, 2, 4 and 1, 1, 4 points)
    assert "| cifar10 (random init) | shift | cifar10.1-v6 | **77.00 ± 4.97** | 76.00 ± 4.30 |" in md
    assert "| cifar10 (random init) | shift | cifar10.1-v4 | **72.00 ± 4.97** | **72.00 ± 4.30** |" in md
    assert "grpo_rm;sft" in set(table["best"])


def test_missing_and_failed_runs_are_listed_and_excluded(tmp_path):
    path, specs = write_suite(tmp_path, skip={("grpo_rm", 2)}, fail={("sft", 1)})
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    states = report.states.set_index(["method", "seed"])["state"]
    assert states[("grpo_rm", 2)] == "pending" and states[("sft", 1)] == "failed"
    md = (tmp_path / "reports" / "syn" / "report.md").read_text()
    assert "4 of 6 runs done. Tables aggregate the finished runs only." in md
    assert "## Runs not in the tables (2 of 6)" in md
    assert "| failed | RuntimeError: CUDA out of memory (synthetic) |" in md and "| pending |  |" in md and "nan" not in md
    # only seed 0 is done for both methods: the paired Δ has one pair and no interval
    table = pd.read_csv(tmp_path / "reports" / "syn" / "table_id.csv")
    assert table["sft_n"].iloc[0] == 2 and table["delta_n"].iloc[0] == 1 and math.isnan(table["delta_ci_low"].iloc[0])
    assert "+3.00 (n=1)" in md  # seed 0: (82 + 1) − (80 + 0)
    runs = pd.read_csv(tmp_path / "reports" / "syn" / "runs.csv")
    assert sorted(runs["state"]) == ["done"] * 4 + ["failed", "pending"]


def test_a_suite_with_nothing_finished_still_reports_its_runs(tmp_path):
    path, specs = write_suite(tmp_path, skip={(m, s) for m in ("sft", "grpo_rm") for s in range(3)})
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    assert "0 of 6 runs done" in report.markdown and "No finished runs yet" in report.markdown
    assert (tmp_path / "reports" / "syn" / "report.html").is_file() and not report.tables


def test_random_init_is_named_in_tables_and_html_and_pretrained_is_not(tmp_path):
    path, specs = write_suite(tmp_path / "a")
    build_report(load_suite(path), specs, tmp_path / "a" / "results", tmp_path / "a" / "reports", path)
    out = tmp_path / "a" / "reports" / "syn"
    assert "RANDOM INIT" in (out / "table_id.md").read_text() and "(random init)" in (out / "table_id.tex").read_text()
    assert 'id="random-init"' in (out / "report.html").read_text()
    path, specs = write_suite(tmp_path / "b", random_init=False)
    build_report(load_suite(path), specs, tmp_path / "b" / "results", tmp_path / "b" / "reports", path)
    out = tmp_path / "b" / "reports" / "syn"
    assert "random init" not in (out / "report.md").read_text().lower()
    assert 'id="random-init"' not in (out / "report.html").read_text()


def test_expected_vs_actual_judges_tolerance_per_dataset_and_over_datasets(tmp_path):
    _, _, long = summary_of(tmp_path)
    other = long.assign(dataset="cifar100", value=long["value"] + 0.01 * (long["method"] == "grpo_rm").astype(float))
    both = pd.concat([long, other], ignore_index=True)
    diffs = [value("grpo_rm", "test", s) - value("sft", "test", s) for s in range(3)]
    expected = [
        Expectation(quantity="delta", split="test", dataset="cifar10", value=2.5, tolerance=1.0, source="made up"),  # +2.00: within
        Expectation(quantity="delta", split="test", across="mean", value=4.26, tolerance=0.5, source="paper"),  # +2.50: outside
        Expectation(quantity="value", method="sft", split="test", dataset="cifar10", value=90.0, tolerance=2.0),  # 82.00: outside
        Expectation(quantity="value", method="sft", split="shift_x", value=50.0, tolerance=2.0),  # no such split
    ]
    table = compare(expected, both)
    assert list(table["verdict"]) == ["within", "outside", "outside", "missing"]
    assert table["actual"].iloc[0] == pytest.approx(100 * statistics.mean(diffs))
    # over datasets: per seed the mean of cifar10's and cifar100's Δ, then over seeds
    assert table["actual"].iloc[1] == pytest.approx(100 * statistics.mean(diffs) + 0.5)
    assert table["dataset"].iloc[1] == "mean of 2 datasets (random init)" and table["n"].iloc[1] == 3
    assert table["dataset"].iloc[0] == "cifar10 (random init)"  # the tables' row label, random init named
    assert (table["ci_high"].iloc[0] - table["ci_low"].iloc[0]) / 2 == pytest.approx(100 * half(diffs))
    assert table["actual"].iloc[2] == pytest.approx(82.0)


def test_expected_table_in_the_report_files(tmp_path):
    text = (Path(__file__).parent / "report_fixtures.py").read_text().split('SUITE = """')[1].split('"""')[0]
    text += "expected:\n  - {quantity: delta, split: ood_avg, value: 4.26, tolerance: 1.0, across: mean, source: 'arXiv 2511.15256'}\n"
    path, specs = write_suite(tmp_path, text=text)
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    out = tmp_path / "reports" / "syn"
    table = pd.read_csv(out / "expected.csv")
    # by hand: OOD sets are CIFAR-10-C (4 splits), CIFAR-10.1 v6, v4; one dataset, so the mean is its Δ
    sets = (["c/fog/1", "c/fog/2", "c/snow/1", "c/snow/2"], ["cifar10.1-v6"], ["cifar10.1-v4"])
    ood = lambda m, seed: statistics.mean(statistics.mean(value(m, s, seed) for s in group) for group in sets)  # noqa: E731
    actual = 100 * statistics.mean(ood("grpo_rm", s) - ood("sft", s) for s in range(3))
    assert table["actual"].iloc[0] == pytest.approx(actual) and actual == pytest.approx(0.8333333)
    assert table["verdict"].iloc[0] == "outside"  # 4.26 − 0.83 > 1.0
    assert "## Expected vs actual" in report.markdown and (out / "expected.tex").is_file()


def test_stale_artefacts_of_an_earlier_report_are_removed(tmp_path):
    path, specs = write_suite(tmp_path)
    out = tmp_path / "reports" / "syn"
    out.mkdir(parents=True)
    for name in ("accuracy.png", "table_miou.md", "notes.txt"):
        (out / name).write_text("old")
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    assert not (out / "accuracy.png").exists() and not (out / "table_miou.md").exists()
    assert (out / "notes.txt").exists()  # not ours: left alone
    for name in ("bars", "id_vs_ood", "curves", "severity"):
        for ext in ("png", "pdf"):
            assert out / f"{name}.{ext}" in report.files and (out / f"{name}.{ext}").stat().st_size > 1000


def test_config_variants_are_aggregated_apart_never_pooled_as_seeds(tmp_path):
    text = SUITE.replace("  seed: [0, 1, 2]", "  seed: [0, 1, 2]\n  train.lr: [1.0e-4, 2.0e-4]")
    path, specs = write_suite(tmp_path, text=text)
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    table = pd.read_csv(tmp_path / "reports" / "syn" / "table_id.csv")
    assert len(table) == 2 and list(table["sft_n"]) == [3, 3] and list(table["delta_n"]) == [3, 3]
    low, high = sorted(table["sft_mean"])
    assert low == pytest.approx(100 * statistics.mean(value("sft", "test", s) for s in range(3)))
    assert high == pytest.approx(low + 10)  # the 2e-4 variant, not a 6-seed mean
    assert all(" · variant " in label for label in table["dataset"])
    md = report.markdown
    assert "## Config variants" in md and "train.lr=0.0001" in md and "train.lr=0.0002" in md
    for name in ("bars", "id_vs_ood", "curves", "severity"):  # one panel per variant, no crash
        assert (tmp_path / "reports" / "syn" / f"{name}.png").is_file()
    assert "No bars figure" not in md and "drawing it failed" not in md


def test_a_failing_figure_is_reported_and_costs_nothing_else(tmp_path, monkeypatch):
    import bench.report.plots as plots

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "severity", broken)
    path, specs = write_suite(tmp_path)
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    assert "No severity figure: drawing it failed (RuntimeError: no fonts)" in report.markdown
    assert (tmp_path / "reports" / "syn" / "report.html").is_file() and (tmp_path / "reports" / "syn" / "bars.png").is_file()
