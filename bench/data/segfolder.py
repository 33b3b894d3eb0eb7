"""``segfolder``: your own semantic segmentation images and masks, with a class list.

``<root>/images/<split>/<name>.{jpg,png,…}`` and ``<root>/masks/<split>/<name>.png`` for the splits
``train`` and ``val`` (the test split, as for VOC and ADE20k; ``heldout`` is carved from
``train``). A mask is an 8-bit greyscale or palette PNG whose pixel values are class ids
0…C−1, 255 marking pixels to ignore; ``classes.txt`` (``data.params.classes``: a file relative to
the dataset folder, or absolute) names the C classes, one per line in id order, so the head has
C outputs. A mask value that is neither a class id nor 255 stops the run with the mask's path
and the value when the mask is read (``bench data check`` lists files; it decodes no mask).

There are no generated-corruption splits: the geometric ones (elastic, zoom blur, glass blur)
move pixels away from their labels.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import DATASETS, DatasetEntry, ImageFiles, read_png_mask
from bench.data.layout import IMAGE_SUFFIXES, DatasetLocator, Layout, image_files
from bench.data.own import OWN_SOURCE, own_fingerprint, own_path

IGNORE = 255
SPLITS = ("train", "val")
LAYOUT = Layout(
    "segfolder",
    "<root>/   (data.params.root: relative to the data root, or absolute; default: the data root itself)\n"
    "  classes.txt   (data.params.classes: one class name per line, in id order; at most 255)\n"
    "  images/{train,val}/<name>.{" + ",".join(s.lstrip(".") for s in IMAGE_SUFFIXES) + "}\n"
    "  masks/{train,val}/<name>.png   (8-bit grey or palette: pixel value = class id, 255 = ignore)",
    OWN_SOURCE,
)


def _folder(split: str, data_root: Any, root: str) -> tuple[Path, DatasetLocator]:
    loc = DatasetLocator(LAYOUT, split, data_root)
    return loc.folder(own_path(loc, "root", root), "dataset folder (data.params.root)"), loc


def class_list(data_root: Any = None, root: str = "", classes: str = "classes.txt", **_: Any) -> tuple[str, ...]:
    """The class names of the class file, in id order (blank lines skipped)."""
    folder, loc = _folder("train", data_root, root)
    given = Path(classes).expanduser()
    file = loc.file(given if given.is_absolute() else folder / given, "class list (data.params.classes)")
    names: list[str] = []
    first: dict[str, int] = {}
    for n, line in enumerate(file.read_text(encoding="utf-8-sig").splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if name in first:
            raise loc.fail(file, f"{file}:{n}: class {name!r} is listed again (first at line {first[name]})")
        first[name] = n
        names.append(name)
    if not names:
        raise loc.fail(file, f"{file}: lists no class (one name per line, in id order)")
    if len(names) >= IGNORE:
        raise loc.fail(file, f"{file}: {len(names)} classes, but 8-bit masks hold ids 0…254 (255 = ignore)")
    return tuple(names)


def read_class_mask(path: str, num_classes: int) -> np.ndarray:
    """A mask PNG whose values must be class ids or 255 (ignore): anything else is refused here,
    naming the file, rather than meeting the loss as an out-of-range target."""
    mask = read_png_mask(path)
    bad = np.unique(mask[(mask >= num_classes) & (mask != IGNORE)])
    if bad.size:
        raise ValueError(f"{path}: mask value(s) {', '.join(map(str, bad[:5].tolist()))} are neither a class id 0…{num_classes - 1} "
                         f"(the class list names {num_classes}) nor {IGNORE} (ignore)")
    return mask


def load(split: str, data_root: Any = None, root: str = "", classes: str = "classes.txt", **_: Any) -> ImageFiles:
    names = class_list(data_root, root, classes)
    folder, loc = _folder(split, data_root, root)
    images_dir = loc.folder(folder / "images" / split, f"images/{split}/ folder")
    masks_dir = loc.folder(folder / "masks" / split, f"masks/{split}/ folder")
    images = image_files(images_dir)
    if not images:
        raise loc.fail(images_dir, f"no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise loc.fail(image, f"{image.name} and {stems[image.stem].name} would share the mask {image.stem}.png")
        stems[image.stem] = image
    masks = [masks_dir / f"{p.stem}.png" for p in images]
    missing = [m for m in masks if not m.is_file()]
    if missing:
        raise loc.fail(missing[0], f"{len(missing)} of {len(images)} images have no mask (masks/{split}/<image name>.png)")
    return ImageFiles(tuple(map(str, images)), np.zeros(len(images), dtype=np.int64), tuple(map(str, masks)),
                      mask_reader=functools.partial(read_class_mask, num_classes=len(names)),
                      meta={"classes": list(names)} if split == "train" else {})


def fingerprint(split: str, data_root: Any = None, root: str = "", classes: str = "classes.txt", **_: Any) -> str:
    folder, _ = _folder(split, data_root, root)
    return own_fingerprint(load(split, data_root, root, classes), folder, split, class_list(data_root, root, classes))


DATASETS.add("segfolder", DatasetEntry(
    task="segmentation", num_classes=0, classes_from_data=class_list, splits=SPLITS, test_split="val",
    build=load, locate=load, fingerprint=fingerprint, params={"root": "", "classes": "classes.txt"},
    description="your own segmentation data: <root>/{images,masks}/{train,val}/ + classes.txt; mask value = class id, 255 = ignore; test split = val",
))
