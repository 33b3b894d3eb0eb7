"""The linear logit-margin loss: the objective GRPO-RM approaches at μ = 1 (an ablation baseline).

At μ = 1 the ratio is 1 on the only pass, so GRPO-RM's gradient on the logits is −A/C (see
bench/methods/grpo_rm.py). Without the uniformity reward the rewards of a question's group are
C at the true class and 0 elsewhere: mean 1, unbiased std √C, so A_i = (C·[i = y] − 1)/(√C + eps)
and the gradient is −([i = y] − 1/C)/√C up to eps. That is exactly the gradient of

    L(z) = −(z_y − mean_j z_j) / √C,

a margin that is linear in the logits and never saturates: unlike cross-entropy it keeps pushing
a correct, confident prediction. The uniformity reward −p_i adds a term of order p/C to each
reward, small next to C, so GRPO-RM with both rewards stays close to this loss (the README
gives the derivation; tests/test_objectives.py checks it numerically). Running this method next
to GRPO-RM shows how much of GRPO-RM's behaviour the margin alone explains.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from typing import TYPE_CHECKING

from pydantic import Field

from bench.methods.base import IGNORE_INDEX, METHODS, LossOutput, MethodBase, MethodParams, Rollout, flatten_questions, full_precision, policy_stats

if TYPE_CHECKING:
    from torch import Tensor


class MarginParams(MethodParams):
    scale: Literal["grpo", "unit"] = Field("grpo", description="grpo: divide by √C (GRPO-RM's logit gradient at μ = 1, same lr scale); unit: plain margin")
    ignore_index: int = Field(IGNORE_INDEX, description="label of unlabelled questions (pixels)")


def linear_margin_loss(logits: Tensor, labels: Tensor, params: MarginParams) -> LossOutput:
    z, y = flatten_questions(logits, labels, params.ignore_index)
    z = full_precision(z)
    num_classes = z.shape[-1]
    margin = z.gather(-1, y[:, None])[:, 0] - z.mean(-1)
    scale = 1.0 / math.sqrt(num_classes) if params.scale == "grpo" else 1.0
    loss = -(margin.mean() * scale) if len(y) else z.sum() * 0.0
    return LossOutput(loss, {"loss": loss.item(), **policy_stats(z, y)})


@METHODS.register("linear_margin")
class LinearMargin(MethodBase):
    name: ClassVar[str] = "linear_margin"
    display_name: ClassVar[str] = "linear margin"
    Params = MarginParams
    params: MarginParams

    def loss(self, logits: Tensor, labels: Tensor, rollout: Rollout | None) -> LossOutput:
        return linear_margin_loss(logits, labels, self.params)
