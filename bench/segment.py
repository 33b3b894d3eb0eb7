"""Segmentation runs: paired-transform training batches and mIoU evaluation with sliding windows.

Training samples go through :class:`SegTrainTransform` (random keep-ratio resize, crop with
cat_max_ratio, flip), seeded per (seed, epoch, image) like classification augmentation.
Evaluation follows the DINOv2 linear protocol as mmsegmentation runs it: keep-ratio resize to
the test scale, sliding-window logits, bilinear upsampling to the label's own size, argmax, and
dataset-level accumulation of intersection and union (:class:`bench.seg_metrics.IoUAccumulator`).
Decoding and resizing run in DataLoader workers ahead of the model (``num_workers``); inference
stays one image at a time, since images (and so their window grids) differ in size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from bench.data import Split, to_model_input
from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, take
from bench.data.seg_transforms import SegTrainTransform, keep_ratio_resize, slide_inference
from bench.features import data_loader, load_batches, sample_generator
from bench.seg_metrics import IoUAccumulator
from bench.seeding import one_thread

if TYPE_CHECKING:
    from bench.distributed import DistContext

Norm = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) of the backbone's inputs
IMAGENET: Norm = (IMAGENET_MEAN, IMAGENET_STD)


class _Pairs(Dataset):
    def __init__(self, split: Split, transform: SegTrainTransform, augment: tuple[int, int], norm: Norm = IMAGENET) -> None:
        self.split, self.transform, self.augment, self.norm = split, transform, augment, norm

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = to_model_input(self.split.image(i), *self.norm)
        mask = torch.from_numpy(self.split.mask(i).astype("int64"))
        return self.transform(image, mask, sample_generator(self.augment, i))


def train_pairs(split: Split, transform: SegTrainTransform, indices: Sequence[Tensor], augment: tuple[int, int], num_workers: int,
                norm: Norm = IMAGENET) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, masks) batches for each index tensor, augmented; identical for any worker count.
    ``norm``: the backbone's (mean, std)."""
    yield from load_batches(_Pairs(split, transform, augment, norm), indices, num_workers)


class _EvalImages(Dataset):
    """(image resized to the test scale and normalised, label at its own size) for index ``i``:
    the per-image work that workers do ahead of the model."""

    def __init__(self, split: Split, test_scale: tuple[int, int], norm: Norm = IMAGENET) -> None:
        self.split, self.test_scale, self.norm = split, test_scale, norm

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        label = torch.from_numpy(self.split.mask(i).astype("int64"))
        return keep_ratio_resize(to_model_input(self.split.image(i), *self.norm), self.test_scale), label


def eval_images(split: Split, test_scale: tuple[int, int], num_workers: int, norm: Norm = IMAGENET) -> Iterator[tuple[Tensor, Tensor]]:
    """(image, label) per test image, in order; with workers, decoded while the model runs.

    Items are not collated (``batch_size=None``): sizes differ from image to image.
    """
    dataset = _EvalImages(split, test_scale, norm)
    if num_workers == 0:
        yield from (dataset[i] for i in range(len(dataset)))
    else:
        yield from data_loader(dataset, batch_size=None, num_workers=num_workers)


@torch.no_grad()
def evaluate_segmentation(
    logits_fn: Callable[[Tensor], Tensor], split: Split, num_classes: int, ignore_index: int,
    test_scale: tuple[int, int], crop: int, stride: int, device: torch.device, num_workers: int = 0,
    ctx: DistContext | None = None, norm: Norm = IMAGENET,
) -> dict[str, float | list[float] | int]:
    """mIoU / aAcc / per-class IoU over ``split``; the same numbers for any ``num_workers``.

    With several processes (``ctx`` active) rank r scores images r, r + world, … (images differ
    in size, so round robin spreads the work better than blocks), and the per-class intersection
    and area sums are all-reduced before the metrics are computed. They are pixel counts, held
    exactly in float64, so every rank returns exactly what one process returns, for any world
    size; a rank without images (fewer images than ranks) adds zeros.
    """
    acc = IoUAccumulator(num_classes, ignore_index)
    mine = split if ctx is None or not ctx.active else take(split, np.arange(ctx.rank, len(split), ctx.world))
    with one_thread():  # per-pixel argmax from logits that must not depend on the thread count (evaluate_split)
        for image, label in eval_images(mine, test_scale, num_workers, norm):
            image = image[None].to(device, non_blocking=True)
            logits = slide_inference(lambda x: logits_fn(x).float(), image, num_classes, (crop, crop), (stride, stride))
            logits = F.interpolate(logits, size=tuple(label.shape), mode="bilinear", align_corners=False)
            acc.update(logits.argmax(1)[0].cpu(), label)
    if ctx is not None and ctx.active:
        acc.intersect, acc.area_pred, acc.area_label = ctx.sum(torch.stack([acc.intersect, acc.area_pred, acc.area_label])).unbind(0)
    return {**acc.compute(), "n": len(split)}
