"""Datasets, registered by name in :data:`DATASETS`. Importing this package registers them all."""

from bench.data.base import DATASETS, DatasetEntry, ImageArrays, to_model_input
from bench.data import composites as _composites  # noqa: F401  (registers fmnist_composites)
from bench.data import fashion_mnist as _fashion_mnist  # noqa: F401  (registers fashion_mnist)

__all__ = ["DATASETS", "DatasetEntry", "ImageArrays", "to_model_input"]
