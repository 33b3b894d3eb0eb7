"""Softmax-Regression probe fit time: torch L-BFGS (bench.probe) vs scikit-learn LogisticRegression.

One fit of the transfer evaluation's SR probe (standardise + L2 multinomial logistic regression,
one C) on synthetic Gaussian-mixture features, through the same entry point the evaluation uses
(``bench.transfer.fit_sr`` with ``solver`` torch / sklearn). Default size = Tiny-ImageNet features
of a ViT-B: 100k samples × 768 features, 200 classes. Both objectives are evaluated afterwards by
one float64 formula (C·Σ CE + ½‖W‖², divided by C·n: scikit-learn's scale), so the table shows
that the faster fit is not a looser one.

    python benchmarks/sr_probe.py                                   # full size (tens of minutes on a small CPU)
    python benchmarks/sr_probe.py --n 10000 --d 256 --classes 50    # quick
    python benchmarks/sr_probe.py --device cuda                     # torch row on the GPU

Seconds are the best of ``--repeats`` fits per solver (alternating), as a busy machine only ever
adds time; the fits themselves are deterministic.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch


def features(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian clusters with per-feature scales and offsets (so standardising matters)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * (2.0 / d**0.5)  # centre distance ~2.8 noise σ: classes overlap
    y = torch.randint(0, classes, (n,), generator=g)
    scale = torch.rand(d, generator=g) * 2.5 + 0.5
    shift = torch.randn(d, generator=g) * 2
    x = (centres[y] + torch.randn(n, d, generator=g)) * scale + shift
    return x.numpy(), y.numpy()


def objective(x: np.ndarray, y: np.ndarray, mean: np.ndarray, scale: np.ndarray, w: np.ndarray, b: np.ndarray,
              classes: np.ndarray, c: float, chunk: int = 8192) -> float:
    """(1/n) Σ CE + ‖W‖² / (2 C n) in float64, on x standardised with the fit's own statistics."""
    target = np.searchsorted(classes, y)
    w, b, nll = w.astype(np.float64), b.astype(np.float64), 0.0
    for s in range(0, len(x), chunk):
        logits = ((x[s : s + chunk] - mean) / scale) @ w.T + b
        top = logits.max(1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(logits - top).sum(1))
        nll += float((lse - logits[np.arange(len(logits)), target[s : s + chunk]]).sum())
    return nll / len(x) + float((w**2).sum()) / (2 * c * len(x))


def run(solver: str, x: np.ndarray, y: np.ndarray, c: float, device: str) -> dict[str, float]:
    from bench.transfer import fit_sr

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        predict = fit_sr(x, y, c, solver=solver, device=device if solver == "torch" else None)
        if solver == "torch" and torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    caught = [w for w in caught if "converge" in str(w.message).lower() or "max_iter" in str(w.message)]
    model, scaler = predict.model, predict.scaler
    if solver == "torch":
        mean, scale, iters = scaler.mean.cpu().numpy(), scaler.scale.cpu().numpy(), model.n_iter
    else:
        mean, scale, iters = scaler.mean_, scaler.scale_, int(model.n_iter_[0])
    return {"seconds": seconds, "top1": float((predict(x) == y).mean()), "iters": iters, "warned": bool(caught),
            "objective": objective(x.astype(np.float64), y, mean, scale, model.coef_, model.intercept_, model.classes_, c)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="training samples")
    ap.add_argument("--d", type=int, default=768, help="feature dimension")
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--c", type=float, default=1.0, help="inverse L2 strength")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads for torch and for BLAS under scikit-learn")
    ap.add_argument("--device", default="cpu", help="device of the torch fit (scikit-learn always runs on the CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="fits per solver; the best time is reported")
    a = ap.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(a.threads)
    x, y = features(a.n, a.d, a.classes, a.seed)
    rows: dict[str, dict[str, float]] = {}
    with threadpool_limits(a.threads):
        for _ in range(a.repeats):
            for solver in ("torch", "sklearn"):
                r = run(solver, x, y, a.c, a.device)
                rows[solver] = min(rows.get(solver, r), r, key=lambda r: r["seconds"])
    where = torch.cuda.get_device_name() if torch.device(a.device).type == "cuda" else f"CPU, {a.threads} threads"
    print(f"# SR probe fit, n={a.n} d={a.d} classes={a.classes} C={a.c}, synthetic Gaussian mixture (seed {a.seed}); "
          f"torch on {where}; best of {a.repeats}")
    print("| solver | seconds | train top-1 | objective (F = mean CE + ‖W‖²/2Cn) | L-BFGS iterations |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        note = " (hit max_iter)" if r["warned"] else ""
        print(f"| {name} | {r['seconds']:.2f} | {r['top1']:.4f} | {r['objective']:.6f} | {r['iters']}{note} |")
    ratio = rows["sklearn"]["seconds"] / rows["torch"]["seconds"]
    gap = rows["torch"]["objective"] - rows["sklearn"]["objective"]
    print(f"speed ratio sklearn/torch: {ratio:.2f}× (target ≥ 1.0, torch at least as fast: {'met' if ratio >= 1.0 else 'NOT met'}); "
          f"objective torch − sklearn: {gap:+.2e} (≤ 0: torch's fit at least as tight)")


if __name__ == "__main__":
    main()
