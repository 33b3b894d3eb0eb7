"""What ``bench status`` (and the local executor's live view) shows: one row per run, read from
the result store (``bench status`` joins the scheduler's states by job id); counts per state; a compact table.

Rows are plain dicts so that ``bench status --json`` prints exactly what the table shows.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from bench.dataid import STALE, record_state
from bench.progress import CACHING_TOKENS, PREPARING_DATA
from bench.store import RunDir

if TYPE_CHECKING:
    from bench.suite import RunSpec

FAILED_STATES = ("failed", "corrupt")
SETUP_PHASES = {"prepare": PREPARING_DATA, "cache": CACHING_TOKENS}  # status.json's phase before training → what status shows
STATE_ORDER = ("done", "running", "interrupted", "pending", STALE, "failed", "corrupt")


def stage_label(spec: "RunSpec") -> str:
    """'tune lr=0.0001' for a tuning run, 'final' otherwise."""
    if spec.stage != "tune":
        return spec.stage
    values = json.loads(spec.record).get("tuned_values", {})
    return "tune " + " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items())


def progress_text(status: dict[str, Any], logged_steps: int, state: str) -> str:
    """'train 40/90', 'eval 3/16', 'preparing data', 'caching frozen-prefix tokens' or '' (done, or
    not started)."""
    if state == "done":
        return ""
    if state == "running" and status.get("phase") in SETUP_PHASES:
        return SETUP_PHASES[status["phase"]]
    if status.get("phase") == "evaluate" and status.get("evaluations"):
        return f"eval {status.get('evaluated', 0)}/{status['evaluations']}"
    if status.get("total_steps"):
        return f"train {logged_steps}/{status['total_steps']}"
    return ""


def run_rows(specs: list["RunSpec"], results_root: Path) -> list[dict[str, Any]]:
    """One dict per run: identity, state, progress, attempts, scheduler job, error; the scheduler's
    state of that job is left empty for the caller that asks the scheduler (`bench status`)."""
    rows = []
    for spec in specs:
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        state, data, record = record_state(run_dir, spec.config)  # each file read once; done runs: their data checked too
        status, problem = record.status, record.problem
        job = str(status.get("executor_job_id") or "")
        if problem:
            error = f"{problem.path.name}: {problem.reason}"
        elif state == STALE and data is not None:
            error = data.reason
        else:
            error = (status.get("error") or "") if state != "done" else ""
        rows.append({
            "run": spec.run_id, "stage": stage_label(spec), "method": spec.config.method.name, "seed": spec.config.seed,
            "dataset": spec.config.data.name, "profile": spec.profile, "state": state,
            "progress": progress_text(status, run_dir.metrics_line_count() if state != "done" else 0, state),
            "attempts": int(status.get("attempts", 0)), "job": job, "scheduler": "",
            "error": error, "data": data.reason if data is not None and data.state == "unchecked" else "",
        })
    return rows


def state_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(row["state"] for row in rows)
    return {state: counts[state] for state in (*STATE_ORDER, *sorted(set(counts) - set(STATE_ORDER))) if counts[state]}


def summary_line(rows: list[dict[str, Any]]) -> str:
    """'6 runs: 4 done, 1 running, 1 failed'."""
    counts = state_counts(rows)
    return f"{len(rows)} runs: " + (", ".join(f"{n} {state}" for state, n in counts.items()) or "none")


RICH_ROWS = 500  # above this many runs the table is plain aligned text: rich measures every cell (seconds at thousands)


def shown_columns(rows: list[dict[str, Any]], wide: bool = False) -> list[str]:
    """The compact view's columns: those that say something for these runs only (no scheduler
    columns without a scheduler, no profile column for a one-profile suite, ...); ``wide``: all."""
    columns = ["run", "stage", "method", "seed", "dataset", "profile", "state", "progress", "attempts", "job", "scheduler", "error", "data"]
    if not wide:
        always = {"run", "method", "seed", "state"}
        informative = {
            "stage": any(r["stage"] != "final" for r in rows),
            "dataset": len({r["dataset"] for r in rows}) > 1,
            "profile": len({r["profile"] for r in rows}) > 1,
            "progress": any(r["progress"] for r in rows),
            "attempts": any(r["attempts"] > 1 for r in rows),
            "job": any(r["scheduler"] for r in rows),  # a scheduler knows the job: its id is what scancel and logs need
            "scheduler": any(r["scheduler"] for r in rows),
            "error": any(r["error"] for r in rows),
            "data": any(r["data"] for r in rows),  # 'data could not be checked (…)': a done run unverified here
        }
        columns = [c for c in columns if c in always or informative.get(c)]
    return columns


def _cell(row: dict[str, Any], column: str) -> str:
    return str(row[column])[:80] if column in ("error", "data") else str(row[column])


def status_text(rows: list[dict[str, Any]], wide: bool = False) -> str:
    """:func:`status_table`'s rows as plain aligned text, for suites of thousands of runs."""
    columns = shown_columns(rows, wide)
    cells = [[_cell(row, c).replace("\n", " ") for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    line = lambda texts: "  ".join(t.ljust(w) for t, w in zip(texts, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def status_renderable(rows: list[dict[str, Any]], wide: bool = False) -> Table | Text:
    """:func:`status_table` as something rich can refresh in place (the local executor's live
    view): plain text is shown as it is, never read as markup."""
    table = status_table(rows, wide)
    return Text(table, no_wrap=True, overflow="crop") if isinstance(table, str) else table


def status_table(rows: list[dict[str, Any]], wide: bool = False) -> Table | str:
    """The compact view (:func:`shown_columns`) as a rich table; above :data:`RICH_ROWS` runs as
    plain aligned text (:func:`status_text`), the same columns and cells."""
    if len(rows) > RICH_ROWS:
        return status_text(rows, wide)
    columns = shown_columns(rows, wide)
    table = Table(*columns)
    table.columns[columns.index("state")].no_wrap = True  # 'interrupted' in full
    for row in rows:
        table.add_row(*(_cell(row, c) for c in columns))
    return table
