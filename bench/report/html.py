"""The single-file HTML report: tables, embedded figures and CSVs, the suite and environment.

Everything is inlined (figures and CSVs as data: URIs, CSS in the page), so the file opens in a
browser with no server and can be mailed or archived alone. Table cells are rendered from the
same :class:`~bench.report.tables.Table` objects as the CSV/Markdown/LaTeX files.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from bench.provenance import git_state, host, versions
from bench.report.expected import actual_text
from bench.report.tables import Table, TextTable, header, row_cells

ENV_COLUMNS = {"git_commit": "grpo-rm-bench commit", "git_dirty": "uncommitted changes", "torch": "torch", "timm": "timm",
               "host": "hosts", "device": "devices", "backbone": "backbones", "init": "backbone weights"}


LEAD_FIGURES = ("forest",)  # right under the verdict boxes, before any table: the answer, drawn (one per compared pair)


def _lead(key: str) -> bool:
    """A lead figure: 'forest', or a pair's own 'forest_<pair key>'."""
    return any(key == k or key.startswith(f"{k}_") for k in LEAD_FIGURES)


def data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


EMBED_LIMIT = 5 * 2**20  # larger files are linked beside the page instead of embedded


def _download(path: Path) -> dict[str, str]:
    if path.stat().st_size > EMBED_LIMIT:
        return {"name": f"{path.name} (beside this page)", "href": path.name}
    mime = "text/csv" if path.suffix == ".csv" else "text/plain" if path.suffix in (".md", ".tex") else "application/octet-stream"
    return {"name": path.name, "href": data_uri(path, mime)}


def table_context(table: Table | TextTable, files: list[Path]) -> dict[str, Any]:
    rows, previous = [], None
    for labels, values, bold in row_cells(table):
        rows.append({"labels": labels, "sep": previous is not None and labels[0] != previous,
                     "cells": [{"text": v, "best": i in bold} for i, v in enumerate(values)]})
        previous = labels[0]
    return {"key": table.key, "title": table.title, "caption": table.caption, "header": header(table), "rows": rows,
            "downloads": [_download(p) for p in files]}


def expected_context(comparison: pd.DataFrame, caption: str) -> dict[str, Any] | None:
    if comparison.empty:
        return None
    rows = []
    for r in comparison.itertuples():
        actual = actual_text(r)
        texts = [r.expectation, r.dataset, f"{r.expected:+.2f} ± {r.tolerance:.2f}", actual, r.verdict, r.source]
        rows.append({"cells": [{"text": t, "cls": r.verdict if i == 4 else ""} for i, t in enumerate(texts)]})
    return {"header": ["claim", "dataset", "expected (± tolerance)", "actual [95% CI]", "verdict", "source"], "rows": rows, "caption": caption}


def environment(long: pd.DataFrame) -> dict[str, Any]:
    runs = []
    for col, name in ENV_COLUMNS.items():
        if col in long and not long.empty:
            values = sorted({str(v) for v in long[col].dropna().unique()})
            runs.append((name, ", ".join(values) or "—"))
    state = git_state()
    report = [("generated (UTC)", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")), ("host", host()),
              ("grpo-rm-bench commit", f"{state['commit']}{' (dirty)' if state['dirty'] else ''}")]
    report += [(k, v) for k, v in versions().items()]
    return {"runs": runs, "report": report, "generated_utc": report[0][1], "generator_version": versions()["grpo-rm-bench"],
            "generator_commit": str(state["commit"])[:12]}


def render(
    *, title: str, description: str, tables: list[tuple[Table, list[Path]]], expected: dict[str, Any] | None,
    figures: list[tuple[str, str, Path]], skipped_figures: list[str], states: pd.DataFrame, suite_files: list[tuple[str, str]],
    variants: dict[str, dict[str, Any]], long: pd.DataFrame, downloads: list[Path], tuning: str = "", variants_intro: str = "",
    verdicts: list[dict[str, Any]] | None = None, samples: dict[str, Any] | None = None,
) -> str:
    """The report page: the verdict boxes, the forest plots, then the tables (long notes folded away
    in <details>), the other figures, suite and environment. ``figures``: (key, caption, png path); ``tuning``: how the compared configs
    were selected (empty when nothing was tuned); ``verdicts``: the boxes at the top, one per compared pair with a
    comparison (:func:`bench.report.verdict.verdict_context`); ``samples``:
    `bench samples`' files in the report folder (:func:`bench.report.samples.report_context`), None when absent."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("bench.report", ""), autoescape=True, undefined=jinja2.StrictUndefined)
    not_done = states[states["state"] != "done"].to_dict("records")
    return env.get_template("report.html.j2").render(
        title=title, description=description, random_init=bool(long["random_init"].astype(bool).any()) if not long.empty else False,
        counts={"done": int((states["state"] == "done").sum()), "total": len(states)}, not_done=not_done, expected=expected,
        tables=[table_context(t, files) for t, files in tables], downloads=[_download(p) for p in downloads],
        figures=[{"key": k, "caption": c, "src": data_uri(p, "image/png")} for k, c, p in figures if not _lead(k)],
        lead_figures=[{"key": k, "caption": c, "src": data_uri(p, "image/png")} for k, c, p in figures if _lead(k)], skipped_figures=skipped_figures,
        suite_files=suite_files, variants=variants, variants_intro=variants_intro, tuning=tuning, env=environment(long), verdicts=verdicts or [],
        samples=None if samples is None else {**samples, "csv": _download(samples["csv"]),
                                              "sheet": data_uri(samples["sheet"], "image/png") if samples["sheet"] else None},
    )
