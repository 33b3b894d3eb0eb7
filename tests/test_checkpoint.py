"""Mid-epoch checkpoints (``train.checkpoint_every_min``): a run SIGKILLed right after one resumes
to the numbers of a run never interrupted — data order, every random state, the LR schedule, the
optimiser and μ passes — and the interval is no part of what a run is.

The kill is timed by the step barrier ($BENCH_HOLD_AFTER_STEP), never by a clock: with an interval
shorter than any batch every batch ends in a checkpoint, and the barrier holds the process right
after the one at a known step."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from bench.config import TrainConfig
from bench.features import clear_cache
from bench.job import run_job
from bench.store import RunDir
from bench.train import STEP_HOLD_ENV, CheckpointTimer, parse_step_hold
from conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]
EVERY_BATCH = 1e-6  # minutes (60 µs): below any batch's time, so every batch ends in a checkpoint
DRIVER = """
import json, sys
from pathlib import Path
from bench.config import RunConfig
from bench.job import run_job
from bench.store import RunDir
run_job(RunConfig(**json.loads(sys.argv[1])), RunDir(Path(sys.argv[2])))
"""


def _numbers(run_dir: RunDir) -> list[dict]:
    """Every logged number of every step, without the wall-clock stamp (which no rerun repeats)."""
    return [{k: v for k, v in row.items() if k != "time"} for row in run_dir.read_metrics()]


def _log_messages(run_dir: RunDir) -> list[str]:
    """run.log's lines without their UTC time stamps (which are checked to be there)."""
    lines = run_dir.run_log.read_text().splitlines()
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line) for line in lines), lines
    return [line.split(" ", 1)[1] for line in lines]


def _start_held(cfg, run_dir: RunDir, step: int, hold: Path) -> subprocess.Popen:
    """Train ``cfg`` in a subprocess that holds after its checkpoint at ``step`` (the barrier file
    ``hold`` exists until the test removes it)."""
    hold.touch()
    out = open(run_dir.path.parent / f"{run_dir.path.name}.out", "w")
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(cfg.model_dump(mode="json")), str(run_dir.path)], cwd=REPO,
                            env={**os.environ, STEP_HOLD_ENV: f"{step}:{hold}"}, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def _kill_when_held(proc: subprocess.Popen, run_dir: RunDir, hold: Path) -> dict:
    """SIGKILL the process once it holds at the barrier (no handler runs, as on a node failure or
    a pre-emption without grace); the status it left then."""
    try:
        deadline = time.monotonic() + 300
        while not (run_dir.status_file.is_file() and run_dir.read_status().get("held_after_step")):
            assert proc.poll() is None, (run_dir.path.parent / f"{run_dir.path.name}.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never reached the step barrier"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    hold.unlink()
    return run_dir.read_status()


@pytest.mark.parametrize(
    "method, params, hold_at",
    [("sft", {}, 4), ("grpo_rm", {"group": "sampled", "group_size": 4, "mu": 2}, 8)],
    ids=["sft", "grpo_rm-sampled-mu2"],
)
def test_a_run_killed_right_after_a_mid_epoch_checkpoint_resumes_to_identical_numbers(tmp_path, monkeypatch, method, params, hold_at):
    """3 batches per epoch, 2 epochs; the kill comes after batch 1 of epoch 2 (step 4, or 8 with
    μ = 2): the resume must skip that batch, draw GRPO-RM's sampled groups on from where the
    epoch's generator stood, and continue schedule and optimiser there."""
    monkeypatch.delenv(STEP_HOLD_ENV, raising=False)
    base = tiny_config(method, method_params=params).model_copy(update={"evaluations": ("id",)})
    often = tiny_config(method, method_params=params, train={"checkpoint_every_min": EVERY_BATCH}).model_copy(update={"evaluations": ("id",)})
    assert often.run_id() == base.run_id()  # the interval does not change what the run is
    killed, hold = RunDir(tmp_path / "killed"), tmp_path / "hold"
    proc = _start_held(often, killed, hold_at, hold)  # meanwhile, the uninterrupted run here
    clean_dir = RunDir(tmp_path / "clean")
    clean = run_job(base, clean_dir)  # default interval (10 min): epoch-end checkpoints only
    total = clean["protocol"]["steps"]
    assert total == 2 * 3 * (2 if params else 1)

    status = _kill_when_held(proc, killed, hold)
    assert status["state"] == "running" and status["held_after_step"] == hold_at  # it never got to say otherwise
    assert status["checkpoint"] == {"epoch": 1, "batch": 1, "step": hold_at, "complete": False}
    state = torch.load(killed.checkpoint, weights_only=False)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 1, hold_at) and "groups" in state["rng"][0]
    assert [row["step"] for row in killed.read_metrics()] == list(range(1, hold_at + 1))
    assert killed.effective_state() == "interrupted" and not killed.is_done()

    clear_cache()  # the resume recomputes everything, prefix tokens included
    resumed = run_job(often, killed)
    assert resumed["metrics"] == clean["metrics"]
    assert _numbers(killed) == _numbers(clean_dir)  # every logged number of every step
    status = killed.read_status()
    assert status["resumed_from"] == {"epoch": 1, "batch": 1, "step": hold_at} and status["attempts"] == 2 and status["state"] == "done"
    assert "held_after_step" not in status  # the killed attempt's barrier is not the new attempt's

    # run.log: every batch of attempt 1 ended in a checkpoint (the timer), the kill is noted, the resume point said
    log = _log_messages(killed)
    per = 2 if params else 1
    first = [m for m in log if m.startswith("checkpoint at")]
    assert first[:4] == [f"checkpoint at epoch 0, batch 1 of 3, step {per} of {total}", f"checkpoint at epoch 0, batch 2 of 3, step {2 * per} of {total}",
                         f"checkpoint at epoch 1, step {3 * per} of {total}", f"checkpoint at epoch 1, batch 1 of 3, step {hold_at} of {total}"]
    assert first[4:] == [f"checkpoint at epoch 1, batch 2 of 3, step {5 * per} of {total}", f"checkpoint at epoch 2 (final weights), step {total} of {total}"]
    starts = [i for i, m in enumerate(log) if m.startswith("attempt ")]
    assert log[starts[0]].startswith("attempt 1 started on host=") and f"pid={status['pid']} " not in log[starts[0]]  # another process
    assert log[starts[1]].startswith("attempt 1 ended without a last word (killed")
    assert log[starts[2]].startswith("attempt 2 started on host=") and f"pid={status['pid']} world_size=1" in log[starts[2]]
    second = log[starts[2]:]
    assert any(m.startswith("repaired: took over a stale lock") for m in second)  # the killed process's lock
    assert f"resumed from epoch 1, batch 1 of 3, step {hold_at} of {total}" in second
    assert log[-1].startswith("done")
    assert [m for m in _log_messages(clean_dir) if m.startswith("checkpoint at")] == [  # 10 minutes never pass: epoch ends only
        f"checkpoint at epoch 1, step {3 * per} of {total}", f"checkpoint at epoch 2 (final weights), step {total} of {total}"]

    # TensorBoard: attempt 1's scalars up to its checkpoint survived the kill, and every step shows once
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(killed.tensorboard_dir))
    board.Reload()
    losses = board.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, total + 1))
    assert [e.value for e in losses] == pytest.approx([row["loss"] for row in killed.read_metrics()], rel=1e-6)


def test_checkpoint_timer_is_due_after_its_interval_and_never_when_disabled():
    now = [100.0]
    timer = CheckpointTimer(10, clock=lambda: now[0])
    now[0] = 100.0 + 599.9
    assert timer.enabled and not timer.due()
    now[0] = 100.0 + 600.0
    assert timer.due()
    timer.reset()
    assert not timer.due()
    now[0] += 600.0
    assert timer.due()
    off = CheckpointTimer(0, clock=lambda: now[0])
    now[0] += 1e9
    assert not off.enabled and not off.due()


def test_the_checkpoint_interval_is_a_documented_setting_outside_the_run_identity():
    field = TrainConfig.model_fields["checkpoint_every_min"]
    assert field.default == 10.0 and "0: epoch ends only" in field.description
    a, b = tiny_config("sft"), tiny_config("sft", train={"checkpoint_every_min": 0.5})
    assert a.run_id() == b.run_id() and "checkpoint_every_min" not in a.canonical()["train"]
    assert a.canonical()["train"]["lr"] == a.train.lr  # the other training settings still are the identity
    for bad in (-1, float("inf"), "often"):
        with pytest.raises(ValidationError, match="checkpoint_every_min"):
            tiny_config("sft", train={"checkpoint_every_min": bad})


def test_the_step_barrier_setting_is_checked_before_training():
    assert parse_step_hold(None) is None and parse_step_hold("") is None
    assert parse_step_hold("12:/tmp/hold") == (12, Path("/tmp/hold"))
    for bad in ("12", "x:/tmp/hold", "12:", "-1:/tmp/h"):
        with pytest.raises(ValueError, match=STEP_HOLD_ENV):
            parse_step_hold(bad)


def test_a_checkpoint_with_an_impossible_batch_position_is_moved_aside_not_resumed(tmp_path):
    from bench.io import atomic_torch_save

    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()
    state = {"model": {}, "optimizer": {}, "schedule": {}, "epoch": 1, "step": 4, "batch": -1}
    atomic_torch_save(state, run_dir.checkpoint)
    assert run_dir.load_checkpoint() == (None, None)  # restarts from step 0 instead
    assert len(list(run_dir.path.glob("last.pt.corrupt-*"))) == 1 and "'batch' is -1" in run_dir.read_status()["resume_note"]
    atomic_torch_save({**state, "batch": 1}, run_dir.checkpoint)
    loaded, path = run_dir.load_checkpoint()
    assert path == run_dir.checkpoint and loaded["batch"] == 1
