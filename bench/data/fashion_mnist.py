"""Fashion-MNIST from its official IDX files (Debian's ``dataset-fashion-mnist`` or a data root)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.idx import read_idx

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclass(frozen=True)
class GreyImages:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64


def candidate_dirs(data_root: str | Path | None = None) -> list[Path]:
    roots = [Path(data_root)] if data_root else []
    if os.environ.get("BENCH_DATA_ROOT"):
        roots.append(Path(os.environ["BENCH_DATA_ROOT"]))
    dirs = [r / "fashion-mnist" for r in roots] + [r / "FashionMNIST" / "raw" for r in roots]
    return dirs + [DEBIAN_DIR]


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def split_files(split: str, data_root: str | Path | None = None) -> tuple[Path, Path]:
    """The image and label IDX files of ``split`` in the first folder holding both."""
    image_stem, label_stem = _FILES[split]
    for directory in candidate_dirs(data_root):
        images, labels = _find(directory, image_stem), _find(directory, label_stem)
        if images and labels:
            return images, labels
    searched = ", ".join(str(d) for d in candidate_dirs(data_root))
    raise FileNotFoundError(
        f"Fashion-MNIST {split} split not found (looked for {image_stem}[.gz] and {label_stem}[.gz] in: {searched}). "
        "Install Debian's dataset-fashion-mnist (`make install` does) or put the four official IDX files "
        "under <data root>/fashion-mnist/."
    )


def load_split(split: str, data_root: str | Path | None = None) -> GreyImages:
    """Load ``train`` (60k) or ``test`` (10k) from the first folder holding both IDX files."""
    images, labels = split_files(split, data_root)
    x, y = read_idx(images), read_idx(labels).astype(np.int64)
    if x.ndim != 3 or y.shape != (x.shape[0],):
        raise ValueError(f"{images.parent}: images {x.shape} and labels {y.shape} do not pair up")
    return GreyImages(x, y)


def fingerprint(split: str, data_root: str | Path | None = None, **_: object) -> str:
    """Name, size and content hash of the two IDX files (named relative to their folder: the same
    files under any root, or the system-wide copy, are the same data)."""
    from bench.data.fingerprint import files_fingerprint

    images, labels = split_files(split, data_root)
    return files_fingerprint((images, labels), images.parent)


def load(split: str, data_root: str | Path | None = None) -> "ImageArrays":
    """The plain dataset as RGB (grey replicated); the trainer resizes to the backbone's size."""
    from bench.data.base import ImageArrays

    grey = load_split(split, data_root)
    return ImageArrays(np.repeat(grey.images[..., None], 3, axis=-1), grey.labels)


def _register() -> None:
    from bench.data.base import DATASETS, DatasetEntry

    DATASETS.add(
        "fashion_mnist",
        DatasetEntry(
            task="classification",
            num_classes=len(CLASSES),
            classes=CLASSES,
            splits=("train", "test"),
            build=load,
            fingerprint=fingerprint,
            description="Fashion-MNIST (official IDX files), 28×28 grey replicated to RGB",
            transform_defaults={"crop_pct": 1.0, "train_aug": "none"},
        ),
    )


_register()
