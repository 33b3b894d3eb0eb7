"""GRPO-RM for dense (per-pixel) questions at real scale: chunked, with the gradient in closed form.

At ADE20k size (8 × 150 × 512²) one float32 copy of the logits is 1.26 GB. The plain formulation
(:func:`bench.methods.grpo_rm.grpo_rm_loss`) flattens the pixels and keeps log-probs, old
log-probs, rewards, advantages, ratios and both surrogate terms alive for autograd: about ten
copies. Here, for the paper's setting (group = all classes, β = 0), the loss and its gradient are
computed chunk by chunk in the (B, C, *spatial) layout and only the gradient is kept:

    obj_i = min(ρ_i A_i, clip(ρ_i, 1−ε, 1+ε) A_i),  ρ_i = exp(logp_i − logp_old_i)
    L = −1/(N C) Σ_n Σ_i obj_{n,i}                    (N labelled pixels)
    ∂L/∂logp_i = −ρ_i A_i [unclipped term active] / (N C)
    ∂L/∂z_j = ∂L/∂logp_j − p_j Σ_i ∂L/∂logp_i         (softmax Jacobian)

The advantages depend only on the rollout policy, so they carry no gradient. π_old is given as
logits (at μ = 1 the detached first-pass logits, which share storage: no copy). Peak memory is
then logits + gradient + one chunk of temporaries, i.e. no more than cross-entropy's
logits + log-softmax + gradient. Equality with the plain formulation (loss, gradient, statistics)
is tested.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from bench.methods.base import question_chunks, sampled_diagnostics

if TYPE_CHECKING:
    from bench.methods.grpo_rm import GRPORMParams

def _as_columns(x: Tensor) -> Tensor:
    """(B, C, *spatial) → (B, C, S); (N, C) → (1, C, N): classes on axis 1, questions on axis 2."""
    return x.t()[None] if x.dim() == 2 else x.reshape(x.shape[0], x.shape[1], -1)


def _rollout(z: Tensor, y: Tensor, valid: Tensor, acc_weight: float, uni_weight: float, unbiased: bool, adv_eps: float):
    """π_old's side of one chunk from its logits ``z`` (C, P): group-normalised advantages (zero on
    ignored pixels), p_old, and the sums of E_πold[r], A, A², max A, entropy and correct argmax.

    r_i = a·C·[i=y] − u·q_i with Σ q = 1 gives mean r = (a·C − u)/C and
    Σ r² = (a·C)² − 2·a·C·u·q_y + u²·Σ q², so the group std needs one reduction, not a pass per
    moment.
    """
    logp = z.log_softmax(0)
    q = logp.exp()
    num_classes = z.shape[0]
    q_y = q.gather(0, y[None])[0]
    sum_q2 = (q * q).sum(0)
    ac, u = acc_weight * num_classes, uni_weight
    mean = (ac - u) / num_classes
    sum_r2 = ac * ac - 2.0 * ac * u * q_y + u * u * sum_q2
    dof = num_classes - 1 if unbiased else num_classes
    scale = 1.0 / (((sum_r2 - num_classes * mean * mean).clamp_min(0.0) / dof).sqrt() + adv_eps)
    is_true = torch.arange(num_classes, device=z.device)[:, None] == y[None]
    adv = ((-u) * q - mean) * scale + is_true * (ac * scale)
    adv = adv * valid
    expected_reward = ((ac * q_y - u * sum_q2) * valid).sum()  # Σ_i q_i r_i per pixel, summed
    entropy = (-(q * logp).sum(0) * valid).sum()
    correct = ((z.argmax(0) == y) & valid).sum()
    return adv, q, expected_reward, adv.sum(), (adv * adv).sum(), adv.max(), entropy, correct


ROLLOUT_KEYS = ("n", "reward", "adv", "adv_sq", "adv_max")  # statistics of π_old alone


def _rollout_chunk(old_z: Tensor, y: Tensor, valid: Tensor, params: "GRPORMParams", sums: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Advantages and p_old for one chunk (adding π_old's statistics to ``sums``), plus the
    entropy and correct sums of that policy (the current one on a first pass)."""
    adv, old_p, reward, adv_sum, adv_sq, adv_max, entropy, correct = kernel(_rollout, old_z.numel())(
        old_z, y, valid, params.acc_weight, params.uni_weight, params.std == "unbiased", params.adv_eps
    )
    sums["n"] += int(valid.sum())
    sums["reward"] += float(reward)
    sums["adv"] += float(adv_sum)
    sums["adv_sq"] += float(adv_sq)
    sums["adv_max"] = max(sums["adv_max"], float(adv_max))
    return adv, old_p, entropy, correct


def _rollout_sums() -> dict:
    return dict(n=0, reward=0.0, adv=0.0, adv_sq=0.0, adv_max=float("-inf"))


@dataclass
class DenseRollout:
    """π_old reduced to what every pass needs, kept when μ > 1: the advantages and p_old,
    (B, C, S) float32 each, and π_old's statistics. The first pass computes them anyway and
    stores them; later passes then skip the rollout log-softmax and the advantage computation,
    and the rollout logits can be released."""

    adv: Tensor
    old_p: Tensor
    sums: dict


def _surrogate(z: Tensor, adv: Tensor, old_p: Tensor, y: Tensor, valid: Tensor, eps: float):
    """One chunk of a pass with ρ ≠ 1: −(w − p Σw) with w = ρA where the unclipped term is the
    minimum, plus Σ obj, the number of unclipped members, entropy and correct-prediction sums."""
    logp = z.log_softmax(0)
    p = logp.exp()
    ratio = p / old_p
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - eps, 1.0 + eps) * adv
    active = unclipped <= clipped  # min() takes the unclipped term: its gradient flows
    w = unclipped * active
    g = p * w.sum(0, keepdim=True) - w
    entropy = (-(p * logp).sum(0) * valid).sum()
    correct = ((z.argmax(0) == y) & valid).sum()
    return g, torch.minimum(unclipped, clipped).sum(), active.sum(), entropy, correct


COMPILE_MIN_ELEMENTS = 1 << 22  # chunks of ≥ 4.2 M logits (ADE20k: 150 classes × 65,536 pixels) are compiled
_compiled: dict = {}


def kernel(fn, numel: int):
    """A chunk kernel: eager for small inputs, ``torch.compile``d (a few fused loops instead of
    ~20 elementwise passes) at segmentation scale, where the one-off compile is amortised.
    ``BENCH_COMPILE=0`` turns compiling off."""
    if numel < COMPILE_MIN_ELEMENTS or os.environ.get("BENCH_COMPILE", "1") == "0":
        return fn
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=False)
    return _compiled[fn]


class FusedGRPORM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, old: "Tensor | DenseRollout", labels: Tensor, params: "GRPORMParams", stats: dict, keep: dict | None) -> Tensor:
        z_all = _as_columns(logits)
        y_all = labels[None] if logits.dim() == 2 else labels.reshape(labels.shape[0], -1)
        num_classes = z_all.shape[1]
        cached = isinstance(old, DenseRollout)
        old_all = None if cached else _as_columns(old)
        # at μ = 1 the rollout policy is the current one: ρ ≡ 1, nothing clips, and the
        # surrogate's gradient on the logits is exactly −A/(N C) (Σ_i A_i = 0)
        first_pass = not cached and old.data_ptr() == logits.data_ptr() and old.shape == logits.shape
        grad = torch.empty_like(z_all)
        store = keep is not None and not cached  # keep π_old's reduction for later passes
        if store:
            adv_all = torch.zeros(z_all.shape, dtype=torch.float32, device=z_all.device)
            old_p_all = torch.ones(z_all.shape, dtype=torch.float32, device=z_all.device)
        eps = params.epsilon
        sums = {**_rollout_sums(), "obj": 0.0, "clipped": 0, "entropy": 0.0, "correct": 0, "labelled": 0}
        for b, cols, _, _ in question_chunks(z_all, y_all):
            y = y_all[b, cols]
            valid = y != params.ignore_index
            n = int(valid.sum())
            if n == 0:
                grad[b, :, cols] = 0
                continue
            y = torch.where(valid, y, torch.zeros_like(y))  # any class id; masked out below
            z = z_all[b, :, cols].float()
            if cached:
                adv, old_p = old.adv[b, :, cols], old.old_p[b, :, cols]
            else:
                old_z = z if first_pass else old_all[b, :, cols].float()
                adv, old_p, entropy, correct = _rollout_chunk(old_z, y, valid, params, sums)
                if store:
                    adv_all[b, :, cols], old_p_all[b, :, cols] = adv, old_p
            if first_pass:  # ρ ≡ 1: nothing clips, Σ obj = Σ A = 0, gradient −A
                g = adv.neg()
            else:
                g, obj, active, entropy, correct = kernel(_surrogate, z.numel())(z, adv, old_p, y, valid, eps)
                sums["obj"] += float(obj)
                sums["clipped"] += z.numel() - int(active)
            grad[b, :, cols] = g.to(grad.dtype)
            sums["labelled"] += n
            sums["entropy"] += float(entropy)
            sums["correct"] += int(correct)
        if cached:
            sums.update({k: old.sums[k] for k in ROLLOUT_KEYS})
        if store:
            keep["dense"] = DenseRollout(adv_all, old_p_all, {k: sums[k] for k in ROLLOUT_KEYS})
        n = sums["labelled"]
        scale = 1.0 / (max(n, 1) * num_classes)
        grad.mul_(scale)
        ctx.save_for_backward(grad)
        ctx.two_d = logits.dim() == 2
        ctx.shape = logits.shape
        m = n * num_classes
        stats.update(
            loss=-sums["obj"] * scale if n else 0.0,
            reward_mean=sums["reward"] / n if n else float("nan"),
            adv_mean=sums["adv"] / m if m else float("nan"),
            adv_std=((sums["adv_sq"] - sums["adv"] ** 2 / m) / (m - 1)) ** 0.5 if m > 1 else 0.0,
            adv_max=sums["adv_max"] if m else float("nan"),
            clip_fraction=sums["clipped"] / m if m else float("nan"),
            entropy=sums["entropy"] / n if n else float("nan"),
            accuracy=sums["correct"] / n if n else float("nan"),
            **sampled_diagnostics(logits, labels, params.ignore_index),
        )
        return logits.new_tensor(-sums["obj"] * scale if n else 0.0)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (grad,) = ctx.saved_tensors
        grad = grad if bool(grad_output == 1) else grad * grad_output
        grad = grad[0].t() if ctx.two_d else grad.reshape(ctx.shape)
        return grad, None, None, None, None, None


def fused_grpo_rm_loss(
    logits: Tensor, old: "Tensor | DenseRollout", labels: Tensor, params: "GRPORMParams", keep: dict | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Loss (scalar) and step statistics; same value and gradient as the plain formulation.

    ``old``: π_old as logits (on the first pass the detached logits themselves), or the
    :class:`DenseRollout` a previous pass left in ``keep["dense"]`` when ``keep`` was given."""
    if params.group != "all" or params.beta > 0.0:
        raise ValueError("the fused GRPO-RM loss covers group='all' and beta=0 (the paper's setting)")
    stats: dict[str, float] = {}
    loss = FusedGRPORM.apply(logits, old if isinstance(old, DenseRollout) else old.detach(), labels, params, stats, keep)
    return loss, stats
