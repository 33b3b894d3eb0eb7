"""The local executor (subprocesses through submitit): parallel runs, and kill -9 then rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.launch import local_threads
from bench.store import RunDir, _alive
from bench.suite import expand, load_suite
from conftest import run_in_this_process
from test_suite import write

SUITE = """
name: loc
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 56}
  model: {trainable_blocks: all}
  data: {name: fmnist_composites, params: {img_size: 56, train_size: 256, eval_size: 16}}
  train: {epochs: %d, batch_size: 16}
matrix:
  method: [%s]
  seed: [0]
"""
BENCH = [sys.executable, "-m", "bench.cli"]
PARALLEL = 2  # runs at once: each local job gets local_threads(PARALLEL) math threads


def bench_run(suite: Path, results: Path, **popen) -> subprocess.Popen:
    cmd = [*BENCH, "run", str(suite), "--executor", "local", "--parallel", str(PARALLEL), "--results", str(results), "--reports", str(results / "reports")]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_local_executor_runs_subprocesses_in_parallel(tmp_path):
    suite = write(tmp_path, SUITE % (2, "sft, grpo_rm"))
    proc = bench_run(suite, tmp_path / "r")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    specs = expand(load_suite(suite), suite)
    statuses = [RunDir.of(tmp_path / "r", s.suite, s.run_id).read_status() for s in specs]
    assert all(st["state"] == "done" for st in statuses)
    assert len({st["pid"] for st in statuses} | {proc.pid}) == 3  # each run in its own process
    assert (tmp_path / "r" / "reports" / "loc" / "report.html").is_file()


def test_kill_9_mid_training_then_rerun_gives_identical_numbers(tmp_path):
    """The run is held right after its first epoch's checkpoint (a file barrier, not a race with
    the clock), then the training process and the launcher are SIGKILLed: the rerun resumes and
    logs exactly what an uninterrupted run logs."""
    suite = write(tmp_path, SUITE % (3, "grpo_rm"))
    spec = expand(load_suite(suite), suite)[0]
    clean_dir = run_in_this_process(spec, tmp_path / "clean", threads=local_threads(PARALLEL))  # as many threads as bench_run's jobs

    hold = tmp_path / "hold"
    hold.touch()
    proc = bench_run(suite, tmp_path / "killed", start_new_session=True, env={**os.environ, "BENCH_HOLD_AFTER_EPOCH": str(hold)})
    run_dir = RunDir.of(tmp_path / "killed", spec.suite, spec.run_id)
    deadline = time.time() + 300
    while run_dir.read_status().get("held_after_epoch") != 1:
        assert time.time() < deadline and proc.poll() is None, "the run never reached the barrier"
        time.sleep(0.1)
    job_pid = run_dir.read_status()["pid"]
    os.kill(job_pid, signal.SIGKILL)  # the training process itself…
    os.killpg(proc.pid, signal.SIGKILL)  # …and the launcher
    proc.wait(timeout=30)
    hold.unlink()
    while _alive(job_pid):  # SIGKILL is delivered, not yet done: wait for the process to be gone
        assert time.time() < deadline, "the killed training process did not exit"
        time.sleep(0.05)
    assert not run_dir.is_done()
    assert run_dir.read_status()["state"] == "running"  # it never got to say otherwise
    assert run_dir.effective_state() == "interrupted"
    assert __import__("torch").load(run_dir.checkpoint, weights_only=False)["epoch"] == 1

    rerun = bench_run(suite, tmp_path / "killed")
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert run_dir.read_result()["metrics"] == clean_dir.read_result()["metrics"]
    untimed = lambda d: [{k: v for k, v in json.loads(line).items() if k != "time"} for line in d.metrics.read_text().splitlines()]  # noqa: E731
    assert untimed(run_dir) == untimed(clean_dir)  # every logged number identical; only wall-clock stamps differ
    assert run_dir.read_status()["attempts"] == 2


def test_two_process_ddp_over_gloo_matches_single_process_training(tmp_path):
    """2 CPU processes, each on half of every batch: DDP's averaged gradient equals the
    single-process one, so the losses track the single-process run (here, in this process) to
    float rounding."""
    base = SUITE % (2, "sft")
    ddp = write(tmp_path, base.replace("matrix:", "resources:\n  default: {tasks: 2}\nmatrix:"), "ddp.yaml")
    proc = bench_run(ddp, tmp_path / "ddp")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    single = write(tmp_path, base, "single.yaml")
    spec = expand(load_suite(single), single)[0]
    ddp_dir = RunDir.of(tmp_path / "ddp", spec.suite, spec.run_id)
    single_dir = run_in_this_process(spec, tmp_path / "single", threads=local_threads(PARALLEL))
    assert ddp_dir.read_result()["protocol"]["world_size"] == 2
    assert single_dir.read_result()["protocol"]["world_size"] == 1
    assert ddp_dir.read_status()["world_size"] == 2
    a = [json.loads(line) for line in ddp_dir.metrics.read_text().splitlines()]
    b = [json.loads(line) for line in single_dir.metrics.read_text().splitlines()]
    steps = 2 * -(-single_dir.read_result()["protocol"]["train_size"] // 16)  # 2 epochs of the train split minus its held-out carve
    assert steps == 30 and [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))  # rank 0 alone logs
    for ra, rb in zip(a, b):
        assert abs(ra["loss"] - rb["loss"]) < 1e-3, (ra["step"], ra["loss"], rb["loss"])
    assert abs(a[0]["loss"] - b[0]["loss"]) < 1e-5 and abs(a[0]["grad_norm"] - b[0]["grad_norm"]) < 1e-4
