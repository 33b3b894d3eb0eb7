"""Backbone + head as one classifier, split into a frozen prefix and a trainable suffix.

Fine-tuning "the last k blocks" is common on small budgets; splitting the ViT where the frozen
part ends lets the trainer compute the prefix once per image and cache it (no augmentation),
which is what makes the CPU demo fit in minutes. ``trainable_blocks=None`` is full fine-tuning
(the prefix is then only the input), ``0`` freezes the whole backbone (a linear probe).
"""

from __future__ import annotations

from torch import Tensor, nn

from bench.models.heads import ClsMeanPatchLinearHead


class SplitViTClassifier(nn.Module):
    def __init__(self, vit: nn.Module, num_classes: int, trainable_blocks: int | None = None) -> None:
        super().__init__()
        depth = len(vit.blocks)
        if trainable_blocks is not None and not 0 <= trainable_blocks <= depth:
            raise ValueError(f"model.trainable_blocks must be between 0 and {depth} (or 'all'), got {trainable_blocks}")
        self.vit = vit
        self.split = 0 if trainable_blocks is None else depth - trainable_blocks
        self.full_finetune = trainable_blocks is None
        self.head = ClsMeanPatchLinearHead(vit.embed_dim, num_classes, vit.num_prefix_tokens)
        for p in self.frozen_parameters():
            p.requires_grad_(False)

    def frozen_parameters(self):
        if self.full_finetune:
            return []
        vit = self.vit
        modules = [vit.patch_embed, vit.norm_pre, *vit.blocks[: self.split]]
        params = [p for m in modules for p in m.parameters()]
        params += [p for p in (getattr(vit, n, None) for n in ("cls_token", "reg_token", "pos_embed")) if p is not None]
        if self.split == len(vit.blocks):  # nothing trainable in the backbone: freeze its final norm too
            params += list(vit.norm.parameters())
        return params

    def embed(self, images: Tensor) -> Tensor:
        """Tokens entering the first trainable block (the cacheable part when frozen)."""
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        for block in vit.blocks[: self.split]:
            x = block(x)
        return x

    def final_tokens(self, x: Tensor, embedded: bool = False) -> Tensor:
        """The backbone's normalised output tokens (what the head and transfer probes read)."""
        tokens = x if embedded else self.embed(x)
        for block in self.vit.blocks[self.split :]:
            tokens = block(tokens)
        return self.vit.norm(tokens)

    def from_embedded(self, tokens: Tensor) -> Tensor:
        """Logits from prefix tokens: the trainable blocks, final norm and head."""
        return self.head(self.final_tokens(tokens, embedded=True))

    def forward(self, x: Tensor, embedded: bool = False) -> Tensor:
        """Logits from images, or from prefix tokens when ``embedded`` (one entry point, so
        wrappers such as DistributedDataParallel see every training forward)."""
        return self.from_embedded(x if embedded else self.embed(x))

    def train(self, mode: bool = True) -> "SplitViTClassifier":
        super().train(mode)
        if not self.full_finetune:  # frozen blocks stay in eval mode (no dropout/drop-path noise)
            for block in self.vit.blocks[: self.split]:
                block.eval()
        return self
