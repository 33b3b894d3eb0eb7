"""The Slurm launcher against a real one-node cluster (slurm/start-cluster.sh; .ci/run starts it).

Skipped cleanly when no cluster answers. Each test uses fresh result and submitit folders: job
ids restart after a state wipe and an old folder could hand back an old result.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from bench.launch import LaunchOptions, launch, scheduler_states
from bench.store import RunDir
from bench.suite import expand, load_suite
from bench.train import HOLD_ENV
from conftest import run_in_this_process
from test_suite import write


def _cluster_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = out.stdout.split()
    # a node busy finishing an earlier job reads 'completing': the cluster is up all the same
    usable = ("idle", "mixed", "allocated", "completing")
    return out.returncode == 0 and any(state.startswith(usable) for state in states)


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(not _cluster_up(), reason="no Slurm cluster (run slurm/start-cluster.sh)")]

SUITE = """
name: {name}
defaults:
  backbone: {{name: dinov2_tiny, weights: random, img_size: {img}}}
  model: {{trainable_blocks: {blocks}}}
  data: {{name: fmnist_composites, params: {{img_size: {img}, train_size: {train}, eval_size: 16}}}}
  train: {{epochs: {epochs}, batch_size: 16}}
resources:
  default: {{cpus: 1, mem_gb: 2, time_min: {time_min}, partition: debug, signal_delay_s: {delay}}}
matrix:
  method: [{methods}]
  seed: [0]
  {extra}
"""


def make_suite(tmp_path, name="s", img=28, blocks=1, train=32, epochs=2, time_min=5, delay=90, methods="sft, grpo_rm", extra=""):
    path = write(tmp_path, SUITE.format(name=name, img=img, blocks=blocks, train=train, epochs=epochs, time_min=time_min, delay=delay, methods=methods, extra=extra), f"{name}.yaml")
    suite = load_suite(path)
    return suite, expand(suite, path)


def reference_metrics(spec, tmp_path) -> dict:
    """The same run in this process, with the thread count a 1-CPU Slurm job uses."""
    return run_in_this_process(spec, tmp_path / "reference", threads=1).read_result()["metrics"]


def job_id_of(run_dir: RunDir) -> str:
    return run_dir.read_status()["executor_job_id"]


def release_held_requeues() -> None:
    """Slurm holds a requeued job ~2 minutes (BeginTime); start it now instead.
    That delay is scheduler policy, not what these tests check."""
    out = subprocess.run(["squeue", "-h", "-t", "PENDING", "-o", "%i %r"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        job, reason = line.split(maxsplit=1)
        if "BeginTime" in reason:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)


def wait_until(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        release_held_requeues()
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_suite_on_slurm_matches_a_local_run(tmp_path):
    suite, specs = make_suite(tmp_path)
    outcomes = launch("slurm", suite, specs, tmp_path / "results", LaunchOptions(wait=True), Console())
    assert [o.state for o in outcomes] == ["done", "done"]
    for spec in specs:
        run_dir = RunDir.of(tmp_path / "results", spec.suite, spec.run_id)
        status = run_dir.read_status()
        assert status["state"] == "done" and status["executor"] == "slurm" and "_" in status["executor_job_id"]
        assert run_dir.read_result()["metrics"] == reference_metrics(spec, tmp_path)
    # rerunning submits nothing: every run is done
    again = launch("slurm", suite, specs, tmp_path / "results", LaunchOptions(wait=True), Console())
    assert [o.state for o in again] == ["skipped", "skipped"]


def test_a_failing_job_is_recorded_and_the_others_finish(tmp_path):
    # eval_size 20000 exceeds Fashion-MNIST's 10,000 test images: that run raises inside its job
    suite, specs = make_suite(tmp_path, methods="sft", extra="data.params.eval_size: [16, 20000]")
    outcomes = launch("slurm", suite, specs, tmp_path / "results", LaunchOptions(wait=True), Console())
    states = {o.spec.config.data.params["eval_size"]: o.state for o in outcomes}
    assert states == {16: "done", 20000: "failed"}
    bad = next(s for s in specs if s.config.data.params["eval_size"] == 20000)
    status = RunDir.of(tmp_path / "results", bad.suite, bad.run_id).read_status()
    assert status["state"] == "failed" and "exceeds the 10000 Fashion-MNIST test images" in status["error"]
    assert "Traceback" in status["traceback"] and "composites.py" in status["traceback"]
    assert not RunDir.of(tmp_path / "results", bad.suite, bad.run_id).is_done()


def held(run_dir: RunDir, attempts: int, epoch: int) -> bool:
    """Whether attempt ``attempts`` of the run waits at the hold barrier after ``epoch``."""
    status = run_dir.read_status()
    return status.get("state") == "running" and status.get("attempts") == attempts and status.get("held_after_epoch") == epoch


def test_requeued_job_resumes_from_checkpoint_with_identical_numbers(tmp_path, monkeypatch):
    # The job pauses at a file barrier after each epoch's checkpoint, so the requeue lands at a
    # known state (attempt 1 held after epoch 1) however fast the machine trains.
    hold = tmp_path / "hold"
    hold.touch()
    monkeypatch.setenv(HOLD_ENV, str(hold))  # sbatch exports the environment to the job
    suite, specs = make_suite(tmp_path, img=56, blocks="all", train=256, epochs=3, methods="grpo_rm")
    spec = specs[0]
    launch("slurm", suite, specs, tmp_path / "results", LaunchOptions(wait=False), Console())
    run_dir = RunDir.of(tmp_path / "results", spec.suite, spec.run_id)
    wait_until(lambda: held(run_dir, attempts=1, epoch=1), 120, "attempt 1 to hold after its first epoch")
    assert torch.load(run_dir.checkpoint, weights_only=False)["epoch"] == 1
    subprocess.run(["scontrol", "requeue", job_id_of(run_dir)], check=True)
    wait_until(lambda: held(run_dir, attempts=2, epoch=2), 240, "the requeued attempt to hold after epoch 2")
    per_epoch = run_dir.read_status()["total_steps"] // 3
    assert run_dir.read_status()["resumed_from"] == {"epoch": 1, "step": per_epoch}
    hold.unlink()
    wait_until(run_dir.is_done, 240, "the requeued run to finish")
    status = run_dir.read_status()
    assert status["attempts"] == 2, status
    assert run_dir.read_result()["metrics"] == reference_metrics(spec, tmp_path)
    steps = [json.loads(line)["step"] for line in run_dir.metrics.read_text().splitlines()]
    assert steps == list(range(1, 3 * per_epoch + 1))


@pytest.mark.slow
def test_time_limit_triggers_checkpoint_and_resume(tmp_path, monkeypatch):
    # 2-minute limit, USR2 50 s before it. Attempt 1 holds at the barrier after epoch 1 until the
    # time-limit signal makes submitit call checkpoint(), which requeues it; the barrier is lifted
    # only once attempt 2 runs, so the order of events is fixed. Slurm may send the signal up to
    # 60 s early (sbatch --signal); a 1-minute limit could signal before submitit's handler exists.
    hold = tmp_path / "hold"
    hold.touch()
    monkeypatch.setenv(HOLD_ENV, str(hold))
    suite, specs = make_suite(tmp_path, img=56, blocks="all", train=256, epochs=3, methods="sft", time_min=2, delay=50)
    spec = specs[0]
    launch("slurm", suite, specs, tmp_path / "results", LaunchOptions(wait=False), Console())
    run_dir = RunDir.of(tmp_path / "results", spec.suite, spec.run_id)
    wait_until(lambda: run_dir.read_status().get("attempts", 0) >= 2 and run_dir.read_status().get("state") == "running",
               400, "the time limit to requeue the held job")
    hold.unlink()
    wait_until(run_dir.is_done, 240, "the requeued run to finish")
    status = run_dir.read_status()
    assert status["attempts"] == 2 and status["resumed_from"]["epoch"] >= 1, status
    logs = "".join(p.read_text() for p in Path(status["submitit_folder"]).glob("*_log.err"))
    assert "Caught signal SIGUSR2" in logs and "timed-out" in logs  # submitit called checkpoint()
    # once: the run's DataLoader workers (alive at the barrier) leave the signal to the main process
    assert logs.count("Caught signal SIGUSR2") == 1, logs
    assert status["state"] == "done" and "traceback" not in status
    assert run_dir.read_result()["metrics"] == reference_metrics(spec, tmp_path)


def test_status_and_cancel(tmp_path, capsys):
    from bench.cli import main

    suite, specs = make_suite(tmp_path, img=56, blocks="all", train=256, epochs=400, methods="sft")
    path = tmp_path / "s.yaml"
    args = [str(path), "--results", str(tmp_path / "results")]
    assert main(["run", *args, "--executor", "slurm"]) == 0  # submits and returns
    run_dir = RunDir.of(tmp_path / "results", specs[0].suite, specs[0].run_id)
    wait_until(lambda: run_dir.read_status().get("state") == "running", 120, "the job to start")
    job = run_dir.read_status()["executor_job_id"]
    # slurmdbd records a job a few seconds after it starts; until then sacct has no state for it
    wait_until(lambda: scheduler_states([job]).get(job) == "RUNNING", 60, "sacct to see the job running")
    capsys.readouterr()
    assert main(["status", *args]) == 0
    out = capsys.readouterr().out
    assert "running" in out and "RUNNING" in out  # the store's and the scheduler's view
    assert main(["cancel", *args]) == 0
    assert "cancelled 1 Slurm job(s)" in capsys.readouterr().out
    status = run_dir.read_status()
    assert status["state"] == "failed" and "cancelled" in status["error"]
    wait_until(lambda: subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job], capture_output=True, text=True).stdout.startswith("CANCELLED"), 60, "sacct to report CANCELLED")
    assert not run_dir.is_done()


def test_two_task_ddp_job_on_slurm(tmp_path):
    """srun starts 2 ranks; they join over gloo and train like one process would."""
    suite, specs = make_suite(tmp_path, img=56, blocks="all", train=256, methods="sft")
    suite = suite.model_copy(update={"resources": {"default": suite.resources["default"].model_copy(update={"tasks": 2})}})
    spec = specs[0]
    outcomes = launch("slurm", suite, specs, tmp_path / "results", LaunchOptions(wait=True), Console())
    assert [o.state for o in outcomes] == ["done"]
    run_dir = RunDir.of(tmp_path / "results", spec.suite, spec.run_id)
    assert run_dir.read_result()["protocol"]["world_size"] == 2
    reference_metrics(spec, tmp_path)
    ddp = [json.loads(line) for line in run_dir.metrics.read_text().splitlines()]
    single = [json.loads(line) for line in RunDir(tmp_path / "reference" / spec.run_id).metrics.read_text().splitlines()]
    assert len(ddp) == len(single) == 2 * 15  # 2 epochs of 256 images minus the held-out carve (230), batch 16
    assert abs(ddp[0]["loss"] - single[0]["loss"]) < 1e-5
    assert all(abs(a["loss"] - b["loss"]) < 1e-3 for a, b in zip(ddp, single))


def test_reproduce_submits_once_then_renders_expected_vs_actual(tmp_path, capsys):
    from bench.cli import main

    make_suite(tmp_path, name="inner")
    outer = write(tmp_path, "name: outer\ninclude: [inner.yaml]\nexpected:\n"
                  "  - {quantity: delta, split: test, value: 0.0, tolerance: 100.0, source: a wide test claim}\n", "outer.yaml")
    args = ["reproduce", str(outer), "--executor", "slurm", "--data-root", str(tmp_path / "data"),
            "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    (tmp_path / "data").mkdir()
    assert main(args) == 0  # submitted (no GPU asked by the profile); the report lists both runs as not done
    assert "submitted 2 run(s) as Slurm array" in capsys.readouterr().out
    specs = expand(load_suite(outer), outer)
    dirs = [RunDir.of(tmp_path / "results", s.suite, s.run_id) for s in specs]
    jobs = [d.read_status()["executor_job_id"] for d in dirs]
    assert all(jobs) and [s.profile for s in specs] == ["inner/default"] * 2
    assert main(args) == 0  # again while queued or running (or done): nothing is submitted twice
    assert "submitted" not in capsys.readouterr().out
    assert [d.read_status().get("executor_job_id") for d in dirs] == jobs
    wait_until(lambda: all(d.is_done() for d in dirs), 300, "both runs to finish")
    assert main(args) == 0
    table = (tmp_path / "reports" / "outer" / "expected.csv").read_text()
    assert "no interval" in table and "a wide test claim" in table  # one seed: no interval, so no verdict


def test_model_selection_on_slurm_needs_no_second_submission(tmp_path, capsys):
    """`bench run --executor slurm` submits the tuning array and a dependent selection job; that
    job chooses on the held-out split and submits the final array by itself."""
    from bench.cli import main
    from bench.select import SELECTION_FILE

    make_suite(tmp_path, name="sel", methods="sft", extra="")
    path = tmp_path / "sel.yaml"
    path.write_text(path.read_text().replace("matrix:", "select: {metric: top1, tune: {train.lr: [1.0e-4, 1.0e-3]}}\nmatrix:"))
    args = [str(path), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert main(["run", *args, "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "submitted 2 run(s) as Slurm array" in out and "submitted the selection job" in out
    results = tmp_path / "results" / "sel"
    wait_until(lambda: (results / SELECTION_FILE).is_file() and len(list(results.glob("*/result.json"))) == 3, 300,
               "the tuning runs, the selection job and the final run")
    chosen = json.loads((results / SELECTION_FILE).read_text())["groups"][0]["chosen"]["train.lr"]
    final = [json.loads(p.read_text()) for p in results.glob("*/result.json") if json.loads(p.read_text()).get("stage") == "final"]
    assert len(final) == 1 and final[0]["config"]["train"]["lr"] == chosen and "test" in final[0]["metrics"]
    assert RunDir(results / final[0]["run_id"]).read_status()["executor"] == "slurm"
    assert main(["status", *args]) == 0
    assert "model selection: 1 group(s) decided" in capsys.readouterr().out
