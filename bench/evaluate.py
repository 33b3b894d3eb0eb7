"""Evaluation protocols (registered by name, listed by suites) and split-level metrics.

- ``id``: the fine-tuned model + head on the dataset's in-distribution evaluation splits.
- ``shift``: the same model + head on the covariate-shifted splits of the same label space.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.registry import Registry

SplitSelector = Callable[[tuple[str, ...], tuple[str, ...]], tuple[str, ...]]
EVALUATIONS: Registry[SplitSelector] = Registry("evaluation")
EVALUATIONS.add("id", lambda splits, shifted: tuple(s for s in splits if s not in shifted))
EVALUATIONS.add("shift", lambda splits, shifted: tuple(s for s in splits if s in shifted))


def protocol_splits(evaluations: tuple[str, ...], splits: tuple[str, ...], shifted: tuple[str, ...]) -> dict[str, str]:
    """split → protocol that evaluates it, in split order."""
    chosen = {s: name for name in evaluations for s in EVALUATIONS.get(name)(splits, shifted)}
    return {s: chosen[s] for s in splits if s in chosen}


@torch.no_grad()
def evaluate_split(
    logits_fn: Callable[[Tensor], Tensor],
    batch_fn: Callable[[Tensor, torch.device], Tensor],
    labels: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    y_all = torch.from_numpy(labels)
    correct1 = correct5 = 0
    nll = 0.0
    for start in range(0, len(y_all), batch_size):
        index = torch.arange(start, min(start + batch_size, len(y_all)))
        logits = logits_fn(batch_fn(index, device)).float().cpu()
        y = y_all[index]
        k = min(5, logits.shape[-1])
        topk = logits.topk(k, dim=-1).indices
        correct1 += int((topk[:, 0] == y).sum())
        correct5 += int((topk == y[:, None]).any(-1).sum())
        nll += float(F.cross_entropy(logits, y, reduction="sum"))
    n = len(y_all)
    return {"top1": correct1 / n, "top5": correct5 / n, "nll": nll / n, "n": n}
