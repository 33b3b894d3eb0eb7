"""The result store under failure: concurrent launches, damaged files, full and read-only disks,
kills at awkward moments. Each test names the guarantee it checks (docs/reliability.md)."""

from __future__ import annotations

import errno
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import io as io_module
from bench import store as store_module
from bench import train as train_module
from bench.cli import main
from bench.features import clear_cache
from bench.io import atomic_write_text
from bench.job import run_job
from bench.launch import RunTask
from bench.store import CorruptFile, RunDir, RunHeld, RunLock
from bench.suite import expand, load_suite
from bench.train import HOLD_ENV
from conftest import tiny_config
from report_fixtures import write_suite
from test_suite import write

ONE_RUN_SUITE = """
name: lk
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  model: {trainable_blocks: 1}
  data: {name: fmnist_composites, params: {img_size: 28, train_size: 32, eval_size: 16}}
  train: {epochs: 2, batch_size: 16}
matrix:
  method: [sft]
  seed: [0]
"""


def rows(run_dir: RunDir) -> list[dict]:
    """Logged steps without their wall-clock stamp: what must be identical across reruns."""
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in run_dir.metrics.read_text().splitlines()]


def wait_for(condition, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll a file-based barrier (never a fixed sleep standing in for an event)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def crash_on_save(monkeypatch, n: int) -> None:
    """Raise KeyboardInterrupt right after the n-th checkpoint is written (a kill after epoch n)."""
    real_save = train_module.atomic_torch_save
    calls = {"n": 0}

    def save(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(train_module, "atomic_torch_save", save)


def mount_tmpfs(where: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode == 0


def umount(where: Path) -> None:
    """Unmount; lazily if a file is still open there (an exception's frames can keep torch's
    half-written checkpoint open), so no test leaves a mount behind."""
    gc.collect()
    if subprocess.run(["umount", str(where)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(where)], check=False)


# ---- atomic writes ---------------------------------------------------------------------------

def test_atomic_write_fsyncs_the_temp_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    calls: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(io_module.os, "fsync", fsync)
    monkeypatch.setattr(io_module.os, "replace", replace)
    atomic_write_text(tmp_path / "f.json", "{}")
    renamed = next(c for c in calls if c[0] == "replace")
    assert renamed[2] == str(tmp_path / "f.json")
    assert calls.index(("fsync", renamed[1])) < calls.index(renamed) < calls.index(("fsync", str(tmp_path)))


# ---- the run lock ----------------------------------------------------------------------------

def test_two_concurrent_bench_runs_train_the_run_once(tmp_path):
    """Process A trains and pauses at the hold barrier after epoch 1 (its lock held); `bench run`
    B starts then: it must skip the run, naming A, and A finishes alone."""
    suite = write(tmp_path, ONE_RUN_SUITE)
    results, reports = tmp_path / "results", tmp_path / "reports"
    args = [str(suite), "--results", str(results), "--reports", str(reports)]
    spec = expand(load_suite(suite), suite)[0]
    run_dir = RunDir.of(results, spec.suite, spec.run_id)
    hold = tmp_path / "hold"
    hold.touch()
    log = open(tmp_path / "a.log", "w")
    a = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", *args], env={**os.environ, HOLD_ENV: str(hold)},
                         stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)
    try:
        wait_for(lambda: run_dir.status_file.is_file() and run_dir.read_status().get("held_after_epoch") == 1, 300,
                 "process A to hold after epoch 1", a)
        assert main(["run", *args]) == 0  # B: HOLD_ENV is not set here, it would train straight through
        hold.unlink()
        assert a.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()
    finally:
        if a.poll() is None:
            a.kill()
        log.close()
    status = run_dir.read_status()
    assert status["state"] == "done" and status["attempts"] == 1 and status["pid"] == a.pid
    assert [r["step"] for r in rows(run_dir)] == list(range(1, status["total_steps"] + 1))  # no line twice, none interleaved
    assert not run_dir.lock_file.exists()


def test_a_second_run_job_on_a_live_run_raises_held_and_touches_nothing(tmp_path, capsys):
    """Two threads: A trains and waits inside its first step for B; B (run_job, as a Slurm job
    would call it) must refuse before writing anything."""
    cfg = tiny_config("sft")
    run_dir = RunDir(tmp_path / "run")
    a_in, b_done = tmp_path / "a_in", tmp_path / "b_done"
    errors: list[BaseException] = []

    def barrier(event):
        if event.phase == "train" and event.step == 1:
            a_in.touch()
            wait_for(b_done.exists, 120, "B to give up")

    def train_a():
        try:
            run_job(cfg, run_dir, progress=barrier)
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    thread = threading.Thread(target=train_a)
    thread.start()
    try:
        wait_for(a_in.exists, 120, "A to start training")
        status_before, metrics_before = run_dir.status_file.read_bytes(), run_dir.metrics.read_bytes() if run_dir.metrics.exists() else b""
        with pytest.raises(RunHeld, match=rf"held by {socket.gethostname()}:{os.getpid()} \(job -\), skipped"):
            run_job(cfg, run_dir)
        assert run_dir.status_file.read_bytes() == status_before
        assert (run_dir.metrics.read_bytes() if run_dir.metrics.exists() else b"") == metrics_before
    finally:
        b_done.touch()
        thread.join(timeout=300)
    assert not errors, errors
    status = run_dir.read_status()
    assert status["state"] == "done" and status["attempts"] == 1
    assert [r["step"] for r in rows(run_dir)] == list(range(1, status["total_steps"] + 1))


def fake_lock(run_dir: RunDir, age_s: float = 0.0, **fields) -> None:
    beat = time.time() - age_s
    info = {"host": "other-node", "pid": 4242, "job_id": "77_3", "start": beat, "heartbeat": beat, "token": "t0", **fields}
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.lock_file.write_text(json.dumps(info))
    os.utime(run_dir.lock_file, (beat, beat))


def test_lock_stale_rules_and_a_job_that_finds_a_live_lock_leaves_the_run_alone(tmp_path):
    cfg = tiny_config("sft")
    run_dir = RunDir(tmp_path / "run")
    fake_lock(run_dir)  # another node, heartbeat now: live
    assert RunLock.holder(run_dir)["host"] == "other-node"
    with pytest.raises(RunHeld, match=r"run run is held by other-node:4242 \(job 77_3\), skipped"):
        run_job(cfg, run_dir)
    out = RunTask(cfg.model_dump_json(), "s", str(run_dir.path))()  # what a Slurm job runs
    assert out["held_by"]["host"] == "other-node"
    assert sorted(p.name for p in run_dir.path.iterdir()) == ["lock.json"]  # no status, no metrics, nothing

    # the same job id asking again is a requeued job: its earlier incarnation is gone
    RunLock.acquire(run_dir, job_id="77_3").release()
    dead = subprocess.Popen(["true"])
    dead.wait()
    fake_lock(run_dir, host=socket.gethostname(), pid=dead.pid)  # this host, process gone: stale at once
    assert RunLock.holder(run_dir) is None
    fake_lock(run_dir, age_s=store_module.LOCK_STALE_S + 1)  # another node, no heartbeat for > 10 min
    assert RunLock.holder(run_dir) is None
    result = run_job(cfg, run_dir)
    status = run_dir.read_status()
    assert result["metrics"] and status["state"] == "done" and "took over a stale lock (no heartbeat for" in status["resume_note"]
    assert not run_dir.lock_file.exists()


def test_the_heartbeat_refreshes_a_held_lock_and_release_removes_it(tmp_path, monkeypatch):
    monkeypatch.setenv(store_module.LOCK_STALE_ENV, "1")  # heartbeat every 0.1 s
    run_dir = RunDir(tmp_path / "run")
    lock = RunLock.acquire(run_dir, job_id="5")
    first = json.loads(run_dir.lock_file.read_text())
    assert first["pid"] == os.getpid() and first["job_id"] == "5" and first["host"] == socket.gethostname()
    wait_for(lambda: json.loads(run_dir.lock_file.read_text())["heartbeat"] > first["heartbeat"], 30, "a heartbeat")
    assert RunLock.holder(run_dir)["token"] == first["token"]
    lock.release()
    assert not run_dir.lock_file.exists() and RunLock.holder(run_dir) is None


# ---- checksums -------------------------------------------------------------------------------

def test_flipped_bytes_in_last_pt_are_caught_and_the_run_resumes_from_prev_pt(tmp_path, monkeypatch):
    cfg = tiny_config("grpo_rm", train={"epochs": 3})
    clean = run_job(cfg, RunDir(tmp_path / "clean"))
    run_dir = RunDir(tmp_path / "run")
    crash_on_save(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, run_dir)
    monkeypatch.undo()
    data = bytearray(run_dir.checkpoint.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])  # 64 flipped bytes
    run_dir.checkpoint.write_bytes(bytes(data))

    clear_cache()
    resumed = run_job(cfg, run_dir)
    status = run_dir.read_status()
    assert len(list(run_dir.path.glob("last.pt.corrupt-*"))) == 1
    assert "last.pt fails its SHA-256 check" in status["resume_note"] and "trying prev.pt" in status["resume_note"]
    assert status["resumed_from"] == {"epoch": 1, "step": 3}
    assert resumed["metrics"] == clean["metrics"] and rows(run_dir) == rows(RunDir(tmp_path / "clean"))


def test_an_empty_last_pt_restarts_from_step_0_instead_of_failing_every_rerun(tmp_path, monkeypatch, capsys):
    cfg = tiny_config("sft")
    clean = run_job(cfg, RunDir(tmp_path / "clean"))
    run_dir = RunDir(tmp_path / "run")
    crash_on_save(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, run_dir)
    monkeypatch.undo()
    run_dir.checkpoint.write_bytes(b"")  # truncated to nothing
    resumed = run_job(cfg, run_dir)
    status = run_dir.read_status()
    assert status["state"] == "done" and "resumed_from" not in status
    assert "last.pt is empty (0 bytes)" in status["resume_note"] and "restarting from step 0" in status["resume_note"]
    assert "last.pt is empty (0 bytes)" in capsys.readouterr().err  # said, not only recorded
    assert resumed["metrics"] == clean["metrics"] and rows(run_dir) == rows(RunDir(tmp_path / "clean"))


def test_result_json_digest_catches_a_changed_number_and_truncation(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    run_dir.write_result({"run_id": "run", "metrics": {"test": {"top1": 0.5}}})
    assert run_dir.is_done() and run_dir.read_result()["metrics"]["test"]["top1"] == 0.5
    text = run_dir.result_file.read_text()
    assert '"digest"' in text
    run_dir.result_file.write_text(text.replace("0.5", "0.9"))
    with pytest.raises(CorruptFile, match="result.json: digest mismatch"):
        run_dir.read_result()
    assert not run_dir.is_done() and run_dir.effective_state() == "corrupt"
    run_dir.result_file.write_text(text[: len(text) // 2])
    with pytest.raises(CorruptFile, match="not valid JSON"):
        run_dir.read_result()


# ---- corrupt runs degrade one at a time -------------------------------------------------------

def test_damaged_status_result_and_metrics_mark_their_runs_corrupt_in_status_and_report(tmp_path, capsys):
    path, specs = write_suite(tmp_path)
    results = tmp_path / "results"
    dirs = {(s.config.method.name, s.config.seed): RunDir.of(results, s.suite, s.run_id) for s in specs}
    status_dir, result_dir, metrics_dir = dirs[("sft", 0)], dirs[("sft", 1)], dirs[("grpo_rm", 2)]
    status_dir.status_file.write_bytes(status_dir.status_file.read_bytes()[:20])  # truncated
    result_dir.result_file.write_bytes(result_dir.result_file.read_bytes()[:100])  # truncated
    lines = metrics_dir.metrics.read_bytes().split(b"\n")
    lines[1] = b"\xff\xfe" + lines[1]  # not UTF-8, in the middle of the log
    metrics_dir.metrics.write_bytes(b"\n".join(lines))
    args = [str(path), "--results", str(results), "--reports", str(tmp_path / "reports")]

    assert main(["status", *args]) == 1  # corrupt runs: status exits 1
    out = capsys.readouterr().out
    for damaged in (status_dir.status_file, result_dir.result_file, metrics_dir.metrics):
        assert f"is corrupt: {damaged}:" in out
    assert out.count("corrupt") >= 6  # three table rows and three full lines

    assert main(["report", *args]) == 0
    md = (tmp_path / "reports" / "syn" / "report.md").read_text()
    assert "3 of 6 runs done." in md and "## Runs not in the tables (3 of 6)" in md
    assert f"| corrupt | corrupt file {status_dir.status_file}: not valid JSON" in md
    assert f"| corrupt | corrupt file {result_dir.result_file}: not valid JSON" in md
    assert f"| corrupt | corrupt file {metrics_dir.metrics}: line 2: UnicodeDecodeError" in md
    assert "(n=2)" in md  # the other runs are still aggregated


def test_bench_run_moves_a_damaged_result_aside_and_evaluates_again_without_training(tmp_path, capsys):
    suite = write(tmp_path, ONE_RUN_SUITE)
    args = [str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert main(["run", *args]) == 0
    spec = expand(load_suite(suite), suite)[0]
    run_dir = RunDir.of(tmp_path / "results", spec.suite, spec.run_id)
    first, log = run_dir.read_result(), run_dir.metrics.read_bytes()
    run_dir.result_file.write_bytes(run_dir.result_file.read_bytes()[:-40])  # a torn result.json
    capsys.readouterr()

    assert main(["status", *args]) == 1  # a corrupt run: status exits 1
    assert f"is corrupt: {run_dir.result_file}: not valid JSON" in capsys.readouterr().out
    assert main(["run", *args]) == 0
    status = run_dir.read_status()
    assert len(list(run_dir.path.glob("result.json.corrupt-*"))) == 1 and "the run is evaluated again" in status["resume_note"]
    assert status["state"] == "done" and status["resumed_from"] == {"complete": True, "step": first["protocol"]["steps"]}
    assert run_dir.metrics.read_bytes() == log  # not one step trained again
    assert run_dir.read_result()["metrics"] == first["metrics"]


# ---- kills at awkward moments -----------------------------------------------------------------

def test_a_kill_between_the_final_weights_and_result_json_evaluates_again_without_training(tmp_path, monkeypatch):
    cfg = tiny_config("sft")
    clean = run_job(cfg, RunDir(tmp_path / "clean"))
    run_dir = RunDir(tmp_path / "run")

    def killed(self, result):
        raise KeyboardInterrupt("killed before result.json")

    monkeypatch.setattr(RunDir, "write_result", killed)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, run_dir)
    monkeypatch.undo()
    assert run_dir.read_status()["state"] == "interrupted" and not run_dir.result_file.exists()
    log = run_dir.metrics.read_bytes()
    steps: list[int] = []
    result = run_job(cfg, run_dir, progress=lambda event: steps.append(event.step) if event.phase == "train" else None)
    assert steps == [] and run_dir.metrics.read_bytes() == log
    assert run_dir.read_status()["resumed_from"] == {"complete": True, "step": 6}
    assert result["metrics"] == clean["metrics"] and result["protocol"] == clean["protocol"]


def test_a_torn_metrics_tail_and_stray_temp_files_are_cleaned_on_resume(tmp_path, monkeypatch):
    cfg = tiny_config("sft")
    run_job(cfg, RunDir(tmp_path / "clean"))
    run_dir = RunDir(tmp_path / "run")
    crash_on_save(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, run_dir)
    monkeypatch.undo()
    with open(run_dir.metrics, "ab") as fh:
        fh.write(b'{"step": 4, "epoch": 1, "lo')  # what a full disk leaves of an append
    stray = run_dir.path / ".last.pt.k3j2h1.tmp"  # an atomic write interrupted by a kill
    stray.write_bytes(b"half a checkpoint")
    os.utime(stray, (time.time() - 60, time.time() - 60))
    run_job(cfg, run_dir)
    assert rows(run_dir) == rows(RunDir(tmp_path / "clean"))
    assert not list(run_dir.path.glob(".*.tmp"))
    assert "metrics.jsonl ended in an unterminated last line" in run_dir.read_status()["resume_note"]


# ---- full disk, read-only folders -------------------------------------------------------------

def test_a_failure_is_recorded_when_the_status_write_hits_a_full_disk(tmp_path, monkeypatch):
    cfg = tiny_config("sft")
    run_dir = RunDir(tmp_path / "run")

    def full_disk(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    real_write = store_module.atomic_write_json
    refused = []

    def status_write(path, obj):
        if Path(path).name == "status.json" and obj.get("state") == "failed" and not refused:
            refused.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, obj)

    monkeypatch.setattr(train_module, "atomic_torch_save", full_disk)
    monkeypatch.setattr(store_module, "atomic_write_json", status_write)
    with pytest.raises(OSError, match="No space left"):
        run_job(cfg, run_dir)
    status = run_dir.read_status()
    assert refused and status["state"] == "failed" and status["error"] == f"no space left on {run_dir.path} (the file was not named)"
    assert "disk was full" in status["status_note"] and not run_dir.status_reserve.exists()  # the reserve became status.json
    assert not run_dir.lock_file.exists()


def test_a_full_tmpfs_records_the_failure_and_the_run_resumes_once_space_is_freed(tmp_path):
    mnt = tmp_path / "mnt"
    if not mount_tmpfs(mnt, "size=2m"):
        pytest.skip("needs root and `mount -t tmpfs` (the monkeypatched ENOSPC test covers the logic)")
    try:
        cfg = tiny_config("sft")
        run_dir = RunDir(mnt / "run")
        filler = mnt / "filler"

        def fill_the_disk(event):
            if event.phase == "train" and event.step == 4 and not filler.exists():  # epoch 2, after epoch 1's checkpoint
                with pytest.raises(OSError) as full, open(filler, "wb", buffering=0) as fh:
                    while True:
                        fh.write(b"\0" * 65536)
                assert full.value.errno == errno.ENOSPC

        with pytest.raises(OSError) as info:
            run_job(cfg, run_dir, progress=fill_the_disk)
        assert info.value.errno == errno.ENOSPC
        status = run_dir.read_status()
        assert status["state"] == "failed" and status["error"].startswith(f"no space left on {run_dir.path}/")
        filler.unlink()
        run_job(cfg, run_dir)
        status = run_dir.read_status()
        assert status["state"] == "done" and status["attempts"] == 2 and status["resumed_from"] == {"epoch": 1, "step": 3}
        assert [r["step"] for r in rows(run_dir)] == list(range(1, 7)) and not list(run_dir.path.glob(".*.tmp"))
    finally:
        umount(mnt)


def test_read_only_or_unusable_output_folders_are_refused_before_training(tmp_path, capsys):
    suite = write(tmp_path, ONE_RUN_SUITE)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["run", str(suite), "--results", str(blocker / "results"), "--reports", str(tmp_path / "reports")]) == 2
    assert f"results folder {blocker / 'results'} is not writable (Not a directory): nothing was launched" in capsys.readouterr().out

    ro = tmp_path / "ro"
    if not mount_tmpfs(ro, "ro,size=64k"):
        pytest.skip("needs root and `mount -t tmpfs` for the read-only reports folder")
    try:
        assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--reports", str(ro)]) == 2
        assert f"reports folder {ro} is not writable (Read-only file system): nothing was launched" in capsys.readouterr().out
        assert not list((tmp_path / "results").rglob("status.json"))  # nothing trained
    finally:
        umount(ro)


def test_a_cancelled_run_keeps_saying_so_when_the_job_then_dies_of_its_sigterm(tmp_path):
    """`bench cancel` writes 'cancelled' first; the job, killed by that cancel, then records its own
    failure (a DataLoader worker terminated, an interrupt): the reason the user sees stays the cancel."""
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()
    run_dir.set_status("running")
    run_dir.set_status("failed", error="cancelled by `bench cancel`", cancelled=True)
    run_dir.set_status("interrupted", error="RuntimeError: DataLoader worker (pid 1) is killed by signal: Terminated.")
    status = run_dir.read_status()
    assert status["state"] == "failed" and status["error"] == "cancelled by `bench cancel`"
    assert "DataLoader worker" in status["state_after_cancel"]
    run_dir.set_status("running")  # a new attempt (`bench run` again) is not cancelled
    assert "cancelled" not in run_dir.read_status() and run_dir.read_status()["state"] == "running"
