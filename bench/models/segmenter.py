"""A backbone + :class:`~bench.models.heads.LinearSegHead`: DINOv2's linear segmentation protocol
on any backbone family.

Feature maps are the family's (:meth:`bench.models.families.Family.feature_maps`): for ViTs timm's
``forward_intermediates`` of the last ``layers`` blocks, final norm applied, as DINOv2's linear
segmentation uses normalised patch tokens; for conv nets the last stage's map. Inputs whose sides
are not multiples of the patch size (the total stride for conv nets) are centre-padded (as
DINOv2's ``CenterPadding``) and the logits cropped back. ``trainable_blocks = k`` freezes
everything below the last k units (0: a frozen backbone, the linear protocol proper); None trains
all of it.
"""

from __future__ import annotations

from torch import Tensor, nn

from bench.models.families import Family, family_of
from bench.models.heads import LinearSegHead


class Segmenter(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, layers: int = 1, trainable_blocks: int | None = None,
                 family: Family | None = None) -> None:
        super().__init__()
        family = family or family_of(backbone)
        self.family = family
        self.add_module(family.module_key, backbone)
        self.layers = layers
        self.patch = family.size_multiple(backbone)
        self.head = LinearSegHead(family.map_channels(backbone) * layers, num_classes)
        self.trainable_blocks = trainable_blocks
        frozen = [p for m in self.frozen_modules() for p in m.parameters()]
        frozen += family.stem_parameters(backbone) if trainable_blocks is not None else []
        for p in frozen + [p for m in family.unused_modules(backbone) for p in m.parameters()]:
            p.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and all but the last ``trainable_blocks`` units (and the final norm at 0);
        asked each time, so modules swapped later (SyncBatchNorm) are the ones kept in eval mode."""
        if self.trainable_blocks is None:
            return []
        f, m = self.family, self.encoder
        units = f.units(m)
        tail = f.tail_modules(m) if self.trainable_blocks == 0 else []
        return [*f.stem_modules(m), *units[: len(units) - self.trainable_blocks], *tail]

    @property
    def encoder(self) -> nn.Module:
        return self._modules[self.family.module_key]

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        return self.family.feature_maps(self.encoder, images, self.layers)

    def forward(self, images: Tensor, embedded: bool = False) -> Tensor:
        h, w = images.shape[-2:]
        ph, pw = (-h) % self.patch, (-w) % self.patch
        if ph or pw:
            images = nn.functional.pad(images, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        logits = self.head(self.feature_maps(images), size=tuple(images.shape[-2:]))
        return logits[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]

    def train(self, mode: bool = True) -> "Segmenter":
        super().train(mode)
        for module in self.frozen_modules():  # frozen parts stay in eval mode (BatchNorm statistics kept)
            module.eval()
        return self


ViTSegmenter = Segmenter  # the name callers used before conv backbones
