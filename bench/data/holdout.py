"""The held-out validation split: carved from a run's training split, the only data selection reads.

Model selection (lr, epochs, variants) must never look at a test, shift or transfer number, so
every dataset — real ones, the demo composites, segmentation sets — gets a split named
``heldout``: a seeded, class-stratified ``fraction`` of the split the run trains on, removed from
training. It is called ``heldout`` rather than ``val`` because ImageNet, Tiny-ImageNet, VOC,
ADE20k and COCO-stuff already call their official evaluation set "val"; those stay untouched.

The carve depends only on (training split, labels, fraction, seed), never on the run's seed or
method, so every run of a comparison trains on the same images and is selected on the same ones.

Your own data may bring its own held-out set (an imagefolder's ``val/``, a manifest's ``val`` rows:
``DatasetEntry.heldout_from_data``): then ``heldout`` is that split as it is and the training split
is not carved (``Holdout.given``).
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
    given: str | None = None  # a split of the data read whole as 'heldout' (then nothing is carved)

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


@dataclass(frozen=True)
class Subset:
    """``data.limit``: at most ``size`` images of a split (a smoke-test tool), chosen with ``seed``.

    Stratified (image labels: classification), the ``size`` images are spread over the classes as
    evenly as the split allows: every class gets ``size // classes`` or one more (the classes that
    get one more are drawn with the seed), a class with fewer members gives all of them and the
    rest goes to the others, so class counts differ by at most one wherever the split allows it.
    Unstratified (segmentation): ``size`` images of a seeded permutation. The draw depends only on
    (labels, size, seed) — not on the run's seed or method, nor on the split's name —, so splits
    made of the test images in the test order (corruptions) keep the same images, and every run
    of a comparison sees the same subset. ``role`` is 'train' or 'eval' (what results record)."""

    size: int
    seed: int = 0
    role: str = "eval"

    def indices(self, labels: np.ndarray, stratify: bool) -> np.ndarray:
        """The kept sample indices, sorted (all of them when the split has at most ``size``)."""
        n = len(labels)
        if n <= self.size:
            return np.arange(n)
        rng = np.random.default_rng(self.seed)
        if not stratify:
            return np.sort(rng.permutation(n)[: self.size])
        classes, counts = np.unique(labels, return_counts=True)
        quota = np.zeros(len(classes), dtype=np.int64)
        left = self.size
        while left > 0:
            open_ = np.flatnonzero(quota < counts)
            share = left // len(open_)
            if share == 0:  # fewer images left than classes still open: seeded classes get one more
                quota[rng.permutation(open_)[:left]] += 1
                break
            give = np.minimum(share, counts[open_] - quota[open_])
            quota[open_] += give
            left -= int(give.sum())
        parts = [rng.permutation(np.flatnonzero(labels == cls))[:q] for cls, q in zip(classes, quota)]
        return np.sort(np.concatenate(parts))

    def apply(self, split: Split, stratify: bool) -> Split:
        """``split`` cut to the subset, its facts recording the limit (``limit_n_before``: the split's size)."""
        index = self.indices(np.asarray(split.labels), stratify)
        part = split if len(index) == len(split) else take(split, index)
        facts = {"limit": self.size, "limit_seed": self.seed, "limit_role": self.role, "limit_n_before": len(split), "limit_n": int(len(index)),
                 "limit_indices_sha256": indices_digest(index)}
        return _with_meta(part, {**split.meta, **facts})


def indices_digest(index: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(index, dtype=np.int64).tobytes()).hexdigest()[:16]


def disk_split(split: str, holdout: Holdout | None) -> str:
    """The split whose files a split name reads (``heldout`` reads the training split's, or the
    split the data gives as its held-out set)."""
    if split != HELDOUT or holdout is None:
        return split
    return holdout.given or holdout.source


def load_split(entry: DatasetEntry, split: str, data_root: Any, params: dict[str, Any], holdout: Holdout | None) -> Split:
    """``split`` of ``entry``; the training split minus the held-out part, or the held-out part.

    Other splits (test, shifts) are returned as the dataset builds them."""
    if holdout is None or holdout.fraction <= 0 or split not in (HELDOUT, holdout.source):
        if split == HELDOUT:
            raise ValueError(f"split {HELDOUT!r} needs data.val_fraction > 0 (it is carved from the training split)")
        return entry.load(split, data_root, **params)
    if holdout.given is not None:  # the data's own held-out split, whole; the training split whole too
        part = entry.load(holdout.given if split == HELDOUT else split, data_root, **params)
        role = HELDOUT if split == HELDOUT else "train"
        return _with_meta(part, {**part.meta, "heldout_split": holdout.given, "holdout_role": role, "n": len(part)})
    base = entry.load(holdout.source, data_root, **params)
    kept, held = holdout.indices(np.asarray(base.labels), stratify=entry.task == "classification")
    index, role = (held, HELDOUT) if split == HELDOUT else (kept, "train")
    part = take(base, index)
    return _with_meta(part, {**part.meta, **holdout.facts(index, role)})


def _with_meta(split: Split, meta: dict[str, Any]) -> Split:
    import dataclasses

    return dataclasses.replace(split, meta=meta)
