"""Paired image + mask transforms and sliding-window inference for segmentation.

These follow mmsegmentation's training pipeline semantics (``RandomResize`` with a ratio range
around a base scale keeping the aspect ratio, ``RandomCrop`` with ``cat_max_ratio``, ``RandomFlip``;
test-time keep-ratio resize; ``slide`` inference averaging overlapping windows). Images are
float tensors (3, H, W), resized bilinearly; masks are integer tensors (H, W), resized by nearest
neighbour so labels are never blended. Padding uses 0 for images and the ignore index for masks.
All randomness comes from an explicit generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = 255


def keep_ratio_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Output size fitting (h, w) inside ``scale`` = (long edge, short edge), aspect ratio kept."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


def resize_pair(image: Tensor, mask: Tensor | None, size: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    if mask is not None:
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].to(mask.dtype)
    return image, mask


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=g))


@dataclass(frozen=True)
class SegTrainTransform:
    """random resize (ratio range × base scale) → random crop (cat_max_ratio) → random flip."""

    crop: tuple[int, int] = (512, 512)
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    ignore_index: int = IGNORE

    def __call__(self, image: Tensor, mask: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        r = _uniform(g, *self.ratio_range)
        target = (int(self.scale[0] * r), int(self.scale[1] * r))
        image, mask = resize_pair(image, mask, keep_ratio_size(*image.shape[-2:], target))
        image, mask = self.random_crop(image, mask, g)
        if float(torch.rand(1, generator=g)) < self.flip_prob:
            image, mask = image.flip(-1), mask.flip(-1)
        return self.pad(image, mask)

    def _crop_box(self, h: int, w: int, g: torch.Generator) -> tuple[int, int, int, int]:
        ch, cw = min(self.crop[0], h), min(self.crop[1], w)
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        return top, left, ch, cw

    def random_crop(self, image: Tensor, mask: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Up to 10 tries for a crop where no single class covers more than cat_max_ratio of the
        labelled pixels (mmsegmentation's rule; the last try is kept)."""
        h, w = mask.shape
        for _ in range(10):
            top, left, ch, cw = self._crop_box(h, w, g)
            window = mask[top : top + ch, left : left + cw]
            if self.cat_max_ratio >= 1.0:
                break
            _, counts = window[window != self.ignore_index].unique(return_counts=True)
            if len(counts) > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio:
                break
        return image[:, top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]

    def pad(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Pad bottom/right to the crop size (image 0, mask ignore)."""
        ph, pw = self.crop[0] - image.shape[-2], self.crop[1] - image.shape[-1]
        if ph <= 0 and pw <= 0:
            return image, mask
        pad = (0, max(pw, 0), 0, max(ph, 0))
        return F.pad(image, pad, value=0.0), F.pad(mask, pad, value=self.ignore_index)


def keep_ratio_resize(image: Tensor, scale: tuple[int, int] = (2048, 512)) -> Tensor:
    """Keep-ratio resize of the image only; predictions are scored at the mask's original size."""
    return resize_pair(image, None, keep_ratio_size(*image.shape[-2:], scale))[0]


def window_boxes(h: int, w: int, crop: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) windows covering (h, w); edge windows are shifted inside, as mmseg does."""
    rows = max(h - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    cols = max(w - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride[0] + crop[0], h), min(c * stride[1] + crop[1], w)
            boxes.append((max(y1 - crop[0], 0), y1, max(x1 - crop[1], 0), x1))
    return boxes


@torch.no_grad()
def slide_inference(
    logits_fn: Callable[[Tensor], Tensor], image: Tensor, num_classes: int, crop: tuple[int, int], stride: tuple[int, int]
) -> Tensor:
    """Logits (N, C, H, W) for images (N, 3, H, W), averaging ``logits_fn`` over overlapping windows.

    ``logits_fn`` maps (N, 3, h, w) to (N, C, h, w) (a head that upsamples to its input size).
    """
    n, _, h, w = image.shape
    total = image.new_zeros((n, num_classes, h, w))
    count = image.new_zeros((1, 1, h, w))
    for y0, y1, x0, x1 in window_boxes(h, w, crop, stride):
        total[:, :, y0:y1, x0:x1] += logits_fn(image[:, :, y0:y1, x0:x1]).to(total.dtype)
        count[:, :, y0:y1, x0:x1] += 1
    return total / count
