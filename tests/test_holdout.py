"""The held-out split (bench.data.holdout): a seeded, stratified carve of the training split that
no run trains on, identical for every run of a comparison, and recorded in the split's facts.

Expectations are computed independently here (bincount, sklearn, pixel bytes), never by calling
the carve again.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from pydantic import ValidationError

from bench.config import DataConfig, RunConfig
from bench.data import DATASETS
from bench.data.holdout import HELDOUT, Holdout
from bench.distributed import DistContext
from bench.protocols import protocol_splits
from bench.built import BuiltRun
from conftest import tiny_config

PARAMS = {"img_size": 28, "train_size": 120, "eval_size": 16}
SEG_PARAMS = {"img_size": 28, "train_size": 30, "eval_size": 8}
# class sizes chosen so that fraction · n_c is never a .5 tie for the fractions used below
SIZES = np.array([1, 2, 3, 4, 7, 12, 19, 33, 58])
SIZES_NO_SINGLETON = np.array([2, 3, 4, 7, 12, 19, 33, 58])


def _labels(sizes: np.ndarray, seed: int = 0) -> np.ndarray:
    """Shuffled labels with ``sizes[c]`` members of class ``c``."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(labels)


def _expected_counts(labels: np.ndarray, fraction: float) -> np.ndarray:
    counts = np.bincount(labels)
    expected = np.rint(fraction * counts).astype(int)
    return np.where((expected == 0) & (counts >= 2), 1, expected)


def _digest(index) -> str:
    return hashlib.sha256(np.asarray(index, dtype=np.int64).tobytes()).hexdigest()[:16]


def _rows(images: np.ndarray) -> list[bytes]:
    return [img.tobytes() for img in images]


def _raw_train(name: str = "fmnist_composites", params: dict = PARAMS):
    """The dataset's training split exactly as the dataset builds it (no carve)."""
    return DATASETS.get(name).load("train", None, **params)


# --- the carve itself -------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.37])
def test_carve_partitions_indices_sorted_disjoint_and_complete(fraction):
    labels = _labels(SIZES)
    kept, held = Holdout("train", fraction, seed=0).indices(labels, stratify=True)
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)  # sorted, no repeats
    assert not set(kept.tolist()) & set(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(labels)))
    assert kept.dtype.kind == held.dtype.kind == "i"


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.37])
def test_stratified_counts_per_class(fraction):
    labels = _labels(SIZES, seed=1)
    _, held = Holdout("train", fraction, seed=5).indices(labels, stratify=True)
    got = np.bincount(labels[held], minlength=len(SIZES))
    assert got.tolist() == _expected_counts(labels, fraction).tolist()
    # spelled out for the fixed sizes: a singleton class keeps its only sample, a pair gives one
    assert got[0] == 0 and got[1] == 1


@pytest.mark.parametrize("scale", [1, 10])
@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.37])
def test_class_proportions_match_sklearn_stratified_split(fraction, scale):
    sizes = SIZES_NO_SINGLETON * scale
    labels = _labels(sizes, seed=2)
    _, held = Holdout("train", fraction, seed=0).indices(labels, stratify=True)
    ours = np.bincount(labels[held], minlength=len(sizes))
    from sklearn.model_selection import train_test_split  # imported here: ~1.5 s, for these cases only

    _, sk_test = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=0)
    theirs = np.bincount(labels[sk_test], minlength=len(sizes))
    assert np.abs(ours - theirs).max() <= 1, (ours, theirs)
    if scale > 1:  # with enough samples per class the held-out balance is the training split's
        assert np.abs(ours / ours.sum() - theirs / theirs.sum()).max() < 0.005
        assert np.abs(ours / ours.sum() - sizes / sizes.sum()).max() < 0.005


def test_unstratified_carve_is_round_fraction_of_n_ignoring_labels():
    labels = np.zeros(30, dtype=np.int64)
    labels[:3] = 1  # a rare "class" an unstratified carve need not sample
    for fraction, count in ((0.2, 6), (0.1, 3), (0.37, 11)):
        kept, held = Holdout("train", fraction, seed=0).indices(labels, stratify=False)
        assert len(held) == count and len(kept) == 30 - count
        assert sorted(kept.tolist() + held.tolist()) == list(range(30))


def test_same_seed_same_carve_other_seed_other_carve():
    labels = _labels(SIZES)
    a = Holdout("train", 0.3, seed=7).indices(labels, stratify=True)
    b = Holdout("train", 0.3, seed=7).indices(labels.copy(), stratify=True)
    c = Holdout("train", 0.3, seed=8).indices(labels, stratify=True)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    # another seed still honours the per-class counts
    assert np.bincount(labels[c[1]]).tolist() == np.bincount(labels[a[1]]).tolist()


def test_zero_fraction_holds_nothing_out():
    labels = _labels(SIZES)
    kept, held = Holdout("train", 0.0).indices(labels, stratify=True)
    assert kept.tolist() == list(range(len(labels))) and len(held) == 0


# --- through DataConfig: images, facts, config validation --------------------------------------


def test_heldout_and_training_split_share_no_image_and_cover_the_train_split():
    cfg = DataConfig(name="fmnist_composites", params=PARAMS, val_fraction=0.25, val_seed=3)
    raw = _raw_train()
    kept = cfg.load(cfg.resolved_train_split)
    held = cfg.load(HELDOUT)
    raw_rows = _rows(raw.images)
    assert len(set(raw_rows)) == len(raw_rows)  # every composite is distinct, so bytes identify a sample
    position = {row: i for i, row in enumerate(raw_rows)}
    kept_idx = [position[r] for r in _rows(kept.images)]
    held_idx = [position[r] for r in _rows(held.images)]
    assert not set(kept_idx) & set(held_idx)
    assert sorted(kept_idx + held_idx) == list(range(len(raw)))
    assert kept_idx == sorted(kept_idx) and held_idx == sorted(held_idx)  # original order kept
    # labels (and masks) travel with their images
    assert np.array_equal(held.labels, raw.labels[held_idx]) and np.array_equal(kept.labels, raw.labels[kept_idx])
    assert np.array_equal(held.masks, raw.masks[held_idx])
    # stratified: round(0.25 · n_c) per class, at least one where a class has two or more
    assert np.bincount(held.labels, minlength=10).tolist() == _expected_counts(raw.labels, 0.25).tolist()
    # the recorded digests name exactly these indices
    assert held.meta["indices_sha256"] == _digest(held_idx)
    assert kept.meta["indices_sha256"] == _digest(kept_idx)


def test_split_facts_record_the_carve():
    cfg = DataConfig(name="fmnist_composites", params=PARAMS, val_fraction=0.2, val_seed=4)
    held, kept = cfg.load(HELDOUT), cfg.load("train")
    n_held = int(_expected_counts(_raw_train().labels, 0.2).sum())
    for split, role, n in ((held, HELDOUT, n_held), (kept, "train", PARAMS["train_size"] - n_held)):
        assert split.meta["carved_from"] == "train"
        assert split.meta["holdout_fraction"] == 0.2 and split.meta["holdout_seed"] == 4
        assert split.meta["holdout_role"] == role
        assert split.meta["n"] == n == len(split)
        assert len(split.meta["indices_sha256"]) == 16
    assert held.meta["indices_sha256"] != kept.meta["indices_sha256"]
    # other splits are untouched and carry no carve facts
    test = cfg.load("test")
    assert len(test) == PARAMS["eval_size"] and "carved_from" not in test.meta


def test_defaults_and_val_seed_change_the_carve():
    cfg = DataConfig(name="fmnist_composites", params=PARAMS)
    assert cfg.val_fraction == 0.1 and cfg.val_seed == 0
    assert cfg.holdout == Holdout("train", 0.1, 0)
    a = cfg.load(HELDOUT).meta["indices_sha256"]
    again = DataConfig(name="fmnist_composites", params=PARAMS).load(HELDOUT).meta["indices_sha256"]
    other = DataConfig(name="fmnist_composites", params=PARAMS, val_seed=1).load(HELDOUT).meta["indices_sha256"]
    assert a == again and a != other


def test_carve_does_not_depend_on_run_seed_or_method():
    data = {"params": PARAMS}
    sft = BuiltRun(tiny_config("sft", seed=0, data=data), DistContext())
    grpo = BuiltRun(tiny_config("grpo_rm", seed=5, data=data, method_params={"mu": 2}), DistContext())
    facts = []
    for job in (sft, grpo):
        held = job.inputs(HELDOUT).split
        train = job.inputs(job.cfg.data.resolved_train_split).split
        assert train is job.train_split
        # the split each run trains on and its held-out split share no image
        assert not set(_rows(train.images)) & set(_rows(held.images))
        assert len(train) + len(held) == PARAMS["train_size"]
        facts.append((held.meta["indices_sha256"], train.meta["indices_sha256"], _rows(held.images)))
    assert facts[0] == facts[1]


def test_zero_fraction_trains_on_all_and_refuses_heldout():
    cfg = DataConfig(name="fmnist_composites", params=PARAMS, val_fraction=0)
    assert cfg.holdout is None
    train = cfg.load("train")
    assert np.array_equal(train.images, _raw_train().images)
    with pytest.raises(ValueError, match="val_fraction"):
        cfg.load(HELDOUT)
    with pytest.raises(ValidationError, match=r"evaluations\.heldout: .*val_fraction"):
        RunConfig(**{**_tiny_tree(), "evaluations": ["heldout"], "data": {**_tiny_tree()["data"], "val_fraction": 0}})
    # with a carve the same evaluation is accepted and scores exactly the held-out split
    ok = RunConfig(**{**_tiny_tree(), "evaluations": ["heldout", "id"]})
    assert protocol_splits(ok) == {HELDOUT: "heldout", "test": "id"}
    # and without the heldout evaluation a run with val_fraction 0 is fine
    RunConfig(**{**_tiny_tree(), "data": {**_tiny_tree()["data"], "val_fraction": 0}})


def _tiny_tree() -> dict:
    return {
        "method": {"name": "sft"},
        "backbone": {"name": "dinov2_tiny", "weights": "random", "img_size": 28},
        "data": {"name": "fmnist_composites", "params": PARAMS},
    }


@pytest.mark.parametrize("pattern", ["heldout", "held*"])
def test_heldout_in_eval_splits_points_to_the_heldout_evaluation(pattern):
    with pytest.raises(ValidationError, match=r"data\.eval_splits: .*'heldout' evaluation"):
        DataConfig(name="fmnist_composites", eval_splits=["test", pattern])
    with pytest.raises(ValidationError, match=r"'heldout' evaluation"):
        RunConfig(**{**_tiny_tree(), "data": {**_tiny_tree()["data"], "eval_splits": [pattern]}})


# --- segmentation: no image label, so an unstratified carve -----------------------------------


def test_segmentation_gets_an_unstratified_carve(monkeypatch):
    stratified = []
    real = Holdout.indices

    def spy(self, labels, stratify):
        stratified.append(stratify)
        return real(self, labels, stratify)

    monkeypatch.setattr(Holdout, "indices", spy)
    cfg = DataConfig(name="fmnist_composites_seg", params=SEG_PARAMS, val_fraction=0.2, val_seed=2)
    raw = _raw_train("fmnist_composites_seg", SEG_PARAMS)
    held, kept = cfg.load(HELDOUT), cfg.load("train")
    assert stratified == [False, False]
    n_held = round(0.2 * SEG_PARAMS["train_size"])
    assert len(held) == held.meta["n"] == n_held and len(kept) == SEG_PARAMS["train_size"] - n_held
    position = {row: i for i, row in enumerate(_rows(raw.images))}
    held_idx = [position[r] for r in _rows(held.images)]
    kept_idx = [position[r] for r in _rows(kept.images)]
    assert sorted(held_idx + kept_idx) == list(range(len(raw))) and not set(held_idx) & set(kept_idx)
    assert np.array_equal(held.masks, raw.masks[held_idx])  # masks follow their images
    assert held.meta["carved_from"] == "train" and held.meta["indices_sha256"] == _digest(held_idx)
    assert DATASETS.get("fmnist_composites_seg").task == "segmentation"
