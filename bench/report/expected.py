"""Expected vs actual: a suite's stated figures (e.g. the paper's claims) against its results.

An expectation is judged on the per-seed values of the long table: for a delta, the paired
difference method − baseline per seed (over the suite's datasets first when ``across: mean``),
then the mean and 95% CI over seeds. 'within' means |actual − expected| ≤ tolerance.
"""

from __future__ import annotations

import pandas as pd

from bench.report.aggregate import t_interval
from bench.report.tables import METRIC_NAMES, MODEL_KEYS, method_name, model_labels
from bench.suite import Expectation

COLUMNS = ["expectation", "dataset", "metric", "expected", "tolerance", "actual", "ci_low", "ci_high", "n", "verdict", "source"]
CAPTION = ("Actual: mean over seeds in percent (points for a Δ, paired per seed) with its 95% t-interval; "
           "'within' when |actual − expected| ≤ tolerance, 'missing' when no finished run provides it.")


def _label(e: Expectation) -> str:
    split = {"ood_avg": "OOD avg"}.get(e.split, e.split)
    what = f"{split}, {METRIC_NAMES.get(e.metric, e.metric)}"
    if e.quantity == "delta":
        return f"Δ {method_name(e.method)} − {method_name(e.baseline)}, {what}"
    return f"{method_name(e.method)}, {what}"


def per_seed(e: Expectation, long: pd.DataFrame) -> pd.DataFrame:
    """(dataset label, seed, value in percent) the expectation is judged on. A dataset run in
    several models (backbones, inits, config variants) gets one label per model, the same row
    label as in the tables, '(random init)' included."""
    rows = long[(long["split"] == e.split) & (long["metric"] == e.metric)]
    if e.dataset is not None:
        rows = rows[rows["dataset"] == e.dataset]
    keys = [*MODEL_KEYS, "seed"]
    treated = rows[rows["method"] == e.method].set_index(keys)["value"]
    if e.quantity == "delta":
        treated = (treated - rows[rows["method"] == e.baseline].set_index(keys)["value"]).dropna()
    values = (100 * treated).rename("value").reset_index()
    random_init = bool(values["random_init"].astype(bool).any())
    values["dataset"] = model_labels(values) if not values.empty else values["dataset"]  # the tables' row labels
    if e.across == "mean" and not values.empty:
        # a seed counts only when every model has it, so each seed's mean covers the same models
        n = values["dataset"].nunique()
        full = values.groupby("seed")["dataset"].transform("nunique") == n
        label = f"mean of {n} datasets" + (" (random init)" if random_init else "")
        values = values[full].groupby("seed", as_index=False)["value"].mean().assign(dataset=label)
    return values[["dataset", "seed", "value"]]


def compare(expected: list[Expectation], long: pd.DataFrame) -> pd.DataFrame:
    """One row per (expectation, dataset) with expected, actual, CI, n and verdict."""
    rows = []
    for e in expected:
        values = per_seed(e, long) if not long.empty else pd.DataFrame(columns=["dataset", "seed", "value"])
        datasets = list(dict.fromkeys(values["dataset"])) or [e.dataset or ("all datasets" if e.across == "mean" else "—")]
        for dataset in datasets:
            x = values.loc[values["dataset"] == dataset, "value"]
            n = len(x)
            actual = float(x.mean()) if n else float("nan")
            low, high = t_interval(x)
            verdict = "missing" if not n else ("within" if abs(actual - e.value) <= e.tolerance else "outside")
            rows.append({"expectation": _label(e), "dataset": dataset, "metric": e.metric, "expected": e.value, "tolerance": e.tolerance,
                         "actual": actual, "ci_low": low, "ci_high": high, "n": n, "verdict": verdict, "source": e.source})
    return pd.DataFrame(rows, columns=COLUMNS)


def actual_text(r) -> str:
    """'+2.00 [+0.51, +3.49] (n=3)'; '—' when no run provides it."""
    if r.n == 0:
        return "—"
    ci = "" if pd.isna(r.ci_low) else f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
    return f"{r.actual:+.2f}{ci} (n={r.n})".replace("-", "−")


def expected_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    lines = ["## Expected vs actual", "", CAPTION, "",
             "| claim | dataset | expected (± tolerance) | actual [95% CI] | verdict | source |", "|---|---|---:|---:|---|---|"]
    for r in table.itertuples():
        actual = actual_text(r)
        verdict = "missing" if r.verdict == "missing" else f"**{r.verdict}** tolerance"
        lines.append(f"| {r.expectation} | {r.dataset} | {r.expected:+.2f} ± {r.tolerance:.2f} | {actual} | {verdict} | {r.source} |")
    return "\n".join(lines) + "\n"


def expected_latex(table: pd.DataFrame, label: str) -> str:
    from bench.report.tables import latex_escape

    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{Expected vs actual. {latex_escape(CAPTION)}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{llrrl}", r"\toprule", r"claim & dataset & expected & actual & verdict \\", r"\midrule"]
    for r in table.itertuples():
        actual = actual_text(r)
        lines.append(" & ".join(latex_escape(x) for x in (r.expectation, str(r.dataset), f"{r.expected:+.2f} ± {r.tolerance:.2f}", actual, r.verdict)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
