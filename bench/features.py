"""Model inputs for a split: transformed pixels, or the frozen prefix's tokens computed once.

Batches are built whole by one function (:class:`_Samples`), in this process (``num_workers = 0``)
or by DataLoader worker processes, for in-memory splits (:class:`ImageArrays`, whose eval batches
are resized in one call) and file-backed splits alike. The workers are persistent: one pool per
:class:`SplitInputs` serves every epoch and evaluation pass, since each request carries its own
sample indices and augmentation key; batches are pinned when CUDA is available (the trainer copies
with ``non_blocking=True``). Augmented training draws each sample's randomness from a generator
keyed by (seed, epoch, sample index), so batches are identical for any worker count.

With ``trainable_blocks = k`` and no augmentation, the first blocks see the same pixels every
epoch, so their output is computed once per image and reused by every run that shares the
backbone (both methods, all seeds). Kept in memory, least recently used splits evicted first,
within a byte budget (``$BENCH_PREFIX_CACHE_GB``, default 8) that a split must fit to be cached
at all; otherwise the model runs in full each step.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from bench.data import ImageArrays, Split
from bench.data.base import normalize, to_pixels
from bench.data.transforms import ClassificationTransform
from bench.models import SplitClassifier
from bench.seeding import generator, one_thread

_CACHE: OrderedDict[Hashable, Tensor] = OrderedDict()  # least recently used first
AugmentKey = tuple[int, int]  # (seed, epoch)
BatchKey = tuple[tuple[int, ...], AugmentKey | None]  # (sample indices, augmentation or None for eval)


def prefix_cache_budget_bytes() -> float:
    return float(os.environ.get("BENCH_PREFIX_CACHE_GB", "8")) * 2**30


class _Samples(Dataset):
    """One whole batch per :data:`BatchKey` (what DataLoader workers, or this process, run).

    The key, not the dataset, carries the indices and the (seed, epoch) of augmentation, so the
    copy of this object that persistent workers received when they started serves every later
    epoch. Eval batches of an in-memory split are one batched uint8 resize; everything else is
    transformed image by image (sizes differ, and each augmented sample has its own generator).
    """

    def __init__(self, split: Split, transform: ClassificationTransform) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: BatchKey) -> Tensor:
        index, augment = key
        t = self.transform
        out = batch_buffer((len(index), 3, t.img_size, t.img_size))
        if augment is None and isinstance(self.split, ImageArrays):
            crops = t.eval_pixels(to_pixels(self.split.images[np.asarray(index, dtype=np.int64)]))
        elif augment is None:
            crops = (t.eval_pixels(to_pixels(self.split.image(i))) for i in index)
        else:
            crops = (t.train_pixels(to_pixels(self.split.image(i)), sample_generator(augment, i)) for i in index)
        for k, crop in enumerate(crops):  # one image at a time: a cache-sized float pass each
            normalize(crop, out=out[k], mean=t.mean, std=t.std)
        return out


def batch_buffer(shape: tuple[int, ...]) -> Tensor:
    """An uninitialised float32 batch to fill. In a DataLoader worker it is allocated in shared
    memory, the way ``default_collate`` allocates its stacks there: a batch in ordinary memory
    would be copied into shared memory again to reach the main process (measured: ~1.4× the
    worker's throughput on CIFAR-sized eval batches, where writing 224² floats dominates)."""
    if get_worker_info() is None:
        return torch.empty(shape)
    proto = torch.empty(0)
    return proto.new(proto._typed_storage()._new_shared(math.prod(shape), device="cpu")).resize_(shape)


class _Plan(Sampler):
    """The batch keys of the current pass. A persistent DataLoader keeps its sampler object and
    calls ``iter()`` on it at the start of every pass, so setting :attr:`keys` first is how one
    pool of workers is handed each epoch's batches."""

    def __init__(self) -> None:
        self.keys: list[BatchKey] = []

    def __iter__(self) -> Iterator[BatchKey]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def pin_memory() -> bool:
    """Pin loader output only where there is a GPU to copy it to (pinning costs a host copy)."""
    return torch.cuda.is_available()


def data_loader(dataset: Dataset, **kwargs) -> DataLoader:
    """Every DataLoader of a run: output pinned where there is a GPU, and worker processes that
    leave the job's scheduler signals to this process (:func:`leave_scheduler_signals_to_main`)."""
    return DataLoader(dataset, pin_memory=pin_memory(), worker_init_fn=leave_scheduler_signals_to_main, **kwargs)


def leave_scheduler_signals_to_main(worker_id: int) -> None:
    """DataLoader worker start: ignore the signals submitit handles in the main process.

    Slurm signals every process of a job step, and forked DataLoader workers hold the main
    process's handlers. A worker that ran submitit's time-limit/preemption handler would
    checkpoint and requeue the job as well, racing the main process for submitit's checkpoint
    file: seen as "A temporary saved file already exists" and a job that failed instead of being
    requeued. The main process checkpoints; its workers end with it.
    """
    for sig in signal.valid_signals():
        handler = signal.getsignal(sig)
        if callable(handler) and getattr(handler, "__module__", "").startswith("submitit"):
            signal.signal(sig, signal.SIG_IGN)


def sample_generator(augment: AugmentKey, i: int) -> torch.Generator:
    """Sample ``i``'s augmentation randomness for (seed, epoch): the same whoever loads it."""
    seed, epoch = augment
    return generator(seed, "augment", epoch, i)


def load_batches(dataset: Dataset, indices: Sequence[Tensor], num_workers: int) -> Iterator:
    """One collated batch per index tensor, in order: in this process, or by DataLoader workers.

    For per-sample datasets used once per pass (segmentation's paired crops): the workers live
    for this pass only. :class:`SplitInputs` keeps its workers across passes instead.
    """
    if num_workers == 0:
        yield from (default_collate([dataset[int(i)] for i in index]) for index in indices)
    else:
        batches = [index.tolist() for index in indices]
        yield from data_loader(dataset, batch_sampler=batches, num_workers=num_workers)


class SplitInputs:
    """A split as the model consumes it, batch by batch.

    With ``num_workers > 0`` the first pass starts a pool of persistent DataLoader workers that
    later passes (epochs, evaluations) reuse; it shuts down when this object is garbage collected
    or :attr:`tokens` replace the pixels. A pass gets at most one worker per batch (a one-batch
    pass runs in this process), and a pass started while another is still being consumed gets a
    pool of its own for that pass.
    """

    def __init__(self, split: Split, transform: ClassificationTransform, num_workers: int = 0, tokens: Tensor | None = None) -> None:
        self.split, self.transform, self.num_workers = split, transform, num_workers
        self._samples = _Samples(split, transform)
        self._plan = _Plan()
        self._loader: DataLoader | None = None
        self._loader_busy = False
        self.tokens = tokens

    @property
    def tokens(self) -> Tensor | None:
        """Precomputed frozen-prefix tokens: when set, batches are rows of these, not pixels."""
        return self._tokens

    @tokens.setter
    def tokens(self, value: Tensor | None) -> None:
        self._tokens = value
        if value is not None:  # pixels are no longer needed: let the idle workers go now
            self._loader = None

    def __len__(self) -> int:
        return len(self.split)

    @property
    def labels(self) -> np.ndarray:
        return self.split.labels

    def batches(self, indices: Sequence[Tensor], augment: AugmentKey | None = None) -> Iterator[Tensor]:
        """Inputs for each index tensor in ``indices``, in order (augmented when ``augment`` is set)."""
        if self.tokens is not None:
            yield from (self.tokens[index] for index in indices)
            return
        keys: list[BatchKey] = [(tuple(index.tolist()), augment) for index in indices]
        # a worker builds whole batches, so more workers than batches would idle; and a single
        # batch is built fastest right here (nothing to overlap it with, no process to start)
        workers = min(self.num_workers, len(keys))
        if workers == 0 or len(keys) == 1:
            yield from (self._samples[key] for key in keys)
        elif self._loader_busy:
            yield from data_loader(self._samples, batch_size=None, sampler=keys, num_workers=workers)
        else:
            if self._loader is None or self._loader.num_workers < workers:  # (re)sized for the largest pass so far
                self._loader = data_loader(self._samples, batch_size=None, sampler=self._plan, num_workers=workers, persistent_workers=True)
            self._plan.keys = keys
            self._loader_busy = True
            try:
                yield from self._loader
            finally:
                self._loader_busy = False

    def sequential(self, batch_size: int) -> Iterator[Tensor]:
        yield from self.batches([torch.arange(s, min(s + batch_size, len(self))) for s in range(0, len(self), batch_size)])


@dataclass
class CacheSpend:
    """What one run spent on the frozen-prefix cache that runs in one process share, and what it
    got from it: the first run of a backbone pays for embedding every split, later runs (the other
    method, other seeds) read the tokens for free. Kept per run (``BuiltRun.cache_spend``) so a run's
    cost can say which part of its time was such a one-off shared build, not its own per-run
    work."""

    build_s: float = 0.0  # seconds spent embedding splits that were not cached yet
    built: int = 0  # splits this run embedded (and left in the cache)
    reused: int = 0  # splits whose tokens another run (or this run, earlier) had already built

    def add(self, other: "CacheSpend") -> "CacheSpend":
        return CacheSpend(self.build_s + other.build_s, self.built + other.built, self.reused + other.reused)

    def minus(self, earlier: "CacheSpend") -> "CacheSpend":
        """What was spent since ``earlier`` (a copy of this object taken then)."""
        return CacheSpend(self.build_s - earlier.build_s, self.built - earlier.built, self.reused - earlier.reused)


def prefix_cache_fits(n: int, model: SplitClassifier, img_size: int) -> bool:
    return n * model.prefix_numel(img_size) * 4 <= prefix_cache_budget_bytes()


@torch.no_grad()
def prefix_tokens(model: SplitClassifier, inputs: SplitInputs, batch_size: int, device: torch.device, key: Hashable,
                  spend: CacheSpend | None = None) -> Tensor:
    """Tokens after the frozen blocks for every image of a split (cached under ``key``).
    ``spend``, when given, is charged the build time (a miss) or counts a reuse (a hit)."""
    if key in _CACHE:
        _CACHE.move_to_end(key)
        if spend is not None:
            spend.reused += 1
        return _CACHE[key]
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    with one_thread():  # evaluations read these tokens: the same whatever the run's thread count
        chunks = [model.embed(x.to(device)).float().cpu() for x in inputs.sequential(batch_size)]
    model.train(was_training)
    tokens = torch.cat(chunks)
    if spend is not None:
        spend.build_s += time.perf_counter() - started
        spend.built += 1
    _CACHE[key] = tokens
    # bounded by bytes, not by a count of splits: a run with many small shift splits (e.g. 5
    # severities × several corruptions) must not evict its own train split on every epoch
    while len(_CACHE) > 1 and sum(t.numel() * t.element_size() for t in _CACHE.values()) > prefix_cache_budget_bytes():
        _CACHE.popitem(last=False)
    return tokens


def clear_cache() -> None:
    _CACHE.clear()
