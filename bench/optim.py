"""Optimisers and learning-rate schedules of the training loop, by name (``train.optimizer``,
``train.schedule``), each from one registry as methods, datasets and backbones are.

Optimisers (``OPTIMIZERS``) take the loop's parameter groups (:func:`param_groups`: the head's lr,
no weight decay on 1-d tensors and tokens) and the train config:

- ``adamw`` (default): torch's AdamW, decoupled weight decay, default betas/eps.
- ``adam``: torch's Adam; its ``weight_decay`` is the classic L2 term added to the gradient.
- ``sgd``: torch's SGD with ``train.momentum`` (default 0.9; Nesterov off), L2 weight decay.

Schedules (``SCHEDULES``) are multiplicative factors of each group's peak lr per optimiser step
(a ``LambdaLR``), all after the same linear warmup over ``train.warmup_fraction`` of the steps:

- ``cosine`` (default): half a cosine from 1 to 0 over the steps after warmup.
- ``constant``: 1 after warmup.
- ``linear``: straight from 1 to 0 over the steps after warmup.
- ``step``: ``train.step_gamma`` ** (milestones passed), milestones at ``train.step_milestones``
  (fractions of all steps; default 0.5 and 0.75, γ 0.1).

The defaults (adamw, cosine) compute exactly what the loop computed before these choices
existed, and leave run ids unchanged (:meth:`bench.config.RunConfig.canonical`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from bench.registry import Registry

if TYPE_CHECKING:  # the config module imports this one (names are validated against the registries)
    import torch
    from torch import nn

    from bench.config import RunConfig, TrainConfig

Factor = Callable[[int], float]

OPTIMIZERS: Registry[Callable[[list[dict[str, Any]], "TrainConfig"], "torch.optim.Optimizer"]] = Registry("optimizer")
SCHEDULES: Registry[Callable[[int, "TrainConfig"], Factor]] = Registry("schedule")


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], train: "TrainConfig") -> "torch.optim.Optimizer":
    import torch

    return torch.optim.AdamW(groups)


@OPTIMIZERS.register("adam")
def _adam(groups: list[dict[str, Any]], train: "TrainConfig") -> "torch.optim.Optimizer":
    import torch

    return torch.optim.Adam(groups)


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], train: "TrainConfig") -> "torch.optim.Optimizer":
    import torch

    return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum)


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    return int(total_steps * warmup_fraction)


def with_warmup(total_steps: int, warmup_fraction: float, after: Callable[[float], float]) -> Factor:
    """Linear warmup over the first ``warmup_fraction`` of the steps, then ``after(progress)`` with
    progress in [0, 1] over the remaining steps."""
    warmup = warmup_steps(total_steps, warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return after(min(1.0, progress))

    return factor


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Factor:
    return with_warmup(total_steps, warmup_fraction, lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)))


@SCHEDULES.register("cosine")
def _cosine(total_steps: int, train: "TrainConfig") -> Factor:
    return warmup_cosine(total_steps, train.warmup_fraction)


@SCHEDULES.register("constant")
def _constant(total_steps: int, train: "TrainConfig") -> Factor:
    return with_warmup(total_steps, train.warmup_fraction, lambda progress: 1.0)


@SCHEDULES.register("linear")
def _linear(total_steps: int, train: "TrainConfig") -> Factor:
    return with_warmup(total_steps, train.warmup_fraction, lambda progress: 1.0 - progress)


@SCHEDULES.register("step")
def _step(total_steps: int, train: "TrainConfig") -> Factor:
    milestones = sorted(int(total_steps * m) for m in train.step_milestones)
    warmup = warmup_steps(total_steps, train.warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return train.step_gamma ** sum(step >= m for m in milestones)

    return factor


def param_groups(model: "nn.Module", cfg: "RunConfig") -> list[dict[str, Any]]:
    """Optimiser groups: no weight decay on 1-d tensors (norms, biases, LayerScale) and tokens."""
    head_lr = cfg.train.head_lr or cfg.train.lr
    groups: dict[tuple[float, float], list[Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(("cls_token", "reg_token", "pos_embed"))
        key = (head_lr if name.startswith("head.") else cfg.train.lr, 0.0 if no_decay else cfg.train.weight_decay)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def build_optimizer(model: "nn.Module", cfg: "RunConfig", total_steps: int) -> tuple["torch.optim.Optimizer", Any]:
    """(optimiser, LambdaLR schedule) of a run: ``train.optimizer`` and ``train.schedule``."""
    import torch

    optimizer = OPTIMIZERS.get(cfg.train.optimizer)(param_groups(model, cfg), cfg.train)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES.get(cfg.train.schedule)(total_steps, cfg.train))
    return optimizer, schedule
