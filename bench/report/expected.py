"""Expected vs actual: a suite's stated figures (e.g. the paper's claims) against its results.

An expectation is judged on the per-seed values of the long table (final runs only): for a delta,
the paired difference method − baseline per seed between runs of one setting (same pair key;
every config variant of the method gets its own row), over the suite's datasets first when
``across: mean``; then the mean and 95% CI over seeds.

The verdict compares the CI [lo, hi] with the claim band [expected − tolerance, expected +
tolerance]; the point estimate alone never decides. In this order:

- ``missing``: no finished run provides the quantity.
- ``inconclusive``: no interval — one seed, or a zero-width CI (every seed gave the same value,
  so the interval measures nothing).
- ``contradicted``: the CI lies entirely outside the band (no overlap), however wide it is.
- ``reproduced``: the CI lies entirely inside the band.
- ``inconclusive``: the CI overlaps the band but is wider than it, so no result of this
  precision could be inside: more seeds are needed.
- ``consistent``: the CI overlaps the band, is not inside it and is no wider than it.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.report.aggregate import GROUP_COLUMNS, finals, t_interval, variant_descriptions, zero_width
from bench.report.tables import METRIC_NAMES, arm_text, method_name, method_order, model_labels
from bench.suite import Expectation

COLUMNS = ["expectation", "dataset", "metric", "expected", "tolerance", "actual", "ci_low", "ci_high", "n", "verdict", "source"]
VERDICTS = ("reproduced", "consistent", "inconclusive", "contradicted", "missing")
CAPTION = ("Actual: mean over seeds in percent (points for a Δ, paired per seed) with its 95% t-interval [lo, hi], judged "
           "against the band expected ± tolerance: reproduced = the CI lies inside the band; contradicted = the CI lies "
           "entirely outside it; consistent = the CI overlaps the band, is not inside it and is no wider than it; "
           "inconclusive = one seed, a zero-width CI, or a CI that overlaps the band but is wider than it; missing = no "
           "finished run provides it. The point estimate alone never decides.")


def verdict(n: int, low: float, high: float, expected: float, tolerance: float) -> str:
    """The verdict on one claim from the CI [low, high] of ``n`` seeds (see the module docstring)."""
    if n == 0:
        return "missing"
    if n < 2 or not (math.isfinite(low) and math.isfinite(high)) or zero_width(low, high):
        return "inconclusive"
    band_low, band_high = expected - tolerance, expected + tolerance
    if high < band_low or low > band_high:
        return "contradicted"
    if band_low <= low and high <= band_high:
        return "reproduced"
    if high - low > band_high - band_low:
        return "inconclusive"
    return "consistent"


def _label(e: Expectation) -> str:
    split = {"ood_avg": "OOD avg"}.get(e.split, e.split)
    what = f"{split}, {METRIC_NAMES.get(e.metric, e.metric)}"
    if e.quantity == "delta":
        return f"Δ {method_name(e.method)} − {method_name(e.baseline)}, {what}"
    return f"{method_name(e.method)}, {what}"


def per_seed(e: Expectation, long: pd.DataFrame) -> pd.DataFrame:
    """(dataset label, seed, value in percent) the expectation is judged on. A dataset run in
    several settings (backbones, inits, config variants) or method configs gets one label per
    comparison, the same row label as in the tables, '(random init)' included."""
    long = finals(long)
    rows = long[(long["split"] == e.split) & (long["metric"] == e.metric)]
    if e.dataset is not None:
        rows = rows[rows["dataset"] == e.dataset]
    descs = variant_descriptions(long)
    cols = [*GROUP_COLUMNS, "seed", "variant", "value"]
    values = rows.loc[rows["method"] == e.method, cols]
    if e.quantity == "delta":
        base = rows.loc[rows["method"] == e.baseline, cols].rename(columns={"variant": "base_variant", "value": "base"})
        values = values.merge(base, on=[*GROUP_COLUMNS, "seed"])
        values["value"] = values["value"] - values["base"]
        values = values.dropna(subset=["value"])
    order = method_order([e.baseline, e.method]) if e.quantity == "delta" else [e.method]

    def arm(r) -> str:
        own = {e.method: r.variant, **({e.baseline: r.base_variant} if e.quantity == "delta" else {})}
        return ", ".join(t for t in (arm_text(m, descs.get(own[m], "")) for m in order) if t)

    values = values.assign(value=100 * values["value"].astype(float))
    values["arm"] = [arm(r) for r in values.itertuples()] if not values.empty else ""
    random_init = bool(values["random_init"].astype(bool).any())
    values["dataset"] = model_labels(values, values["arm"]) if not values.empty else values["dataset"]  # the tables' row labels
    if e.across == "mean" and not values.empty:
        # per method config: a seed counts only when every model has it, so each seed's mean covers
        # the same models; configs are never averaged as if they were datasets
        out = []
        for arm_name, part in values.groupby("arm", sort=False):
            n = part["dataset"].nunique()
            full = part.groupby("seed")["dataset"].transform("nunique") == n
            label = f"mean of {n} datasets" + (f" · {arm_name}" if arm_name else "") + (" (random init)" if random_init else "")
            out.append(part[full].groupby("seed", as_index=False)["value"].mean().assign(dataset=label))
        values = pd.concat(out, ignore_index=True)
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
            rows.append({"expectation": _label(e), "dataset": dataset, "metric": e.metric, "expected": e.value, "tolerance": e.tolerance,
                         "actual": actual, "ci_low": low, "ci_high": high, "n": n, "verdict": verdict(n, low, high, e.value, e.tolerance),
                         "source": e.source})
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
        shown = "missing" if r.verdict == "missing" else f"**{r.verdict}**"
        lines.append(f"| {r.expectation} | {r.dataset} | {r.expected:+.2f} ± {r.tolerance:.2f} | {actual} | {shown} | {r.source} |")
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
