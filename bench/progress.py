"""Where a run is: one event type for every phase, and the ways it is shown and kept.

A run reports :class:`RunProgress` events — ``prepare`` (preparing data, caching frozen-prefix
tokens: the set-up before the first step), ``resume`` (once, when it continues a checkpoint),
``train`` (each optimiser step), ``checkpoint`` (each ``last.pt`` written) and ``evaluate`` (each
split or transfer target scored, k of n) — to whatever callback its launcher passes. In a terminal
they drive a live bar; in a log (stdout not a terminal: ``make demo > log``, a Slurm job's output)
:class:`PlainProgress` prints a plain line at each tenth of training, at most every ``every_s``
seconds, and at each evaluation unit, so a log never sits silent through a long evaluation.

Rank 0 of every run also keeps its own record, whoever launched it (:func:`fan_out`, wired in
:func:`bench.job.run_job`): :class:`RunLog` appends plain lines to ``<run dir>/run.log`` across
attempts, and :class:`TensorBoardScalars` writes the training statistics and each evaluation
unit's main metric as TensorBoard scalars to ``<run dir>/tensorboard/`` (optional package
``tensorboard``). Neither can stop a run: a write that fails is said once and given up.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TextIO

Phase = Literal["prepare", "resume", "train", "checkpoint", "evaluate"]
SHOWN_STATS = ("loss", "accuracy", "reward_mean")
# GRPO-RM's surrogate loss is 0 on a batch's first pass at μ = 1 (ρ = 1 and the advantages are
# centred per group: docs/mechanism.md), so its progress shows what moves: the rollout policy's
# expected reward and the advantages' spread
REWARD_STATS = ("reward_mean", "adv_std", "adv_max", "clip_fraction")
PREPARING_DATA = "preparing data"
CACHING_TOKENS = "caching frozen-prefix tokens"


def shown_stats(stats: Mapping[str, float]) -> str:
    """The few numbers a progress line shows: reward and advantage statistics for a method that
    logs a reward (GRPO-RM), else loss / accuracy. 'reward_mean=0.412 adv_std=0.998 …'."""
    keys = REWARD_STATS if "reward_mean" in stats else SHOWN_STATS
    return " ".join(f"{k}={stats[k]:.3f}" for k in keys if isinstance(stats.get(k), (int, float)))


def clock_text(seconds: float) -> str:
    """'0:07', '12:31', '1:02:03'."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Pace:
    """Steps/s, elapsed time and ETA of one run's training, from its train events and a clock
    (injectable: tests hold it still). The rate counts this attempt's steps only (a resumed run's
    earlier steps took no time here); elapsed time runs from the run's first event."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started: float | None = None  # the run's first event (any phase)
        self._first: tuple[float, int] | None = None  # (time, step) of this attempt's first train event
        self.rate: float | None = None

    def see(self, event: "RunProgress") -> None:
        now = self.clock()
        if self.started is None:
            self.started = now
        if event.phase == "resume":
            self._first = (now, event.step)
        elif event.phase == "train":
            if self._first is None:  # steps before the first event: the set-up's, counted from the start
                self._first = (self.started, 0)
            since, step0 = self._first
            self.rate = (event.step - step0) / (now - since) if now > since and event.step > step0 else self.rate

    def elapsed(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    def text(self, event: "RunProgress") -> str:
        """'3.2 steps/s, elapsed 0:09, ETA 0:18' (ETA once a rate is known, training events only)."""
        parts = [f"{self.rate:.2f} steps/s" if self.rate else "", f"elapsed {clock_text(self.elapsed())}"]
        if event.phase == "train" and self.rate:
            parts.append(f"ETA {clock_text((event.total - event.step) / self.rate)}")
        return ", ".join(p for p in parts if p)
MAIN_METRICS = ("top1", "mIoU")  # an evaluation entry's headline number (classification / segmentation), as in the report


@dataclass(frozen=True)
class RunProgress:
    phase: Phase
    step: int = 0  # train, checkpoint: optimiser steps done; evaluate: units scored
    total: int = 0
    detail: str = ""  # evaluate: the unit just scored; resume: where from; checkpoint: where it is
    stats: Mapping[str, float] = field(default_factory=dict)  # train: the step's logged numbers (lr, grad_norm, the method's)
    epoch: int = 0  # train: the epoch this step is in, 1-based (0: not said)
    epochs: int = 0

    def position(self) -> str:
        """'epoch 2/2, step 29/58' (train), '3/16' otherwise."""
        where = f"{self.step}/{self.total}"
        if self.phase == "train":
            where = f"step {where}"
            if self.epochs:
                where = f"epoch {self.epoch}/{self.epochs}, {where}"
        return where

    def describe(self) -> str:
        """One short phrase: 'train epoch 1/2, step 40/90 loss=0.412', 'evaluate 3/16 (shift_palette)',
        'preparing data'."""
        if self.phase == "prepare":
            return self.detail
        if self.phase == "resume":
            return f"resumed from {self.detail}"
        if self.phase == "checkpoint":
            return f"checkpoint at {self.detail}"
        shown = shown_stats(self.stats)
        text = f"{self.phase} {self.position()}"
        if self.detail:
            text += f" ({self.detail})"
        return f"{text} {shown}".rstrip()


ProgressFn = Callable[[RunProgress], None]


class PlainProgress:
    """Progress as plain lines for logs: ``<label>: train epoch 1/2, step 9/90 loss=… | 3.10 steps/s,
    elapsed 0:03, ETA 0:26``. Training prints at each tenth of its steps (and at least every
    ``every_s`` seconds); every preparation phase, evaluation unit and resume prints."""

    def __init__(self, label: str, out: TextIO, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.out, self.every_s, self.clock = label, out, every_s, clock
        self.pace = Pace(clock)
        self._last_print = clock()
        self._last_tenth = -1

    def __call__(self, event: RunProgress) -> None:
        self.pace.see(event)
        if event.phase == "checkpoint":  # every few minutes: run.log has them, a job's stdout need not
            return
        if event.phase == "train":
            tenth = 10 * event.step // max(1, event.total)
            due = tenth > self._last_tenth or self.clock() - self._last_print >= self.every_s
            if not due:
                return
            self._last_tenth = tenth
        self.out.write(f"{self.label}: {event.describe()} | {self.pace.text(event)}\n")
        self.out.flush()
        self._last_print = self.clock()


UnitMetrics = Callable[[str], Mapping[str, Mapping[str, Any]]]
"""An evaluation unit's metric entries (entry name → its numbers), read after the unit is scored."""


def fan_out(launcher: ProgressFn | None, *listeners: ProgressFn) -> ProgressFn:
    """One callback for the training loop: every event to the run's own ``listeners`` (run log,
    TensorBoard), and to the ``launcher``'s callback all but ``checkpoint`` events — launchers'
    displays (live bars, tests' recorders) know resume, train and evaluate, and a checkpoint every
    few minutes is no news to them. The launcher's callback is called last, so an exception it
    raises (a test's barrier, Ctrl-C) finds the run's own record already written."""

    def send(event: RunProgress) -> None:
        for listener in listeners:
            listener(event)
        if launcher is not None and event.phase != "checkpoint":
            launcher(event)

    return send


def main_metrics(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, float]]:
    """entry → (metric name, value) of its headline metric; entries with none are left out."""
    out: dict[str, tuple[str, float]] = {}
    for entry, metrics in entries.items():
        name = next((m for m in MAIN_METRICS if isinstance(metrics, Mapping) and isinstance(metrics.get(m), (int, float))), None)
        if name is not None:
            out[entry] = (name, float(metrics[name]))
    return out


def _numbers(stats: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.6g}" for k, v in stats.items() if isinstance(v, (int, float)))


# the last line of an attempt that ended with a word (RunLog.close_attempt): anything else last
# means the process was killed before it could say so
_TERMINAL = re.compile(r"^\S+ (done|failed:|interrupted:|already done)")


class RunLog:
    """``<run dir>/run.log``: what happened to a run, one plain line per event, for people (the
    numbers of record are metrics.jsonl and result.json). Appended across attempts, so the whole
    history of a pre-empted, requeued run reads top to bottom: each attempt's start (host, pid,
    world size), where it resumed, each checkpoint, training every ``every`` steps (and the last)
    with its statistics, each evaluation unit with its main metric, and how the attempt ended
    (done, or the exception line). A line is written and closed at once (a SIGKILL loses at most
    the line being written); a write that fails (full disk) is dropped: this log never stops a run.
    """

    def __init__(self, path: Path, every: int, metrics_of: UnitMetrics | None = None) -> None:
        self.path, self.every, self.metrics_of = Path(path), max(1, every), metrics_of

    def line(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        text = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"{stamp} {text}\n")
        except OSError:
            pass

    def start_attempt(self, attempt: int, world_size: int, **facts: Any) -> None:
        """The first line of an attempt; before it, a note when the previous attempt's last line
        is not an ending (it was killed: SIGKILL, out of memory, node lost, pre-empted without
        grace)."""
        last = self._last_line()
        if last is not None and not _TERMINAL.match(last):
            self.line(f"attempt {attempt - 1} ended without a last word (killed: SIGKILL, out of memory, node failure or pre-emption)")
        shown = " ".join(f"{k}={v}" for k, v in facts.items() if v is not None)
        self.line(f"attempt {attempt} started on host={socket.gethostname()} pid={os.getpid()} world_size={world_size} {shown}".rstrip())

    def close_attempt(self, how: str) -> None:
        """The attempt's last line: 'done …', 'failed: <exception line>' or 'interrupted: …'."""
        self.line(how)

    def _last_line(self) -> str | None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 8192))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return None
        return lines[-1] if lines else None

    def __call__(self, event: RunProgress) -> None:
        if event.phase == "train":
            if event.step % self.every == 0 or event.step == event.total:
                self.line(f"train step {event.step}/{event.total} {_numbers(event.stats)}".rstrip())
        elif event.phase == "resume":
            self.line(f"resumed from {event.detail}")
        elif event.phase == "checkpoint":
            self.line(f"checkpoint at {event.detail}")
        elif event.phase == "evaluate":
            scores = main_metrics(self.metrics_of(event.detail)) if self.metrics_of else {}
            shown = ", ".join(f"{entry} {name}={value:.4f}" for entry, (name, value) in scores.items())
            self.line(f"evaluated {event.step}/{event.total} {event.detail}" + (f": {shown}" if shown else ""))


_EVENT_FILE = re.compile(r"^events\.out\.tfevents\.(\d+)\.")
MAX_ORDER_WAIT_S = 5.0


class TensorBoardScalars:
    """TensorBoard event files in ``folder`` (``<run dir>/tensorboard/``), written by rank 0:
    ``train/<stat>`` at every optimiser step (lr, grad_norm and the method's statistics: what
    metrics.jsonl logs) and ``eval/<entry>/<top1|mIoU>`` for each evaluation unit at the final
    step. ``tensorboard --logdir results/<suite>`` shows every run of a suite side by side.

    Resumed runs: the writer opens at the attempt's first step with ``purge_step`` there, so
    TensorBoard hides what an earlier attempt logged past its checkpoint and every step shows once;
    each checkpoint flushes the events, so a SIGKILL loses none a resume will not log again.
    Without the ``tensorboard`` package (``pip install 'grpo-rm-bench[tensorboard]'``) this says
    so once in the run log (``note``) and does nothing; a failing write is said once and given up.
    """

    def __init__(self, folder: Path, note: Callable[[str], None] | None = None, metrics_of: UnitMetrics | None = None) -> None:
        self.folder, self.note, self.metrics_of = Path(folder), note or (lambda message: print(message, file=sys.stderr)), metrics_of
        self.step = 0  # the training step evaluation scalars are logged at
        self._writer: Any = None
        self._off = False

    def _open(self, purge_step: int | None) -> Any:
        if self._writer is None and not self._off:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                self._off = True
                self.note(f"tensorboard is not installed ({exc}): no TensorBoard event files; pip install 'grpo-rm-bench[tensorboard]' to get them")
                return None
            self._after_earlier_files()
            self._writer = SummaryWriter(str(self.folder), purge_step=purge_step)
        return self._writer

    def _after_earlier_files(self) -> None:
        """TensorBoard reads a folder's event files in name order, and a file's name begins with
        the second it was opened in (then host, pid): this attempt's file must sort after every
        earlier attempt's, or the purge this one records would hide its own scalars. Two attempts
        within one second (tests) wait for the next second; an earlier file far in this host's
        future (clock skew between hosts) is said instead of waited for."""
        seconds = [int(m.group(1)) for f in self.folder.glob("events.out.tfevents.*") if (m := _EVENT_FILE.match(f.name))]
        wait = max(seconds, default=0) + 1 - time.time()
        if 0 < wait <= MAX_ORDER_WAIT_S:
            time.sleep(wait)
        elif wait > MAX_ORDER_WAIT_S:
            self.note(f"an earlier event file in {self.folder} is from {wait:.0f} s in this host's future (clock skew?): "
                      "TensorBoard may order this attempt's scalars before it")

    def __call__(self, event: RunProgress) -> None:
        if self._off:
            return
        try:
            self._record(event)
        except Exception as exc:  # noqa: BLE001 — tracking must never end a training run
            self._off = True
            self.note(f"TensorBoard writing failed ({exc.__class__.__name__}: {exc}): no more scalars this attempt")

    def _record(self, event: RunProgress) -> None:
        if event.phase == "resume":
            self.step = event.step
        elif event.phase == "train":
            self.step = event.step
            writer = self._open(purge_step=event.step)  # the attempt's first step: hide an earlier attempt's later ones
            if writer is not None:
                for key, value in event.stats.items():
                    writer.add_scalar(f"train/{key}", float(value), event.step)
        elif event.phase == "checkpoint":
            if self._writer is not None:
                self._writer.flush()
        elif event.phase == "evaluate" and self.metrics_of is not None:
            scores = main_metrics(self.metrics_of(event.detail))
            writer = self._open(purge_step=None) if scores else None
            if writer is not None:
                for entry, (name, value) in scores.items():
                    writer.add_scalar(f"eval/{entry}/{name}", value, self.step)
                writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001
                pass
            self._writer = None
