"""Expected vs actual: a suite's stated figures (e.g. the paper's claims) judged as tests.

An ``expected:`` entry "Δ = value ± tolerance" is estimated on the suite's final runs by
:func:`bench.report.claims.quantity_estimates` (paired per seed between runs of one setting;
seeds × test images crossed where per-image predictions exist; over the suite's datasets when
``across: mean``) and judged by :class:`bench.report.claims.ClaimTest`: shortfall, excess and
equivalence (TOST) tests at α, plus superiority (is there any effect in the claimed direction).
The verdict words and what precision each needs are defined in docs/reports.md; the point
estimate alone never decides. A ``value`` claim (a method's own mean) keeps the seed-level
interval and is judged by the same words.
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

from bench.report.claims import ALPHA, VERDICT_MEANING, ClaimTest, Quantity, quantity_estimates
from bench.report.stats import Predictions, scale_of, seed_estimate
from bench.report.tables import METRIC_NAMES, method_name
from bench.suite import Expectation

COLUMNS = ["expectation", "dataset", "metric", "expected", "tolerance", "actual", "ci_low", "ci_high", "ci90_low", "ci90_high", "n", "alpha",
           "p_superiority", "p_shortfall", "p_excess", "p_equivalence", "verdict", "effect_shown", "more_seeds", "mde", "ci_method", "ci_note",
           "source"]
VERDICTS = tuple(VERDICT_MEANING)
CAPTION = ("Each claim Δ = expected ± tolerance is tested, not eyeballed: shortfall (H0: Δ ≥ expected − tolerance; rejected = smaller "
           "than claimed), excess (H0: Δ ≤ expected + tolerance; rejected = larger than claimed) and equivalence (TOST, both one-sided "
           "tests against the band's edges; rejected = reproduced, i.e. the 90% CI lies inside the band), each at α; undecided = none "
           "rejects (with the seeds expected to decide it, or none when the test set's noise floor prevents it); effect = superiority "
           "(H0: Δ ≤ 0) rejected. Actual: mean over seeds with its 95% CI (seeds × test images crossed where per-image predictions "
           "exist). Definitions: docs/reports.md.")


def verdict(n: int, low: float, high: float, expected: float, tolerance: float) -> str:
    """The verdict of a claim from a seed-level t-interval [low, high] of ``n`` seeds (kept for
    callers with only an interval; the report uses :class:`ClaimTest` on the full estimate)."""
    from bench.report.claims import verdict_of
    from bench.report import dist
    from bench.report.stats import DeltaEstimate

    if n == 0:
        return "missing"
    if n < 2 or not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return "no interval"
    se = (high - low) / 2 / dist.t_ppf(0.975, n - 1)
    return verdict_of(DeltaEstimate((low + high) / 2, se, float(n - 1), n, "t"), expected, tolerance)


def _label(e: Expectation) -> str:
    split = {"ood_avg": "OOD avg"}.get(e.split, e.split)
    what = f"{split}, {METRIC_NAMES.get(e.metric, e.metric)}"
    if e.quantity == "delta":
        return f"Δ {method_name(e.method)} − {method_name(e.baseline)}, {what}"
    return f"{method_name(e.method)}, {what}"


def _value_estimates(e: Expectation, long: pd.DataFrame) -> list[tuple[str, "object", str]]:
    """A ``value`` claim: the method's own per-seed values per model (seed-level t model)."""
    from bench.report.aggregate import finals
    from bench.report.tables import model_labels

    rows = finals(long)
    rows = rows[(rows["split"] == e.split) & (rows["metric"] == e.metric) & (rows["method"] == e.method)]
    if e.dataset is not None:
        rows = rows[rows["dataset"] == e.dataset]
    if rows.empty:
        return []
    rows = rows.assign(label=model_labels(rows))
    scale = scale_of(e.metric)
    return [(label, seed_estimate(list(scale * part["value"].astype(float))), "") for label, part in rows.groupby("label", sort=False)]


def compare(expected: list[Expectation], long: pd.DataFrame, predictions: Predictions | None = None,
            problems: Mapping[str, str] | None = None, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per (expectation, comparison) with the estimate, the three one-sided tests, the
    verdict at ``alpha`` and what more seeds would do."""
    rows = []
    for e in expected:
        if long.empty:
            found = []
        elif e.quantity == "delta":
            q = Quantity(e.method, e.baseline, e.split, e.metric, e.dataset, e.across)
            found = [(x.label, x.estimate, x.note) for x in quantity_estimates(q, long, predictions or {}, problems)]
        else:
            found = _value_estimates(e, long)
        if not found:
            rows.append({"expectation": _label(e), "dataset": e.dataset or ("all datasets" if e.across == "mean" else "—"), "metric": e.metric,
                         "expected": e.value, "tolerance": e.tolerance, "actual": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                         "ci90_low": math.nan, "ci90_high": math.nan, "n": 0, "alpha": alpha, "p_superiority": math.nan, "p_shortfall": math.nan,
                         "p_excess": math.nan, "p_equivalence": math.nan, "verdict": "missing", "effect_shown": False, "more_seeds": math.nan,
                         "mde": math.nan, "ci_method": "", "ci_note": "", "source": e.source})
            continue
        for label, est, note in found:
            test = ClaimTest(est, e.value, e.tolerance, alpha)
            low, high = est.interval(0.95)
            low90, high90 = est.interval(1 - 2 * alpha)
            more = test.more_seeds()
            rows.append({"expectation": _label(e), "dataset": label, "metric": e.metric, "expected": e.value, "tolerance": e.tolerance,
                         "actual": est.mean, "ci_low": low, "ci_high": high, "ci90_low": low90, "ci90_high": high90, "n": est.n_seeds,
                         "alpha": alpha, "p_superiority": test.p_superiority, "p_shortfall": test.p_shortfall, "p_excess": test.p_excess,
                         "p_equivalence": test.p_equivalence, "verdict": test.verdict, "effect_shown": test.effect_shown,
                         "more_seeds": math.nan if more is None else more, "mde": est.mde(alpha=alpha), "ci_method": est.method,
                         "ci_note": note, "source": e.source})
    return pd.DataFrame(rows, columns=COLUMNS)


def actual_text(r) -> str:
    """'+2.00 [+0.51, +3.49] (n=3)'; '—' when no run provides it."""
    if r.n == 0:
        return "—"
    ci = "" if pd.isna(r.ci_low) else f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
    return f"{r.actual:+.2f}{ci} (n={r.n})".replace("-", "−")


def tests_text(r) -> str:
    """'shortfall p = 0.009; equivalence p = 0.97; effect not shown'."""
    if r.n < 2 or pd.isna(r.p_shortfall):
        return "—"
    effect = "effect shown" if r.effect_shown else "no effect shown"
    return (f"shortfall p = {r.p_shortfall:.2g}; excess p = {r.p_excess:.2g}; equivalence p = {r.p_equivalence:.2g}; "
            f"{effect} (p = {r.p_superiority:.2g})")


def verdict_text(r) -> str:
    """The verdict word, with the seeds expected to decide an undecided claim."""
    if r.verdict != "undecided":
        return r.verdict
    if pd.isna(r.more_seeds):
        return "undecided — no number of seeds decides it with this test set"
    return f"undecided at this precision — about {int(r.more_seeds)} more seeds expected to decide"


def expected_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    alpha = float(table["alpha"].iloc[0])
    lines = ["## Expected vs actual", "", CAPTION + f" α = {alpha:.4g}.", "",
             "| claim | dataset | expected (± tolerance) | actual [95% CI] | tests | verdict | MDE (80%) | source |",
             "|---|---|---:|---:|---|---|---:|---|"]
    for r in table.itertuples():
        actual = actual_text(r)
        shown = "missing" if r.verdict == "missing" else f"**{verdict_text(r)}**"
        mde = "" if pd.isna(r.mde) else f"{r.mde:.2g}"
        lines.append(f"| {r.expectation} | {r.dataset} | {r.expected:+.2f} ± {r.tolerance:.2f} | {actual} | {tests_text(r)} | {shown} | {mde} | {r.source} |")
    return "\n".join(lines) + "\n"


def expected_latex(table: pd.DataFrame, label: str) -> str:
    from bench.report.tables import latex_escape

    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{Expected vs actual. {latex_escape(CAPTION)}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{llrrl}", r"\toprule", r"claim & dataset & expected & actual & verdict \\", r"\midrule"]
    for r in table.itertuples():
        actual = actual_text(r)
        lines.append(" & ".join(latex_escape(x) for x in (r.expectation, str(r.dataset), f"{r.expected:+.2f} ± {r.tolerance:.2f}", actual, verdict_text(r))) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
