"""Synthetic finished suites for the report tests: result.json / metrics.jsonl / status.json
written in the run store's real formats, with values whose statistics are known by hand."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bench.store import RunDir
from bench.suite import RunSpec, expand, load_suite
from test_suite import write

SUITE = """
name: syn
description: synthetic results with known statistics
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  data: {name: fmnist_composites, params: {img_size: 28}}
matrix:
  method: [sft, grpo_rm]
  seed: [0, 1, 2]
"""

# per split: (protocol, SFT base, GRPO-RM base); per-seed offsets are added (below)
SPLITS = {
    "test": ("id", 0.80, 0.82),
    "c/fog/1": ("shift", 0.70, 0.74),
    "c/fog/2": ("shift", 0.60, 0.66),
    "c/snow/1": ("shift", 0.72, 0.73),
    "c/snow/2": ("shift", 0.62, 0.65),
    "cifar10.1-v6": ("shift", 0.75, 0.74),
    "cifar10.1-v4": ("shift", 0.70, 0.70),  # equal means: a tie
    "transfer/stl10/knn": ("transfer", 0.90, 0.91),
    "transfer/cifar100/knn": ("transfer", 0.50, 0.55),
}
OFFSETS = {"sft": (0.00, 0.02, 0.04), "grpo_rm": (0.01, 0.01, 0.04)}  # per seed 0, 1, 2


def value(method: str, split: str, seed: int, splits: dict = SPLITS) -> float:
    protocol, sft, grpo = splits[split]
    return (sft if method == "sft" else grpo) + OFFSETS[method][seed]


def split_metrics(method: str, seed: int, bump: float = 0.0, splits: dict = SPLITS) -> dict[str, dict[str, Any]]:
    """result.json "metrics" of one run: every split of ``splits`` at value() + ``bump``."""
    metrics = {}
    for split, (protocol, _, _) in splits.items():
        entry = {"top1": value(method, split, seed, splits) + bump, "top5": 0.99, "nll": 0.5, "n": 100, "shift": protocol == "shift", "protocol": protocol}
        if protocol == "transfer":
            entry.pop("nll"), entry.pop("top5")
            entry.update(dataset=split.split("/")[1], probe="knn")
        metrics[split] = entry
    return metrics


# what varies over training in the synthetic logs (the curves figure draws exactly these) and what
# does not (margin: constant in every run; clip_fraction, adv_*: constant in GRPO-RM's runs, absent
# in SFT's; lr: not a curve panel)
VARYING_CURVES = ("accuracy", "p_true", "entropy", "logit_norm", "grad_norm")
CONSTANT_CURVES = ("margin", "clip_fraction")


def log_rows(method: str, steps: int = 5) -> list[dict[str, Any]]:
    """metrics.jsonl rows as training writes them: per step the policy statistics, gradient norm
    and lr, and for GRPO-RM the reward and advantage statistics (here: constant, as at μ = 1)."""
    return [{"step": s, "epoch": 0, "pass": 0, "lr": 1e-4, "loss": 1.0 / s, "accuracy": 0.1 * s, "p_true": 0.2 + 0.1 * s,
             "entropy": 2.0 - 0.2 * s, "logit_norm": 1.0 + s, "margin": 0.5, "grad_norm": 3.0 / s,
             **({"reward_mean": 0.5 * s, "adv_mean": 0.0, "adv_std": 0.95, "adv_max": 3.0, "clip_fraction": 0.0} if method == "grpo_rm" else {})}
            for s in range(1, steps + 1)]


def write_predictions(run_dir: RunDir, correct: dict[str, np.ndarray]) -> None:
    """predictions.npz as bench.job writes it: '<split>::correct' (and '::p_true') per split."""
    arrays = {}
    for split, hit in correct.items():
        arrays[f"{split}::correct"] = np.asarray(hit, dtype=bool)
        arrays[f"{split}::p_true"] = np.where(hit, 0.9, 0.1).astype(np.float32)
    with open(run_dir.predictions, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def write_run(root, spec: RunSpec, metrics: dict[str, dict[str, Any]], dataset: str = "cifar10", random_init: bool = True,
              stage: dict[str, Any] | None = None, predictions: dict[str, np.ndarray] | None = None, wall_time_s: float = 1.5,
              cost: dict[str, Any] | None = None) -> None:
    """One finished run in the store's formats (status, metrics.jsonl, result.json); ``stage``
    adds model-selection fields ({"stage": "tune", "tuned_values": ...} or a final's selection);
    ``predictions`` (split → per-image top-1 correctness) writes predictions.npz; ``cost`` is
    result.json's cost block (bench.job.run_cost), absent by default as in older results."""
    method, seed = spec.config.method.name, spec.config.seed
    run_dir = RunDir.of(root, spec.suite, spec.run_id)
    run_dir.set_status("running")
    run_dir.append_metrics(log_rows(method))
    if predictions is not None:
        write_predictions(run_dir, predictions)
    run_dir.write_result({
        "run_id": spec.run_id, "suite": spec.suite, **(stage or {}), "method": method, "dataset": dataset, "seed": seed,
        "config": spec.config.canonical(), "method_params": spec.config.method.resolved_params(),
        "backbone": {"display": "DINOv2-tiny", "init": "random init" if random_init else "pretrained: x.pth", "random_init": random_init},
        "protocol": {"img_size": 28, "trainable_blocks": "all", "train_size": 64, "steps": 5},
        "versions": {"torch": "2.11.0", "timm": "1.0.31"}, "git": {"commit": "abc123", "dirty": False},
        "host": "testhost", "device": "cpu", "wall_time_s": wall_time_s, **({"cost": cost} if cost is not None else {}), "metrics": metrics,
    })
    run_dir.set_status("done")


def write_suite(tmp_path, skip=(), fail=(), random_init=True, dataset="cifar10", text=SUITE, splits=SPLITS, name="syn.yaml"):
    """Write a finished synthetic suite; ``skip`` runs stay pending, ``fail`` runs are failed."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write(tmp_path, text, name)
    specs = expand(load_suite(path), path)
    for spec in specs:
        key = (spec.config.method.name, spec.config.seed)
        bump = 0.1 * (spec.config.train.lr > 1e-4)  # a second lr variant scores 10 points higher
        if key in skip:
            continue
        if key in fail:
            RunDir.of(tmp_path / "results", spec.suite, spec.run_id).set_status("failed", error="RuntimeError: CUDA out of memory (synthetic)")
            continue
        method, seed = key
        write_run(tmp_path / "results", spec, split_metrics(method, seed, bump, splits), dataset, random_init)
    return path, specs


def read_json(path):
    return json.loads(path.read_text())
