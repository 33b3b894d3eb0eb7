"""Reports on synthetic result sets with statistics known by hand: aggregation, CIs, paired Δ,
OOD averages, the declared schema, table snapshots, missing/failed runs, expected vs actual."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as sps

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
        # Δ per seed 3, 1, 2 points: +2.00, CI ±4.3027·1/√3 = [−0.48, +4.48]; band [1.5, 3.5] is narrower than the CI
        Expectation(quantity="delta", split="test", dataset="cifar10", value=2.5, tolerance=1.0, source="made up"),
        # per seed 3.5, 1.5, 2.5: +2.50 [+0.02, +4.98] overlaps [3.76, 4.76] and is wider
        Expectation(quantity="delta", split="test", across="mean", value=4.26, tolerance=0.5, source="paper"),
        # 80, 82, 84: 82.00 ± 4.3027·2/√3 = [77.03, 86.97], all below [88, 92]
        Expectation(quantity="value", method="sft", split="test", dataset="cifar10", value=90.0, tolerance=2.0),
        Expectation(quantity="value", method="sft", split="shift_x", value=50.0, tolerance=2.0),  # no such split
    ]
    table = compare(expected, both)
    # Δ 3, 1, 2 vs 2.5 ± 1: nothing rejects; mean over datasets 3.5, 1.5, 2.5 vs 4.26 ± 0.5: shortfall p = t.cdf((2.5 − 3.76)·√3, 2)
    # = 0.08, undecided; SFT 80, 82, 84 vs 90 ± 2: shortfall p = t.cdf((82 − 88)·√3/2, 2) = 0.016
    assert list(table["verdict"]) == ["undecided", "undecided", "smaller than claimed", "missing"]
    assert table["p_shortfall"].iloc[1] == pytest.approx(sps.ttest_1samp([3.5, 1.5, 2.5], 3.76, alternative="less").pvalue)
    assert table["ci_high"].iloc[2] == pytest.approx(82 + 4.302652729911275 * 2 / math.sqrt(3))
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
    # per seed Δ 1.83, −0.17, 0.83 points (s = 1): CI +0.83 ± 2.48 = [−1.65, +3.32] overlaps [3.26, 5.26] and is wider
    diffs = [100 * (ood("grpo_rm", s) - ood("sft", s)) for s in range(3)]
    assert diffs == pytest.approx([11 / 6, -1 / 6, 5 / 6]) and table["ci_high"].iloc[0] == pytest.approx(actual + half(diffs))
    # shortfall against 3.26: t = (0.83 − 3.26)·√3 = −4.2 with 2 df, p = 0.026 → smaller than claimed
    assert table["verdict"].iloc[0] == "smaller than claimed"
    assert table["p_shortfall"].iloc[0] == pytest.approx(sps.ttest_1samp(diffs, 3.26, alternative="less").pvalue)
    assert "## Expected vs actual" in report.markdown and (out / "expected.tex").is_file()


@pytest.mark.figures
def test_only_files_an_earlier_report_listed_are_removed(tmp_path):
    """Stale artefacts go (a figure whose data is gone) but only those the previous report's own
    manifest names: a user's files in the folder — figures and tables included — are never
    deleted by pattern."""
    path, specs = write_suite(tmp_path)
    out = tmp_path / "reports" / "syn"
    out.mkdir(parents=True)
    for name in ("accuracy.png", "table_miou.md", "notes.txt", "photo.pdf"):
        (out / name).write_text("mine")
    (out / "manifest.json").write_text(json.dumps({"files": ["accuracy.png", "table_miou.md", "../outside.txt"]}))
    (tmp_path / "reports" / "outside.txt").write_text("not in this folder")
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    assert not (out / "accuracy.png").exists() and not (out / "table_miou.md").exists()  # listed by the last report
    assert (out / "notes.txt").read_text() == (out / "photo.pdf").read_text() == "mine"  # never listed: left alone
    assert (tmp_path / "reports" / "outside.txt").exists()  # a manifest entry outside the folder is ignored
    assert sorted(json.loads((out / "manifest.json").read_text())["files"]) == sorted(p.name for p in report.files)
    for name in ("bars", "id_vs_ood", "curves", "severity"):
        for ext in ("png", "pdf"):
            assert out / f"{name}.{ext}" in report.files and (out / f"{name}.{ext}").stat().st_size > 1000


@pytest.mark.figures
def test_config_variants_are_aggregated_apart_never_pooled_as_seeds(tmp_path):
    text = SUITE.replace("  seed: [0, 1, 2]", "  seed: [0, 1, 2]\n  train.lr: [1.0e-4, 2.0e-4]")
    path, specs = write_suite(tmp_path, text=text)
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    table = pd.read_csv(tmp_path / "reports" / "syn" / "table_id.csv")
    assert len(table) == 2 and list(table["sft_n"]) == [3, 3] and list(table["delta_n"]) == [3, 3]
    low, high = sorted(table["sft_mean"])
    assert low == pytest.approx(100 * statistics.mean(value("sft", "test", s) for s in range(3)))
    assert high == pytest.approx(low + 10)  # the 2e-4 variant, not a 6-seed mean
    assert all(" · setting " in label for label in table["dataset"])
    md = report.markdown
    assert "## Config variants" in md and "train.lr=0.0001" in md and "train.lr=0.0002" in md
    assert sum(line.startswith("- setting ") for line in md.splitlines()) == 2
    for name in ("bars", "id_vs_ood", "curves", "severity"):  # one panel per variant, no crash
        assert (tmp_path / "reports" / "syn" / f"{name}.png").is_file()
    assert "No bars figure" not in md and "drawing it failed" not in md


@pytest.mark.figures
def test_a_failing_figure_is_reported_and_costs_nothing_else(tmp_path, monkeypatch):
    import bench.report.plots as plots

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "severity", broken)
    path, specs = write_suite(tmp_path)
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    assert "No severity figure: drawing it failed (RuntimeError: no fonts)" in report.markdown
    assert (tmp_path / "reports" / "syn" / "report.html").is_file() and (tmp_path / "reports" / "syn" / "bars.png").is_file()


# ---- a fair comparison: config variants, pairs, in-domain probes, tuning, verdicts ----------

SWEEP = SUITE.replace("  method: [sft, grpo_rm]\n", "  method: [grpo_rm]\n  method.params.epsilon: [0.1, 0.2]\n  method.params.mu: [1, 2]\n")
SFT_ONLY = SUITE.replace("  method: [sft, grpo_rm]\n", "  method: [sft]\n")


def sweep_bump(spec) -> float:
    """GRPO-RM (ε, μ) config effect, by hand: ε = 0.2 adds 2 points, μ = 2 adds 1."""
    p = spec.config.method.params
    return 0.02 * (p.get("epsilon") == 0.2) + 0.01 * (p.get("mu") == 2)


def write_sweep(tmp_path):
    """SFT plus a 2 × 2 GRPO-RM (ε, μ) sweep, 3 seeds each, one setting."""
    from report_fixtures import split_metrics, write_run
    from test_suite import write
    from bench.suite import expand

    specs = []
    for text, name in ((SFT_ONLY, "sft.yaml"), (SWEEP, "syn.yaml")):
        path = write(tmp_path, text, name)
        specs += expand(load_suite(path), path)
    for spec in specs:
        write_run(tmp_path / "results", spec, split_metrics(spec.config.method.name, spec.config.seed, sweep_bump(spec)))
    return path, specs


@pytest.mark.figures
def test_an_epsilon_mu_sweep_gives_one_row_and_one_delta_per_config(tmp_path):
    path, specs = write_sweep(tmp_path)
    long = with_averages(long_table(specs, tmp_path / "results"))
    assert long["pair"].nunique() == 1 and long["variant"].nunique() == 5  # one setting; SFT + 4 GRPO-RM configs
    summary, delta = seed_summary(long), paired_delta(long)
    rows = summary[(summary["split"] == "test") & (summary["metric"] == "top1")]
    assert len(rows) == 5 and list(rows["n"]) == [3] * 5  # never 12 pooled GRPO-RM "seeds"
    d = delta[(delta["split"] == "test") & (delta["metric"] == "top1")]
    assert len(d) == 4 and list(d["n"]) == [3] * 4 and d["control_variant"].nunique() == 1
    # by hand: SFT 80, 82, 84; GRPO-RM 83, 83, 86 + bump; Δ per seed 3, 1, 2 + bump points
    grpo = rows[rows["method"] == "grpo_rm"].set_index("variant_desc")
    assert set(grpo.index) == {"ε=0.1, μ=1", "ε=0.1, μ=2", "ε=0.2, μ=1", "ε=0.2, μ=2"}
    assert 100 * grpo.at["ε=0.2, μ=2", "mean"] == pytest.approx(84 + 3) and 100 * grpo.at["ε=0.1, μ=2", "mean"] == pytest.approx(85)
    by = {desc: row for desc, row in zip(grpo.loc[:, "variant"].map(dict(zip(grpo["variant"], grpo.index))), grpo.itertuples())}
    for desc, bump in (("ε=0.1, μ=1", 0), ("ε=0.1, μ=2", 1), ("ε=0.2, μ=1", 2), ("ε=0.2, μ=2", 3)):
        row = d[d["treatment_variant"] == by[desc].variant].iloc[0]
        assert 100 * row["mean"] == pytest.approx(2 + bump)
        assert 100 * (row["ci_high"] - row["ci_low"]) / 2 == pytest.approx(4.302652729911275 / math.sqrt(3))  # s = 1 point

    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    table = pd.read_csv(tmp_path / "reports" / "syn" / "table_id.csv")
    assert len(table) == 4 and list(table["sft_n"]) == [3] * 4 and list(table["grpo_rm_n"]) == [3] * 4 and list(table["delta_n"]) == [3] * 4
    assert list(table["sft_mean"]) == pytest.approx([82.0] * 4)  # the one SFT config, beside each GRPO-RM config
    assert list(table["dataset"]) == [f"cifar10 · GRPO-RM {d} (random init)" for d in ("ε=0.1, μ=1", "ε=0.1, μ=2", "ε=0.2, μ=1", "ε=0.2, μ=2")]
    assert list(table["delta_mean"]) == pytest.approx([2.0, 3.0, 4.0, 5.0])
    md = report.markdown
    assert "| cifar10 · GRPO-RM ε=0.2, μ=2 (random init) | id | test | 82.00 ± 4.97 | **87.00 ± 4.30** | +5.00 ± 2.48 † |" in md
    assert sum(line.startswith("- variant ") and "(grpo_rm)" in line for line in md.splitlines()) == 4
    assert "method.params.epsilon=0.2, method.params.mu=2" in md
    assert "drawing it failed" not in md and "$\\varepsilon$=0.1" in (tmp_path / "reports" / "syn" / "table_id.tex").read_text()
    for name in ("bars", "id_vs_ood", "curves", "severity"):
        assert (tmp_path / "reports" / "syn" / f"{name}.png").is_file()
    claims = compare([Expectation(quantity="delta", split="test", value=5.0, tolerance=3.0)], long)
    assert list(claims["n"]) == [3] * 4 and list(claims["actual"]) == pytest.approx([2.0, 3.0, 4.0, 5.0])
    assert claims["dataset"].iloc[3] == "cifar10 · GRPO-RM ε=0.2, μ=2 (random init)"  # the table's row label


IN_DOMAIN = {**SPLITS, "transfer/cifar10/knn": ("transfer", 0.95, 0.96)}


def test_transfer_to_the_source_dataset_is_an_in_domain_probe_in_no_average(tmp_path):
    path, specs = write_suite(tmp_path, splits=IN_DOMAIN)
    long = with_averages(long_table(specs, tmp_path / "results"))
    probe = long[long["split"] == "transfer/cifar10/knn"]
    assert set(probe["protocol"]) == {"id_probe"} and set(probe["target"]) == {"cifar10"}
    summary = seed_summary(long)
    # by hand: transfer average over stl10 and cifar100 only, ood_avg over the shift sets only
    knn = [statistics.mean([value("sft", "transfer/stl10/knn", s), value("sft", "transfer/cifar100/knn", s)]) for s in range(3)]
    assert at(summary, method="sft", split="transfer_avg/knn", metric="top1")["mean"] == pytest.approx(statistics.mean(knn))
    c = lambda seed: statistics.mean(value("sft", s, seed) for s in ("c/fog/1", "c/fog/2", "c/snow/1", "c/snow/2"))  # noqa: E731
    ood = [statistics.mean([c(s), value("sft", "cifar10.1-v6", s), value("sft", "cifar10.1-v4", s)]) for s in range(3)]
    assert at(summary, method="sft", split="ood_avg", metric="top1")["mean"] == pytest.approx(statistics.mean(ood))
    assert at(summary, method="sft", split="transfer/cifar10/knn", metric="top1")["mean"] == pytest.approx(0.97)

    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    out = tmp_path / "reports" / "syn"
    id_md, ood_md = (out / "table_id.md").read_text(), (out / "table_ood.md").read_text()
    assert "| cifar10 (random init) | in-domain probe | cifar10 · kNN | 97.00 ± 4.97 | **98.00 ± 4.30** | +1.00 ± 2.48 |" in id_md
    assert "cifar10 · kNN" not in ood_md and "in-domain probe" not in ood_md
    assert "| cifar10 (random init) | transfer | transfer average · kNN | 72.00 ± 4.97 | **75.00 ± 4.30** | +3.00 ± 2.48 † |" in ood_md
    assert "in no transfer or OOD average" in id_md and report.tables[0].frame["protocol"].iloc[1] == "in-domain probe"

    # with one other target left, there is no transfer average at all (it would only repeat it)
    two = {k: v for k, v in IN_DOMAIN.items() if k != "transfer/cifar100/knn"}
    path, specs = write_suite(tmp_path / "two", splits=two)
    long = with_averages(long_table(specs, tmp_path / "two" / "results"))
    assert not long["split"].str.startswith("transfer_avg/").any()


SELECTION_SCORES = {"sft": {3e-5: 0.70, 1e-4: 0.65, 3e-4: 0.60}, "grpo_rm": {3e-5: 0.60, 1e-4: 0.72, 3e-4: 0.66}}
CHOSEN = {"sft": 3e-5, "grpo_rm": 1e-4}
LRS = [3e-5, 1e-4, 3e-4]


def write_tuned(tmp_path, tune_leak: float = 0.01):
    """Model selection in the store's format: per method 3 tuning runs (seed 0, held-out split
    only, plus a bogus 'test' number that must reach nothing) and 3 final runs at the chosen lr
    recording the selection."""
    from report_fixtures import split_metrics, write_run
    from test_suite import write
    from bench.suite import expand

    specs = []
    for method in ("sft", "grpo_rm"):
        # tuning configs differ from the finals beyond lr (the real ones evaluate only the held-out split)
        tune = SUITE.replace("  method: [sft, grpo_rm]\n  seed: [0, 1, 2]\n",
                             f"  method: [{method}]\n  seed: [0]\n  train.lr: [3.0e-5, 1.0e-4, 3.0e-4]\n  train.eval_batch_size: [128]\n")
        path = write(tmp_path, tune, f"tune_{method}.yaml")
        for spec in expand(load_suite(path), path):
            lr = spec.config.train.lr
            metrics = {"heldout": {"top1": SELECTION_SCORES[method][lr], "n": 50, "shift": False, "protocol": "heldout"},
                       "test": {"top1": tune_leak, "n": 100, "shift": False, "protocol": "id"}}
            write_run(tmp_path / "results", spec, metrics, stage={"stage": "tune", "tuned_values": {"train.lr": lr}, "group": method})
            specs.append(spec)
        final = SUITE.replace("  method: [sft, grpo_rm]\n", f"  method: [{method}]\n  train.lr: [{CHOSEN[method]}]\n")
        path = write(tmp_path, final, f"final_{method}.yaml")
        selection = {"metric": "top1", "split": "heldout", "tuned": {"train.lr": LRS}, "chosen": {"train.lr": CHOSEN[method]},
                     "seeds": [0], "scores": {json.dumps({"train.lr": lr}, sort_keys=True): s for lr, s in SELECTION_SCORES[method].items()}}
        for spec in expand(load_suite(path), path):
            write_run(tmp_path / "results", spec, split_metrics(method, spec.config.seed), stage={"stage": "final", "selection": selection})
            specs.append(spec)
    return path, specs


@pytest.mark.figures
def test_tuning_runs_reach_only_the_sweep_figure_and_finals_pair_across_chosen_lrs(tmp_path):
    from bench.report.aggregate import finished_results, selection_table, sweep_table, training_log

    path, specs = write_tuned(tmp_path)
    results = tmp_path / "results"
    long = with_averages(long_table(specs, results))
    assert (long["stage"] == "tune").sum() == 6 * 2 and set(long.loc[long["stage"] == "tune", "split"]) == {"heldout", "test"}
    summary, delta = seed_summary(long), paired_delta(long)
    test = summary[(summary["split"] == "test") & (summary["metric"] == "top1")].set_index("method")
    # the bogus 1% of the tuning runs is nowhere: 80, 82, 84 and 83, 83, 86 as in the untuned fixture
    assert list(test["n"]) == [3, 3] and 100 * test.at["sft", "mean"] == pytest.approx(82) and 100 * test.at["grpo_rm", "mean"] == pytest.approx(84)
    assert "heldout" not in set(summary["split"]) and long.loc[long["stage"] == "final", "pair"].nunique() == 1
    d = at(delta, split="test", metric="top1")  # SFT at 3e-5 pairs with GRPO-RM at 1e-4: lr is tuned
    assert d["n"] == 3 and 100 * d["mean"] == pytest.approx(2.0)
    assert set(training_log(specs, results)["run_id"]) == set(long.loc[long["stage"] == "final", "run_id"])
    claim = compare([Expectation(quantity="value", method="sft", split="test", value=82.0, tolerance=10.0)], long)
    assert claim["n"].iloc[0] == 3 and claim["actual"].iloc[0] == pytest.approx(82.0) and claim["verdict"].iloc[0] == "reproduced"

    sweep = sweep_table(long, selection_table(finished_results(specs, results)))
    sft = sweep[sweep["method"] == "sft"].set_index("values")
    assert len(sweep) == 6 and list(sft["score"]) == [0.70, 0.65, 0.60] and list(sft["seed_values"]) == [[0.70], [0.65], [0.60]]
    assert sweep.loc[sweep["chosen"], ["method", "values"]].values.tolist() == [["sft", '{"train.lr": 3e-05}'], ["grpo_rm", '{"train.lr": 0.0001}']]

    report = build_report(load_suite(path), specs, results, tmp_path / "reports", path)
    out = tmp_path / "reports" / "syn"
    note = "tuned on held-out split over lr ∈ {3e-5, 1e-4, 3e-4}; chosen: SFT 3e-5, GRPO-RM 1e-4"
    for name in ("table_id.md", "table_ood.md", "report.md", "report.html"):
        assert note in (out / name).read_text(), name
    assert r"lr $\in$ \{3e-5, 1e-4, 3e-4\}; chosen: SFT 3e-5, GRPO-RM 1e-4" in (out / "table_id.tex").read_text()
    assert out / "sweep.png" in report.files and out / "sweep.pdf" in report.files and (out / "sweep.png").stat().st_size > 1000
    assert "drawing it failed" not in report.markdown and (out / "selection.csv").is_file()
    table = pd.read_csv(out / "table_id.csv")
    assert len(table) == 1 and table["sft_n"].iloc[0] == 3 and table["sft_mean"].iloc[0] == pytest.approx(82.0)


def test_pair_key_masks_tuned_keys_and_never_pairs_tuned_with_untuned():
    from bench.report.aggregate import config_variant, pair_key

    base = {"method": {"name": "sft", "params": {}}, "seed": 0, "train": {"lr": 3e-5}, "data": {"name": "cifar10"}}
    other = {**base, "method": {"name": "grpo_rm", "params": {"epsilon": 0.2}}, "seed": 1, "train": {"lr": 1e-4}}
    assert pair_key(base, ["train.lr"]) == pair_key(other, ["train.lr"])  # chosen lrs differ: still a pair
    assert pair_key(base, ["train.lr"]) != pair_key(base, [])  # tuned vs untuned: never
    assert pair_key(base) != pair_key(other)  # untuned lrs differ: different settings
    eps = {**other, "method": {"name": "grpo_rm", "params": {"epsilon": 0.1}}}
    assert config_variant(eps) != config_variant(other) and pair_key(eps, ["train.lr"]) == pair_key(other, ["train.lr"])
    assert config_variant({**other, "seed": 5}) == config_variant(other)


def test_tuning_note_names_choices_per_dataset_when_they_differ():
    from bench.report.tables import tuning_note

    grid = json.dumps({"train.lr": LRS})
    rows = [("cifar10", "sft", 3e-5), ("cifar10", "grpo_rm", 1e-4), ("cifar100", "sft", 1e-4), ("cifar100", "grpo_rm", 1e-4)]
    sel = pd.DataFrame([{"dataset": d, "backbone": "DINOv2-S/14", "init": "pretrained", "random_init": False, "method": m, "metric": "top1",
                         "split": "heldout", "grid": grid, "chosen": json.dumps({"train.lr": lr}), "tune_seeds": "[0]"} for d, m, lr in rows])
    note = tuning_note(sel)
    assert ("tuned on held-out split over lr ∈ {3e-5, 1e-4, 3e-4}; chosen: cifar10: SFT 3e-5, GRPO-RM 1e-4; "
            "cifar100: SFT 1e-4, GRPO-RM 1e-4 (selection: mean top-1 accuracy over tuning seed(s) 0).") in note
    assert "chosen: SFT 3e-5, GRPO-RM 1e-4 (" in tuning_note(sel[sel["dataset"] == "cifar10"])
    assert tuning_note(sel.iloc[0:0]) == ""


def synthetic_long(per_seed: dict[str, tuple[list[float], list[float]]]) -> pd.DataFrame:
    """Final-run rows of split 'test': per dataset, (SFT values, GRPO-RM values) per seed."""
    rows = []
    for dataset, (sft, grpo) in per_seed.items():
        for method, values in (("sft", sft), ("grpo_rm", grpo)):
            for seed, v in enumerate(values):
                rows.append({"suite": "syn", "run_id": f"{dataset}-{method}-{seed}", "method": method, "dataset": dataset, "backbone": "B",
                             "init": "pretrained", "random_init": False, "variant": f"{dataset}-{method}", "pair": dataset, "seed": seed,
                             "stage": "final", "protocol": "id", "split": "test", "derived": False, "metric": "top1", "value": v})
    return conform(pd.DataFrame(rows))


VERDICT_LONG = {
    "cifar10": ([0.80] * 3, [0.81, 0.82, 0.83]),  # Δ 1, 2, 3 points: 2.00 ± 4.3027/√3 = [−0.4842, 4.4842]
    "cifar100": ([0.80], [0.82]),  # one seed: Δ 2, no interval
    "stl10": ([0.80] * 3, [0.82] * 3),  # Δ 2 on every seed: a zero-width interval
    "tiny_imagenet": ([0.80] * 3, [0.82, 0.83, 0.84]),  # Δ 2, 3, 4: 3.00 ± 2.4842 = [0.5158, 5.4842]
}


@pytest.mark.parametrize("dataset, expected, tolerance, verdict", [
    # cifar10: Δ 1, 2, 3 points (seed-level t: no predictions): mean 2, SE 1/√3, df 2
    ("cifar10", 2.0, 3.0, "reproduced"),  # TOST against [−1, 5]: both one-sided p = t.sf(5.196, 2) = 0.0175 < 0.05
    ("cifar10", 4.26, 1.5, "undecided"),  # shortfall p = t.cdf((2 − 2.76)·√3, 2) = 0.16: nothing rejects
    ("cifar10", 8.0, 1.0, "smaller than claimed"),  # shortfall p = t.cdf((2 − 7)·√3, 2) = 0.0065
    ("cifar10", -3.0, 1.0, "larger than claimed"),  # excess p = t.sf((2 + 2)·√3, 2) = 0.010
    ("cifar10", 2.0, 1.2, "undecided"),  # the mean is the claim, but TOST p = t.sf(1.2·√3, 2) = 0.11
    ("cifar100", 2.0, 1.0, "no interval"),  # one seed: the point estimate alone never decides
    ("stl10", 2.0, 1.0, "no interval"),  # the same Δ on every seed: a zero-width interval measures nothing
    ("tiny_imagenet", 3.0, 2.5, "reproduced"),  # Δ 2, 3, 4: TOST p = t.sf(2.5·√3, 2) = 0.025
    ("svhn", 3.0, 1.0, "missing"),
])
def test_claim_verdicts_are_one_sided_and_equivalence_tests(dataset, expected, tolerance, verdict):
    """Each verdict word on a constructed case; the p-values against scipy's one-sample t-test
    (an independent implementation) with the one-sided alternatives."""
    claim = Expectation(quantity="delta", split="test", value=expected, tolerance=tolerance, dataset=None if dataset == "svhn" else None)
    if verdict == "missing":
        claim = Expectation(quantity="delta", split="test", value=expected, tolerance=tolerance, dataset="cifar10", metric="top5")
        assert compare([claim], synthetic_long(VERDICT_LONG))["verdict"].tolist() == ["missing"]
        return
    table = compare([claim], synthetic_long(VERDICT_LONG))
    row = table[table["dataset"] == dataset]
    assert row["verdict"].iloc[0] == verdict
    a, b = VERDICT_LONG[dataset]
    x = [100 * (t - c) for t, c in zip(b, a)]
    if len(x) > 1 and len(set(x)) > 1:
        low, high = expected - tolerance, expected + tolerance
        assert row["p_shortfall"].iloc[0] == pytest.approx(sps.ttest_1samp(x, low, alternative="less").pvalue)
        assert row["p_excess"].iloc[0] == pytest.approx(sps.ttest_1samp(x, high, alternative="greater").pvalue)
        tost = max(sps.ttest_1samp(x, low, alternative="greater").pvalue, sps.ttest_1samp(x, high, alternative="less").pvalue)
        assert row["p_equivalence"].iloc[0] == pytest.approx(tost)
        assert row["p_superiority"].iloc[0] == pytest.approx(sps.ttest_1samp(x, 0.0, alternative="greater").pvalue)
    if dataset == "cifar10":  # the hand-computed 95% interval
        assert (row["ci_low"].iloc[0], row["ci_high"].iloc[0]) == pytest.approx((2 - 4.3027 / math.sqrt(3), 2 + 4.3027 / math.sqrt(3)), abs=1e-3)


def test_undecided_claims_say_how_many_more_seeds_decide_them_or_that_none_can():
    """cifar10 against 4.26 ± 1.5 is undecided at 3 seeds; with the same mean and per-seed spread
    the shortfall test rejects once t.cdf((2 − 2.76)·√n, n − 1) < 0.05 (found by hand with scipy).
    An estimate whose image floor alone keeps the SE at 2 points never decides a ±1.5 band."""
    from bench.report.claims import ClaimTest, seeds_to_decide
    from bench.report.stats import Components, DeltaEstimate

    table = compare([Expectation(quantity="delta", split="test", value=4.26, tolerance=1.5)], synthetic_long(VERDICT_LONG))
    row = table[table["dataset"] == "cifar10"].iloc[0]
    assert row["verdict"] == "undecided"
    by_hand = next(n for n in range(3, 100) if sps.t.cdf((2 - 2.76) * math.sqrt(n), n - 1) < 0.05)
    assert row["more_seeds"] == by_hand - 3
    comps = Components(3, 0.0, (1600.0,), (0.0,), (400,), 0.0)  # image variance 1600 points² over 400 images: floor SE 2 points
    est = DeltaEstimate(3.0, math.sqrt(comps.variance()), comps.df(), 3, "crossed", comps)
    assert est.floor == pytest.approx(2.0)
    assert ClaimTest(est, 4.26, 1.5).verdict == "undecided" and seeds_to_decide(est, 4.26, 1.5) is None


def test_verdict_definitions_and_caption():
    from bench.report.claims import VERDICT_MEANING
    from bench.report.expected import CAPTION, verdict

    assert verdict(3, 1.0, 2.0, 1.5, 0.5) == "reproduced"  # a 95% CI touching both edges: the 90% CI (TOST at 5%) is inside
    assert verdict(3, 2.0, 3.0, 0.5, 1.0) == "larger than claimed"
    assert verdict(3, 2.0, 2.0, 2.0, 1.0) == "no interval" and verdict(0, math.nan, math.nan, 1, 1) == "missing"
    for word in ("reproduced", "smaller than claimed", "larger than claimed", "undecided"):
        assert word in CAPTION
    docs = (Path(__file__).parents[1] / "docs" / "reports.md").read_text()
    for word in VERDICT_MEANING:  # every reachable word is defined in the docs
        assert f"**{word}**" in docs, word


def test_a_zero_width_delta_is_never_marked_significant():
    from bench.report.tables import comparison, to_markdown

    long = synthetic_long({k: v for k, v in VERDICT_LONG.items() if k != "cifar100"})
    delta = paired_delta(long).set_index("dataset")
    assert delta.at["stl10", "ci_low"] == pytest.approx(delta.at["stl10", "ci_high"]) and not delta.at["stl10", "significant"]
    assert delta.at["tiny_imagenet", "significant"] and not delta.at["cifar10", "significant"]
    md = to_markdown(comparison("id", "ID", seed_summary(long), paired_delta(long), "top1", lambda r: r["protocol"] == "id"))
    assert "| stl10 | id | test | 80.00 ± 0.00 | **82.00 ± 0.00** | +2.00 ± 0.00 |" in md  # 0 ∉ [2, 2], but no †
    assert "| tiny_imagenet | id | test | 80.00 ± 0.00 | **83.00 ± 2.48** | +3.00 ± 2.48 † |" in md
    assert "| cifar10 | id | test | 80.00 ± 0.00 | **82.00 ± 2.48** | +2.00 ± 2.48 |" in md
