"""Run a suite's runs in this process, one after another, with a progress display.

The ``debug`` executor: the caller passes only runs that are not done; interrupted runs resume
from their checkpoint. Runs share in-process caches (frozen-prefix tokens), which makes this the
fastest way through small suites such as the demo.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from bench.io import disk_error
from bench.progress import Pace, PlainProgress, RunProgress, shown_stats
from bench.suite import RunSpec
from bench.store import RunDir, RunHeld


@dataclass(frozen=True)
class RunOutcome:
    spec: RunSpec
    state: str  # "done", "skipped" (already done), "held" (another live process trains it), "failed" or "submitted" (queued on Slurm)
    error: str | None = None
    disk: bool = False  # failed because a disk was full, over quota or read-only (Exit.NO_SPACE)


def describe(spec: RunSpec) -> str:
    c = spec.config
    tuning = f" tuning {', '.join(f'{k}={v}' for k, v in json.loads(spec.record).get('tuned_values', {}).items())}" if spec.stage == "tune" else ""
    return f"{method_label(c)} seed={c.seed} {c.data.name}{tuning} (run {spec.run_id})"


def method_label(config) -> str:
    """'grpo_rm' or, for a variant, 'grpo_rm{mu=2}': the method's settings that differ from its defaults."""
    from bench.methods import METHODS

    defaults = METHODS.get(config.method.name).Params().model_dump()
    changed = {k: v for k, v in config.method.resolved_params().items() if defaults.get(k) != v and k != "ignore_index"}
    return config.method.name + ("{" + ", ".join(f"{k}={v}" for k, v in changed.items()) + "}" if changed else "")


class LiveRun:
    """One run's line in the live view: description (with the phase: preparing data, caching
    frozen-prefix tokens, evaluation), the bar over training steps then evaluation units, the
    shown statistics (reward / advantages for GRPO-RM, loss otherwise), the epoch, and the pace
    (steps/s, elapsed, ETA: :class:`bench.progress.Pace`, on ``clock``)."""

    def __init__(self, progress: Progress, label: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.progress, self.label = progress, label
        self.pace = Pace(clock)
        self.task = progress.add_task(label, total=None, stats="", pace="")
        self.last_train: RunProgress | None = None

    def _line(self, text: str) -> None:
        """A line that stays above the bar: what a refresh of the bar may skip (a short phase, an
        epoch's end) is still on the screen afterwards."""
        self.progress.console.print(f"{self.label}: {text}", markup=False, soft_wrap=True)

    def _epoch_done(self, event: RunProgress) -> None:
        self._line(f"epoch {event.epoch}/{event.epochs} done at step {event.step}/{event.total} ({self.pace.text(event)})")

    def __call__(self, event: RunProgress) -> None:
        self.pace.see(event)
        if event.phase == "resume":
            self._line(event.describe())
            return
        if event.phase == "prepare":
            self._line(str(event.detail))
            self.progress.update(self.task, description=f"{self.label} · {event.detail}", pace=self.pace.text(event))
            return
        last = self.last_train
        if last is not None and last.epochs and (event.phase != "train" or event.epoch != last.epoch):
            self._epoch_done(last)  # the epoch before this event ended
            self.last_train = None
        if event.phase == "train":
            self.last_train = event
            epoch = f"epoch {event.epoch}/{event.epochs} " if event.epochs else ""
            stats, description = epoch + shown_stats(event.stats), self.label
        else:
            stats, description = f"evaluating {event.detail}", f"{self.label} · eval"
        self.progress.update(self.task, completed=event.step, total=event.total, stats=stats, description=description, pace=self.pace.text(event))


LIVE_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TextColumn("{task.fields[pace]}"))


def run_local(specs: list[RunSpec], results_root: Path, console: Console | None = None,
              threads: Callable[[RunSpec], int] | None = None, keep_checkpoints: bool = False,
              clock: Callable[[], float] = time.monotonic) -> list[RunOutcome]:
    """Each run in turn in this process. In a terminal, a live bar per run (phase, training steps
    with epoch, statistics, steps/s, elapsed and ETA, then evaluation units); otherwise plain
    progress lines (:class:`PlainProgress`). ``clock``: the pace's (tests hold it still)."""
    console = console or Console(highlight=False)  # user text is never highlighted (quadratic)
    outcomes: list[RunOutcome] = []
    live = console.is_terminal
    with Progress(*LIVE_COLUMNS, console=console, transient=False, disable=not live) as progress:
        overall = progress.add_task("suite", total=len(specs), stats="", pace="")
        for number, spec in enumerate(specs, 1):
            run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
            if live:
                report = LiveRun(progress, describe(spec), clock)
            else:
                console.print(f"run {number}/{len(specs)}: {describe(spec)}", markup=False, soft_wrap=True)
                report = PlainProgress(f"  {spec.run_id}", console.file, clock=clock)
            try:
                from bench.job import run_job  # torch and the model code: imported when a run starts
                from bench.seeding import math_threads

                with math_threads(threads(spec)) if threads is not None else nullcontext():
                    result = run_job(spec.config, run_dir, spec.suite, report, stage=spec.stage_record,
                                         **({"keep_checkpoints": True} if keep_checkpoints else {}))
                outcomes.append(RunOutcome(spec, "done"))
                accs = " ".join(f"{split}={100 * m.get('top1', m.get('mIoU', float('nan'))):.1f}" for split, m in result["metrics"].items())
                console.print(f"done {describe(spec)} in {result['wall_time_s']:.0f}s: top-1 / mIoU {accs}", markup=False, soft_wrap=True)
            except RunHeld as held:  # another live process trains this run: nothing was touched
                outcomes.append(RunOutcome(spec, "held", str(held)))
                console.print(str(held), markup=False, soft_wrap=True)
            except Exception as exc:  # recorded in status.json with its traceback; go on with the rest
                from bench.job import failure_line

                line = failure_line(exc, run_dir.path)
                outcomes.append(RunOutcome(spec, "failed", line, disk=disk_error(exc) is not None))
                console.print(Text.assemble(("failed", "red"), f" {describe(spec)}: {line} (traceback in {run_dir.status_file})"), soft_wrap=True)
            progress.advance(overall)
    return outcomes
