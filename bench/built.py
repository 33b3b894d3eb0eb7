"""A run built from its config: model (backbone + head), method, data, device.

Below training and evaluation, which both take a :class:`BuiltRun` and neither reaches back up:
:func:`bench.train.train` optimises it, :mod:`bench.evaluate` scores its protocols,
:mod:`bench.transfer` probes its frozen backbone, and :func:`bench.job.run_job` orders them.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench.config import RunConfig
from bench.data import DATASETS
from bench.data.holdout import disk_split
from bench.data.seg_transforms import SegTrainTransform
from bench.data.transforms import ClassificationTransform
from bench.distributed import DistContext, check_batch_size
from bench.features import CacheSpend, SplitInputs, prefix_cache_fits, prefix_tokens
from bench.methods import build_method
from bench.models import SplitClassifier, Segmenter, create_backbone
from bench.models.families import FAMILIES
from bench.models.heads import full_precision_head, sync_batchnorm
from bench.seeding import derive_seed, seed_everything
from bench.segment import train_pairs


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class BuiltRun:
    """Everything one run needs, built from its config: model (+ head, initialised from a seed
    derived from the run's seed only, so both methods start identical), method, data, device."""

    def __init__(self, cfg: RunConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.device = resolve_device(cfg.train.device)
        if self.device.type == "cuda" and ctx.active:
            self.device = torch.device("cuda", ctx.local_rank)
        check_batch_size(cfg.train.batch_size, ctx)  # equal training shards (bench.distributed)
        seed_everything(cfg.seed)
        self.entry = DATASETS.get(cfg.data.name)
        self.num_classes = self.entry.class_count(cfg.data.data_root, **cfg.data.params)  # your own data: read from it
        self.dense = cfg.task == "segmentation"
        backbone = create_backbone(cfg.backbone.name, cfg.backbone.weights, cfg.backbone.checkpoint, cfg.backbone.img_size, dynamic_img_size=self.dense)
        self.backbone = backbone
        family = FAMILIES.get(backbone.family)
        trainable = None if cfg.model.trainable_blocks == "all" else cfg.model.trainable_blocks
        torch.manual_seed(derive_seed(cfg.seed, "head"))
        if self.dense:
            self.model = Segmenter(backbone.model, self.num_classes, cfg.seg.layers, trainable, family).to(self.device)
            if ctx.active:  # the head's BatchNorm normalises with the global batch's statistics
                self.model = sync_batchnorm(self.model)
            s = cfg.seg
            self.seg_transform = SegTrainTransform((s.crop, s.crop), s.scale, s.ratio_range, s.cat_max_ratio, ignore_index=self.entry.ignore_index)
        else:
            self.model = SplitClassifier(backbone.model, self.num_classes, trainable, family).to(self.device)
        self.method = build_method(cfg.method.name, cfg.method.params)
        if self.method.passes > 1:  # ratios π_θ/π_old must not carry bf16 rounding noise
            full_precision_head(self.model)
        self.reference = None
        if self.method.needs_reference:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.norm = (backbone.mean, backbone.std)  # the backbone's own input normalisation (its pretrained config)
        self.transform = self.normalized(cfg.data.transform(cfg.backbone.img_size))
        self.train_split = cfg.data.load(cfg.data.resolved_train_split)
        self.per_image: dict[str, dict[str, np.ndarray]] = {}  # split → per-image arrays, filled by evaluation
        self.cache_spend = CacheSpend()  # this run's share of the shared frozen-prefix cache: builds paid, reuses (its cost block)
        # frozen-prefix tokens are exact only without augmentation, and only kept if they fit in memory
        self.use_prefix_cache = (
            not self.dense and cfg.model.cache_frozen_prefix and not self.model.full_finetune and not self.transform.augments
            and prefix_cache_fits(len(self.train_split), self.model, cfg.backbone.img_size)
        )
        # what the training forward goes through: the model itself, or DDP around it
        self.train_model: nn.Module = self.model
        if ctx.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" and cfg.train.bf16 else nullcontext()
        )

    def normalized(self, transform: ClassificationTransform) -> ClassificationTransform:
        """``transform`` normalising with the backbone's mean/std (every classification input, transfer targets' too)."""
        return dataclasses.replace(transform, mean=self.norm[0], std=self.norm[1])

    def inputs(self, split: str) -> SplitInputs:
        cfg = self.cfg
        data = self.train_split if split == cfg.data.resolved_train_split else cfg.data.load(split)
        inputs = SplitInputs(data, self.transform, cfg.data.workers())
        if self.use_prefix_cache:
            subset = cfg.data.subset(split)  # data.limit: other images, other tokens (nothing added without one: keys as before)
            key = self.prefix_key(cfg.data.name, cfg.data.params, split, self.transform, cfg.data.holdout, *((subset,) if subset is not None else ()))
            inputs.tokens = prefix_tokens(self.model, inputs, cfg.train.eval_batch_size, self.device, key, self.cache_spend)
        return inputs

    def prefix_key(self, dataset: str, params: dict[str, Any], split: str, *extra: Any) -> tuple:
        """What frozen-prefix tokens depend on: backbone weights and the split's data (its
        fingerprint: the same split name under another data root is other data), never the method
        or head."""
        cfg = self.cfg
        random_seed = cfg.seed if cfg.backbone.weights == "random" else None
        return (cfg.backbone.model_dump_json(), self.backbone.init, random_seed, self.model.split, dataset, tuple(sorted(params.items())), split,
                self.data_fingerprint(dataset, params, split), *extra)

    def data_fingerprint(self, dataset: str, params: dict[str, Any], split: str) -> str:
        """The fingerprint of a split this run reads (``heldout`` and the training split: the files
        of the split they are carved from; the carve itself is part of the cache keys' other fields)."""
        entry = DATASETS.get(dataset)
        disk = disk_split(split, self.cfg.data.holdout) if dataset == self.cfg.data.name else split
        return entry.split_fingerprint(disk, self.cfg.data.data_root, **{**entry.params, **params})

    def train_batches(self, train: SplitInputs, batches: list[Tensor], epoch: int):
        """(inputs, labels) per index batch: images + class ids, or paired crops + masks."""
        if self.dense:
            yield from train_pairs(train.split, self.seg_transform, batches, (self.cfg.seed, epoch), self.cfg.data.workers(), self.norm)
            return
        labels = torch.from_numpy(train.labels)
        augment = (self.cfg.seed, epoch) if self.transform.augments and train.tokens is None else None
        for index, x in zip(batches, train.batches(batches, augment)):
            yield x, labels[index]

    def logits(self, x: Tensor, model: nn.Module | None = None) -> Tensor:
        model = model or self.model
        with self.autocast:
            return model(x, embedded=self.use_prefix_cache)
