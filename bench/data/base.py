"""Datasets as the trainer sees them, and the dataset registry.

Every dataset — real ones on disk and generated ones alike — is a registered entry that knows its
protocol facts (task, number of classes, ignore index, label maps) and builds any of its named
splits. A split is either :class:`ImageArrays` (uint8 pixels in memory: CIFAR, STL-10, the
composites) or :class:`ImageFiles` (paths decoded on demand: ImageNet, Tiny-ImageNet, VOC, …).
Both answer ``image(i)`` / ``mask(i)`` and carry ``labels``, so everything downstream is the same.
"""

from __future__ import annotations

import fnmatch

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from bench.lazy import lazy

torch = lazy("torch")

from bench.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageArrays:
    """A split held in memory: fast batched access, used for small-image datasets."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64 class ids
    masks: np.ndarray | None = None  # (N, H, W) uint8 per-pixel labels, for segmentation
    label_space: tuple[int, ...] | None = None  # classes a prediction may take (None = all)
    meta: dict[str, Any] = field(default_factory=dict)  # protocol facts recorded with results

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {self.images.shape} {self.images.dtype}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels {self.labels.shape} do not match {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> np.ndarray:
        return self.images[i]

    def mask(self, i: int) -> np.ndarray | None:
        return None if self.masks is None else self.masks[i]


MaskReader = Callable[[str], np.ndarray]


def read_png_mask(path: str) -> np.ndarray:
    """A label PNG as stored: palette indices (VOC) or grey values (ADE20k, COCO-stuff)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise ValueError(f"{path}: a label mask must be a palette or 8-bit greyscale PNG, found mode {im.mode}")
        return np.array(im, dtype=np.uint8)


def read_rgb(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)


@dataclass(frozen=True)
class ImageFiles:
    """A split decoded from files on demand (large datasets never sit in memory).

    ``mask_lut`` maps stored mask values to training ids (e.g. ADE20k's reduce_zero_label,
    COCO-stuff's 182 → 171 ids); ``pixel_fn`` post-processes decoded pixels (generated
    corruptions), keyed by the sample index so it is deterministic under any worker order.
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    mask_paths: tuple[str, ...] | None = None
    mask_lut: np.ndarray | None = None  # (256,) uint8
    mask_reader: MaskReader = read_png_mask
    pixel_fn: Callable[[np.ndarray, int], np.ndarray] | None = None
    label_space: tuple[int, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.paths),):
            raise ValueError(f"labels {self.labels.shape} do not match {len(self.paths)} files")
        if self.mask_paths is not None and len(self.mask_paths) != len(self.paths):
            raise ValueError(f"{len(self.mask_paths)} masks for {len(self.paths)} images")

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        pixels = read_rgb(self.paths[i])
        return pixels if self.pixel_fn is None else self.pixel_fn(pixels, i)

    def mask(self, i: int) -> np.ndarray | None:
        if self.mask_paths is None:
            return None
        raw = self.mask_reader(self.mask_paths[i])
        return raw if self.mask_lut is None else self.mask_lut[raw]


Split = ImageArrays | ImageFiles


def take(split: Split, index: np.ndarray) -> Split:
    """The samples at ``index`` (e.g. a seeded subset), with the split's facts kept."""
    if isinstance(split, ImageArrays):
        masks = None if split.masks is None else split.masks[index]
        return ImageArrays(split.images[index], split.labels[index], masks, split.label_space, split.meta)
    pick = lambda seq: None if seq is None else tuple(seq[i] for i in index)  # noqa: E731
    if split.pixel_fn is not None:  # per-index corruption seeds must follow the original indices
        fn, original = split.pixel_fn, np.asarray(index)
        pixel_fn = lambda pixels, i: fn(pixels, int(original[i]))  # noqa: E731
    else:
        pixel_fn = None
    return ImageFiles(pick(split.paths), split.labels[index], pick(split.mask_paths), split.mask_lut, split.mask_reader, pixel_fn, split.label_space, split.meta)


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) → uint8 (N, 3, H, W) / (3, H, W), a view of the same memory.

    Classification transforms resize and crop these uint8 pixels and convert only the final crop
    to float (:func:`normalize`): torchvision's native uint8 bicubic resize is several times
    faster than resizing float tensors, and a 224² crop is a fraction of a decoded photo. The
    view is channels-last in memory (HWC), which is the layout that uint8 kernel reads directly.
    """
    return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3)


def normalize(pixels: torch.Tensor, out: torch.Tensor | None = None, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 (…, 3, H, W) → contiguous float32 ``(x / 255 − mean) / std``: ImageNet's mean/std
    unless the backbone's own config gives others (CLIP, some timm ViTs: 0.5).

    Computed in place on one float copy, with the same float operations in the same order as
    torchvision's ``ToTensor`` + ``Normalize`` (so equal pixels give bitwise-equal inputs).
    ``out`` (float32, the same shape) receives the result instead of a new tensor: a loader
    worker fills its batch, allocated in shared memory, image by image.
    """
    if pixels.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 pixels, got {pixels.dtype} (already normalised?)")
    shape = (3, 1, 1)
    x = pixels.to(torch.float32, memory_format=torch.contiguous_format) if out is None else out.copy_(pixels)
    return x.div_(255.0).sub_(torch.tensor(mean).view(shape)).div_(torch.tensor(std).view(shape))


def to_model_input(images: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) → float (N, 3, H, W) / (3, H, W) normalised (ImageNet mean/std by default).

    For consumers that resample in float afterwards (segmentation's bilinear resizes); the
    classification path resizes :func:`to_pixels` first and normalises last.
    """
    return normalize(to_pixels(images), mean=mean, std=std)


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: protocol facts, its on-disk layout, and a builder for its splits.

    ``build(split, data_root=None, **params)`` returns a :data:`Split`. ``locate`` (optional) does
    the cheap part only — resolve and verify the files a split needs, raising
    :class:`bench.data.layout.DatasetError` — so ``bench data check`` and pre-launch checks do
    not decode datasets. ``fingerprint(split, data_root=None, **params)`` (required) says which
    data a split is, cheaply and without absolute paths (:mod:`bench.data.fingerprint`): results
    record it and caches are keyed by it, so a run on other data is never taken for this one.
    """

    task: Literal["classification", "segmentation"]
    num_classes: int  # 0 where the classes are the data's own (classes_from_data)
    splits: tuple[str, ...]  # names a suite may use
    build: Callable[..., Split]
    fingerprint: Callable[..., str] | None = None  # fingerprint(split, data_root=None, **params); required
    classes: tuple[str, ...] | None = None  # None: names are read from the data (see class_names)
    shift_splits: tuple[str, ...] = ()  # the subset of splits that are covariate-shifted (OOD)
    default_eval: tuple[str, ...] | None = None  # default evaluation splits; None: test + shift splits
    train_split: str = "train"
    test_split: str = "test"
    ignore_index: int = 255
    reduce_zero_label: bool = False  # label 0 means "other" and becomes ignore_index; k becomes k-1
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # documented default parameters
    locate: Callable[..., Any] | None = None  # locate(split, data_root=None, **params)
    names_from_disk: Callable[..., tuple[str, ...]] | None = None  # class names read from the data
    transform_defaults: dict[str, Any] = field(default_factory=dict)  # e.g. crop_pct, train_aug
    facts: dict[str, Any] = field(default_factory=dict)  # label maps, subsets: recorded with results
    # splits (fnmatch patterns) made of the test split's own images in the test split's order, e.g.
    # CIFAR-10-C's c/*/*: their per-image errors are correlated with the test split's, so the
    # report resamples them jointly (bench.report.stats); gen/*/* always are (generated from test)
    same_images: tuple[str, ...] = ()
    # your own data (imagefolder, manifest, segfolder): the class list is whatever the data holds, so
    # it is read from it — classes_from_data(data_root=None, **params), cheap (a folder listing, a
    # class file) — instead of being fixed here; the head and GRPO-RM's group take its length
    classes_from_data: Callable[..., tuple[str, ...]] | None = None
    # a split the data itself provides as the held-out set (an imagefolder's val/), read whole instead
    # of carving the training split: heldout_from_data(train_split, data_root=None, **params) → name or None
    heldout_from_data: Callable[..., str | None] | None = None

    def __post_init__(self) -> None:
        if (self.classes_from_data is None) == (self.num_classes == 0):
            raise ValueError("a dataset has a fixed num_classes > 0, or num_classes 0 and classes_from_data (its classes are read from the data)")
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"{len(self.classes)} class names for {self.num_classes} classes")
        if self.fingerprint is None:  # every dataset must say which data it read (bench.data.fingerprint)
            raise ValueError("a dataset entry needs a fingerprint function (see bench.data.fingerprint)")

    @property
    def default_eval_splits(self) -> tuple[str, ...]:
        return self.default_eval if self.default_eval is not None else (self.test_split, *self.shift_splits)

    def is_shift(self, split: str) -> bool:
        return split in self.shift_splits

    def image_source(self, split: str) -> str:
        """The name of the images ``split`` is built from: the test split for splits made of its
        images in its order (generated corruptions, and what the dataset declares in
        ``same_images``), else the split itself. Splits with one source share images, image i
        being the same source image in each: their noise is not independent."""
        if split.startswith("gen/") or any(fnmatch.fnmatchcase(split, p) for p in self.same_images):
            return self.test_split
        return split

    def _params(self, split: str, params: dict[str, Any]) -> dict[str, Any]:
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r} (known: {', '.join(_abbreviate(self.splits))})")
        return self._merged(params)

    def load(self, split: str, data_root: str | Path | None = None, **params: Any) -> Split:
        return self.build(split, data_root=data_root, **self._params(split, params))

    def split_fingerprint(self, split: str, data_root: str | Path | None = None, **params: Any) -> str:
        """The fingerprint of ``split`` under ``data_root`` (memoised within a command, see
        :func:`bench.data.fingerprint.memoised`). Raises DatasetError (or OSError) when the split
        cannot be read: a caller that only checks (``bench status``) then says it could not."""
        from bench.data import fingerprint as fp
        from bench.data.layout import data_root as resolve_root

        resolved = self._params(split, params)
        root = resolve_root(data_root)
        key = (id(self), split, str(root.resolve()) if root else None, fp.digest(resolved))
        found = fp.memo_get(key)
        if found is None:
            assert self.fingerprint is not None
            found = self.fingerprint(split, data_root=data_root, **resolved)
            fp.memo_put(key, found)
        return found

    def check(self, split: str, data_root: str | Path | None = None, **params: Any) -> None:
        """Raise DatasetError if ``split`` is not on disk in the expected layout; cheap."""
        resolved = self._params(split, params)
        if self.locate is not None:
            self.locate(split, data_root=data_root, **resolved)
        else:  # generated or small datasets: building is the check
            self.build(split, data_root=data_root, **resolved)

    def classes_in(self, data_root: str | Path | None = None, **params: Any) -> tuple[str, ...]:
        """Class names in label order under ``data_root`` with ``params``: read from the data where
        the classes are the data's own (raises DatasetError when it cannot be read), else the
        registered ones (:meth:`class_names`)."""
        if self.classes_from_data is None:
            return self.class_names(data_root)
        return self.classes_from_data(data_root=data_root, **self._merged(params))

    def class_count(self, data_root: str | Path | None = None, **params: Any) -> int:
        """How many classes the head has (GRPO-RM's group size): the registered count, or the
        number of classes the data holds (:meth:`classes_in`; raises DatasetError when unreadable)."""
        return self.num_classes if self.classes_from_data is None else len(self.classes_in(data_root, **params))

    def _merged(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - set(self.params)
        if unknown:
            raise TypeError(f"unknown dataset parameter(s) {sorted(unknown)} (known: {sorted(self.params)})")
        return {**self.params, **params}

    def class_names(self, data_root: str | Path | None = None) -> tuple[str, ...]:
        if self.classes_from_data is not None:  # your own data, at its default parameters
            return self.classes_in(data_root)
        if self.classes is not None:
            return self.classes
        if self.names_from_disk is not None:
            return self.names_from_disk(data_root)
        return tuple(f"class_{i}" for i in range(self.num_classes))


def _abbreviate(names: Sequence[str], limit: int = 12) -> list[str]:
    names = list(names)
    return names if len(names) <= limit else [*names[:limit], f"… ({len(names) - limit} more)"]


DATASETS: Registry[DatasetEntry] = Registry("dataset")
