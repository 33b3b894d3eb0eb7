"""Transfer probes against brute-force references; the feature cache is reused; a run with the
transfer evaluation records SR and kNN per target dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from bench.transfer import FeatureCache, fit_sr, knn_top1, softmax_regression


def knn_brute_force(train, train_y, test, num_classes, k, t):
    preds = []
    for q in test:
        sims = [float(np.dot(q, x) / (np.linalg.norm(q) * np.linalg.norm(x))) for x in train]
        order = sorted(range(len(train)), key=lambda i: -sims[i])[:k]
        votes = np.zeros(num_classes)
        for i in order:
            votes[train_y[i]] += np.exp(sims[i] / t)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


def test_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))
    train_y = rng.integers(0, 4, 60)
    test_y = rng.integers(0, 4, 25)
    train = centres[train_y] + rng.normal(scale=1.2, size=(60, 8))
    test = centres[test_y] + rng.normal(scale=1.2, size=(25, 8))
    for k, t in ((20, 0.07), (5, 1.0), (1, 0.07)):
        expected = (knn_brute_force(train, train_y, test, 4, k, t) == test_y).mean()
        got = knn_top1(torch.tensor(train), torch.tensor(train_y), torch.tensor(test), torch.tensor(test_y), 4, k, t, chunk=7)
        assert got == pytest.approx(expected)
    assert 0.3 < got < 1.0  # a non-trivial problem


def sr_brute_force(x, y, c, num_classes):
    """min_W,b  C · Σ_n −log softmax(W x_n + b)_{y_n} + ½‖W‖² on standardised x (scikit-learn's objective)."""
    mean, std = x.mean(0), x.std(0)
    z = (x - mean) / std
    d = z.shape[1]

    def objective(theta):
        w, b = theta[: d * num_classes].reshape(num_classes, d), theta[d * num_classes :]
        logits = z @ w.T + b
        logits -= logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        p = np.exp(logp)
        onehot = np.eye(num_classes)[y]
        loss = -c * logp[np.arange(len(y)), y].sum() + 0.5 * (w**2).sum()
        g_logits = c * (p - onehot)
        grad = np.concatenate([(g_logits.T @ z + w).ravel(), g_logits.sum(0)])
        return loss, grad

    theta = minimize(objective, np.zeros(num_classes * (d + 1)), jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10}).x
    w, b = theta[: d * num_classes].reshape(num_classes, d), theta[d * num_classes :]
    return lambda q: (((q - mean) / std) @ w.T + b).argmax(1), w


def test_softmax_regression_matches_brute_force_objective_and_sweep_picks_best_held_out_c():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 5)) * 1.5
    y = rng.integers(0, 3, 120)
    x = centres[y] + rng.normal(size=(120, 5))
    ty = rng.integers(0, 3, 80)
    tx = centres[ty] + rng.normal(size=(80, 5))
    for c in (0.01, 1.0):
        ours = fit_sr(x, y, c)
        reference, w_ref = sr_brute_force(x, y, c, 3)
        assert (ours(tx) == reference(tx)).mean() >= 0.98
        assert np.allclose(ours.model.coef_, w_ref, atol=2e-3 * max(1.0, np.abs(w_ref).max()))
    cs = (1e-4, 1e-2, 1.0)
    out = softmax_regression(x, y, tx, ty, cs, holdout=0.25, seed=0)
    assert out["C"] == cs[int(np.argmax(out["val_scores"]))] and out["val_top1"] == max(out["val_scores"])
    assert out["top1"] == pytest.approx((fit_sr(x, y, out["C"])(tx) == ty).mean())  # refit on all of train
    assert out["val_scores"][0] < out["val_scores"][-1]  # C = 1e-4 squeezes the weights to ~0


def test_feature_cache_extracts_once_per_identity(tmp_path):
    calls = []

    def extract():
        calls.append(1)
        return {"cls": torch.randn(3, 4), "pooled": torch.randn(3, 8), "labels": torch.arange(3)}

    cache = FeatureCache(tmp_path / "features")
    identity = {"dataset": "cifar10", "split": "c/fog/1", "weights": "abc"}
    a = cache.get(identity, extract)
    b = cache.get(dict(identity), extract)
    assert len(calls) == 1 and torch.equal(a["cls"], b["cls"])
    cache.get({**identity, "weights": "def"}, extract)  # other weights: other features
    assert len(calls) == 2 and len(list((tmp_path / "features").glob("*.pt"))) == 2
