"""What the datasets made of your own files share: where their folder is, and what identifies them.

``imagefolder`` (:mod:`bench.data.imagefolder`), ``manifest`` (:mod:`bench.data.manifest`) and
``segfolder`` (:mod:`bench.data.segfolder`) have no official archive and no class count fixed at
registration: the classes are whatever the data holds (``DatasetEntry.classes_from_data``), so
the head, and GRPO-RM's group, have as many outputs as the data has classes. Their folder (or
manifest file) is a dataset parameter, relative to the data root like every registered
dataset's folder, or absolute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from bench.data.base import ImageFiles
from bench.data.fingerprint import FINGERPRINT_VERSION, array_digest, content_listing, digest
from bench.data.layout import IMAGE_SUFFIXES, DatasetLocator

OWN_SOURCE = "your own files (no official archive); docs/datasets.md, section 'Your own data', describes the layout"


def own_path(loc: DatasetLocator, param: str, value: str, what: str = "dataset folder") -> Path:
    """``value`` of ``data.params.<param>``: an absolute path, or a path relative to the data root
    (empty: the data root itself). Not checked for existence (callers say what they expected)."""
    path = Path(value).expanduser() if value else None
    if path is not None and path.is_absolute():
        return path
    if loc.root is None:
        raise loc.fail(Path("<data root>") / (value or ""), f"no data root is configured, and data.params.{param} ({value!r}) is relative to it")
    return loc.root / path if path is not None else loc.root


def class_folders(folder: Path) -> list[str]:
    """The class folder names directly in ``folder``, sorted (the class order, as torchvision's
    ImageFolder gives it); hidden folders (``.ipynb_checkpoints``, ``.git``) are not classes."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def images_below(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder`` (sub-folders included, links followed), in
    torchvision's ImageFolder order: folders walked sorted, file names sorted within each."""
    found = []
    for where, _, names in sorted(os.walk(folder, followlinks=True)):
        found += [Path(where) / n for n in sorted(names) if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
    return found


def own_fingerprint(split: ImageFiles, root: Path, tag: str, classes: Sequence[str], **facts: Any) -> str:
    """Which data a split of your own files is: each image's (and mask's) path relative to the
    dataset's own folder, size and content hash (:func:`bench.data.fingerprint.content_listing`:
    a file changed in place changes it), the labels, the class names in label order, and facts.
    Relative to the dataset's folder, so the same files elsewhere keep their fingerprint."""
    return digest({
        "v": FINGERPRINT_VERSION, "images": content_listing(split.paths, root, tag), "labels": array_digest(split.labels),
        "masks": content_listing(split.mask_paths, root, f"{tag}/masks"), "classes": list(classes),
        "label_space": split.label_space, **facts,
    })
