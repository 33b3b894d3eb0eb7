"""Evaluation protocols as the config sees them: names, the splits each scores, where its scorer lives.

- ``heldout``: the fine-tuned model + head on the split carved from training data
  (:mod:`bench.data.holdout`); the only numbers model selection may read.
- ``id``: the fine-tuned model + head on the dataset's in-distribution evaluation splits
  (top-1/top-5/NLL; segmentation: mIoU, aAcc, mAcc).
- ``shift``: the same model + head on the covariate-shifted splits of the same label space.
- ``transfer``: the fine-tuned backbone frozen, Softmax Regression and kNN on other datasets'
  features (:mod:`bench.transfer`; targets in the run config's ``transfer`` section).

This module sits below the run config, which validates ``evaluations:`` against the registry and
asks each protocol which splits a run scores (before anything runs: validation, data checks,
progress). Scoring needs a built run, which sits above the config; so a protocol names its
scorer as ``"module:function"`` (:func:`scorer`), imported when a run is evaluated — the way an
entry point names its object. A plugin registers a protocol here with its own scorer's path.
How numbers aggregate across splits and seeds is the report's job
(:mod:`bench.report.aggregate`), keyed by the ``protocol`` every metric entry records.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from bench.data.holdout import HELDOUT
from bench.registry import Registry

if TYPE_CHECKING:
    from bench.config import RunConfig

Metrics = dict[str, Any]
Scorer = Callable[..., tuple[dict[str, Metrics], dict[str, dict[str, Any]]]]
"""scorer(protocol, run, run_dir, unit) → (metric entries, per-image arrays by split) of one unit."""

OWN_SPLITS = "bench.evaluate:score_own_split"


class Protocol:
    """One evaluation protocol: which splits it scores for a run config, one *unit* at a time
    (a split; for transfer, a target dataset), and the scorer of a unit. Each unit's scores are
    kept in the run directory as soon as they exist, so an interrupted evaluation resumes at the
    next unit (:func:`bench.evaluate.evaluate_protocol`)."""

    name: ClassVar[str]
    scorer: ClassVar[str] = OWN_SPLITS

    def splits(self, cfg: "RunConfig") -> tuple[str, ...]:
        raise NotImplementedError

    def units(self, cfg: "RunConfig") -> tuple[str, ...]:
        """What this protocol scores one at a time: progress counts these, resumption skips them."""
        return self.splits(cfg)


class HeldOut(Protocol):
    """The split carved from the training data (data.val_fraction): what model selection reads."""

    name = "heldout"

    def splits(self, cfg: "RunConfig") -> tuple[str, ...]:
        return (HELDOUT,) if cfg.data.holdout is not None else ()


class InDistribution(Protocol):
    """The fine-tuned model and head on the dataset's own evaluation splits (test / official val)."""

    name = "id"

    def splits(self, cfg: "RunConfig") -> tuple[str, ...]:
        entry = _entry(cfg)
        return tuple(s for s in cfg.data.resolved_eval_splits() if not entry.is_shift(s))


class Shift(Protocol):
    """The same model and head on covariate-shifted splits of the same label space (OOD)."""

    name = "shift"

    def splits(self, cfg: "RunConfig") -> tuple[str, ...]:
        entry = _entry(cfg)
        return tuple(s for s in cfg.data.resolved_eval_splits() if entry.is_shift(s))


class Transfer(Protocol):
    """The fine-tuned backbone frozen: kNN and Softmax Regression on other datasets' features."""

    name = "transfer"
    scorer = "bench.transfer:score_transfer_unit"

    def splits(self, cfg: "RunConfig") -> tuple[str, ...]:
        return ()

    def units(self, cfg: "RunConfig") -> tuple[str, ...]:
        return tuple(f"transfer/{target.name}" for target in cfg.transfer.targets)


def _entry(cfg: "RunConfig"):
    from bench.data import DATASETS

    return DATASETS.get(cfg.data.name)


EVALUATIONS: Registry[Protocol] = Registry("evaluation")
for _protocol in (HeldOut(), InDistribution(), Shift(), Transfer()):
    EVALUATIONS.add(_protocol.name, _protocol)


def protocol_splits(cfg: "RunConfig") -> dict[str, str]:
    """split → protocol that scores it, for the protocols ``cfg`` lists, in protocol order."""
    return {split: name for name in cfg.evaluations for split in EVALUATIONS.get(name).splits(cfg)}


@functools.cache
def scorer(path: str) -> Scorer:
    """The function ``"module:function"`` names (imported on first use)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
