"""Datasets as the trainer sees them, and the dataset registry.

Every dataset — real ones on disk and generated ones alike — is a registered entry that knows its
protocol facts (task, classes, ignore index) and builds any of its named splits as an
:class:`ImageArrays` (uint8 images in memory). Small in-memory arrays keep the CPU demo fast; large
datasets will plug in through the same entry interface with lazy storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from bench.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageArrays:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64 class ids
    masks: np.ndarray | None = None  # (N, H, W) uint8 per-pixel labels, for segmentation

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {self.images.shape} {self.images.dtype}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels {self.labels.shape} do not match {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)


def to_model_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) normalised with ImageNet mean/std (DINOv2's convention)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: protocol facts plus a builder for its splits."""

    task: Literal["classification", "segmentation"]
    classes: tuple[str, ...]
    splits: tuple[str, ...]  # names a suite may use; "train" and "test" at least
    build: Callable[..., ImageArrays]  # build(split, data_root=None, **params)
    shift_splits: tuple[str, ...] = ()  # the subset of splits that are covariate-shifted (OOD)
    ignore_index: int = 255
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # documented default parameters

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, split: str, data_root: str | Path | None = None, **params: Any) -> ImageArrays:
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r} (known: {', '.join(self.splits)})")
        unknown = set(params) - set(self.params)
        if unknown:
            raise TypeError(f"unknown dataset parameter(s) {sorted(unknown)} (known: {sorted(self.params)})")
        return self.build(split, data_root=data_root, **{**self.params, **params})


DATASETS: Registry[DatasetEntry] = Registry("dataset")
