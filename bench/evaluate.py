"""Evaluation protocols (registered by name, listed by suites) and split-level metrics.

- ``id``: the fine-tuned model + head on the dataset's in-distribution evaluation splits.
- ``shift``: the same model + head on the covariate-shifted splits of the same label space.
- ``transfer``: the fine-tuned backbone frozen, Softmax Regression and kNN on other datasets'
  features (:mod:`bench.transfer`; targets in the run config's ``transfer`` section).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.registry import Registry

SplitSelector = Callable[[tuple[str, ...], tuple[str, ...]], tuple[str, ...]]
EVALUATIONS: Registry[SplitSelector] = Registry("evaluation")
EVALUATIONS.add("id", lambda splits, shifted: tuple(s for s in splits if s not in shifted))
EVALUATIONS.add("shift", lambda splits, shifted: tuple(s for s in splits if s in shifted))
# transfer scores other datasets (config ``transfer.targets``), none of the source's own splits
EVALUATIONS.add("transfer", lambda splits, shifted: ())


def protocol_splits(evaluations: tuple[str, ...], splits: tuple[str, ...], shifted: tuple[str, ...]) -> dict[str, str]:
    """split → protocol that evaluates it, in split order."""
    chosen = {s: name for name in evaluations for s in EVALUATIONS.get(name)(splits, shifted)}
    return {s: chosen[s] for s in splits if s in chosen}


@torch.no_grad()
def evaluate_split(
    logits_fn: Callable[[Tensor], Tensor],
    batches: Iterable[Tensor],
    labels: np.ndarray,
    device: torch.device,
    label_space: Sequence[int] | None = None,
) -> dict[str, float]:
    """top-1 / top-5 / NLL over a split fed as sequential ``batches`` aligned with ``labels``.

    ``label_space`` restricts predictions to a class subset (ImageNet-R/-A's 200 classes, the 9
    classes CIFAR-10 shares with STL-10): other logits are set to −inf before top-k and softmax.
    """
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    correct1 = correct5 = seen = 0
    nll = 0.0
    outside = None
    for x in batches:
        logits = logits_fn(x.to(device, non_blocking=True)).float().cpu()
        if label_space is not None:
            if outside is None:
                outside = torch.ones(logits.shape[-1], dtype=torch.bool)
                outside[list(label_space)] = False
            logits = logits.masked_fill(outside, float("-inf"))
        y = y_all[seen : seen + len(logits)]
        seen += len(logits)
        k = min(5, logits.shape[-1] if label_space is None else len(label_space))
        topk = logits.topk(k, dim=-1).indices
        correct1 += int((topk[:, 0] == y).sum())
        correct5 += int((topk == y[:, None]).any(-1).sum())
        nll += float(F.cross_entropy(logits, y, reduction="sum"))
    if seen != len(y_all):
        raise ValueError(f"evaluated {seen} inputs for {len(y_all)} labels")
    n = len(y_all)
    out = {"top1": correct1 / n, "top5": correct5 / n, "nll": nll / n, "n": n}
    if label_space is not None:
        out["label_space_size"] = len(label_space)
    return out
