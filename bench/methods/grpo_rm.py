"""GRPO-RM (arXiv 2511.15256): classification as GRPO response selection.

For an input x with C classes the output group is the set of classes; the policy of class i is
its softmax probability p_i. Rewards are r_i = w_acc * C * [i = y] − w_uni * p_old_i (accuracy
plus uniformity reward, the latter on the rollout policy), advantages are group-normalised,
and the clipped PPO surrogate (1/G) Σ_i min(ρ_i A_i, clip(ρ_i, 1−ε, 1+ε) A_i) with
ρ_i = π_θ(i|x) / π_old(i|x) is maximised. β = 0 (no KL, no reference model) is the paper's
setting; β > 0 adds the k3 estimator of KL(π_θ ‖ π_ref) against a frozen reference copy.

Choices the paper does not report are explicit parameters with documented defaults:
ε = 0.2, μ = 1 optimisation pass per batch, Bessel-corrected std (as torch.std / common GRPO
code), advantage eps = 1e-4, reward weights 1, the group = all classes (``group="sampled"``
draws G classes per question without replacement from π_old, GRPO's sampled responses).

Why the loss is ≈0 at μ = 1 yet learns: ρ = 1 on the first pass so the surrogate equals
(1/C) Σ A_i = 0, while its gradient on the logits is −A/C (the softmax Jacobian applied to
A/p_old collapses because Σ A_i = 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from bench.lazy import lazy, no_grad
from bench.methods.base import IGNORE_INDEX, METHODS, LossOutput, MethodBase, MethodParams, Rollout, flatten_questions, full_precision, policy_stats

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy("torch")  # params validate without torch; the loss imports it


class GRPORMParams(MethodParams):
    epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="PPO clip range ε (not reported in the paper)")
    mu: int = Field(1, ge=1, description="optimisation passes per batch μ (not reported in the paper)")
    beta: float = Field(0.0, ge=0.0, description="KL weight; 0 = no reference model, the paper's setting")
    acc_weight: float = Field(1.0, ge=0.0, description="scale of the accuracy reward C·[i = y]")
    uni_weight: float = Field(1.0, ge=0.0, description="scale of the uniformity reward −p_i")
    std: Literal["unbiased", "population"] = Field("unbiased", description="group std estimator")
    adv_eps: float = Field(1e-4, gt=0.0, description="eps in A = (r − mean) / (std + eps)")
    adv_norm: Literal["group_std", "none", "batch_std"] = Field(
        "group_std", description="advantage scale: per-group std (GRPO), none (Dr. GRPO: r − mean only), or the std over the whole batch"
    )
    group: Literal["all", "sampled"] = Field("all", description="output group: all classes or G sampled")
    group_size: int | None = Field(None, ge=2, description="G when group = 'sampled'")
    ignore_index: int = Field(IGNORE_INDEX, description="label of unlabelled questions (pixels)")

    @model_validator(mode="after")
    def _group_size_matches_group(self) -> "GRPORMParams":
        if self.group == "sampled" and self.group_size is None:
            raise ValueError("group='sampled' needs group_size (the number G of classes per group)")
        if self.group == "all" and self.group_size is not None:
            raise ValueError("group_size is only used with group='sampled'; remove it or set group: sampled")
        return self


def sample_groups(old_logp: Tensor, group_size: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``group_size`` distinct classes per row from π_old (Gumbel top-k), shape (N, G)."""
    if group_size > old_logp.shape[-1]:
        raise ValueError(f"group_size {group_size} exceeds the number of classes {old_logp.shape[-1]}")
    uniform = torch.rand(old_logp.shape, generator=generator, device=old_logp.device).clamp_min(1e-20)
    gumbel = -torch.log(-torch.log(uniform))
    return (old_logp + gumbel).topk(group_size, dim=-1).indices


def group_rewards(old_p: Tensor, is_true: Tensor, num_classes: int, params: GRPORMParams) -> Tensor:
    """r_i = w_acc · C · [i = y] − w_uni · p_old_i for each group member."""
    return params.acc_weight * num_classes * is_true.to(old_p.dtype) - params.uni_weight * old_p


def group_advantages(rewards: Tensor, params: GRPORMParams) -> Tensor:
    """A_i = (r_i − mean_j r_j) / scale, the mean over the last (group) axis. The scale is the
    group's std + eps (GRPO), 1 (``none``: Dr. GRPO's unnormalised advantages), or the std of all
    centred rewards of the batch + eps (``batch_std``: one scale shared by every question)."""
    centred = rewards - rewards.mean(-1, keepdim=True)
    unbiased = params.std == "unbiased"
    if params.adv_norm == "none":
        return centred
    if params.adv_norm == "batch_std":
        return centred / (centred.std(unbiased=unbiased) + params.adv_eps) if centred.numel() > 1 else centred
    return centred / (rewards.std(-1, keepdim=True, unbiased=unbiased) + params.adv_eps)


def grpo_rm_loss(
    logits: Tensor, labels: Tensor, rollout: Rollout, params: GRPORMParams
) -> LossOutput:
    """Negative clipped GRPO surrogate averaged over labelled questions.

    ``rollout.old_logp`` (and ``ref_logp``/``group`` if present) must already be flattened to
    the labelled questions, i.e. come from :meth:`GRPORM.rollout` on the same labels.
    """
    logits, labels = flatten_questions(logits, labels, params.ignore_index)
    num_classes = logits.shape[-1]
    logp = full_precision(logits).log_softmax(-1)
    old_logp = rollout.old_logp
    ref_logp = rollout.ref_logp
    if rollout.group is None:
        members = torch.arange(num_classes, device=logits.device).expand_as(logp)
    else:
        members = rollout.group
        logp, old_logp = logp.gather(-1, members), old_logp.gather(-1, members)
        ref_logp = ref_logp.gather(-1, members) if ref_logp is not None else None

    rewards = group_rewards(old_logp.exp(), members == labels[:, None], num_classes, params)
    adv = group_advantages(rewards, params)
    ratio = (logp - old_logp).exp()
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - params.epsilon, 1.0 + params.epsilon) * adv
    objective = torch.minimum(unclipped, clipped)
    if params.beta > 0.0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs reference log-probabilities in the rollout")
        log_ref_ratio = ref_logp - logp
        k3 = log_ref_ratio.exp() - log_ref_ratio - 1.0  # unbiased, non-negative KL(π_θ‖π_ref) estimate
        objective = objective - params.beta * k3
    loss = -objective.mean(-1).mean() if objective.numel() else logits.sum() * 0.0

    with torch.no_grad():
        old_p_full = rollout.old_logp.exp()
        full_rewards = group_rewards(
            old_p_full, torch.nn.functional.one_hot(labels, num_classes).bool(), num_classes, params
        )
        stats = {
            "loss": loss.item(),
            # E_{o~π_old}[r(o)]: the reward the rollout policy collects on average. (The plain
            # mean over a full group is the constant (C−1)/C and would say nothing.)
            "reward_mean": (old_p_full * full_rewards).sum(-1).mean().item(),
            "adv_mean": adv.mean().item(),
            "adv_std": adv.std().item() if adv.numel() > 1 else 0.0,
            "adv_max": adv.max().item() if adv.numel() else float("nan"),
            # share of group members whose clipped term binds, i.e. whose gradient is cut
            "clip_fraction": (clipped < unclipped).float().mean().item(),
            **policy_stats(logits, labels),
        }
    return LossOutput(loss, stats)


@METHODS.register("grpo_rm")
class GRPORM(MethodBase):
    name: ClassVar[str] = "grpo_rm"
    display_name: ClassVar[str] = "GRPO-RM"
    Params = GRPORMParams
    params: GRPORMParams

    @property
    def passes(self) -> int:
        return self.params.mu

    @property
    def needs_reference(self) -> bool:
        return self.params.beta > 0.0

    @property
    def fused(self) -> bool:
        """The chunked closed-form path (grpo_rm_fused) serves the paper's setting."""
        return self.params.group == "all" and self.params.beta == 0.0 and self.params.adv_norm == "group_std"

    @no_grad
    def rollout(self, logits: Tensor, labels: Tensor, ref_logits: Tensor | None) -> Rollout:
        if self.fused and logits.dim() > 2:  # dense: keep the logits themselves (a view, no copy)
            return Rollout(old_logits=logits.detach())
        flat_logits, flat_labels = flatten_questions(logits.detach(), labels, self.params.ignore_index)
        old_logp = full_precision(flat_logits).log_softmax(-1)
        ref_logp = None
        if ref_logits is not None:
            ref_flat = flatten_questions(ref_logits.detach(), labels, self.params.ignore_index)[0]
            ref_logp = full_precision(ref_flat).log_softmax(-1)
        group = None
        if self.params.group == "sampled":
            group = sample_groups(old_logp, self.params.group_size or 0, self.generator)
        return Rollout(old_logp=old_logp, ref_logp=ref_logp, group=group)

    def loss(self, logits: Tensor, labels: Tensor, rollout: Rollout | None) -> LossOutput:
        if rollout is None:
            raise ValueError("GRPO-RM needs the rollout of the batch (call rollout() on the first pass)")
        if rollout.dense is not None or rollout.old_logits is not None:
            keep = {} if self.params.mu > 1 and rollout.dense is None else None
            old = rollout.dense if rollout.dense is not None else rollout.old_logits
            from bench.methods.grpo_rm_fused import fused_grpo_rm_loss  # defines a torch.autograd.Function

            loss, stats = fused_grpo_rm_loss(logits, old, labels, self.params, keep)
            if keep:  # later passes read the stored reduction; the rollout logits can go
                rollout.dense, rollout.old_logits = keep["dense"], None
            return LossOutput(loss, stats)
        return grpo_rm_loss(logits, labels, rollout, self.params)
