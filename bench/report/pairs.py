"""The comparisons a report draws, and how it names methods.

A suite lists (treatment, control) pairs under ``compare:`` (:class:`bench.suite.Comparison`);
every Δ column, verdict box, forest plot, ablation ranking and title of its report is derived
from them, and every method is named by its registry entry's display name
(:func:`bench.methods.display_name`). Report code therefore never spells a method out: a suite
that compares a new method with its baseline gets a report about those two, not about the
benchmark's default pair.

One pair keeps the file names and columns a single-comparison report always had (``forest.png``,
``delta_mean``); with several, each pair's own carry its key (``forest_focal_vs_sft.png``,
``delta_focal_vs_sft_mean``), so that no file or column silently means "the first pair".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd


def method_name(method: str) -> str:
    """The display name of a method ('GRPO-RM'); the name itself for one the registry lacks."""
    from bench.methods import display_name  # the registry, not the training code

    return display_name(method)


@dataclass(frozen=True)
class Pair:
    """One comparison: Δ = treatment − control, paired per seed within a setting."""

    treatment: str
    control: str

    @property
    def label(self) -> str:
        """'GRPO-RM − SFT'."""
        return f"{method_name(self.treatment)} − {method_name(self.control)}"

    @property
    def key(self) -> str:
        """'grpo_rm_vs_sft': the pair in file names, column names and HTML ids."""
        return f"{self.treatment}_vs_{self.control}"


def default_pairs() -> tuple[Pair, ...]:
    """The comparison of a suite that declares none (:data:`bench.methods.DEFAULT_COMPARISON`)."""
    from bench.methods import DEFAULT_COMPARISON

    return (Pair(*DEFAULT_COMPARISON),)


def pairs_of(suite: Any) -> tuple[Pair, ...]:
    """The pairs a suite compares (:meth:`bench.suite.Suite.comparisons`), in its order."""
    return tuple(Pair(c.treatment, c.control) for c in suite.comparisons())


def pairs_in(delta: pd.DataFrame) -> tuple[Pair, ...]:
    """The pairs a Δ frame holds rows of, in order of appearance."""
    if delta.empty or not {"treatment", "control"} <= set(delta.columns):
        return ()
    return tuple(Pair(str(t), str(c)) for t, c in dict.fromkeys(zip(delta["treatment"], delta["control"])))


def stem(base: str, pair: Pair, pairs: Sequence[Pair]) -> str:
    """``base`` for a report of one pair ('forest', 'delta'); '<base>_<pair key>' with several."""
    return base if len(pairs) <= 1 else f"{base}_{pair.key}"


def method_order(methods: Iterable[str], pairs: Sequence[Pair] = ()) -> list[str]:
    """The controls first, then the treatments (in the order the pairs list them; the default
    comparison's when no pairs are given), then any other method in order of appearance — the
    order of table columns, legends and colours."""
    seen = list(dict.fromkeys(methods.tolist() if isinstance(methods, pd.Series) else methods))
    pairs = tuple(pairs) or default_pairs()
    lead = list(dict.fromkeys([*(p.control for p in pairs), *(p.treatment for p in pairs)]))
    return [m for m in lead if m in seen] + [m for m in seen if m not in lead]


def title_text(pairs: Sequence[Pair]) -> str:
    """'SFT vs GRPO-RM'; 'SFT vs GRPO-RM and focal' for pairs sharing a control; '; ' between
    controls."""
    by_control: dict[str, list[str]] = {}
    for p in pairs:
        by_control.setdefault(p.control, []).append(method_name(p.treatment))
    return "; ".join(f"{method_name(c)} vs {' and '.join(ts)}" for c, ts in by_control.items())


def deltas_text(pairs: Sequence[Pair]) -> str:
    """'GRPO-RM − SFT'; 'GRPO-RM − SFT and focal − SFT'."""
    labels = [p.label for p in pairs]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + f" and {labels[-1]}"


__all__ = ["Pair", "method_name", "method_order", "default_pairs", "pairs_of", "pairs_in", "stem", "title_text", "deltas_text"]
