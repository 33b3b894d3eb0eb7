"""results_long.csv, with the lines of unchanged runs taken from the previous report's file.

Why: the long table is one row per (run, evaluation set, metric) — 60,000 rows and 35 MB at a
thousand runs — and formatting it as CSV was the largest single cost of a report after one more
run finished. A run's lines depend only on its row values, which come from its result.json
(covered by the result's digest) and its finish time, so a run with the same digest and finish
time has the same lines as before.

Safe by construction: the previous file is reused only when it is byte for byte the file the
last report wrote (SHA-256 recorded with the line index, in the user's cache) and the code that
formats it (schema, averages, pandas' version) is the same; a run is reused only where its digest,
finish time and rows per block match; everything else is formatted afresh. A file with a line
break inside a cell cannot be indexed by lines and is always written whole.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from bench.io import atomic_write_text, cache_file, code_digest, read_checked_json, write_checked_json

VERSION = 1


def _code() -> str:
    # the modules that make and type the rows (bench.summary words the smoke-test limits)
    return code_digest(Path(__file__).parent, ("schema.py", "aggregate.py", "longcsv.py", "../summary.py"), str(VERSION), pd.__version__)


def _segments(long: pd.DataFrame) -> list[tuple[Any, int, int]]:
    """(run id, first row, end row) of each stretch of consecutive rows of one run."""
    runs = long["run_id"].to_numpy(dtype=object)
    out, start = [], 0
    for i in range(1, len(runs) + 1):
        if i == len(runs) or runs[i] != runs[start]:
            out.append((runs[start], start, i))
            start = i
    return out


def write_long_csv(long: pd.DataFrame, path: Path, digests: dict[str, str | None], enabled: bool) -> None:
    """Write ``long.to_csv(index=False)`` to ``path`` (atomically), reusing the previous file's
    lines of runs whose ``digests`` (result digest) and finish time are unchanged."""
    index_path = cache_file("report-long", path) if enabled else None
    segments = _segments(long)
    finished = long["finished_utc"].to_numpy(dtype=object) if "finished_utc" in long else None
    keys = {run: f"{digests.get(run)}|{finished[start] if finished is not None else ''}" for run, start, _ in segments if digests.get(run)}
    kinds = _kinds(long, segments)
    previous = _previous(index_path, path) if index_path is not None else None
    header = ",".join(_quoted(c) for c in long.columns) + "\n"  # checked against pandas' own below
    parts: list[str] = []
    fresh: list[tuple[int, int, int]] = []  # (part index, first row, end row) to format
    seen: dict[Any, int] = {}
    for (run, start, stop), kind in zip(segments, kinds):
        k = seen[run] = seen.get(run, -1) + 1
        lines = previous.lines_of(run, keys.get(run), k, stop - start, kind) if previous is not None else None
        if lines is None:
            fresh.append((len(parts), start, stop))
            parts.append("")
        else:
            parts.append(lines)
    if len(fresh) > len(segments) // 2 or previous is None:  # mostly new: one call formats everything
        text = long.to_csv(index=False)
    else:
        for i, start, stop in fresh:
            parts[i] = long.iloc[start:stop].to_csv(index=False, header=False)
        text = header + "".join(parts)
    atomic_write_text(path, text)
    if index_path is not None:
        _save_index(index_path, text, long, segments, kinds, keys)


def _kinds(long: pd.DataFrame, segments: list[tuple[Any, int, int]]) -> list[str]:
    """What each stretch holds (derived or measured rows, from which split to which): a run's
    stretch is reused only for the same kind of rows."""
    split = long["split"].to_numpy(dtype=object)
    derived = long["derived"].to_numpy(dtype=object)
    return [f"{derived[start]}|{split[start]}|{split[stop - 1]}" for _, start, stop in segments]


def _quoted(name: str) -> str:
    return f'"{name}"' if any(c in name for c in ',"\n\r') else name


class _Previous:
    def __init__(self, lines: list[str], runs: dict[str, Any]) -> None:
        self.lines, self.runs = lines, runs

    def lines_of(self, run: Any, key: str | None, k: int, rows: int, kind: str) -> str | None:
        entry = self.runs.get(run)
        if key is None or not isinstance(entry, list) or entry[0] != key or k >= len(entry[1]):
            return None
        first, n, was = entry[1][k]
        if n != rows or was != kind or first + n > len(self.lines):
            return None
        return "".join(line + "\n" for line in self.lines[first:first + n])


def _previous(index_path: Path, path: Path) -> _Previous | None:
    """The last report's file and line index, when both are what that report wrote."""
    index = read_checked_json(index_path)
    try:
        text = path.read_text()
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("code") != _code() or index.get("sha256") != hashlib.sha256(text.encode()).hexdigest():
        return None
    if not isinstance(index.get("runs"), dict):
        return None
    return _Previous(text.split("\n"), index["runs"])


def _save_index(index_path: Path, text: str, long: pd.DataFrame, segments: list[tuple[Any, int, int]], kinds: list[str],
                keys: dict[Any, str]) -> None:
    """Where each run's lines are in ``text`` (line 0 is the header); none when a cell holds a line
    break (lines are then not rows) or the header is not ours."""
    if text.count("\n") != len(long) + 1 or not text.startswith(",".join(_quoted(c) for c in long.columns) + "\n"):
        index_path.unlink(missing_ok=True)
        return
    runs: dict[str, Any] = {}
    for (run, start, stop), kind in zip(segments, kinds):
        if run in keys:
            entry = runs.setdefault(str(run), [keys[run], []])
            entry[1].append([start + 1, stop - start, kind])
    try:
        write_checked_json(index_path, {"code": _code(), "sha256": hashlib.sha256(text.encode()).hexdigest(), "runs": runs})
    except OSError:
        pass


__all__ = ["write_long_csv"]
