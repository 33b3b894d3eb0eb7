"""``bench plan SUITE``: what a suite can detect, and how many seeds its claims need.

From a pilot — the suite's finished final runs, however few seeds they have — every endpoint's
Δ is estimated with the project's one uncertainty model (:func:`bench.report.stats.delta_estimate`:
seeds × test images crossed), whose variance components project to any number of seeds. Per
endpoint it prints the minimum detectable effect (80 % power, two-sided 5 %) at 3, 5, 10 and 20
seeds, the floor no number of seeds goes below (the test set's own noise: √ of the image
variance component), and the seeds needed to detect the effect the pilot saw. For the primary
claim (an ``expected:`` entry on the primary endpoint) it prints the seeds expected to decide the
claim if the pilot's estimate holds, or that the test set's floor keeps it undecidable.

Projections assume the pilot's variance components hold: with a 2- or 3-seed pilot the seed
component is itself uncertain (a χ² with 1–2 df), so treat the seed counts as estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.report.claims import ALPHA, ClaimTest, Estimating, Quantity, primary_claim, quantity_estimates, seeds_for_mde

if TYPE_CHECKING:
    from bench.suite import RunSpec, Suite

SEED_COUNTS = (3, 5, 10, 20)


@dataclass(frozen=True)
class Plan:
    endpoint: str  # family · quantity
    setting: str
    n: int  # seeds in the pilot
    mean: float
    mde: dict[int, float]  # seeds → MDE
    floor_mde: float  # the MDE with infinitely many seeds (NaN when unknown)
    seeds_to_detect: int | None  # seeds for the MDE to reach |Δ̂| (None: never / unknown)
    unit: str
    note: str


def plan(suite: "Suite", specs: list["RunSpec"], results_root: Path) -> tuple[list[Plan], list[str]]:
    """Per endpoint of the verdict box (primary first), the projected MDEs; and sentences on the
    primary claim."""
    from bench.report import load_final
    from bench.report.aggregate import paired_delta
    from bench.report.stats import with_intervals
    from bench.report.verdict import Endpoints, primary_estimates, unit_of, verdict_frame

    final, predictions, problems = load_final(specs, results_root)
    if final.empty:
        return [], ["No finished final runs to plan from: run a pilot first, e.g. the suite with fewer seeds "
                    "(`bench run SUITE -o seeds.max=3` for adaptive seeds, or `--only seed=0` and `--only seed=1`)."]
    every = Endpoints.all_of(suite, results_root)  # one per compared pair
    ends = next((e for e in every if e.primary is not None), every[0])
    rows: list[Plan] = []
    shared = Estimating.of(final)
    primary = primary_estimates(ends, final, predictions, problems)
    for pair_ends in every:
        delta = with_intervals(paired_delta(final, pair_ends.treatment, pair_ends.control), final, predictions, problems,
                               min_effect=pair_ends.min_effect)
        mine = primary if pair_ends is ends else []
        frame = verdict_frame(delta, final, pair_ends, mine)
        named = f"Δ {pair_ends.pair.label} · " if len(every) > 1 else ""  # several pairs: each endpoint names its own
        for r in frame.itertuples():
            if r.family == "primary":
                found = [e for e in mine if e.label == r.setting]
            else:
                q = Quantity(pair_ends.treatment, pair_ends.control, r.split, r.metric, str(r.dataset), "each")
                found = quantity_estimates(q, final, predictions, problems, shared)
            if not found:
                continue
            item = found[0]
            est = item.estimate
            mde = {n: est.mde(n) for n in SEED_COUNTS}
            floor = est.mde(10**6) if est.components is not None else math.nan
            detect = seeds_for_mde(est, abs(est.mean)) if est.defined and est.mean != 0 else None
            note = item.note or ("" if est.components is not None else "seed-level model: floor unknown")
            rows.append(Plan(f"{named}{r.family} · {r.quantity}", str(r.setting), est.n_seeds, est.mean, mde, floor, detect,
                             unit_of(r.metric), note))
    lines = []
    claim = primary_claim(suite)
    if ends.primary is not None and claim is not None:
        for item in primary:
            test = ClaimTest(item.estimate, claim.value, claim.tolerance, ALPHA)
            more = test.more_seeds()
            if test.verdict in ("reproduced", "smaller than claimed", "larger than claimed"):
                lines.append(f"Primary claim {claim.value:+.2f} ± {claim.tolerance:.2f} ({item.label}): already {test.verdict} with "
                             f"{item.estimate.n_seeds} seeds.")
            elif more is None:
                lines.append(f"Primary claim {claim.value:+.2f} ± {claim.tolerance:.2f} ({item.label}): {test.verdict}; no number of seeds "
                             f"decides it with this test set (SE floor {item.estimate.floor:.2g}).")
            else:
                lines.append(f"Primary claim {claim.value:+.2f} ± {claim.tolerance:.2f} ({item.label}): about {item.estimate.n_seeds + more} seeds "
                             f"({more} more) expected to decide it if the pilot's Δ {item.estimate.mean:+.2f} holds.")
    elif ends.primary is None:
        lines.append("The suite declares no primary endpoint (`primary:`): no claim to plan for.")
    return rows, lines


def plan_lines(rows: list[Plan], sentences: list[str]) -> list[str]:
    """The table ``bench plan`` prints."""
    if not rows:
        return sentences
    head = ["endpoint", "setting", "pilot Δ (n)", *(f"MDE {n}" for n in SEED_COUNTS), "MDE floor", "seeds to detect pilot Δ"]
    body = []
    for r in rows:
        detect = "never (floor)" if r.seeds_to_detect is None and not math.isnan(r.floor_mde) else (
            "unknown" if r.seeds_to_detect is None else str(r.seeds_to_detect))
        body.append([r.endpoint, r.setting, f"{r.mean:+.2f} ({r.n})", *(f"{r.mde[n]:.2g}" for n in SEED_COUNTS),
                     "—" if math.isnan(r.floor_mde) else f"{r.floor_mde:.2g}", detect])
    from tabulate import tabulate

    return [f"MDE: the Δ a two-sided 5 % test detects with 80 % power (points; NLL in nats), projected from the pilot's variance "
            "components; floor: with unlimited seeds (the test set's own noise).", tabulate(body, head, tablefmt="github"), *sentences]


__all__ = ["Plan", "plan", "plan_lines", "SEED_COUNTS"]
