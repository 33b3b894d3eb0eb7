"""Backbone families: how the harness drives one kind of timm model.

The classifier (:class:`bench.models.classifier.SplitClassifier`) and the segmenter
(:class:`bench.models.segmenter.Segmenter`) are written once; what differs between a ViT and a ConvNeXt
is asked of the model's family adapter, found by the model's timm class:

- where the model splits into *units* that ``model.trainable_blocks`` counts (ViT: transformer
  blocks; ConvNeXt and ResNet: stages), and what lies before them (stem) and after (final norm);
- the head's input (ViT: [CLS, mean patch] of the final norm, the DINOv2 linear protocol; conv nets:
  the network's own global pooling, ``forward_head(pre_logits=True)``);
- the feature maps a segmentation head reads (ViT: normalised patch tokens of the last blocks;
  conv nets: the last stage's map);
- which image sides work (a multiple of the patch size; of the total stride for conv nets).

Adapters hold no state: one instance per family, registered in :data:`FAMILIES`. A model whose
class no family accepts is refused when a suite is validated (:func:`family_of`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from timm.models.convnext import ConvNeXt
from timm.models.eva import Eva
from timm.models.resnet import ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from bench.models.heads import ClsMeanPatchLinearHead, LinearHead
from bench.registry import Registry


class Family:
    """The questions the classifier and segmenter ask about a backbone (see the module docstring)."""

    name = ""  # its FAMILIES name
    model_classes: tuple[type, ...] = ()
    unit = "blocks"  # what model.trainable_blocks counts, for messages and docs
    size_word = "patch size"  # what image sides must be a multiple of
    module_key = "backbone"  # the attribute (state-dict prefix) the classifier holds the backbone under
    description = ""

    def accepts(self, model: nn.Module) -> bool:
        return isinstance(model, self.model_classes)

    def create_kwargs(self, img_size: int) -> dict:
        """Extra ``timm.create_model`` arguments for a run at ``img_size``."""
        return {}

    def unsupported(self, model: nn.Module) -> str | None:
        """Why this family's path cannot drive ``model`` although its class matches, or None."""
        return None

    def units(self, model: nn.Module) -> Sequence[nn.Module]:
        raise NotImplementedError

    def stem_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules before the first unit (frozen whenever any unit is)."""
        raise NotImplementedError

    def stem_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters before the first unit that belong to no stem module (tokens, positions)."""
        return []

    def tail_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules after the last unit that the harness uses (final norm): frozen only when no unit trains."""
        return []

    def unused_modules(self, model: nn.Module) -> list[nn.Module]:
        """The model's own classifier parts the harness never calls: always frozen (an unused
        trainable parameter would stall DistributedDataParallel and be decayed for nothing)."""
        return []

    def stem(self, model: nn.Module, images: Tensor) -> Tensor:
        raise NotImplementedError

    def run_units(self, model: nn.Module, x: Tensor, start: int, stop: int) -> Tensor:
        for unit in self.units(model)[start:stop]:
            x = unit(x)
        return x

    def finish(self, model: nn.Module, x: Tensor) -> Tensor:
        """The last unit's output → the backbone's final features (after its final norm)."""
        return x

    def head(self, model: nn.Module, num_classes: int) -> nn.Module:
        """A fresh linear head that takes :meth:`head_input`."""
        raise NotImplementedError

    def head_input(self, model: nn.Module, final: Tensor) -> Tensor:
        return final

    def probe_features(self, model: nn.Module, final: Tensor) -> tuple[Tensor, Tensor]:
        """(global feature, pooled feature) of each image for the transfer probes (kNN, SR)."""
        raise NotImplementedError

    def probe_dims(self, model: nn.Module) -> tuple[int, int]:
        """Widths of :meth:`probe_features`' two features."""
        raise NotImplementedError

    def feature_maps(self, model: nn.Module, images: Tensor, layers: int) -> list[Tensor]:
        """(N, C, h, w) maps for a segmentation head: the last ``layers`` units' outputs."""
        raise NotImplementedError

    def map_channels(self, model: nn.Module) -> int:
        raise NotImplementedError

    def max_seg_layers(self, model: nn.Module) -> int:
        return len(self.units(model))

    def size_multiple(self, model: nn.Module) -> int:
        """Image sides must be multiples of this (validated before a run; segmentation pads to it)."""
        raise NotImplementedError

    def prefix_numel(self, model: nn.Module, img_size: int, split: int) -> int:
        """Floats per image after the stem and the first ``split`` units (the frozen-prefix cache's size)."""
        was = [m.training for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                device = next(model.parameters()).device
                x = self.run_units(model, self.stem(model, torch.zeros(1, 3, img_size, img_size, device=device)), 0, split)
        finally:
            for m, mode in zip(model.modules(), was):
                m.training = mode
        return x[0].numel()


FAMILIES: Registry[Family] = Registry("backbone family")


def family_of(model: nn.Module) -> Family:
    """The family whose adapter accepts ``model``; ValueError naming the supported ones otherwise."""
    for name in FAMILIES:
        family = FAMILIES.get(name)
        if family.accepts(model):
            return family
    raise ValueError(f"no backbone family handles timm's {type(model).__name__} (supported: {supported()})")


def supported() -> str:
    return ", ".join(f"{n} ({FAMILIES.get(n).description})" for n in FAMILIES)


class ViTFamily(Family):
    """timm VisionTransformer (DINOv2, DeiT, MAE, CLIP, plain ViTs): the DINOv2 path, unchanged.

    Units are the transformer blocks; the stem is the patch embedding with the class/register
    tokens and position embeddings; the head reads [CLS, mean patch token] after the final norm."""

    name = "vit"
    model_classes = (VisionTransformer,)
    description = "timm VisionTransformer: DINOv2, DeiT, MAE, CLIP, ViT"
    module_key = "vit"  # the state-dict prefix runs have always had

    def unsupported(self, model: nn.Module) -> str | None:
        if getattr(model, "cls_token", None) is None:  # e.g. SigLIP, global-average-pool ViTs
            return "it has no class token, and the ViT head reads [CLS, mean patch token]"
        return None

    def create_kwargs(self, img_size: int) -> dict:
        # the checkpoint's positions are resampled to img_size when loaded; dynamic: other sizes
        # (segmentation windows, test resizes) resample per input
        return dict(img_size=img_size, dynamic_img_size=True)

    def units(self, model: nn.Module) -> Sequence[nn.Module]:
        return model.blocks

    def stem_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.patch_embed, model.pos_drop, model.patch_drop, model.norm_pre]

    def stem_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        names = ("cls_token", "reg_token", "dist_token", "pos_embed")
        return [p for p in (getattr(model, n, None) for n in names) if isinstance(p, nn.Parameter)]

    def tail_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.norm]

    def unused_modules(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in (getattr(model, n, None) for n in ("attn_pool", "fc_norm", "head", "head_dist")) if isinstance(m, nn.Module)]

    def stem(self, model: nn.Module, images: Tensor) -> Tensor:
        return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))

    def finish(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.norm(x)

    def head(self, model: nn.Module, num_classes: int) -> nn.Module:
        return ClsMeanPatchLinearHead(model.embed_dim, num_classes, model.num_prefix_tokens)

    def probe_features(self, model: nn.Module, final: Tensor) -> tuple[Tensor, Tensor]:
        return final[:, 0], torch.cat([final[:, 0], final[:, model.num_prefix_tokens :].mean(1)], -1)

    def probe_dims(self, model: nn.Module) -> tuple[int, int]:
        return model.embed_dim, 2 * model.embed_dim

    def feature_maps(self, model: nn.Module, images: Tensor, layers: int) -> list[Tensor]:
        depth = len(model.blocks)
        indices = list(range(depth - layers, depth))
        return model.forward_intermediates(images, indices=indices, norm=True, output_fmt="NCHW", intermediates_only=True)

    def map_channels(self, model: nn.Module) -> int:
        return model.embed_dim

    def size_multiple(self, model: nn.Module) -> int:
        ph, pw = model.patch_embed.patch_size
        return math.lcm(ph, pw)

    def prefix_numel(self, model: nn.Module, img_size: int, split: int) -> int:
        # tokens × width, the same at every split (no model call: the stem keeps the token count)
        side = img_size // self.size_multiple(model)
        return (side * side + model.num_prefix_tokens) * model.embed_dim


class EvaFamily(ViTFamily):
    """timm Eva (EVA-01/EVA-02, EVA-CLIP): the ViT path with rotary position embeddings, which
    each block is handed for the current patch grid (recomputed from the token count, so
    prefix-cached tokens continue exactly)."""

    name = "eva"
    model_classes = (Eva,)
    description = "timm Eva: EVA-01, EVA-02, EVA-CLIP"

    def stem_modules(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in (model.patch_embed, model.pos_drop, model.patch_drop, model.norm_pre) if isinstance(m, nn.Module)]

    def stem(self, model: nn.Module, images: Tensor) -> Tensor:
        tokens, _ = model._pos_embed(model.patch_embed(images))
        return model.norm_pre(tokens)

    def run_units(self, model: nn.Module, x: Tensor, start: int, stop: int) -> Tensor:
        rope = None
        if model.rope is not None:
            side = math.isqrt(x.shape[1] - model.num_prefix_tokens)
            if side * side != x.shape[1] - model.num_prefix_tokens:
                raise ValueError(f"{x.shape[1] - model.num_prefix_tokens} patch tokens are not a square grid")
            rope = model.rope.get_embed(shape=(side, side))
        mixed = getattr(model, "rope_mixed", False)
        for i in range(start, stop):
            x = model.blocks[i](x, rope=rope[i] if mixed and rope is not None else rope)
        return x


class ConvFamily(Family):
    """Convolutional networks: units are stages, the head reads the network's own global pooling,
    segmentation reads the last stage's map. Subclasses name the modules (data, not code)."""

    unit = "stages"
    size_word = "total stride"
    stem_names: tuple[str, ...] = ()
    unit_names: tuple[str, ...] | None = None  # None: model.stages
    finish_name: str | None = None
    tail_names: tuple[str, ...] = ()
    unused_names: tuple[str, ...] = ()

    def units(self, model: nn.Module) -> Sequence[nn.Module]:
        return model.stages if self.unit_names is None else [getattr(model, n) for n in self.unit_names]

    def stem_modules(self, model: nn.Module) -> list[nn.Module]:
        return [getattr(model, n) for n in self.stem_names]

    def tail_modules(self, model: nn.Module) -> list[nn.Module]:
        return [getattr(model, n) for n in self.tail_names]

    def unused_modules(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in (getattr(model, n, None) for n in self.unused_names) if isinstance(m, nn.Module)]

    def stem(self, model: nn.Module, images: Tensor) -> Tensor:
        for module in self.stem_modules(model):
            images = module(images)
        return images

    def finish(self, model: nn.Module, x: Tensor) -> Tensor:
        return getattr(model, self.finish_name)(x) if self.finish_name else x

    def head(self, model: nn.Module, num_classes: int) -> nn.Module:
        return LinearHead(self.pooled_dim(model), num_classes)

    def pooled_dim(self, model: nn.Module) -> int:
        return getattr(model, "head_hidden_size", None) or model.num_features

    def probe_dims(self, model: nn.Module) -> tuple[int, int]:
        return self.pooled_dim(model), self.pooled_dim(model)

    def head_input(self, model: nn.Module, final: Tensor) -> Tensor:
        return model.forward_head(final, pre_logits=True)

    def probe_features(self, model: nn.Module, final: Tensor) -> tuple[Tensor, Tensor]:
        pooled = model.forward_head(final, pre_logits=True)
        return pooled, pooled

    def feature_maps(self, model: nn.Module, images: Tensor, layers: int) -> list[Tensor]:
        if layers != 1:
            raise ValueError(f"seg.layers: {layers}, but a {self.unit}-based backbone gives its last stage's map only (seg.layers: 1)")
        return [self.finish(model, self.run_units(model, self.stem(model, images), 0, len(self.units(model))))]

    def map_channels(self, model: nn.Module) -> int:
        return model.num_features

    def max_seg_layers(self, model: nn.Module) -> int:
        return 1  # stages differ in resolution and width: no concatenation of the last few

    def size_multiple(self, model: nn.Module) -> int:
        return int(model.feature_info[-1]["reduction"])


class ConvNeXtFamily(ConvFamily):
    """timm ConvNeXt (v1, v2): stem, 4 stages; the head pools and applies its LayerNorm (``head.norm``)."""

    name = "convnext"
    model_classes = (ConvNeXt,)
    description = "timm ConvNeXt"
    stem_names = ("stem",)
    finish_name = "norm_pre"
    tail_names = ("norm_pre", "head")  # head.norm: the final norm, applied after pooling


class ResNetFamily(ConvFamily):
    """timm ResNet (and ResNet-D/-RS variants): stem conv + max-pool, layer1 … layer4, global average pool."""

    name = "resnet"
    model_classes = (ResNet,)
    description = "timm ResNet"
    stem_names = ("conv1", "bn1", "act1", "maxpool")
    unit_names = ("layer1", "layer2", "layer3", "layer4")
    unused_names = ("fc",)


for _family in (ViTFamily(), EvaFamily(), ConvNeXtFamily(), ResNetFamily()):
    FAMILIES.add(_family.name, _family)
