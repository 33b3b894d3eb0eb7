"""Fine-tuning objectives, registered by name in :data:`METHODS`."""

from bench.methods.base import METHODS, IGNORE_INDEX, LossOutput, Method, MethodBase, MethodParams, Rollout, display_name
from bench.methods.grpo_rm import GRPORM, GRPORMParams, grpo_rm_loss
from bench.methods.margin import LinearMargin, MarginParams, linear_margin_loss
from bench.methods.sft import SFT, SFTParams, cross_entropy_loss

DEFAULT_COMPARISON = ("grpo_rm", "sft")
"""(treatment, control) of a suite that declares neither ``compare:`` nor ``primary:``: the
question this benchmark was built for. Named here, beside the methods, so that suites and
reports never spell a method out."""

__all__ = [
    "METHODS", "DEFAULT_COMPARISON", "display_name", "IGNORE_INDEX", "LossOutput", "Method", "MethodBase", "MethodParams", "Rollout",
    "GRPORM", "GRPORMParams", "grpo_rm_loss", "SFT", "SFTParams", "cross_entropy_loss",
    "LinearMargin", "MarginParams", "linear_margin_loss",
]


def build_method(name: str, params: dict | None = None, generator=None) -> Method:
    """Instantiate a registered method from its name and parameter dict (validated by its Params).

    ``generator`` seeds any sampling a method does (GRPO-RM's sampled groups).
    """
    cls = METHODS.get(name)
    return cls(cls.Params(**(params or {})), generator=generator)
