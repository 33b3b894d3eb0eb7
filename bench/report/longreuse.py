"""The long table's measured rows, with those of runs unchanged since the last report taken from
the results_long.parquet that report wrote.

Why: building the rows of a thousand runs (one per run × evaluation set × metric, ~50,000) as a
typed frame costs ~0.4 s, most of the remaining time of a report after one more run finished,
although every run but one has the rows it had. A run's measured rows are a function of its
result.json (covered by the result's digest) and its finish time only
(:func:`bench.report.aggregate.result_rows`), so a run with the same digest and finish time has
the same rows as before.

Safe by construction: the previous file is used only when it is byte for byte the file the last
report wrote (its SHA-256 is recorded, with each run's digest and finish time, in the user's cache)
and the code that makes and types the rows (schema, aggregate, this module, pandas' and pyarrow's
versions) is the same; a run is reused only where its digest and finish time match; any other run
is built afresh; when fewer than half the runs are reused everything is built afresh. The result
equals :func:`bench.report.aggregate.long_from` of the same runs exactly (tests/test_report_scale.py).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from bench.io import cache_dir, read_checked_json, sha256_file, write_checked_json
from bench.report.aggregate import Finished, long_from
from bench.report.schema import COLUMNS, conform

VERSION = 1


def _code() -> str:
    import pyarrow

    here = Path(__file__).parent
    h = hashlib.sha256(f"{VERSION}|{pd.__version__}|{pyarrow.__version__}".encode())
    for name in ("schema.py", "aggregate.py", "longreuse.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _index_path(parquet: Path) -> Path:
    return cache_dir("report-long-rows") / f"{hashlib.sha256(os.path.realpath(parquet).encode()).hexdigest()[:24]}.json"


def run_key(f: Finished) -> str | None:
    """What a run's measured rows depend on: its result digest and finish time (None: no digest)."""
    return f"{f.digest}|{f.finished_utc or ''}" if f.digest else None


def measured_rows(results: list[Finished], parquet: Path, enabled: bool) -> pd.DataFrame:
    """``long_from(results)``, reusing the previous report's rows of unchanged runs."""
    previous = _previous(parquet) if enabled else None
    if previous is None:
        return long_from(results)
    frame, spans, keys = previous
    keyed = [(f, run_key(f)) for f in results]
    reused = [f.result.get("run_id") in spans and k is not None and keys.get(f.result.get("run_id")) == k for f, k in keyed]
    if sum(reused) * 2 < len(results):  # mostly new: one pass builds everything
        return long_from(results)
    parts: list[pd.DataFrame] = []
    fresh: list[Finished] = []
    start = stop = None  # the current stretch of consecutive reused rows of the previous frame
    for (f, _), again in zip(keyed, reused):
        if again:
            if fresh:
                parts.append(long_from(fresh))
                fresh = []
            a, b = spans[f.result["run_id"]]
            if start is not None and a == stop:
                stop = b
                continue
            if start is not None:
                parts.append(frame.iloc[start:stop])
            start, stop = a, b
        else:
            if start is not None:
                parts.append(frame.iloc[start:stop])
                start = stop = None
            fresh.append(f)
    if start is not None:
        parts.append(frame.iloc[start:stop])
    if fresh:
        parts.append(long_from(fresh))
    parts = [p for p in parts if not p.empty] or [long_from([])]
    return conform(pd.concat(parts, ignore_index=True))


def _previous(parquet: Path) -> tuple[pd.DataFrame, dict[str, tuple[int, int]], dict[str, str]] | None:
    """(the previous report's measured rows, run id → its row span there, run id → its key), when
    the file is what that report wrote and the code is the same."""
    index = read_checked_json(_index_path(parquet))
    if not isinstance(index, dict) or index.get("code") != _code() or not isinstance(index.get("runs"), dict):
        return None
    try:
        if sha256_file(parquet) != index.get("sha256"):
            return None
        frame = pd.read_parquet(parquet)
    except (OSError, ValueError, ImportError):
        return None
    if list(frame.columns) != COLUMNS:
        return None
    frame = conform(frame)
    derived = frame["derived"].fillna(False).astype(bool).to_numpy()
    measured = int((~derived).sum())
    if derived[:measured].any():  # measured rows first, then the per-run averages: else not ours
        return None
    frame = frame.iloc[:measured]
    spans: dict[str, tuple[int, int]] = {}
    runs = frame["run_id"].tolist()
    begin = 0
    for i in range(1, len(runs) + 1):
        if i == len(runs) or runs[i] != runs[begin]:
            if runs[begin] in spans:  # a run's rows are one stretch: else not ours
                return None
            spans[str(runs[begin])] = (begin, i)
            begin = i
    keys = {str(k): str(v) for k, v in index["runs"].items()}
    return frame, spans, keys


def remember(parquet: Path, results: list[Finished], enabled: bool) -> None:
    """Record the file just written and the key of each run whose rows it holds, for the next report."""
    if not enabled:
        return
    runs: dict[str, Any] = {str(f.result.get("run_id")): k for f in results if (k := run_key(f)) is not None}
    try:
        write_checked_json(_index_path(parquet), {"code": _code(), "sha256": sha256_file(parquet), "runs": runs})
    except OSError:
        pass


__all__ = ["measured_rows", "remember", "run_key"]
