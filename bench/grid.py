"""Facts about a choice made on a grid of tried values: is it at an edge, did a tie decide it, and
what is the next value one step beyond an edge.

Model selection (:mod:`bench.select`) and the transfer probe's C sweep (:mod:`bench.transfer`)
both pick the best of a few listed values. A pick at the smallest or largest value tried says
the optimum may lie beyond the grid, and a pick among exactly equal scores was made by the
tie-break rule rather than by the data; both must be recorded and reported, so the one
definition lives here.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

SMALLEST, LARGEST = "smallest", "largest"
LOG_SPACING_TOLERANCE = 1.0
"""How far from constant the log-ratios of a positive grid may be and still count as log-spaced:
it must be no further from constant than its differences are (see :func:`step_beyond`)."""
SIGNIFICANT_DIGITS = 3
"""A value added beyond an edge is rounded to this many significant digits, so that it reads
like a listed one (3.33e-3, not 0.0033333333333333335) and hashes the same on every machine."""


def is_number(value: Any) -> bool:
    """A real number a grid can be ordered by (a YAML true/false is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def grid_edge(values: Sequence[Any], chosen: Any) -> str | None:
    """'smallest' or 'largest' when ``chosen`` is the smallest or largest of ``values`` (compared
    numerically when every value is a number, else by the listed order: first or last); None for
    an interior choice, a grid of fewer than two distinct values, or a value not in the grid."""
    distinct = list(dict.fromkeys(_hashable(v) for v in values))
    if len(distinct) < 2 or _hashable(chosen) not in distinct:
        return None
    if all(is_number(v) for v in values) and is_number(chosen):
        low, high = min(values), max(values)
        return SMALLEST if chosen == low else LARGEST if chosen == high else None
    return SMALLEST if _hashable(chosen) == distinct[0] else LARGEST if _hashable(chosen) == distinct[-1] else None


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (dict, list)) else value


def step_beyond(values: Sequence[float], edge: str) -> float | int:
    """The value one step beyond the ``edge`` ('smallest' or 'largest') of a numeric grid.

    Geometric when every value is positive and the grid looks log-spaced: the step is the ratio of
    the two values nearest that edge ([1e-4, 3e-4, 1e-3] → 1e-3 · 1e-3/3e-4 = 3.33e-3). A grid
    looks log-spaced when its consecutive log-ratios vary no more than its consecutive differences
    do (max/min of each): [1e-4, 3e-4, 1e-3] (ratios 3, 3.3; differences 2e-4, 7e-4) is, [1, 2, 3]
    (ratios 2, 1.5; differences 1, 1) is not, and a two-value positive grid is. Otherwise the step
    is arithmetic: the difference of the two values nearest that edge ([0, 0.1, 0.2] → 0.3). An
    integer grid stays integer (rounded, and at least one beyond the edge). Needs two distinct
    numbers."""
    ordered = sorted(set(values))
    if len(ordered) < 2 or not all(is_number(v) for v in ordered):
        raise ValueError(f"a step beyond a grid's edge needs at least two distinct numbers, got {list(values)}")
    near = (ordered[-2], ordered[-1]) if edge == LARGEST else (ordered[1], ordered[0])  # (inner, edge)
    if _log_spaced(ordered):
        new: float = near[1] * (near[1] / near[0])
    else:
        new = near[1] + (near[1] - near[0])
    if all(isinstance(v, int) for v in ordered):
        whole = int(round(new))
        return whole if whole != near[1] else near[1] + (1 if edge == LARGEST else -1)
    return float(f"{new:.{SIGNIFICANT_DIGITS}g}")


def _log_spaced(ordered: list[float]) -> bool:
    if ordered[0] <= 0:
        return False
    logs = [math.log(b / a) for a, b in zip(ordered, ordered[1:])]
    diffs = [b - a for a, b in zip(ordered, ordered[1:])]
    return max(logs) / min(logs) <= LOG_SPACING_TOLERANCE * max(diffs) / min(diffs)


def ties(scores: Sequence[float], best: float) -> list[int]:
    """Indices of the scores exactly equal to ``best`` (NaN never ties): more than one means the
    tie-break rule, not the data, made the choice."""
    return [i for i, s in enumerate(scores) if s == best]
