"""The result store: one folder per run, ``results/<suite>/<run_id>/``.

Files: ``config.yaml`` (the resolved config), ``status.json`` (pending → running → done | failed |
interrupted; pending with an ``executor_job_id`` means queued on a scheduler; interrupted = killed,
timed out or pre-empted, resumable),
``metrics.jsonl`` (one line per optimiser step), ``last.pt`` (resumable checkpoint, written every
``train.checkpoint_every_min`` minutes and at every epoch end; ``prev.pt`` the one before it, deleted
when the run is done unless ``bench run --keep-checkpoints``; each with a ``.sha256`` sidecar), ``lock.json`` (held while a process trains the run), ``run.log`` (plain
lines for people, appended across attempts), ``tensorboard/`` (event files, with the optional
``tensorboard`` package) and ``result.json`` (written last, atomically, with a ``digest`` of its
content: a run is done exactly when a verified one exists). Failures are recorded in ``status.json`` with their traceback
and never count as results.

Nothing read from here is trusted blindly: :class:`RunDir` is the one place that parses these
files, and a damaged one raises :class:`CorruptFile` (path + reason) so that commands over a whole
suite mark that run ``corrupt`` and go on with the rest.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.errors import CorruptFile, LinkRefused
from bench.io import atomic_write, atomic_write_json, atomic_write_text, digest_path, fsync_dir, fsync_path, sha256_file, with_path

RESULT_SCHEMA_VERSION = 2  # 2: result.json carries a "digest" of the rest; 1 (no digest) is read unverified
LOCK_STALE_ENV = "BENCH_LOCK_STALE_S"  # seconds without a heartbeat after which a run's lock is stale
LOCK_STALE_S = 600.0
STATUS_RESERVE_BYTES = 64 * 1024  # pre-allocated room for the last status write on a full disk
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def link_problem(folder: Path, root: Path | None = None) -> LinkRefused | None:
    """Why ``folder`` must not be written through, or None: it is a symlink, it resolves outside
    ``root`` (a parent such as the suite folder is a link out), or an entry inside it (walked
    without following links) is a symlink. Links inside a store folder are refused wherever they
    point, since the store never makes one: even a link to another run of the same store would
    let this run overwrite that run's files."""
    folder = Path(folder)
    if folder.is_symlink():
        return LinkRefused(folder, f"is a symbolic link to {os.readlink(folder)}: the store never follows a link out (remove the link)")
    if root is not None and os.path.lexists(folder):
        real, real_root = os.path.realpath(folder), os.path.realpath(root)
        if os.path.commonpath([real, real_root]) != real_root:
            return LinkRefused(folder, f"resolves to {real}, outside {real_root} (a parent folder is a symbolic link): the store never follows a link out")
    if not folder.is_dir():
        return None
    return _link_inside(folder)


def _link_inside(folder: Path) -> LinkRefused | None:
    """The first symbolic link under ``folder`` (depth first, names sorted, links never followed):
    read from the directory entries' types, without a stat per file (every command over a suite
    looks into every run folder)."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return None
    for entry in entries:
        if entry.is_symlink():
            path = Path(entry.path)
            return LinkRefused(path, f"is a symbolic link to {os.readlink(path)}: the store never follows a link out (remove the link)")
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            found = _link_inside(Path(entry.path))
            if found is not None:
                return found
    return None


class RunHeld(RuntimeError):
    """Another live process holds the run's lock: this one must neither train nor write."""

    def __init__(self, run_dir: Path, holder: dict[str, Any]) -> None:
        self.run_dir, self.holder = Path(run_dir), holder
        super().__init__(held_message(self.run_dir.name, holder))


def held_message(run_id: str, holder: dict[str, Any]) -> str:
    """The one line a launcher prints for a run it leaves alone. A lock.json that is not a lock
    (garbage, not JSON) names no holder: it is said to be damaged, with when it stops counting,
    rather than blamed on a '?:?' launcher."""
    if holder.get("unreadable"):
        return (f"run {run_id}: its lock.json is unreadable (not a lock bench wrote; {holder.get('size', '?')} bytes, untouched for "
                f"{holder.get('age_s', 0):.0f} s), skipped: it counts as held until {holder.get('stale_after_s', 0):.0f} s old; "
                f"delete {holder.get('path', 'it')} if no process trains this run")
    return f"run {run_id} is held by {holder.get('host', '?')}:{holder.get('pid', '?')} (job {holder.get('job_id') or '-'}), skipped"


def _unreadable_holder(path: Path, mtime: float) -> dict[str, Any]:
    """What is known of a lock file that does not parse: for held_message."""
    try:
        size = path.stat().st_size
    except OSError:
        size = "?"
    return {"unreadable": True, "path": str(path), "size": size, "age_s": max(0.0, time.time() - mtime), "stale_after_s": lock_stale_after_s()}


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


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with the pid
    it names one process, so a pid reused after a crash is not taken for the lock's holder."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _say(run_dir: Path, message: str) -> None:
    """Repairs are printed (stderr: the progress display owns stdout) as well as recorded."""
    print(f"run {Path(run_dir).name}: {message}", file=sys.stderr, flush=True)


def _move_aside(path: Path, tag: str = "corrupt") -> Path:
    """Rename a damaged file to ``<name>.<tag>-<UTC time>``: kept for inspection, out of the way.
    ``tag`` is ``superseded`` for a sound file that is rebuilt because something it covers was
    damaged. Refused when the folder is reached through a symbolic link: a rename there would act
    on another folder's files."""
    path = Path(path)
    if path.parent.is_symlink():
        raise LinkRefused(path.parent, "is a symbolic link: a file is never moved aside through one")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = path.with_name(f"{path.name}.{tag}-{stamp}"), 1
    while os.path.lexists(target):
        target, n = path.with_name(f"{path.name}.{tag}-{stamp}.{n}"), n + 1
    os.replace(path, target)
    fsync_dir(path.parent)
    return target


def result_digest(result: dict[str, Any]) -> str:
    """SHA-256 of a result's canonical JSON (sorted keys, no spaces), the ``digest`` field left out."""
    rest = {k: v for k, v in result.items() if k != "digest"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_json(path: Path) -> Any:
    """A JSON file's content; CorruptFile when it is empty, not UTF-8 or not JSON (FileNotFoundError
    passes through: a missing file is a state, not damage)."""
    data = Path(path).read_bytes()
    if not data.strip():
        raise CorruptFile(path, f"empty file ({len(data)} bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFile(path, f"not UTF-8 (byte {exc.start} of {len(data)})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFile(path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; {len(data)} bytes, truncated?)") from None


@dataclass(frozen=True)
class MetricsLog:
    """metrics.jsonl parsed: its complete lines (raw text and row) and whether a torn last line
    (an append cut short by a kill or a full disk) was left out."""

    lines: list[tuple[str, dict[str, Any]]]
    torn: str | None


def _parse_metrics(path: Path) -> MetricsLog:
    """Every line must be a JSON object with an integer ``step``. The last line may be torn (no
    newline, or undecodable): that is what an interrupted append leaves, so it is reported, not
    an error. A bad line before the last is damage: CorruptFile."""
    data = Path(path).read_bytes()
    parts = data.split(b"\n")
    complete, tail = parts[:-1], parts[-1]
    lines: list[tuple[str, dict[str, Any]]] = []
    torn = f"an unterminated last line ({len(tail)} bytes)" if tail else None
    for i, raw in enumerate(complete):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
            row = json.loads(text)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int) or isinstance(row.get("step"), bool):
                raise ValueError("not a metrics row (a JSON object with an integer step)")
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            if i == len(complete) - 1 and not tail:
                torn = f"an undecodable last line ({exc.__class__.__name__})"
                break
            raise CorruptFile(path, f"line {i + 1}: {exc.__class__.__name__}: {str(exc)[:80]}") from None
        lines.append((text, row))
    return MetricsLog(lines, torn)


# (mtime_ns, size) → problem, per path: `bench status` and the local executor's live table check
# every run's log again and again; only a log that changed is parsed again.
_METRICS_CHECKED: dict[Path, tuple[int, int, CorruptFile | None]] = {}


def _metrics_problem(path: Path) -> CorruptFile | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    cached = _METRICS_CHECKED.get(path)
    if cached and cached[:2] == (st.st_mtime_ns, st.st_size):
        return cached[2]
    try:
        _parse_metrics(path)
        problem = None
    except CorruptFile as exc:
        problem = exc
    except FileNotFoundError:
        return None
    _METRICS_CHECKED[path] = (st.st_mtime_ns, st.st_size, problem)
    return problem


def _check_checkpoint(state: Any) -> None:
    """A checkpoint is a dict with the trained weights and a step; a resumable one also has the
    optimiser, schedule and epoch (and, written mid-epoch, the batches of that epoch already done:
    ``batch``). Anything else did not come from :func:`bench.train.train`."""
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not isinstance(state.get("step"), int):
        raise ValueError("not a checkpoint (no 'model' dict and integer 'step')")
    if "optimizer" in state and not all(k in state for k in ("schedule", "epoch")):
        raise ValueError("a resumable checkpoint without 'schedule' or 'epoch'")
    batch = state.get("batch", 0)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 0:
        raise ValueError(f"a checkpoint whose 'batch' is {batch!r}, not a whole number of batches done")


# path → ((inode, mtime_ns, size, prefix), hex digest): `bench status` verifies every finished run's
# files again and again (checkpoints can be gigabytes); only a file that changed is hashed again.
_HASHED: dict[Path, tuple[tuple[int, int, int, int | None], str]] = {}


def _sha(path: Path, prefix: int | None = None, cached: bool = True) -> str:
    """SHA-256 of a file, or of its first ``prefix`` bytes; ``cached`` reuses the last hash of an
    unchanged file (same inode, mtime and size) — for display only: a load always hashes afresh."""
    st = path.stat()
    key = (st.st_ino, st.st_mtime_ns, st.st_size, prefix)
    hit = _HASHED.get(path)
    if cached and hit and hit[0] == key:
        return hit[1]
    if prefix is None:
        digest = sha256_file(path)
    else:
        h, left = hashlib.sha256(), prefix
        with open(path, "rb") as fh:
            while left > 0 and (block := fh.read(min(left, 1 << 20))):
                h.update(block)
                left -= len(block)
        digest = h.hexdigest()
    _HASHED[path] = (key, digest)
    return digest


def _file_record(path: Path) -> dict[str, Any]:
    """What result.json records of a file it covers: its SHA-256 and size."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _read_sidecar(sidecar: Path) -> tuple[str, int | None] | None:
    """(hex digest, size or None) from a ``<name>.sha256`` sidecar; None when there is none or it
    is unreadable (the caller decides whether that is damage)."""
    try:
        parts = sidecar.read_text(encoding="ascii").split()
        return parts[0], (int(parts[1]) if len(parts) > 1 else None)
    except (OSError, UnicodeDecodeError, IndexError, ValueError):
        return None


def _verify_digest(path: Path, cached: bool = False) -> tuple[str | None, bool]:
    """(why ``path`` fails verification or None, whether a digest was there to check). Files from
    before checksums have no sidecar: they are loaded, and that is said, never silent."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)", True
    sidecar = digest_path(path)
    if not sidecar.is_file():
        return None, False
    try:
        recorded = sidecar.read_text(encoding="ascii").split()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        return f"has an unreadable digest file {sidecar.name}", True
    actual = _sha(path, cached=cached)
    if actual != recorded:
        return f"fails its SHA-256 check ({size} bytes hash to {actual[:12]}…, {sidecar.name} records {recorded[:12]}…)", True
    return None, True


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot take output (None if it can): a real write, since permission bits lie
    to root and to read-only mounts. Checked before training so that hours of compute are never
    spent on results or a report that cannot be saved."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{folder} is not writable ({exc.strerror or exc})"
    return None


@dataclass(frozen=True)
class RunRecord:
    """One run as a command over a whole suite sees it (:meth:`RunDir.record`): ``status`` as
    :meth:`RunDir.read_status` gives it, the first damaged file (``problem``), the ``facts`` of a
    verified result (``digest``, ``data``; None unless done) and the effective ``state``."""

    status: dict[str, Any]
    problem: CorruptFile | None
    facts: dict[str, Any] | None
    state: str


@dataclass(frozen=True)
class RunDir:
    path: Path
    root: Path | None = field(default=None, compare=False)  # the results folder: a run folder must resolve inside it

    @classmethod
    def of(cls, results_root: str | Path, suite: str, run_id: str) -> "RunDir":
        return cls(Path(results_root) / suite / run_id, Path(results_root))

    config = property(lambda self: self.path / "config.yaml")
    status_file = property(lambda self: self.path / "status.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    checkpoint = property(lambda self: self.path / "last.pt")
    result_file = property(lambda self: self.path / "result.json")
    predictions = property(lambda self: self.path / "predictions.npz")  # per-image correctness per split
    # covered files: result.json records their digests (``files``); before it exists, their sidecars
    covered = property(lambda self: (self.metrics, self.predictions))
    run_log = property(lambda self: self.path / "run.log")  # for people: one line per event, every attempt (bench.progress.RunLog)
    tensorboard_dir = property(lambda self: self.path / "tensorboard")  # event files (bench.progress.TensorBoardScalars)

    lock_file = property(lambda self: self.path / "lock.json")
    evaluations_dir = property(lambda self: self.path / "evaluated")  # one file per scored split (see save_evaluation)
    prev_checkpoint = property(lambda self: self.path / "prev.pt")
    status_reserve = property(lambda self: self.path / ".status.reserve")

    # ---- reading: the one place that parses the run's files --------------------------------

    def is_done(self) -> bool:
        """A result.json that verifies exists and no file of the run is damaged (a damaged one makes
        the run corrupt, not done): the run is verified as a whole."""
        problem, facts, _ = self._inspect()
        return problem is None and facts is not None

    def refuse_links(self) -> None:
        """Raise :class:`LinkRefused` when the run folder is, or contains, a symbolic link (or
        resolves outside the results folder): checked before anything is written, moved or deleted."""
        problem = link_problem(self.path, self.root)
        if problem is not None:
            raise problem

    def read_result(self) -> dict[str, Any]:
        """result.json, verified against its digest (schema 1 files, from before digests, are read
        as they are). Raises CorruptFile when damaged, FileNotFoundError when absent."""
        return self._verified_result()[0]

    def read_result_signed(self, signed: tuple | None) -> dict[str, Any]:
        """:meth:`read_result` of a run the verification ledger vouches for: when result.json is
        still the very file it verified (``signed``: its stat row then — inode, size, mtime and ctime,
        checked before and after the read), its content is parsed without hashing it again;
        otherwise it is read and verified as usual."""
        if signed is not None:
            try:
                with open(self.result_file, "rb") as fh:
                    before = os.fstat(fh.fileno())
                    data = fh.read()
                    after = os.fstat(fh.fileno())
                same = [(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for st in (before, after)]
                if same[0] == same[1] == tuple(signed[1:]):
                    result = json.loads(data)
                    if isinstance(result, dict):
                        return {k: v for k, v in result.items() if k != "digest"}
            except (OSError, ValueError):
                pass
        return self.read_result()

    def _verified_result(self) -> tuple[dict[str, Any], str | None]:
        """(result.json without its digest, the digest it records) — verified as :meth:`read_result` says."""
        result = _read_json(self.result_file)
        if not isinstance(result, dict):
            raise CorruptFile(self.result_file, "not a JSON object")
        version = result.get("schema_version")
        recorded = result.get("digest")
        if "digest" in result or not isinstance(version, int) or version >= 2:
            actual = result_digest(result)
            if recorded != actual:
                raise CorruptFile(self.result_file, f"digest mismatch (content hashes to {actual[:12]}…, recorded {str(recorded)[:12]}…)")
        return {k: v for k, v in result.items() if k != "digest"}, recorded if isinstance(recorded, str) else None

    def load_status(self) -> dict[str, Any]:
        """status.json as recorded (absent: pending); CorruptFile when it is damaged."""
        try:
            status = _read_json(self.status_file)
        except FileNotFoundError:
            return {"state": "pending", "attempts": 0}
        if not isinstance(status, dict) or not isinstance(status.get("state"), str):
            raise CorruptFile(self.status_file, "not a status record (no 'state')")
        return status

    def read_status(self) -> dict[str, Any]:
        """status.json for display and bookkeeping: a damaged one reads as state 'corrupt' with the
        path and reason as its error, so one bad file never stops a command over a whole suite."""
        try:
            return self.load_status()
        except CorruptFile as exc:
            return {"state": "corrupt", "attempts": 0, "error": str(exc), "corrupt_file": str(exc.path)}

    def read_metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's rows (a torn last line left out); CorruptFile when a line before the last is bad."""
        if not self.metrics.is_file():
            return []
        return [row for _, row in _parse_metrics(self.metrics).lines]

    def metrics_line_count(self) -> int:
        """Complete lines in metrics.jsonl: progress for the status table (bytes, no decoding)."""
        try:
            with open(self.metrics, "rb") as fh:
                return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
        except FileNotFoundError:
            return 0

    def corruption(self) -> CorruptFile | None:
        """The first damaged file of this run, or None: a symbolic link in or above the run folder,
        then status.json, result.json, metrics.jsonl (a bad line, then its digest), predictions.npz, the
        saved evaluation units, and a finished run's final checkpoint."""
        return self._inspect()[0]

    def record(self) -> "RunRecord":
        """The run as commands over a whole suite see it, read and verified once: status, first
        damaged file, facts of the verified result, and the effective state."""
        problem, facts, status = self._inspect()
        if status is None:
            status = self.read_status()
        state = "corrupt" if problem is not None else "done" if facts is not None else self._unfinished_state(status)
        return RunRecord(status, problem, facts, state)

    def _inspect(self) -> tuple[CorruptFile | None, dict[str, Any] | None, dict[str, Any] | None]:
        """(the first damaged file or None, the facts of a verified result.json or None, status.json
        when it was read): the whole-run verification of :meth:`corruption`. Inside :func:`bench.ledger.ledger_scope` a
        finished run whose signed files are unchanged since a clean verification is not verified
        again (bench.ledger); the links and status.json are checked every time."""
        from bench import ledger as ledgers

        link = link_problem(self.path, self.root)
        if link is not None:
            return link, None, None
        try:
            status = self.load_status()
        except CorruptFile as exc:
            return exc, None, None
        ledger = ledgers.ledger_for(self.path)
        sig, stats = ledgers.signed(self.path) if ledger is not None else (None, {})
        if ledger is not None:
            hit = ledger.lookup(self.path.name, sig)
            if hit is not None:  # verified whole before, and no signed file changed since
                return None, {"digest": hit[0], **hit[1], "signed": stats.get("result.json")}, status
        result, digest = None, None
        try:
            result, digest = self._verified_result()
        except CorruptFile as exc:
            return exc, None, status
        except FileNotFoundError:
            pass
        problem = _metrics_problem(self.metrics) or self._digest_problem(self.metrics, result) or self._digest_problem(self.predictions, result)
        if problem is not None:
            return problem, None, status
        damaged = self.damaged_evaluations()
        if damaged:
            return damaged[0], None, status
        if result is not None and self.checkpoint.is_file():  # a finished run's weights: what re-evaluation reuses
            why, _ = _verify_digest(self.checkpoint, cached=True)
            if why is not None:
                return CorruptFile(self.checkpoint, why), None, status
        if result is None:
            return None, None, status
        facts = {"data": result.get("data")}
        if ledger is not None and sig is not None and digest is not None:
            ledger.record(self.path.name, sig, digest, facts)
        return None, {"digest": digest, **facts}, status

    def _recorded(self, path: Path, result: dict[str, Any] | None) -> tuple[str, int | None, bool, str] | None:
        """(digest, size, whole file?, where recorded) for a covered file: result.json's ``files``
        entry when the run is finished (the whole file), else its sidecar (for metrics.jsonl a
        prefix: the log up to the last checkpoint; later lines are dropped on resume anyway)."""
        files = (result or {}).get("files")
        if isinstance(files, dict) and isinstance(files.get(path.name), dict):
            entry = files[path.name]
            return str(entry.get("sha256")), entry.get("bytes"), True, "result.json"
        found = _read_sidecar(digest_path(path))
        if found is None:
            if digest_path(path).is_file():
                return "", None, True, f"{digest_path(path).name} (unreadable)"
            return None
        return found[0], found[1], path != self.metrics, digest_path(path).name

    def _digest_problem(self, path: Path, result: dict[str, Any] | None) -> CorruptFile | None:
        """Why a covered file (metrics.jsonl, predictions.npz) does not match its recorded digest:
        changed, truncated, extended or deleted; None when it matches or nothing was recorded."""
        recorded = self._recorded(path, result)
        if recorded is None:
            return None
        digest, size, whole, where = recorded
        if not path.is_file():
            return CorruptFile(path, f"missing, but {where} records its digest (deleted?)")
        actual_size = path.stat().st_size
        if size is not None and (actual_size < size or (whole and actual_size != size)):
            return CorruptFile(path, f"{actual_size} bytes, {where} records {size} (truncated or changed)")
        actual = _sha(path, prefix=None if whole else size)
        if actual != digest:
            span = "" if whole else f"its first {size} bytes "
            return CorruptFile(path, f"digest mismatch ({span}hash to {actual[:12]}…, {where} records {digest[:12]}…)")
        return None

    def effective_state(self) -> str:
        """'corrupt' when a store file is damaged; 'done' with a verified result (only then); else the
        recorded state, except that a 'running' run whose process is gone from this host reads
        'interrupted' (it was killed without a chance to say so)."""
        return self.record().state

    def _unfinished_state(self, status: dict[str, Any]) -> str:
        """The state of a run that is neither corrupt nor done, from its status (see effective_state)."""
        state = status.get("state", "pending")
        if state == "done":  # its result.json was removed (e.g. by --force): to be run again
            return "pending"
        if state == "running" and status.get("host") == socket.gethostname() and status.get("pid"):
            if not _alive(int(status["pid"])):
                return "interrupted"
        if state == "running" and RunLock.holder(self) is None:
            # 'running' is written under the run's lock and replaced before the lock goes; a
            # status without a live holder is one whose last write failed (a full disk that
            # refused even the reserve) or whose process died: resumable, never 'running' forever
            return "interrupted"
        return state

    # ---- writing ---------------------------------------------------------------------------

    def write_config(self, canonical: dict[str, Any]) -> None:
        atomic_write_text(self.config, yaml.safe_dump(canonical, sort_keys=True))

    def _status_for_update(self) -> dict[str, Any]:
        """The status to update; a damaged one is moved aside (and that said) rather than ending
        the write, so the next state is always recorded."""
        try:
            return self.load_status()
        except CorruptFile as exc:
            aside = _move_aside(self.status_file)
            note = f"{exc}; moved to {aside.name} (the attempt history before it is lost)"
            _say(self.path, note)
            return {"state": "pending", "attempts": 0, "resume_note": note}

    def set_status(self, state: str, **fields: Any) -> None:
        status = self._status_for_update()
        if state == "running":  # a new attempt: what the last one said no longer describes it
            for key in ("error", "traceback", "resume_note", "resumed_from", "status_note", "phase", "evaluated", "evaluations", "last_evaluated",
                        "held_after_epoch", "held_after_step", "cancelled", "state_after_cancel"):  # a barrier a killed attempt held at is not this one's
                status.pop(key, None)
        elif status.get("cancelled") and state in ("failed", "interrupted"):
            # `bench cancel` said why first; the job dying of its SIGTERM afterwards (a DataLoader
            # worker killed, an interrupt) must not replace that with its symptom
            fields = {**fields, "state_after_cancel": f"{state}: {fields.get('error', '')}".rstrip(": "), "error": status.get("error")}
            state = "failed"
        status.update(fields, state=state, host=socket.gethostname(), updated=time.time())
        if state == "running":
            status["pid"] = os.getpid()  # lets `bench status` tell a live run from a killed one
            status["attempts"] = status.get("attempts", 0) + 1
            status["start"] = time.time()
        if state in ("done", "failed"):
            status["end"] = time.time()
        self._write_status(status)

    def update_status(self, **fields: Any) -> None:
        """Add fields (job id, total steps, …) without changing the state."""
        status = self._status_for_update()
        status.update(fields, updated=time.time())
        self._write_status(status)

    def note(self, message: str) -> None:
        """Record a repair (a damaged file moved aside, a torn log line dropped) in status.json's
        ``resume_note`` and print it: no repair is silent."""
        _say(self.path, message)
        status = self._status_for_update()
        status["resume_note"] = "; ".join(x for x in (status.get("resume_note"), message) if x)
        self._write_status(status)

    def _write_status(self, status: dict[str, Any]) -> None:
        """Write status.json; on a full disk, from the pre-allocated reserve (see prepare()), so a
        failure caused by the full disk is still recorded as one instead of staying 'running'."""
        try:
            atomic_write_json(self.status_file, status)
        except OSError as exc:
            if exc.errno not in DISK_FULL or not self._write_status_from_reserve(status):
                raise

    def _write_status_from_reserve(self, status: dict[str, Any]) -> bool:
        """Overwrite the reserve's already-allocated bytes with the status (the traceback trimmed
        to fit) and rename it over status.json: neither step needs a free block. Without a reserve,
        try once more with the smallest useful status."""
        status = {**status, "status_note": "written from the reserve: the disk was full"}
        reserve = self.status_reserve
        if not reserve.is_file():
            small = {k: status[k] for k in ("state", "attempts", "host", "pid", "error", "executor_job_id", "updated", "status_note") if k in status}
            small["status_note"] = "written in place: the disk was full (no reserve)"
            try:
                atomic_write_json(self.status_file, small)
            except OSError:
                return self._write_status_in_place(small)
            return True
        room = reserve.stat().st_size
        text = json.dumps(status, indent=2, sort_keys=True, default=str) + "\n"
        for trim in (8000, 2000, 0):
            if len(text.encode()) <= room:
                break
            if trim:
                status["traceback"] = "…" + str(status.get("traceback", ""))[-trim:]
            else:
                status.pop("traceback", None)
                status["error"] = str(status.get("error", ""))[:1000]
            text = json.dumps(status, indent=2, sort_keys=True, default=str) + "\n"
        data = text.encode()[:room]
        try:
            with open(reserve, "r+b") as fh:
                fh.write(data)
                fh.truncate(len(data))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(reserve, self.status_file)
            fsync_dir(self.path)
        except OSError:
            return False
        return True

    def _write_status_in_place(self, status: dict[str, Any]) -> bool:
        """Last resort on a full disk with no reserve (it could not be made: the disk was full when
        the run started): overwrite status.json's own, already allocated bytes with a compact
        status. Not atomic, but the alternative is a run that says 'running' forever; a torn write
        reads 'corrupt', which `bench run` repairs. False when it does not fit or fails."""
        try:
            room = self.status_file.stat().st_size
        except OSError:
            return False
        status = {**status, "error": str(status.get("error", ""))[:300]}
        data = (json.dumps(status, sort_keys=True, default=str, separators=(",", ":")) + "\n").encode()
        if len(data) > room:
            status = {k: status[k] for k in ("state", "attempts", "error", "status_note") if k in status}
            status["error"] = status.get("error", "")[: max(0, 300 - (len(data) - room))]
            data = (json.dumps(status, sort_keys=True, default=str, separators=(",", ":")) + "\n").encode()
        if len(data) > room:
            return False
        try:
            with open(self.status_file, "r+b") as fh:
                fh.write(data)
                fh.truncate(len(data))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            return False
        return True

    def write_result(self, result: dict[str, Any]) -> None:
        """result.json with a ``digest`` over the canonical JSON of the rest (computed on the JSON
        round trip, i.e. on exactly what a reader will parse). The rest includes ``files``: the
        SHA-256 and size of metrics.jsonl and predictions.npz, so the digest covers every number
        of the finished run and the run is verified as a whole."""
        self.sync_metrics()
        files = {path.name: _file_record(path) for path in self.covered if path.is_file()}
        record = json.loads(json.dumps({"schema_version": RESULT_SCHEMA_VERSION, **result, **({"files": files} if files else {})}, default=str))
        record.pop("digest", None)
        record["digest"] = result_digest(record)
        atomic_write_json(self.result_file, record)

    def append_metrics(self, rows: list[dict[str, Any]]) -> None:
        """One write per batch of rows: a kill or a full disk can tear only the last line, which
        the next resume drops (truncate_metrics)."""
        try:
            with open(self.metrics, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(row) + "\n" for row in rows))
        except OSError as exc:  # a write() names no file: a full disk must say which
            raise with_path(exc, self.metrics) from exc

    def sync_metrics(self) -> None:
        """fsync metrics.jsonl and record its digest (``metrics.jsonl.sha256``: SHA-256 and size of
        the log so far): called before a checkpoint, so no checkpoint is on disk whose steps' log
        lines are not, and every line a resume keeps is covered by a digest."""
        if self.metrics.is_file():
            fsync_path(self.metrics)
            atomic_write_text(digest_path(self.metrics), f"{sha256_file(self.metrics)}  {self.metrics.stat().st_size}\n")

    def write_predictions(self, arrays: dict[str, np.ndarray]) -> None:
        """predictions.npz, atomically, with its digest sidecar written before the rename (as for
        checkpoints): a file present always has its digest, and result.json records it again."""
        path = self.predictions

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append '.npz' to a temp file's name
                np.savez_compressed(fh, **arrays)
            atomic_write_text(digest_path(path), f"{sha256_file(tmp)}  {tmp.stat().st_size}\n")

        atomic_write(path, write)

    def truncate_metrics(self, last_step: int) -> None:
        """Drop lines logged after the checkpoint we resume from (they will be logged again) and a
        torn last line (it would glue onto the next line appended and damage the log)."""
        if not self.metrics.is_file():
            return
        try:
            log = _parse_metrics(self.metrics)
        except CorruptFile as exc:
            good, note = self._salvage_metrics(exc)
            self.note(note)
            log = MetricsLog(good, None)
        if log.torn:
            self.note(f"metrics.jsonl ended in {log.torn}; dropped it")
        kept = "".join(text + "\n" for text, row in log.lines if row["step"] <= last_step).encode()
        # the digest first: the kept lines are a prefix of the old log, so it matches both files
        atomic_write_text(digest_path(self.metrics), f"{hashlib.sha256(kept).hexdigest()}  {len(kept)}\n")
        atomic_write(self.metrics, lambda tmp: tmp.write_bytes(kept))

    def _salvage_metrics(self, problem: CorruptFile) -> tuple[list[tuple[str, dict[str, Any]]], str]:
        """Move a damaged metrics.jsonl aside and keep its readable lines in a fresh one. Returns
        those lines and what was done (for the status): only the damaged lines are lost."""
        aside = _move_aside(self.metrics)
        good: list[tuple[str, dict[str, Any]]] = []
        bad = 0
        for raw in aside.read_bytes().split(b"\n"):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
                row = json.loads(text)
            except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
                row = None
            if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row.get("step"), bool):
                good.append((text, row))
            else:
                bad += 1
        atomic_write_text(self.metrics, "".join(text + "\n" for text, _ in good))
        return good, f"{problem}; moved to {aside.name}, kept its {len(good)} readable lines ({bad} lost)"

    def prepare(self, since: float | None = None) -> list[str]:
        """Ready the folder for an attempt; call with the run's lock held. Removes temp files that
        interrupted atomic writes left (those older than ``since``, the lock's time: a newer one may
        be a launcher's write in flight, which atomic_write retries), moves damaged status.json /
        result.json aside and salvages a damaged metrics.jsonl, and (re)creates the status reserve.
        Returns the repairs made (also printed)."""
        self.refuse_links()
        notes: list[str] = []
        for tmp in [*self.path.glob(".*.tmp"), *self.path.glob(".lock.json.*.stale")]:  # the latter: a lock breaker killed midway
            try:
                if since is None or tmp.stat().st_mtime < since:
                    tmp.unlink()
            except FileNotFoundError:
                pass
        try:
            self.load_status()
        except CorruptFile as exc:
            aside = _move_aside(self.status_file)
            notes.append(f"{exc}; moved to {aside.name} (the attempt history before it is lost)")
        try:
            self.read_result()
        except FileNotFoundError:
            pass
        except CorruptFile as exc:
            aside = _move_aside(self.result_file)
            notes.append(f"{exc}; moved to {aside.name}, the run is evaluated again")
        result = self.read_result() if self.result_file.is_file() else None
        damaged_log = self._digest_problem(self.metrics, result)
        if damaged_log is not None:
            notes.append(self._retrain_for_log(damaged_log))
        else:
            problem = _metrics_problem(self.metrics)
            if problem is not None:
                notes.append(self._salvage_metrics(problem)[1])
        rebuild: list[str] = []
        damaged_predictions = self._digest_problem(self.predictions, result)
        if damaged_predictions is not None:
            rebuild.append(f"{damaged_predictions}; moved to {self._move_with_sidecar(self.predictions).name}")
        for damaged in self.damaged_evaluations():
            rebuild.append(f"{damaged}; moved to {_move_aside(damaged.path).name}, that unit is scored again from the final weights")
        if rebuild and self.result_file.is_file():
            rebuild.append(f"result.json moved to {_move_aside(self.result_file, 'superseded').name}: the run is evaluated again "
                           "from its verified saved units, without training")
        notes += rebuild
        for note in notes:
            _say(self.path, note)
        self._ensure_status_reserve()
        return notes

    def clear_outputs(self) -> None:
        """Delete what ``--force`` reruns (result, checkpoints, log, predictions, with their digest
        sidecars), after checking that no link is crossed: a deletion never reaches another folder."""
        self.refuse_links()
        for path in (self.result_file, self.checkpoint, self.prev_checkpoint, self.metrics, self.predictions):
            path.unlink(missing_ok=True)
            digest_path(path).unlink(missing_ok=True)

    def set_aside(self, tag: str, keep_result: bool = False) -> list[str]:
        """Move every computed output aside as ``<name>.<tag>-<UTC time>`` — result.json (unless
        ``keep_result``), the checkpoints, the metrics log and predictions with their digest
        sidecars, the saved evaluation units and transfer features — so the run is computed again
        from step 0 while the old outputs stay for inspection (e.g. ``stale-data``: they were
        computed on other data). Returns the names moved; call with the run's lock held."""
        self.refuse_links()
        moved = []
        files = (self.checkpoint, self.prev_checkpoint, self.metrics, self.predictions) + (() if keep_result else (self.result_file,))
        for path in files:
            if os.path.lexists(path) or digest_path(path).is_file():
                self._move_with_sidecar(path, tag)
                moved.append(path.name)
        for folder in (self.evaluations_dir, self.path / "features"):
            if folder.is_dir():
                _move_aside(folder, tag)
                moved.append(folder.name + "/")
        return moved

    def _move_with_sidecar(self, path: Path, tag: str = "corrupt") -> Path:
        """Move a file and its digest sidecar aside together (a sidecar left behind would call the
        rebuilt file damaged)."""
        sidecar = digest_path(path)
        if sidecar.is_file():
            _move_aside(sidecar, tag)
        return _move_aside(path, tag) if os.path.lexists(path) else path

    def _retrain_for_log(self, problem: CorruptFile) -> str:
        """A training log that fails its digest cannot be mended (which line changed is unknown,
        and its numbers come only from training): it is moved aside and the run is trained again
        from step 0, which gives the same numbers (training is seeded). The checkpoints go aside
        too (``superseded``: a resume from them would keep the damaged lines' steps); the saved
        evaluation units stay, reused when the retrained weights hash the same."""
        moved = [self._move_with_sidecar(self.metrics).name]
        for path in (self.checkpoint, self.prev_checkpoint, self.result_file):
            if path.is_file():
                moved.append(self._move_with_sidecar(path, "superseded").name)
        return f"{problem}; moved {', '.join(moved)} aside: the run is trained again from step 0 to rebuild its log"

    def _ensure_status_reserve(self) -> None:
        reserve = self.status_reserve
        try:
            if reserve.is_file() and reserve.stat().st_size >= STATUS_RESERVE_BYTES:
                return
            atomic_write(reserve, lambda tmp: tmp.write_bytes(b" " * STATUS_RESERVE_BYTES))
        except OSError:
            pass  # the disk is full already: a failure write falls back to a minimal status

    # ---- checkpoints -----------------------------------------------------------------------

    def keep_previous_checkpoint(self) -> None:
        """Before a new last.pt is written, the current one becomes prev.pt, so a last.pt damaged
        later still leaves the checkpoint before to resume from. prev.pt's digest is written before the rename:
        at every moment last.pt is intact or prev.pt matches its sidecar."""
        last, prev = self.checkpoint, self.prev_checkpoint
        if not last.is_file():
            return
        sidecar = digest_path(last)
        if sidecar.is_file():
            atomic_write_text(digest_path(prev), sidecar.read_text())
        else:
            digest_path(prev).unlink(missing_ok=True)
        os.replace(last, prev)
        fsync_dir(self.path)

    def drop_previous_checkpoint(self) -> bool:
        """Delete prev.pt and its digest once the run is done: re-evaluation and the digest check
        use last.pt (the final trainable weights and statistics) alone, and prev.pt (a resumable
        checkpoint with the optimiser's state) is only a fallback while training. A finished run
        whose last.pt is damaged then reads ``corrupt`` and is trained again from step 0 (same
        numbers: training is seeded). True when a file was removed. Call with the run's lock held."""
        self.refuse_links()
        removed = False
        for path in (self.prev_checkpoint, digest_path(self.prev_checkpoint)):
            if path.is_file():
                path.unlink()
                removed = True
        if removed:
            fsync_dir(self.path)
        return removed

    def drop_final_weights(self, reason: str) -> bool:
        """Delete a finished run's final weights (last.pt, prev.pt and their digests) when nothing
        will read them again: a tuning run once its selection group is decided (bench.select; its
        held-out score is in result.json, and no tuning run is evaluated again). result.json,
        metrics.jsonl, predictions and the saved evaluations stay. status.json records
        ``weights_dropped`` (the weights' SHA-256, why, when), so the run still reads 'done': the
        digest check covers last.pt only where it exists. Only a verified 'done' run's weights
        are dropped; True when a file was removed. Call with the run's lock held."""
        self.refuse_links()
        if not self.checkpoint.is_file() or not self.is_done():
            return False
        digest = self.weights_digest()
        removed = False
        for path in (self.checkpoint, digest_path(self.checkpoint), self.prev_checkpoint, digest_path(self.prev_checkpoint)):
            if path.is_file():
                path.unlink()
                removed = True
        if removed:
            fsync_dir(self.path)
            self.update_status(weights_dropped={"sha256": digest, "reason": reason, "at": time.time()})
        return removed

    def load_checkpoint(self, map_location: Any = None) -> tuple[dict[str, Any] | None, Path | None]:
        """The newest checkpoint that verifies and loads: last.pt, else prev.pt, else (None, None)
        (start at step 0). One that fails its digest, does not unpickle, is empty or is not a
        checkpoint is moved aside as ``<name>.corrupt-<UTC time>`` and that is noted: a damaged
        checkpoint is never loaded silently, and never fails every rerun."""
        import torch

        candidates = [p for p in (self.checkpoint, self.prev_checkpoint) if p.is_file()]
        for i, path in enumerate(candidates):
            problem, verified = _verify_digest(path)
            state = None
            if problem is None:
                try:
                    state = torch.load(path, map_location=map_location, weights_only=False)
                    _check_checkpoint(state)
                except Exception as exc:  # noqa: BLE001 — any failure to load is damage here
                    problem = f"does not load ({exc.__class__.__name__}: {str(exc)[:160]})"
            if problem is None:
                if not verified:
                    self.note(f"{path.name} has no digest (written before checksums): loaded unverified")
                return state, path
            aside = _move_aside(path)
            if digest_path(path).is_file():
                _move_aside(digest_path(path))
            fallback = f"trying {candidates[i + 1].name}" if i + 1 < len(candidates) else "restarting from step 0"
            self.note(f"{path.name} {problem}; moved to {aside.name}; {fallback}")
        return None, None


    # ---- evaluation, split by split ---------------------------------------------------------

    def _evaluation_file(self, unit: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in unit)
        return self.evaluations_dir / f"{safe}-{hashlib.sha256(unit.encode()).hexdigest()[:8]}.json"

    def weights_digest(self) -> str | None:
        """The SHA-256 of the final weights (last.pt's sidecar): what an evaluation was computed from."""
        sidecar = digest_path(self.checkpoint)
        return sidecar.read_text().split()[0] if sidecar.is_file() and sidecar.read_text().strip() else None

    def save_evaluation(self, unit: str, metrics: dict[str, Any], per_image: dict[str, dict[str, Any]]) -> None:
        """Keep one evaluation unit's scores (a split, or a transfer target) as soon as it is done,
        tagged with the weights it was computed from: a run interrupted during its evaluation
        resumes at the next unit instead of scoring every split again."""
        weights = self.weights_digest()
        if weights is None:
            return  # nothing to tie the scores to: they are not kept
        arrays = {f"{split}::{name}": {"dtype": str(np.asarray(v).dtype), "values": np.asarray(v).tolist()}
                  for split, named in per_image.items() for name, v in named.items()}
        record = json.loads(json.dumps({"unit": unit, "weights_sha256": weights, "metrics": metrics, "per_image": arrays}, default=str))
        record["digest"] = result_digest(record)  # on the JSON round trip: exactly what a reader parses
        atomic_write_json(self._evaluation_file(unit), record)

    def damaged_evaluations(self) -> list[CorruptFile]:
        """Saved evaluation units that fail their digest or do not parse (files from before digests
        are not damage: they are simply scored again)."""
        out: list[CorruptFile] = []
        folder = self.evaluations_dir
        if not folder.is_dir() or folder.is_symlink():
            return out
        for path in sorted(folder.glob("*.json")):
            try:
                saved = _read_json(path)
            except CorruptFile as exc:
                out.append(exc)
                continue
            except OSError:
                continue
            if not isinstance(saved, dict):
                out.append(CorruptFile(path, "not a JSON object"))
            elif "digest" in saved and saved["digest"] != result_digest(saved):
                out.append(CorruptFile(path, f"digest mismatch (content hashes to {result_digest(saved)[:12]}…, recorded {str(saved['digest'])[:12]}…)"))
        return out

    def saved_evaluation(self, unit: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
        """(metrics, per-image arrays) of a unit scored from the current final weights, else None
        (never scored, scored from other weights, or unreadable: it is then simply scored again)."""
        path = self._evaluation_file(unit)
        weights = self.weights_digest()
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if weights is None or not isinstance(saved, dict) or saved.get("weights_sha256") != weights or saved.get("unit") != unit:
            return None
        if saved.get("digest") != result_digest(saved):  # changed, or from before digests: scored again, never reused unverified
            return None
        per_image: dict[str, dict[str, Any]] = {}
        for key, values in saved.get("per_image", {}).items():
            split, _, name = key.rpartition("::")
            per_image.setdefault(split, {})[name] = np.asarray(values["values"], dtype=values["dtype"])
        return saved["metrics"], per_image


# ---- the run lock ---------------------------------------------------------------------------

def lock_stale_after_s() -> float:
    """Seconds without a heartbeat after which a lock is stale ($BENCH_LOCK_STALE_S, default 600)."""
    return float(os.environ.get(LOCK_STALE_ENV, LOCK_STALE_S))


def heartbeat_every_s() -> float:
    """A tenth of the stale time (at most 30 s): a holder misses many beats before it looks dead."""
    return max(0.05, min(30.0, lock_stale_after_s() / 10))


def _read_lock(path: Path) -> tuple[dict[str, Any] | None, float] | None:
    """(content, or None if unreadable; mtime) of a lock file; None when there is none."""
    try:
        mtime = path.stat().st_mtime
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(data.decode("utf-8"))
    except ValueError:
        return None, mtime
    return (info if isinstance(info, dict) else None), mtime


def lock_is_stale(info: dict[str, Any] | None, mtime: float, job_id: str | None = None, now: float | None = None) -> str | None:
    """Why a lock no longer protects anything, or None while its holder may still be running.

    Stale when (1) the same scheduler job id asks again (a requeued Slurm job: Slurm runs one
    incarnation of a job id at a time, so the old one is gone), (2) the holder ran on this host and
    its pid is gone or now names another process (start time differs), or (3) no heartbeat for
    :func:`lock_stale_after_s` — the only test possible across hosts. An unreadable lock file (a
    lock is complete when it appears, so this is damage) is stale only by (3), on its mtime.
    """
    now = time.time() if now is None else now
    limit = lock_stale_after_s()
    if info is None:
        return f"unreadable lock file untouched for {now - mtime:.0f} s" if now - mtime > limit else None
    if job_id and info.get("job_id") and str(info["job_id"]) == str(job_id):
        return f"taken by this same job {job_id} before it was requeued"
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        pid = info["pid"]
        if not _alive(pid):
            return f"process {pid} on this host is gone"
        started = _proc_start(pid)
        if info.get("pid_start") and started is not None and started != info["pid_start"]:
            return f"pid {pid} on this host is another process now"
    try:
        beat = max(mtime, float(info.get("heartbeat") or 0))
    except (TypeError, ValueError):
        beat = mtime
    if now - beat > limit:
        return f"no heartbeat for {now - beat:.0f} s (stale after {limit:.0f} s)"
    return None


def _create_exclusive(path: Path, info: dict[str, Any]) -> bool | None:
    """Create ``path`` holding ``info`` only if it does not exist: True if created, False if it
    exists, None to retry (our temp file vanished). The content is written to a temp file and
    hard-linked into place, so the lock is complete the moment it exists (link is atomic and
    exclusive, also over NFS); where hard links are refused, O_CREAT|O_EXCL."""
    data = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.fchmod(fd, 0o644)  # others' launchers on a shared filesystem read it
        os.close(fd)
        fd = -1
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return False
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(out, data)
                os.fsync(out)
            finally:
                os.close(out)
        fsync_dir(path.parent)
        return True
    finally:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass


def _break_stale(path: Path, observed: dict[str, Any] | None) -> None:
    """Remove a stale lock without ever removing a fresh one: rename it to a unique name (atomic),
    then check it is the one judged stale; if a racer replaced it meanwhile, link it back."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process broke it first
    moved = _read_lock(aside)
    moved_token = (moved[0] or {}).get("token") if moved else None
    if moved_token != (observed or {}).get("token"):
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


class RunLock:
    """The right to train a run and write its folder, held by the training process (rank 0).

    ``lock.json`` in the run folder holds host, pid (+ its start time), scheduler job id, start,
    a heartbeat refreshed by a daemon thread every :func:`heartbeat_every_s`, and a token that
    identifies this holder. It is created exclusively; a second process finds it and, unless
    :func:`lock_is_stale` says otherwise, raises :class:`RunHeld` before touching anything.
    """

    def __init__(self, run_dir: RunDir, info: dict[str, Any], took_over: str | None = None) -> None:
        self.run_dir, self.info, self.took_over = run_dir, info, took_over
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat-{run_dir.path.name}", daemon=True)

    @classmethod
    def acquire(cls, run_dir: RunDir, job_id: str | None = None) -> "RunLock":
        run_dir.path.mkdir(parents=True, exist_ok=True)
        path, took_over, holder = run_dir.lock_file, None, None
        for _ in range(8):
            now = time.time()
            pid = os.getpid()
            info = {"host": socket.gethostname(), "pid": pid, "pid_start": _proc_start(pid), "job_id": str(job_id) if job_id else None,
                    "start": now, "heartbeat": now, "token": uuid.uuid4().hex}
            created = _create_exclusive(path, info)
            if created:
                lock = cls(run_dir, info, took_over)
                lock._thread.start()
                if took_over:
                    _say(run_dir.path, f"took over a stale lock ({took_over})")
                return lock
            if created is None:
                continue
            found = _read_lock(path)
            if found is None:
                continue  # released meanwhile
            holder, mtime = found
            why = lock_is_stale(holder, mtime, info["job_id"])
            if why is None:
                raise RunHeld(run_dir.path, holder if holder is not None else _unreadable_holder(path, mtime))
            took_over = why
            _break_stale(path, holder)
        raise RunHeld(run_dir.path, holder or {})

    @staticmethod
    def holder(run_dir: RunDir, job_id: str | None = None) -> dict[str, Any] | None:
        """Who holds the run's lock now, if the lock is live (for launchers, which skip such runs)."""
        found = _read_lock(run_dir.lock_file)
        if found is None:
            return None
        info, mtime = found
        if lock_is_stale(info, mtime, job_id) is not None:
            return None
        return info if info is not None else _unreadable_holder(run_dir.lock_file, mtime)

    def _owned(self) -> bool:
        found = _read_lock(self.run_dir.lock_file)
        return bool(found and found[0] and found[0].get("token") == self.info["token"])

    def _beat(self) -> None:
        while not self._stop.wait(heartbeat_every_s()):
            if not self._owned():
                _say(self.run_dir.path, "lost its lock (judged stale and taken over elsewhere?)")
                return
            self.info["heartbeat"] = time.time()
            try:
                atomic_write_json(self.run_dir.lock_file, self.info)
            except OSError:  # a full disk: the file's mtime is a heartbeat too
                try:
                    os.utime(self.run_dir.lock_file)
                except OSError:
                    pass

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._owned():
            self.run_dir.lock_file.unlink(missing_ok=True)
            fsync_dir(self.run_dir.path)
