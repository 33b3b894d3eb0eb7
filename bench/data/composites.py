"""Composites of Fashion-MNIST objects on real photos and textures, with controlled shifts.

Plain Fashion-MNIST does not separate a pretrained backbone from raw pixels; pasting its
garments onto real backgrounds (scikit-image's bundled photos and textures) makes a task where
representation quality matters, and lets every covariate shift be switched on alone:

- ``train`` / ``test``: texture backgrounds, palette A, Fashion-MNIST train / test garments.
- ``shift_background``: colour photographs as backgrounds (a disjoint pool).
- ``shift_palette``: garments coloured from palette B (hues disjoint from A).
- ``shift_corruption``: the test images with ImageNet-C-style corruptions at ``severity``.

Each sample is a pure function of (seed, garment source, index) and the split's recipe; a split is cached on disk keyed by all
generation parameters, the generator's code and the fingerprint of the Fashion-MNIST files it draws from. Per-pixel masks (0 = background, 1..10 = garment class) come with every
sample for the segmentation protocol.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data import fashion_mnist
from bench.data.base import DATASETS, DatasetEntry, ImageArrays
from bench.data.corruptions import CORRUPTIONS, corrupt
from bench.data.fingerprint import source_hash
from bench.data.shifts import SEVERITIES, corrupted, generated_fingerprint
from bench.io import atomic_write, cache_dir

GENERATOR_VERSION = 2  # bump when the generation recipe changes: it invalidates caches
TEXTURES = ("brick", "grass", "gravel", "moon", "coins", "camera", "clock", "cell", "text", "page")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
PALETTE_A = (0.0, 0.45)  # hue interval of garment colours (reds, yellows, greens)
PALETTE_B = (0.5, 0.95)  # disjoint hues (cyans, blues, magentas)
# fixed (not "every registered corruption") so adding corruptions never changes the demo data
COMPOSITE_CORRUPTIONS = ("brightness", "contrast", "gaussian_blur", "gaussian_noise", "jpeg_compression", "pixelate")
SPLIT_IDS = {"train": 0, "test": 1, "shift_background": 2, "shift_palette": 3, "shift_corruption": 4}


@dataclass(frozen=True)
class SplitRecipe:
    source: str  # Fashion-MNIST split the garments come from
    backgrounds: tuple[str, ...]
    palette: tuple[float, float]
    corrupted: bool = False


RECIPES = {
    "train": SplitRecipe("train", TEXTURES, PALETTE_A),
    "test": SplitRecipe("test", TEXTURES, PALETTE_A),
    "shift_background": SplitRecipe("test", PHOTOS, PALETTE_A),
    "shift_palette": SplitRecipe("test", TEXTURES, PALETTE_B),
    "shift_corruption": SplitRecipe("test", TEXTURES, PALETTE_A, corrupted=True),
}


@lru_cache(maxsize=None)
def _background(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def render(garment: np.ndarray, label: int, recipe: SplitRecipe, img_size: int, rng: np.random.Generator, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """One composite image (img_size², RGB uint8) and its mask, from one garment."""
    bg_img = _background(recipe.backgrounds[rng.integers(len(recipe.backgrounds))])
    crop = int(rng.uniform(0.35, 0.9) * min(bg_img.shape[:2]))
    y0 = rng.integers(0, bg_img.shape[0] - crop + 1)
    x0 = rng.integers(0, bg_img.shape[1] - crop + 1)
    bg = Image.fromarray(bg_img[y0 : y0 + crop, x0 : x0 + crop]).resize((img_size, img_size), Image.BILINEAR)
    canvas = np.asarray(bg, dtype=np.float32) / 255.0
    if recipe.backgrounds is TEXTURES:  # grey textures get a mild random tint
        canvas = canvas * (0.75 + 0.25 * rng.random(3, dtype=np.float32))

    side = max(8, int(rng.uniform(0.5, 0.85) * img_size))
    obj = np.asarray(Image.fromarray(garment).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0
    alpha = np.clip((obj - 0.12) / 0.2, 0.0, 1.0)
    colour = _hsv_to_rgb(rng.uniform(*recipe.palette), rng.uniform(0.6, 1.0), 1.0)
    shade = 0.35 + 0.65 * obj  # the garment's own intensity modulates its colour
    oy, ox = rng.integers(0, img_size - side + 1, size=2)
    region = canvas[oy : oy + side, ox : ox + side]
    region[:] = region * (1 - alpha[..., None]) + (colour * shade[..., None]) * alpha[..., None]

    mask = np.zeros((img_size, img_size), dtype=np.uint8)
    mask[oy : oy + side, ox : ox + side][alpha > 0.5] = label + 1
    image = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)
    if recipe.corrupted:
        image = corrupt(image, COMPOSITE_CORRUPTIONS[rng.integers(len(COMPOSITE_CORRUPTIONS))], severity, rng)
    return image, mask


def generate(split: str, img_size: int, size: int, seed: int, severity: int, data_root=None) -> ImageArrays:
    recipe = RECIPES[split]
    source = fashion_mnist.load_split(recipe.source, data_root)
    if size > len(source.labels):
        raise ValueError(f"composites {split}: size {size} exceeds the {len(source.labels)} Fashion-MNIST {recipe.source} images")
    # keyed by the garment source, not the split: every shifted split is paired with ``test``
    # (same garments, placements and sizes); only what the shift changes differs
    source_id = SPLIT_IDS[recipe.source]
    order = np.random.default_rng([seed, source_id, 0]).permutation(len(source.labels))[:size]
    images = np.empty((size, img_size, img_size, 3), dtype=np.uint8)
    masks = np.empty((size, img_size, img_size), dtype=np.uint8)
    for i, src in enumerate(order):
        rng = np.random.default_rng([seed, source_id, 1, i])
        images[i], masks[i] = render(source.images[src], int(source.labels[src]), recipe, img_size, rng, severity)
    return ImageArrays(images, source.labels[order].astype(np.int64), masks)


def generator_code() -> str:
    """Hash of the generator's source (this module and the corruptions it applies): changed
    generator code is changed data, for cache entries and recorded fingerprints alike."""
    from bench.data import corruptions

    return source_hash(sys.modules[__name__], corruptions)


def cache_key(split: str, source: str, **params) -> str:
    """The cache entry of a split: generator version and code, all generation parameters and the
    fingerprint of the Fashion-MNIST split the garments come from (``source``), so composites of
    other garment files (another data root) never share an entry."""
    blob = json.dumps({"v": GENERATOR_VERSION, "code": generator_code(), "split": split, "source": source, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _resolved(split: str, img_size: int, train_size: int, eval_size: int, seed: int, severity: int) -> dict:
    return dict(img_size=img_size, size=train_size if split == "train" else eval_size, seed=seed, severity=severity)


def fingerprint(split: str, data_root=None, img_size: int = 112, train_size: int = 2000, eval_size: int = 500, seed: int = 0, severity: int = 3) -> str:
    """A composite split is its cache key: generator, parameters and garment source files. The
    gen/* splits add their corruption (bench.data.shifts.generated_fingerprint) over ``test``."""
    if split.startswith("gen/"):
        _, corruption, sev = split.split("/")
        return generated_fingerprint(fingerprint("test", data_root, img_size, train_size, eval_size, seed, severity), corruption, int(sev), 0)
    params = _resolved(split, img_size, train_size, eval_size, seed, severity)
    return cache_key(split, fashion_mnist.fingerprint(RECIPES[split].source, data_root), **params)


def load(split: str, data_root=None, img_size: int = 112, train_size: int = 2000, eval_size: int = 500, seed: int = 0, severity: int = 3) -> ImageArrays:
    """Build (or read from the cache) one split of the composite dataset."""
    params = _resolved(split, img_size, train_size, eval_size, seed, severity)
    source = fashion_mnist.fingerprint(RECIPES[split].source, data_root)
    path: Path = cache_dir("data", "fmnist_composites") / f"{split}_{cache_key(split, source, **params)}.npz"
    if path.is_file():
        with np.load(path) as z:
            return ImageArrays(z["images"], z["labels"], z["masks"])
    arrays = generate(split, data_root=data_root, **params)
    atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), images=arrays.images, labels=arrays.labels, masks=arrays.masks))
    return arrays


OWN_SHIFTS = ("shift_background", "shift_palette", "shift_corruption")
GENERATED = tuple(f"gen/{c}/{s}" for c in sorted(CORRUPTIONS) for s in SEVERITIES)


def load_classification(split: str, data_root=None, **params) -> ImageArrays:
    """Own splits, plus gen/<corruption>/<severity> over ``test`` like every classification dataset
    (corruption seed 0), so the demo can draw severity curves."""
    if split.startswith("gen/"):
        _, corruption, severity = split.split("/")
        return corrupted(load("test", data_root, **params), corruption, int(severity), 0)
    return load(split, data_root, **params)


DATASETS.add(
    "fmnist_composites",
    DatasetEntry(
        task="classification",
        num_classes=len(fashion_mnist.CLASSES),
        classes=fashion_mnist.CLASSES,
        splits=(*RECIPES, *GENERATED),
        shift_splits=(*OWN_SHIFTS, *GENERATED),
        default_eval=("test", *OWN_SHIFTS),
        same_images=OWN_SHIFTS,  # each shift split re-renders the test split's garments and placements, in order
        build=load_classification,
        fingerprint=fingerprint,
        description="Fashion-MNIST garments on scikit-image photos/textures; shifts: background, palette, corruption",
        params=dict(img_size=112, train_size=2000, eval_size=500, seed=0, severity=3),
        transform_defaults={"crop_pct": 1.0, "train_aug": "none"},  # generated at the target framing
    ),
)


def load_seg(split: str, data_root=None, **params) -> ImageArrays:
    """The same composites as a segmentation set: per-pixel labels 0 = background, 1..10 = garment."""
    arrays = load(split, data_root, **params)
    return ImageArrays(arrays.images, np.zeros(len(arrays), dtype=np.int64), arrays.masks, meta=arrays.meta)


DATASETS.add(
    "fmnist_composites_seg",
    DatasetEntry(
        task="segmentation",
        num_classes=len(fashion_mnist.CLASSES) + 1,
        classes=("background", *fashion_mnist.CLASSES),
        splits=tuple(RECIPES),
        shift_splits=OWN_SHIFTS,
        build=load_seg,
        fingerprint=fingerprint,
        description="fmnist_composites as segmentation: background + 10 garment classes, same shifts (mIoU under shift)",
        params=dict(img_size=112, train_size=2000, eval_size=500, seed=0, severity=3),
    ),
)
