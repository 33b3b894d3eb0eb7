"""mIoU by dataset-level accumulation against an independent confusion-matrix implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.seg_metrics import IoUAccumulator


def confusion_reference(preds, labels, num_classes, ignore):
    """Independent: one confusion matrix over all pixels of all images (numpy), then IoU = diag / (row + col − diag)."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, y in zip(preds, labels):
        keep = y != ignore
        np.add.at(cm, (y[keep], p[keep]), 1)
    diag = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - diag
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, diag / union, np.nan)
        acc = np.where(cm.sum(1) > 0, diag / cm.sum(1), np.nan)
    return np.nanmean(iou), diag.sum() / cm.sum(), np.nanmean(acc), iou


def test_miou_matches_confusion_matrix_reference_on_random_maps_with_ignore():
    rng = np.random.default_rng(0)
    c = 7
    preds, labels = [], []
    acc = IoUAccumulator(c, ignore_index=255)
    for _ in range(5):  # images of different sizes, as in real evaluation
        h, w = rng.integers(5, 30, size=2)
        y = rng.integers(0, c - 1, size=(h, w))  # class 6 never labelled …
        y[rng.random((h, w)) < 0.2] = 255
        p = np.where(rng.random((h, w)) < 0.6, y, rng.integers(0, c, size=(h, w)))
        p[p == 255] = 0
        preds.append(p)
        labels.append(y)
        acc.update(torch.from_numpy(p), torch.from_numpy(y))
    miou, aacc, macc, iou = confusion_reference(preds, labels, c, 255)
    out = acc.compute()
    assert out["mIoU"] == pytest.approx(miou) and out["aAcc"] == pytest.approx(aacc) and out["mAcc"] == pytest.approx(macc)
    assert np.allclose(np.array(out["per_class_iou"], dtype=float), iou, equal_nan=True)


def test_dataset_level_is_not_the_mean_of_per_image_scores_and_absent_classes_are_skipped():
    acc = IoUAccumulator(3, ignore_index=255)
    big_y = torch.zeros(10, 10, dtype=torch.long)
    big_p = big_y.clone()
    small_y = torch.ones(1, 2, dtype=torch.long)
    small_p = torch.zeros(1, 2, dtype=torch.long)
    acc.update(big_p, big_y)
    acc.update(small_p, small_y)
    out = acc.compute()
    # class 0: I = 100, U = 102; class 1: I = 0, U = 2; class 2: never seen → excluded (nan)
    assert out["mIoU"] == pytest.approx((100 / 102 + 0.0) / 2)
    assert math.isnan(out["per_class_iou"][2])
    per_image = np.mean([1.0, 0.0])  # image 1 mIoU 1.0, image 2 mIoU 0.0 (classes 0 and 1 both IoU 0)
    assert out["mIoU"] != pytest.approx(per_image)
    assert out["aAcc"] == pytest.approx(100 / 102)


def test_labels_outside_the_class_range_are_an_error():
    with pytest.raises(ValueError, match="label 9 outside 0..2"):
        IoUAccumulator(3).update(torch.tensor([0, 1]), torch.tensor([9, 1]))
