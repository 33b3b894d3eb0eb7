"""The DINOv2 ViT as the official code computes it, on top of timm's VisionTransformer.

Separate from :mod:`bench.models.backbones` (the registry) because subclassing timm's model
imports timm and torch: reading a suite must not.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from bench.models.backbones import official_resample


class DINOv2ViT(VisionTransformer):
    """timm's VisionTransformer holding the checkpoint's own 37 × 37 position embeddings (the
    trainable parameter, as in the official model) and resampling them per input with
    :func:`official_resample`. Any multiple of 14 per side is accepted."""

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape  # dynamic_img_size: patch tokens arrive as (B, H, W, C)
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        pos_embed = official_resample(self.pos_embed, (h, w), prefix)
        x = x.view(b, -1, c)
        to_cat = [t.expand(b, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.no_embed_class:  # register variants: positions for patches only (CLS position folded into cls_token)
            x = x + pos_embed
            return self.pos_drop(torch.cat([*to_cat, x], dim=1))
        return self.pos_drop(torch.cat([*to_cat, x], dim=1) + pos_embed)
