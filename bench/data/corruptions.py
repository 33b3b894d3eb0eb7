"""ImageNet-C-style corruptions in numpy, each with severities 1–5, named as in ImageNet-C.

Used by the demo composites and by the ``gen/<corruption>/<severity>`` splits that every
classification dataset offers when a prepared corruption set (CIFAR-10-C, ImageNet-C) is missing.

Why hand-written: ``imagecorruptions`` needs setuptools<81 and several of its corruptions fail
on current numpy/scikit-image; ``corrupt-tta`` declares no licence. These follow the ImageNet-C
recipes in spirit (same kinds, monotone severity); they are not numerically identical to it.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image
from bench.lazy import lazy

ndimage = lazy("scipy.ndimage")

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
CORRUPTIONS: dict[str, Corruption] = {}


def _register(name: str):
    def add(fn: Corruption) -> Corruption:
        CORRUPTIONS[name] = fn
        return fn

    return add


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


@_register("gaussian_noise")
def gaussian_noise(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    x = img / 255.0
    return _to_uint8(x + rng.normal(0.0, sigma, size=x.shape))


@_register("gaussian_blur")
def gaussian_blur(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (0.6, 1.0, 1.5, 2.0, 3.0)[severity - 1] * img.shape[0] / 112.0
    return _to_uint8(ndimage.gaussian_filter(img / 255.0, sigma=(sigma, sigma, 0)))


@_register("contrast")
def contrast(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    x = img / 255.0
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _to_uint8((x - mean) * c + mean)


@_register("brightness")
def brightness(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(img / 255.0 + (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1])


@_register("pixelate")
def pixelate(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    factor = (0.6, 0.5, 0.4, 0.3, 0.25)[severity - 1]
    small = Image.fromarray(img).resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST))


@_register("jpeg_compression")
def jpeg_compression(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=(25, 18, 15, 10, 7)[severity - 1])
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@_register("shot_noise")
def shot_noise(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    photons = (60, 25, 12, 5, 3)[severity - 1]  # fewer photons per unit intensity: more Poisson noise
    return _to_uint8(rng.poisson(img / 255.0 * photons) / photons)


@_register("impulse_noise")
def impulse_noise(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]  # share of values set to 0 or 255
    out = img.copy()
    hit = rng.random(img.shape) < amount
    out[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255).astype(np.uint8)
    return out


def corrupt(img: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    if not 1 <= severity <= 5:
        raise ValueError(f"corruption severity must be 1..5, got {severity}")
    try:
        fn = CORRUPTIONS[name]
    except KeyError:
        raise KeyError(f"unknown corruption {name!r} (known: {', '.join(sorted(CORRUPTIONS))})") from None
    return fn(img, severity, rng)
