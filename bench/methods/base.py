"""What every fine-tuning objective shares: the method registry, loss outputs and shape handling.

Objectives are pure functions of logits (+ labels and rollout-time log-probabilities); the
training loop owns models and optimisers. Classification logits are ``(N, C)``; segmentation
logits are ``(B, C, H, W)`` with labels ``(B, H, W)`` — both are flattened to one row per
"question" (image or labelled pixel) before the objective sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from bench.bounds import Checked
from bench.lazy import lazy, no_grad
from bench.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy("torch")  # a suite's method params validate without torch; losses import it

IGNORE_INDEX = -100
"""Default label that marks a question (pixel) as unlabelled; segmentation data passes 255."""


class MethodParams(Checked):
    """Base for each method's settings: unknown keys are errors, values are immutable, floats are
    finite (``gt``/``ge`` bounds let ``.inf`` through)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass
class Rollout:
    """What the policy looked like when the batch was "sampled" (before any update on it)."""

    old_logp: Tensor | None = None  # (N, C) log-probabilities of the rollout policy, detached
    old_logits: Tensor | None = None  # or the rollout logits as given (dense: (B, C, H, W), no copy)
    dense: object | None = None  # or, dense with μ > 1, advantages and p_old computed once (grpo_rm_fused.DenseRollout)
    ref_logp: Tensor | None = None  # (N, C) log-probabilities of a frozen reference policy
    group: Tensor | None = None  # (N, G) class indices forming each question's group, or None = all


@dataclass
class LossOutput:
    loss: Tensor
    stats: dict[str, float] = field(default_factory=dict)


class Method(Protocol):
    """A fine-tuning objective as the trainer sees it."""

    name: ClassVar[str]
    params: MethodParams

    @property
    def passes(self) -> int:
        """Optimisation passes over each batch (GRPO's μ); 1 for SFT."""

    @property
    def needs_reference(self) -> bool:
        """Whether the trainer must keep a frozen reference copy of the model."""

    def rollout(self, logits: Tensor, labels: Tensor, ref_logits: Tensor | None) -> Rollout | None:
        """Freeze what the objective needs from the rollout policy (called on the first pass)."""

    def loss(self, logits: Tensor, labels: Tensor, rollout: Rollout | None) -> LossOutput:
        """The scalar to minimise and per-step statistics for the log."""


class MethodBase:
    """Defaults for a one-pass supervised objective; GRPO-style methods override what differs.

    ``generator`` seeds any sampling a method does; the trainer re-seeds it per epoch so a
    resumed run draws what an uninterrupted one would.
    """

    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]]
    display_name: ClassVar[str] = ""  # how reports name the method ('GRPO-RM'); the registered name when empty

    def __init__(self, params: MethodParams | None = None, generator: torch.Generator | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.generator = generator

    @property
    def passes(self) -> int:
        return 1

    @property
    def needs_reference(self) -> bool:
        return False

    def rollout(self, logits: Tensor, labels: Tensor, ref_logits: Tensor | None) -> Rollout | None:
        return None

    def loss(self, logits: Tensor, labels: Tensor, rollout: Rollout | None) -> LossOutput:
        raise NotImplementedError


METHODS: Registry[type[MethodBase]] = Registry("method")


def display_name(method: str) -> str:
    """How reports name ``method``: its class's ``display_name`` ('GRPO-RM' for grpo_rm), else the
    registered name itself — also for a method this version does not register (a result written
    by another version), so a report never fails on a name it does not know."""
    if method not in METHODS:
        return method
    return getattr(METHODS.get(method), "display_name", "") or method


def flatten_questions(logits: Tensor, labels: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Return ``(N, C)`` logits and ``(N,)`` labels of the labelled questions only.

    ``(B, C)`` passes through; ``(B, C, *spatial)`` becomes one row per pixel. Rows whose label
    equals ``ignore_index`` are dropped, so every objective averages over labelled questions.
    """
    if logits.dim() < 2:
        raise ValueError(f"logits must be (N, C) or (B, C, ...), got shape {tuple(logits.shape)}")
    if logits.dim() > 2:
        if labels.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(
                f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)} without the class axis"
            )
        logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])
        labels = labels.reshape(-1)
    keep = labels != ignore_index
    if not bool(keep.all()):
        logits, labels = logits[keep], labels[keep]
    return logits, labels


def full_precision(x: Tensor) -> Tensor:
    """Upcast half/bfloat16 (autocast outputs) to float32; leave float32/float64 untouched."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@no_grad
def policy_stats(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """What the policy looks like on (flattened, labelled) questions, per step: entropy, accuracy,
    the probability of the true class, the logits' L2 norm and the top-1 − top-2 logit margin.
    GRPO-RM's logit gradient never saturates (−A/C), so logit norm and margin are where a
    collapse shows first; p_true and entropy show what the policy has become."""
    if logits.shape[0] == 0:
        return {k: float("nan") for k in ("entropy", "accuracy", "p_true", "logit_norm", "margin")}
    z = full_precision(logits)
    logp = z.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1).mean()
    accuracy = (logits.argmax(-1) == labels).float().mean()
    top2 = z.topk(min(2, z.shape[-1]), dim=-1).values
    margin = (top2[:, 0] - top2[:, -1]).mean()
    return {
        "entropy": entropy.item(), "accuracy": accuracy.item(), "p_true": logp.gather(-1, labels[:, None]).exp().mean().item(),
        "logit_norm": z.norm(dim=-1).mean().item(), "margin": margin.item(),
    }


QUESTION_CHUNK = 1 << 16


def question_chunks(logits: Tensor, labels: Tensor):
    """(b, pixel slice, logits as (B, C, S), labels as (B, S)) over a (B, C, *spatial) batch:
    dense work in bounded memory (150 classes × 65,536 pixels × 4 B = 39 MB per temporary)."""
    chunk = QUESTION_CHUNK
    z_all = logits.reshape(logits.shape[0], logits.shape[1], -1)
    y_all = labels.reshape(labels.shape[0], -1)
    for b in range(z_all.shape[0]):
        for start in range(0, z_all.shape[2], chunk):
            yield b, slice(start, min(start + chunk, z_all.shape[2])), z_all, y_all


DIAGNOSTIC_QUESTIONS = 1 << 16


@no_grad
def sampled_diagnostics(logits: Tensor, labels: Tensor, ignore_index: int) -> dict[str, float]:
    """p_true, logit norm and margin of :func:`policy_stats` on at most 65,536 questions: all of
    them for classification batches, every k-th pixel of a dense batch (one cheap strided view,
    so the per-pixel losses keep their speed). Exact whenever the batch has fewer questions."""
    if logits.dim() == 2:
        z, y = logits, labels
    else:
        z = logits.reshape(logits.shape[0], logits.shape[1], -1)
        y = labels.reshape(labels.shape[0], -1)
        stride = max(1, -(-z.shape[0] * z.shape[2] // DIAGNOSTIC_QUESTIONS))
        z, y = z[:, :, ::stride].movedim(1, -1).reshape(-1, logits.shape[1]), y[:, ::stride].reshape(-1)
    keep = y != ignore_index
    stats = policy_stats(z[keep], y[keep])
    return {k: stats[k] for k in ("p_true", "logit_norm", "margin")}


@no_grad
def dense_policy_stats(logits: Tensor, labels: Tensor, ignore_index: int) -> dict[str, float]:
    """:func:`policy_stats` over labelled pixels, chunk by chunk (no full-size temporaries);
    p_true, logit norm and margin from :func:`sampled_diagnostics`."""
    entropy, correct, n = 0.0, 0, 0
    for b, cols, z_all, y_all in question_chunks(logits, labels):
        y = y_all[b, cols]
        valid = y != ignore_index
        logp = z_all[b, :, cols].float().log_softmax(0)
        entropy += float(-(logp.exp() * logp).sum(0).mul_(valid).sum())
        correct += int(((logp.argmax(0) == y) & valid).sum())
        n += int(valid.sum())
    return {"entropy": entropy / n if n else float("nan"), "accuracy": correct / n if n else float("nan"),
            **sampled_diagnostics(logits, labels, ignore_index)}
