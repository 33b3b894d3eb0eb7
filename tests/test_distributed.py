"""Several processes per run (bench.distributed), as 2 gloo processes on the CPU.

Evaluation is sharded across ranks and must give a single process's numbers for the same weights
(classification with per-image arrays, segmentation, transfer features), including uneven shards
and ranks left without a batch; training follows the last-batch rule for both methods (equal
shards, no empty one, no NaN); the segmentation head's BatchNorm uses the global batch's
statistics. The two processes start once for the whole module (``two_ranks``) and run every
scenario; the tests then check what each scenario returned.
"""

from __future__ import annotations

import json
import math
import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.config import RunConfig
from bench.distributed import DistContext, check_batch_size, current, eval_batches, steps_per_epoch
from conftest import TINY

WORLD = 2
TRAIN_SIZE = 42  # minus the held-out carve (9): 33 = 2 × 16 + 1, a last global batch of 1 image
EVAL = {"eval_size": 4}  # 4 images at eval batch 4: one batch, rank 1 scores nothing (held out: 9 = 4 + 4 + 1, shares 5 and 4)
SEG_DATA = {"name": "fmnist_composites_seg", "num_workers": 0, "params": {"img_size": 28, "train_size": 16, "eval_size": 3}}
SEG = {"crop": 28, "scale": [28, 28], "ratio_range": [0.75, 1.5], "test_scale": [28, 28], "slide_stride": 14}
METHODS = {"sft": ("sft", {}), "grpo_mu1": ("grpo_rm", {}), "grpo_mu2": ("grpo_rm", {"mu": 2})}
SCORES = ("top1", "top5", "nll", "n", "ece", "brier", "calibration")
REL = 1e-9  # float sums: the gathered records are added in one process's order, so they agree to rounding at most


def cls_config(method: str, params: dict[str, Any], transfer: bool = False) -> RunConfig:
    tree: dict[str, Any] = {
        **TINY, "method": {"name": method, "params": params}, "seed": 0,
        "data": {**TINY["data"], "num_workers": 0, "params": {"img_size": 28, "train_size": TRAIN_SIZE, **EVAL}},
        "train": {**TINY["train"], "eval_batch_size": 4},
        "evaluations": ["heldout", "id", "shift", *(["transfer"] if transfer else [])],
    }
    if transfer:  # 20 train and 7 test features: batches of 4 shared 3 + 2 and 1 + 1
        tree["transfer"] = {"targets": [{"name": "fmnist_composites", "params": {"img_size": 28, "train_size": 20, "eval_size": 7}}],
                            "sr_cs": [1.0], "knn_k": 5}
    return RunConfig(**tree)


def seg_config(method: str, params: dict[str, Any]) -> RunConfig:
    tree = {**TINY, "method": {"name": method, "params": params}, "seed": 0, "data": SEG_DATA, "seg": SEG,
            "train": {"epochs": 1, "batch_size": 8, "eval_batch_size": 4}, "evaluations": ["heldout", "id", "shift"]}
    return RunConfig(**tree)


# ---------------------------------------------------------------- what each rank runs


def _entry(rank: int, scenarios: list[str], tmp: str) -> None:
    torch.set_num_threads(1)  # two processes on a small machine
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120))
    try:
        out = {name: SCENARIOS[name](rank, Path(tmp) / name) for name in scenarios}
        with open(Path(tmp) / f"rank{rank}.pkl", "wb") as fh:
            pickle.dump(out, fh)
    finally:
        dist.destroy_process_group()


def _helpers(rank: int, tmp: Path) -> dict[str, Any]:
    """evaluate_split on known logits for split sizes that leave a rank short or empty, and the
    row gather; the single-process answers come from the same calls without a context."""
    from bench.evaluate import evaluate_split

    ctx = current()
    out: dict[str, Any] = {"ctx": (ctx.rank, ctx.world)}
    for n in (1, 4, 5, 7, 9):
        g = torch.Generator().manual_seed(n)
        logits, labels = torch.randn(n, 6, generator=g) * 3, torch.randint(0, 6, (n,), generator=g).numpy()
        for space in (None, (0, 2, 3)):
            index = eval_batches(n, 4, ctx)
            sharded = evaluate_split(lambda x: x, [logits[i] for i in index], labels, torch.device("cpu"), space, index=index, ctx=ctx)
            single = evaluate_split(lambda x: x, [logits[s : s + 4] for s in range(0, n, 4)], labels, torch.device("cpu"), space)
            out[(n, space)] = {"batches": [len(i) for i in index], "sharded": sharded, "single": single}
    rows = torch.arange(7 * 3, dtype=torch.float32).reshape(7, 3)
    mine = torch.tensor([0, 1, 2, 5, 6]) if rank == 0 else torch.tensor([4, 3])  # uneven, out of order
    out["gather_rows"] = ctx.gather_rows(rows[mine], mine, 7)
    empty = torch.zeros(0, dtype=torch.long)
    out["gather_rows_one_holder"] = ctx.gather_rows(rows[:2] if rank == 1 else rows[:0], torch.arange(2) if rank == 1 else empty, 2)
    return out


def _batchnorm(rank: int, tmp: Path) -> dict[str, Any]:
    """SyncBatchNorm2d in training on uneven shards (3 and 1 images) of one global batch."""
    from bench.models.heads import sync_batchnorm

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(4, 3, 5, 5, generator=g) * 2 + 1, torch.randn(4, 3, 5, 5, generator=g)
    part = slice(0, 3) if rank == 0 else slice(3, 4)
    bn = sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))[0]
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    xr = x[part].clone().requires_grad_(True)
    y = bn(xr)
    (y * w[part]).sum().backward()
    bn.eval()
    return {"type": type(bn).__name__, "y": y.detach(), "x_grad": xr.grad, "weight_grad": bn.weight.grad, "bias_grad": bn.bias.grad,
            "running_mean": bn.running_mean.clone(), "running_var": bn.running_var.clone(), "eval_y": bn(xr).detach()}


def _classification(rank: int, tmp: Path) -> dict[str, Any]:
    """Whole runs (train, every protocol, files) for both methods; rank 0 then scores the saved
    weights again as one process would."""
    from bench.protocols import EVALUATIONS
    from bench.built import BuiltRun
    from bench.evaluate import score_split
    from bench.job import run_job
    from bench.store import RunDir
    from bench.transfer import evaluate_transfer

    out: dict[str, Any] = {}
    for name, (method, params) in METHODS.items():
        cfg = cls_config(method, params, transfer=name == "sft")
        run_dir = RunDir(tmp / name)
        returned = run_job(cfg, run_dir)
        out[name] = {"returned": returned, "run_dir": str(run_dir.path)}
        if rank == 0:
            ref = BuiltRun(cfg, DistContext())
            ref.model.load_state_dict(torch.load(run_dir.checkpoint, weights_only=False)["model"], strict=False)
            ref.model.eval()
            splits = [s for p in cfg.evaluations for s in EVALUATIONS.get(p).splits(cfg)]
            out[name]["reference"] = {split: score_split(ref, split) for split in splits}
            if "transfer" in cfg.evaluations:
                out[name]["reference_transfer"] = evaluate_transfer(ref, RunDir(tmp / f"{name}-single"))
    return out


def _segmentation(rank: int, tmp: Path) -> dict[str, Any]:
    """Both methods trained with SyncBatchNorm2d; every split scored sharded, then by this
    process alone with the same weights; and a one-image split (rank 1 scores nothing)."""
    from bench.data.base import take
    from bench.protocols import EVALUATIONS
    from bench.built import BuiltRun
    from bench.evaluate import score_split
    from bench.segment import evaluate_segmentation
    from bench.store import RunDir
    from bench.train import train

    out: dict[str, Any] = {}
    for name, (method, params) in (("sft", ("sft", {})), ("grpo_mu2", ("grpo_rm", {"mu": 2}))):
        cfg = seg_config(method, params)
        job = BuiltRun(cfg, current())
        run_dir = RunDir(tmp / name)
        trained = train(job, run_dir)
        job.model.eval()
        res: dict[str, Any] = {"steps": trained.steps, "train_size": trained.train_size, "bn": type(job.model.head.bn).__name__,
                               "running_var": job.model.head.bn.running_var.clone(), "rows": run_dir.metrics.read_text() if rank == 0 else ""}
        splits = [s for p in cfg.evaluations for s in EVALUATIONS.get(p).splits(cfg)]
        res["sharded"] = {split: score_split(job, split) for split in splits}
        ctx, job.ctx = job.ctx, DistContext()  # the same weights, one process
        res["single"] = {split: score_split(job, split) for split in splits}
        job.ctx = ctx
        data, s = take(cfg.data.load("test"), np.array([1])), cfg.seg
        args = (data, job.entry.num_classes, job.entry.ignore_index, s.test_scale, s.crop, s.slide_stride, job.device)
        res["one_image"] = (evaluate_segmentation(job.logits, *args, ctx=ctx), evaluate_segmentation(job.logits, *args))
        out[name] = res
    return out


SCENARIOS: dict[str, Callable[[int, Path], dict[str, Any]]] = {
    "helpers": _helpers, "batchnorm": _batchnorm, "classification": _classification, "segmentation": _segmentation,
}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict[str, Any]]:
    """Every scenario's output on rank 0 and rank 1 (one start of the two processes)."""
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_entry, args=(list(SCENARIOS), str(tmp)), nprocs=WORLD, join=True)
    return [pickle.loads((tmp / f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]


# ---------------------------------------------------------------- checks


def same_scores(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Counts exactly, float sums to ``REL``; per-image arrays element for element."""
    n = b["n"]
    assert a["n"] == n and round(a["top1"] * n) == round(b["top1"] * n) and round(a["top5"] * n) == round(b["top5"] * n)
    assert a["calibration"]["count"] == b["calibration"]["count"]
    for key in ("top1", "top5", "nll", "ece", "brier"):
        assert math.isclose(a[key], b[key], rel_tol=REL, abs_tol=1e-12), (key, a[key], b[key])
    for key in ("confidence_sum", "correct_sum"):
        assert np.allclose(a["calibration"][key], b["calibration"][key], rtol=REL, atol=1e-12)


def test_eval_batches_are_one_process_batches_dealt_whole() -> None:
    assert [i.tolist() for i in eval_batches(9, 4, DistContext(0, 2))] == [[0, 1, 2, 3], [8]]
    assert [i.tolist() for i in eval_batches(9, 4, DistContext(1, 2))] == [[4, 5, 6, 7]]
    assert eval_batches(3, 4, DistContext(1, 2)) == []  # fewer batches than ranks: nothing, never an empty batch
    for world in (1, 2, 3, 8):
        for n in (0, 1, 7, 33):
            shares = [eval_batches(n, 4, DistContext(r, world)) for r in range(world)]
            assert sorted(int(i) for share in shares for b in share for i in b) == list(range(n))
            assert all(len(b) for share in shares for b in share)


def test_train_shards_cut_the_last_global_batch_to_a_multiple_of_the_world() -> None:
    order = torch.randperm(37, generator=torch.Generator().manual_seed(0))
    assert [b.tolist() for b in DistContext().train_shards(order, 8)] == [order[s : s + 8].tolist() for s in range(0, 37, 8)]  # one process: unchanged
    for world, n, bs in ((2, 33, 16), (2, 35, 16), (8, 66, 64), (4, 37, 8), (8, 64, 64)):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
        shares = [DistContext(r, world).train_shards(order, bs) for r in range(world)]
        steps = steps_per_epoch(n, bs, world)
        assert all(len(s) == steps for s in shares)
        for step in range(steps):
            sizes = {len(s[step]) for s in shares}
            assert len(sizes) == 1 and sizes != {0}  # equal shards, none empty
            batch = order[step * bs : (step + 1) * bs]
            kept = torch.cat([s[step] for s in shares]).sort().values
            assert torch.equal(kept, batch[: len(batch) - len(batch) % world].sort().values)  # the cut: the batch's tail
    assert steps_per_epoch(66, 64, 8) == 1 and steps_per_epoch(33, 16, 2) == 2 and steps_per_epoch(35, 16, 2) == 3 and steps_per_epoch(33, 16, 1) == 3


def test_a_batch_size_the_world_does_not_divide_fails_before_training() -> None:
    from bench.built import BuiltRun

    check_batch_size(16, DistContext(1, 8))
    with pytest.raises(ValueError, match="not a multiple of the 3 processes"):
        BuiltRun(cls_config("sft", {}), DistContext(0, 3))


def test_sharded_evaluate_split_equals_one_process_for_uneven_and_empty_shards(two_ranks) -> None:
    for rank, out in enumerate(two_ranks):
        h = out["helpers"]
        assert h["ctx"] == (rank, WORLD)
        for n in (1, 4, 5, 7, 9):
            for space in (None, (0, 2, 3)):
                case = h[(n, space)]
                if n <= 4 and rank == 1:
                    assert case["batches"] == []  # a rank without a batch still returns the split's numbers
                assert case["sharded"]["per_image"]["correct"].tolist() == case["single"]["per_image"]["correct"].tolist()
                assert np.array_equal(case["sharded"]["per_image"]["p_true"], case["single"]["per_image"]["p_true"])
                same_scores(case["sharded"], case["single"])
    assert [two_ranks[r]["helpers"][(9, None)]["batches"] for r in range(2)] == [[4, 1], [4]]  # uneven shares


def test_gather_rows_restores_the_original_order_on_every_rank(two_ranks) -> None:
    rows = torch.arange(21, dtype=torch.float32).reshape(7, 3)
    for out in two_ranks:
        assert torch.equal(out["helpers"]["gather_rows"], rows)
        assert torch.equal(out["helpers"]["gather_rows_one_holder"], rows[:2])


def test_sync_batchnorm_trains_with_the_global_batch_statistics(two_ranks) -> None:
    """Forward, input gradients, summed parameter gradients and running statistics equal
    BatchNorm2d on the whole batch in one process (shards of 3 and 1 images)."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(4, 3, 5, 5, generator=g) * 2 + 1, torch.randn(4, 3, 5, 5, generator=g)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    xr = x.clone().requires_grad_(True)
    y = bn(xr)
    (y * w).sum().backward()
    a, b = (out["batchnorm"] for out in two_ranks)
    assert a["type"] == b["type"] == "SyncBatchNorm2d"
    torch.testing.assert_close(torch.cat([a["y"], b["y"]]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([a["x_grad"], b["x_grad"]]), xr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a["weight_grad"] + b["weight_grad"], bn.weight.grad, rtol=1e-5, atol=1e-5)  # DDP then averages
    torch.testing.assert_close(a["bias_grad"] + b["bias_grad"], bn.bias.grad, rtol=1e-5, atol=1e-5)
    for r in (a, b):
        torch.testing.assert_close(r["running_mean"], bn.running_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(r["running_var"], bn.running_var, rtol=1e-6, atol=1e-6)
    bn.eval()
    torch.testing.assert_close(torch.cat([a["eval_y"], b["eval_y"]]), bn(x).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(METHODS))
def test_two_process_run_scores_like_one_process_and_skips_the_last_lone_image(two_ranks, name) -> None:
    """SFT and GRPO-RM (μ = 1, 2), 2 processes: result.json and predictions.npz (rank 0) hold the
    numbers one process computes from the saved weights, for every split (4 and 9 images at eval
    batch 4: a rank without a batch, and shares of 5 and 4) and transfer; training ran
    2 epochs × 2 steps × μ, its last global batch of 1 image skipped (no NaN)."""
    main, other = two_ranks[0]["classification"][name], two_ranks[1]["classification"][name]
    assert other["returned"] == {}  # ranks > 0 leave the result to rank 0
    result = main["returned"]
    run_dir = Path(main["run_dir"])
    assert json.loads((run_dir / "result.json").read_text())["metrics"] == json.loads(json.dumps(result["metrics"]))
    assert result["protocol"]["world_size"] == 2 and result["protocol"]["train_size"] == 33
    mu = 2 if name == "grpo_mu2" else 1
    assert result["protocol"]["steps"] == 2 * steps_per_epoch(33, 16, 2) * mu == 4 * mu  # 33 = 2 × 16 + 1: the lone image is no step
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 4 * mu + 1))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) and math.isfinite(r["p_true"]) for r in rows)
    predictions = np.load(run_dir / "predictions.npz")
    reference = main["reference"]
    assert reference["heldout"]["n"] == 9 and reference["test"]["n"] == 4
    for split, single in reference.items():
        same_scores(result["metrics"][split], single)
        assert predictions[f"{split}::correct"].tolist() == single["per_image"]["correct"].tolist()
        assert np.allclose(predictions[f"{split}::p_true"], single["per_image"]["p_true"], rtol=1e-6, atol=1e-7)
    if name == "sft":
        for key, single in main["reference_transfer"].items():
            for field in ("top1", "n", "n_train"):
                assert result["metrics"][key][field] == single[field], (key, field)
        assert result["metrics"]["transfer/fmnist_composites/knn"]["n_train"] == 20


@pytest.mark.parametrize("name", ["sft", "grpo_mu2"])
def test_two_process_segmentation_scores_like_one_process(two_ranks, name) -> None:
    """mIoU, aAcc, mAcc and per-class IoU from all-reduced pixel counts equal one process's, for
    shares of 2 and 1 images, and for a one-image split that rank 1 does not score at all; the
    head's BatchNorm is synchronised (equal running statistics on both ranks)."""
    a, b = two_ranks[0]["segmentation"][name], two_ranks[1]["segmentation"][name]
    assert a["bn"] == b["bn"] == "SyncBatchNorm2d"
    assert torch.equal(a["running_var"], b["running_var"]) and not torch.equal(a["running_var"], torch.ones_like(a["running_var"]))
    mu = 2 if name == "grpo_mu2" else 1
    assert a["steps"] == steps_per_epoch(a["train_size"], 8, 2) * mu
    assert all(math.isfinite(json.loads(line)["loss"]) for line in a["rows"].splitlines())
    for res in (a, b):
        assert "heldout" in res["single"] and "test" in res["single"] and set(res["sharded"]) == set(res["single"])
        for split, single in res["single"].items():
            assert _nan_equal(res["sharded"][split], single), (split, res["sharded"][split], single)
        sharded, single = res["one_image"]
        assert single["n"] == 1 and _nan_equal(sharded, single)


def _nan_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal, NaN (a class no image has) included."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
