"""Backbones (timm DINOv2), heads and the classifier that joins them.

The registry (:data:`BACKBONES`) imports without torch; the modules are imported on first use
(``bench.models.SplitViTClassifier``), so validating a suite does not pay for timm and torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from bench.models.backbones import BACKBONES, RANDOM_INIT_LABEL, LoadedBackbone, create_backbone, official_state_dict

_LAZY = {
    "SplitViTClassifier": "bench.models.classifier",
    "ClsMeanPatchLinearHead": "bench.models.heads",
    "LinearSegHead": "bench.models.heads",
    "ViTSegmenter": "bench.models.heads",
}

__all__ = ["BACKBONES", "RANDOM_INIT_LABEL", "LoadedBackbone", "create_backbone", "official_state_dict", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.models' has no attribute {name!r}")
