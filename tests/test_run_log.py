"""A run's own record for people: ``run.log`` (plain lines, appended across attempts) and
TensorBoard event files (``tensorboard/``), written by rank 0 whoever launched the run, kept
right across an interrupted, a failed and a finishing attempt, and never a reason to stop."""

from __future__ import annotations

import re
import sys
import time

import pytest

from bench import train as train_module
from bench.job import run_job
from bench.progress import RunLog, RunProgress, TensorBoardScalars, fan_out
from bench.store import RunDir
from conftest import tiny_config


def _messages(run_dir: RunDir) -> list[str]:
    lines = run_dir.run_log.read_text().splitlines()
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S", line) for line in lines), lines
    return [line.split(" ", 1)[1] for line in lines]


def test_run_log_and_tensorboard_across_an_interrupted_a_failed_and_a_finishing_attempt(tmp_path, monkeypatch):
    """Attempt 1 is interrupted after the mid-epoch checkpoint at step 4 (Ctrl-C at step 5);
    attempt 2 resumes there, trains to the end and fails while scoring the second evaluation unit;
    attempt 3 only evaluates (the first unit read back). 3 batches per epoch, 2 epochs."""
    monkeypatch.setattr(train_module, "LOG_EVERY", 2)  # training lines every 2 steps (and metrics.jsonl appends)
    cfg = tiny_config("grpo_rm", train={"checkpoint_every_min": 1e-6})  # every batch ends in a checkpoint
    run_dir = RunDir(tmp_path / "run")
    units = list(cfg.evaluation_splits())

    seen: list[RunProgress] = []

    def interrupt(event: RunProgress) -> None:
        seen.append(event)
        if event.phase == "train" and event.step == 5:
            raise KeyboardInterrupt("simulated pre-emption")

    def fail(event: RunProgress) -> None:
        assert event.phase != "checkpoint"  # launchers' callbacks never see checkpoints (fan_out)
        if event.phase == "evaluate" and event.step == 2:
            raise RuntimeError("simulated evaluation failure\nsecond line")

    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, run_dir, progress=interrupt)
    # the set-up before the first step is a phase of its own; each step says its epoch
    assert seen[0] == RunProgress("prepare", detail="preparing data")
    assert [e.describe() for e in seen if e.phase == "prepare"][-1] in ("preparing data", "caching frozen-prefix tokens")
    assert [(e.epoch, e.epochs, e.step) for e in seen if e.phase == "train"] == [(1, 2, 1), (1, 2, 2), (1, 2, 3), (2, 2, 4), (2, 2, 5)]
    assert seen[-1].describe().startswith("train epoch 2/2, step 5/6 reward_mean=") and "loss=" not in seen[-1].describe()
    with pytest.raises(RuntimeError):
        run_job(cfg, run_dir, progress=fail)
    result = run_job(cfg, run_dir)
    rows = run_dir.read_metrics()
    assert [r["step"] for r in rows] == list(range(1, 7))

    log = _messages(run_dir)
    starts = [i for i, m in enumerate(log) if re.match(r"attempt \d started", m)]
    assert len(starts) == 3 and not any("without a last word" in m for m in log)  # each attempt said how it ended
    a1, a2, a3 = log[starts[0]:starts[1]], log[starts[1]:starts[2]], log[starts[2]:]
    assert re.fullmatch(rf"attempt 1 started on host=\S+ pid=\d+ world_size=1 run_id={cfg.run_id()} checkpoint_every_min=1e-06", a1[0])
    assert a1[1:] == [
        "checkpoint at epoch 0, batch 1 of 3, step 1 of 6",
        a1[2],
        "checkpoint at epoch 0, batch 2 of 3, step 2 of 6",
        "checkpoint at epoch 1, step 3 of 6",
        a1[5],
        "checkpoint at epoch 1, batch 1 of 3, step 4 of 6",
        "interrupted: KeyboardInterrupt: simulated pre-emption",
    ]
    for line, row in ((a1[2], rows[1]), (a1[5], rows[3])):  # every LOG_EVERY steps: the step's logged numbers
        assert line.startswith(f"train step {row['step']}/6 lr={row['lr']:.6g} grad_norm={row['grad_norm']:.6g} ")
        assert f" loss={row['loss']:.6g}" in line and f" reward_mean={row['reward_mean']:.6g}" in line
    assert a2[0].startswith("attempt 2 started") and a2[1] == "resumed from epoch 1, batch 1 of 3, step 4 of 6"
    assert a2[2:5] == ["checkpoint at epoch 1, batch 2 of 3, step 5 of 6", a2[3], "checkpoint at epoch 2 (final weights), step 6 of 6"]
    assert a2[3].startswith("train step 6/6 ")  # the last step, whatever LOG_EVERY
    assert a2[5:] == [f"evaluated {k}/4 {u}: {u} top1={result['metrics'][u]['top1']:.4f}" for k, u in enumerate(units[:2], 1)] + [
        "failed: RuntimeError: simulated evaluation failure | second line"]
    assert a3[1] == "resumed from the final weights (step 6): training is done, evaluating"
    assert a3[2:-1] == [f"evaluated {k}/4 {u}: {u} top1={result['metrics'][u]['top1']:.4f}" for k, u in enumerate(units, 1)]
    assert a3[-1].startswith("done: result.json written")

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run_dir.tensorboard_dir))
    board.Reload()
    tags = set(board.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/reward_mean", "train/accuracy"} <= tags
    assert {f"eval/{u}/top1" for u in units} <= tags
    for key in ("loss", "lr", "grad_norm", "reward_mean"):  # step 5 was logged by attempt 1 too: hidden by attempt 2's purge
        events = board.Scalars(f"train/{key}")
        assert [e.step for e in events] == list(range(1, 7)), key
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6, abs=1e-12), key
    for u in units:  # at the final step (the first unit again by attempt 3: the same number twice)
        events = board.Scalars(f"eval/{u}/top1")
        assert {e.step for e in events} == {6} and all(e.value == pytest.approx(result["metrics"][u]["top1"], rel=1e-6) for e in events)


def test_without_tensorboard_the_run_log_says_so_once_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what a missing package looks like to the import
    log = RunLog(tmp_path / "run.log", every=2, metrics_of=lambda unit: {unit: {"top1": 0.5, "n": 10}})
    board = TensorBoardScalars(tmp_path / "tensorboard", log.line, log.metrics_of)
    seen: list[str] = []
    send = fan_out(lambda event: seen.append(event.phase), log, board)
    for step in (1, 2, 3):
        send(RunProgress("train", step, 3, stats={"loss": 1.0, "lr": 1e-4}))
    send(RunProgress("checkpoint", 3, 3, detail="epoch 1, step 3 of 3"))
    send(RunProgress("evaluate", 1, 1, detail="test"))
    board.close()
    messages = [line.split(" ", 1)[1] for line in (tmp_path / "run.log").read_text().splitlines()]
    assert len([m for m in messages if "tensorboard is not installed" in m]) == 1
    assert messages[0].startswith("tensorboard is not installed") and "pip install 'grpo-rm-bench[tensorboard]'" in messages[0]
    assert messages[1:] == ["train step 2/3 loss=1 lr=0.0001", "train step 3/3 loss=1 lr=0.0001", "checkpoint at epoch 1, step 3 of 3",
                            "evaluated 1/1 test: test top1=0.5000"]
    assert seen == ["train", "train", "train", "evaluate"]  # the launcher's callback: everything but checkpoints
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_opens_at_the_attempts_first_step_and_flushes_at_each_checkpoint(tmp_path, monkeypatch):
    """What a SIGKILL cannot undo: events reach the file at every checkpoint (an explicit flush:
    on a buffered filesystem nothing else would write them), and a resumed attempt's writer purges
    from its first step. A stand-in SummaryWriter records the calls."""
    pytest.importorskip("tensorboard")
    import torch.utils.tensorboard as tb

    calls: list[tuple] = []

    class Recorder:
        def __init__(self, log_dir: str, purge_step: int | None = None) -> None:
            calls.append(("open", log_dir, purge_step))

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            calls.append(("scalar", tag, value, step))

        def flush(self) -> None:
            calls.append(("flush",))

        def close(self) -> None:
            calls.append(("close",))

    monkeypatch.setattr(tb, "SummaryWriter", Recorder)
    board = TensorBoardScalars(tmp_path / "tb", metrics_of=lambda unit: {f"{unit}/knn": {"top1": 0.25, "k": 20}, f"{unit}/sr": {"top1": 0.5}})
    board(RunProgress("resume", 4, 6, detail="epoch 1, batch 1 of 3, step 4 of 6"))
    board(RunProgress("train", 5, 6, stats={"loss": 0.5, "lr": 1e-4}))
    board(RunProgress("checkpoint", 5, 6, detail="epoch 1, batch 2 of 3, step 5 of 6"))
    board(RunProgress("train", 6, 6, stats={"loss": 0.25, "lr": 0.0}))
    board(RunProgress("evaluate", 1, 1, detail="transfer/cifar10"))
    board.close()
    assert calls == [
        ("open", str(tmp_path / "tb"), 5),
        ("scalar", "train/loss", 0.5, 5), ("scalar", "train/lr", 1e-4, 5),
        ("flush",),
        ("scalar", "train/loss", 0.25, 6), ("scalar", "train/lr", 0.0, 6),
        ("scalar", "eval/transfer/cifar10/knn/top1", 0.25, 6), ("scalar", "eval/transfer/cifar10/sr/top1", 0.5, 6), ("flush",),
        ("close",),
    ]


def test_an_attempts_event_file_sorts_after_an_earlier_attempts_of_the_same_second(tmp_path):
    """TensorBoard reads event files in name order (creation second, host, pid): an attempt that
    opens its file in the second an earlier one did — on a host or pid that sorts first — must
    still come after it, or its purge would hide its own scalars."""
    pytest.importorskip("tensorboard")
    folder = tmp_path / "tensorboard"
    folder.mkdir()
    earlier = folder / f"events.out.tfevents.{int(time.time()):010d}.zzz-other-host.99999.0"
    earlier.write_bytes(b"")
    board = TensorBoardScalars(folder)
    board(RunProgress("train", 5, 6, stats={"loss": 0.5}))
    board.close()
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 2 and files[0] == earlier.name


def test_a_run_log_that_cannot_be_written_never_stops_the_run(tmp_path):
    log = RunLog(tmp_path / "missing-folder" / "run.log", every=1)
    log(RunProgress("train", 1, 1, stats={"loss": 0.5}))
    log.start_attempt(2, 1)
    log.close_attempt("done")
    assert not (tmp_path / "missing-folder").exists()
