"""What every ``bench`` command can end with: the error types its stages raise and one exit-code
table, so that a script (or a Slurm dependency) can tell a failed run from a typo from missing data.

The table is printed in ``bench --help``; each command returns one of these codes and nothing else.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class Exit(IntEnum):
    """Exit codes of the ``bench`` command (listed in ``bench --help``)."""

    OK = 0  # everything asked for is done (or, for status: no run failed)
    RUNS_FAILED = 1  # at least one run failed, diverged or is corrupt
    USAGE = 2  # bad arguments or a suite file that cannot run (argparse uses 2 as well)
    MISSING_INPUT = 3  # data or pretrained weights not on this machine; nothing was launched
    NO_SPACE = 4  # a disk was full, over quota or read-only: runs failed resumably, or the report was not written
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); rerunning the same command resumes
    BROKEN_PIPE = 141  # the reader of the output went away (`bench status --json | head -1`): 128 + SIGPIPE, as a shell reports it


EXIT_HELP = {
    Exit.OK: "ok",
    Exit.RUNS_FAILED: "runs failed (or, for status, some run failed or is corrupt)",
    Exit.USAGE: "usage or suite error",
    Exit.MISSING_INPUT: "missing data or pretrained weights (nothing launched)",
    Exit.NO_SPACE: "no space left (or read-only / over quota) on the path named: free space and rerun the same command to resume",
    Exit.INTERRUPTED: "interrupted (Ctrl-C): rerun the same command to resume",
    Exit.BROKEN_PIPE: "the output's reader closed the pipe early (e.g. `| head`); said by this code alone, no traceback",
}


class SuiteError(ValueError):
    """A suite file that cannot be run; the message names the file, the key and the fix."""


class MissingInput(RuntimeError):
    """Data or weights a run needs are not on this machine; the message says where they go."""


class CorruptFile(Exception):
    """A store file that exists but cannot be trusted (truncated, not UTF-8, not JSON, digest
    mismatch): carries the path and the reason, so every message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: {reason}")


class LinkRefused(CorruptFile):
    """A run or report folder that is, or contains, a symbolic link: the store never writes, moves
    or deletes through one (a link would let this run overwrite, or a repair rename, someone
    else's files). Raised before anything is touched; the message is ``<path>: <reason>``."""
