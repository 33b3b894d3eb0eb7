"""What a finished run keeps, loader workers sized to the CPUs a run has, and a CLI that stays
quiet in a closed pipe and shows only what matters (issue 23, item 7)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.features import clear_cache
from bench.job import run_job
from bench.launch import RunTask
from bench.store import RunDir
from bench.suite import expand, load_suite
from conftest import tiny_config
from test_store import ONE_RUN_SUITE, rows
from test_suite import write

REPO = Path(__file__).resolve().parents[1]


# ---- (1) a finished run keeps last.pt only ----------------------------------------------------

def test_a_finished_run_keeps_last_pt_without_optimizer_state_and_no_prev_pt(tmp_path, monkeypatch):
    run_dir = RunDir(tmp_path / "run")
    result = run_job(tiny_config("sft"), run_dir)
    assert run_dir.checkpoint.is_file() and Path(f"{run_dir.checkpoint}.sha256").is_file()
    assert not run_dir.prev_checkpoint.exists() and not Path(f"{run_dir.prev_checkpoint}.sha256").exists()
    state = torch.load(run_dir.checkpoint, weights_only=False)
    assert state.get("complete") and "optimizer" not in state and "schedule" not in state  # the final weights only
    assert run_dir.effective_state() == "done" and run_dir.corruption() is None

    # re-evaluation from the final weights alone: no step trained again, the same numbers
    log = run_dir.metrics.read_bytes()
    run_dir.result_file.unlink()
    shutil.rmtree(run_dir.evaluations_dir)
    clear_cache()
    again = run_job(tiny_config("sft"), run_dir)
    assert again["metrics"] == result["metrics"] and run_dir.metrics.read_bytes() == log
    assert run_dir.read_status()["resumed_from"]["complete"] is True

    # the digest check still guards last.pt: a damaged one makes the finished run corrupt
    data = bytearray(run_dir.checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x01
    run_dir.checkpoint.write_bytes(bytes(data))
    problem = run_dir.corruption()
    assert problem is not None and problem.path == run_dir.checkpoint and run_dir.effective_state() == "corrupt"


def test_an_already_finished_run_with_a_leftover_prev_pt_loses_it_on_the_next_run(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    result = run_job(tiny_config("sft"), run_dir, keep_checkpoints=True)
    assert run_dir.prev_checkpoint.is_file() and run_dir.checkpoint.is_file()  # --keep-checkpoints: both kept
    log = run_dir.metrics.read_bytes()
    assert run_job(tiny_config("sft"), run_dir, keep_checkpoints=True)["metrics"] == result["metrics"] and run_dir.prev_checkpoint.is_file()
    assert run_job(tiny_config("sft"), run_dir)["metrics"] == result["metrics"] and run_dir.metrics.read_bytes() == log  # a finished run from before: nothing trained, prev.pt deleted
    assert not run_dir.prev_checkpoint.exists() and not Path(f"{run_dir.prev_checkpoint}.sha256").exists()
    assert run_dir.checkpoint.is_file() and run_dir.corruption() is None


def test_bench_run_keep_checkpoints_keeps_both_and_is_no_part_of_the_run_id(tmp_path, capsys):
    suite = write(tmp_path, ONE_RUN_SUITE)
    spec = expand(load_suite(suite), suite)[0]
    args = [str(suite), "--reports", str(tmp_path / "reports")]
    assert main(["run", *args, "--results", str(tmp_path / "kept"), "--keep-checkpoints"]) == 0
    assert main(["run", *args, "--results", str(tmp_path / "lean")]) == 0
    kept, lean = RunDir.of(tmp_path / "kept", spec.suite, spec.run_id), RunDir.of(tmp_path / "lean", spec.suite, spec.run_id)
    assert kept.prev_checkpoint.is_file() and kept.checkpoint.is_file()
    assert lean.checkpoint.is_file() and not lean.prev_checkpoint.exists()
    assert kept.read_result()["config"] == lean.read_result()["config"] and kept.config.read_text() == lean.config.read_text()
    assert kept.read_result()["metrics"] == lean.read_result()["metrics"] and rows(kept) == rows(lean)
    assert "keep" not in json.dumps(kept.read_status())


def test_a_run_task_pickled_before_keep_checkpoints_still_runs_with_the_default(tmp_path):
    cfg = tiny_config("sft")
    task = RunTask(cfg.model_dump_json(), "s", str(tmp_path / "run"))
    del task.keep_checkpoints  # as unpickled from a job submitted before the option existed
    task = pickle.loads(pickle.dumps(task))
    assert task()["metrics"] and not (tmp_path / "run" / "prev.pt").exists()
    path = write(tmp_path, ONE_RUN_SUITE)
    spec = expand(load_suite(path), path)[0]
    assert RunTask.of(spec, tmp_path, True).keep_checkpoints and not RunTask.of(spec, tmp_path).keep_checkpoints
