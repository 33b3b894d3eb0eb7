"""The held-out validation split: carved from a run's training split, the only data selection reads.

Model selection (lr, epochs, variants) must never look at a test, shift or transfer number, so
every dataset — real ones, the demo composites, segmentation sets — gets a split named
``heldout``: a seeded, class-stratified ``fraction`` of the split the run trains on, removed from
training. It is called ``heldout`` rather than ``val`` because ImageNet, Tiny-ImageNet, VOC,
ADE20k and COCO-stuff already call their official evaluation set "val"; those stay untouched.

The carve depends only on (training split, labels, fraction, seed), never on the run's seed or
method, so every run of a comparison trains on the same images and is selected on the same ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.data.base import DatasetEntry, Split, take

HELDOUT = "heldout"


@dataclass(frozen=True)
class Holdout:
    """Which split is carved (``source``), how much of it (``fraction``) and with which ``seed``."""

    source: str
    fraction: float
    seed: int = 0

    def indices(self, labels: np.ndarray, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
        """(kept for training, held out), each sorted. Stratified: per class, round(fraction · n_c)
        samples are held out (at least one, and never all of a class: a class
        with one member stays in training), so the held-out split
        has the training split's class balance. Unstratified (segmentation: no image label):
        round(fraction · n) samples of a seeded permutation."""
        n = len(labels)
        if self.fraction <= 0:
            return np.arange(n), np.arange(0)
        rng = np.random.default_rng(self.seed)
        if not stratify:
            count = min(max(1, round(self.fraction * n)), n - 1)  # something is always left to train on
            held = rng.permutation(n)[:count]
        else:
            parts = []
            for cls in np.unique(labels):
                members = np.flatnonzero(labels == cls)
                # at least one held out where a class has two members, and never a whole class
                count = min(max(round(self.fraction * len(members)), 1), len(members) - 1)
                parts.append(rng.permutation(members)[:count])
            held = np.concatenate(parts) if parts else np.arange(0)
        mask = np.zeros(n, dtype=bool)
        mask[held] = True
        return np.flatnonzero(~mask), np.flatnonzero(mask)

    def facts(self, index: np.ndarray, role: str) -> dict[str, Any]:
        """What results record about a carved split: enough to prove two runs used the same one."""
        return {
            "carved_from": self.source, "holdout_fraction": self.fraction, "holdout_seed": self.seed,
            "holdout_role": role, "n": int(len(index)), "indices_sha256": indices_digest(index),
        }


def indices_digest(index: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(index, dtype=np.int64).tobytes()).hexdigest()[:16]


def disk_split(split: str, holdout: Holdout | None) -> str:
    """The split whose files a split name reads (``heldout`` reads the training split's)."""
    return holdout.source if split == HELDOUT and holdout is not None else split


def load_split(entry: DatasetEntry, split: str, data_root: Any, params: dict[str, Any], holdout: Holdout | None) -> Split:
    """``split`` of ``entry``; the training split minus the held-out part, or the held-out part.

    Other splits (test, shifts) are returned as the dataset builds them."""
    if holdout is None or holdout.fraction <= 0 or split not in (HELDOUT, holdout.source):
        if split == HELDOUT:
            raise ValueError(f"split {HELDOUT!r} needs data.val_fraction > 0 (it is carved from the training split)")
        return entry.load(split, data_root, **params)
    base = entry.load(holdout.source, data_root, **params)
    kept, held = holdout.indices(np.asarray(base.labels), stratify=entry.task == "classification")
    index, role = (held, HELDOUT) if split == HELDOUT else (kept, "train")
    part = take(base, index)
    return _with_meta(part, {**part.meta, **holdout.facts(index, role)})


def _with_meta(split: Split, meta: dict[str, Any]) -> Split:
    import dataclasses

    return dataclasses.replace(split, meta=meta)
