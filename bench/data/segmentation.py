"""Semantic segmentation datasets in their official layouts, with mmsegmentation's label conventions.

- Pascal VOC 2012: 21 classes (background is class 0), 255 = ignore (object boundaries). Read
  through torchvision's ``VOCSegmentation`` file lists. ``train_aug`` adds SBD: the union of SBD
  train+val and VOC train minus VOC val (10,582 images on the full data); each image's mask is
  VOC's own PNG when VOC has one, else mmsegmentation's converted ``SegmentationClassAug`` PNG,
  else SBD's official ``cls/<id>.mat``.
- ADE20k (ADEChallengeData2016): stored 0 = "other", 1..150 = classes; ``reduce_zero_label``
  maps 0 → 255 and k → k−1, giving 150 classes.
- COCO-stuff 164k: 171 classes (80 things + 91 stuff), 255 = unlabelled. Reads mmsegmentation's
  converted ``*_labelTrainIds.png`` when present, else the raw ``stuffthingmaps`` PNGs (ids 0..181)
  through the same 182 → 171 map. Train masks come from ``annotations/train2017`` (mmsegmentation's
  base config points its train split at val2017 masks, which is wrong).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from bench.lazy import lazy

torchvision = lazy("torchvision")

from bench.data.base import DATASETS, DatasetEntry, ImageFiles
from bench.data.layout import DatasetLocator, Layout, image_files

IGNORE = 255
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
COCO_STUFF_NAMES = (  # COCO-stuff category ids 92..182, in id order
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower",
    "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow",
    "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug",
    "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete",
    "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind",
    "window-other", "wood",
)


def lut(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry uint8 lookup table: listed values map as given, everything else to IGNORE."""
    table = np.full(256, IGNORE, dtype=np.uint8)
    for src, dst in mapping.items():
        table[src] = dst
    return table


REDUCE_ZERO_LABEL = lut({k: k - 1 for k in range(1, 255)})  # 0 → 255, k → k−1, 255 stays 255


# --- Pascal VOC 2012 (+ SBD) ---------------------------------------------------------------------

VOC_LAYOUT = Layout(
    "voc2012",
    "VOCdevkit/VOC2012/\n  JPEGImages/<id>.jpg\n  SegmentationClass/<id>.png   (palette PNG: 0..20, 255 = boundary)\n"
    "  ImageSets/Segmentation/{train,val,trainval}.txt\n"
    "for train_aug, SBD as well, either as released: benchmark_RELEASE/dataset/{img/<id>.jpg, cls/<id>.mat, train.txt, val.txt}\n"
    "  or converted by mmsegmentation: VOCdevkit/VOC2012/SegmentationClassAug/<id>.png",
    "VOCtrainval_11-May-2012.tar from the PASCAL VOC 2012 challenge site (extract into the data root); SBD: "
    "benchmark.tgz of Hariharan et al.'s Semantic Boundaries Dataset (extract into the data root)",
)
SBD_DIRS = ("benchmark_RELEASE/dataset", "SBD/benchmark_RELEASE/dataset", "SBD/dataset", "SBD")


def read_sbd_mat(path: str) -> np.ndarray:
    """SBD's ``cls/<id>.mat`` → class ids (0 background, 1..20), as torchvision's SBDataset reads it."""
    import scipy.io

    return np.asarray(scipy.io.loadmat(path)["GTcls"][0]["Segmentation"][0], dtype=np.uint8)


def read_voc_or_sbd(path: str) -> np.ndarray:
    from bench.data.base import read_png_mask

    return read_sbd_mat(path) if path.endswith(".mat") else read_png_mask(path)


def locate_voc(split: str, data_root=None, **_) -> Path:
    loc = DatasetLocator(VOC_LAYOUT, split, data_root)
    voc = loc.base("VOCdevkit/VOC2012")
    for sub in ("JPEGImages", "SegmentationClass"):
        loc.folder(voc / sub)
    sets = voc / "ImageSets" / "Segmentation"
    for name in ("train", "val") if split == "train_aug" else (split,):
        loc.file(sets / f"{name}.txt", "split list")
    if split == "train_aug" and not (voc / "SegmentationClassAug").is_dir():
        _sbd_root(loc)
    return voc


def _sbd_root(loc: DatasetLocator) -> Path:
    for rel in SBD_DIRS:
        if (loc.root / rel / "cls").is_dir() and (loc.root / rel / "train.txt").is_file():
            return loc.root / rel
    raise loc.fail(loc.root / SBD_DIRS[0], "train_aug needs SBD (benchmark_RELEASE/dataset) or VOC2012/SegmentationClassAug/")


def _ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def load_voc(split: str, data_root=None) -> ImageFiles:
    voc = locate_voc(split, data_root)
    if split != "train_aug":
        tv = torchvision.datasets.VOCSegmentation(str(voc.parent.parent), year="2012", image_set=split, download=False)
        loc = DatasetLocator(VOC_LAYOUT, split, data_root)
        for image, mask in zip(tv.images, tv.masks):
            loc.file(Path(image), "image listed in the split file")
            loc.file(Path(mask), "mask listed in the split file")
        return ImageFiles(tuple(tv.images), np.zeros(len(tv.images), dtype=np.int64), tuple(tv.masks), mask_reader=read_voc_or_sbd)
    loc = DatasetLocator(VOC_LAYOUT, split, data_root)
    sets = voc / "ImageSets" / "Segmentation"
    val = set(_ids(sets / "val.txt"))
    aug_dir = voc / "SegmentationClassAug"
    sbd = None if aug_dir.is_dir() else _sbd_root(loc)
    candidates = set(_ids(sets / "train.txt"))
    if sbd is not None:
        candidates |= set(_ids(sbd / "train.txt")) | set(_ids(sbd / "val.txt"))
    elif (sets / "aug.txt").is_file():
        candidates |= set(_ids(sets / "aug.txt"))
    else:
        candidates |= {p.stem for p in aug_dir.glob("*.png")}
    images, masks = [], []
    for i in sorted(candidates - val):
        own = voc / "SegmentationClass" / f"{i}.png"
        mask = own if own.is_file() else (aug_dir / f"{i}.png" if sbd is None else sbd / "cls" / f"{i}.mat")
        image = voc / "JPEGImages" / f"{i}.jpg"
        if not image.is_file() and sbd is not None:
            image = sbd / "img" / f"{i}.jpg"
        images.append(str(loc.file(image, "image")))
        masks.append(str(loc.file(mask, "mask")))
    return ImageFiles(tuple(images), np.zeros(len(images), dtype=np.int64), tuple(masks), mask_reader=read_voc_or_sbd,
                      meta={"sbd": "mmseg SegmentationClassAug" if sbd is None else "SBD cls/*.mat"})


# --- ADE20k --------------------------------------------------------------------------------------

ADE_LAYOUT = Layout(
    "ade20k",
    "ADEChallengeData2016/\n  images/{training,validation}/ADE_{train,val}_<8 digits>.jpg\n"
    "  annotations/{training,validation}/<same name>.png   (0 = other, 1..150)\n  objectInfo150.txt (class names; optional)",
    "ADEChallengeData2016.zip, the MIT Scene Parsing Benchmark release of ADE20k; unzip into the data root",
)
ADE_FOLDERS = {"train": "training", "val": "validation"}


def locate_ade(split: str, data_root=None, **_) -> tuple[Path, Path]:
    loc = DatasetLocator(ADE_LAYOUT, split, data_root)
    root = loc.base("ADEChallengeData2016", "ade/ADEChallengeData2016")
    return loc.folder(root / "images" / ADE_FOLDERS[split]), loc.folder(root / "annotations" / ADE_FOLDERS[split])


def paired_files(images_dir: Path, masks_dir: Path, loc: DatasetLocator, mask_name=lambda stem: f"{stem}.png") -> tuple[tuple[str, ...], tuple[str, ...]]:
    images = image_files(images_dir)
    if not images:
        raise loc.fail(images_dir, "no images found")
    masks = [masks_dir / mask_name(p.stem) for p in images]
    missing = [m for m in masks if not m.is_file()]
    if missing:
        raise loc.fail(missing[0], f"{len(missing)} of {len(images)} images have no mask")
    return tuple(map(str, images)), tuple(map(str, masks))


def load_ade(split: str, data_root=None) -> ImageFiles:
    images_dir, masks_dir = locate_ade(split, data_root)
    images, masks = paired_files(images_dir, masks_dir, DatasetLocator(ADE_LAYOUT, split, data_root))
    return ImageFiles(images, np.zeros(len(images), dtype=np.int64), masks, mask_lut=REDUCE_ZERO_LABEL)


def ade_names(data_root=None) -> tuple[str, ...]:
    images_dir, _ = locate_ade("val", data_root)
    info = images_dir.parent.parent / "objectInfo150.txt"
    if not info.is_file():
        return tuple(f"class_{i}" for i in range(150))
    rows = [line.split("\t") for line in info.read_text().splitlines()[1:] if line.strip()]
    return tuple(row[-1].split(";")[0].strip() for row in rows)


# --- COCO-stuff 164k -----------------------------------------------------------------------------

COCO_LAYOUT = Layout(
    "coco_stuff164k",
    "coco_stuff164k/\n  images/{train2017,val2017}/<12 digits>.jpg\n"
    "  annotations/{train2017,val2017}/<12 digits>_labelTrainIds.png   (0..170, 255; mmsegmentation's conversion)\n"
    "  — or the raw stuffthingmaps: annotations/{train2017,val2017}/<12 digits>.png   (ids 0..181, 255)",
    "train2017.zip and val2017.zip (COCO 2017 images, the COCO website) and stuffthingmaps_trainval2017.zip "
    "(the COCO-Stuff release by Caesar et al.); unzip images into images/ and the maps into annotations/",
)
COCO_FOLDERS = {"train": "train2017", "val": "val2017"}  # train masks from train2017, not val2017


@lru_cache(maxsize=1)
def coco_thing_ids() -> tuple[int, ...]:
    """The 80 COCO thing category ids (1..90 with gaps), from torchvision's COCO category table."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    cats = FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]  # index = COCO category id
    return tuple(i for i, name in enumerate(cats) if i > 0 and name != "N/A")


@lru_cache(maxsize=1)
def coco_stuff_classes() -> tuple[str, ...]:
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    cats = FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    return tuple(cats[i] for i in coco_thing_ids()) + COCO_STUFF_NAMES


def coco_raw_to_train() -> dict[int, int]:
    """Raw stuffthingmaps value (category id − 1) → train id 0..170 (things first, then stuff)."""
    raw = [i - 1 for i in coco_thing_ids()] + list(range(91, 182))
    return {r: t for t, r in enumerate(raw)}


def locate_coco(split: str, data_root=None, **_) -> tuple[Path, Path]:
    loc = DatasetLocator(COCO_LAYOUT, split, data_root)
    root = loc.base("coco_stuff164k", "coco-stuff", "cocostuff")
    return loc.folder(root / "images" / COCO_FOLDERS[split]), loc.folder(root / "annotations" / COCO_FOLDERS[split])


def load_coco(split: str, data_root=None) -> ImageFiles:
    images_dir, masks_dir = locate_coco(split, data_root)
    loc = DatasetLocator(COCO_LAYOUT, split, data_root)
    converted = next(masks_dir.glob("*_labelTrainIds.png"), None) is not None
    name = (lambda stem: f"{stem}_labelTrainIds.png") if converted else (lambda stem: f"{stem}.png")
    images, masks = paired_files(images_dir, masks_dir, loc, name)
    table = lut({k: k for k in range(171)}) if converted else lut(coco_raw_to_train())
    meta = {"masks": "labelTrainIds (mmseg converted)" if converted else "raw stuffthingmaps, mapped 182→171"}
    return ImageFiles(images, np.zeros(len(images), dtype=np.int64), masks, mask_lut=table, meta=meta)


def listed(load: Callable[..., ImageFiles]) -> Callable[..., str]:
    """A segmentation split's fingerprint: its loader's listing of images and masks (relative
    paths, sizes), the mask lookup table and facts; no image or mask is read."""
    from bench.data.fingerprint import image_files_fingerprint
    from bench.data.layout import data_root as resolve_root

    return lambda split, data_root=None, **_: image_files_fingerprint(load(split, data_root), resolve_root(data_root))


def _register() -> None:
    DATASETS.add("voc2012", DatasetEntry(
        task="segmentation", num_classes=21, classes=VOC_CLASSES, splits=("train", "val", "trainval", "train_aug"),
        train_split="train_aug", test_split="val", build=load_voc, locate=locate_voc, fingerprint=listed(load_voc),
        description="Pascal VOC 2012 segmentation (21 classes incl. background); trains on train_aug (VOC train + SBD) as mmseg's voc_aug",
    ))
    DATASETS.add("ade20k", DatasetEntry(
        task="segmentation", num_classes=150, splits=("train", "val"), test_split="val", reduce_zero_label=True,
        build=load_ade, locate=locate_ade, fingerprint=listed(load_ade), names_from_disk=ade_names,
        description="ADE20k (ADEChallengeData2016), 150 classes, reduce_zero_label",
    ))
    DATASETS.add("coco_stuff164k", DatasetEntry(
        task="segmentation", num_classes=171, splits=("train", "val"), test_split="val",
        build=load_coco, locate=locate_coco, fingerprint=listed(load_coco), names_from_disk=lambda data_root=None: coco_stuff_classes(),  # torchvision on demand only
        description="COCO-stuff 164k (171 classes; mmseg labelTrainIds or raw stuffthingmaps)",
    ))


_register()
