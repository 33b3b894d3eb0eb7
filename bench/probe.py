"""Softmax Regression (L2 multinomial logistic regression) in torch, on the run's device.

It minimises exactly the objective of scikit-learn's ``LogisticRegression(C=c)`` (lbfgs, the
reference path of :mod:`bench.transfer`). scikit-learn documents it as

    C · Σ_n CE(W x_n + b, y_n) + ½ ‖W‖²                          (intercept b not penalised)

and its lbfgs solver minimises it divided by C·n, i.e.

    F(W, b) = (1/n) Σ_n CE(W x_n + b, y_n) + 1 / (2 C n) · ‖W‖²     (``sklearn.linear_model._logistic``:
                                                                   ``l2_reg_strength = 1 / (C * sw_sum)``)

where CE is the multinomial cross-entropy log Σ_k exp(logit_k) − logit_y. This module minimises
the same F (the same minimiser, and the same per-sample scale, so the gradient tolerance means
what scikit-learn's ``tol`` means), from zeros as scikit-learn starts, with full-batch
``torch.optim.LBFGS`` and a strong-Wolfe line search:

- tolerance: stop when max |∂F| ≤ ``tol`` (default 1e-5), or when F or the step stops changing by
  more than 1e-9 (below float32 resolution of F: no further progress is possible). scikit-learn
  passes its ``tol`` = 1e-4 to L-BFGS-B as ``gtol`` on the same F. At equal gradient tolerance the
  two L-BFGS variants stop at different points, either one the lower (tests/test_sr_probe.py's
  problem at tol 1e-4: torch's F 1e-5 … 6e-5 relative above scikit-learn's for C = 0.1 … 10);
  10× tighter puts torch's F at or below scikit-learn's (the gap to the optimum scales with
  max |∂F|²) for ~1.5× the iterations;
- at most ``max_iter`` iterations (default 1000: what ``bench.transfer`` gives scikit-learn) and
  15000 objective evaluations (scikit-learn's L-BFGS-B caps: maxiter = max_iter, maxfun = 15000);
  hitting a cap warns, as scikit-learn does;
- history of 20 curvature pairs (scikit-learn's L-BFGS-B keeps 10; 10 … 100 changed the iteration
  count by ±2 on the benchmark problem, and the pairs cost nothing next to a pass over the data).

Precision: float32 features, parameters and matmuls; the per-sample losses are summed in float64.
The features are float32 (the backbone's output) and scikit-learn itself evaluates this objective
on float32 features when given them (the reference path does), so float64 would buy no fidelity;
float32 halves memory (100k × 1536 features: 0.6 GB instead of 1.2 GB) and time on CPUs and most
GPUs (data-centre GPUs such as H100/H200 run float64 matmuls at about float32's rate). F is O(1)
and F and ∂F come out of float32 to ~1e-6 or better, below the 1e-5 gradient tolerance; where
float32 runs out first, the 1e-9 change test stops the solver. TF32 matmuls (10-bit mantissa)
are switched off during the fit.

Thread count: the fit and its predictions run on one CPU thread (:func:`bench.seeding.one_thread`,
which gives the caller its thread count back), so the coefficients, the iteration count and every
prediction are bitwise the same whatever the run's thread count. With several threads MKL splits
the gradient matmul's sum over samples between threads, and torch the sums to one number and the
dot products inside ``torch.optim.LBFGS``; the last bits then depend on the thread count and the
line search amplifies them (600 × 768 features, 100 classes, C = 1e-3: 62 iterations at 1 thread,
71 at 2, different coefficients). Fixing the order of every sum ourselves would mean rewriting
L-BFGS, and float64 only makes the differences smaller, not zero. The cost is the parallel
speed-up on CPU: ~0.1 s for the demo's whole C sweep (600 × 768, 10 classes) either way; one fit
of 20,000 × 768, 100 classes, 2.4 s instead of 1.4 s at 2 threads (a shared 2-core machine, so
rough). On a GPU nothing changes: its kernels do not depend on the CPU thread count.

Standardisation is scikit-learn's ``StandardScaler``: mean and population standard deviation of
the training features (float64 accumulators); a feature whose variance is within the rounding
error of a constant (Chan, Golub & LeVeque's bound for the two-pass algorithm) is scaled by 1.
The gradient is written out (∂F/∂logits = (softmax − onehot) / n), not taken by autograd: one
logits buffer, two matmuls per evaluation.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bench.seeding import one_thread

SR_SOLVERS = ("torch", "sklearn")
"""Softmax Regression backends: ``torch`` (this module, on the run's device) or ``sklearn`` (the reference)."""

HISTORY = 20
TOLERANCE_CHANGE = 1e-9
MAX_EVAL = 15_000
_CHUNK = 8192  # rows per chunk of the float64 statistics pass


class ConvergenceWarning(UserWarning):
    """L-BFGS stopped at ``max_iter`` (or ``MAX_EVAL`` evaluations) before reaching the tolerance."""


@dataclass(frozen=True)
class Standardiser:
    """x → (x − mean) / scale with the training features' statistics (scikit-learn's StandardScaler)."""

    mean: Tensor
    scale: Tensor

    @classmethod
    def fit(cls, x: Tensor) -> "Standardiser":
        n = len(x)
        total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        for rows in x.split(_CHUNK):
            total += rows.double().sum(0)
        mean = total / n
        squares = torch.zeros_like(mean)
        for rows in x.split(_CHUNK):
            squares += (rows.double() - mean).square().sum(0)
        var = squares / n
        eps = torch.finfo(torch.float64).eps
        constant = var <= n * eps * var + (n * mean * eps).square()
        scale = torch.where(constant, torch.ones_like(var), var.sqrt())
        return cls(mean.to(x.dtype), scale.to(x.dtype))

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.scale


@dataclass
class SoftmaxRegression:
    """A fitted probe: standardise, then argmax of W z + b over ``classes`` (the labels seen in training)."""

    scaler: Standardiser
    weight: Tensor  # (K, d)
    bias: Tensor  # (K,)
    classes: Tensor  # (K,) original label values
    c: float
    objective: float  # F at the solution (the per-sample scale above)
    n_iter: int
    converged: bool

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """W z + b on standardised x; one CPU thread, as the fit (a matmul's sum may be split by thread)."""
        with one_thread():
            return torch.addmm(self.bias, self.scaler(x.to(self.weight.device, self.weight.dtype)), self.weight.T)

    def predict(self, x: Tensor) -> Tensor:
        return self.classes[self.logits(x).argmax(1)]

    # scikit-learn's attribute names, as numpy arrays
    @property
    def coef_(self) -> np.ndarray:
        return self.weight.cpu().numpy()

    @property
    def intercept_(self) -> np.ndarray:
        return self.bias.cpu().numpy()

    @property
    def classes_(self) -> np.ndarray:
        return self.classes.cpu().numpy()


def sr_objective(z: Tensor, target: Tensor, weight: Tensor, bias: Tensor, c: float) -> float:
    """F(W, b) on standardised features z and label indices target (0..K−1), in float64."""
    with torch.no_grad():
        logits = torch.addmm(bias, z, weight.T)
        nll = (torch.logsumexp(logits, 1) - logits.gather(1, target[:, None])[:, 0]).double().sum()
        return float(nll / len(z) + weight.double().square().sum() / (2 * c * len(z)))


def fit_softmax_regression(x: Tensor, y: Tensor, c: float, max_iter: int = 1000, tol: float = 1e-5,
                           device: torch.device | str | None = None) -> SoftmaxRegression:
    """Standardise x with its own statistics, then minimise F by full-batch L-BFGS on ``device``
    (default: x's). x: (n, d) features, y: (n,) integer labels (any values; K = the distinct ones).
    CPU math on one thread (:func:`one_thread`): the result is the same whatever the caller's thread count."""
    if not c > 0:
        raise ValueError(f"C must be positive, got {c}")
    with one_thread():
        return _fit(x, y, c, max_iter, tol, device)


def _fit(x: Tensor, y: Tensor, c: float, max_iter: int, tol: float, device: torch.device | str | None) -> SoftmaxRegression:
    device = torch.device(device) if device is not None else x.device
    x = x.to(device, torch.float32)
    y = y.to(device)
    classes, target = torch.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"softmax regression needs at least 2 classes in the training labels, got {classes.tolist()}")
    scaler = Standardiser.fit(x)
    z = scaler(x)
    del x
    n, d, k = len(z), z.shape[1], len(classes)
    l2 = 1.0 / (c * n)
    weight = torch.zeros(k, d, device=device, requires_grad=True)
    bias = torch.zeros(k, device=device, requires_grad=True)
    rows = torch.arange(n, device=device)
    opt = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, max_eval=max(MAX_EVAL, max_iter), tolerance_grad=tol,
                            tolerance_change=TOLERANCE_CHANGE, history_size=HISTORY, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        with torch.no_grad():
            w, b = weight.detach(), bias.detach()
            logits = torch.addmm(b, z, w.T)
            lse = torch.logsumexp(logits, 1)
            nll = (lse - logits.gather(1, target[:, None])[:, 0]).double().sum()
            loss = nll / n + 0.5 * l2 * w.double().square().sum()
            # dF/dlogits = (softmax − onehot) / n, computed in place in the logits buffer
            grad = logits.sub_(lse[:, None]).exp_()
            grad[rows, target] -= 1
            grad /= n
            weight.grad = torch.addmm(w, grad.T, z, beta=l2)
            bias.grad = grad.sum(0)
        return loss

    with _no_tf32():
        opt.step(closure)
        n_iter = int(opt.state[weight]["n_iter"])
        objective = sr_objective(z, target, weight.detach(), bias.detach(), c)
    converged = n_iter < max_iter and int(opt.state[weight]["func_evals"]) < max(MAX_EVAL, max_iter)
    if not converged:
        warnings.warn(f"softmax regression (torch L-BFGS, C={c}) stopped at max_iter={max_iter} (or {MAX_EVAL} evaluations) "
                      f"before max|grad| <= {tol}; raise max_iter", ConvergenceWarning, stacklevel=3)
    return SoftmaxRegression(scaler, weight.detach(), bias.detach(), classes, c, objective, n_iter, converged)


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved

