"""Backbone + head as one classifier, split into a frozen prefix and a trainable suffix.

Fine-tuning "the last k units" is common on small budgets; splitting the backbone where the frozen
part ends lets the trainer compute the prefix once per image and cache it (no augmentation),
which is what makes the CPU demo fit in minutes. ``trainable_blocks=None`` is full fine-tuning
(the prefix is then only the input), ``0`` freezes the whole backbone (a linear probe). What a
unit is (a ViT block, a ConvNeXt or ResNet stage) and what the head reads is the backbone
family's answer (:mod:`bench.models.families`).
"""

from __future__ import annotations

from torch import Tensor, nn

from bench.models.families import Family, family_of


class SplitClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, trainable_blocks: int | None = None, family: Family | None = None) -> None:
        super().__init__()
        family = family or family_of(backbone)
        depth = len(family.units(backbone))
        if trainable_blocks is not None and not 0 <= trainable_blocks <= depth:
            raise ValueError(f"model.trainable_blocks must be between 0 and {depth} (or 'all'), got {trainable_blocks}")
        self.family = family
        self.add_module(family.module_key, backbone)  # 'vit' for ViTs: the state-dict keys runs have always had
        self.depth = depth
        self.split = 0 if trainable_blocks is None else depth - trainable_blocks
        self.full_finetune = trainable_blocks is None
        self.head = family.head(backbone, num_classes)
        for p in self.frozen_parameters():
            p.requires_grad_(False)

    @property
    def encoder(self) -> nn.Module:
        """The backbone (held as ``self.vit`` for ViTs, ``self.backbone`` for conv nets)."""
        return self._modules[self.family.module_key]

    def frozen_modules(self) -> list[nn.Module]:
        """Modules kept frozen and in eval mode: the stem and the first ``split`` units (and the
        final norm when no unit trains)."""
        if self.full_finetune:
            return []
        f, m = self.family, self.encoder
        tail = f.tail_modules(m) if self.split == self.depth else []
        return [*f.stem_modules(m), *f.units(m)[: self.split], *tail]

    def frozen_parameters(self) -> list[nn.Parameter]:
        f, m = self.family, self.encoder
        unused = [p for mod in f.unused_modules(m) for p in mod.parameters()]
        if self.full_finetune:
            return unused
        return [p for mod in self.frozen_modules() for p in mod.parameters()] + f.stem_parameters(m) + unused

    def embed(self, images: Tensor) -> Tensor:
        """The input of the first trainable unit (the cacheable part when frozen)."""
        return self.family.run_units(self.encoder, self.family.stem(self.encoder, images), 0, self.split)

    def final_tokens(self, x: Tensor, embedded: bool = False) -> Tensor:
        """The backbone's final features (ViT: normalised tokens; conv: the last map), what the
        head and the transfer probes read."""
        prefix = x if embedded else self.embed(x)
        return self.family.finish(self.encoder, self.family.run_units(self.encoder, prefix, self.split, self.depth))

    def probe_features(self, final: Tensor) -> tuple[Tensor, Tensor]:
        """(global, pooled) features per image for kNN and Softmax Regression, from
        :meth:`final_tokens` (ViT: CLS and [CLS, mean patch]; conv: the global pooling, twice)."""
        return self.family.probe_features(self.encoder, final)

    def probe_dims(self) -> tuple[int, int]:
        return self.family.probe_dims(self.encoder)

    def prefix_numel(self, img_size: int) -> int:
        """Floats per image the frozen-prefix cache holds."""
        return self.family.prefix_numel(self.encoder, img_size, self.split)

    def from_embedded(self, tokens: Tensor) -> Tensor:
        """Logits from prefix outputs: the trainable units, final norm and head."""
        return self.head(self.family.head_input(self.encoder, self.final_tokens(tokens, embedded=True)))

    def forward(self, x: Tensor, embedded: bool = False) -> Tensor:
        """Logits from images, or from prefix outputs when ``embedded`` (one entry point, so
        wrappers such as DistributedDataParallel see every training forward)."""
        return self.from_embedded(x if embedded else self.embed(x))

    def train(self, mode: bool = True) -> "SplitClassifier":
        super().train(mode)
        for module in self.frozen_modules():  # frozen parts stay in eval mode (no dropout, BatchNorm statistics kept)
            module.eval()
        return self


SplitViTClassifier = SplitClassifier  # the name callers used before conv backbones
