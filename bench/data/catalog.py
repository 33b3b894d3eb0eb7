"""The real classification datasets, registered with their evaluation (shift) splits attached.

Each entry is a table ``split name → SplitSource``: the dataset's own splits, its prepared shift
sets in the same label space, and generated corruptions of its test split. Split names a suite
can use, and which of them count as shifted (OOD), follow from the table.
"""

from __future__ import annotations

from typing import Any

from bench.data import classification as cls
from bench.data import shifts
from bench.data.base import DATASETS, DatasetEntry, Split
from bench.data.fingerprint import digest, files_fingerprint
from bench.data.layout import data_root as resolve_root
from bench.data.shifts import SplitSource


def _own(build, locate, fingerprint, split: str) -> SplitSource:
    return SplitSource(lambda data_root=None, **_: build(split, data_root), lambda data_root=None, **_: locate(split, data_root),
                       lambda data_root=None, **_: fingerprint(split, data_root))


def register_table(name: str, own: dict[str, SplitSource], shifted: dict[str, SplitSource], default_eval: tuple[str, ...], **facts: Any) -> None:
    """Register ``name`` with its own splits, its shift splits and gen/* over its test split."""
    test_split = facts.get("test_split", "test")
    shifted = {**shifted, **shifts.generated_sources(own[test_split])}
    table = {**own, **shifted}

    def build(split: str, data_root=None, **params: Any) -> Split:
        return table[split].build(data_root, **params)

    def locate(split: str, data_root=None, **params: Any) -> Any:
        return table[split].locate(data_root, **params)

    def fingerprint(split: str, data_root=None, **params: Any) -> str:
        return table[split].fingerprint(data_root, **params)

    DATASETS.add(name, DatasetEntry(
        splits=tuple(table), shift_splits=tuple(shifted), default_eval=default_eval, build=build, locate=locate, fingerprint=fingerprint,
        params={"corruption_seed": 0}, transform_defaults=cls.REAL_TRANSFORM, **facts,
    ))


def _register() -> None:
    for name, classes, num in (("cifar10", cls.CIFAR10_CLASSES, 10), ("cifar100", None, 100)):
        own = {s: _own(lambda split, root, n=name: cls.load_cifar(n, split, root), lambda split, root, n=name: cls.locate_cifar(n, split, root),
                       lambda split, root, n=name: cls.fingerprint_cifar(n, split, root), s)
               for s in ("train", "test")}
        shifted = shifts.cifar_c_sources(name)
        if name == "cifar10":
            for v in ("v6", "v4"):
                shifted[f"cifar10.1-{v}"] = SplitSource(
                    lambda data_root=None, v=v, **_: shifts.load_cifar101(v, data_root),
                    lambda data_root=None, v=v, **_: shifts.cifar101_files(v, data_root),
                    lambda data_root=None, v=v, **_: files_fingerprint(shifts.cifar101_files(v, data_root), resolve_root(data_root)),
                )
            shifted["stl10"] = SplitSource(
                lambda data_root=None, **_: shifts.stl_as_cifar10(data_root), lambda data_root=None, **_: cls.locate_stl10("test", data_root),
                lambda data_root=None, **_: digest({"stl10_test": cls.fingerprint_stl10("test", data_root), "map": shifts.STL_TO_CIFAR}),
            )
        extra = ("cifar10.1-v6", "stl10") if name == "cifar10" else ()
        display = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[name]
        register_table(
            name, own, shifted, ("test", *extra, *shifts.corruption_split_names("c", shifts.BENCHMARK_CORRUPTIONS)),
            task="classification", num_classes=num, classes=classes,
            names_from_disk=None if classes else cls.cifar_names(name),
            same_images=("c/*/*",),  # CIFAR-10/100-C: each severity block is the test set in its order
            description=f"{display} (python pickle batches), 32×32; shifts: {display}-C"
            + (", CIFAR-10.1, STL-10 (9 shared classes)" if extra else "") + ", generated corruptions",
            facts={"stl10_to_cifar10": shifts.STL_TO_CIFAR} if extra else {},
        )
    cifar_as_stl = SplitSource(
        lambda data_root=None, **_: shifts.cifar10_as_stl(data_root), lambda data_root=None, **_: cls.locate_cifar("cifar10", "test", data_root),
        lambda data_root=None, **_: digest({"cifar10_test": cls.fingerprint_cifar("cifar10", "test", data_root), "map": shifts.CIFAR_TO_STL}),
    )
    register_table(
        "stl10", {s: _own(cls.load_stl10, cls.locate_stl10, cls.fingerprint_stl10, s) for s in ("train", "test")}, {"cifar10": cifar_as_stl}, ("test", "cifar10"),
        task="classification", num_classes=10, classes=cls.STL10_CLASSES,
        description="STL-10 (binary), labelled train/test, 96×96; shifts: CIFAR-10 test (9 shared classes), generated corruptions",
        facts={"cifar10_to_stl10": shifts.CIFAR_TO_STL},
    )
    register_table(
        "tiny_imagenet", {s: _own(cls.load_tiny, cls.locate_tiny, cls.fingerprint_tiny, s) for s in ("train", "val")}, shifts.tiny_c_sources(),
        ("val", *shifts.corruption_split_names("c", shifts.BENCHMARK_CORRUPTIONS)),
        task="classification", num_classes=200, test_split="val", names_from_disk=cls.tiny_names,
        description="Tiny-ImageNet-200 (folders + val_annotations.txt), 64×64, classes = sorted wnids; shifts: Tiny-ImageNet-C, generated corruptions",
    )
    register_table(
        "imagenet", {s: _own(cls.load_imagenet, cls.locate_imagenet, cls.fingerprint_imagenet, s) for s in ("train", "val")}, shifts.imagenet_shift_sources(),
        ("val", "v2", "sketch", "r", "a"),
        task="classification", num_classes=1000, classes=cls.imagenet_names(), test_split="val",
        description="ImageNet-1k (ILSVRC2012 folders; devkit val labels); shifts: V2, Sketch, R/A (200-class subsets), C, generated",
        facts={"imagenet_r_classes": len(shifts.imagenet_subset("r")), "imagenet_a_classes": len(shifts.imagenet_subset("a"))},
    )


_register()
