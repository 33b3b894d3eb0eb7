"""What a person watching a run sees (issue 23, item 5): plain lines and the live bar carry the
epoch, steps/s, elapsed time and an ETA; data preparation and caching are phases of their own
(also in `bench status`); GRPO-RM shows reward and advantage statistics, not its surrogate loss.

Every test holds the system still: a fixed list of progress events and a fake clock, never a race."""

from __future__ import annotations

import io

import torch
from rich.console import Console
from rich.progress import Progress

from bench import job as job_module
from bench.methods import build_method
from bench.progress import CACHING_TOKENS, PREPARING_DATA, PlainProgress, RunProgress
from bench.runner import LIVE_COLUMNS, LiveRun, run_local
from bench.status import progress_text
from bench.suite import expand, load_suite
from test_suite import write


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# one run: 2 epochs of 4 steps, 2 s of set-up, then 0.5 s per step; an evaluation unit at the end
def events(clock: FakeClock, stats=None):
    stats = stats or {"loss": 0.25, "lr": 1e-4}
    yield RunProgress("prepare", detail=PREPARING_DATA)
    clock.now += 1.0
    yield RunProgress("prepare", detail=CACHING_TOKENS)
    clock.now += 1.0
    for step in range(1, 9):
        clock.now += 0.5
        yield RunProgress("train", step, 8, stats=stats, epoch=1 + (step - 1) // 4, epochs=2)
    clock.now += 3.0
    yield RunProgress("evaluate", 1, 1, detail="test")


def test_plain_lines_carry_phase_epoch_steps_per_second_elapsed_and_eta():
    clock, out = FakeClock(), io.StringIO()
    plain = PlainProgress("  run1", out, clock=clock)
    for event in events(clock):
        plain(event)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  run1: preparing data | elapsed 0:00"
    assert lines[1] == "  run1: caching frozen-prefix tokens | elapsed 0:01"
    # 8 steps of 0.5 s after 2 s of set-up: the first step's rate counts the set-up (nothing else
    # to go by), then the rate is steps over time since that step
    assert "  run1: train epoch 1/2, step 1/8 loss=0.250 | 0.40 steps/s, elapsed 0:02, ETA 0:18" == lines[2]
    assert "  run1: train epoch 2/2, step 5/8 loss=0.250 | 1.11 steps/s, elapsed 0:04, ETA 0:03" == lines[6]
    assert lines[9].startswith("  run1: train epoch 2/2, step 8/8 loss=0.250 | ") and lines[9].endswith("ETA 0:00")
    assert lines[10].startswith("  run1: evaluate 1/1 (test) | ") and "ETA" not in lines[10]


def _grpo_rm_stats() -> dict[str, float]:
    """A real GRPO-RM step's statistics at μ = 1 (the first and only pass: loss 0 by construction)."""
    torch.manual_seed(0)
    method = build_method("grpo_rm", {})
    logits, labels = torch.randn(8, 5, requires_grad=True), torch.randint(0, 5, (8,))
    out = method.loss(logits, labels, method.rollout(logits, labels, None))
    return dict(out.stats)


def test_grpo_rm_progress_shows_reward_and_advantage_stats_not_the_surrogate_loss():
    stats = _grpo_rm_stats()
    assert abs(stats["loss"]) < 1e-6  # what the progress used to show as loss=-0.000
    clock, out = FakeClock(), io.StringIO()
    plain = PlainProgress("  run1", out, clock=clock)
    for event in events(clock, stats):
        plain(event)
    train_lines = [line for line in out.getvalue().splitlines() if "train epoch" in line]
    assert train_lines and all("reward_mean=" in line and "adv_std=" in line for line in train_lines)
    assert not any("loss=" in line for line in train_lines)
    sft = RunProgress("train", 1, 2, stats={"loss": 0.5}, epoch=1, epochs=1).describe()
    assert sft == "train epoch 1/1, step 1/2 loss=0.500"  # methods without a reward keep their loss


def test_live_bar_in_a_terminal_shows_the_preparation_phase_then_epoch_steps_per_second_and_eta():
    clock = FakeClock()
    console = Console(file=io.StringIO(), force_terminal=True, width=240, color_system=None, record=True)
    with Progress(*LIVE_COLUMNS, console=console, auto_refresh=False, get_time=clock) as progress:
        live = LiveRun(progress, "grpo_rm seed=0 tiny (run r1)", clock)
        frames = []
        for event in events(clock, _grpo_rm_stats()):
            live(event)
            progress.refresh()
            frames.append(console.export_text(clear=True))
    assert "grpo_rm seed=0 tiny (run r1) · preparing data" in frames[0]
    assert "· caching frozen-prefix tokens" in frames[1] and "elapsed 0:01" in frames[1]
    assert "5/8" in frames[6] and "epoch 2/2" in frames[6] and "1.11 steps/s, elapsed 0:04, ETA 0:03" in frames[6]
    assert "reward_mean=" in frames[6] and "loss=" not in frames[6]
    assert "evaluating test" in frames[-1]


TINY_SUITE = """
name: tiny
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  model: {trainable_blocks: 1}
  data: {name: fmnist_composites, params: {img_size: 28, train_size: 32, eval_size: 16}}
  train: {epochs: 2, batch_size: 16}
matrix:
  method: [grpo_rm]
  seed: [0]
"""


def test_run_local_under_a_terminal_wires_the_live_bar(tmp_path, monkeypatch):
    """The in-process executor in a (forced) terminal: a stand-in for run_job sends the fixed events,
    and the screen is read at the data-preparation phase and after training."""
    suite_path = write(tmp_path, TINY_SUITE)
    specs = expand(load_suite(suite_path), suite_path)
    clock = FakeClock()
    console = Console(file=io.StringIO(), force_terminal=True, width=240, color_system=None, record=True)
    frames: dict[str, str] = {}

    def fake_run_job(cfg, run_dir, suite, report, **kwargs):
        assert isinstance(report, LiveRun)
        for event in events(clock):
            report(event)
            if event.phase == "prepare" and event.detail == PREPARING_DATA or event.phase == "train" and event.step == 5:
                report.progress.refresh()
                frames[event.phase] = console.export_text(clear=True)
        return {"metrics": {"test": {"top1": 0.5}}, "wall_time_s": 10}

    monkeypatch.setattr(job_module, "run_job", fake_run_job)
    outcomes = run_local(specs, tmp_path / "results", console=console, clock=clock)
    assert [o.state for o in outcomes] == ["done"]
    assert "preparing data" in frames["prepare"]
    assert "epoch 2/2" in frames["train"] and "1.11 steps/s, elapsed 0:04, ETA 0:03" in frames["train"]


def test_bench_status_shows_the_preparation_phases():
    assert progress_text({"phase": "prepare"}, 0, "running") == "preparing data"
    assert progress_text({"phase": "cache"}, 0, "running") == "caching frozen-prefix tokens"
    assert progress_text({"phase": "train", "total_steps": 8}, 3, "running") == "train 3/8"


def test_a_run_under_a_real_pseudo_terminal_shows_the_data_preparation_phase_and_eta(tmp_path):
    """`bench run` with its stdout on a pseudo-terminal (pty.openpty): the live view is on, and
    the preparation phase and each epoch's end (steps/s, elapsed, ETA) are printed as lines that
    stay, so what is checked never depends on when the bar happened to refresh."""
    import os
    import pty
    import subprocess
    import sys

    suite = tmp_path / "tiny.yaml"
    suite.write_text(
        "name: tiny\n"
        "defaults:\n"
        "  backbone: {name: dinov2_tiny, weights: random, img_size: 28}\n"
        "  model: {trainable_blocks: 1}\n"
        "  data: {name: fmnist_composites, params: {img_size: 28, train_size: 48, eval_size: 24}}\n"
        "  train: {epochs: 2, batch_size: 16, eval_batch_size: 32}\n"
        "matrix: {method: [sft], seed: [0]}\n")
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(suite), "--results", str(tmp_path / "r"),
                             "--reports", str(tmp_path / "p")], stdin=follower, stdout=follower, stderr=follower, env=env, cwd=tmp_path)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=300) == 0
    out = b"".join(chunks).decode("utf-8", "replace")
    assert "preparing data" in out
    assert "epoch 1/2 done at step" in out and "epoch 2/2 done at step" in out
    assert "steps/s" in out and "ETA" in out
