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

    def forward(self, tokens: Tensor) -> Tensor:
        cls = tokens[:, 0]
        patches = tokens[:, self.num_prefix_tokens :].mean(dim=1)
        return self.linear(torch.cat([cls, patches], dim=-1))
