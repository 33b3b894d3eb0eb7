"""The DINOv2 ViT as the official code computes it, on top of timm's VisionTransformer.

Separate from :mod:`bench.models.backbones` (the registry) because subclassing timm's model
imports timm and torch: reading a suite must not.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer


INTERPOLATE_OFFSET = 0.1  # the official DINOv2 code's scale-factor offset


def official_resample(pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int) -> torch.Tensor:
    """Position embeddings for a ``grid`` of patches, resampled the way the official DINOv2 code
    does it: bicubic, no antialiasing, and a *scale factor* of ((h + 0.1)/M, (w + 0.1)/M) rather
    than an explicit output size (M = the checkpoint's grid side). timm's own resampling uses the
    size and antialiasing, which gives patch tokens up to ~0.15 apart at 224 px; with this, a
    checkpoint behaves as DINOv2 at every resolution, not only at 518 px."""
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = round(patches.shape[1] ** 0.5)
    if side * side != patches.shape[1]:
        raise ValueError(f"position embeddings for {patches.shape[1]} patches are not a square grid")
    h, w = grid
    if (h, w) == (side, side):
        return pos_embed
    dim = patches.shape[-1]
    square = patches.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scale = ((h + INTERPOLATE_OFFSET) / side, (w + INTERPOLATE_OFFSET) / side)
    resized = torch.nn.functional.interpolate(square, scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(resized.shape[-2:]) != (h, w):
        raise ValueError(f"resampling {side}×{side} positions gave {tuple(resized.shape[-2:])}, expected {(h, w)}")
    patches = resized.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)



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
