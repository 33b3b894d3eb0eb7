"""What each method config costs to run, with one-off shared costs kept apart.

The paper compares no compute cost; a method that gains a point at twice the cost is a different
finding from one that gains it for free. The cost table (:func:`cost_table`, written as table
``wall_time``) gives per method config the runs, the mean wall time per run *without* shared cache
builds, the mean training and evaluation time, the median time per optimiser step and the peak
memory, from each run's result.json ``cost`` block (:func:`bench.job.run_cost`).

Why shared costs are apart: runs in one process share the frozen-prefix token cache
(:mod:`bench.features`), and the first run of a backbone pays for building it — in a review of the
demo 87.6 s, charged to SFT's first run, so that SFT's mean wall time read 50.4 s against
GRPO-RM's 32.1 s. The caption names that one-off cost and the runs that paid it instead.

Results written before the cost block existed keep the old columns (runs, mean wall time, total,
with their wall time as recorded: a cache build may be inside it) and show '—' for the rest.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from bench.report.aggregate import finals
from bench.report.pairs import Pair
from bench.report.tables import TextTable, method_name, method_order
from bench.report.verdict import config_labels, duration_text

COST_FRAME_COLUMNS = ["method", "config", "runs", "runs_with_cost", "mean_s", "total_s", "train_s", "eval_s", "step_median_s",
                      "peak_memory_mb", "peak_memory_kind", "shared_cache_s"]
PAYERS_NAMED = 4  # more runs than this paid for shared caches: the caption counts them instead of naming each


def step_text(seconds: float) -> str:
    """A step time, readable at any scale: '12.3 ms', '1.4 s'."""
    if pd.isna(seconds):
        return "—"
    return f"{1000 * seconds:.3g} ms" if seconds < 1 else duration_text(seconds)


def memory_text(mb: float, kind: str) -> str:
    """'812 MB RSS' or '9,310 MB GPU': which memory it is travels with the number, since CPU runs
    report the process's resident set and GPU runs the tensors' allocation."""
    return "—" if pd.isna(mb) else f"{mb:,.0f} MB {kind}"


def _runs(final: pd.DataFrame) -> pd.DataFrame:
    """One row per finished final run with its config label, own time (wall time less the shared
    cache builds it paid; the recorded wall time where no cost block says) and whether it has a
    cost block."""
    long = finals(final)
    runs = long.drop_duplicates("run_id")
    runs = runs[runs["wall_time_s"].notna()]
    if runs.empty:
        return runs
    labels = config_labels(long)
    has_cost = runs["train_s"].notna()
    return runs.assign(config=[labels.get((m, v), method_name(m)) for m, v in zip(runs["method"], runs["variant"])], has_cost=has_cost,
                       own_s=runs["wall_time_s"] - runs["shared_cache_s"].where(has_cost, 0.0).fillna(0.0))


def cost_frame(final: pd.DataFrame, pairs: Sequence[Pair] = ()) -> pd.DataFrame:
    """Per method config (in method order): runs, runs with a cost block, mean and total own wall
    time per run, mean training and evaluation time, the median over runs of each run's median
    step time, the peak memory over runs (GPU where any run used CUDA, else RSS) and the shared
    cache builds its runs paid (kept out of every other column). Columns: COST_FRAME_COLUMNS."""
    runs = _runs(final)
    if runs.empty:
        return pd.DataFrame(columns=COST_FRAME_COLUMNS)
    rows = []
    for (method, config), part in runs.groupby(["method", "config"], sort=False):
        gpu = part["peak_cuda_mb"].notna().any()
        peak = part["peak_cuda_mb" if gpu else "peak_rss_mb"].max()
        rows.append({"method": method, "config": config, "runs": len(part), "runs_with_cost": int(part["has_cost"].sum()),
                     "mean_s": part["own_s"].mean(), "total_s": part["own_s"].sum(), "train_s": part["train_s"].mean(),
                     "eval_s": part["eval_s"].mean(), "step_median_s": part["step_median_s"].median(), "peak_memory_mb": peak,
                     "peak_memory_kind": ("GPU" if gpu else "RSS") if pd.notna(peak) else "", "shared_cache_s": part["shared_cache_s"].sum(min_count=1)})
    out = pd.DataFrame(rows, columns=COST_FRAME_COLUMNS)
    order = method_order(out["method"], pairs)
    return out.assign(_m=out["method"].map(order.index)).sort_values(["_m", "config"], kind="stable").drop(columns="_m").reset_index(drop=True)


def _run_name(run: pd.Series, several_datasets: bool) -> str:
    return f"{run['config']} seed {run['seed']}" + (f" ({run['dataset']})" if several_datasets else "")


def shared_cost_sentence(final: pd.DataFrame) -> str:
    """The one-off shared costs as a sentence: the total cache build time and which runs paid it.
    Where every timed run built its own (runs in separate processes: the local or Slurm executor),
    the build is no one-off and the sentence says so, with its mean per run."""
    runs = _runs(final)
    timed = runs[runs["has_cost"]] if not runs.empty else runs
    if timed.empty:
        return ""
    payers = timed[timed["shared_cache_s"] > 0]
    if payers.empty:
        return "No run built a shared cache (frozen-prefix tokens off, or built by runs not in this table)."
    total = float(payers["shared_cache_s"].sum())
    several = runs["dataset"].nunique() > 1
    text = f"One-off shared cost, in no column above: building the frozen-prefix token cache, {duration_text(total)} in all, paid by "
    if len(payers) <= PAYERS_NAMED:
        text += ", ".join(f"{_run_name(r, several)} ({duration_text(r['shared_cache_s'])})" for _, r in payers.iterrows())
    else:
        text += f"{len(payers)} of {len(timed)} runs"
    if len(payers) == len(timed) and len(timed) > 1:
        return text + (f"; every run built its own (runs in separate processes share no cache), so here it is a per-run cost of "
                       f"{duration_text(total / len(timed))} on average."
                       )
    return text + "; the other runs reused it."


def cost_table(final: pd.DataFrame, pairs: Sequence[Pair] = ()) -> TextTable | None:
    """The cost per method config as a table (key ``wall_time``; methods in the order of the
    compared ``pairs``), None without finished runs."""
    frame = cost_frame(final, pairs)
    if frame.empty:
        return None
    rows = [([r.config], [str(int(r.runs)), duration_text(r.mean_s), duration_text(r.total_s), duration_text(r.train_s), duration_text(r.eval_s),
                          step_text(r.step_median_s), memory_text(r.peak_memory_mb, r.peak_memory_kind)])
            for r in frame.itertuples()]
    caption = ("Cost per method config over its finished final runs (all settings). Wall time per run and total: result.json wall_time_s "
               "less the shared cache builds the run paid; train and eval: mean time in training (steps, logs, checkpoints) and in "
               "evaluation, cache builds left out; step: median over runs of each run's median seconds per optimiser step, measured in "
               "the training loop, first step of each attempt (warm-up) left out; peak memory: the maximum over runs of the process's "
               "peak RSS (a process-wide high-water mark: with the in-process debug executor, of this run and every run before it in "
               "that process), or on GPU the peak memory allocated by tensors.")
    old = int((frame["runs"] - frame["runs_with_cost"]).sum())
    if old:
        caption += (f" {old} run{'s' if old > 1 else ''} predate{'' if old > 1 else 's'} cost records: wall time as recorded (a cache build "
                    "may be inside it), '—' for the rest.")
    shared = shared_cost_sentence(final)
    if shared:
        caption += " " + shared
    return TextTable("wall_time", "Cost per method config", caption, ["config"],
                     ["runs", "wall time / run", "total", "train / run", "eval / run", "median step", "peak memory"], rows, frame)


__all__ = ["cost_table", "cost_frame", "shared_cost_sentence", "step_text", "memory_text", "COST_FRAME_COLUMNS"]
