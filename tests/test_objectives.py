"""GRPO-RM and SFT objectives against closed forms and an independent loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.methods import GRPORM, GRPORMParams, SFT, build_method
from bench.methods.grpo_rm import group_advantages, group_rewards


def reference_grpo_objective(logits, old_logits, labels, eps, beta=0.0, ref_logits=None, unbiased=True, adv_eps=1e-4):
    """Plain-Python GRPO-RM surrogate per question, written from the paper's formulas."""
    out = []
    for z, z_old, y, z_ref in zip(logits, old_logits, labels, ref_logits if ref_logits is not None else [None] * len(labels)):
        C = len(z)
        p = np.exp(z - z.max()); p /= p.sum()
        q = np.exp(z_old - z_old.max()); q /= q.sum()
        r = [(C if i == y else 0.0) - q[i] for i in range(C)]
        m = sum(r) / C
        var = sum((ri - m) ** 2 for ri in r) / ((C - 1) if unbiased else C)
        A = [(ri - m) / (math.sqrt(var) + adv_eps) for ri in r]
        total = 0.0
        for i in range(C):
            rho = p[i] / q[i]
            term = min(rho * A[i], min(max(rho, 1 - eps), 1 + eps) * A[i])
            if beta:
                pr = np.exp(z_ref - z_ref.max()); pr /= pr.sum()
                total += term - beta * (pr[i] / p[i] - math.log(pr[i] / p[i]) - 1)
            else:
                total += term
        out.append(total / C)
    return -float(np.mean(out))


def test_advantages_closed_form_two_classes():
    # C = 2, true class 0, p_old = (0.7, 0.3): r = (2 − 0.7, −0.3) = (1.3, −0.3).
    # mean 0.5, unbiased std = |1.3 − (−0.3)| / sqrt(2) = 1.6 / sqrt(2).
    params = GRPORMParams(adv_eps=1e-12)
    r = group_rewards(torch.tensor([[0.7, 0.3]], dtype=torch.float64), torch.tensor([[True, False]]), 2, params)
    assert torch.allclose(r, torch.tensor([[1.3, -0.3]], dtype=torch.float64))
    a = group_advantages(r, params)
    expected = 0.8 / (1.6 / math.sqrt(2))
    assert torch.allclose(a, torch.tensor([[expected, -expected]], dtype=torch.float64))


def test_advantages_closed_form_three_classes_population_std():
    # C = 3, true class 2, p_old = (0.2, 0.3, 0.5): r = (−0.2, −0.3, 2.5), mean 2/3.
    params = GRPORMParams(std="population", adv_eps=1e-12)
    p = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    r = group_rewards(p, torch.tensor([[False, False, True]]), 3, params)
    a = group_advantages(r, params)
    dev = [-0.2 - 2 / 3, -0.3 - 2 / 3, 2.5 - 2 / 3]
    std = math.sqrt(sum(d * d for d in dev) / 3)
    assert torch.allclose(a, torch.tensor([[d / std for d in dev]], dtype=torch.float64))


def test_advantages_sum_to_zero():
    torch.manual_seed(0)
    logits = torch.randn(64, 10)
    labels = torch.randint(0, 10, (64,))
    method = GRPORM()
    rollout = method.rollout(logits, labels, None)
    p_old = rollout.old_logp.exp()
    r = group_rewards(p_old, F.one_hot(labels, 10).bool(), 10, method.params)
    a = group_advantages(r, method.params)
    assert a.sum(-1).abs().max() < 1e-5
    assert not torch.allclose(a, torch.zeros_like(a))


def test_mu1_loss_is_zero_but_gradient_is_minus_advantage_over_c():
    torch.manual_seed(1)
    N, C = 8, 5
    logits = torch.randn(N, C, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, C, (N,))
    method = GRPORM()
    rollout = method.rollout(logits, labels, None)
    out = method.loss(logits, labels, rollout)
    assert abs(out.loss.item()) < 1e-12
    out.loss.backward()
    r = group_rewards(rollout.old_logp.exp(), F.one_hot(labels, C).bool(), C, method.params)
    a = group_advantages(r, method.params)
    # loss is the mean over N questions, so each row's gradient is −A/C divided by N.
    assert torch.allclose(logits.grad * N, -a / C, atol=1e-10)
    assert logits.grad.abs().max() > 1e-3


def test_gradient_raises_true_class_probability():
    torch.manual_seed(2)
    logits = torch.randn(16, 10, requires_grad=True)
    labels = torch.randint(0, 10, (16,))
    method = GRPORM()
    out = method.loss(logits, labels, method.rollout(logits, labels, None))
    out.loss.backward()
    stepped = logits.detach() - 0.5 * logits.grad
    before = logits.detach().softmax(-1).gather(1, labels[:, None])
    after = stepped.softmax(-1).gather(1, labels[:, None])
    assert (after > before).all()


def test_clipping_engages_on_later_passes():
    torch.manual_seed(3)
    logits = torch.randn(32, 10)
    labels = torch.randint(0, 10, (32,))
    method = GRPORM(GRPORMParams(mu=4, epsilon=0.1))
    rollout = method.rollout(logits, labels, None)
    first = method.loss(logits, labels, rollout)
    assert first.stats["clip_fraction"] == 0.0
    # an update as a later pass would see it: the policy has moved away from π_old
    moved = logits + 2.0 * F.one_hot(labels, 10) - 0.5 * torch.randn(32, 10)
    moved.requires_grad_(True)
    later = method.loss(moved, labels, rollout)
    assert later.stats["clip_fraction"] > 0.05
    later.loss.backward()
    # a clipped member with a positive advantage whose ratio exceeds 1 + ε gets no gradient
    ratio = (moved.detach().log_softmax(-1) - rollout.old_logp).exp()
    true_mask = F.one_hot(labels, 10).bool()
    clipped_true = true_mask & (ratio > 1.1)
    assert clipped_true.any()
    # d loss / d z_k has contributions from all members; check the clipped true-class members'
    # own terms vanish by comparing with a reference that zeroes them
    ref = reference_grpo_objective(moved.detach().double().numpy(), logits.double().numpy(), labels.numpy(), 0.1)
    assert later.loss.item() == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("eps,unbiased", [(0.2, True), (0.05, False)])
def test_matches_independent_reference_on_random_inputs(eps, unbiased):
    rng = np.random.default_rng(4)
    for trial in range(5):
        N, C = 6, int(rng.integers(2, 12))
        old = rng.normal(size=(N, C)) * 2
        new = old + rng.normal(size=(N, C)) * 0.5
        labels = rng.integers(0, C, size=N)
        params = GRPORMParams(epsilon=eps, std="unbiased" if unbiased else "population")
        method = GRPORM(params)
        rollout = method.rollout(torch.tensor(old), torch.tensor(labels), None)
        got = method.loss(torch.tensor(new), torch.tensor(labels), rollout).loss.item()
        want = reference_grpo_objective(new, old, labels, eps, unbiased=unbiased)
        assert got == pytest.approx(want, abs=1e-6), trial


def test_kl_term_matches_reference_and_is_off_by_default():
    rng = np.random.default_rng(5)
    old = rng.normal(size=(4, 6)); new = old + 0.3 * rng.normal(size=(4, 6)); ref = rng.normal(size=(4, 6))
    labels = rng.integers(0, 6, size=4)
    assert not GRPORM().needs_reference
    method = GRPORM(GRPORMParams(beta=0.1))
    assert method.needs_reference
    rollout = method.rollout(torch.tensor(old), torch.tensor(labels), torch.tensor(ref))
    got = method.loss(torch.tensor(new), torch.tensor(labels), rollout).loss.item()
    assert got == pytest.approx(reference_grpo_objective(new, old, labels, 0.2, beta=0.1, ref_logits=ref), abs=1e-6)


def test_segmentation_shapes_equal_pixelwise_classification_with_ignore():
    torch.manual_seed(6)
    B, C, H, W = 2, 4, 3, 5
    old = torch.randn(B, C, H, W, dtype=torch.float64)
    new = old + 0.4 * torch.randn(B, C, H, W, dtype=torch.float64)
    labels = torch.randint(0, C, (B, H, W))
    labels[0, 0, :] = 255
    labels[1, 2, 3] = 255
    method = GRPORM(GRPORMParams(ignore_index=255, mu=2))
    seg = method.loss(new, labels, method.rollout(old, labels, None)).loss.item()
    keep = labels.reshape(-1) != 255
    flat_old = old.movedim(1, -1).reshape(-1, C)[keep]
    flat_new = new.movedim(1, -1).reshape(-1, C)[keep]
    want = reference_grpo_objective(flat_new.numpy(), flat_old.numpy(), labels.reshape(-1)[keep].numpy(), 0.2)
    assert seg == pytest.approx(want, abs=1e-6)
    # and SFT agrees with PyTorch's own ignore_index handling
    sft = build_method("sft", {"ignore_index": 255})
    assert sft.loss(new, labels, None).loss.item() == pytest.approx(F.cross_entropy(new, labels, ignore_index=255).item())


def test_sampled_groups_are_distinct_and_seeded():
    torch.manual_seed(7)
    logits = torch.randn(50, 20)
    labels = torch.randint(0, 20, (50,))
    params = GRPORMParams(group="sampled", group_size=5)
    a = GRPORM(params, generator=torch.Generator().manual_seed(0)).rollout(logits, labels, None).group
    b = GRPORM(params, generator=torch.Generator().manual_seed(0)).rollout(logits, labels, None).group
    assert a.shape == (50, 5) and torch.equal(a, b)
    assert all(len(set(row.tolist())) == 5 for row in a)
    # Gumbel top-k favours likely classes: the most likely class is drawn far above chance (5/20)
    top = logits.argmax(-1)
    assert (a == top[:, None]).any(-1).float().mean() > 0.5
    out = GRPORM(params).loss(logits, labels, GRPORM(params).rollout(logits, labels, None))
    assert math.isfinite(out.loss.item())


def test_param_validation_names_the_problem():
    with pytest.raises(ValueError, match="group_size"):
        GRPORMParams(group="sampled")
    with pytest.raises(ValueError, match="extra"):
        GRPORMParams(epsilom=0.2)


def test_sft_is_cross_entropy():
    torch.manual_seed(8)
    logits, labels = torch.randn(10, 7), torch.randint(0, 7, (10,))
    out = SFT().loss(logits, labels, None)
    assert out.loss.item() == pytest.approx(F.cross_entropy(logits, labels).item())
    assert 0 <= out.stats["accuracy"] <= 1 and out.stats["entropy"] > 0


# --- dense (per-pixel) objectives at scale: the fused GRPO-RM path -------------------------------

def _dense_batch(seed: int = 0, shape=(3, 6, 5, 7), ignore: int = 255):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.25] = ignore
    return logits, labels


@pytest.mark.parametrize("first_pass", [True, False])
@pytest.mark.parametrize("dense", [True, False])
def test_fused_grpo_rm_matches_plain_formulation(monkeypatch, first_pass, dense):
    from bench.methods import base
    from bench.methods.grpo_rm import GRPORMParams, grpo_rm_loss
    from bench.methods.grpo_rm_fused import fused_grpo_rm_loss

    monkeypatch.setattr(base, "QUESTION_CHUNK", 11)  # many chunks, ragged edges
    logits, labels = _dense_batch()
    if not dense:
        logits, labels = logits.movedim(1, -1).reshape(-1, logits.shape[1]), labels.reshape(-1)
    old = logits if first_pass else logits + 0.6 * torch.randn_like(logits)
    params = GRPORMParams(ignore_index=255, epsilon=0.2)
    plain_in = logits.clone().requires_grad_(True)
    flat_old, _ = base.flatten_questions(old, labels, 255)
    plain = grpo_rm_loss(plain_in, labels, base.Rollout(old_logp=flat_old.log_softmax(-1)), params)
    plain.loss.backward()
    fused_in = logits.clone().requires_grad_(True)
    loss, stats = fused_grpo_rm_loss(fused_in, fused_in if first_pass else old, labels, params)
    loss.backward()
    assert loss.item() == pytest.approx(plain.loss.item(), abs=1e-7)
    assert torch.allclose(fused_in.grad, plain_in.grad, atol=1e-7, rtol=1e-5)
    assert float(fused_in.grad.abs().max()) > 1e-4  # a real gradient, not zeros on both sides
    for key, value in plain.stats.items():
        assert stats[key] == pytest.approx(value, abs=1e-6), key
    if not first_pass:
        assert stats["clip_fraction"] > 0.05  # the clipped branch was exercised


def test_per_pixel_grpo_rm_equals_classification_loss_pixel_by_pixel():
    """Each labelled pixel is a question: the dense loss is the classification loss over those rows."""
    from bench.methods import build_method

    method = build_method("grpo_rm", {"ignore_index": 255})
    logits, labels = _dense_batch(seed=3)
    dense_in = logits.clone().requires_grad_(True)
    out = method.loss(dense_in, labels, method.rollout(dense_in, labels, None))
    out.loss.backward()
    rows_in = logits.clone().requires_grad_(True)
    rows = rows_in.movedim(1, -1).reshape(-1, logits.shape[1])
    flat_labels = labels.reshape(-1)
    keep = flat_labels != 255
    cls = method.loss(rows[keep], flat_labels[keep], method.rollout(rows[keep], flat_labels[keep], None))
    cls.loss.backward()
    assert torch.allclose(dense_in.grad, rows_in.grad, atol=1e-9)
    assert bool((dense_in.grad.movedim(1, -1)[labels == 255] == 0).all())  # ignored pixels get no gradient
    assert out.stats["accuracy"] == pytest.approx(cls.stats["accuracy"]) and out.stats["entropy"] == pytest.approx(cls.stats["entropy"])


def test_dense_sft_equals_flattened_cross_entropy():
    from bench.methods import build_method

    sft = build_method("sft", {"ignore_index": 255})
    logits, labels = _dense_batch(seed=4)
    dense = sft.loss(logits, labels, None)
    rows = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    keep = labels.reshape(-1) != 255
    flat = torch.nn.functional.cross_entropy(rows[keep], labels.reshape(-1)[keep])
    assert float(dense.loss) == pytest.approx(float(flat), rel=1e-9)
    reference = sft.loss(rows[keep], labels.reshape(-1)[keep], None).stats
    assert dense.stats["entropy"] == pytest.approx(reference["entropy"]) and dense.stats["accuracy"] == pytest.approx(reference["accuracy"])


def test_dense_multi_pass_grpo_rm_with_cached_rollout_matches_plain(monkeypatch):
    """μ = 3 on dense logits: the first pass (ρ = 1) stores π_old's reduction (advantages, p_old)
    and later passes after updates (ρ ≠ 1, clipping) read it; every pass equals the plain formulation."""
    from bench.methods import base, build_method
    from bench.methods.grpo_rm import GRPORMParams, grpo_rm_loss

    monkeypatch.setattr(base, "QUESTION_CHUNK", 13)
    method = build_method("grpo_rm", {"ignore_index": 255, "mu": 3})
    logits, labels = _dense_batch(seed=5)
    rollout = method.rollout(logits, labels, None)
    flat_old, _ = base.flatten_questions(logits, labels, 255)
    plain_rollout = base.Rollout(old_logp=flat_old.log_softmax(-1))
    params = GRPORMParams(ignore_index=255, mu=3)
    for step, shift in enumerate((0.0, 0.5, 1.0)):  # the policy after 0, 1, 2 updates
        current = logits + shift * torch.randn(logits.shape, generator=torch.Generator().manual_seed(step), dtype=logits.dtype)
        a, b = current.clone().requires_grad_(True), current.clone().requires_grad_(True)
        if step == 0:
            rollout.old_logits = a.detach()  # the first pass is the rollout's own forward
        fused = method.loss(a, labels, rollout)
        assert rollout.dense is not None and rollout.old_logits is None  # stored after the first pass
        fused.loss.backward()
        plain = grpo_rm_loss(b, labels, plain_rollout, params)
        plain.loss.backward()
        assert fused.loss.item() == pytest.approx(plain.loss.item(), abs=1e-6)
        assert torch.allclose(a.grad, b.grad, atol=1e-7, rtol=1e-5)
        for key, value in plain.stats.items():
            assert fused.stats[key] == pytest.approx(value, abs=1e-6), (step, key)
    assert fused.stats["clip_fraction"] > 0.05


def test_compiled_chunk_kernel_matches_eager(monkeypatch):
    """At segmentation scale the later-pass kernel runs through torch.compile; force it on a
    small batch (one chunk shape, one compile) and compare with the eager kernel.

    Inductor proves each vector extension the CPU reports by building a probe library and loading
    it in a fresh Python that imports torch: ten such processes were 20 of this test's 30 s. Here
    the probes are still built, by the same compiler and flags, and loaded with ctypes in this
    process instead (a probe only defines functions: loading runs none of them). The choice of
    extensions, and any fallback, stays inductor's."""
    import ctypes
    import subprocess
    from types import SimpleNamespace

    from torch._inductor import cpu_vec_isa

    from bench.methods import base, build_method
    from bench.methods import grpo_rm_fused as fused

    before, after = cpu_vec_isa.VecISA._avx_py_load.split("__lib_path__")

    def load_probe_here(command: list[str], **_) -> int:
        code = command[-1]
        assert command[-2] == "-c" and code.startswith(before) and code.endswith(after), command
        try:
            ctypes.CDLL(code[len(before): len(code) - len(after)])
        except OSError as exc:
            raise subprocess.CalledProcessError(1, command) from exc
        return 0

    monkeypatch.setattr(cpu_vec_isa, "subprocess", SimpleNamespace(check_call=load_probe_here, DEVNULL=subprocess.DEVNULL))
    monkeypatch.setattr(base, "QUESTION_CHUNK", 35)  # 5×7 pixels per image: every chunk has one shape
    logits, labels = _dense_batch(seed=6)
    logits = logits.float()
    moved = logits + 0.5 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    results = {}
    for mode, threshold in (("eager", 1 << 62), ("compiled", 0)):
        monkeypatch.setattr(fused, "COMPILE_MIN_ELEMENTS", threshold)
        method = build_method("grpo_rm", {"ignore_index": 255, "mu": 2})
        first = logits.clone().requires_grad_(True)
        rollout = method.rollout(first, labels, None)
        method.loss(first, labels, rollout).loss.backward()
        second = moved.clone().requires_grad_(True)
        out = method.loss(second, labels, rollout)
        out.loss.backward()
        results[mode] = (out.loss.item(), second.grad, out.stats)
    assert set(fused._compiled) == {fused._rollout, fused._surrogate}  # the compiled kernels really ran
    (le, ge, se), (lc, gc, sc) = results["eager"], results["compiled"]
    assert lc == pytest.approx(le, abs=1e-6) and torch.allclose(gc, ge, atol=1e-7, rtol=1e-4)
    assert all(sc[k] == pytest.approx(se[k], abs=1e-5) for k in se)


def _logit_grad(method, logits, labels):
    z = logits.clone().requires_grad_(True)
    rollout = method.rollout(z, labels, None)
    method.loss(z, labels, rollout).loss.backward()
    return z.grad


def test_mu1_grpo_rm_without_uniformity_reward_is_the_linear_margin_loss():
    """The README's derivation: rewards C·[i = y] have mean 1 and unbiased std √C, so at μ = 1 the
    logit gradient −A/C = −([i = y] − 1/C)/(√C + eps)·(√C/C)… = the margin loss's gradient
    −([i = y] − 1/C)/√C, times √C/(√C + eps). Checked against the margin written out here."""
    torch.manual_seed(0)
    c = 10
    logits, labels = torch.randn(32, c) * 3, torch.randint(0, c, (32,))
    grpo = build_method("grpo_rm", {"uni_weight": 0.0, "adv_eps": 1e-4})
    g = _logit_grad(grpo, logits, labels)
    onehot = F.one_hot(labels, c).float()
    margin_grad = -(onehot - 1.0 / c) / math.sqrt(c) / len(labels)  # d/dz of −mean_n (z_y − mean z)/√C
    assert torch.allclose(g, margin_grad * math.sqrt(c) / (math.sqrt(c) + 1e-4), atol=1e-7)
    assert torch.allclose(_logit_grad(build_method("linear_margin"), logits, labels), margin_grad, atol=1e-7)


@pytest.mark.parametrize("spread", [0.5, 3.0])
def test_mu1_grpo_rm_with_both_rewards_stays_close_to_the_margin(spread):
    """The uniformity reward −p_i perturbs each reward by at most 1 next to C: the logit gradient
    keeps a cosine above 0.99 with the margin's, question by question."""
    torch.manual_seed(1)
    c = 10
    logits, labels = torch.randn(64, c) * spread, torch.randint(0, c, (64,))
    g = _logit_grad(build_method("grpo_rm"), logits, labels)
    m = _logit_grad(build_method("linear_margin"), logits, labels)
    assert F.cosine_similarity(g, m, dim=-1).min() > 0.99


def test_advantage_normalisations_against_their_formulas():
    rewards = torch.tensor([[10.0, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0], [0.0, 0.0, 0.0, 4.0]])
    centred = rewards - rewards.mean(-1, keepdim=True)
    none = group_advantages(rewards, GRPORMParams(adv_norm="none"))
    assert torch.allclose(none, centred)  # Dr. GRPO: no std at all
    batch = group_advantages(rewards, GRPORMParams(adv_norm="batch_std", adv_eps=1e-4))
    all_centred = centred.flatten()
    s = math.sqrt(((all_centred - all_centred.mean()) ** 2).sum().item() / (all_centred.numel() - 1))
    assert torch.allclose(batch, centred / (s + 1e-4))
    group = group_advantages(rewards, GRPORMParams())
    assert not torch.allclose(group[2], batch[2])  # the third question's own std differs from the batch's


def test_policy_stats_logit_norm_margin_and_p_true():
    from bench.methods.base import policy_stats

    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 4.0]])
    stats = policy_stats(logits, torch.tensor([0, 1]))
    p = logits.softmax(-1)
    assert stats["p_true"] == pytest.approx(((p[0, 0] + p[1, 1]) / 2).item())
    assert stats["logit_norm"] == pytest.approx((math.sqrt(10) + 4) / 2)
    assert stats["margin"] == pytest.approx((2 + 4) / 2) and stats["accuracy"] == 0.5
