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


# ---- (2) num_workers from the CPUs the run has ------------------------------------------------

@pytest.mark.parametrize("cpus,expected", [(1, 0), (2, 1), (3, 2), (9, 8), (64, 8)])
def test_num_workers_defaults_to_the_usable_cpus_minus_one_at_most_8(monkeypatch, cpus, expected):
    from bench.config import DataConfig

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert DataConfig().num_workers == "auto" and DataConfig().workers() == expected
    assert DataConfig(num_workers="auto").workers() == expected
    assert DataConfig(num_workers=3).workers() == 3  # set explicitly: as set, whatever the CPUs


def test_the_num_workers_default_leaves_run_ids_unchanged(monkeypatch):
    """num_workers is no part of a run's identity: ids computed with the old fixed default (4),
    with 'auto' on any CPU count, and with any explicit count are one id."""
    from bench.config import RunConfig

    cfg = tiny_config("sft")
    ids = set()
    for cpus in (1, 2, 16):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)), raising=False)
        ids.add(cfg.run_id())
    tree = cfg.model_dump(mode="json")
    for workers in (0, 4, "auto"):
        ids.add(RunConfig(**{**tree, "data": {**tree["data"], "num_workers": workers}}).run_id())
    assert len(ids) == 1 and "num_workers" not in cfg.canonical()["data"]
    assert RunConfig.model_validate_json(cfg.model_dump_json()).data.num_workers == "auto"  # what a Slurm task carries
    assert ids == {"0b93dcb7adf7"}  # tiny_config("sft")'s id before num_workers became 'auto' (fixed default 4)


def test_a_run_starts_as_many_loader_workers_as_auto_resolves_to(monkeypatch):
    """The loader gets the resolved count (mocked affinity), not a fixed 4."""
    import bench.built as built_module
    from bench.distributed import current

    seen = []
    real = built_module.SplitInputs

    def spy(data, transform, num_workers=0, *args, **kwargs):
        seen.append(num_workers)
        return real(data, transform, 0, *args, **kwargs)

    monkeypatch.setattr(built_module, "SplitInputs", spy)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    job = built_module.BuiltRun(tiny_config("sft", model={"cache_frozen_prefix": False}), current())
    job.inputs(job.cfg.data.resolved_train_split)
    assert seen == [2]


# ---- (3) no BrokenPipe traceback ----------------------------------------------------------------

MANY_RUNS_SUITE = ONE_RUN_SUITE.replace("  seed: [0]", "  seed: [" + ", ".join(str(i) for i in range(300)) + "]")


def test_status_json_into_a_closed_pipe_exits_quietly_without_a_traceback(tmp_path):
    """`bench status --json | head -c 10`: the JSON of 300 runs (more than a pipe holds) meets a
    reader that has gone; the command ends with 141 (128 + SIGPIPE) and says nothing on stderr."""
    suite = write(tmp_path, MANY_RUNS_SUITE)
    err = tmp_path / "stderr.txt"
    script = (f"{sys.executable} -m bench.cli status {suite} --json --results {tmp_path / 'results'} 2>{err} | head -c 10; "
              'echo " exit=${PIPESTATUS[0]}"')
    out = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.stdout.startswith('{\n  "suite"'[:10]) and out.stdout.rstrip().endswith("exit=141"), out
    assert "Traceback" not in err.read_text() and "BrokenPipe" not in err.read_text(), err.read_text()


def test_a_pipe_closed_before_anything_is_written_ends_the_same_way(tmp_path):
    """The deterministic form: the reader closes its end before the command writes a byte."""
    suite = write(tmp_path, ONE_RUN_SUITE)
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "status", str(suite), "--json", "--results", str(tmp_path / "results")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


# ---- (4) bench config: --diff, and no section a run never reads -------------------------------

def _config_yaml(out: str) -> dict:
    import yaml

    return yaml.safe_load("\n".join(line for line in out.splitlines() if not line.startswith("#")))


def test_config_diff_lists_only_the_values_that_differ_from_the_defaults(tmp_path, capsys):
    suite = write(tmp_path, ONE_RUN_SUITE)
    assert main(["config", str(suite), "--diff", "-o", "train.lr=3e-4", "-o", "train.weight_decay=0.05"]) == 0
    shown = _config_yaml(capsys.readouterr().out)
    assert shown == {
        "backbone": {"name": "dinov2_tiny", "weights": "random", "img_size": 28},
        "model": {"trainable_blocks": 1},
        "data": {"params": {"img_size": 28, "train_size": 32, "eval_size": 16}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 3e-4},  # weight_decay 0.05 is the default: not a difference
        "method": {"name": "sft"},
    }, shown


def test_config_diff_shows_method_parameters_that_differ_from_the_methods_defaults(tmp_path, capsys):
    suite = write(tmp_path, ONE_RUN_SUITE.replace("method: [sft]", "method: [{name: grpo_rm, params: {epsilon: 0.3}}]"))
    assert main(["config", str(suite), "--diff"]) == 0
    assert _config_yaml(capsys.readouterr().out)["method"] == {"name": "grpo_rm", "params": {"epsilon": 0.3}}


def test_config_leaves_out_the_seg_section_of_a_classification_run_and_keeps_it_for_segmentation(tmp_path, capsys):
    suite = write(tmp_path, ONE_RUN_SUITE)
    assert main(["config", str(suite)]) == 0
    out = capsys.readouterr().out
    shown = _config_yaml(out)
    assert "seg" not in shown and "transfer" not in shown and {"backbone", "data", "method", "model", "train"} <= set(shown)
    assert "seg (fmnist_composites is a classification dataset)" in out
    seg = write(tmp_path, ONE_RUN_SUITE.replace("name: fmnist_composites,", "name: fmnist_composites_seg,"), "seg.yaml")
    assert main(["config", str(seg)]) == 0
    shown = _config_yaml(capsys.readouterr().out)
    assert shown["seg"]["crop"] == 512 and "transfer" not in shown
