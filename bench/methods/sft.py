"""Supervised fine-tuning: cross-entropy on the same backbone, head, data and schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from bench.lazy import lazy

from bench.methods.base import IGNORE_INDEX, METHODS, LossOutput, MethodBase, MethodParams, Rollout, dense_policy_stats, flatten_questions, full_precision, policy_stats

if TYPE_CHECKING:
    from torch import Tensor

F = lazy("torch.nn.functional")


class SFTParams(MethodParams):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="cross-entropy label smoothing")
    ignore_index: int = Field(IGNORE_INDEX, description="label of unlabelled questions (pixels)")


def cross_entropy_loss(logits: Tensor, labels: Tensor, params: SFTParams) -> LossOutput:
    if logits.dim() > 2:  # dense: torch's own (B, C, H, W) cross-entropy, no flattened copy
        loss = F.cross_entropy(full_precision(logits), labels, ignore_index=params.ignore_index, label_smoothing=params.label_smoothing)
        return LossOutput(loss, {"loss": loss.item(), **dense_policy_stats(logits, labels, params.ignore_index)})
    flat_logits, flat_labels = flatten_questions(logits, labels, params.ignore_index)
    loss = F.cross_entropy(full_precision(flat_logits), flat_labels, label_smoothing=params.label_smoothing)
    stats = {"loss": loss.item(), **policy_stats(flat_logits, flat_labels)}
    return LossOutput(loss, stats)


@METHODS.register("sft")
class SFT(MethodBase):
    name: ClassVar[str] = "sft"
    display_name: ClassVar[str] = "SFT"
    Params = SFTParams
    params: SFTParams

    def loss(self, logits: Tensor, labels: Tensor, rollout: Rollout | None) -> LossOutput:
        return cross_entropy_loss(logits, labels, self.params)
