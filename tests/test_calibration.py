"""ECE (15 equal-width bins) and Brier score of evaluate_split, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.evaluate import evaluate_split

# probabilities (rows), labels, and by hand: confidences .9 .62 .7 .55; correct 1 0 1 1
PROBS = [[0.9, 0.1], [0.62, 0.38], [0.3, 0.7], [0.55, 0.45]]
LABELS = [0, 1, 1, 0]


def _score(probs, labels, batch=2, label_space=None):
    logits = torch.tensor(probs, dtype=torch.float64).log().float()
    batches = [logits[i : i + batch] for i in range(0, len(logits), batch)]
    return evaluate_split(lambda x: x, batches, np.array(labels), torch.device("cpu"), label_space)


def test_ece_and_brier_by_hand():
    out = _score(PROBS, LABELS)
    # bins of width 1/15: .9 → bin 13 (1 correct), .62 → bin 9 (wrong), .7 → bin 10 (correct), .55 → bin 8 (correct)
    # ECE = (|1 − .9| + |0 − .62| + |1 − .7| + |1 − .55|) / 4 = 1.47 / 4
    assert out["ece"] == pytest.approx(0.3675, abs=1e-6)
    # Brier Σ_k (p_k − 1[k = y])²: .02, .7688, .18, .405 → mean .34345
    assert out["brier"] == pytest.approx(0.34345, abs=1e-6)
    assert out["top1"] == 0.75 and out["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.38) + math.log(0.7) + math.log(0.55)) / 4, abs=1e-6)
    assert out["calibration"]["count"][8:11] == [1, 1, 1] and out["calibration"]["count"][13] == 1
    assert out["per_image"]["correct"].tolist() == [True, False, True, True]
    assert out["per_image"]["p_true"] == pytest.approx([0.9, 0.38, 0.7, 0.55], abs=1e-6)


def test_ece_matches_an_independent_binning_on_random_predictions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 7)) * 2
    labels = rng.integers(0, 7, 500)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = _score(probs.tolist(), labels.tolist(), batch=64)
    conf, pred = probs.max(1), probs.argmax(1)
    ece = 0.0
    for b in range(15):  # bin b: (b/15, (b+1)/15]
        inside = (conf > b / 15) & (conf <= (b + 1) / 15)
        if inside.any():
            ece += inside.mean() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    brier = ((probs - np.eye(7)[labels]) ** 2).sum(1).mean()
    assert out["ece"] == pytest.approx(ece, abs=1e-5) and out["brier"] == pytest.approx(brier, abs=1e-5)


def test_a_perfectly_calibrated_confident_model_has_zero_ece_and_brier():
    out = _score([[1.0, 0.0], [0.0, 1.0]], [0, 1])
    assert out["ece"] == pytest.approx(0.0, abs=1e-6) and out["brier"] == pytest.approx(0.0, abs=1e-6)
