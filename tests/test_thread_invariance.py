"""Same machine, same numbers, whatever the thread count: the Softmax-Regression probe, kNN and
evaluate_split give bitwise-identical outputs at 1, 2 and 3 torch threads.

Each problem is sized so that, without :func:`bench.seeding.one_thread`, the outputs differ on a
2-core x86 machine with MKL (torch 2.11): the probe's gradient matmul and L-BFGS's reductions
split their sums between threads (600 × 768 features, 100 classes: 62 vs 71 iterations at
C = 1e-3), as do a kNN similarity matmul and a linear head on 1536 features (ViT-B's
[CLS, mean patch]) for batches of 16 … 256 rows. Checked by making ``one_thread`` a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import timm
import torch

from bench.evaluate import evaluate_split
from bench.models.classifier import SplitViTClassifier
from bench.probe import fit_softmax_regression
from bench.transfer import knn_votes

THREADS = (1, 2, 3)


def at_threads(fn: Callable[[], Any]) -> dict[int, Any]:
    """fn() at each thread count, the caller's count restored afterwards (and checked to be)."""
    before = torch.get_num_threads()
    out = {}
    try:
        for t in THREADS:
            torch.set_num_threads(t)
            out[t] = fn()
            assert torch.get_num_threads() == t  # the code under test gives the caller its count back
    finally:
        torch.set_num_threads(before)
    return out


def features(n: int, d: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian classes on uneven scales (benchmarks/sr_probe.py's generator)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * (2.0 / d**0.5)
    y = torch.randint(0, k, (n,), generator=g)
    x = (centres[y] + torch.randn(n, d, generator=g)) * (torch.rand(d, generator=g) * 2.5 + 0.5) + torch.randn(d, generator=g) * 2
    return x, y


def test_probe_fit_is_bitwise_identical_at_any_thread_count():
    x, y = features(900, 768, 100)
    train, test = slice(0, 600), slice(600, 900)

    def fits():
        models = [fit_softmax_regression(x[train], y[train], c) for c in (1e-3, 1.0)]
        return [(m.weight, m.bias, m.n_iter, m.objective, m.predict(x[test])) for m in models]

    runs = at_threads(fits)
    for t in THREADS[1:]:
        for (w, b, it, f, pred), (w_t, b_t, it_t, f_t, pred_t) in zip(runs[1], runs[t]):
            assert it == it_t and f == f_t
            assert torch.equal(w, w_t) and torch.equal(b, b_t) and torch.equal(pred, pred_t)


def test_knn_votes_are_bitwise_identical_at_any_thread_count():
    x, y = features(400, 1536, 10, seed=2)  # few train rows, long features: the split-sum shape
    runs = at_threads(lambda: knn_votes(x[:100], y[:100], x[100:], 10))
    assert torch.equal(runs[1], runs[2]) and torch.equal(runs[1], runs[3])


def test_evaluate_split_is_bitwise_identical_at_any_thread_count():
    """A random-init one-block ViT-B/14 (embed 768, so the head reads 1536 features) with the
    benchmark's classifier head, scored by evaluate_split in batches of 32 and a last one of 8."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch14_dinov2", pretrained=False, img_size=28, depth=1, num_classes=0).eval()
    model = SplitViTClassifier(vit, 10, trainable_blocks=1).eval()
    images = torch.randn(72, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    labels = np.arange(72) % 10

    def score():
        out = evaluate_split(model, images.split(32), labels, torch.device("cpu"))
        per_image = out.pop("per_image")
        return out, per_image["correct"], per_image["p_true"]

    runs = at_threads(score)
    for t in THREADS[1:]:
        assert runs[1][0] == runs[t][0]  # top-1/5, NLL, ECE, Brier, calibration sums: exactly
        assert np.array_equal(runs[1][1], runs[t][1]) and np.array_equal(runs[1][2], runs[t][2])


@pytest.mark.parametrize("threads", [1, 3])
def test_one_thread_restores_the_callers_thread_count_even_after_an_error(threads):
    from bench.seeding import one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.raises(RuntimeError), one_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_the_in_process_executor_runs_each_run_at_its_profiles_cpus(tmp_path, monkeypatch):
    """Training is not thread-invariant, so the debug executor pins each run's math threads to its
    resource profile's cpus (not the host's core count) and gives the caller its own back."""
    import bench.job
    from bench.launch import LAUNCHERS, LaunchOptions
    from bench.suite import expand, load_suite
    from rich.console import Console

    path = tmp_path / "s.yaml"
    path.write_text("name: t\ndefaults: {data: {name: fmnist_composites}}\nresources: {default: {cpus: 3}}\n"
                    "matrix: {method: [sft]}\n")
    suite = load_suite(path)
    seen = []

    def fake_run_job(cfg, run_dir, suite_name, report, stage=None):
        seen.append(torch.get_num_threads())
        return {"wall_time_s": 0.0, "metrics": {}}

    monkeypatch.setattr(bench.job, "run_job", fake_run_job)
    before = torch.get_num_threads()
    LAUNCHERS.get("debug")(suite, expand(suite, path), tmp_path / "results", LaunchOptions(), Console(file=open("/dev/null", "w")))
    assert seen == [3] and torch.get_num_threads() == before
