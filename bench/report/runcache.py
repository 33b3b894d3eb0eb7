"""Per-run aggregates a report keeps between reports, keyed by each run's result digest.

Why: a report needs, of every finished run, a few numbers from files that are costly to read at
thousands of runs — e.g. whether each logged training statistic varies over its metrics.jsonl
(the curves figure's notes). result.json's digest covers the run's log and predictions by
SHA-256, so a run with the same digest has the same files: its aggregates can be kept. A report
after one more finished run then reads only that run's files.

Safe by construction: a re-run or changed run has another digest (no entry of it is found); a
run without a digest is never kept; the file carries a SHA-256 of its content and is written
atomically, and one that fails its check — or an entry that does not have the expected form — is
ignored and computed again from the store. ``bench report --no-cache`` computes every one afresh.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

VERSION = 1


class RunCache:
    """result digest → {aggregate name → JSON value} for one report folder."""

    def __init__(self, out: Path, enabled: bool) -> None:
        from bench.io import cache_file

        self.path = cache_file("report-runs", out) if enabled else None
        self.entries: dict[str, dict[str, Any]] = {}
        self.used: set[str] = set()
        self.dirty = False
        if self.path is None:
            return
        from bench.io import read_checked_json

        body = read_checked_json(self.path)
        if isinstance(body, dict) and body.get("version") == VERSION and isinstance(body.get("runs"), dict):
            self.entries = body["runs"]

    def get(self, digest: str | None, name: str, compute: Callable[[], Any], valid: Callable[[Any], bool]) -> Any:
        """The run's aggregate ``name``: kept (when ``valid`` says its form is right) or ``compute()``d and kept."""
        if digest is None or self.path is None:
            return compute()
        self.used.add(digest)
        entry = self.entries.get(digest)
        if isinstance(entry, dict) and name in entry and valid(entry[name]):
            return entry[name]
        value = compute()
        if not valid(value):  # what could not be computed now (a file damaged meanwhile) is never kept
            return value
        if not isinstance(entry, dict):
            entry = self.entries[digest] = {}
        entry[name] = value
        self.dirty = True
        return value

    def save(self) -> None:
        """Keep the entries of this report's runs (others belong to runs no longer in it), atomically."""
        if self.path is None or not (self.dirty or set(self.entries) - self.used):
            return
        from bench.io import write_checked_json

        body = {"version": VERSION, "runs": {k: v for k, v in self.entries.items() if k in self.used}}
        try:
            write_checked_json(self.path, body)
        except OSError:
            pass


def log_extremes(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> dict[str, list[float] | None]:
    """column → [min, max] of its logged values in one run (None: never logged a number): all the
    curves figure's notes need of a run's log — whether a quantity varies, and at which value it
    stays when it does not (bench.report.plots.curve_panels, fed two rows per run)."""
    out: dict[str, list[float] | None] = {}
    for column in columns:
        values = [float(r[column]) for r in rows if isinstance(r.get(column), (int, float)) and not isinstance(r.get(column), bool)
                  and not math.isnan(float(r[column]))]
        out[column] = [min(values), max(values)] if values else None
    return out


def valid_extremes(value: Any) -> bool:
    return isinstance(value, dict) and all(v is None or (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v))
                                           for v in value.values())


__all__ = ["RunCache", "log_extremes", "valid_extremes"]
