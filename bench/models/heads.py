"""Heads on top of DINOv2 tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ClsMeanPatchLinearHead(nn.Module):
    """DINOv2's linear protocol: a linear layer on [CLS token, mean of patch tokens]."""

    def __init__(self, embed_dim: int, num_classes: int, num_prefix_tokens: int) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens  # CLS (+ registers) precede the patch tokens
        self.linear = nn.Linear(2 * embed_dim, num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)  # as DINOv2's linear eval
        nn.init.zeros_(self.linear.bias)
        self.fp32 = False  # logits in float32 even under autocast (see full_precision_head)

    def forward(self, tokens: Tensor) -> Tensor:
        cls = tokens[:, 0]
        patches = tokens[:, self.num_prefix_tokens :].mean(dim=1)
        features = torch.cat([cls, patches], dim=-1)
        if self.fp32:
            with torch.autocast(features.device.type, enabled=False):
                return self.linear(features.float())
        return self.linear(features)


class LinearSegHead(nn.Module):
    """DINOv2's linear segmentation protocol: BatchNorm + 1×1 conv over patch-token feature maps.

    ``in_maps`` (N, D, h, w) maps — the last layer's patch tokens, or the last 4 layers
    concatenated on the channel axis (the "+ms"-free multi-layer option) — give (N, C, h, w)
    logits at the patch grid; :meth:`forward` upsamples them bilinearly to ``size`` (the label
    size), as the protocol scores predictions at full resolution.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

        self.fp32 = False  # logits in float32 even under autocast (see full_precision_head)

    def forward(self, maps: list[Tensor], size: tuple[int, int]) -> Tensor:
        x = torch.cat(maps, dim=1) if len(maps) > 1 else maps[0]
        if self.fp32:
            with torch.autocast(x.device.type, enabled=False):
                logits = self.conv(self.bn(x.float()))
        else:
            logits = self.conv(self.bn(x))
        return nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def full_precision_head(model: nn.Module) -> None:
    """Compute the head in float32 under bf16 autocast. GRPO-RM with μ > 1 divides the current
    policy by the rollout one: a bf16 head adds ~0.4 % noise to ρ, a visible share of ε = 0.2, so
    ratios that should be 1 would clip at random. The backbone stays in bf16."""
    for module in model.modules():
        if isinstance(module, (ClsMeanPatchLinearHead, LinearSegHead)):
            module.fp32 = True


class ViTSegmenter(nn.Module):
    """A DINOv2 ViT + :class:`LinearSegHead`; feature maps come from timm's ``forward_intermediates``
    (final norm applied, as DINOv2's linear segmentation uses normalised patch tokens). Inputs whose
    sides are not multiples of the patch size are centre-padded (as DINOv2's ``CenterPadding``) and
    the logits cropped back. ``trainable_blocks = k`` freezes everything below the last k blocks
    (0: a frozen backbone, the linear protocol proper); None trains all of it."""

    def __init__(self, vit: nn.Module, num_classes: int, layers: int = 1, trainable_blocks: int | None = None) -> None:
        super().__init__()
        self.vit, self.layers = vit, layers
        self.patch = vit.patch_embed.patch_size[0]
        self.head = LinearSegHead(vit.embed_dim * layers, num_classes)
        if trainable_blocks is not None:
            depth = len(vit.blocks)
            frozen = [vit.patch_embed, *vit.blocks[: depth - trainable_blocks]] + ([vit.norm] if trainable_blocks == 0 else [])
            for p in [p for m in frozen for p in m.parameters()]:
                p.requires_grad_(False)
            for name in ("cls_token", "reg_token", "pos_embed"):
                if getattr(vit, name, None) is not None:
                    getattr(vit, name).requires_grad_(False)

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        depth = len(self.vit.blocks)
        indices = list(range(depth - self.layers, depth))
        return self.vit.forward_intermediates(images, indices=indices, norm=True, output_fmt="NCHW", intermediates_only=True)

    def forward(self, images: Tensor, embedded: bool = False) -> Tensor:
        h, w = images.shape[-2:]
        ph, pw = (-h) % self.patch, (-w) % self.patch
        if ph or pw:
            images = nn.functional.pad(images, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        logits = self.head(self.feature_maps(images), size=tuple(images.shape[-2:]))
        return logits[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
