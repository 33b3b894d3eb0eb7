"""Image transforms for classification, following DINOv2's evaluation convention.

Evaluation: bicubic, antialiased resize of the short side to ``img_size / crop_pct`` (256 for 224
at the default 0.875; the long side truncated as torchvision's ``Resize(256)`` does), centre crop
to ``img_size`` (a multiple of the patch size), the backbone's mean/std (ImageNet's unless its
config says otherwise: CLIP's, or 0.5 for some timm ViTs). Training adds one of: ``none``,
``flip`` (horizontal, p = 0.5) or ``rrc_flip`` (random resized crop, scale 0.08–1, ratio 3/4–4/3,
bicubic, then flip — DINOv2's linear-eval train transform).

Order of work, and why: resize, crop and flip run on **uint8** pixels (:func:`bench.data.base.to_pixels`)
and only the final ``img_size`` crop is converted to float and normalised
(:func:`bench.data.base.normalize`). Normalising first and resizing floats is mathematically the
same map (resampling is linear) but it pays a float conversion and a float resize of the whole
decoded photo; on ImageNet-sized JPEGs that was 2.5–2.8× slower per thread than torchvision's PIL
pipeline, while torchvision's native uint8 bicubic kernel is faster than PIL's. It is also the
reference's own order (PIL resamples uint8, then ``ToTensor`` + ``Normalize``): results agree
with it to about one grey level, the two kernels' different fixed-point rounding
(tests/test_transforms.py holds them to that).

Randomness comes from an explicit generator per sample, drawn in a fixed order (crop box, then
flip), so an augmented epoch is identical whatever the batch size, worker count or resume point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, normalize
from bench.lazy import lazy

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy("torch")
TF = lazy("torchvision.transforms.v2.functional")
tv_transforms = lazy("torchvision.transforms")

TrainAug = Literal["none", "flip", "rrc_flip"]
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)


def _require_uint8(x: Tensor) -> None:
    # a normalised float image would be resized fine and then normalised a second time: refuse it
    if x.dtype != torch.uint8:
        raise TypeError(f"classification transforms take uint8 pixels (bench.data.base.to_pixels), got {x.dtype}")


def resize_short(x: Tensor, size: int) -> Tensor:
    """Bicubic, antialiased resize so the shorter side is ``size``, aspect ratio kept.

    torchvision's rule for ``Resize(size)``: the long side is ``int(size * long / short)``
    (truncated), so the centre crop lands on the same pixels as the DINOv2 reference pipeline.
    """
    return TF.resize(x, [size], interpolation=tv_transforms.InterpolationMode.BICUBIC, antialias=True)


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
    """uint8 pixels (3, H, W) — or a batch for :meth:`eval` — → normalised float (…, 3, img_size, img_size)."""

    img_size: int
    crop_pct: float = 0.875
    train_aug: TrainAug = "none"
    mean: tuple[float, ...] = IMAGENET_MEAN  # the backbone's input normalisation (BuiltRun sets it from the model's config)
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def resize_size(self) -> int:
        return round(self.img_size / self.crop_pct)

    def eval_pixels(self, x: Tensor) -> Tensor:
        """The eval geometry alone: uint8 (…, 3, H, W) → uint8 (…, 3, img_size, img_size)."""
        _require_uint8(x)
        return TF.center_crop(resize_short(x, self.resize_size), [self.img_size, self.img_size])

    def train_pixels(self, x: Tensor, g: torch.Generator) -> Tensor:
        """The train geometry alone: one uint8 image (3, H, W) → augmented uint8 (3, img_size, img_size)."""
        _require_uint8(x)
        if self.train_aug == "rrc_flip":
            top, left, h, w = random_resized_crop_box(x.shape[-2], x.shape[-1], g)
            x = TF.resized_crop(x, top, left, h, w, [self.img_size, self.img_size], interpolation=tv_transforms.InterpolationMode.BICUBIC, antialias=True)
        else:
            x = self.eval_pixels(x)
        if self.train_aug in ("flip", "rrc_flip") and float(torch.rand(1, generator=g)) < 0.5:
            x = x.flip(-1)
        return x

    def eval(self, x: Tensor) -> Tensor:
        """uint8 (…, 3, H, W) → normalised float (…, 3, img_size, img_size); one image or a batch."""
        return normalize(self.eval_pixels(x), mean=self.mean, std=self.std)

    def train(self, x: Tensor, g: torch.Generator) -> Tensor:
        """One uint8 image (3, H, W) → augmented, normalised float (3, img_size, img_size)."""
        return normalize(self.train_pixels(x, g), mean=self.mean, std=self.std)

    @property
    def augments(self) -> bool:
        return self.train_aug != "none"
