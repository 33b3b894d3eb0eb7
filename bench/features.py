"""Model inputs for a split: normalised images, or the frozen prefix's tokens computed once.

With ``trainable_blocks = k`` and no augmentation, the first blocks see the same pixels every
epoch, so their output is computed once per image and reused by every run that shares the
backbone (both methods, all seeds). Kept in memory (an LRU of a few splits): it is exact, and
disk space on small machines is not assumed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import ImageArrays, to_model_input
from bench.models import SplitViTClassifier

_CACHE: OrderedDict[Hashable, Tensor] = OrderedDict()
_CACHE_SPLITS = 8


def image_batch(arrays: ImageArrays, index: Tensor, img_size: int) -> Tensor:
    x = to_model_input(arrays.images[index.numpy()])
    if x.shape[-1] != img_size or x.shape[-2] != img_size:
        x = F.interpolate(x, size=(img_size, img_size), mode="bicubic", antialias=True, align_corners=False)
    return x


@torch.no_grad()
def prefix_tokens(model: SplitViTClassifier, arrays: ImageArrays, img_size: int, batch_size: int, device: torch.device, key: Hashable) -> Tensor:
    """Tokens after the frozen blocks for every image of a split (cached under ``key``)."""
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(arrays), batch_size):
        index = torch.arange(start, min(start + batch_size, len(arrays)))
        chunks.append(model.embed(image_batch(arrays, index, img_size).to(device)).float().cpu())
    model.train(was_training)
    tokens = torch.cat(chunks)
    _CACHE[key] = tokens
    while len(_CACHE) > _CACHE_SPLITS:
        _CACHE.popitem(last=False)
    return tokens


def clear_cache() -> None:
    _CACHE.clear()
