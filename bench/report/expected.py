"""Expected vs actual: a suite's stated figures (e.g. the paper's claims) against its results."""

from __future__ import annotations

import pandas as pd

from bench.report.tables import METHOD_NAMES
from bench.suite import Expectation


def _label(e: Expectation) -> str:
    split = "OOD avg" if e.split == "ood_avg" else e.split
    if e.quantity == "delta":
        return f"Δ {METHOD_NAMES.get(e.method, e.method)} − {METHOD_NAMES.get(e.baseline, e.baseline)}, {split}"
    return f"{METHOD_NAMES.get(e.method, e.method)}, {split}"


def compare(expected: list[Expectation], summary: pd.DataFrame, delta: pd.DataFrame) -> pd.DataFrame:
    """One row per (expectation, dataset): expected, actual (percent), n and verdict."""
    rows = []
    for e in expected:
        if e.quantity == "delta":
            # paired_delta is treatment − control for the suite's (method, baseline) pair
            found = delta[delta["split"] == e.split]
        else:
            found = summary[(summary["split"] == e.split) & (summary["method"] == e.method)]
        if e.dataset is not None:
            found = found[found["dataset"] == e.dataset]
        datasets = list(dict.fromkeys(found["dataset"])) or [e.dataset or "—"]
        for dataset in datasets:
            match = found[found["dataset"] == dataset]
            actual = float(100 * match["mean"].iloc[0]) if len(match) else float("nan")
            n = int(match["n"].iloc[0]) if len(match) else 0
            verdict = "missing" if not n else ("within" if abs(actual - e.value) <= e.tolerance else "outside")
            rows.append({
                "expectation": _label(e), "dataset": dataset, "expected": e.value, "tolerance": e.tolerance,
                "actual": actual, "n": n, "verdict": verdict, "source": e.source,
            })
    return pd.DataFrame(rows, columns=["expectation", "dataset", "expected", "tolerance", "actual", "n", "verdict", "source"])


def expected_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    lines = ["## Expected vs actual", "", "| expectation | dataset | expected | actual | verdict | source |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        actual = "—" if r.n == 0 else f"{r.actual:+.2f} (n={r.n})"
        lines.append(f"| {r.expectation} | {r.dataset} | {r.expected:+.2f} ± {r.tolerance:.2f} | {actual} | {r.verdict} tolerance | {r.source} |".replace("missing tolerance", "missing"))
    return "\n".join(lines) + "\n"
