"""Segmentation metrics by dataset-level accumulation, following mmsegmentation's IoUMetric.

Per class, intersection, union, predicted area and labelled area are summed over the whole
evaluation set (not averaged per image); IoU_c = I_c / U_c; mIoU is the mean over classes whose
union is non-empty (nan-mean); aAcc is Σ I / Σ labelled pixels; mAcc the nan-mean of I_c / label_c.
Pixels labelled with the ignore index are excluded before anything is counted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class IoUAccumulator:
    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.intersect = torch.zeros(num_classes, dtype=torch.float64)
        self.area_pred = torch.zeros(num_classes, dtype=torch.float64)
        self.area_label = torch.zeros(num_classes, dtype=torch.float64)

    def update(self, pred: Tensor, label: Tensor) -> None:
        """``pred`` and ``label``: integer class maps of the same shape (any batch layout)."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
        keep = label != self.ignore_index
        pred, label = pred[keep].long().cpu(), label[keep].long().cpu()
        if label.numel() and int(label.max()) >= self.num_classes:
            raise ValueError(f"label {int(label.max())} outside 0..{self.num_classes - 1} (and not the ignore index {self.ignore_index})")
        c = self.num_classes
        self.intersect += torch.bincount(pred[pred == label], minlength=c)[:c].double()
        self.area_pred += torch.bincount(pred, minlength=c)[:c].double()
        self.area_label += torch.bincount(label, minlength=c)[:c].double()

    @property
    def union(self) -> Tensor:
        return self.area_pred + self.area_label - self.intersect

    def compute(self) -> dict[str, float | list[float]]:
        union = self.union
        iou = torch.where(union > 0, self.intersect / union.clamp_min(1), torch.full_like(union, math.nan))
        acc = torch.where(self.area_label > 0, self.intersect / self.area_label.clamp_min(1), torch.full_like(union, math.nan))
        labelled = float(self.area_label.sum())
        return {
            "mIoU": float(iou.nanmean()) if bool((union > 0).any()) else math.nan,
            "aAcc": float(self.intersect.sum()) / labelled if labelled else math.nan,
            "mAcc": float(acc.nanmean()) if bool((self.area_label > 0).any()) else math.nan,
            "per_class_iou": iou.tolist(),
        }
