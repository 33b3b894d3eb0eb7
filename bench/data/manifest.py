"""``manifest``: your own classification images listed in a CSV, TSV or Parquet file.

Columns ``path`` (relative to the manifest's folder, or absolute), ``label`` (a class name) and
optionally ``split`` (``train``, ``val`` or ``test``); other columns are ignored. The classes are
the sorted label names of the ``train`` rows (the same rule as ``imagefolder``'s sorted folder
names), so the head and GRPO-RM's group have as many classes as the train rows name. Rows keep
the file's order within each split. ``val`` rows, when there are any, are the held-out split
model selection reads; without them ``heldout`` is carved from the train rows. Without a
``split`` column every row is a train row: there is no test split (asking for it says so), so
such a manifest suits held-out evaluation alone (``evaluations: [heldout]``).

Every problem names the manifest and the row's line (``file:line: column: reason``; Parquet files
have no lines: ``file: row N``): a missing file, an unknown split, an empty cell, a path listed
twice, a val/test label that no train row has.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.data import shifts
from bench.data.base import DATASETS, DatasetEntry, ImageFiles
from bench.data.classification import REAL_TRANSFORM
from bench.data.layout import DatasetLocator, Layout
from bench.data.own import OWN_SOURCE, own_fingerprint, own_path
from bench.data.shifts import SplitSource

SPLITS = ("train", "val", "test")
COLUMNS = ("path", "label", "split")
READERS = {".csv": ",", ".tsv": "\t"}  # and .parquet (pyarrow)
LAYOUT = Layout(
    "manifest",
    "<file>   (data.params.file: relative to the data root, or absolute; default manifest.csv; .csv, .tsv or .parquet)\n"
    "  columns: path, label[, split]   (a header row; other columns are ignored)\n"
    "    path:  an image file, relative to the manifest's folder (or absolute)\n"
    "    label: a class name; the classes are the sorted names of the train rows\n"
    "    split: train | val | test   (optional column: without it every row is train; val = the held-out split)",
    OWN_SOURCE,
)


@dataclass(frozen=True)
class Manifest:
    """A manifest read and checked: per split, the image paths and labels in file order."""

    file: Path
    classes: tuple[str, ...]
    paths: dict[str, tuple[str, ...]]
    labels: dict[str, np.ndarray]
    has_split_column: bool


_READ: dict[tuple, Manifest] = {}  # by (absolute path, size, mtime): a manifest is read once per change


def _table(file: Path, loc: DatasetLocator) -> tuple[Any, Callable[[int], str]]:
    """The manifest as text columns, and where row i is said to be (``file:line`` or ``file: row N``)."""
    import pandas as pd

    suffix = file.suffix.lower()
    if suffix != ".parquet" and suffix not in READERS:
        raise loc.fail(file, f"{file}: not a .csv, .tsv or .parquet file")
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(file).astype("string").fillna("")  # labels may be stored as numbers; a missing cell is empty
            return frame, lambda i: f"{file}: row {i + 1}"
        # blank lines stay rows (skipped by read), so row i is line i + 2 (line 1 is the header)
        frame = pd.read_csv(file, sep=READERS[suffix], dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig")
        return frame, lambda i: f"{file}:{i + 2}"
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise loc.fail(file, f"{file}: cannot be read as a {suffix.lstrip('.')} table: {reason}") from None


def read(loc: DatasetLocator, file: Path) -> Manifest:
    """``file`` read and checked (each listed image must exist); memoised per file change."""
    loc.file(file, "manifest file (data.params.file)")
    st = os.stat(file)
    key = (os.path.abspath(file), st.st_size, st.st_mtime_ns)
    if key in _READ:
        return _READ[key]
    frame, where = _table(file, loc)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in COLUMNS[:2] if c not in frame.columns]
    if missing:
        header = f"{file}:1" if file.suffix.lower() in READERS else str(file)
        raise loc.fail(file, f"{header}: {missing[0]}: no such column (found: {', '.join(frame.columns) or 'none'}; needed: path, label[, split])")
    has_split = "split" in frame.columns
    columns = [frame[c].astype(str).str.strip().tolist() for c in (COLUMNS if has_split else COLUMNS[:2])]
    rows: dict[str, list[tuple[int, str, str]]] = {s: [] for s in SPLITS}
    seen: dict[str, int] = {}
    for i, cells in enumerate(zip(*columns)):
        path, label, split = cells[0], cells[1], (cells[2] if has_split else "train")
        if not any(cells):
            continue  # a blank line
        for column, value in zip(COLUMNS, (path, label, split)):
            if not value:
                raise loc.fail(file, f"{where(i)}: {column}: empty")
        if split not in rows:
            raise loc.fail(file, f"{where(i)}: split: {split!r} is not one of {', '.join(SPLITS)}")
        image = Path(path).expanduser()
        image = image if image.is_absolute() else file.parent / image
        if not image.is_file():
            raise loc.fail(image, f"{where(i)}: path: {path!r} is not a file (paths are relative to the manifest's folder {file.parent})")
        resolved = os.path.normpath(image)
        if resolved in seen:
            raise loc.fail(image, f"{where(i)}: path: {path!r} is listed again (first at {where(seen[resolved])}): an image belongs to one split, once")
        seen[resolved] = i
        rows[split].append((i, str(image), label))
    names = tuple(sorted({label for _, _, label in rows["train"]}))
    if not names:
        raise loc.fail(file, f"{file}: no train rows: the classes are the labels of the train rows")
    index = {c: n for n, c in enumerate(names)}
    for split in ("val", "test"):
        for i, _, label in rows[split]:
            if label not in index:
                raise loc.fail(file, f"{where(i)}: label: {label!r} ({split}) is not the label of any train row, so it has no class id")
    found = Manifest(file, names, {s: tuple(p for _, p, _ in r) for s, r in rows.items()},
                     {s: np.asarray([index[label] for _, _, label in r], dtype=np.int64) for s, r in rows.items()}, has_split)
    if len(_READ) > 64:
        _READ.clear()
    _READ[key] = found
    return found


def _manifest(split: str, data_root: Any, file: str) -> tuple[Manifest, DatasetLocator]:
    loc = DatasetLocator(LAYOUT, split, data_root)
    return read(loc, own_path(loc, "file", file, "manifest file")), loc


def classes(data_root: Any = None, file: str = "manifest.csv", **_: Any) -> tuple[str, ...]:
    return _manifest("train", data_root, file)[0].classes


def load(split: str, data_root: Any = None, file: str = "manifest.csv", **_: Any) -> ImageFiles:
    found, loc = _manifest(split, data_root, file)
    if not found.paths[split]:
        why = "the manifest has no split column, so every row is train" if not found.has_split_column else f"no row has split {split!r}"
        raise loc.fail(found.file, f"{found.file}: split {split!r} is empty ({why})")
    meta = {"classes": list(found.classes)} if split == "train" else {}
    return ImageFiles(found.paths[split], found.labels[split], meta=meta)


def fingerprint(split: str, data_root: Any = None, file: str = "manifest.csv", **_: Any) -> str:
    """The split's images (relative to the manifest's folder: paths, sizes, content hashes) and
    labels; not the manifest's bytes, so an edit to other splits' rows leaves this one's alone.
    For ``train`` also whether val rows exist (they decide whether train rows are carved)."""
    found, _ = _manifest(split, data_root, file)
    facts = {"val_rows": bool(found.paths["val"])} if split == "train" else {}
    return own_fingerprint(load(split, data_root, file), found.file.parent, f"{found.file.name}:{split}", found.classes, **facts)


def heldout(train_split: str, data_root: Any = None, file: str = "manifest.csv", **_: Any) -> str | None:
    """``val`` when the manifest has val rows and runs train on ``train``; else None (carve)."""
    return "val" if train_split == "train" and _manifest("val", data_root, file)[0].paths["val"] else None


def _register() -> None:
    own = {s: SplitSource(lambda data_root=None, s=s, **p: load(s, data_root, **p), lambda data_root=None, s=s, **p: load(s, data_root, **p),
                          lambda data_root=None, s=s, **p: fingerprint(s, data_root, **p)) for s in SPLITS}
    table = {**own, **shifts.generated_sources(own["test"])}

    DATASETS.add("manifest", DatasetEntry(
        task="classification", num_classes=0, classes_from_data=classes, heldout_from_data=heldout,
        splits=tuple(table), shift_splits=tuple(s for s in table if s not in own), default_eval=("test",),
        build=lambda split, data_root=None, **p: table[split].build(data_root, **p),
        locate=lambda split, data_root=None, **p: table[split].locate(data_root, **p),
        fingerprint=lambda split, data_root=None, **p: table[split].fingerprint(data_root, **p),
        params={"file": "manifest.csv", "corruption_seed": 0}, transform_defaults=REAL_TRANSFORM,
        description="your own images listed in a CSV/TSV/Parquet manifest (path, label[, split]); classes = the train rows' sorted labels; "
        "val rows = held-out; shifts: generated corruptions of the test rows",
    ))


_register()
