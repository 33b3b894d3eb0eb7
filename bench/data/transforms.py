"""Image transforms for classification, following DINOv2's evaluation convention.

Evaluation: bicubic resize of the short side to ``img_size / crop_pct`` (256 for 224 at the
default 0.875), centre crop to ``img_size`` (a multiple of the patch size), ImageNet mean/std.
Training adds one of: ``none``, ``flip`` (horizontal, p = 0.5) or ``rrc_flip`` (random resized
crop, scale 0.08–1, ratio 3/4–4/3, bicubic, then flip — DINOv2's linear-eval train transform).

Everything runs on float tensors already normalised by :func:`bench.data.to_model_input` (resize
and crop are linear, so normalising first gives the same result as torchvision's PIL pipeline up
to uint8 rounding). Randomness comes from an explicit generator per sample, so an augmented epoch
is identical whatever the batch size, worker count or resume point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.transforms import InterpolationMode

TrainAug = Literal["none", "flip", "rrc_flip"]
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)


def resize_short(x: Tensor, size: int) -> Tensor:
    """Bicubic, antialiased resize so the shorter side is ``size`` (aspect ratio kept)."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    if h == w:
        new = (size, size)
    else:
        new = (size, max(1, round(w * size / h))) if h < w else (max(1, round(h * size / w)), size)
    return TF.resize(x, list(new), interpolation=InterpolationMode.BICUBIC, antialias=True)


def random_resized_crop_box(h: int, w: int, g: torch.Generator, scale=RRC_SCALE, ratio=RRC_RATIO) -> tuple[int, int, int, int]:
    """(top, left, height, width) as torchvision's RandomResizedCrop samples it, from ``g``."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * float(torch.rand(1, generator=g)))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(torch.rand(1, generator=g)))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    # fallback: the central crop at the nearest allowed ratio
    in_ratio = w / h
    cw, ch = (w, round(w / ratio[0])) if in_ratio < ratio[0] else ((round(h * ratio[1]), h) if in_ratio > ratio[1] else (w, h))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


@dataclass(frozen=True)
class ClassificationTransform:
    img_size: int
    crop_pct: float = 0.875
    train_aug: TrainAug = "none"

    @property
    def resize_size(self) -> int:
        return round(self.img_size / self.crop_pct)

    def eval(self, x: Tensor) -> Tensor:
        """(…, 3, H, W) normalised → (…, 3, img_size, img_size); works on one image or a batch."""
        return TF.center_crop(resize_short(x, self.resize_size), [self.img_size, self.img_size])

    def train(self, x: Tensor, g: torch.Generator) -> Tensor:
        """One image (3, H, W) → augmented (3, img_size, img_size)."""
        if self.train_aug == "rrc_flip":
            top, left, h, w = random_resized_crop_box(x.shape[-2], x.shape[-1], g)
            x = TF.resized_crop(x, top, left, h, w, [self.img_size, self.img_size], interpolation=InterpolationMode.BICUBIC, antialias=True)
        else:
            x = self.eval(x)
        if self.train_aug in ("flip", "rrc_flip") and float(torch.rand(1, generator=g)) < 0.5:
            x = x.flip(-1)
        return x

    @property
    def augments(self) -> bool:
        return self.train_aug != "none"
