"""Issue 22 (items 6 and 7): a full, over-quota or read-only disk is a state, not a traceback; launcher
messages say what happened (held runs, damaged locks, nothing claimed 'submitted' that was not);
a wrong checkpoint file is named; provenance reads git without taking its locks.

Real runs here are the cheapest the store tests use (one random-init DINOv2-tiny block, 28 px,
32 training images, 2 epochs). The tmpfs tests need root and `mount`; each has an injected-ENOSPC
twin that runs anywhere.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from bench import io as io_module
from bench import launch as launch_module
from bench import provenance
from bench import train as train_module
from bench.cli import main
from bench.errors import Exit
from bench.job import run_job
from bench.store import RunDir, RunLock
from bench.suite import expand, load_suite
from conftest import tiny_config
from report_fixtures import write_suite
from test_store import ONE_RUN_SUITE, mount_tmpfs, rows, umount
from test_suite import write

TWO_RUNS = ONE_RUN_SUITE.replace("seed: [0]", "seed: [0, 1]")


def states(results: Path) -> dict[str, str]:
    """Each run folder's effective state (what `bench status` shows)."""
    return {d.name: RunDir(d).effective_state() for d in sorted(results.glob("*/*")) if d.is_dir() and not d.name.startswith(".")}


def results_of(results: Path) -> dict[str, tuple]:
    """Per run: (metrics of record, logged steps without wall-clock stamps)."""
    out = {}
    for d in sorted(results.glob("*/*")):
        if (d / "result.json").is_file():
            out[d.name] = (json.loads((d / "result.json").read_text())["metrics"], rows(RunDir(d)))
    return out


# ---- full disk: runs, report, exit code --------------------------------------------------------

def test_a_full_tmpfs_under_bench_run_fails_every_run_cleanly_and_a_rerun_matches_an_uninterrupted_run(tmp_path, capsys):
    mnt = tmp_path / "mnt"
    if not mount_tmpfs(mnt, "size=300k"):
        pytest.skip("needs root and `mount -t tmpfs` (test_injected_enospc_… covers the logic without)")
    suite = write(tmp_path, TWO_RUNS)
    try:
        code = main(["run", str(suite), "--results", str(mnt / "results"), "--reports", str(mnt / "reports")])
        out = capsys.readouterr()
        assert code == Exit.NO_SPACE, out.out
        assert "Traceback" not in out.out + out.err
        assert out.out.count("no space left on ") >= 2  # each run's failure line names its file
        got = states(mnt / "results")
        assert len(got) == 2 and set(got.values()) == {"failed"}, got  # never 'running', never silently 'interrupted'
        for run in got:
            status = json.loads((mnt / "results" / "lk" / run / "status.json").read_text())
            assert status["state"] == "failed" and status["error"].startswith(f"no space left on {mnt}/results/lk/{run}/")
        subprocess.run(["mount", "-o", "remount,size=40m", str(mnt)], check=True)  # space freed
        assert main(["run", str(suite), "--results", str(mnt / "results"), "--reports", str(mnt / "reports")]) == Exit.OK
        assert set(states(mnt / "results").values()) == {"done"}
        resumed = results_of(mnt / "results")
    finally:
        umount(mnt)
    assert main(["run", str(suite), "--results", str(tmp_path / "reference"), "--reports", str(tmp_path / "reports")]) == Exit.OK
    assert resumed == results_of(tmp_path / "reference") and len(resumed) == 2


def _enospc_after_first_checkpoint(monkeypatch) -> list[Path]:
    """From the first checkpoint on, every atomic write fails as a full disk does (an OSError
    that names no file); the status reserve (a write into already allocated bytes) still works."""
    real_save, real_sync = train_module.atomic_torch_save, io_module.fsync_path
    full = []

    def save(obj, path):
        real_save(obj, path)
        full.append(Path(path))

    def sync(path):  # every atomic write fsyncs its temp file: where a full disk reports at the latest
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_sync(path)

    monkeypatch.setattr(train_module, "atomic_torch_save", save)
    monkeypatch.setattr(io_module, "fsync_path", sync)
    return full


def test_injected_enospc_at_the_atomic_write_layer_fails_the_run_naming_the_path_and_a_rerun_resumes_to_identical_numbers(tmp_path, monkeypatch):
    cfg = tiny_config("sft")
    run_dir = RunDir(tmp_path / "run")
    with monkeypatch.context() as m:
        full = _enospc_after_first_checkpoint(m)
        with pytest.raises(OSError) as info:
            run_job(cfg, run_dir)
    assert full and info.value.errno == errno.ENOSPC and info.value.filename  # the path travels with the error
    status = run_dir.read_status()
    assert status["state"] == "failed" and status["error"].startswith(f"no space left on {run_dir.path}/"), status["error"]
    assert run_dir.effective_state() == "failed" and not run_dir.lock_file.exists()
    run_job(cfg, run_dir)  # space freed
    status = run_dir.read_status()
    assert status["state"] == "done" and status["attempts"] == 2 and status["resumed_from"]["step"] == 3
    reference = RunDir(tmp_path / "reference")
    run_job(cfg, reference)
    assert run_dir.read_result()["metrics"] == reference.read_result()["metrics"] and rows(run_dir) == rows(reference)


def test_a_checkpoint_write_that_torch_reports_as_a_runtime_error_on_a_full_disk_is_named_as_no_space(tmp_path, monkeypatch):
    def torch_save(obj, f, *args, **kwargs):  # what torch.save raises when the disk fills mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", torch_save)
    monkeypatch.setattr(io_module, "_full", lambda folder: True)
    run_dir = RunDir(tmp_path / "run")
    with pytest.raises(OSError) as info:
        run_job(tiny_config("sft"), run_dir)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(run_dir.checkpoint)
    assert run_dir.read_status()["error"] == f"no space left on {run_dir.checkpoint}"


def test_when_even_the_failure_cannot_be_recorded_the_run_reads_interrupted_not_running(tmp_path, monkeypatch, capsys):
    cfg = tiny_config("sft")
    run_dir = RunDir(tmp_path / "run")
    monkeypatch.setattr(RunDir, "_write_status_from_reserve", lambda self, status: False)
    with monkeypatch.context() as m:
        _enospc_after_first_checkpoint(m)
        with pytest.raises(OSError):
            run_job(cfg, run_dir)
    assert json.loads(run_dir.status_file.read_text())["state"] == "running"  # the file could not be changed
    assert run_dir.effective_state() == "interrupted"  # no live lock holder: resumable, not 'running' forever
    assert "could not record 'failed' (no space left on " in capsys.readouterr().err


def test_the_status_is_written_in_place_when_the_disk_is_full_and_there_is_no_reserve(tmp_path, monkeypatch):
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()
    run_dir.set_status("running", world_size=1, note="x" * 400)
    monkeypatch.setattr(io_module, "fsync_path", lambda path: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    run_dir.set_status("failed", error=f"no space left on {run_dir.checkpoint}", traceback="T" * 5000)
    status = run_dir.read_status()
    assert status["state"] == "failed" and "written in place" in status["status_note"]


def test_the_report_writer_on_a_full_disk_says_one_line_and_exits_with_the_documented_code(tmp_path, capsys, monkeypatch):
    path, _ = write_suite(tmp_path)
    real = io_module.fsync_path

    def full(p):
        if "reports" in Path(p).parts:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(p)

    monkeypatch.setattr(io_module, "fsync_path", full)
    code = main(["report", str(path), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")])
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.strip()]
    assert code == Exit.NO_SPACE == 4
    assert len(lines) == 1 and lines[0].startswith(f"report not written: no space left on {tmp_path / 'reports'}/"), out.out
    assert "Traceback" not in out.out + out.err


def test_a_read_only_reports_folder_mid_run_is_the_same_one_line(tmp_path, capsys, monkeypatch):
    path, _ = write_suite(tmp_path)
    monkeypatch.setattr(io_module, "fsync_path", lambda p: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
    assert main(["report", str(path), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]) == Exit.NO_SPACE
    assert "report not written: read-only file system at " in capsys.readouterr().out


# ---- launcher messages ------------------------------------------------------------------------

def test_the_local_executor_says_a_line_for_a_run_another_launcher_took_after_the_check(tmp_path, capsys, monkeypatch):
    """The race the launch-time check cannot see: the lock is taken between the check and the
    job's start. The job leaves the run alone; the launcher must say so, not skip it silently."""
    suite = write(tmp_path, ONE_RUN_SUITE)
    spec = expand(load_suite(suite), suite)[0]
    run_dir = RunDir.of(tmp_path / "results", spec.suite, spec.run_id)
    monkeypatch.setattr(launch_module, "held_runs", lambda specs, root, force: {})  # the check saw nothing
    lock = RunLock.acquire(run_dir)  # this live process holds the run
    try:
        code = main(["run", str(suite), "--executor", "local", "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")])
    finally:
        lock.release()
    out = capsys.readouterr().out
    assert code == Exit.OK
    assert f"run {spec.run_id} is held by " in out and "skipped" in out
    assert "submitted" not in out and "1 run(s) not run here" in out
    assert not run_dir.metrics.exists()  # nothing trained


def test_a_garbage_lock_json_is_named_as_damaged_and_nothing_claims_submitted(tmp_path, capsys):
    suite = write(tmp_path, ONE_RUN_SUITE)
    spec = expand(load_suite(suite), suite)[0]
    run_dir = RunDir.of(tmp_path / "results", spec.suite, spec.run_id)
    run_dir.path.mkdir(parents=True)
    run_dir.lock_file.write_bytes(b"\x00garbage{{{")
    for executor in ("debug", "local"):
        code = main(["run", str(suite), "--executor", executor, "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")])
        out = capsys.readouterr().out
        assert code == Exit.OK
        assert f"run {spec.run_id}: its lock.json is unreadable (not a lock bench wrote; 11 bytes" in out, out
        assert f"delete {run_dir.lock_file}" in out and "submitted" not in out
        assert not run_dir.metrics.exists()


def test_a_file_that_is_not_a_checkpoint_is_named_at_validate_before_launch_and_at_load(tmp_path, capsys):
    suite = write(tmp_path, ONE_RUN_SUITE.replace("weights: random", "weights: pretrained, checkpoint: /etc/passwd"))
    expected = "backbone.checkpoint /etc/passwd is not a checkpoint ("
    assert main(["validate", str(suite)]) == Exit.USAGE
    assert expected in capsys.readouterr().out
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]) == Exit.MISSING_INPUT
    out = capsys.readouterr().out
    assert expected in out and "expected a PyTorch checkpoint (.pth/.pt" in out and "nothing was launched" in out
    from bench.models import create_backbone

    with pytest.raises(ValueError, match="/etc/passwd is not a checkpoint"):  # --skip-data-check: the run fails naming it
        create_backbone("dinov2_tiny", "pretrained", "/etc/passwd", 28)


# ---- provenance -------------------------------------------------------------------------------

def test_git_is_asked_without_optional_locks(monkeypatch):
    calls = []
    real = subprocess.run

    def run(cmd, **kwargs):
        calls.append((cmd, kwargs.get("env") or {}))
        return real(cmd, **kwargs)

    monkeypatch.setattr(provenance.subprocess, "run", run)
    provenance.git_state()
    assert calls and all(cmd[:2] == ["git", "--no-optional-locks"] and env.get("GIT_OPTIONAL_LOCKS") == "0" for cmd, env in calls)


@pytest.mark.parametrize("failure", [PermissionError(errno.EACCES, "Permission denied"), FileNotFoundError(errno.ENOENT, "git"),
                                     subprocess.CalledProcessError(128, ["git"], stderr="fatal: detected dubious ownership"),
                                     subprocess.TimeoutExpired(["git"], 10)])
def test_git_state_that_cannot_be_read_is_recorded_unknown_never_an_error(monkeypatch, failure):
    def run(cmd, **kwargs):
        raise failure

    monkeypatch.setattr(provenance.subprocess, "run", run)
    assert provenance.git_state() == {"commit": "unknown", "dirty": None}


def test_a_read_only_install_gives_its_git_state_and_leaves_no_index_lock(tmp_path, monkeypatch):
    mnt = tmp_path / "install"
    if not mount_tmpfs(mnt, "size=4m"):
        pytest.skip("needs root and `mount -t tmpfs` (the monkeypatched tests cover the logic)")
    try:
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "safe.directory=*"]
        (mnt / "bench").mkdir()
        (mnt / "bench" / "provenance.py").write_text("x\n")
        subprocess.run([*git, "init", "-q"], cwd=mnt, check=True)
        subprocess.run([*git, "add", "."], cwd=mnt, check=True)
        subprocess.run([*git, "commit", "-qm", "c"], cwd=mnt, check=True)
        os.utime(mnt / "bench" / "provenance.py", (1, 1))  # stat data changed: a locking `git status` would refresh the index
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        monkeypatch.setattr(provenance, "__file__", str(mnt / "bench" / "provenance.py"))
        monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
        monkeypatch.setenv("GIT_CONFIG_KEY_0", "safe.directory")
        monkeypatch.setenv("GIT_CONFIG_VALUE_0", "*")
        state = provenance.git_state()
        assert len(str(state["commit"])) == 40 and state["dirty"] is False
        assert not (mnt / ".git" / "index.lock").exists()
    finally:
        umount(mnt)
