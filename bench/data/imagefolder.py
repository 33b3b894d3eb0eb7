"""``imagefolder``: your own classification images, one sub-folder per class (torchvision's ImageFolder layout).

``<root>/train/<class>/…`` defines the classes: their folder names, sorted, are the class ids 0…C−1,
so the head has C outputs and GRPO-RM's group is C. ``test/`` (the test split) and the optional
``val/`` use the same folder names; a folder there that ``train/`` lacks is an error (its images
would have no class id), while a class missing from them is allowed. ``val/``, when present, is
the held-out split model selection reads (``heldout``), whole; without it ``heldout`` is carved
from ``train/`` as for every registered dataset (:mod:`bench.data.holdout`). Generated
corruptions of ``test/`` (``gen/<corruption>/<severity>``) are its shift splits.

Images are listed as torchvision's ImageFolder lists them (sub-folders of a class folder included,
walked sorted) and decoded as it decodes them (PIL, converted to RGB), so both give the same
samples in the same order (tests/test_own_data.py checks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data import shifts
from bench.data.base import DATASETS, DatasetEntry, ImageFiles, Split
from bench.data.classification import REAL_TRANSFORM
from bench.data.layout import IMAGE_SUFFIXES, DatasetLocator, Layout
from bench.data.own import OWN_SOURCE, class_folders, images_below, own_fingerprint, own_path
from bench.data.shifts import SplitSource

OWN_SPLITS = ("train", "val", "test")
LAYOUT = Layout(
    "imagefolder",
    "<root>/   (data.params.root: relative to the data root, or absolute; default: the data root itself)\n"
    "  train/<class>/*.{" + ",".join(s.lstrip(".") for s in IMAGE_SUFFIXES) + "}   (one folder per class; classes = the sorted folder names)\n"
    "  val/<class>/…    (optional: the held-out split for model selection; without it, carved from train/)\n"
    "  test/<class>/…   (class folders named as in train/)",
    OWN_SOURCE,
)


def _folder(split: str, data_root: Any, root: str) -> tuple[Path, DatasetLocator]:
    loc = DatasetLocator(LAYOUT, split, data_root)
    return loc.folder(own_path(loc, "root", root), "dataset folder (data.params.root)"), loc


def classes(data_root: Any = None, root: str = "", **_: Any) -> tuple[str, ...]:
    """The class names in label order: ``train/``'s class folders, sorted (one folder listing)."""
    folder, loc = _folder("train", data_root, root)
    train = loc.folder(folder / "train", "train/ folder")
    names = class_folders(train)
    if not names:
        raise loc.fail(train, "no class folders: put each class's images in a folder named after the class (train/<class>/…)")
    return tuple(names)


def load(split: str, data_root: Any = None, root: str = "", **_: Any) -> ImageFiles:
    """``split``'s images labelled by their class folder's index among ``train/``'s classes."""
    names = classes(data_root, root)
    folder, loc = _folder(split, data_root, root)
    base = loc.folder(folder / split, f"{split}/ folder")
    index = {c: i for i, c in enumerate(names)}
    present = class_folders(base)
    unknown = [c for c in present if c not in index]
    if unknown:
        raise loc.fail(base / unknown[0], f"class folder {unknown[0]!r} is not a class of train/ ({len(unknown)} such folder(s); "
                       f"train/ has {', '.join(names[:8])}{', …' if len(names) > 8 else ''}): its images would have no class id")
    if not present:
        raise loc.fail(base, "no class folders: put each class's images in a folder named after the class")
    paths: list[str] = []
    labels: list[int] = []
    for name in present:
        files = images_below(base / name)
        if not files:
            raise loc.fail(base / name, f"class folder holds no images (looked for {', '.join(IMAGE_SUFFIXES)}, sub-folders included)")
        paths += map(str, files)
        labels += [index[name]] * len(files)
    meta = {"classes": list(names)} if split == "train" else {}
    return ImageFiles(tuple(paths), np.asarray(labels, dtype=np.int64), meta=meta)


def fingerprint(split: str, data_root: Any = None, root: str = "", **_: Any) -> str:
    """The split's files and labels (:func:`bench.data.own.own_fingerprint`); for ``train`` also
    whether ``val/`` exists, since that decides whether runs train on all of ``train/`` or on a
    carve of it: a ``val/`` added (or removed) later makes the runs before it ``stale-data``."""
    folder, _ = _folder(split, data_root, root)
    facts = {"val_folder": (folder / "val").is_dir()} if split == "train" else {}
    return own_fingerprint(load(split, data_root, root), folder, split, classes(data_root, root), **facts)


def heldout(train_split: str, data_root: Any = None, root: str = "", **_: Any) -> str | None:
    """``val`` when the folder has a ``val/`` and runs train on ``train``; else None (carve)."""
    if train_split != "train":
        return None
    folder, _ = _folder("val", data_root, root)
    return "val" if (folder / "val").is_dir() else None


def _register() -> None:
    own = {s: SplitSource(lambda data_root=None, s=s, **p: load(s, data_root, **p), lambda data_root=None, s=s, **p: load(s, data_root, **p),
                          lambda data_root=None, s=s, **p: fingerprint(s, data_root, **p)) for s in OWN_SPLITS}
    table = {**own, **shifts.generated_sources(own["test"])}

    def build(split: str, data_root: Any = None, **params: Any) -> Split:
        return table[split].build(data_root, **params)

    def locate(split: str, data_root: Any = None, **params: Any) -> Any:
        return table[split].locate(data_root, **params)

    def fingerprint_of(split: str, data_root: Any = None, **params: Any) -> str:
        return table[split].fingerprint(data_root, **params)

    DATASETS.add("imagefolder", DatasetEntry(
        task="classification", num_classes=0, classes_from_data=classes, heldout_from_data=heldout,
        splits=tuple(table), shift_splits=tuple(s for s in table if s not in own), default_eval=("test",),
        build=build, locate=locate, fingerprint=fingerprint_of, params={"root": "", "corruption_seed": 0}, transform_defaults=REAL_TRANSFORM,
        description="your own images: <root>/{train,val,test}/<class>/*; classes = train/'s sorted folder names; val/ (optional) = held-out; shifts: generated corruptions of test/",
    ))


_register()
