"""Train and evaluate one resolved run: seeded, resumable, logged, result written atomically."""

from __future__ import annotations

import copy
import math
import time
import traceback
from contextlib import nullcontext
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from bench.config import RunConfig, dataset_transform
from bench.data import DATASETS
from bench.data.base import take
from bench.distributed import DistContext, current
from bench.evaluate import evaluate_split
from bench.features import SplitInputs, prefix_cache_fits, prefix_tokens
from bench.io import atomic_torch_save
from bench.methods import build_method
from bench.data.seg_transforms import SegTrainTransform
from bench.models import SplitViTClassifier, ViTSegmenter, create_backbone
from bench.segment import evaluate_segmentation, train_pairs
from bench.provenance import git_state, host, versions
from bench.seeding import derive_seed, generator, seed_everything
from bench.store import RunDir
from bench.transfer import FeatureCache, knn_top1, softmax_regression

LOG_EVERY = 20  # steps between appends to metrics.jsonl (a resume truncates to the checkpoint)
ProgressFn = Callable[[int, int, dict[str, float]], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def param_groups(model: SplitViTClassifier, cfg: RunConfig) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on 1-d tensors (norms, biases, LayerScale) and tokens."""
    head_lr = cfg.train.head_lr or cfg.train.lr
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(("cls_token", "reg_token", "pos_embed"))
        key = (head_lr if name.startswith("head.") else cfg.train.lr, 0.0 if no_decay else cfg.train.weight_decay)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


class Job:
    """Everything one run needs, built from its config."""

    def __init__(self, cfg: RunConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.device = resolve_device(cfg.train.device)
        if self.device.type == "cuda" and ctx.active:
            self.device = torch.device("cuda", ctx.local_rank)
        seed_everything(cfg.seed)
        self.entry = DATASETS.get(cfg.data.name)
        self.dense = cfg.task == "segmentation"
        backbone = create_backbone(cfg.backbone.name, cfg.backbone.weights, cfg.backbone.checkpoint, cfg.backbone.img_size, dynamic_img_size=self.dense)
        self.backbone = backbone
        trainable = None if cfg.model.trainable_blocks == "all" else cfg.model.trainable_blocks
        torch.manual_seed(derive_seed(cfg.seed, "head"))
        if self.dense:
            self.model = ViTSegmenter(backbone.model, self.entry.num_classes, cfg.seg.layers, trainable).to(self.device)
            s = cfg.seg
            self.seg_transform = SegTrainTransform((s.crop, s.crop), s.scale, s.ratio_range, s.cat_max_ratio, ignore_index=self.entry.ignore_index)
        else:
            self.model = SplitViTClassifier(backbone.model, self.entry.num_classes, trainable).to(self.device)
        self.method = build_method(cfg.method.name, cfg.method.params)
        self.reference = None
        if self.method.needs_reference:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.transform = cfg.data.transform(cfg.backbone.img_size)
        self.train_split = self.entry.load(cfg.data.resolved_train_split, cfg.data.data_root, **cfg.data.params)
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

    def inputs(self, split: str) -> SplitInputs:
        cfg = self.cfg
        data = self.train_split if split == cfg.data.resolved_train_split else self.entry.load(split, cfg.data.data_root, **cfg.data.params)
        inputs = SplitInputs(data, self.transform, cfg.data.num_workers)
        if self.use_prefix_cache:
            key = self.prefix_key(cfg.data.name, cfg.data.params, split, self.transform)
            inputs.tokens = prefix_tokens(self.model, inputs, cfg.train.eval_batch_size, self.device, key)
        return inputs

    def prefix_key(self, dataset: str, params: dict[str, Any], split: str, *extra: Any) -> tuple:
        """What frozen-prefix tokens depend on: backbone weights and split, never the method or head."""
        cfg = self.cfg
        random_seed = cfg.seed if cfg.backbone.weights == "random" else None
        return (cfg.backbone.model_dump_json(), self.backbone.init, random_seed, self.model.split, dataset, tuple(sorted(params.items())), split, *extra)

    def train_batches(self, train: SplitInputs, batches: list[Tensor], epoch: int):
        """(inputs, labels) per index batch: images + class ids, or paired crops + masks."""
        if self.dense:
            yield from train_pairs(train.split, self.seg_transform, batches, (self.cfg.seed, epoch), self.cfg.data.num_workers)
            return
        labels = torch.from_numpy(train.labels)
        augment = (self.cfg.seed, epoch) if self.transform.augments and train.tokens is None else None
        for index, x in zip(batches, train.batches(batches, augment)):
            yield x, labels[index]

    def evaluate(self, split: str, protocol: str) -> dict[str, Any]:
        cfg = self.cfg
        if self.dense:
            data = self.entry.load(split, cfg.data.data_root, **cfg.data.params)
            s = cfg.seg
            scores = evaluate_segmentation(self.logits, data, self.entry.num_classes, self.entry.ignore_index, s.test_scale, s.crop, s.slide_stride, self.device)
            return {**scores, "shift": self.entry.is_shift(split), "protocol": protocol, "split_facts": data.meta}
        inputs = self.inputs(split)
        return {
            **evaluate_split(self.logits, inputs.sequential(cfg.train.eval_batch_size), inputs.labels, self.device, inputs.split.label_space),
            "shift": self.entry.is_shift(split),
            "protocol": protocol,
            "split_facts": inputs.split.meta,
        }

    def logits(self, x: Tensor, model: nn.Module | None = None) -> Tensor:
        model = model or self.model
        with self.autocast:
            return model(x, embedded=self.use_prefix_cache)


def run_job(
    cfg: RunConfig, run_dir: RunDir, suite: str = "", progress: ProgressFn | None = None, **status_fields: Any
) -> dict[str, Any]:
    """Train + evaluate one run into ``run_dir``; resumes from ``last.pt`` if present.

    ``status_fields`` (e.g. the scheduler's job id) are recorded in ``status.json``.
    """
    ctx = current()
    main = ctx.is_main  # with DDP, rank 0 alone writes the run's files
    if main:
        run_dir.path.mkdir(parents=True, exist_ok=True)
        run_dir.write_config(cfg.canonical())
        run_dir.set_status("running", world_size=ctx.world, **status_fields)
    try:
        result = _train_and_evaluate(cfg, run_dir, suite, progress, ctx)
    except Exception as exc:
        if main:
            run_dir.set_status("failed", error=f"{exc.__class__.__name__}: {exc}", traceback=traceback.format_exc())
        raise
    except BaseException as exc:  # killed, timed out, pre-empted: resumable from last.pt, not a failure
        if main:
            run_dir.set_status("interrupted", error=f"{exc.__class__.__name__}: {exc}", traceback=traceback.format_exc())
        raise
    if main:
        run_dir.set_status("done")
    return result


def _train_and_evaluate(cfg: RunConfig, run_dir: RunDir, suite: str, progress: ProgressFn | None, ctx: DistContext) -> dict[str, Any]:
    started = time.time()
    job = Job(cfg, ctx)
    model, method, device = job.model, job.method, job.device
    train = job.inputs(cfg.data.resolved_train_split)
    n = len(train)
    batches_per_epoch = math.ceil(n / cfg.train.batch_size)
    total_steps = cfg.train.epochs * batches_per_epoch * method.passes
    if ctx.is_main:
        run_dir.update_status(total_steps=total_steps)

    optimizer = torch.optim.AdamW(param_groups(model, cfg))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, cfg.train.warmup_fraction))
    trainable = [p for p in model.parameters() if p.requires_grad]
    start_epoch, step, prior_wall = 0, 0, 0.0
    if run_dir.checkpoint.is_file():
        state = torch.load(run_dir.checkpoint, map_location=device, weights_only=False)
        if "optimizer" in state:  # a finished run keeps weights only; a partial one resumes
            model.load_state_dict(state["model"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            start_epoch, step, prior_wall = state["epoch"], state["step"], state.get("wall_time_s", 0.0)
    if ctx.is_main:
        run_dir.truncate_metrics(step)

    pending: list[dict[str, Any]] = []
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        method.generator = generator(cfg.seed, "groups", epoch)
        order = torch.randperm(n, generator=generator(cfg.seed, "order", epoch))
        batches = [ctx.shard(order[b * cfg.train.batch_size : (b + 1) * cfg.train.batch_size]) for b in range(batches_per_epoch)]
        for x, y in job.train_batches(train, batches, epoch):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            ref_logits = None
            if job.reference is not None:
                with torch.no_grad():
                    ref_logits = job.logits(x, job.reference)
            logits = job.logits(x, job.train_model)
            rollout = method.rollout(logits, y, ref_logits)
            for p in range(method.passes):
                if p > 0:
                    logits = job.logits(x, job.train_model)
                out = method.loss(logits, y, rollout)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(trainable, cfg.train.grad_clip or float("inf"))
                optimizer.step()
                schedule.step()
                step += 1
                stats = ctx.mean_stats(out.stats)
                row = {"step": step, "epoch": epoch, "pass": p, "lr": schedule.get_last_lr()[0], "grad_norm": float(grad_norm), **stats}
                pending.append(row)
                if progress:
                    progress(step, total_steps, stats)
            if len(pending) >= LOG_EVERY and ctx.is_main:
                run_dir.append_metrics(pending)
                pending = []
        if not ctx.is_main:
            pending = []
            continue
        run_dir.append_metrics(pending)
        pending = []
        atomic_torch_save(
            {
                "model": trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "wall_time_s": prior_wall + time.time() - started,
            },
            run_dir.checkpoint,
        )

    model.eval()
    if not ctx.is_main:  # rank 0 evaluates the (identical) model and writes the result
        ctx.barrier()
        return {}
    metrics = {}
    for split, protocol in cfg.evaluation_splits().items():
        metrics[split] = job.evaluate(split, protocol)
    if "transfer" in cfg.evaluations:
        metrics.update(evaluate_transfer(job, run_dir))
    wall = prior_wall + time.time() - started
    # the finished run keeps its fine-tuned weights (for later evaluations) but not optimiser state
    atomic_torch_save({"model": trainable_state(model), "step": step}, run_dir.checkpoint)
    result = {
        "run_id": cfg.run_id(),
        "suite": suite,
        "method": cfg.method.name,
        "method_params": cfg.method.resolved_params(),
        "dataset": cfg.data.name,
        "seed": cfg.seed,
        "backbone": {
            "name": cfg.backbone.name,
            "display": job.backbone.display,
            "init": job.backbone.init,
            "random_init": cfg.backbone.weights == "random",
            "checkpoint": job.backbone.checkpoint,
        },
        "protocol": {
            "img_size": cfg.backbone.img_size,
            "transform": cfg.seg.model_dump(mode="json") if job.dense else
            {"crop_pct": job.transform.crop_pct, "resize": job.transform.resize_size, "train_aug": job.transform.train_aug},
            "trainable_blocks": cfg.model.trainable_blocks,
            "frozen_prefix_cached": job.use_prefix_cache,
            "train_size": n,
            "steps": step,
            "world_size": ctx.world,
        },
        "config": cfg.canonical(),
        "versions": versions(),
        "git": git_state(),
        "host": host(),
        "device": str(device),
        "wall_time_s": round(wall, 3),
        "metrics": metrics,
    }
    run_dir.write_result(result)
    ctx.barrier()
    return result


def evaluate_transfer(job: Job, run_dir: RunDir) -> dict[str, dict[str, Any]]:
    """SR and kNN on each transfer target's features from the frozen fine-tuned backbone."""
    cfg, tc = job.cfg, job.cfg.transfer
    cache = FeatureCache(run_dir.path / "features")
    weights = weights_digest(job.model)  # features belong to these exact weights
    out: dict[str, dict[str, Any]] = {}
    for target in tc.targets:
        entry = DATASETS.get(target.name)
        transform = dataset_transform(target.name, cfg.backbone.img_size)
        feats = {}
        for role, split, limit in (("train", target.train_split or entry.train_split, target.train_limit),
                                   ("test", target.test_split or entry.test_split, target.test_limit)):
            identity = {"dataset": target.name, "split": split, "params": target.params, "limit": limit,
                        "transform": [transform.img_size, transform.crop_pct], "weights": weights}
            feats[role] = cache.get(identity, lambda split=split, limit=limit: _extract(job, entry, target, split, limit, transform))
        train_y, test_y = feats["train"]["labels"], feats["test"]["labels"]
        knn = knn_top1(feats["train"]["cls"], train_y, feats["test"]["cls"], test_y, entry.num_classes, tc.knn_k, tc.knn_temperature)
        sr = softmax_regression(feats["train"]["pooled"].numpy(), train_y.numpy(), feats["test"]["pooled"].numpy(), test_y.numpy(),
                                tc.sr_cs, tc.sr_holdout, seed=cfg.seed)
        common = {"n": len(test_y), "n_train": len(train_y), "shift": False, "protocol": "transfer", "dataset": target.name}
        out[f"transfer/{target.name}/knn"] = {"top1": knn, **common, "probe": "knn", "k": tc.knn_k, "temperature": tc.knn_temperature}
        out[f"transfer/{target.name}/sr"] = {"top1": sr["top1"], **common, "probe": "softmax_regression", "C": sr["C"],
                                             "val_top1": sr["val_top1"], "C_swept": list(tc.sr_cs), "holdout": tc.sr_holdout}
    return out


@torch.no_grad()
def _extract(job: Job, entry, target, split: str, limit: int | None, transform) -> dict[str, Tensor]:
    data = entry.load(split, job.cfg.data.data_root, **target.params)
    if limit is not None and limit < len(data):
        data = take(data, np.sort(np.random.default_rng(0).permutation(len(data))[:limit]))
    inputs = SplitInputs(data, transform, job.cfg.data.num_workers)
    model = job.model.eval()
    embedded = job.use_prefix_cache  # frozen prefix: its tokens are shared by every run of this backbone
    if embedded:
        key = job.prefix_key(target.name, target.params, split, transform, limit)
        inputs.tokens = prefix_tokens(model, inputs, job.cfg.train.eval_batch_size, job.device, key)
    cls, pooled = [], []
    for x in inputs.sequential(job.cfg.train.eval_batch_size):
        with job.autocast:
            tokens = model.final_tokens(x.to(job.device), embedded=embedded).float()
        cls.append(tokens[:, 0].cpu())
        pooled.append(torch.cat([tokens[:, 0], tokens[:, model.vit.num_prefix_tokens :].mean(1)], -1).cpu())
    return {"cls": torch.cat(cls), "pooled": torch.cat(pooled), "labels": torch.from_numpy(np.asarray(data.labels, dtype=np.int64))}


def weights_digest(model: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()[:16]


def trainable_state(model: nn.Module) -> dict[str, Tensor]:
    """The fine-tuned part of the state dict (frozen weights come back from the backbone source)."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in names}
