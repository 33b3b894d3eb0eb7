"""One run from config to result: build the job, train it, score its protocols, write result.json.

The stages each have a home of their own — :class:`bench.built.BuiltRun` builds (model, method, data),
:func:`bench.train.train` trains, :mod:`bench.evaluate` protocols score, :class:`RunDir` stores —
and :func:`run_job` calls them in that order and records the run's status around them.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from typing import Any, Callable

import numpy as np
import torch

from bench.built import BuiltRun
from bench.config import RunConfig
from bench import dataid
from bench.data.fingerprint import digest
from bench.distributed import DistContext, current
from bench.evaluate import evaluate_protocol
from bench.protocols import EVALUATIONS
from bench.features import CacheSpend
from bench.io import disk_error, disk_message, with_path
from bench.plugins import activate as activate_plugins, loaded_plugins
from bench.provenance import git_state, host, versions
from bench.store import RunDir, RunHeld, RunLock
from bench import train as train_module
from bench.progress import PREPARING_DATA, ProgressFn, RunLog, RunProgress, TensorBoardScalars, fan_out
from bench.train import Trained, peak_cuda_mb, peak_rss_mb, step_summary, train


def run_job(
    cfg: RunConfig, run_dir: RunDir, suite: str = "", progress: ProgressFn | None = None, stage: dict[str, Any] | None = None,
    keep_checkpoints: bool = False, **status_fields: Any,
) -> dict[str, Any]:
    """Train + evaluate one run into ``run_dir``; resumes from ``last.pt`` if present.

    ``stage`` (model selection: ``{"stage": "tune", "tuned_values": …}`` or the final runs'
    ``{"stage": "final", "selection": …}``) is recorded in result.json. ``status_fields`` (e.g. the
    scheduler's job id) are recorded in ``status.json``.

    A finished run keeps ``last.pt`` (its final weights: re-evaluation and the digest check need
    nothing else) and loses ``prev.pt``, unless ``keep_checkpoints`` (``bench run
    --keep-checkpoints``; recorded nowhere: it changes what is kept, not what a run is).

    The run's lock (:class:`RunLock`) is taken first: when another live process holds it this
    raises :class:`RunHeld` having written nothing, so two launchers never train one run twice.
    It is released however the run ends (done, failed, interrupted).
    """
    activate_plugins(cfg.plugins)  # a job process unpickles names its plugins register: import them first
    ctx = current()
    main = ctx.is_main  # with DDP, rank 0 alone takes the lock and writes the run's files
    lock: RunLock | None = None
    held: dict[str, Any] | None = None
    if main:
        run_dir.refuse_links()  # before the folder is created or anything is written through a link
        run_dir.path.mkdir(parents=True, exist_ok=True)
        try:
            lock = RunLock.acquire(run_dir, status_fields.get("executor_job_id"))
        except RunHeld as exc:
            held = exc.holder
    held = ctx.from_main(held)  # every rank stops, or none does
    if held is not None:
        raise RunHeld(run_dir.path, held)
    try:
        return _run_locked(cfg, run_dir, suite, progress, ctx, stage or {}, lock, status_fields, keep_checkpoints)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(cfg: RunConfig, run_dir: RunDir, suite: str, progress: ProgressFn | None, ctx: DistContext, stage: dict[str, Any],
                lock: RunLock | None, status_fields: dict[str, Any], keep_checkpoints: bool = False) -> dict[str, Any]:
    main = ctx.is_main
    notes = run_dir.prepare(since=lock.info["start"]) if main and lock else []
    if lock and lock.took_over:
        notes.insert(0, f"took over a stale lock ({lock.took_over})")
    # rank 0's own record of the run, whoever launched it: run.log and TensorBoard (bench.progress)
    log = RunLog(run_dir.run_log, train_module.LOG_EVERY, _unit_metrics(run_dir)) if main else None
    if main and run_dir.effective_state() == "done":  # computed on other data than is on disk now: computed again
        found = dataid.check(run_dir.read_result(), cfg)
        if found.state == "stale":
            moved = run_dir.set_aside(dataid.STALE)
            notes.append(f"{found.reason}; moved {', '.join(moved)} aside (.{dataid.STALE}-<time>), the run is computed again")
    # done already: another launcher finished it while this one waited, or only bookkeeping
    # (status.json, metrics.jsonl) was damaged and has just been repaired
    if ctx.from_main(main and run_dir.effective_state() == "done"):
        if not main:
            return {}
        if notes:
            run_dir.set_status("done", resume_note="; ".join(notes))
            log.close_attempt("already done; repaired: " + "; ".join(notes))
        if not keep_checkpoints:  # finished before prev.pt was deleted at the end (or killed in between)
            run_dir.drop_previous_checkpoint()
        return run_dir.read_result()
    board = None
    try:
        if main:
            run_dir.write_config(cfg.canonical())
            run_dir.set_status("running", world_size=ctx.world, **({"resume_note": "; ".join(notes)} if notes else {}), **status_fields)
            log.start_attempt(int(run_dir.read_status().get("attempts", 1)), ctx.world, run_id=cfg.run_id(), job=status_fields.get("executor_job_id"),
                              checkpoint_every_min=cfg.train.checkpoint_every_min)
            for note in notes:
                log.line(f"repaired: {note}")
            board = TensorBoardScalars(run_dir.tensorboard_dir, log.line, log.metrics_of)
            progress = fan_out(progress, log, board)
        result = _train_and_evaluate(cfg, run_dir, suite, progress, ctx, stage)
    except Exception as exc:
        if main:
            error = failure_line(exc, run_dir.path)
            log.close_attempt(f"failed: {error}")
            _record(run_dir, "failed", error=error, traceback=traceback.format_exc())
        raise
    except BaseException as exc:  # killed, timed out, pre-empted: resumable from last.pt, not a failure
        if main:
            log.close_attempt(f"interrupted: {exc.__class__.__name__}: {exc}".rstrip(": "))
            _record(run_dir, "interrupted", error=f"{exc.__class__.__name__}: {exc}", traceback=traceback.format_exc())
        raise
    finally:
        if board is not None:
            board.close()
    if main:
        log.close_attempt(f"done: result.json written ({result.get('wall_time_s')} s of wall time over all attempts)")
        run_dir.set_status("done")
        if not keep_checkpoints:  # last.pt (the final weights) is all a finished run needs
            run_dir.drop_previous_checkpoint()
    return result


def failure_line(exc: BaseException, where: Any = None) -> str:
    """What status.json's ``error`` says: 'no space left on <path>' (or read-only file system /
    quota) for a disk that takes no more writes — a state to fix and rerun, said with the path
    (``where``, the run folder, when the error named no file) — else '<Exception>: <message>'."""
    err = disk_error(exc)
    if err is not None and err.filename is None and where is not None:
        return disk_message(with_path(err, f"{where} (the file was not named)")) or ""
    return disk_message(exc) or f"{exc.__class__.__name__}: {exc}"


def _record(run_dir: RunDir, state: str, **fields: Any) -> None:
    """Record how an attempt ended without hiding why it ended: a status write that fails too (a
    disk so full that even the reserve and the in-place write failed) is said on stderr, and the
    run then reads 'interrupted' (no live lock holder: RunDir.effective_state), never 'running'."""
    try:
        run_dir.set_status(state, **fields)
    except OSError as exc:
        print(f"run {run_dir.path.name}: could not record '{state}' ({failure_line(exc)}); it reads 'interrupted' and a rerun resumes it",
              file=sys.stderr, flush=True)


def _unit_metrics(run_dir: RunDir) -> Callable[[str], dict[str, Any]]:
    """An evaluation unit's metric entries as saved (RunDir.save_evaluation runs before a unit's
    progress event), for the run log and TensorBoard; {} when none were kept. The last unit read
    is remembered: both listeners ask for it in turn."""
    last: dict[str, Any] = {}

    def metrics_of(unit: str) -> dict[str, Any]:
        if last.get("unit") != unit:
            saved = run_dir.saved_evaluation(unit)
            last.update(unit=unit, metrics=saved[0] if saved else {})
        return last["metrics"]

    return metrics_of


def _same_data_as_checkpoint(cfg: RunConfig, run_dir: RunDir, ctx: DistContext) -> list[dict[str, Any]]:
    """The fingerprints of the run's splits now; an unfinished run whose earlier attempts read other
    data (status.json's ``data_digest``) has its checkpoints, log and units moved aside first, so
    a resume never continues training begun on other data. Rank 0 moves; every rank then waits."""
    found = dataid.fingerprints(cfg)
    if ctx.is_main:
        now = digest(found)
        before = run_dir.read_status().get("data_digest")
        if before not in (None, now):
            moved = run_dir.set_aside(dataid.STALE, keep_result=True)
            if moved:
                run_dir.note(f"the data differs from what earlier attempts read; moved {', '.join(moved)} aside, training starts again")
        run_dir.update_status(data_digest=now)
    ctx.barrier()
    return found


def _train_and_evaluate(cfg: RunConfig, run_dir: RunDir, suite: str, progress: ProgressFn | None, ctx: DistContext, stage: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    if ctx.is_main:  # data, model and method are built before the first step: `bench status` and the live view say so
        run_dir.update_status(phase="prepare")
    if progress:
        progress(RunProgress("prepare", detail=PREPARING_DATA))
    data_fingerprints = _same_data_as_checkpoint(cfg, run_dir, ctx)
    job = BuiltRun(cfg, ctx)
    if job.device.type == "cuda":  # this run's peak, not an earlier run's of the same process
        torch.cuda.reset_peak_memory_stats(job.device)
    trained = train(job, run_dir, progress)
    job.model.eval()
    eval_started, before_eval = time.time(), dataclasses.replace(job.cache_spend)
    # every rank scores its share of every split (bench.distributed); rank 0 alone writes
    metrics: dict[str, Any] = {}
    units = [(name, unit) for name in cfg.evaluations for unit in EVALUATIONS.get(name).units(cfg)]
    scored = 0

    def done(unit: str) -> None:  # after each split / transfer target: status.json and the live view
        nonlocal scored
        scored += 1
        if ctx.is_main:
            run_dir.update_status(phase="evaluate", evaluated=scored, evaluations=len(units), last_evaluated=unit)
        if progress:
            progress(RunProgress("evaluate", scored, len(units), detail=unit))

    if ctx.is_main:
        run_dir.update_status(phase="evaluate", evaluated=0, evaluations=len(units))
    for name in cfg.evaluations:
        metrics.update(evaluate_protocol(EVALUATIONS.get(name), job, run_dir, done))
    eval_cache = job.cache_spend.minus(before_eval)  # evaluation and transfer splits embedded (or reused) now
    eval_s = time.time() - eval_started - eval_cache.build_s
    if not ctx.is_main:  # rank 0 writes the result; the others wait for it (RunTask reads it)
        ctx.barrier()
        return {}
    if job.per_image:  # per-image correctness, p_true, predicted class: paired tests over images (bench.report.stats), bench samples
        run_dir.write_predictions(_flat(job.per_image))
    wall = trained.prior_wall_s + time.time() - started
    # the fine-tuned weights (for later evaluations) are last.pt, saved by train() when training ended
    result = {
        "run_id": cfg.run_id(),
        "suite": suite,
        **stage,
        "method": cfg.method.name,
        "method_params": cfg.method.resolved_params(),
        "dataset": cfg.data.name,
        "data": {"fingerprints": data_fingerprints},  # what it trained and evaluated on (bench.dataid)
        "seed": cfg.seed,
        "backbone": {
            "name": cfg.backbone.name,
            "display": job.backbone.display,
            "init": job.backbone.init,
            "random_init": cfg.backbone.weights == "random",
            "checkpoint": job.backbone.checkpoint,
            "family": job.backbone.family,
        },
        "protocol": {
            "img_size": cfg.backbone.img_size,
            "transform": cfg.seg.model_dump(mode="json") if job.dense else
            {"crop_pct": job.transform.crop_pct, "resize": job.transform.resize_size, "train_aug": job.transform.train_aug},
            "normalize": {"mean": list(job.norm[0]), "std": list(job.norm[1])},
            "trainable_blocks": cfg.model.trainable_blocks,
            "num_classes": job.num_classes,
            "frozen_prefix_cached": job.use_prefix_cache,
            "train_size": trained.train_size,
            "train_split_facts": job.train_split.meta,
            "steps": trained.steps,
            "world_size": ctx.world,
        },
        "config": cfg.canonical(),
        "versions": versions(),
        "git": git_state(),
        "host": host(),
        **({"plugins": plugged} if (plugged := loaded_plugins()) else {}),
        "device": str(job.device),
        "wall_time_s": round(wall, 3),
        "cost": run_cost(job, trained, eval_s, eval_cache),
        "metrics": metrics,
    }
    run_dir.write_result(result)
    ctx.barrier()
    return result


def run_cost(job: BuiltRun, trained: Trained, eval_s: float, eval_cache: CacheSpend) -> dict[str, Any]:
    """result.json's ``cost`` block: what the run cost, with the one-off shared cache builds apart.

    ``shared_cache_s``: seconds this run spent embedding splits into the frozen-prefix cache
    (training split and evaluation/transfer splits), which every later run of the same backbone
    in the same process reuses; a run that found them built paid nothing (``shared_cache_reused``
    counts those splits). ``wall_time_s − shared_cache_s`` is the run's own cost. ``train_s`` and
    ``eval_s`` leave the builds out; ``train_s`` counts a resumed run's earlier attempts up to their
    last checkpoint (as ``wall_time_s`` does), ``eval_s`` this attempt only (units an earlier
    attempt saved are not scored again). What is neither is set-up: building the model, loading data.
    Step times: :class:`bench.train.TrainCost`; peak memory: :func:`bench.train.peak_rss_mb`
    (a process-wide high-water mark) and :func:`bench.train.peak_cuda_mb`."""
    t = trained.cost
    cache = t.cache.add(eval_cache)  # training's (every checkpointed attempt) and this attempt's evaluation
    cuda = peak_cuda_mb(job.device)
    return {
        "shared_cache_s": round(cache.build_s, 3), "shared_cache_built": cache.built, "shared_cache_reused": cache.reused,
        "train_s": round(t.train_s, 3), "eval_s": round(eval_s, 3), "steps": trained.steps, **step_summary(t),
        "peak_rss_mb": round(max(t.peak_rss_mb, peak_rss_mb()), 1),
        "peak_cuda_mb": None if cuda is None and t.peak_cuda_mb is None else round(max(t.peak_cuda_mb or 0.0, cuda or 0.0), 1),
    }


def _flat(per_image: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """'<split>::<array>' keys (split names contain '/'), one npz entry each."""
    return {f"{split}::{name}": array for split, arrays in per_image.items() for name, array in arrays.items()}

