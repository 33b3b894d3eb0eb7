"""Classification datasets read from their official on-disk layouts.

- CIFAR-10 / CIFAR-100 and STL-10 go through torchvision's own dataset classes. Their md5 checks
  are switched off for data already on disk (a file's presence is checked instead): the official
  files pass either way, and tests can use small fixtures in the exact format.
- Tiny-ImageNet-200 and ImageNet-1k are folder layouts decoded lazily (:class:`ImageFiles`).
  ImageNet's class order is the sorted WordNet ids (torchvision's and timm's order); its
  validation labels come from sorted class folders or, for the flat official val folder, from
  the devkit's ``ILSVRC2012_validation_ground_truth.txt`` + ``meta.mat``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.data.base import ImageArrays, ImageFiles
from bench.data.fingerprint import files_fingerprint, image_files_fingerprint
from bench.data.layout import DatasetLocator, Layout, data_root as resolve_root, image_files

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
REAL_TRANSFORM = {"crop_pct": 0.875, "train_aug": "rrc_flip"}  # DINOv2: resize 256 → centre crop 224


# --- CIFAR ---------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _present(name: str) -> type:
    """torchvision's reader for ``name`` with presence checks instead of md5 (``check_integrity(path, None)``).

    Built on first use, so that reading a suite never imports torchvision. STL-10 lists its
    labelled files only: ``unlabeled_X.bin`` (2.6 GB) is not needed for train/test.
    """
    import torchvision

    base = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100, "stl10": torchvision.datasets.STL10}[name]
    attrs: dict = {key: [[f, None] for f, _ in getattr(base, key) if not f.startswith("unlabeled")] for key in ("train_list", "test_list")}
    if name != "stl10":
        attrs["meta"] = {**base.meta, "md5": None}
    return type(f"_Present{base.__name__}", (base,), attrs)


# torchvision's base_folder of each reader (tests/test_report_scale.py keeps them equal): a data root
# without the folder is said to be missing before torchvision is imported (`bench status` on a
# login node without the data checks every finished run's data, and must not pay that import)
BASE_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "stl10": "stl10_binary"}

CIFAR_LAYOUTS = {
    "cifar10": Layout(
        "cifar10",
        "cifar-10-batches-py/\n  data_batch_1 … data_batch_5   (python pickle batches, 10,000 images each)\n"
        "  test_batch\n  batches.meta",
        "the 'CIFAR-10 python version' archive (cifar-10-python.tar.gz) from Alex Krizhevsky's CIFAR page "
        "at the University of Toronto; extract it into the data root",
    ),
    "cifar100": Layout(
        "cifar100",
        "cifar-100-python/\n  train   (python pickle, 50,000 images, fine + coarse labels)\n  test\n  meta",
        "the 'CIFAR-100 python version' archive (cifar-100-python.tar.gz) from the CIFAR page at the "
        "University of Toronto; extract it into the data root",
    ),
}


def locate_cifar(name: str, split: str, data_root=None) -> Path:
    loc = DatasetLocator(CIFAR_LAYOUTS[name], split, data_root)
    folder = loc.base(BASE_FOLDERS[name])
    cls = _present(name)
    for fname, _ in cls.train_list + cls.test_list:
        loc.file(folder / fname, "batch file")
    loc.file(folder / cls.meta["filename"], "metadata file")
    return loc.root


def load_cifar(name: str, split: str, data_root=None) -> ImageArrays:
    root = locate_cifar(name, split, data_root)
    ds = _present(name)(str(root), train=split == "train", download=False)
    return ImageArrays(np.ascontiguousarray(ds.data), np.asarray(ds.targets, dtype=np.int64))


def cifar_files(name: str, split: str, data_root=None) -> list[Path]:
    """The pickle files ``split`` is read from (its batches and the metadata file)."""
    folder = locate_cifar(name, split, data_root) / BASE_FOLDERS[name]  # located first: missing data is said without torchvision
    cls = _present(name)
    batches = cls.train_list if split == "train" else cls.test_list
    return [folder / f for f, _ in batches] + [folder / cls.meta["filename"]]


def fingerprint_cifar(name: str, split: str, data_root=None) -> str:
    """Size and content hash of each pickle the split reads (images and labels live in the same files)."""
    return files_fingerprint(cifar_files(name, split, data_root), resolve_root(data_root))


def cifar_names(name: str):
    def names(data_root=None) -> tuple[str, ...]:
        root = locate_cifar(name, "test", data_root)
        return tuple(_present(name)(str(root), train=False).classes)

    return names


# --- STL-10 --------------------------------------------------------------------------------------

STL10_LAYOUT = Layout(
    "stl10",
    "stl10_binary/\n  train_X.bin  train_y.bin   (5,000 labelled 96×96 images, column-major binary)\n"
    "  test_X.bin   test_y.bin    (8,000)\n  class_names.txt  fold_indices.txt  (unlabeled_X.bin: not needed)",
    "the 'binary' archive (stl10_binary.tar.gz) from the STL-10 page at Stanford; extract it into the data root",
)


def locate_stl10(split: str, data_root=None, **_) -> Path:
    loc = DatasetLocator(STL10_LAYOUT, split, data_root)
    folder = loc.base(BASE_FOLDERS["stl10"])
    for fname, _ in _present("stl10").train_list + _present("stl10").test_list:
        loc.file(folder / fname, "binary file")
    return loc.root


def stl10_files(split: str, data_root=None) -> list[Path]:
    """The image and label binaries of a labelled split."""
    folder = locate_stl10(split, data_root) / BASE_FOLDERS["stl10"]
    return [folder / f"{split}_X.bin", folder / f"{split}_y.bin"]


def fingerprint_stl10(split: str, data_root=None) -> str:
    return files_fingerprint(stl10_files(split, data_root), resolve_root(data_root))


def load_stl10(split: str, data_root=None) -> ImageArrays:
    ds = _present("stl10")(str(locate_stl10(split, data_root)), split=split, download=False)
    return ImageArrays(np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1)), ds.labels.astype(np.int64))


# --- Tiny-ImageNet-200 ---------------------------------------------------------------------------

TINY_LAYOUT = Layout(
    "tiny_imagenet",
    "tiny-imagenet-200/\n  wnids.txt   words.txt\n  train/<wnid>/images/<wnid>_<k>.JPEG   (200 classes × 500, 64×64)\n"
    "  val/images/val_<k>.JPEG\n  val/val_annotations.txt   (file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1)",
    "the tiny-imagenet-200.zip archive of Stanford's CS231n course; unzip it into the data root",
)


def _tiny_wnids(folder: Path, loc: DatasetLocator) -> list[str]:
    wnids = loc.file(folder / "wnids.txt").read_text().split()
    if len(wnids) != 200 or len(set(wnids)) != 200:
        raise loc.fail(folder / "wnids.txt", f"expected 200 distinct WordNet ids, found {len(set(wnids))}")
    return sorted(wnids)  # class order: sorted wnids (as ImageFolder on train/ gives)


def tiny_class_order(split: str, data_root: str | Path | None = None) -> tuple[str, ...]:
    """Tiny-ImageNet's label order (sorted wnids of ``tiny-imagenet-200/wnids.txt``).

    Shift sets stored in their own folders (Tiny-ImageNet-C) take their label ids from here, not
    from whatever folders they hold, so a shifted image of class k is scored against the head's
    class k by construction. ``split`` only names the split in the error message."""
    loc = DatasetLocator(TINY_LAYOUT, split, data_root)
    return tuple(_tiny_wnids(loc.base("tiny-imagenet-200"), loc))


def locate_tiny(split: str, data_root=None, **_) -> tuple[Path, list[str]]:
    loc = DatasetLocator(TINY_LAYOUT, split, data_root)
    folder = loc.base("tiny-imagenet-200")
    wnids = _tiny_wnids(folder, loc)
    if split == "train":
        missing = [w for w in wnids if not (folder / "train" / w / "images").is_dir()]
        if missing:
            raise loc.fail(folder / "train" / missing[0] / "images", f"{len(missing)} of 200 class folders missing")
    else:
        loc.file(folder / "val" / "val_annotations.txt", "annotation file")
        loc.folder(folder / "val" / "images", "image folder")
    return folder, wnids


def load_tiny(split: str, data_root=None) -> ImageFiles:
    folder, wnids = locate_tiny(split, data_root)
    index = {w: i for i, w in enumerate(wnids)}
    loc = DatasetLocator(TINY_LAYOUT, split, data_root)
    paths: list[str] = []
    labels: list[int] = []
    if split == "train":
        for w in wnids:
            files = image_files(folder / "train" / w / "images")
            paths += [str(p) for p in files]
            labels += [index[w]] * len(files)
    else:
        ann = folder / "val" / "val_annotations.txt"
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise loc.fail(ann, f"line {n}: expected '<file>\\t<wnid>\\t…' with a wnid from wnids.txt, got {line[:60]!r}")
            image = folder / "val" / "images" / fields[0]
            if not image.is_file():
                raise loc.fail(image, f"listed in val_annotations.txt line {n} but missing")
            paths.append(str(image))
            labels.append(index[fields[1]])
    return ImageFiles(tuple(paths), np.asarray(labels, dtype=np.int64))


def fingerprint_tiny(split: str, data_root=None) -> str:
    """The listing of the split's images (relative paths, sizes) and labels from wnids.txt and
    val_annotations.txt: images are not read."""
    return image_files_fingerprint(load_tiny(split, data_root), resolve_root(data_root))


def tiny_names(data_root=None) -> tuple[str, ...]:
    folder, wnids = locate_tiny("val", data_root)
    words = {}
    if (folder / "words.txt").is_file():
        for line in (folder / "words.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    return tuple(words.get(w, w) for w in wnids)


# --- ImageNet-1k ---------------------------------------------------------------------------------

IMAGENET_LAYOUT = Layout(
    "imagenet",
    "imagenet/   (or ILSVRC2012/)\n  train/<wnid>/*.JPEG           (1000 class folders)\n"
    "  val/<wnid>/*.JPEG             (sorted into class folders)\n"
    "  — or — val/ILSVRC2012_val_<8 digits>.JPEG (flat, as extracted) plus\n"
    "  ILSVRC2012_devkit_t12/data/meta.mat and ILSVRC2012_validation_ground_truth.txt",
    "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz from the ImageNet "
    "website (registration required); extract train per class, val flat or sorted, the devkit beside them",
)
IMAGENET_DIRS = ("imagenet", "ILSVRC2012", "imagenet-1k")


def timm_info_text(filename: str) -> str:
    """A metadata file bundled with timm (``timm/data/_info/``), read without importing timm.

    Importing timm imports torch and torchvision (seconds); listing or validating datasets only
    needs these text tables.
    """
    import importlib.util

    spec = importlib.util.find_spec("timm")
    assert spec is not None and spec.origin is not None, "timm is a dependency of this package"
    return (Path(spec.origin).parent / "data" / "_info" / filename).read_text()


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (timm's bundled ``imagenet_synsets.txt``)."""
    return tuple(timm_info_text("imagenet_synsets.txt").split())


@lru_cache(maxsize=1)
def imagenet_names() -> tuple[str, ...]:
    """The first lemma of each class (``tench``, ``goldfish``, …) in class-index order."""
    lemmas = dict(line.split("\t", 1) for line in timm_info_text("imagenet_synset_to_lemma.txt").splitlines() if line.strip())
    return tuple(lemmas[w].split(",")[0] for w in imagenet_wnids())


def read_devkit_val_wnids(devkit: Path, loc: DatasetLocator) -> list[str]:
    """The wnid of every flat val image in file-name order, from the devkit (ILSVRC2012_ID → wnid)."""
    import scipy.io

    meta_file = loc.file(devkit / "data" / "meta.mat", "devkit meta.mat")
    truth = loc.file(devkit / "data" / "ILSVRC2012_validation_ground_truth.txt", "devkit ground truth")
    synsets = scipy.io.loadmat(meta_file, squeeze_me=True)["synsets"]
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    return [id_to_wnid[int(v)] for v in truth.read_text().split()]


def locate_imagenet(split: str, data_root=None, **_) -> Path:
    loc = DatasetLocator(IMAGENET_LAYOUT, split, data_root)
    folder = loc.base(*IMAGENET_DIRS)
    loc.folder(folder / split, f"{split} folder")
    return folder


def load_imagenet(split: str, data_root=None) -> ImageFiles:
    folder = locate_imagenet(split, data_root)
    loc = DatasetLocator(IMAGENET_LAYOUT, split, data_root)
    wnids = imagenet_wnids()
    return class_folders(folder / split, wnids, loc, flat_labels=lambda: read_devkit_val_wnids(folder / "ILSVRC2012_devkit_t12", loc))


def fingerprint_imagenet(split: str, data_root=None) -> str:
    """The listing of ``split`` (relative paths, sizes) and its labels (class folders or the devkit)."""
    return image_files_fingerprint(load_imagenet(split, data_root), resolve_root(data_root))


def class_folders(folder: Path, wnids: tuple[str, ...], loc: DatasetLocator, flat_labels=None, label_space=None) -> ImageFiles:
    """``folder/<wnid>/*`` labelled by each wnid's index in ``wnids``; or, when the folder is flat
    and ``flat_labels`` is given, its sorted images labelled by ``flat_labels()`` (a wnid each)."""
    index = {w: i for i, w in enumerate(wnids)}
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    paths: list[str] = []
    labels: list[int] = []
    if subdirs:
        unknown = [d.name for d in subdirs if d.name not in index]
        if unknown:
            raise loc.fail(folder / unknown[0], f"{len(unknown)} folder(s) are not known class ids (e.g. {unknown[0]!r})")
        for d in subdirs:
            files = image_files(d)
            paths += [str(p) for p in files]
            labels += [index[d.name]] * len(files)
    elif flat_labels is not None:
        files = image_files(folder)
        names = flat_labels()
        if len(names) != len(files):
            raise loc.fail(folder, f"{len(files)} images but the devkit labels {len(names)}")
        paths = [str(p) for p in files]
        labels = [index[w] for w in names]
    if not paths:
        raise loc.fail(folder, "no images found")
    return ImageFiles(tuple(paths), np.asarray(labels, dtype=np.int64), label_space=label_space)
