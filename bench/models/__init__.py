"""Backbones (timm DINOv2), heads and the classifier that joins them."""

from bench.models.backbones import BACKBONES, RANDOM_INIT_LABEL, LoadedBackbone, create_backbone, official_state_dict
from bench.models.classifier import SplitViTClassifier
from bench.models.heads import ClsMeanPatchLinearHead, LinearSegHead, ViTSegmenter

__all__ = [
    "BACKBONES", "RANDOM_INIT_LABEL", "LoadedBackbone", "create_backbone", "official_state_dict",
    "SplitViTClassifier", "ClsMeanPatchLinearHead", "LinearSegHead", "ViTSegmenter",
]
