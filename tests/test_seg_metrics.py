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


# --- The field's reference implementations as oracles --------------------------------------------
# mmsegmentation's IoUMetric (what DINOv2's linear segmentation protocol reports) and torchmetrics'
# MulticlassJaccardIndex, on random masks built so that every convention matters: ~20 % ignore
# pixels whose predictions are in-range classes (counting them changes every number), one class
# absent from both prediction and label (excluded: nan-mean over classes with a non-empty union),
# one only predicted (IoU 0, no accuracy), one only labelled (IoU 0, accuracy 0). Both libraries are
# in the `test` extra, so `make test` runs these; without them they skip.

NUM_CLASSES = 8
ABSENT, PREDICTED_ONLY, LABELLED_ONLY = 6, 7, 5


def oracle_masks(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(prediction, label) pairs of different sizes with the class pattern described above."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(6):
        h, w = (int(v) for v in rng.integers(6, 40, size=2))
        y = rng.choice([0, 1, 2, 3, 4, LABELLED_ONLY], size=(h, w))
        p = np.where(rng.random((h, w)) < 0.6, y, rng.choice([0, 1, 2, 3, 4, PREDICTED_ONLY], size=(h, w)))
        p[p == LABELLED_ONLY] = 0  # never predicted
        y[rng.random((h, w)) < 0.2] = 255  # ignored pixels keep their (in-range) predictions
        pairs.append((torch.from_numpy(p), torch.from_numpy(y)))
    return pairs


def ours(pairs) -> dict:
    acc = IoUAccumulator(NUM_CLASSES, ignore_index=255)
    for p, y in pairs:
        acc.update(p, y)
    out = acc.compute()
    iou = np.array(out["per_class_iou"], dtype=float)
    assert np.isnan(iou[ABSENT]) and iou[PREDICTED_ONLY] == 0 and iou[LABELLED_ONLY] == 0  # the pattern is there
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_mmsegmentation_iou_metric(seed):
    iou_metric = pytest.importorskip("mmseg.evaluation.metrics.iou_metric")
    IoUMetric = iou_metric.IoUMetric
    pairs = oracle_masks(seed)
    out = ours(pairs)
    # its own per-image histograms and dataset-level totals, unrounded
    areas = [IoUMetric.intersect_and_union(p, y, NUM_CLASSES, 255) for p, y in pairs]
    totals = [sum(a[k] for a in areas) for k in range(4)]
    ret = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU"])
    assert out["mIoU"] == pytest.approx(np.nanmean(ret["IoU"]), abs=1e-6)
    assert out["aAcc"] == pytest.approx(float(ret["aAcc"]), abs=1e-6)
    assert out["mAcc"] == pytest.approx(np.nanmean(ret["Acc"]), abs=1e-6)
    assert np.allclose(np.array(out["per_class_iou"], dtype=float), ret["IoU"], atol=1e-6, equal_nan=True)
    # the whole metric as mmsegmentation runs it (process per batch, evaluate): percentages rounded to 2 decimals
    metric = IoUMetric(ignore_index=255, iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": [f"c{i}" for i in range(NUM_CLASSES)]}
    for p, y in pairs:
        metric.process({}, [{"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": y[None]}}])
    theirs = metric.evaluate(len(pairs))
    for key in ("mIoU", "aAcc", "mAcc"):
        assert 100 * out[key] == pytest.approx(float(theirs[key]), abs=0.005 + 1e-9), key


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchmetrics(seed):
    classification = pytest.importorskip("torchmetrics.classification")
    pairs = oracle_masks(seed)
    out = ours(pairs)
    miou = classification.MulticlassJaccardIndex(NUM_CLASSES, average="macro", ignore_index=255)
    per_class = classification.MulticlassJaccardIndex(NUM_CLASSES, average="none", ignore_index=255)
    aacc = classification.MulticlassAccuracy(NUM_CLASSES, average="micro", ignore_index=255)
    recall = classification.MulticlassAccuracy(NUM_CLASSES, average="none", ignore_index=255)
    for p, y in pairs:
        for m in (miou, per_class, aacc, recall):
            m.update(p[None], y[None])  # one image per batch, accumulated over the set
    # macro Jaccard gives classes with an empty union weight 0: our nan-mean over non-empty unions
    assert out["mIoU"] == pytest.approx(float(miou.compute()), abs=1e-6)
    iou = np.array(out["per_class_iou"], dtype=float)
    seen = ~np.isnan(iou)
    assert np.allclose(iou[seen], per_class.compute().double().numpy()[seen], atol=1e-6)
    assert out["aAcc"] == pytest.approx(float(aacc.compute()), abs=1e-6)
    # torchmetrics' macro accuracy counts a class that is predicted but never labelled as 0;
    # mmsegmentation's mAcc (ours) leaves it out: mean recall over labelled classes only
    labelled = np.zeros(NUM_CLASSES, dtype=bool)
    for _, y in pairs:
        labelled[np.unique(y[y != 255].numpy())] = True
    assert not labelled[PREDICTED_ONLY] and labelled[LABELLED_ONLY]
    assert out["mAcc"] == pytest.approx(float(recall.compute().double().numpy()[labelled].mean()), abs=1e-6)
