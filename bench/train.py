"""The training loop of one run: seeded data order, the configured optimiser and LR schedule
(AdamW + warmup/cosine by default: bench.optim), resumable, logged.

Building the model, method and data is :class:`bench.built.BuiltRun`'s job; scoring is the evaluation
protocols'; this module only trains: it resumes from ``last.pt``, appends per-step metrics to
``metrics.jsonl`` and writes a checkpoint at every epoch end and, between batches, every
``train.checkpoint_every_min`` minutes.

A mid-epoch checkpoint resumes to the numbers an uninterrupted run computes: the epoch's order is
a seeded permutation (the batches already done are skipped), augmentation draws from per-sample
generators keyed by (seed, epoch, index), and the checkpoint holds every random state the loop
draws from (torch, CUDA, Python, NumPy and the method's sampling generator, per rank), the
optimiser and the LR schedule. It is written between batches only, after all μ passes of one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from bench.config import RunConfig
from bench.distributed import steps_per_epoch
from bench.features import CacheSpend
from bench.io import atomic_torch_save
from bench.models import SplitViTClassifier  # noqa: F401 (re-exported for callers)
from bench.optim import build_optimizer, param_groups, warmup_cosine  # noqa: F401 (re-exported)
from bench.progress import CACHING_TOKENS, ProgressFn, RunProgress
from bench.seeding import generator
from bench.store import RunDir

if TYPE_CHECKING:
    from bench.built import BuiltRun

LOG_EVERY = 20  # steps between appends to metrics.jsonl (a resume truncates to the checkpoint)
# A file barrier for tests and debugging of pre-emption: while the file this names exists, a run
# pauses after each epoch's checkpoint (status 'held_after_epoch'), so a test can requeue or signal
# it at a known state instead of racing a job that may already have finished.
HOLD_ENV = "BENCH_HOLD_AFTER_EPOCH"
HOLD_POLL_S = 0.1
# The same at step level, for mid-epoch checkpoints: '<step>:<file>' pauses the run after every
# checkpoint at or past optimiser step <step> while <file> exists (status 'held_after_step').
# With train.checkpoint_every_min below one batch's time (say 1e-6) every batch ends in a
# checkpoint, so a test can hold a run right after the mid-epoch checkpoint of a known step.
STEP_HOLD_ENV = "BENCH_HOLD_AFTER_STEP"


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


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (``getrusage``'s ``ru_maxrss``: KB on Linux,
    bytes on macOS). A high-water mark of the whole process since it started, DataLoader workers
    not included: where several runs share one process (the debug executor) it is the largest of
    this run and every run before it, not this run's own."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def peak_cuda_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated by tensors on ``device`` since its peak was last reset (bench.job
    resets it when a run starts), in MB; None off CUDA. The caching allocator reserves more than
    this; it is what the run's tensors needed."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


@dataclass(frozen=True)
class TrainCost:
    """Training's share of a run's cost, summed over the attempts of a resumed run as far as their
    checkpoints kept it (as ``wall_time_s`` is): work after an attempt's last checkpoint is lost
    and not counted.

    ``train_s`` is the training phase (from entering :func:`train` to its return: data order,
    steps, logs, checkpoints) without the shared frozen-prefix builds, which are ``cache``: a
    one-off another run in the process reuses, so charging it to whichever run came first would
    make that run look slower. ``step_s`` holds one duration per optimiser step, from the end of
    the previous step's bookkeeping to the end of ``optimizer.step()`` (batch loading, rollout,
    forward, backward, update); the first step of each attempt is left out and the first
    attempt's kept as ``first_step_s``, since it includes warm-up (lazy initialisation, loader
    workers starting). Peaks are the largest seen by any checkpointed attempt."""

    train_s: float = 0.0
    cache: CacheSpend = field(default_factory=CacheSpend)
    step_s: tuple[float, ...] = ()
    first_step_s: float | None = None
    peak_rss_mb: float = 0.0
    peak_cuda_mb: float | None = None

    def state(self) -> dict[str, Any]:
        """For the checkpoint (step times as one float32 tensor: a long run has ~10⁵ steps)."""
        return {"train_s": self.train_s, "cache_build_s": self.cache.build_s, "cache_built": self.cache.built, "cache_reused": self.cache.reused,
                "step_s": torch.tensor(self.step_s, dtype=torch.float32), "first_step_s": self.first_step_s,
                "peak_rss_mb": self.peak_rss_mb, "peak_cuda_mb": self.peak_cuda_mb}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> "TrainCost":
        """What a checkpoint recorded; nothing for a checkpoint from before costs were kept."""
        if not state:
            return cls()
        steps = state.get("step_s")
        return cls(float(state.get("train_s", 0.0)), CacheSpend(float(state.get("cache_build_s", 0.0)), int(state.get("cache_built", 0)),
                                                                int(state.get("cache_reused", 0))),
                   tuple(float(x) for x in (steps.tolist() if isinstance(steps, Tensor) else steps or ())), state.get("first_step_s"),
                   float(state.get("peak_rss_mb", 0.0)), state.get("peak_cuda_mb"))


class StepClock:
    """Seconds per optimiser step, measured in the loop (see :class:`TrainCost`). ``lap()`` ends
    a step; ``restart()`` after bookkeeping (logs, checkpoints) so it is no step's time. On CUDA
    the loop synchronises every step (the finiteness check reads the gradient norm), so a step's
    GPU work lands in it or, at worst, in the next one."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.times: list[float] = []
        self.tick = time.perf_counter()

    def restart(self) -> None:
        self.tick = time.perf_counter()

    def lap(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now - self.tick
        else:
            self.times.append(now - self.tick)
        self.tick = now


def step_summary(cost: TrainCost) -> dict[str, Any]:
    """Median and mean seconds per optimiser step (first steps left out) and how many were timed."""
    steps = cost.step_s
    return {"step_median_s": round(statistics.median(steps), 6) if steps else None,
            "step_mean_s": round(statistics.fmean(steps), 6) if steps else None, "timed_steps": len(steps),
            "first_step_s": None if cost.first_step_s is None else round(cost.first_step_s, 6)}


@dataclass(frozen=True)
class Trained:
    """What training leaves for the result: optimiser steps, training-set size, the wall time
    spent in earlier attempts of a resumed run, and training's cost over all attempts."""

    steps: int
    train_size: int
    prior_wall_s: float
    cost: TrainCost = field(default_factory=TrainCost)


class CheckpointTimer:
    """When a mid-epoch checkpoint is due: ``minutes`` of training since the last checkpoint (or
    since this attempt's loop began). Pre-emption then costs at most that much recomputation
    instead of up to an epoch (a COCO-stuff epoch is ~15k steps). 0 disables it: epoch ends only.
    A monotonic clock, so a wall-clock jump (NTP) neither triggers nor delays one; ``clock`` is
    injectable so the rule is tested without waiting."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = 60.0 * minutes
        self.clock = clock
        self.last = clock()

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def due(self) -> bool:
        return self.enabled and self.clock() - self.last >= self.interval_s

    def reset(self) -> None:
        self.last = self.clock()


def train(job: "BuiltRun", run_dir: RunDir, progress: ProgressFn | None = None) -> Trained:
    """Train ``job``'s model on its training split; resume from ``run_dir``'s checkpoint if any.

    A weights-only checkpoint marked ``complete`` (written right after the last epoch) means
    training is finished: its weights are loaded and no step is taken again, so a run killed
    between its final weights and result.json is only evaluated again.
    """
    cfg, ctx = job.cfg, job.ctx
    started = time.time()
    model, method, device = job.model, job.method, job.device
    spent_before = dataclasses.replace(job.cache_spend)  # a copy: builds of the training split are shared, not training
    state = _load_checkpoint(run_dir, ctx, device)
    prior_cost = TrainCost.from_state(state.get("cost") if state is not None else None)
    clock = StepClock()

    def cost_now() -> TrainCost:
        """Training's cost so far: earlier attempts' (from the checkpoint) plus this one's."""
        mine = job.cache_spend.minus(spent_before)
        cuda = peak_cuda_mb(device)
        return TrainCost(prior_cost.train_s + time.time() - started - mine.build_s, prior_cost.cache.add(mine), prior_cost.step_s + tuple(clock.times),
                         prior_cost.first_step_s if prior_cost.first_step_s is not None else clock.first, max(prior_cost.peak_rss_mb, peak_rss_mb()),
                         cuda if prior_cost.peak_cuda_mb is None else max(prior_cost.peak_cuda_mb, cuda or 0.0))

    if state is not None and "optimizer" not in state:  # training finished: evaluate again only
        model.load_state_dict(state["model"], strict=False)
        if ctx.is_main:
            run_dir.update_status(resumed_from={"complete": True, "step": state["step"]})
        if progress:
            progress(RunProgress("resume", state["step"], state["step"], detail=f"the final weights (step {state['step']}): training is done, evaluating"))
        return Trained(state["step"], int(state.get("train_size", len(job.train_split))), float(state.get("wall_time_s", 0.0)), prior_cost)
    if job.use_prefix_cache:  # embedding the training split can take a while: say so (status.json, the live view)
        if ctx.is_main:
            run_dir.update_status(phase="cache")
        if progress:
            progress(RunProgress("prepare", detail=CACHING_TOKENS))
    train = job.inputs(cfg.data.resolved_train_split)
    n = len(train)
    batches_per_epoch = steps_per_epoch(n, cfg.train.batch_size, ctx.world)  # the last-batch rule (bench.distributed)
    total_steps = cfg.train.epochs * batches_per_epoch * method.passes
    if ctx.is_main:
        run_dir.update_status(total_steps=total_steps, phase="train")

    optimizer, schedule = build_optimizer(model, cfg, total_steps)  # train.optimizer, train.schedule (bench.optim)
    trainable = [p for p in model.parameters() if p.requires_grad]
    step_hold = parse_step_hold(os.environ.get(STEP_HOLD_ENV))  # a typo fails now, not after hours
    start_epoch, start_batch, step, prior_wall = 0, 0, 0, 0.0
    rng: dict[str, Any] | None = None
    if state is not None:
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, start_batch, step = state["epoch"], state.get("batch", 0), state["step"]
        prior_wall, rng = state.get("wall_time_s", 0.0), own_rng_state(state.get("rng"), ctx.rank)
        if ctx.is_main:
            mid_epoch = {"batch": start_batch} if start_batch else {}  # an epoch end reads as it always has
            run_dir.update_status(resumed_from={"epoch": start_epoch, **mid_epoch, "step": step})
        if progress:
            where = position(start_epoch, start_batch, batches_per_epoch)
            progress(RunProgress("resume", step, total_steps, detail=f"{where}, step {step} of {total_steps}"))
    if ctx.is_main:
        run_dir.truncate_metrics(step)
    if rng is not None:
        restore_rng(rng, device)
    timer = CheckpointTimer(cfg.train.checkpoint_every_min)
    clock.restart()  # set-up (the optimiser, the training split's tokens) is no step's time

    pending: list[dict[str, Any]] = []
    # train.max_steps (smoke tests): stop after that many optimiser steps; the schedule above keeps
    # the full run's length, so a limited run takes exactly the full run's first max_steps steps
    max_steps = cfg.train.max_steps
    stopped = False
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        method.generator = generator(cfg.seed, "groups", epoch)
        order = torch.randperm(n, generator=generator(cfg.seed, "order", epoch))
        batches = ctx.train_shards(order, cfg.train.batch_size)  # equal shards; the last-batch rule: bench.distributed
        skip = start_batch if epoch == start_epoch else 0  # the batches a mid-epoch checkpoint covers
        if skip and rng is not None and rng.get("groups") is not None:
            method.generator.set_state(rng["groups"].cpu())  # where the epoch's sampling stood
        for b, (x, y) in enumerate(job.train_batches(train, batches[skip:], epoch), start=skip):
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
                clock.lap()
                stats = ctx.mean_stats(out.stats)
                row = {"step": step, "epoch": epoch, "pass": p, "time": round(time.time(), 3), "lr": schedule.get_last_lr()[0],
                       "grad_norm": float(grad_norm), **stats}
                pending.append(row)
                if progress:
                    progress(RunProgress("train", step, total_steps, stats={"lr": row["lr"], "grad_norm": row["grad_norm"], **stats},
                                         epoch=epoch + 1, epochs=cfg.train.epochs))
                if max_steps is not None and step >= max_steps:
                    stopped = True  # the batch's remaining μ passes are not taken either
                    break
            if len(pending) >= LOG_EVERY and ctx.is_main:
                run_dir.append_metrics(pending)
                pending = []
            if stopped:
                break
            # between batches, after all μ passes: the only place a checkpoint captures the loop's whole state
            if timer.enabled and b + 1 < len(batches) and main_decides(ctx, device, ctx.is_main and timer.due()):
                check_parameters(step, model)
                states = gather_rng_states(ctx, device, method)
                if ctx.is_main:
                    run_dir.append_metrics(pending)
                    pending = []
                    _save_checkpoint(run_dir, model, optimizer, schedule, epoch, step, prior_wall + time.time() - started, n, False, batch=b + 1, rng=states,
                                     cost=cost_now())
                    _checkpointed(run_dir, progress, step, total_steps, position(epoch, b + 1, len(batches)), step_hold)
                timer.reset()
            clock.restart()  # logs and checkpoints are bookkeeping, not the next step's time
        check_parameters(step, model)
        if cfg.train.eval_every_epoch:  # every rank scores its share; logged before the epoch's checkpoint covers it
            pending.append(heldout_row(job, step, epoch))
        final = stopped or epoch + 1 == cfg.train.epochs
        states = None if final else gather_rng_states(ctx, device, method)
        timer.reset()
        if not ctx.is_main:
            pending = []
            if stopped:
                break
            continue
        run_dir.append_metrics(pending)
        pending = []
        _save_checkpoint(run_dir, model, optimizer, schedule, epoch + 1, step, prior_wall + time.time() - started, n, final, rng=states, cost=cost_now())
        _checkpointed(run_dir, progress, step, total_steps, position(epoch + 1, 0, len(batches)) + (" (final weights)" if final else ""), None)
        hold_after_epoch(run_dir, epoch + 1)
        hold_after_step(run_dir, step, step_hold)
        clock.restart()  # an epoch's checkpoint (and a test's hold) is no step's time
        if stopped:
            break
    if ctx.is_main and start_epoch >= cfg.train.epochs:  # resumed from the last epoch's full checkpoint
        _save_checkpoint(run_dir, model, optimizer, schedule, start_epoch, step, prior_wall + time.time() - started, n, True, cost=cost_now())

    return Trained(step, n, prior_wall, cost_now())


def heldout_row(job: "BuiltRun", step: int, epoch: int) -> dict[str, Any]:
    """``train.eval_every_epoch``: the held-out split scored after an epoch, as one metrics.jsonl
    row (``step``: the epoch's last step; ``epoch``: the 0-based epoch, as its training rows).
    A record for curves only: model selection reads result.json's final held-out score alone.
    Every random state is put back afterwards (a loader draws a seed from torch's), so training
    computes the same numbers with or without it."""
    from bench.data.holdout import HELDOUT
    from bench.evaluate import score_split

    saved = rng_state(job.device, job.method)
    was_training = job.model.training
    job.model.eval()
    try:
        with torch.no_grad():
            scores = score_split(job, HELDOUT)
    finally:
        job.model.train(was_training)
        restore_rng(saved, job.device)
    return {"step": step, "epoch": epoch, "time": round(time.time(), 3), "heldout_top1": float(scores["top1"]), "heldout_nll": float(scores["nll"])}


def _load_checkpoint(run_dir: RunDir, ctx: Any, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint to resume from. Rank 0 picks it (verifying digests, moving damaged ones
    aside: RunDir.load_checkpoint); with several ranks, the others load the file rank 0 chose, so
    every rank resumes from the same step."""
    if not ctx.active:
        return run_dir.load_checkpoint(device)[0]
    state, path = run_dir.load_checkpoint(device) if ctx.is_main else (None, None)
    chosen = ctx.from_main(str(path) if path else None)
    if ctx.is_main or chosen is None:
        return state
    return torch.load(chosen, map_location=device, weights_only=False)


def _save_checkpoint(run_dir: RunDir, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, epoch: int, step: int,
                     wall_s: float, train_size: int, final: bool, batch: int = 0, rng: list[dict[str, Any]] | None = None,
                     cost: TrainCost | None = None) -> None:
    """Write last.pt (with its digest; the one before kept as prev.pt). After the last epoch it is
    the weights only, marked complete: the mark that training is over (see train()). Otherwise
    ``epoch`` whole epochs and ``batch`` batches of the next are done (0 at an epoch end), and
    ``rng`` holds each rank's random states (:func:`rng_state`), so a resume draws what this
    attempt would have drawn next. ``cost`` (:class:`TrainCost`) lets a resumed run's cost count
    the attempts before it, as ``wall_s`` does for its wall time."""
    run_dir.sync_metrics()  # the log of every step the checkpoint covers is on disk before it
    run_dir.keep_previous_checkpoint()
    if final:
        state = {"model": trainable_state(model), "step": step, "epoch": epoch, "complete": True, "train_size": train_size, "wall_time_s": wall_s}
    else:
        state = {"model": trainable_state(model), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                 "epoch": epoch, "batch": batch, "step": step, "wall_time_s": wall_s, "rng": rng}
    if cost is not None:
        state["cost"] = cost.state()
    atomic_torch_save(state, run_dir.checkpoint)
    run_dir.update_status(checkpoint={"epoch": epoch, "batch": batch, "step": step, "complete": final})  # what a rerun resumes from


def _checkpointed(run_dir: RunDir, progress: ProgressFn | None, step: int, total_steps: int, where: str, step_hold: tuple[int, Path] | None) -> None:
    """After a checkpoint: tell the run's listeners (the run log says it; TensorBoard flushes, so a
    kill now loses no scalar a resume will not log again), then the test barrier."""
    if progress:
        progress(RunProgress("checkpoint", step, total_steps, detail=f"{where}, step {step} of {total_steps}"))
    hold_after_step(run_dir, step, step_hold)


def position(epoch: int, batch: int, batches_per_epoch: int) -> str:
    """'epoch 2' (two whole epochs done) or 'epoch 1, batch 4 of 9' (one epoch and 4 batches of the next)."""
    return f"epoch {epoch}" if batch == 0 else f"epoch {epoch}, batch {batch} of {batches_per_epoch}"


def rng_state(device: torch.device, method: Any) -> dict[str, Any]:
    """Every random state the training loop may draw from on this rank: torch's (CPU, and the
    training GPU's), Python's, NumPy's, and the method's sampling generator (GRPO-RM's sampled
    groups; re-seeded per epoch, so only a mid-epoch checkpoint needs it)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if getattr(method, "generator", None) is not None:
        state["groups"] = method.generator.get_state()
    return state


def gather_rng_states(ctx: Any, device: torch.device, method: Any) -> list[dict[str, Any]]:
    """Each rank's :func:`rng_state`, in rank order (a collective: every rank calls it). Ranks'
    states differ (a rank samples groups for its own shard), and rank 0 alone writes the file."""
    mine = rng_state(device, method)
    if not ctx.active:
        return [mine]
    import torch.distributed as dist

    states: list[Any] = [None] * ctx.world
    dist.all_gather_object(states, mine)
    return states


def own_rng_state(saved: Any, rank: int) -> dict[str, Any] | None:
    """This rank's states from a checkpoint's list (None: a checkpoint from before they were kept).
    Resumed with fewer ranks than it was written with, a rank takes rank 0's; identical numbers
    after a resume need the same world size anyway (the shards differ otherwise)."""
    if not isinstance(saved, list) or not saved:
        return None
    return saved[rank] if rank < len(saved) else saved[0]


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Set the global random states a checkpoint recorded (the method's generator is set per
    epoch, in train()). torch.load mapped the state tensors to ``device``: they go back to the CPU."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def main_decides(ctx: Any, device: torch.device, decision: bool) -> bool:
    """Rank 0's decision on every rank: each rank reading its own clock could disagree, and every
    rank takes part in a checkpoint (check_parameters, the RNG gather)."""
    if not ctx.active:
        return decision
    import torch.distributed as dist

    flag = torch.tensor([int(decision)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def hold_after_epoch(run_dir: RunDir, epoch: int) -> None:
    """Wait while the ``$BENCH_HOLD_AFTER_EPOCH`` file exists (see HOLD_ENV); a no-op without it."""
    hold = os.environ.get(HOLD_ENV)
    if not hold or not Path(hold).exists():
        return
    run_dir.update_status(held_after_epoch=epoch)
    while Path(hold).exists():
        time.sleep(HOLD_POLL_S)
    run_dir.update_status(held_after_epoch=None)


def parse_step_hold(value: str | None) -> tuple[int, Path] | None:
    """``$BENCH_HOLD_AFTER_STEP`` ('<step>:<file>') parsed; None when unset."""
    if not value:
        return None
    at, sep, hold = value.partition(":")
    if not sep or not at.strip().isdigit() or not hold:
        raise ValueError(f"${STEP_HOLD_ENV}={value!r}: expected '<step>:<file>', e.g. '8:/tmp/hold'")
    return int(at), Path(hold)


def hold_after_step(run_dir: RunDir, step: int, hold: tuple[int, Path] | None) -> None:
    """After a checkpoint at optimiser step ``step``: wait while the ``$BENCH_HOLD_AFTER_STEP``
    file exists, if ``step`` is at or past the step it names (see STEP_HOLD_ENV); else a no-op."""
    if hold is None or step < hold[0] or not hold[1].exists():
        return
    run_dir.update_status(held_after_step=step)
    while hold[1].exists():
        time.sleep(HOLD_POLL_S)
    run_dir.update_status(held_after_step=None)


def trainable_state(model: nn.Module) -> dict[str, Tensor]:
    """The fine-tuned part of the state dict: trainable parameters and the buffers of the modules
    that hold them (a BatchNorm's running statistics are trained too: without them a run resumed
    from its final weights would evaluate with fresh statistics). Frozen weights come back from
    the backbone source."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    for prefix, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            names |= {f"{prefix}.{b}" if prefix else b for b, _ in module.named_buffers(recurse=False)}
    return {k: v for k, v in model.state_dict().items() if k in names}
