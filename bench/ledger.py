"""The verification ledger: which finished runs were verified whole, at which file signatures.

Why: every command over a suite (``bench status``, ``report``, ``run``'s skip check) verifies
each finished run as a whole — result.json against its digest, the metrics log line by line and
against its recorded SHA-256, predictions.npz, every saved evaluation unit, the final
checkpoint. That is right, and at thousands of runs it is most of a command's time, spent
proving again that files nobody touched are still what they were.

So a command that verifies a finished run clean records it here: the run folder's *signature*
(name, inode, size, mtime and ctime of every file the verification read) with the facts later
commands need without parsing result.json again (its digest and data fingerprints). The next
command recomputes the signature from ``stat`` alone; when it is unchanged the verification
stands, otherwise the run is verified again from its files. What is still read every time: the
status file, and the walk for symbolic links.

Safety, by construction:
- A file written since changes its signature (a new ctime, which no user call can set back;
  a new inode for an atomic replace), so a changed, re-run or damaged run is verified again.
- A file modified within the clock tick of its verification would keep its timestamps (the
  "racy" case of git's index): runs whose files changed less than :data:`SETTLE_S` seconds
  before the check are never recorded, and are verified in full every time until they settle.
- Only clean verdicts are recorded: damage is always found by the full check, and reported.
- The ledger file carries a SHA-256 of its content and is written atomically; a ledger that
  is unreadable, of another version or fails its check is ignored (everything is verified
  again) and rewritten. It lives in the user's cache ($BENCH_CACHE), one file per suite folder,
  so a read-only results folder is never written to; deleting it only costs time.

It is active only inside :func:`ledger_scope` (each CLI command), so training jobs and library
callers verify as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

LEDGER_VERSION = 1
SETTLE_S = 2.0  # files younger than this (mtime or ctime) are verified in full, never recorded
# the files of a run folder whose content the whole-run verification reads (besides status.json,
# which every command reads afresh); evaluated/*.json are added by listing
SIGNED = ("result.json", "metrics.jsonl", "metrics.jsonl.sha256", "predictions.npz", "predictions.npz.sha256", "last.pt", "last.pt.sha256")

_OPEN: dict[Path, "Ledger"] | None = None  # suite folder → its ledger, inside ledger_scope()


def _stat_row(name: str, st: os.stat_result) -> tuple[str, int, int, int, int]:
    return (name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def signature(run_folder: Path, now: float | None = None) -> str | None:
    """A hash of the signed files' names and stat data, or None when one of them changed less
    than :data:`SETTLE_S` seconds ago (or the folder cannot be listed): such a run is verified
    in full."""
    return signed(run_folder, now)[0]


def signed(run_folder: Path, now: float | None = None) -> tuple[str | None, dict[str, tuple[str, int, int, int, int]]]:
    """(:func:`signature`, name → its stat row (name, inode, size, mtime, ctime))."""
    rows = []
    newest = 0
    try:
        with os.scandir(run_folder) as entries:
            for entry in entries:
                if entry.name in SIGNED:
                    st = entry.stat(follow_symlinks=False)
                    rows.append(_stat_row(entry.name, st))
                    newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        evaluated = Path(run_folder) / "evaluated"
        if evaluated.is_dir():
            with os.scandir(evaluated) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    rows.append(_stat_row("evaluated/" + entry.name, st))
                    newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        return None, {}
    by_name = {r[0]: r for r in rows}
    if newest / 1e9 > (time.time() if now is None else now) - SETTLE_S:
        return None, by_name
    return hashlib.sha256(repr(sorted(rows)).encode()).hexdigest()[:32], by_name


class Ledger:
    """One suite folder's verified runs: run id → (signature, result digest, facts)."""

    def __init__(self, folder: Path) -> None:
        from bench.io import cache_file

        self.folder = Path(folder)
        real = os.path.realpath(self.folder)
        self.path = cache_file("store-ledger", self.folder)
        self.runs: dict[str, list[str]] = {}  # run id → [signature, result digest, facts key]
        self.facts: dict[str, Any] = {}  # facts key → facts (shared: most runs of a dataset have the same)
        self.dirty = False
        self._load(real)

    def _load(self, real: str) -> None:
        from bench.io import read_checked_json

        body = read_checked_json(self.path)
        if not isinstance(body, dict) or body.get("version") != LEDGER_VERSION or body.get("folder") != real:
            return  # absent, damaged, another version, or a hash collision of folders: start afresh
        runs, facts = body.get("runs"), body.get("facts")
        if isinstance(runs, dict) and isinstance(facts, dict):
            self.runs, self.facts = runs, facts

    def lookup(self, run_id: str, sig: str | None) -> tuple[str, Any] | None:
        """(result digest, facts) of a run verified clean at signature ``sig``, else None."""
        entry = self.runs.get(run_id)
        if sig is None or not isinstance(entry, list) or len(entry) != 3 or entry[0] != sig or entry[2] not in self.facts:
            return None
        return entry[1], self.facts[entry[2]]

    def record(self, run_id: str, sig: str, digest: str, facts: Any) -> None:
        key = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.facts.setdefault(key, facts)
        if self.runs.get(run_id) != [sig, digest, key]:
            self.runs[run_id] = [sig, digest, key]
            self.dirty = True

    def forget(self, run_id: str) -> None:
        if self.runs.pop(run_id, None) is not None:
            self.dirty = True

    def save(self) -> None:
        """Write the ledger atomically (facts no run refers to are dropped); a cache that cannot
        be written only costs time."""
        if not self.dirty:
            return
        from bench.io import write_checked_json

        used = {entry[2] for entry in self.runs.values()}
        body = {"version": LEDGER_VERSION, "folder": os.path.realpath(self.folder), "runs": self.runs,
                "facts": {k: v for k, v in self.facts.items() if k in used}}
        with contextlib.suppress(OSError):
            write_checked_json(self.path, body)
        self.dirty = False


def ledger_for(run_folder: Path) -> Ledger | None:
    """The ledger of a run folder's suite folder, inside :func:`ledger_scope`; else None."""
    if _OPEN is None:
        return None
    suite = Path(run_folder).parent
    if suite not in _OPEN:
        _OPEN[suite] = Ledger(suite)
    return _OPEN[suite]


@contextlib.contextmanager
def ledger_scope() -> Iterator[None]:
    """Within this block finished runs verified clean are recorded, and unchanged ones are not
    verified again; the ledgers are written when the outermost block ends."""
    global _OPEN
    outer = _OPEN
    _OPEN = {} if outer is None else outer
    try:
        yield
    finally:
        if outer is None:
            for ledger in _OPEN.values():
                ledger.save()
        _OPEN = outer


def save_open() -> None:
    """Write the open ledgers now (a long command, e.g. `bench run`, keeps what it verified)."""
    for ledger in (_OPEN or {}).values():
        ledger.save()


__all__ = ["Ledger", "ledger_scope", "ledger_for", "signature", "signed", "save_open", "SETTLE_S"]
