"""Evaluation of a classifier on one split: top-1 / top-5 accuracy and mean NLL."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


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
