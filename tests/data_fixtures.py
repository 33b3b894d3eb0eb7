"""Tiny dataset trees written in each dataset's exact official on-disk format, with known content.

Each writer returns the ground truth it wrote (pixels, labels, masks) so tests can compare what
the loaders read back, and what torchvision's own classes read back, against it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.classification import imagenet_wnids

VOC_PALETTE = [0] * 768
for _i in range(256):  # the standard VOC colour map (bit-interleaved), as the released PNGs carry it
    _r = _g = _b = 0
    _c = _i
    for _j in range(8):
        _r |= ((_c >> 0) & 1) << (7 - _j)
        _g |= ((_c >> 1) & 1) << (7 - _j)
        _b |= ((_c >> 2) & 1) << (7 - _j)
        _c >>= 3
    VOC_PALETTE[3 * _i : 3 * _i + 3] = [_r, _g, _b]


def rng_images(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the official batches are Python-2 pickles


def _cifar_rows(x: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) → (N, 3072) rows as the CIFAR pickles store them: the R, G, B planes in turn."""
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """cifar-10-batches-py/: 5 train batches, test_batch, batches.meta (data rows = R, G, B planes)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    truth = {"train": ([], [])}
    for b in range(1, 6):
        x, y = rng_images(rng, per_batch, 32, 32), rng.integers(0, 10, per_batch)
        _pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "labels": y.tolist(),
                                             "data": _cifar_rows(x), "filenames": [f"f{b}_{i}.png" for i in range(per_batch)]})
        truth["train"][0].append(x)
        truth["train"][1].append(y)
    x, y = rng_images(rng, n_test, 32, 32), np.arange(n_test) % 10
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": y.tolist(),
                                    "data": _cifar_rows(x), "filenames": [f"t{i}.png" for i in range(n_test)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return {"train": (np.concatenate(truth["train"][0]), np.concatenate(truth["train"][1])), "test": (x, y)}


def write_cifar100(root: Path, n_train: int = 8, n_test: int = 5, seed: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    truth = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, fine = rng_images(rng, n, 32, 32), rng.integers(0, 100, n)
        _pickle(folder / split, {"batch_label": split, "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
                                 "data": _cifar_rows(x), "filenames": [f"{split}{i}.png" for i in range(n)]})
        truth[split] = (x, fine)
    _pickle(folder / "meta", {"fine_label_names": [f"fine{i:02d}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return truth


def write_stl10(root: Path, n_train: int = 6, n_test: int = 12, seed: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """stl10_binary/: *_X.bin as (N, 3, 96, 96) column-major uint8, *_y.bin as 1-based uint8 labels."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    truth = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = rng_images(rng, n, 96, 96), np.arange(n) % 10
        x.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")  # channel planes, each stored column by column
        (y + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        truth[split] = (x, y)
    (folder / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n")
    (folder / "fold_indices.txt").write_text(" ".join(str(i) for i in range(n_train)) + "\n")
    return truth


def _jpeg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


def _png(path: Path, pixels: np.ndarray, palette: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is None:
        Image.fromarray(pixels).save(path)  # greyscale (mode L), as ADE20k and COCO-stuff ship
        return
    im = Image.frombytes("P", (pixels.shape[1], pixels.shape[0]), pixels.tobytes())  # indices exactly
    im.putpalette(palette)
    im.save(path)


def tiny_wnids() -> list[str]:
    return [f"n{90000000 + 37 * i:08d}" for i in range(200)]  # arbitrary, not sorted by generation order


def write_tiny_imagenet(root: Path, n_val: int = 10, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    wnids = tiny_wnids()
    listed = list(rng.permutation(wnids))  # wnids.txt is not sorted in the release
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(listed) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tthing {w[-3:]}, other name\n" for w in wnids))
    for w in wnids[:3]:
        for k in range(2):
            _jpeg(folder / "train" / w / "images" / f"{w}_{k}.JPEG", rng_images(rng, 1, 64, 64)[0])
        (folder / "train" / w / f"{w}_boxes.txt").write_text("")
    for w in wnids[3:]:
        (folder / "train" / w / "images").mkdir(parents=True)
    lines, val_labels = [], []
    for k in range(n_val):
        w = wnids[(7 * k) % 200]
        _jpeg(folder / "val" / "images" / f"val_{k}.JPEG", rng_images(rng, 1, 64, 64)[0])
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
        val_labels.append(sorted(wnids).index(w))
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return {"val_labels": np.array(val_labels), "wnids": wnids}


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random colour gradient: JPEG keeps it within a few grey levels, so decoded pixels can be
    compared with what was written (random noise would not survive the compression)."""
    start, end = rng.integers(0, 256, size=(2, 3))
    t = np.linspace(0.0, 1.0, w)[None, :, None]
    row = start + (end.astype(float) - start) * t
    return np.broadcast_to(row, (h, w, 3)).round().astype(np.uint8)


def write_tiny_imagenet_c(root: Path, corruptions: tuple[str, ...] = ("fog",), severities: tuple[int, ...] = (1, 3),
                          classes: tuple[int, ...] = (199, 0, 57), per_class: int = 2, seed: int = 12) -> dict:
    """Tiny-ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG as the release extracts: all 200 wnid
    folders in every severity folder; images (64×64) only in ``classes`` (indices in sorted-wnid
    order), the other folders empty to keep the fixture small. Returns, per (corruption, severity),
    the written pixels and labels in (wnid, file name) order."""
    rng = np.random.default_rng(seed)
    wnids = sorted(tiny_wnids())
    truth = {}
    for c in corruptions:
        for s in severities:
            folder = root / "Tiny-ImageNet-C" / c / str(s)
            for w in wnids:
                (folder / w).mkdir(parents=True)
            pixels, labels = [], []
            for k in sorted(classes):
                for j in range(per_class):
                    x = smooth_image(rng, 64, 64)
                    _jpeg(folder / wnids[k] / f"val_{k * per_class + j}.JPEG", x)
                    pixels.append(x)
                    labels.append(k)
            truth[(c, s)] = (np.stack(pixels), np.array(labels))
    return truth


def write_meta_mat(path: Path, leaves: list[tuple[int, str]], parents: list[tuple[int, str]]) -> None:
    """devkit data/meta.mat: a 'synsets' struct array (leaves have num_children = 0)."""
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
    rows = [(i, w, f"words of {w}", "gloss", 0, np.zeros((0,), np.uint8), 0, 1300) for i, w in leaves]
    rows += [(i, w, f"group {w}", "gloss", 2, np.array([1, 2], np.uint8), 1, 0) for i, w in parents]
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in fields])
    for k, row in enumerate(rows):
        synsets[k, 0] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"synsets": synsets})


def write_imagenet(root: Path, n_classes: int = 4, per_class: int = 2, n_val: int = 6, flat_val: bool = True, seed: int = 4) -> dict:
    """imagenet/train/<wnid>/*.JPEG, val flat + devkit (ILSVRC2012_ID order differs from wnid order)."""
    rng = np.random.default_rng(seed)
    folder = root / "imagenet"
    all_wnids = imagenet_wnids()
    chosen = [all_wnids[i] for i in (999, 0, 500, 3)][:n_classes]  # class indices 999, 0, 500, 3
    for w in chosen:
        for k in range(per_class):
            _jpeg(folder / "train" / w / f"{w}_{k}.JPEG", rng_images(rng, 1, 40 + 8 * k, 48)[0])
    ids = {w: n_classes - k for k, w in enumerate(chosen)}  # ILSVRC2012_ID: reversed
    val_wnids = [chosen[(3 * k + 1) % n_classes] for k in range(n_val)]
    for k, w in enumerate(val_wnids):
        target = folder / "val" / (f"ILSVRC2012_val_{k + 1:08d}.JPEG" if flat_val else f"{w}/ILSVRC2012_val_{k + 1:08d}.JPEG")
        _jpeg(target, rng_images(rng, 1, 36, 30)[0])
    devkit = folder / "ILSVRC2012_devkit_t12"
    write_meta_mat(devkit / "data" / "meta.mat", [(ids[w], w) for w in chosen], [(1001, "n00001740")])
    (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in val_wnids))
    return {"chosen": chosen, "val_labels": np.array([all_wnids.index(w) for w in val_wnids])}


def write_class_folders(folder: Path, names: list[str], per_class: int = 1, suffix: str = ".jpg", seed: int = 5) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        for k in range(per_class):
            _jpeg(folder / name / f"{k}{suffix}", rng_images(rng, 1, 24, 24)[0])


def write_cifar_c(root: Path, folder_name: str, corruptions: list[str], per_severity: int = 3, seed: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / folder_name
    folder.mkdir(parents=True)
    labels = np.tile(np.arange(per_severity) % 10, 5).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    truth = {}
    for c in corruptions:
        x = rng_images(rng, 5 * per_severity, 32, 32)
        np.save(folder / f"{c}.npy", x)
        truth[c] = x
    return {"images": truth, "labels": labels}


def write_cifar101(root: Path, version: str = "v6", n: int = 7, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder = root / "CIFAR-10.1" / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = rng_images(rng, n, 32, 32), (np.arange(n) * 3) % 10
    np.save(folder / f"cifar10.1_{version}_data.npy", x)
    np.save(folder / f"cifar10.1_{version}_labels.npy", y.astype(np.int64))
    return x, y


def write_voc(root: Path, ids_train=("2007_000032", "2007_000039"), ids_val=("2007_000033",), seed: int = 8) -> dict:
    """VOCdevkit/VOC2012 with palette PNG masks (classes 0..20 and 255 boundaries)."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    masks = {}
    for i in (*ids_train, *ids_val):
        _jpeg(voc / "JPEGImages" / f"{i}.jpg", rng_images(rng, 1, 20, 28)[0])
        m = rng.integers(0, 21, size=(20, 28)).astype(np.uint8)
        m[0, :] = 255
        _png(voc / "SegmentationClass" / f"{i}.png", m, VOC_PALETTE)
        masks[i] = m
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(ids_train) + "\n")
    (sets / "val.txt").write_text("\n".join(ids_val) + "\n")
    (sets / "trainval.txt").write_text("\n".join((*ids_train, *ids_val)) + "\n")
    return masks


def write_sbd(root: Path, ids_train=("2008_000002", "2007_000032"), ids_val=("2008_000003", "2007_000033"), seed: int = 9) -> dict:
    """benchmark_RELEASE/dataset/{img,cls,train.txt,val.txt}; cls/<id>.mat holds GTcls.Segmentation."""
    import scipy.io

    rng = np.random.default_rng(seed)
    ds = root / "benchmark_RELEASE" / "dataset"
    masks = {}
    for i in (*ids_train, *ids_val):
        _jpeg(ds / "img" / f"{i}.jpg", rng_images(rng, 1, 18, 22)[0])
        m = rng.integers(0, 21, size=(18, 22)).astype(np.uint8)
        (ds / "cls").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(ds / "cls" / f"{i}.mat", {"GTcls": {"Segmentation": m, "Boundaries": np.zeros((20, 1), object), "CategoriesPresent": np.unique(m)}})
        masks[i] = m
    (ds / "train.txt").write_text("\n".join(ids_train) + "\n")
    (ds / "val.txt").write_text("\n".join(ids_val) + "\n")
    return masks


def write_ade(root: Path, n: int = 3, seed: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    truth = {}
    for split, folder, prefix in (("train", "training", "ADE_train"), ("val", "validation", "ADE_val")):
        raw = []
        for k in range(n):
            name = f"{prefix}_{k + 1:08d}"
            _jpeg(base / "images" / folder / f"{name}.jpg", rng_images(rng, 1, 16, 20)[0])
            m = rng.integers(0, 151, size=(16, 20)).astype(np.uint8)
            m[0, 0], m[0, 1], m[0, 2] = 0, 1, 150
            _png(base / "annotations" / folder / f"{name}.png", m)
            raw.append(m)
        truth[split] = raw
    (base / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n" + "".join(f"{i}\t0.1\t1\t1\tname{i};alias\n" for i in range(1, 151)))
    return truth


def write_coco_stuff(root: Path, converted: bool, n: int = 2, seed: int = 11) -> dict:
    """coco_stuff164k/images/{train2017,val2017} + annotations (labelTrainIds or raw stuffthingmaps).

    Train and val use the same file stems but different masks, so a loader that reads train masks
    from val2017 is caught."""
    rng = np.random.default_rng(seed)
    base = root / "coco_stuff164k"
    truth = {}
    for split, folder in (("train", "train2017"), ("val", "val2017")):
        masks = []
        for k in range(n):
            stem = f"{k + 1:012d}"
            _jpeg(base / "images" / folder / f"{stem}.jpg", rng_images(rng, 1, 14, 18)[0])
            if converted:
                m = rng.integers(0, 171, size=(14, 18)).astype(np.uint8)
                name = f"{stem}_labelTrainIds.png"
            else:
                m = rng.integers(0, 182, size=(14, 18)).astype(np.uint8)
                m[0, :4] = (0, 11, 91, 181)  # person, an unused id (COCO id 12), banner, the last stuff class
                name = f"{stem}.png"
            m[-1, -1] = 255
            _png(base / "annotations" / folder / name, m)
            masks.append(m)
        truth[split] = masks
    return truth
