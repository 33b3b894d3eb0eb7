"""Cheap, recorded fingerprints of dataset splits: what makes "the same data" checkable.

A run's id says what was computed, never where the data lives, so the same id under two data
roots could describe two different datasets (a label-inverted copy, a partial extraction). Each
split therefore has a fingerprint, formed by the function registered next to its locator/loader
(``SplitSource.fingerprint``, ``DatasetEntry.fingerprint``) from these helpers:

- array files (IDX, pickle batches, ``.npy``, binaries): each file's name relative to the data
  root, size and SHA-256 of its content. Hashes are cached on disk by (absolute path, device,
  inode, size, mtime), so a file is read once per change, not once per command.
- folder datasets: the sorted relative paths and sizes of every image (and mask) file plus a hash
  of the label array the loader built from its index files (devkit, annotations, class folders);
  image files are never read, only listed and stat'ed.
- generated data: the fingerprint of its source split, the generator's parameters and a hash of
  the generator's source files.
- your own data (imagefolder, manifest, segfolder): the listing as for folder datasets, but with
  each file's content hash as well (:func:`content_listing`): nobody else vouches for these
  files, so an image or mask changed in place at the same size must change the fingerprint.

No absolute path, and no mtime, enters a fingerprint: the same bytes mounted or copied elsewhere
have the same fingerprint (the run stays done), while changed labels or files change it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

FINGERPRINT_VERSION = 1  # bump when what a fingerprint covers changes: every recorded one then differs
_MEMO: dict[tuple, str] | None = None  # per command (see memoised): a split is fingerprinted once
_HASHES: dict[tuple, str] = {}  # this process's file hashes, by (path, dev, ino, size, mtime)


def digest(obj: Any) -> str:
    """A short SHA-256 of ``obj``'s canonical JSON: the form every fingerprint takes."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def array_digest(array: np.ndarray | None) -> str | None:
    """Hash of an array's dtype, shape and bytes (labels, lookup tables)."""
    if array is None:
        return None
    a = np.ascontiguousarray(array)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()[:16]


def relative_name(path: Path, root: Path | None) -> str:
    """``path`` relative to the data root (a file outside it, e.g. a system-wide copy: its name):
    never an absolute path, so a fingerprint does not depend on where the data is mounted."""
    path = Path(path)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def _hash_cache_file(key: tuple) -> Path:
    from bench.io import cache_dir

    return cache_dir("file-hashes") / hashlib.sha1(repr(key).encode()).hexdigest()


def file_hash(path: Path) -> str:
    """SHA-256 of a file's content, cached (in this process and on disk) by its absolute path,
    device, inode, size and mtime: a rewritten file is hashed again, an untouched one is not."""
    from bench.io import atomic_write_text, sha256_file

    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _HASHES:
        return _HASHES[key]
    cached = _hash_cache_file(key)
    try:
        value = cached.read_text().strip()
    except OSError:
        value = ""
    if len(value) != 64:
        value = sha256_file(Path(path))
        with contextlib.suppress(OSError):  # a read-only cache only costs speed
            atomic_write_text(cached, value + "\n")
    _HASHES[key] = value
    return value


def files_fingerprint(paths: Iterable[Path], root: Path | None, **facts: Any) -> str:
    """Array files (read whole by their loader): relative name, size and content hash of each."""
    entries = sorted((relative_name(p, root), os.stat(p).st_size, file_hash(p)) for p in paths)
    return digest({"v": FINGERPRINT_VERSION, "files": entries, **facts})


def listing(paths: Sequence[str] | None, root: Path | None) -> list[tuple[str, int]] | None:
    """Relative path and size of each listed file, in the split's order (stat only, no reads)."""
    if paths is None:
        return None
    return [(relative_name(Path(p), root), os.stat(p).st_size) for p in paths]


def image_files_fingerprint(split: Any, root: Path | None, **facts: Any) -> str:
    """A split decoded from files (:class:`bench.data.base.ImageFiles`), as its loader lists it:
    relative paths and sizes of images and masks, the label array built from the index files, the
    mask lookup table and the label space. Image and mask bytes are not read."""
    return digest({
        "v": FINGERPRINT_VERSION, "images": listing(split.paths, root), "labels": array_digest(split.labels),
        "masks": listing(split.mask_paths, root), "mask_lut": array_digest(split.mask_lut),
        "label_space": split.label_space, "meta": split.meta, **facts,
    })


def content_listing(paths: Sequence[str] | None, root: Path, tag: str) -> list[tuple[str, int, str]] | None:
    """Relative path (to ``root``), size and SHA-256 of each listed file, in the split's order.

    Each file is read once per change. Hashes are kept in this process (by absolute path, device,
    inode, size, mtime, as :func:`file_hash`) and on disk in one cache file per (``root``,
    ``tag``) — not one per image, since own datasets can hold millions —, written when something
    was hashed anew. ``tag`` (the split) keeps two splits' listings from overwriting each other."""
    if paths is None:
        return None
    keys = []
    for p in paths:
        st = os.stat(p)
        keys.append((os.path.abspath(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    missing = [k for k in keys if k not in _HASHES]
    if missing:
        _fill_from_listing_cache(missing, keys, Path(root), tag)
    return [(relative_name(Path(p), root), k[3], _HASHES[k]) for p, k in zip(paths, keys)]


def _fill_from_listing_cache(missing: list[tuple], keys: list[tuple], root: Path, tag: str) -> None:
    from bench.io import atomic_write_text, cache_dir, sha256_file

    store = cache_dir("file-hashes", "listings") / hashlib.sha1(f"{Path(root).resolve()}\0{tag}".encode()).hexdigest()
    try:
        cached = json.loads(store.read_text())
        cached = cached if isinstance(cached, dict) else {}
    except (OSError, ValueError):
        cached = {}
    hashed = False
    for key in missing:
        hit = cached.get(key[0])
        if isinstance(hit, list) and len(hit) == 5 and tuple(hit[:4]) == key[1:] and isinstance(hit[4], str) and len(hit[4]) == 64:
            _HASHES[key] = hit[4]
        else:
            _HASHES[key] = sha256_file(Path(key[0]))
            hashed = True
    if hashed or len(cached) != len(keys):
        with contextlib.suppress(OSError):  # a read-only cache only costs speed
            atomic_write_text(store, json.dumps({k[0]: [*k[1:], _HASHES[k]] for k in keys}))


def source_hash(*modules: Any) -> str:
    """Hash of the source files of the modules that generate data: changed generator code is
    changed data."""
    return digest([hashlib.sha256(Path(m.__file__).read_bytes()).hexdigest() for m in modules])


@contextlib.contextmanager
def memoised() -> Iterator[None]:
    """Within this block each split is fingerprinted at most once (one CLI command: status, run
    and report check many runs that share splits). Outside it nothing is memoised beyond the
    per-file hash cache, so a long-lived process sees data that changed between commands."""
    global _MEMO
    outer = _MEMO
    _MEMO = {} if outer is None else outer
    try:
        yield
    finally:
        _MEMO = outer


def memo_get(key: tuple) -> str | None:
    return None if _MEMO is None else _MEMO.get(key)


def memo_put(key: tuple, value: str) -> None:
    if _MEMO is not None:
        _MEMO[key] = value
