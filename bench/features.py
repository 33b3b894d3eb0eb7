"""Model inputs for a split: transformed pixels, or the frozen prefix's tokens computed once.

In-memory splits (:class:`ImageArrays`) are transformed a whole batch at a time; splits decoded
from files go through a DataLoader with worker processes. Augmented training draws each sample's
randomness from a generator keyed by (seed, epoch, sample index), so batches are identical for any
worker count.

With ``trainable_blocks = k`` and no augmentation, the first blocks see the same pixels every
epoch, so their output is computed once per image and reused by every run that shares the
backbone (both methods, all seeds). Kept in memory, least recently used splits evicted first,
within a byte budget (``$BENCH_PREFIX_CACHE_GB``, default 8) that a split must fit to be cached
at all; otherwise the model runs in full each step.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Hashable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from bench.data import ImageArrays, Split, to_model_input
from bench.data.transforms import ClassificationTransform
from bench.models import SplitViTClassifier
from bench.seeding import generator

_CACHE: OrderedDict[Hashable, Tensor] = OrderedDict()  # least recently used first
AugmentKey = tuple[int, int]  # (seed, epoch)


def prefix_cache_budget_bytes() -> float:
    return float(os.environ.get("BENCH_PREFIX_CACHE_GB", "8")) * 2**30


class _Samples(Dataset):
    """One transformed sample per index (what DataLoader workers run)."""

    def __init__(self, split: Split, transform: ClassificationTransform, augment: AugmentKey | None) -> None:
        self.split, self.transform, self.augment = split, transform, augment

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> Tensor:
        x = to_model_input(self.split.image(i))
        if self.augment is None:
            return self.transform.eval(x)
        return self.transform.train(x, sample_generator(self.augment, i))


def sample_generator(augment: AugmentKey, i: int) -> torch.Generator:
    """Sample ``i``'s augmentation randomness for (seed, epoch): the same whoever loads it."""
    seed, epoch = augment
    return generator(seed, "augment", epoch, i)


def load_batches(dataset: Dataset, indices: Sequence[Tensor], num_workers: int) -> Iterator:
    """One collated batch per index tensor, in order: in this process, or by DataLoader workers."""
    if num_workers == 0:
        yield from (default_collate([dataset[int(i)] for i in index]) for index in indices)
    else:
        yield from DataLoader(dataset, batch_sampler=[index.tolist() for index in indices], num_workers=num_workers)


class SplitInputs:
    """A split as the model consumes it, batch by batch."""

    def __init__(self, split: Split, transform: ClassificationTransform, num_workers: int = 0, tokens: Tensor | None = None) -> None:
        self.split, self.transform, self.num_workers, self.tokens = split, transform, num_workers, tokens

    def __len__(self) -> int:
        return len(self.split)

    @property
    def labels(self) -> np.ndarray:
        return self.split.labels

    def batches(self, indices: Sequence[Tensor], augment: AugmentKey | None = None) -> Iterator[Tensor]:
        """Inputs for each index tensor in ``indices``, in order (augmented when ``augment`` is set)."""
        if self.tokens is not None:
            yield from (self.tokens[index] for index in indices)
        elif isinstance(self.split, ImageArrays) and augment is None:
            yield from (self.transform.eval(to_model_input(self.split.images[index.numpy()])) for index in indices)
        else:
            yield from load_batches(_Samples(self.split, self.transform, augment), indices, self.num_workers)

    def sequential(self, batch_size: int) -> Iterator[Tensor]:
        yield from self.batches([torch.arange(s, min(s + batch_size, len(self))) for s in range(0, len(self), batch_size)])


def prefix_cache_fits(n: int, model: SplitViTClassifier, img_size: int) -> bool:
    tokens = (img_size // 14) ** 2 + model.vit.num_prefix_tokens
    return n * tokens * model.vit.embed_dim * 4 <= prefix_cache_budget_bytes()


@torch.no_grad()
def prefix_tokens(model: SplitViTClassifier, inputs: SplitInputs, batch_size: int, device: torch.device, key: Hashable) -> Tensor:
    """Tokens after the frozen blocks for every image of a split (cached under ``key``)."""
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    was_training = model.training
    model.eval()
    chunks = [model.embed(x.to(device)).float().cpu() for x in inputs.sequential(batch_size)]
    model.train(was_training)
    tokens = torch.cat(chunks)
    _CACHE[key] = tokens
    # bounded by bytes, not by a count of splits: a run with many small shift splits (e.g. 5
    # severities × several corruptions) must not evict its own train split on every epoch
    while len(_CACHE) > 1 and sum(t.numel() * t.element_size() for t in _CACHE.values()) > prefix_cache_budget_bytes():
        _CACHE.popitem(last=False)
    return tokens


def clear_cache() -> None:
    _CACHE.clear()
