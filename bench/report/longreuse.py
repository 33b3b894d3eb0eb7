"""The long table (measured rows and per-run averages), with the rows of runs unchanged since the
last report taken from the results_long.parquet that report wrote.

Why: building the rows of a thousand runs (one per run × evaluation set × metric, ~60,000) as a
typed frame and averaging them per run costs ~0.6 s, the largest share of a report after one
more run finished, although every run but one has the rows it had. A run's rows are a function
of its result.json (covered by the result's digest) and its finish time only
(:func:`bench.report.aggregate.result_rows`; :func:`~bench.report.aggregate.with_averages`
averages within a run), so a run with the same digest and finish time has the same rows as
before.

Safe by construction: the previous file is used only when it is byte for byte the file the last
report wrote (its SHA-256 is recorded, with each run's digest and finish time, in the user's cache)
and the code that makes and types the rows (schema, aggregate, this module, pandas' and pyarrow's
versions) is the same; a run is reused only where its digest and finish time match; any other run
is built afresh; when fewer than half the runs are reused everything is built afresh. The result
equals ``with_averages(long_from(...))`` of the same runs exactly (tests/test_report_scale.py).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

from bench.io import atomic_write, cache_file, code_digest, read_checked_json, write_checked_json
from bench.report.aggregate import Finished, long_from, with_averages
from bench.report.schema import COLUMNS, conform

VERSION = 1


def _code() -> str:
    import pyarrow

    # the modules that make, average and type the rows (bench.summary words the smoke-test limits)
    return code_digest(Path(__file__).parent, ("schema.py", "aggregate.py", "longreuse.py", "../summary.py"), str(VERSION),
                       pd.__version__, pyarrow.__version__)


def parquet_bytes(long: pd.DataFrame) -> bytes:
    """results_long.parquet's bytes. Text columns are stored as Arrow ``string`` (what pandas
    wrote for them before they were Arrow-backed in memory; ``large_string`` otherwise), so the
    file is the one earlier versions wrote for the same table."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(long, preserve_index=False)
    fields = [pa.field(f.name, pa.string(), f.nullable, f.metadata) if pa.types.is_large_string(f.type) else f for f in schema]
    return long.to_parquet(None, index=False, schema=pa.schema(fields, metadata=schema.metadata))


def _index_path(parquet: Path) -> Path:
    return cache_file("report-long-rows", parquet)


def run_key(f: Finished) -> str | None:
    """What a run's measured rows depend on: its result digest and finish time (None: no digest)."""
    return f"{f.digest}|{f.finished_utc or ''}" if f.digest else None


BLOCKS = 4  # the long table's blocks, in order: measured rows, <set>/mean, ood_avg, transfer_avg/<probe> (with_averages)


def _blocks(frame: pd.DataFrame) -> np.ndarray:
    """Each row's block (0 to 3, :data:`BLOCKS`): measured, or the per-run average it is."""
    derived = frame["derived"].fillna(False).astype(bool).to_numpy()
    split = frame["split"].fillna("").astype(str)
    out = np.zeros(len(frame), dtype=np.int64)
    out[derived & split.str.endswith("/mean").to_numpy()] = 1
    out[derived & (split == "ood_avg").to_numpy()] = 2
    out[derived & split.str.startswith("transfer_avg/").to_numpy()] = 3
    return out


def _spans(frame: pd.DataFrame) -> dict[tuple[int, str], tuple[int, int]] | None:
    """(block, run id) → its rows' span in ``frame``; None when a run's rows of a block are not one
    stretch or the blocks are out of order (not a frame :func:`long_with_averages` made)."""
    blocks = _blocks(frame)
    if len(blocks) and (np.diff(blocks) < 0).any():
        return None
    runs = frame["run_id"].tolist()
    spans: dict[tuple[int, str], tuple[int, int]] = {}
    begin = 0
    for i in range(1, len(runs) + 1):
        if i == len(runs) or runs[i] != runs[begin] or blocks[i] != blocks[begin]:
            key = (int(blocks[begin]), str(runs[begin]))
            if key in spans:
                return None
            spans[key] = (begin, i)
            begin = i
    return spans


def long_with_averages(results: list[Finished], parquet: Path, enabled: bool) -> pd.DataFrame:
    """``with_averages(long_from(results))``, reusing the previous report's rows (measured and
    averaged) of the runs whose digest and finish time are unchanged; a run's averages are its
    own (with_averages groups by run), so they are as reusable as its measured rows."""
    previous = _previous(parquet) if enabled else None
    if previous is None:
        return with_averages(long_from(results))
    frame, spans, keys = previous
    ids = [str(f.result.get("run_id")) for f in results]
    reused = [(0, r) in spans and (k := run_key(f)) is not None and keys.get(r) == k for f, r in zip(results, ids)]
    if sum(reused) * 2 < len(results):  # mostly new: one pass builds everything
        return with_averages(long_from(results))
    fresh_runs = [f for f, again in zip(results, reused) if not again]
    fresh = with_averages(long_from(fresh_runs)) if fresh_runs else None
    fresh_spans = _spans(fresh) if fresh is not None else {}
    if fresh_spans is None:
        return with_averages(long_from(results))
    pieces: list[tuple[pd.DataFrame, int, int]] = []  # (frame, start, stop), consecutive stretches merged
    for block in range(BLOCKS):
        for run, again in zip(ids, reused):
            source, found = (frame, spans.get((block, run))) if again else (fresh, fresh_spans.get((block, run)))
            if found is None:
                continue
            if pieces and pieces[-1][0] is source and pieces[-1][2] == found[0]:
                pieces[-1] = (source, pieces[-1][1], found[1])
            else:
                pieces.append((source, *found))
    parts = [f.iloc[a:b] for f, a, b in pieces] or [with_averages(long_from([]))]
    return conform(pd.concat(parts, ignore_index=True))


def _previous(parquet: Path) -> tuple[pd.DataFrame, dict[tuple[int, str], tuple[int, int]], dict[str, str]] | None:
    """(the previous report's long table, (block, run id) → its rows' span there, run id → its
    key), when the file is what that report wrote and the code is the same."""
    index = read_checked_json(_index_path(parquet))
    if not isinstance(index, dict) or index.get("code") != _code() or not isinstance(index.get("runs"), dict):
        return None
    try:
        data = Path(parquet).read_bytes()  # read once: the bytes hashed are the bytes parsed
        if hashlib.sha256(data).hexdigest() != index.get("sha256"):
            return None
        frame = pd.read_parquet(io.BytesIO(data))
    except (OSError, ValueError, ImportError):
        return None
    if list(frame.columns) != COLUMNS:
        return None
    frame = conform(frame)
    spans = _spans(frame)
    if spans is None:
        return None
    keys = {str(k): str(v) for k, v in index["runs"].items()}
    return frame, spans, keys


def write(parquet: Path, long: pd.DataFrame, results: list[Finished], enabled: bool) -> None:
    """Write results_long.parquet atomically and record, for the next report, the SHA-256 of the
    very bytes written (never the file as found later: another report may have replaced it) with
    the key of each run whose rows it holds."""
    data = parquet_bytes(long)
    atomic_write(parquet, lambda tmp: tmp.write_bytes(data))
    if not enabled:
        return
    runs = {str(f.result.get("run_id")): k for f in results if (k := run_key(f)) is not None}
    try:
        write_checked_json(_index_path(parquet), {"code": _code(), "sha256": hashlib.sha256(data).hexdigest(), "runs": runs})
    except OSError:
        pass


__all__ = ["long_with_averages", "write", "parquet_bytes", "run_key"]
