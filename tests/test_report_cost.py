"""The cost table (bench/report/cost.py) on synthetic suites whose costs are known by hand: a
one-off shared cache build is kept out of the per-run times and shown once, step times and peak
memory are per method config, and results without a cost block still render."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.report import build_report
from bench.report.aggregate import finals, long_table
from bench.report.cost import cost_table, shared_cost_sentence
from bench.suite import expand, load_suite
from report_fixtures import SUITE, split_metrics, write_run
from test_suite import write

CACHE_S = 80.0  # the frozen-prefix build, paid by SFT seed 0 (the first run of the suite)
OWN = {"sft": 30.0, "grpo_rm": 32.0}  # own wall time of seed 0; + seed per later seed
STEP = {"sft": (0.010, 0.012, 0.014), "grpo_rm": (0.020, 0.030, 0.025)}  # median step (s) per seed
RSS = {"sft": (500.0, 700.0, 600.0), "grpo_rm": (800.0, 750.0, 900.0)}  # peak RSS (MB) per seed


def cost_block(method: str, seed: int) -> dict:
    """A cost block as bench.job.run_cost writes it, with the shared build on SFT seed 0 only."""
    shared = CACHE_S if (method, seed) == ("sft", 0) else 0.0
    own = OWN[method] + seed
    return {"shared_cache_s": shared, "shared_cache_built": 5 if shared else 0, "shared_cache_reused": 0 if shared else 5,
            "train_s": own - 5.0, "eval_s": 3.0, "steps": 100, "step_median_s": STEP[method][seed], "step_mean_s": STEP[method][seed] * 1.1,
            "timed_steps": 99, "first_step_s": 0.5, "peak_rss_mb": RSS[method][seed], "peak_cuda_mb": None}


def write_costed(root, without_cost: set[tuple[str, int]] = frozenset()):
    """The synthetic suite with cost blocks (wall time = own + shared build); the runs in
    ``without_cost`` are written as older results: no cost block, wall time as recorded."""
    root.mkdir(parents=True, exist_ok=True)
    path = write(root, SUITE, "syn.yaml")
    specs = expand(load_suite(path), path)
    for spec in specs:
        method, seed = spec.config.method.name, spec.config.seed
        cost = cost_block(method, seed)
        wall = OWN[method] + seed + cost["shared_cache_s"]
        write_run(root / "results", spec, split_metrics(method, seed), wall_time_s=wall, cost=None if (method, seed) in without_cost else cost)
    return path, specs


def test_a_shared_cache_build_is_kept_out_of_per_run_time_and_shown_once(tmp_path):
    path, specs = write_costed(tmp_path)
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    out = tmp_path / "reports" / "syn"
    table = pd.read_csv(out / "table_wall_time.csv").set_index("config")
    assert list(table.index) == ["SFT", "GRPO-RM"] and list(table["runs"]) == [3, 3] and list(table["runs_with_cost"]) == [3, 3]
    # SFT's mean would be (110 + 31 + 32) / 3 = 57.7 s with the build charged to seed 0
    assert table.loc["SFT", "mean_s"] == pytest.approx(31.0) and table.loc["GRPO-RM", "mean_s"] == pytest.approx(33.0)
    assert table.loc["SFT", "total_s"] == pytest.approx(93.0) and table.loc["SFT", "shared_cache_s"] == pytest.approx(CACHE_S)
    assert table.loc["SFT", "train_s"] == pytest.approx(26.0) and table.loc["GRPO-RM", "eval_s"] == pytest.approx(3.0)
    assert table.loc["SFT", "step_median_s"] == pytest.approx(0.012) and table.loc["GRPO-RM", "step_median_s"] == pytest.approx(0.025)
    assert table.loc["SFT", "peak_memory_mb"] == 700.0 and table.loc["GRPO-RM", "peak_memory_mb"] == 900.0
    assert set(table["peak_memory_kind"]) == {"RSS"}
    md = report.markdown
    assert "### Cost per method config" in md
    assert "| SFT | 3 | 31.0 s | 93.0 s | 26.0 s | 3.0 s | 12 ms | 700 MB RSS |" in md
    assert "| GRPO-RM | 3 | 33.0 s | 99.0 s | 28.0 s | 3.0 s | 25 ms | 900 MB RSS |" in md
    assert "building the frozen-prefix token cache, 80.0 s in all, paid by SFT seed 0 (80.0 s); the other runs reused it." in md
    # the long table carries the cost as run-level columns, the same on every row of a run
    long = pd.read_csv(out / "results_long.csv")
    paid = long[(long["method"] == "sft") & (long["seed"] == 0)]
    assert set(paid["shared_cache_s"]) == {CACHE_S} and set(paid["step_median_s"]) == {0.010} and set(paid["peak_rss_mb"]) == {500.0}
    assert long["peak_cuda_mb"].isna().all()


def test_results_without_a_cost_block_keep_the_wall_time_columns(tmp_path):
    path, specs = write_costed(tmp_path, without_cost={("grpo_rm", 0), ("grpo_rm", 1), ("grpo_rm", 2), ("sft", 2)})
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    table = pd.read_csv(tmp_path / "reports" / "syn" / "table_wall_time.csv").set_index("config")
    assert table.loc["GRPO-RM", "runs_with_cost"] == 0 and table.loc["GRPO-RM", "mean_s"] == pytest.approx(33.0)
    assert table.loc["SFT", "runs_with_cost"] == 2 and table.loc["SFT", "mean_s"] == pytest.approx(31.0)  # 30, 31, and 32 as recorded
    assert "| GRPO-RM | 3 | 33.0 s | 99.0 s | — | — | — | — |" in report.markdown
    assert "4 runs predate cost records" in report.markdown


def test_when_every_run_built_its_own_cache_the_caption_says_it_is_a_per_run_cost(tmp_path):
    write_costed(tmp_path)
    path = tmp_path / "syn.yaml"
    final = finals(long_table(expand(load_suite(path), path), tmp_path / "results"))
    final = final.assign(shared_cache_s=10.0)  # separate processes (local or Slurm executor): no run reuses another's cache
    sentence = shared_cost_sentence(final)
    assert "60.0 s in all, paid by 6 of 6 runs" in sentence and "per-run cost of 10.0 s on average" in sentence
    assert cost_table(final).frame["mean_s"].iloc[1] == pytest.approx(23.0)  # GRPO-RM's own time (32, 33, 34 s recorded) still leaves it out
