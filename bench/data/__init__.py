"""Datasets, registered by name in :data:`DATASETS`. Importing this package registers them all."""

from bench.data.base import DATASETS, DatasetEntry, ImageArrays, ImageFiles, Split, to_model_input
from bench.data.layout import DatasetError
from bench.data import composites as _composites  # noqa: F401  (registers fmnist_composites)
from bench.data import fashion_mnist as _fashion_mnist  # noqa: F401  (registers fashion_mnist)
from bench.data import catalog as _catalog  # noqa: F401  (cifar10, cifar100, stl10, tiny_imagenet, imagenet)
from bench.data import segmentation as _segmentation  # noqa: F401  (voc2012, ade20k, coco_stuff164k)
from bench.data import imagefolder as _imagefolder, manifest as _manifest, segfolder as _segfolder  # noqa: F401  (your own data)

__all__ = ["DATASETS", "DatasetEntry", "DatasetError", "ImageArrays", "ImageFiles", "Split", "to_model_input"]
