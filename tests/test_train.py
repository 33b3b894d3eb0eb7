"""One run end to end on the tiny DINOv2-arch backbone: determinism, resume, result file."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from bench import train as train_module
from bench.features import clear_cache
from bench.store import RunDir
from bench.job import run_job
from bench.train import warmup_cosine
from conftest import tiny_config


def _metrics(run_dir: RunDir) -> list[dict]:
    return [json.loads(line) for line in run_dir.metrics.read_text().splitlines()]


def _numbers(run_dir: RunDir) -> list[dict]:
    """Every logged number of every step, without the wall-clock stamp (which no rerun repeats)."""
    return [{k: v for k, v in row.items() if k != "time"} for row in _metrics(run_dir)]


@pytest.mark.parametrize("method", ["sft", "grpo_rm"])
def test_same_seed_gives_identical_numbers(tmp_path, method):
    cfg = tiny_config(method)
    a = run_job(cfg, RunDir(tmp_path / "a"))
    clear_cache()  # the second run recomputes everything, prefix tokens included
    b = run_job(cfg, RunDir(tmp_path / "b"))
    assert a["metrics"] == b["metrics"]
    assert _numbers(RunDir(tmp_path / "a")) == _numbers(RunDir(tmp_path / "b"))
    other = run_job(tiny_config(method, seed=1), RunDir(tmp_path / "c"))
    assert _metrics(RunDir(tmp_path / "c"))[0]["loss"] != _metrics(RunDir(tmp_path / "a"))[0]["loss"]
    assert other["metrics"]["test"]["n"] == 24


def test_result_records_provenance_and_random_init(tmp_path):
    cfg = tiny_config("grpo_rm", method_params={"epsilon": 0.3})
    run_dir = RunDir(tmp_path / "r")
    run_job(cfg, run_dir, suite="s")
    result = json.loads(run_dir.result_file.read_text())
    assert result["run_id"] == cfg.run_id() and result["suite"] == "s"
    assert result["backbone"]["init"] == "random init" and result["backbone"]["random_init"] is True
    assert result["method_params"]["epsilon"] == 0.3 and result["method_params"]["mu"] == 1
    assert set(result["metrics"]) == {"test", "shift_background", "shift_palette", "shift_corruption"}
    assert result["metrics"]["shift_palette"]["shift"] is True and result["metrics"]["test"]["shift"] is False
    assert result["versions"]["torch"].startswith("2.11.0") and result["git"]["commit"]
    assert result["wall_time_s"] > 0 and result["protocol"]["steps"] == 2 * 3
    assert json.loads(run_dir.status_file.read_text())["state"] == "done"
    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, 7))
    for key in ("loss", "reward_mean", "adv_mean", "adv_std", "adv_max", "clip_fraction", "entropy", "accuracy", "p_true", "logit_norm", "margin", "time"):
        assert key in rows[0], key
    times = [r["time"] for r in rows]
    assert times == sorted(times) and result["git"] and abs(times[-1] - run_dir.status_file.stat().st_mtime) < 600  # wall-clock stamps
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert run_dir.result_file.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file


def test_result_records_cost_with_the_shared_prefix_build_apart(tmp_path):
    """A tiny run's cost block: its steps are the steps trained, every time and peak is positive,
    and the frozen-prefix build is charged to the first run of the backbone only: the second
    (other method, same seed, same process) reuses every split and pays nothing."""
    clear_cache()
    first = run_job(tiny_config("sft"), RunDir(tmp_path / "sft"))
    second = run_job(tiny_config("grpo_rm"), RunDir(tmp_path / "grpo"))
    for result in (first, second):
        cost = result["cost"]
        assert result["protocol"]["frozen_prefix_cached"] is True
        assert cost["steps"] == result["protocol"]["steps"] == 2 * 3
        assert cost["timed_steps"] == 2 * 3 - 1 and cost["first_step_s"] > 0  # the first step (warm-up) is apart
        assert 0 < cost["step_median_s"] and 0 < cost["step_mean_s"] and cost["step_mean_s"] * cost["timed_steps"] <= cost["train_s"]
        assert cost["train_s"] > 0 and cost["eval_s"] > 0
        assert cost["train_s"] + cost["eval_s"] + cost["shared_cache_s"] <= result["wall_time_s"]
        assert 1 < cost["peak_rss_mb"] < 2**20 and cost["peak_cuda_mb"] is None  # MB on CPU (ru_maxrss is KB), no GPU figure
    splits = 1 + len(first["metrics"])  # the training split and every evaluated split
    assert first["cost"]["shared_cache_built"] == splits and first["cost"]["shared_cache_s"] > 0 and first["cost"]["shared_cache_reused"] == 0
    assert second["cost"]["shared_cache_built"] == 0 and second["cost"]["shared_cache_s"] == 0 and second["cost"]["shared_cache_reused"] == splits


def test_mu_passes_multiply_optimizer_steps_and_clip(tmp_path):
    cfg = tiny_config("grpo_rm", method_params={"mu": 3, "epsilon": 0.05}, train={"lr": 3e-3, "head_lr": 3e-2})
    run_dir = RunDir(tmp_path / "mu")
    result = run_job(cfg, run_dir)
    rows = _metrics(run_dir)
    assert result["protocol"]["steps"] == 2 * 3 * 3
    assert all(r["clip_fraction"] == 0.0 for r in rows if r["pass"] == 0)
    assert max(r["clip_fraction"] for r in rows if r["pass"] > 0) > 0.0


def test_interrupted_run_resumes_to_identical_result(tmp_path, monkeypatch):
    cfg = tiny_config("grpo_rm", train={"epochs": 3})
    clean = run_job(cfg, RunDir(tmp_path / "clean"))

    # interrupt: fail in the middle of the third epoch, after two epoch checkpoints
    real_save = train_module.atomic_torch_save
    calls = {"n": 0}

    def crash_after_two(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(train_module, "atomic_torch_save", crash_after_two)
    broken = RunDir(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, broken)
    status = json.loads(broken.status_file.read_text())
    assert status["state"] == "interrupted" and "simulated kill" in status["traceback"]
    assert not broken.result_file.exists()
    monkeypatch.setattr(train_module, "atomic_torch_save", real_save)

    clear_cache()
    resumed = run_job(cfg, broken)
    assert resumed["metrics"] == clean["metrics"]
    assert _numbers(broken) == _numbers(RunDir(tmp_path / "clean"))
    final = json.loads(broken.status_file.read_text())
    assert final["attempts"] == 2 and final["state"] == "done" and "traceback" not in final
    # cost over both attempts: 9 steps, each attempt's first step apart (6 + 3 trained: 5 + 2 timed)
    cost = resumed["cost"]
    assert cost["steps"] == 9 and cost["timed_steps"] == 7 and cost["first_step_s"] > 0
    assert cost["train_s"] > cost["step_mean_s"] * 7
    # the first attempt reused the clean run's training tokens (its checkpoint kept that count); the
    # second, after clear_cache, built the training split and every evaluated split again
    assert cost["shared_cache_reused"] == 1 and cost["shared_cache_built"] == 1 + len(resumed["metrics"]) and cost["shared_cache_s"] > 0


def test_full_finetune_without_prefix_cache_trains_every_block(tmp_path):
    cfg = tiny_config("sft", model={"trainable_blocks": "all"})
    run_dir = RunDir(tmp_path / "full")
    result = run_job(cfg, run_dir)
    assert result["protocol"]["frozen_prefix_cached"] is False
    saved = torch.load(run_dir.checkpoint, weights_only=False)["model"]
    assert "vit.patch_embed.proj.weight" in saved and "vit.blocks.0.attn.qkv.weight" in saved


def test_warmup_cosine_schedule_shape():
    f = warmup_cosine(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)


@pytest.mark.parametrize("method", ["sft", "grpo_rm"])
def test_a_diverging_run_fails_and_leaves_no_result(tmp_path, method):
    """lr 1e6: the loss goes non-finite within a few steps; the run stops there as failed."""
    from bench.train import Diverged

    cfg = tiny_config(method, train={"lr": 1e6, "grad_clip": None})
    run_dir = RunDir(tmp_path / "run")
    with pytest.raises(Diverged, match=r"diverged at step \d+"):
        run_job(cfg, run_dir)
    status = run_dir.read_status()
    assert status["state"] == "failed" and status["error"].startswith("Diverged: diverged at step")
    assert not run_dir.is_done()
    logged = [json.loads(line) for line in run_dir.metrics.read_text().splitlines()] if run_dir.metrics.is_file() else []
    assert all(math.isfinite(row["loss"]) for row in logged)  # nothing non-finite was ever logged as a step


def test_check_finite_names_the_step():
    from bench.train import Diverged, check_finite

    check_finite(3, torch.tensor(1.0), torch.tensor(2.0))
    for loss, norm in ((float("nan"), 1.0), (1.0, float("inf"))):
        with pytest.raises(Diverged, match="diverged at step 7"):
            check_finite(7, torch.tensor(loss), torch.tensor(norm))


def test_grpo_rm_with_several_passes_gets_a_float32_head():
    from bench.distributed import DistContext
    from bench.built import BuiltRun

    assert BuiltRun(tiny_config("grpo_rm", method_params={"mu": 2}), DistContext()).model.head.fp32
    assert not BuiltRun(tiny_config("grpo_rm"), DistContext()).model.head.fp32
    assert not BuiltRun(tiny_config("sft"), DistContext()).model.head.fp32
