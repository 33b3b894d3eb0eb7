"""Atomic file writes and the cache folder: a file others read is complete or absent."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from bench.lazy import lazy

torch = lazy("torch")


def cache_dir(*parts: str) -> Path:
    """``$BENCH_CACHE``/parts, created on demand; without it ``$XDG_CACHE_HOME/grpo-rm-bench``
    (the XDG base-directory rule: a user who moved their caches expects ours there too), else
    ``~/.cache/grpo-rm-bench``."""
    root = Path(os.environ.get("BENCH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "grpo-rm-bench")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_file(kind: str, folder: Path) -> Path:
    """The cache file of ``kind`` (``store-ledger``, ``report-estimates``, ...) that belongs to
    ``folder`` (a suite's results, a report folder, a file of one): one per folder, named by its
    resolved path, so two checkouts or two reports never share one."""
    return cache_dir(kind) / f"{hashlib.sha256(os.path.realpath(folder).encode()).hexdigest()[:24]}.json"


# errors that mean "this filesystem takes no more writes": a state of the machine, not a bug, so
# they end a run as failed with the path named (rerun after freeing space) and never a traceback
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
_DISK_WORDS = {errno.ENOSPC: "no space left on", errno.EDQUOT: "disk quota exceeded on", errno.EROFS: "read-only file system at"}
DISK_WORDS = tuple(_DISK_WORDS.values())  # how a recorded error line of a disk failure starts


def disk_error(exc: BaseException | None) -> OSError | None:
    """The full-disk / over-quota / read-only OSError behind ``exc`` (itself, or its cause or
    context: torch.save wraps the OS error in a RuntimeError), else None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def disk_message(exc: BaseException) -> str | None:
    """'no space left on /results/lk/ab12/last.pt' (or 'read-only file system at …', 'disk quota
    exceeded on …') for a disk error, else None: the one line a person needs, path included."""
    err = disk_error(exc)
    if err is None:
        return None
    where = err.filename or "an unnamed file (the path was not reported)"
    return f"{_DISK_WORDS[err.errno]} {where}"


def with_path(exc: OSError, path: Path | str) -> OSError:
    """The same OS error naming ``path`` when it named none (a write() to an open file reports
    no file name): messages must say where the disk is full."""
    if exc.filename is not None:
        return exc
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno or 0), str(path))


def _full(folder: Path) -> bool:
    """Whether the filesystem of ``folder`` has no block left for us (statvfs)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail == 0


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a temp file beside ``path`` and rename it into place.

    The temp file is fsynced before the rename and the folder after it: without the first, a
    power cut after the rename can leave ``path`` empty (the rename reached the disk, the data
    did not); without the second, the rename itself can be lost and the old file come back.
    """
    path = Path(path)
    try:
        _atomic_write(path, write)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS and exc.filename != str(path):  # the file meant, not its temp file
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise
    except Exception as exc:
        # writers with their own handles (torch.save, pandas) turn ENOSPC into other errors
        # (torch: RuntimeError "PytorchStreamWriter failed writing file"): on a full filesystem
        # that is what it is, and is said so with the path
        if disk_error(exc) is None and _full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    for attempt in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for others to read
            fsync_path(tmp)
            os.replace(tmp, path)
            fsync_dir(path.parent)
            return
        except FileNotFoundError:
            # a run starting under its lock removes stray temp files (RunDir.prepare); one that was
            # a write in flight (a launcher's) is simply written again
            if tmp.exists() or attempt == 2:
                raise
        finally:
            if tmp.exists():
                tmp.unlink()


def fsync_path(path: Path) -> None:
    """Flush a file's data to disk (the writer may have used a handle of its own, e.g. torch.save)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename, a new file) to disk; a no-op where the filesystem
    cannot fsync a folder (some network and FUSE filesystems refuse with EINVAL)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (checkpoints can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def digest_path(path: Path) -> Path:
    """The sidecar that holds ``path``'s SHA-256: ``last.pt`` → ``last.pt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def code_digest(folder: Path, names: tuple[str, ...], *tags: str) -> str:
    """A short hash of source files (``folder``/``names``) and version ``tags``: what a cache
    between commands is keyed by, so that changing the code that made an entry forgets it."""
    h = hashlib.sha256("|".join(tags).encode())
    for name in names:
        h.update((Path(folder) / name).read_bytes())
    return h.hexdigest()[:16]


def write_checked_json(path: Path, body: Any) -> None:
    """Write ``body`` atomically as a cache file that proves itself: the SHA-256 of the JSON text,
    a newline, the text. Checking it on reading hashes the very bytes that are parsed, so a
    damaged file is never trusted and nothing is serialised a second time to check it (a
    report's caches hold tens of thousands of entries)."""
    text = json.dumps(body, separators=(",", ":"))
    atomic_write_text(path, f"{hashlib.sha256(text.encode()).hexdigest()}\n{text}")


def read_checked_json(path: Path) -> Any:
    """The body :func:`write_checked_json` wrote, or None when the file is absent, unreadable,
    damaged (its checksum does not match) or of another format."""
    try:
        check, newline, text = Path(path).read_text().partition("\n")
        if not newline or hashlib.sha256(text.encode()).hexdigest() != check:
            return None
        return json.loads(text)
    except (OSError, ValueError):
        return None


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save atomically, with a SHA-256 sidecar (``<name>.sha256``) that loaders verify.

    The sidecar is written (atomically) after the data is on disk and before the rename, so a
    file at ``path`` always has its digest beside it: a flipped or truncated byte is caught on
    load instead of resuming from silently different numbers.
    """
    path = Path(path)

    def write(tmp: Path) -> None:
        torch.save(obj, tmp)
        atomic_write_text(digest_path(path), f"{sha256_file(tmp)}  {tmp.stat().st_size}\n")

    atomic_write(path, write)
