"""Claims as tests: the primary endpoint, ``expected:`` figures, and when to stop adding seeds.

Every number here comes from :func:`bench.report.stats.delta_estimate` (seeds × images crossed;
the seed-level t model where no per-image data exist), in the report's units (points for
accuracy).

A claim "Δ = E ± τ" (an ``expected:`` entry: ``value`` E, ``tolerance`` τ) is judged by three
one-sided tests at level α, never by a point estimate:

- *shortfall*: H0: Δ ≥ E − τ; rejected → **smaller than claimed**;
- *excess*: H0: Δ ≤ E + τ; rejected → **larger than claimed**;
- *equivalence* (TOST): H0: |Δ − E| ≥ τ, i.e. both one-sided tests against the band's edges;
  rejected (the 1 − 2α interval lies inside [E − τ, E + τ]) → **reproduced**.

At most one of them can reject. If none does, the verdict is **undecided** and the report says
how many more seeds are expected to decide it if the estimate stays where it is — or that no
number of seeds can, because the test set's own noise (the SE floor) is too large. Beside the
verdict, *superiority* (H0: Δ ≤ 0) says whether any effect in the claimed direction is shown.
The words and the precision each needs are listed in docs/reports.md.

Adaptive seeds (``seeds: {min, max, step, until: primary}``) look at the primary endpoint after
each round. Stopping when the answer looks decided must not inflate the error rate, so look k of
K spends α_k = α · (n_k − n_{k−1}) / n_K of the error budget (n_k seeds at look k, n_{−1} = 0;
the α_k sum to α), and every one-sided statement at a look is made at α_k / 2: at a band's edge
two statements are false at once (Δ = E − τ is neither "smaller than claimed" nor "reproduced"),
so halving keeps the chance of *any* false decision at any look ≤ Σ α_k = α by the union bound,
whatever the dependence between looks (tested by simulation with optional stopping). The report
of a suite with adaptive seeds judges its claims at that same α_k / 2 of the look it stopped at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pandas as pd

from bench.report.aggregate import CONFIDENCE, GROUP_COLUMNS, finals, variant_descriptions
from bench.report.schema import row_tuples
from bench.report.stats import (DeltaEstimate, Member, Predictions, RunTable, Unavailable, crossed_estimate, run_tables, scale_of,
                                seed_estimate)

if TYPE_CHECKING:
    from bench.suite import RunSpec, Suite

ALPHA = 1 - CONFIDENCE
MAX_PROJECTED_SEEDS = 1000  # beyond this a claim counts as undecidable by seeds

REPRODUCED, SMALLER, LARGER, UNDECIDED, NO_INTERVAL, MISSING = (
    "reproduced", "smaller than claimed", "larger than claimed", "undecided", "no interval", "missing")
DECIDED = (REPRODUCED, SMALLER, LARGER)
VERDICT_MEANING = {
    REPRODUCED: "equivalent to the claim: both one-sided tests against the band's edges reject (the 1 − 2α interval lies inside expected ± tolerance)",
    SMALLER: "the shortfall test rejects H0: Δ ≥ expected − tolerance",
    LARGER: "the excess test rejects H0: Δ ≤ expected + tolerance",
    UNDECIDED: "none of the three tests rejects at this precision",
    NO_INTERVAL: "fewer than two seeds, or the same difference on every seed and image: no interval",
    MISSING: "no finished run provides the quantity",
}


def alpha_spent(look: int, looks: Sequence[int], alpha: float = ALPHA) -> float:
    """α_k of look ``look`` (0-based) of a schedule with ``looks`` seeds: α · (n_k − n_{k−1}) / n_K."""
    if not looks:
        return alpha
    previous = looks[look - 1] if look > 0 else 0
    return alpha * (looks[look] - previous) / looks[-1]


# ---- one claim ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimTest:
    """The tests of one claim Δ = expected ± tolerance on one estimate, at level ``alpha``."""

    estimate: DeltaEstimate
    expected: float
    tolerance: float
    alpha: float = ALPHA

    @property
    def p_superiority(self) -> float:
        return self.estimate.p_greater(0.0)

    @property
    def p_shortfall(self) -> float:
        return self.estimate.p_less(self.expected - self.tolerance)

    @property
    def p_excess(self) -> float:
        return self.estimate.p_greater(self.expected + self.tolerance)

    @property
    def p_equivalence(self) -> float:
        e = self.estimate
        return max(e.p_greater(self.expected - self.tolerance), e.p_less(self.expected + self.tolerance)) if e.defined else math.nan

    @property
    def verdict(self) -> str:
        return verdict_of(self.estimate, self.expected, self.tolerance, self.alpha)

    @property
    def effect_shown(self) -> bool:
        """Superiority rejected: an effect in the claimed direction (Δ > 0 for a positive claim)."""
        p = self.estimate.p_greater(0.0) if self.expected >= 0 else self.estimate.p_less(0.0)
        return bool(p < self.alpha) if not math.isnan(p) else False

    def more_seeds(self) -> int | None:
        """Seeds to add for the verdict to be decided if the estimate stays where it is; None
        when no number of seeds decides it (the test set's noise floor) or it is decided."""
        return seeds_to_decide(self.estimate, self.expected, self.tolerance, self.alpha)


def verdict_of(est: DeltaEstimate, expected: float, tolerance: float, alpha: float = ALPHA) -> str:
    """The verdict word (module docstring) of a claim on ``est`` at level ``alpha``."""
    if est.n_seeds == 0 or math.isnan(est.mean):
        return MISSING
    if not est.defined:
        return NO_INTERVAL
    low, high = expected - tolerance, expected + tolerance
    if max(est.p_greater(low), est.p_less(high)) < alpha:
        return REPRODUCED
    if est.p_less(low) < alpha:
        return SMALLER
    if est.p_greater(high) < alpha:
        return LARGER
    return UNDECIDED


def _projected(est: DeltaEstimate, n: int) -> DeltaEstimate:
    """The same point estimate with the SE and df expected at ``n`` seeds."""
    return DeltaEstimate(est.mean, est.se_at(n), est.df_at(n), n, est.method, None)


def seeds_to_decide(est: DeltaEstimate, expected: float, tolerance: float, alpha: float = ALPHA) -> int | None:
    """The smallest number of seeds to *add* for :func:`verdict_of` to decide if the point
    estimate stayed; None when decided already, undefined, or out of reach of any number of
    seeds (the image floor keeps the SE too large)."""
    if not est.defined or verdict_of(est, expected, tolerance, alpha) != UNDECIDED:
        return None
    if verdict_of(_projected(est, MAX_PROJECTED_SEEDS), expected, tolerance, alpha) not in DECIDED:
        return None
    lo, hi = est.n_seeds, MAX_PROJECTED_SEEDS  # undecided at lo, decided at hi: bisect (SE falls with n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if verdict_of(_projected(est, mid), expected, tolerance, alpha) in DECIDED:
            hi = mid
        else:
            lo = mid
    return hi - est.n_seeds


def seeds_for_mde(est: DeltaEstimate, effect: float, alpha: float = ALPHA) -> int | None:
    """The fewest seeds whose minimum detectable effect (80 % power) is ≤ ``effect``; None when
    the test set's floor keeps it above."""
    if not est.defined or est.mde(MAX_PROJECTED_SEEDS, alpha) > abs(effect):
        return None
    lo, hi = 1, MAX_PROJECTED_SEEDS
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if est.mde(mid, alpha) <= abs(effect):
            hi = mid
        else:
            lo = mid
    return max(2, hi)


# ---- a quantity's estimates from finished runs -----------------------------------------------

@dataclass(frozen=True)
class Quantity:
    """What is compared: treatment − control on ``split`` in ``metric``, on one dataset or all
    (``dataset`` None), each dataset separately or their mean (``across``)."""

    treatment: str
    control: str
    split: str
    metric: str
    dataset: str | None = None
    across: str = "each"


@dataclass(frozen=True)
class Estimated:
    label: str  # the tables' row label of the comparison ('mean of 4 datasets', 'fmnist_composites', ...)
    estimate: DeltaEstimate  # in report units
    note: str  # why the seed-level model was used, '' for the crossed one


@dataclass
class Estimating:
    """What estimating many quantities on one long table shares, built once: its final runs,
    their variant labels, and each metric's per-run tables (filled on first use)."""

    final: pd.DataFrame
    descs: dict[str, str]
    tables: dict[str, dict[str, RunTable]] = field(default_factory=dict)

    @classmethod
    def of(cls, long: pd.DataFrame) -> "Estimating":
        final = finals(long)
        return cls(final, variant_descriptions(final))

    def tables_of(self, metric: str) -> dict[str, RunTable]:
        if metric not in self.tables:
            self.tables[metric] = run_tables(self.final, metric)
        return self.tables[metric]


def quantity_estimates(q: Quantity, long: pd.DataFrame, predictions: Predictions, problems: Mapping[str, str] | None = None,
                       shared: Estimating | None = None) -> list[Estimated]:
    """One estimate per comparison of ``q`` among the final runs of ``long`` (a dataset run in
    several settings or method configs gets one per comparison, labelled like the tables' rows).
    ``shared``: an :class:`Estimating` of the same ``long``, for callers that estimate many."""
    from bench.report.pairs import Pair
    from bench.report.tables import arm_text, method_order, model_labels

    shared = shared if shared is not None else Estimating.of(long)
    long = shared.final
    rows = long[(long["split"] == q.split) & (long["metric"] == q.metric)]
    if q.dataset is not None:
        rows = rows[rows["dataset"] == q.dataset]
    cols = [*GROUP_COLUMNS, "seed", "variant", "value", "run_id"]
    pairs = rows.loc[rows["method"] == q.treatment, cols].merge(
        rows.loc[rows["method"] == q.control, cols].rename(columns={"variant": "base_variant", "value": "base", "run_id": "base_run"}),
        on=[*GROUP_COLUMNS, "seed"])
    pairs = pairs.dropna(subset=["value", "base"])
    if pairs.empty:
        return []
    descs = shared.descs
    order = method_order([q.control, q.treatment], (Pair(q.treatment, q.control),))
    pairs["arm"] = [", ".join(t for t in (arm_text(m, descs.get({q.treatment: r.variant, q.control: r.base_variant}[m], "")) for m in order) if t)
                    for r in row_tuples(pairs)]
    pairs["label"] = model_labels(pairs, pairs["arm"])
    scale = scale_of(q.metric)
    values = shared.tables_of(q.metric)
    random_init = bool(pairs["random_init"].astype(bool).any())
    groups: list[tuple[str, pd.DataFrame, bool]] = []
    if q.across == "mean":
        for arm, part in pairs.groupby("arm", sort=False):
            n = part["label"].nunique()
            full = part[part.groupby("seed")["label"].transform("nunique") == n]
            label = (f"mean of {n} datasets" if n > 1 else str(part["label"].iloc[0])) + (f" · {arm}" if arm and n > 1 else "") \
                + (" (random init)" if random_init and n > 1 else "")
            groups.append((label, full, True))
    else:
        groups = [(label, part, False) for label, part in pairs.groupby("label", sort=False)]
    out = []
    for label, part, mean in groups:
        members = []
        per_seed = []
        for seed, at in part.groupby("seed", sort=True):
            k = len(at)
            members.append([Member(r.run_id, r.base_run, 1.0 / k if mean else 1.0, str(r.dataset), r.label if mean else "") for r in row_tuples(at)])
            per_seed.append(float((at["value"] - at["base"]).mean()))
        note = ""
        try:
            if q.metric not in ("top1", "nll"):
                raise Unavailable(f"{q.metric} is not a mean over images")
            if len(members) < 2:
                raise Unavailable("one seed: no interval")
            est, _ = crossed_estimate(members, q.split, q.metric, values, predictions, problems or {})
        except ValueError as why:  # Unavailable included: the per-seed values still give the t model
            est, note = seed_estimate(per_seed), str(why)
        out.append(Estimated(label, est.scaled(scale), note))
    return out


# ---- the primary endpoint and adaptive seeds --------------------------------------------------

def primary_quantity(suite: "Suite") -> Quantity | None:
    p = suite.primary
    return None if p is None else Quantity(p.treatment, p.control, p.split, p.metric, None, p.across)


def primary_claim(suite: "Suite") -> Any | None:
    """The ``expected:`` entry judged on the primary endpoint (same comparison, split and metric),
    if the suite states one."""
    p = suite.primary
    if p is None:
        return None
    return next((e for e in suite.expected if e.quantity == "delta" and e.method == p.treatment and e.baseline == p.control
                 and e.split == p.split and e.metric == p.metric and e.dataset is None and e.across == p.across), None)


def primary_decided(est: DeltaEstimate, claim: Any | None, min_effect: float, alpha: float) -> str | None:
    """The decided verdict on the primary endpoint with every one-sided statement at ``alpha``,
    else None. With a claim on it: its verdict (reproduced / smaller / larger than claimed).
    Without: 'effect shown' when Δ > 0 or Δ < 0 is shown, 'equivalent within ±min_effect' when
    TOST against that margin rejects."""
    if not est.defined:
        return None
    if claim is not None:
        word = verdict_of(est, claim.value, claim.tolerance, alpha)
        return word if word in DECIDED else None
    if min(est.p_greater(0.0), est.p_less(0.0)) < alpha:
        return f"effect shown ({'+' if est.mean > 0 else '−'})"
    if min_effect > 0 and max(est.p_greater(-min_effect), est.p_less(min_effect)) < alpha:
        return f"equivalent within ±{min_effect:g}"
    return None


def report_alpha(suite: "Suite", results_root: Path) -> float:
    """The α a report judges claims at: α itself, or for a suite with adaptive seeds the α spent
    at the look its rounds stopped at (later looks would need their own share)."""
    if getattr(suite, "seeds", None) is None:
        return ALPHA
    from bench.sequential import current_look

    look, looks = current_look(suite, results_root)
    return alpha_spent(look, looks) / 2


def decide_primary(suite: "Suite", specs: list["RunSpec"], results_root: Path, look: int, looks: list[int]) -> Any:
    """One round of adaptive seeds (:mod:`bench.sequential`): is the primary endpoint decided at the
    α spent at this look? Reads the suite's finished final runs and their predictions."""
    from bench.report import load_final
    from bench.sequential import RoundDecision

    q = primary_quantity(suite)
    if q is None:
        return RoundDecision(False, UNDECIDED, "the suite declares no primary endpoint")
    long, predictions, problems = load_final(specs, results_root)
    found = quantity_estimates(q, long, predictions, problems)
    alpha = alpha_spent(look, looks) / 2  # per one-sided statement (module docstring)
    if not found:
        return RoundDecision(False, MISSING, "no finished pair of runs provides the primary endpoint")
    claim = primary_claim(suite)
    words = []
    decided = []
    for item in found:
        word = primary_decided(item.estimate, claim, suite.min_effects().get(q.metric, 0.0), alpha / len(found))
        decided.append(word is not None)
        est = item.estimate
        low, high = est.interval(1 - 2 * alpha / len(found))
        words.append(f"{item.label}: {word or UNDECIDED} (Δ {est.mean:+.2f} [{low:+.2f}, {high:+.2f}], n={est.n_seeds}, "
                     f"α per one-sided test {alpha / len(found):.4f})")
    return RoundDecision(all(decided), "decided" if all(decided) else UNDECIDED, "; ".join(words))


__all__ = ["ClaimTest", "Quantity", "Estimated", "quantity_estimates", "verdict_of", "seeds_to_decide", "seeds_for_mde", "alpha_spent",
           "primary_quantity", "primary_claim", "primary_decided", "decide_primary", "VERDICT_MEANING", "DECIDED", "ALPHA", "scale_of"]
