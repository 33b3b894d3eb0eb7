"""Covariate-shift evaluation sets, each read as a split of its source dataset's label space.

- ``c/<corruption>/<severity>``: the prepared CIFAR-10-C / CIFAR-100-C (``.npy`` per corruption,
  5 severities stacked), ImageNet-C and Tiny-ImageNet-C (``<corruption>/<severity>/<wnid>/``) sets.
- ``gen/<corruption>/<severity>``: corruptions generated on the fly from any classification
  dataset's test split, by :mod:`bench.data.corruptions` (our numpy implementation: the
  maintained-looking libraries do not run on this stack, see that module). Use these when a
  prepared set is missing; results record ``corruption_source: generated``.
- ``cifar10.1-v6`` / ``cifar10.1-v4``: CIFAR-10.1 (``.npy``).
- ``stl10`` as CIFAR-10 shift: the 9 shared classes (monkey images dropped, frog never predicted);
  labels are mapped because the two label orders differ. ``cifar10`` as STL-10 shift is the
  reverse (frog images dropped, monkey never predicted).
- ImageNet ``v2`` (matched-frequency; ``v2-threshold0.7``, ``v2-top-images``), ``sketch``, ``r`` and
  ``a``; R and A are scored over their 200-class subsets (recorded as ``label_space``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.data import classification as cls
from bench.data.base import ImageArrays, ImageFiles, Split
from bench.data.corruptions import CORRUPTIONS, corrupt
from bench.data.fingerprint import digest, files_fingerprint, image_files_fingerprint, source_hash
from bench.data.layout import DatasetLocator, Layout, data_root as data_root_of

BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # the 15 benchmark corruptions of CIFAR-10-C / ImageNet-C (the 4 extra ones are held out there too)
SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class SplitSource:
    """How to build and how to cheaply locate one split."""

    build: Callable[..., Split]  # build(data_root, **params)
    locate: Callable[..., Any]  # locate(data_root, **params); raises DatasetError
    fingerprint: Callable[..., str]  # fingerprint(data_root, **params): which data it is (bench.data.fingerprint)


def listed(build: Callable[..., Split]) -> Callable[..., str]:
    """The fingerprint of a split decoded from files: its loader's listing (relative paths, sizes,
    labels from the index files), without reading an image."""
    return lambda data_root=None, **params: image_files_fingerprint(build(data_root, **params), data_root_of(data_root))


def corruption_split_names(prefix: str, corruptions) -> list[str]:
    return [f"{prefix}/{c}/{s}" for c in corruptions for s in SEVERITIES]


# --- CIFAR-10-C / CIFAR-100-C --------------------------------------------------------------------

CIFAR_C_SIZE = 10_000  # images per severity (the test set, once per severity)


def cifar_c_layout(name: str) -> Layout:
    folder = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}[name]
    return Layout(
        f"{name} ({folder})",
        f"{folder}/\n  <corruption>.npy   (50000, 32, 32, 3) uint8: severities 1..5 stacked, 10,000 each\n"
        f"  labels.npy         (50000,)\n  corruptions: {', '.join(BENCHMARK_CORRUPTIONS)}",
        f"the {folder}.tar archive released with Hendrycks & Dietterich's corruption benchmark (Zenodo); "
        "extract it into the data root. Without it, use the generated gen/<corruption>/<severity> splits",
    )


def _cifar_c_files(name: str, corruption: str, severity: int, data_root) -> tuple[Path, Path, DatasetLocator]:
    folder_name = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}[name]
    loc = DatasetLocator(cifar_c_layout(name), f"c/{corruption}/{severity}", data_root)
    folder = loc.base(folder_name, folder_name.lower())
    return loc.file(folder / f"{corruption}.npy", "corruption file"), loc.file(folder / "labels.npy", "labels file"), loc


def load_cifar_c(name: str, corruption: str, severity: int, data_root=None) -> ImageArrays:
    images_path, labels_path, loc = _cifar_c_files(name, corruption, severity, data_root)
    images = np.load(images_path, mmap_mode="r")
    labels = np.load(labels_path, mmap_mode="r")
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8 or len(images) % len(SEVERITIES):
        raise loc.fail(images_path, f"expected (5·N, 32, 32, 3) uint8 (N = {CIFAR_C_SIZE} test images per severity), found {images.shape} {images.dtype}")
    if labels.shape != (len(images),):
        raise loc.fail(labels_path, f"expected ({len(images)},) labels to match {images_path.name}, found {labels.shape}")
    per = len(images) // len(SEVERITIES)
    part = slice((severity - 1) * per, severity * per)
    meta = {"corruption": corruption, "severity": severity, "corruption_source": "prepared"}
    return ImageArrays(np.ascontiguousarray(images[part]), np.asarray(labels[part], dtype=np.int64), meta=meta)


def cifar_c_sources(name: str) -> dict[str, SplitSource]:
    out = {}
    for c in BENCHMARK_CORRUPTIONS:
        for s in SEVERITIES:
            out[f"c/{c}/{s}"] = SplitSource(
                lambda data_root=None, c=c, s=s, **_: load_cifar_c(name, c, s, data_root),
                lambda data_root=None, c=c, s=s, **_: _cifar_c_files(name, c, s, data_root),
                lambda data_root=None, c=c, s=s, **_: files_fingerprint(_cifar_c_files(name, c, s, data_root)[:2], data_root_of(data_root), severity=s),
            )
    return out


# --- CIFAR-10.1 ----------------------------------------------------------------------------------

CIFAR101_LAYOUT = Layout(
    "cifar10 (CIFAR-10.1)",
    "CIFAR-10.1/   (or CIFAR-10.1/datasets/)\n  cifar10.1_v6_data.npy  cifar10.1_v6_labels.npy   (2,000 images)\n"
    "  cifar10.1_v4_data.npy  cifar10.1_v4_labels.npy   (2,021 images)",
    "the datasets/ folder of the CIFAR-10.1 release by Recht et al. (GitHub: modestyachts/CIFAR-10.1)",
)


def cifar101_files(version: str, data_root) -> tuple[Path, Path]:
    loc = DatasetLocator(CIFAR101_LAYOUT, f"cifar10.1-{version}", data_root)
    folder = loc.base("CIFAR-10.1/datasets", "CIFAR-10.1", "cifar10.1")
    return loc.file(folder / f"cifar10.1_{version}_data.npy"), loc.file(folder / f"cifar10.1_{version}_labels.npy")


def load_cifar101(version: str, data_root=None) -> ImageArrays:
    images_path, labels_path = cifar101_files(version, data_root)
    images, labels = np.load(images_path), np.load(labels_path).astype(np.int64)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or labels.shape != (len(images),):
        loc = DatasetLocator(CIFAR101_LAYOUT, f"cifar10.1-{version}", data_root)
        raise loc.fail(images_path, f"expected (N, 32, 32, 3) images with N labels, found {images.shape} / {labels.shape}")
    return ImageArrays(images.astype(np.uint8), labels, meta={"version": version})


# --- STL-10 as a CIFAR-10 shift ------------------------------------------------------------------

STL_TO_CIFAR = {0: 0, 1: 2, 2: 1, 3: 3, 4: 4, 5: 5, 6: 7, 8: 8, 9: 9}  # STL id → CIFAR-10 id; monkey (7) has none
STL_CIFAR_LABEL_SPACE = tuple(sorted(STL_TO_CIFAR.values()))  # the 9 shared CIFAR classes (no frog, 6)


def stl_as_cifar10(data_root=None) -> ImageArrays:
    stl = cls.load_stl10("test", data_root)
    keep = np.isin(stl.labels, list(STL_TO_CIFAR))
    lut = np.full(10, -1, dtype=np.int64)
    for s, c in STL_TO_CIFAR.items():
        lut[s] = c
    meta = {"label_map": "stl10→cifar10 over 9 shared classes (monkey dropped, frog masked)", "dropped": int((~keep).sum())}
    return ImageArrays(stl.images[keep], lut[stl.labels[keep]], label_space=STL_CIFAR_LABEL_SPACE, meta=meta)


# --- CIFAR-10 as an STL-10 shift -----------------------------------------------------------------
# STL-10 has no natural shift set of its own; CIFAR-10's test set (32×32, a different collection)
# over the shared classes is the reverse of the one above, so both sources are scored alike.

CIFAR_TO_STL = {c: s for s, c in STL_TO_CIFAR.items()}  # CIFAR-10 id → STL-10 id; frog (6) has none
CIFAR_STL_LABEL_SPACE = tuple(sorted(CIFAR_TO_STL.values()))  # the 9 shared STL classes (no monkey, 7)


def cifar10_as_stl(data_root: str | Path | None = None) -> ImageArrays:
    """CIFAR-10's test set in STL-10's label space: frog images dropped, monkey masked from predictions."""
    cifar = cls.load_cifar("cifar10", "test", data_root)
    keep = np.isin(cifar.labels, list(CIFAR_TO_STL))
    lut = np.full(10, -1, dtype=np.int64)
    for c, s in CIFAR_TO_STL.items():
        lut[c] = s
    meta = {"label_map": "cifar10→stl10 over 9 shared classes (frog dropped, monkey masked)", "dropped": int((~keep).sum())}
    return ImageArrays(cifar.images[keep], lut[cifar.labels[keep]], label_space=CIFAR_STL_LABEL_SPACE, meta=meta)


# --- ImageNet shifts -----------------------------------------------------------------------------

IMAGENET_SHIFT_LAYOUTS = {
    "v2": Layout("imagenet (ImageNet-V2)",
                 "imagenetv2-matched-frequency-format-val/<class index 0..999>/*.jpeg\n"
                 "(v2-threshold0.7: imagenetv2-threshold0.7-format-val/, v2-top-images: imagenetv2-top-images-format-val/)",
                 "the ImageNetV2 tarballs by Recht et al. (Hugging Face: vaishaal/ImageNetV2); extract into the data root"),
    "sketch": Layout("imagenet (ImageNet-Sketch)", "imagenet-sketch/sketch/<wnid>/*.JPEG   (1000 classes; or imagenet-sketch/<wnid>/)",
                     "the ImageNet-Sketch release by Wang et al. (ImageNet-Sketch.zip); unzip as imagenet-sketch/"),
    "r": Layout("imagenet (ImageNet-R)", "imagenet-r/<wnid>/*.jpg   (200 classes)",
                "imagenet-r.tar from Hendrycks et al.'s 'The Many Faces of Robustness' release; extract into the data root"),
    "a": Layout("imagenet (ImageNet-A)", "imagenet-a/<wnid>/*.jpg   (200 classes; README.txt alongside)",
                "imagenet-a.tar from Hendrycks et al.'s 'Natural Adversarial Examples' release; extract into the data root"),
    "c": Layout("imagenet (ImageNet-C)", "imagenet-c/<corruption>/<severity 1..5>/<wnid>/*.JPEG",
                "the ImageNet-C tarballs (Hendrycks & Dietterich, Zenodo), one per corruption family; extract all into "
                "imagenet-c/. Without it, use the generated gen/<corruption>/<severity> splits"),
}
V2_FOLDERS = {"v2": "matched-frequency", "v2-threshold0.7": "threshold0.7", "v2-top-images": "top-images"}


@lru_cache(maxsize=None)
def imagenet_subset(kind: str) -> tuple[int, ...]:
    """ImageNet-R/-A's 200 classes as ImageNet-1k indices (timm's bundled metadata)."""
    text = cls.timm_info_text(f"imagenet_{kind}_indices.txt")
    return tuple(int(v) for v in text.split())


def _imagenet_shift_folder(split: str, data_root, corruption: str | None = None, severity: int | None = None) -> tuple[Path, DatasetLocator]:
    kind = "v2" if split.startswith("v2") else split.split("/")[0]
    loc = DatasetLocator(IMAGENET_SHIFT_LAYOUTS[kind], split, data_root)
    if kind == "v2":
        name = f"imagenetv2-{V2_FOLDERS[split]}-format-val"
        folder = loc.base(name, f"imagenetv2/{name}")
    elif kind == "sketch":
        folder = loc.base("imagenet-sketch/sketch", "imagenet-sketch", "sketch")
    elif kind == "c":
        folder = loc.folder(loc.base("imagenet-c") / corruption / str(severity), "corruption/severity folder")
    else:
        folder = loc.base(f"imagenet-{kind}")
    return folder, loc


def load_imagenet_shift(split: str, data_root=None, corruption: str | None = None, severity: int | None = None) -> ImageFiles:
    folder, loc = _imagenet_shift_folder(split, data_root, corruption, severity)
    wnids = cls.imagenet_wnids()
    if split.startswith("v2"):  # folders are class indices, not wnids
        files = cls.class_folders(folder, tuple(str(i) for i in range(1000)), loc)
        return ImageFiles(files.paths, files.labels, meta={"variant": V2_FOLDERS[split]})
    kind = split.split("/")[0]
    if kind in ("r", "a"):
        subset = imagenet_subset(kind)
        files = cls.class_folders(folder, wnids, loc, label_space=subset)
        outside = set(np.unique(files.labels)) - set(subset)
        if outside:
            raise loc.fail(folder, f"{len(outside)} class folder(s) outside the {kind.upper()} 200-class subset")
        return ImageFiles(files.paths, files.labels, label_space=subset, meta={"class_subset": 200})
    files = cls.class_folders(folder, wnids, loc)
    if kind == "c":
        return ImageFiles(files.paths, files.labels, meta={"corruption": corruption, "severity": severity, "corruption_source": "prepared"})
    return files


def imagenet_shift_sources() -> dict[str, SplitSource]:
    out: dict[str, SplitSource] = {}
    for split in (*V2_FOLDERS, "sketch", "r", "a"):
        out[split] = SplitSource(
            lambda data_root=None, split=split, **_: load_imagenet_shift(split, data_root),
            lambda data_root=None, split=split, **_: _imagenet_shift_folder(split, data_root),
            listed(lambda data_root=None, split=split, **_: load_imagenet_shift(split, data_root)),
        )
    for c in BENCHMARK_CORRUPTIONS:
        for s in SEVERITIES:
            out[f"c/{c}/{s}"] = SplitSource(
                lambda data_root=None, c=c, s=s, **_: load_imagenet_shift(f"c/{c}/{s}", data_root, c, s),
                lambda data_root=None, c=c, s=s, **_: _imagenet_shift_folder(f"c/{c}/{s}", data_root, c, s),
                listed(lambda data_root=None, c=c, s=s, **_: load_imagenet_shift(f"c/{c}/{s}", data_root, c, s)),
            )
    return out


# --- Tiny-ImageNet-C -----------------------------------------------------------------------------

TINY_C_LAYOUT = Layout(
    "tiny_imagenet (Tiny-ImageNet-C)",
    "Tiny-ImageNet-C/<corruption>/<severity 1..5>/<wnid>/*.JPEG   (200 class folders, 64×64)\n"
    f"  corruptions: {', '.join(BENCHMARK_CORRUPTIONS)}\n"
    "tiny-imagenet-200/wnids.txt   (the class order: sorted wnids, as for tiny_imagenet itself)",
    "the Tiny-ImageNet-C.tar archive released with Hendrycks & Dietterich's corruption benchmark (Zenodo); "
    "extract it into the data root. Without it, use the generated gen/<corruption>/<severity> splits",
)
TINY_C_DIRS = ("Tiny-ImageNet-C", "tiny-imagenet-c")


def tiny_c_folder(corruption: str, severity: int, data_root: str | Path | None) -> tuple[Path, tuple[str, ...], DatasetLocator]:
    """The severity folder, Tiny-ImageNet's class order, and a locator; cheap (one folder listing).

    All 200 class folders must be there: a partly extracted archive would otherwise score a
    biased subset of classes without anyone noticing."""
    split = f"c/{corruption}/{severity}"
    loc = DatasetLocator(TINY_C_LAYOUT, split, data_root)
    base = loc.base(*TINY_C_DIRS)
    folder = loc.folder(loc.folder(base / corruption, "corruption folder") / str(severity), "severity folder")
    wnids = cls.tiny_class_order(split, data_root)
    present = {p.name for p in folder.iterdir() if p.is_dir()}
    unknown = sorted(present - set(wnids))
    if unknown:
        raise loc.fail(folder / unknown[0], f"{len(unknown)} folder(s) are not Tiny-ImageNet wnids (e.g. {unknown[0]!r})")
    missing = [w for w in wnids if w not in present]
    if missing:
        raise loc.fail(folder / missing[0], f"{len(missing)} of 200 class folders missing")
    return folder, wnids, loc


def load_tiny_c(corruption: str, severity: int, data_root: str | Path | None = None) -> ImageFiles:
    """One corruption/severity of Tiny-ImageNet-C, labelled in tiny_imagenet's class order."""
    folder, wnids, loc = tiny_c_folder(corruption, severity, data_root)
    files = cls.class_folders(folder, wnids, loc)
    return ImageFiles(files.paths, files.labels, meta={"corruption": corruption, "severity": severity, "corruption_source": "prepared"})


def tiny_c_sources() -> dict[str, SplitSource]:
    """c/<corruption>/<severity> for tiny_imagenet: the 15 benchmark corruptions × 5 severities."""
    out: dict[str, SplitSource] = {}
    for c in BENCHMARK_CORRUPTIONS:
        for s in SEVERITIES:
            out[f"c/{c}/{s}"] = SplitSource(
                lambda data_root=None, c=c, s=s, **_: load_tiny_c(c, s, data_root),
                lambda data_root=None, c=c, s=s, **_: tiny_c_folder(c, s, data_root),
                listed(lambda data_root=None, c=c, s=s, **_: load_tiny_c(c, s, data_root)),
            )
    return out


# --- generated corruptions for any dataset ------------------------------------------------------

def corrupted(base: Split, corruption: str, severity: int, seed: int) -> Split:
    """``base`` with ``corruption`` applied per image; deterministic per (seed, corruption, severity, index)."""
    cid = sorted(CORRUPTIONS).index(corruption)
    meta = {**base.meta, "corruption": corruption, "severity": severity, "corruption_source": "generated", "corruption_seed": seed}

    def apply(pixels: np.ndarray, i: int) -> np.ndarray:
        return corrupt(pixels, corruption, severity, np.random.default_rng([seed, cid, severity, i]))

    if isinstance(base, ImageArrays):
        images = np.stack([apply(base.images[i], i) for i in range(len(base))]) if len(base) else base.images
        return ImageArrays(images, base.labels, base.masks, base.label_space, meta)
    return ImageFiles(base.paths, base.labels, base.mask_paths, base.mask_lut, base.mask_reader, apply, base.label_space, meta)


def generated_fingerprint(base: str, corruption: str, severity: int, seed: int) -> str:
    """A gen/<corruption>/<severity> split: its source split's fingerprint, the generator's
    parameters and the generator's code (this module's corruption recipes)."""
    from bench.data import corruptions

    return digest({"source": base, "corruption": corruption, "severity": severity, "seed": seed, "code": source_hash(corruptions)})


def generated_sources(base: SplitSource) -> dict[str, SplitSource]:
    """gen/<corruption>/<severity> over the dataset's test split ``base``; param ``corruption_seed``."""
    out = {}
    for c in sorted(CORRUPTIONS):
        for s in SEVERITIES:
            out[f"gen/{c}/{s}"] = SplitSource(
                lambda data_root=None, c=c, s=s, corruption_seed=0, **p: corrupted(base.build(data_root, **p), c, s, corruption_seed),
                base.locate,
                lambda data_root=None, c=c, s=s, corruption_seed=0, **p: generated_fingerprint(base.fingerprint(data_root, **p), c, s, corruption_seed),
            )
    return out
