"""Where a run is: one event type for every phase, and the two ways it is shown.

A run reports :class:`RunProgress` events — ``resume`` (once, when it continues a checkpoint),
``train`` (each optimiser step) and ``evaluate`` (each split or transfer target scored, k of n) —
to whatever callback its launcher passes. In a terminal they drive a live bar; in a log (stdout not
a terminal: ``make demo > log``, a Slurm job's output) :class:`PlainProgress` prints a plain line
at each tenth of training, at most every ``every_s`` seconds, and at each evaluation unit, so a
log never sits silent through a long evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, TextIO

Phase = Literal["resume", "train", "evaluate"]
SHOWN_STATS = ("loss", "accuracy", "reward_mean")


@dataclass(frozen=True)
class RunProgress:
    phase: Phase
    step: int = 0  # train: optimiser steps done; evaluate: units scored
    total: int = 0
    detail: str = ""  # evaluate: the unit just scored; resume: where from
    stats: Mapping[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One short phrase: 'train 40/90 loss=0.412', 'evaluate 3/16 (shift_palette)'."""
        if self.phase == "resume":
            return f"resumed from {self.detail}"
        shown = " ".join(f"{k}={self.stats[k]:.3f}" for k in SHOWN_STATS if k in self.stats)
        text = f"{self.phase} {self.step}/{self.total}"
        if self.detail:
            text += f" ({self.detail})"
        return f"{text} {shown}".rstrip()


ProgressFn = Callable[[RunProgress], None]


class PlainProgress:
    """Progress as plain lines for logs: ``<label>: train 9/90 loss=…``. Training prints at each
    tenth of its steps (and at least every ``every_s`` seconds); every evaluation unit and every
    resume prints."""

    def __init__(self, label: str, out: TextIO, every_s: float = 60.0) -> None:
        self.label, self.out, self.every_s = label, out, every_s
        self._last_print = time.monotonic()
        self._last_tenth = -1

    def __call__(self, event: RunProgress) -> None:
        if event.phase == "train":
            tenth = 10 * event.step // max(1, event.total)
            due = tenth > self._last_tenth or time.monotonic() - self._last_print >= self.every_s
            if not due:
                return
            self._last_tenth = tenth
        self.out.write(f"{self.label}: {event.describe()}\n")
        self.out.flush()
        self._last_print = time.monotonic()
