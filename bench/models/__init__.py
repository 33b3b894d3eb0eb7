"""Backbones (timm: DINOv2 and any ``timm:<model>``), heads and the classifier and segmenter that join them.

The registry (:data:`BACKBONES`) imports without torch; the modules are imported on first use
(``bench.models.SplitViTClassifier``), so validating a suite does not pay for timm and torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from bench.models.backbones import (
    BACKBONES, RANDOM_INIT_LABEL, LoadedBackbone, backbone_entry, check_backbone_name, create_backbone, is_timm_name,
    official_state_dict,
)

_LAZY = {
    "SplitClassifier": "bench.models.classifier",
    "SplitViTClassifier": "bench.models.classifier",
    "ClsMeanPatchLinearHead": "bench.models.heads",
    "LinearHead": "bench.models.heads",
    "LinearSegHead": "bench.models.heads",
    "Segmenter": "bench.models.segmenter",
    "ViTSegmenter": "bench.models.segmenter",
    "FAMILIES": "bench.models.families",
}

__all__ = ["BACKBONES", "RANDOM_INIT_LABEL", "LoadedBackbone", "backbone_entry", "check_backbone_name", "create_backbone", "is_timm_name",
           "official_state_dict", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.models' has no attribute {name!r}")
