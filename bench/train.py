"""The training loop of one run: seeded data order, AdamW + warmup/cosine, resumable, logged.

Building the model, method and data is :class:`bench.job.Job`'s job; scoring is the evaluation
protocols'; this module only trains: it resumes from ``last.pt``, appends per-step metrics to
``metrics.jsonl`` and writes a checkpoint at every epoch end.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor, nn

from bench.config import RunConfig
from bench.io import atomic_torch_save
from bench.models import SplitViTClassifier
from bench.progress import ProgressFn, RunProgress
from bench.seeding import generator
from bench.store import RunDir

if TYPE_CHECKING:
    from bench.job import Job

LOG_EVERY = 20  # steps between appends to metrics.jsonl (a resume truncates to the checkpoint)
# A file barrier for tests and debugging of pre-emption: while the file this names exists, a run
# pauses after each epoch's checkpoint (status 'held_after_epoch'), so a test can requeue or signal
# it at a known state instead of racing a job that may already have finished.
HOLD_ENV = "BENCH_HOLD_AFTER_EPOCH"
HOLD_POLL_S = 0.1


class Diverged(RuntimeError):
    """A non-finite loss, gradient or parameter: the run failed, and its numbers are not results."""


def check_finite(step: int, loss: Tensor, grad_norm: Tensor) -> None:
    """Stop before a non-finite update reaches the weights (the optimiser step comes after this).
    The gradient norm is computed over every trainable gradient, so one NaN anywhere shows here."""
    loss_value, norm = float(loss.detach()), float(grad_norm)
    if not (math.isfinite(loss_value) and math.isfinite(norm)):
        raise Diverged(f"diverged at step {step}: loss {loss_value}, gradient norm {norm} (lower train.lr, or check the data)")


def check_parameters(step: int, model: nn.Module) -> None:
    """Parameters can overflow without a non-finite gradient (a huge lr times a finite step)."""
    for name, p in model.named_parameters():
        if p.requires_grad and not torch.isfinite(p).all():
            raise Diverged(f"diverged at step {step}: parameter {name} holds non-finite values (lower train.lr)")


@dataclass(frozen=True)
class Trained:
    """What training leaves for the result: optimiser steps, training-set size, and the wall time
    spent in earlier attempts of a resumed run."""

    steps: int
    train_size: int
    prior_wall_s: float


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def param_groups(model: SplitViTClassifier, cfg: RunConfig) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on 1-d tensors (norms, biases, LayerScale) and tokens."""
    head_lr = cfg.train.head_lr or cfg.train.lr
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(("cls_token", "reg_token", "pos_embed"))
        key = (head_lr if name.startswith("head.") else cfg.train.lr, 0.0 if no_decay else cfg.train.weight_decay)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def train(job: "Job", run_dir: RunDir, progress: ProgressFn | None = None) -> Trained:
    """Train ``job``'s model on its training split; resume from ``run_dir``'s checkpoint if any.

    A weights-only checkpoint marked ``complete`` (written right after the last epoch) means
    training is finished: its weights are loaded and no step is taken again, so a run killed
    between its final weights and result.json is only evaluated again.
    """
    cfg, ctx = job.cfg, job.ctx
    started = time.time()
    model, method, device = job.model, job.method, job.device
    state = _load_checkpoint(run_dir, ctx, device)
    if state is not None and "optimizer" not in state:  # training finished: evaluate again only
        model.load_state_dict(state["model"], strict=False)
        if ctx.is_main:
            run_dir.update_status(resumed_from={"complete": True, "step": state["step"]})
        if progress:
            progress(RunProgress("resume", state["step"], state["step"], detail=f"the final weights (step {state['step']}): training is done, evaluating"))
        return Trained(state["step"], int(state.get("train_size", len(job.train_split))), float(state.get("wall_time_s", 0.0)))
    train = job.inputs(cfg.data.resolved_train_split)
    n = len(train)
    batches_per_epoch = math.ceil(n / cfg.train.batch_size)
    total_steps = cfg.train.epochs * batches_per_epoch * method.passes
    if ctx.is_main:
        run_dir.update_status(total_steps=total_steps, phase="train")

    optimizer = torch.optim.AdamW(param_groups(model, cfg))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, cfg.train.warmup_fraction))
    trainable = [p for p in model.parameters() if p.requires_grad]
    start_epoch, step, prior_wall = 0, 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, step, prior_wall = state["epoch"], state["step"], state.get("wall_time_s", 0.0)
        if ctx.is_main:
            run_dir.update_status(resumed_from={"epoch": start_epoch, "step": step})
        if progress:
            progress(RunProgress("resume", step, total_steps, detail=f"epoch {start_epoch}, step {step} of {total_steps}"))
    if ctx.is_main:
        run_dir.truncate_metrics(step)

    pending: list[dict[str, Any]] = []
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        method.generator = generator(cfg.seed, "groups", epoch)
        order = torch.randperm(n, generator=generator(cfg.seed, "order", epoch))
        batches = [ctx.shard(order[b * cfg.train.batch_size : (b + 1) * cfg.train.batch_size]) for b in range(batches_per_epoch)]
        for x, y in job.train_batches(train, batches, epoch):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            ref_logits = None
            if job.reference is not None:
                with torch.no_grad():
                    ref_logits = job.logits(x, job.reference)
            logits = job.logits(x, job.train_model)
            rollout = method.rollout(logits, y, ref_logits)
            for p in range(method.passes):
                if p > 0:
                    logits = job.logits(x, job.train_model)
                out = method.loss(logits, y, rollout)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(trainable, cfg.train.grad_clip or float("inf"))
                check_finite(step + 1, out.loss, grad_norm)
                optimizer.step()
                schedule.step()
                step += 1
                stats = ctx.mean_stats(out.stats)
                row = {"step": step, "epoch": epoch, "pass": p, "time": round(time.time(), 3), "lr": schedule.get_last_lr()[0],
                       "grad_norm": float(grad_norm), **stats}
                pending.append(row)
                if progress:
                    progress(RunProgress("train", step, total_steps, stats=stats))
            if len(pending) >= LOG_EVERY and ctx.is_main:
                run_dir.append_metrics(pending)
                pending = []
        check_parameters(step, model)
        if not ctx.is_main:
            pending = []
            continue
        run_dir.append_metrics(pending)
        pending = []
        final = epoch + 1 == cfg.train.epochs
        _save_checkpoint(run_dir, model, optimizer, schedule, epoch + 1, step, prior_wall + time.time() - started, n, final)
        hold_after_epoch(run_dir, epoch + 1)
    if ctx.is_main and start_epoch >= cfg.train.epochs:  # resumed from the last epoch's full checkpoint
        _save_checkpoint(run_dir, model, optimizer, schedule, start_epoch, step, prior_wall + time.time() - started, n, True)

    return Trained(step, n, prior_wall)


def _load_checkpoint(run_dir: RunDir, ctx: Any, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint to resume from. Rank 0 picks it (verifying digests, moving damaged ones
    aside: RunDir.load_checkpoint); with several ranks, the others load the file rank 0 chose, so
    every rank resumes from the same step."""
    if not ctx.active:
        return run_dir.load_checkpoint(device)[0]
    import torch.distributed as dist

    state, path = run_dir.load_checkpoint(device) if ctx.is_main else (None, None)
    chosen = [str(path) if path else None]
    dist.broadcast_object_list(chosen, src=0)
    if ctx.is_main or chosen[0] is None:
        return state
    return torch.load(chosen[0], map_location=device, weights_only=False)


def _save_checkpoint(run_dir: RunDir, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, epoch: int, step: int,
                     wall_s: float, train_size: int, final: bool) -> None:
    """Write last.pt (with its digest; the one before kept as prev.pt). After the last epoch it is
    the weights only, marked complete: the mark that training is over (see train())."""
    run_dir.sync_metrics()  # the log of every step the checkpoint covers is on disk before it
    run_dir.keep_previous_checkpoint()
    if final:
        state = {"model": trainable_state(model), "step": step, "epoch": epoch, "complete": True, "train_size": train_size, "wall_time_s": wall_s}
    else:
        state = {"model": trainable_state(model), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                 "epoch": epoch, "step": step, "wall_time_s": wall_s}
    atomic_torch_save(state, run_dir.checkpoint)
    run_dir.update_status(checkpoint={"epoch": epoch, "step": step, "complete": final})  # what a rerun resumes from


def hold_after_epoch(run_dir: RunDir, epoch: int) -> None:
    """Wait while the ``$BENCH_HOLD_AFTER_EPOCH`` file exists (see HOLD_ENV); a no-op without it."""
    hold = os.environ.get(HOLD_ENV)
    if not hold or not Path(hold).exists():
        return
    run_dir.update_status(held_after_epoch=epoch)
    while Path(hold).exists():
        time.sleep(HOLD_POLL_S)
    run_dir.update_status(held_after_epoch=None)


def trainable_state(model: nn.Module) -> dict[str, Tensor]:
    """The fine-tuned part of the state dict (frozen weights come back from the backbone source)."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in names}
