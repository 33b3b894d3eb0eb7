"""The result store: one folder per run, ``results/<suite>/<run_id>/``.

Files: ``config.yaml`` (the resolved config), ``status.json`` (pending → running → done | failed |
interrupted; pending with an ``executor_job_id`` means queued on a scheduler; interrupted = killed,
timed out or pre-empted, resumable),
``metrics.jsonl`` (one line per optimiser step), ``last.pt`` (resumable checkpoint) and
``result.json`` (written last, atomically: a run is done exactly when it exists). Failures are
recorded in ``status.json`` with their traceback and never count as results.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.io import atomic_write_json, atomic_write_text

RESULT_SCHEMA_VERSION = 1


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def of(cls, results_root: str | Path, suite: str, run_id: str) -> "RunDir":
        return cls(Path(results_root) / suite / run_id)

    config = property(lambda self: self.path / "config.yaml")
    status_file = property(lambda self: self.path / "status.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    checkpoint = property(lambda self: self.path / "last.pt")
    result_file = property(lambda self: self.path / "result.json")

    def is_done(self) -> bool:
        return self.result_file.is_file()

    def read_result(self) -> dict[str, Any]:
        return json.loads(self.result_file.read_text())

    def effective_state(self) -> str:
        """The recorded state, except that a 'running' run whose process is gone from this
        host reads 'interrupted' (it was killed without a chance to say so)."""
        if self.is_done():
            return "done"
        status = self.read_status()
        state = status.get("state", "pending")
        if state == "running" and status.get("host") == socket.gethostname() and status.get("pid"):
            if not _alive(int(status["pid"])):
                return "interrupted"
        return state

    def read_status(self) -> dict[str, Any]:
        if not self.status_file.is_file():
            return {"state": "pending", "attempts": 0}
        return json.loads(self.status_file.read_text())

    def write_config(self, canonical: dict[str, Any]) -> None:
        atomic_write_text(self.config, yaml.safe_dump(canonical, sort_keys=True))

    def set_status(self, state: str, **fields: Any) -> None:
        status = self.read_status()
        status.update(fields, state=state, host=socket.gethostname(), updated=time.time())
        if state == "running":
            status["pid"] = os.getpid()  # lets `bench status` tell a live run from a killed one
            status["attempts"] = status.get("attempts", 0) + 1
            status["start"] = time.time()
            status.pop("error", None)
            status.pop("traceback", None)
        if state in ("done", "failed"):
            status["end"] = time.time()
        atomic_write_json(self.status_file, status)

    def update_status(self, **fields: Any) -> None:
        """Add fields (job id, total steps, …) without changing the state."""
        status = self.read_status()
        status.update(fields, updated=time.time())
        atomic_write_json(self.status_file, status)

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.result_file, {"schema_version": RESULT_SCHEMA_VERSION, **result})

    def append_metrics(self, rows: list[dict[str, Any]]) -> None:
        with open(self.metrics, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")

    def truncate_metrics(self, last_step: int) -> None:
        """Drop lines logged after the checkpoint we resume from (they will be logged again)."""
        if not self.metrics.is_file():
            return
        kept = [line for line in self.metrics.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
        atomic_write_text(self.metrics, "".join(line + "\n" for line in kept))
