"""Scoring a built run: each evaluation protocol's units, resumable, and the metrics of a split.

Which protocols exist and which splits each scores is :mod:`bench.protocols` (below the run
config, which validates against it); this module runs them on a built run: the resume loop
(:func:`evaluate_protocol`), the scorer of the run's own splits (:func:`score_own_split`) and the
classification metrics of a split (:func:`evaluate_split`: top-1/top-5/NLL/ECE/Brier).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from bench.lazy import lazy, no_grad
from bench.protocols import Metrics, Protocol, scorer

torch = lazy("torch")  # validating a suite imports this module; scoring a split needs torch
F = lazy("torch.nn.functional")

if TYPE_CHECKING:
    from torch import Tensor

    from bench.distributed import DistContext
    from bench.built import BuiltRun
    from bench.store import RunDir


def score_unit(protocol: Protocol, run: "BuiltRun", run_dir: "RunDir", unit: str) -> tuple[dict[str, Metrics], dict[str, dict[str, Any]]]:
    """(metric entries, per-image arrays by split) of one unit, by the protocol's scorer."""
    return scorer(protocol.scorer)(protocol, run, run_dir, unit)


def score_own_split(protocol: Protocol, run: "BuiltRun", run_dir: "RunDir", unit: str) -> tuple[dict[str, Metrics], dict[str, dict[str, Any]]]:
    """A split of the run's own dataset, scored with its model and head (heldout, id, shift)."""
    scores = score_split(run, unit)
    per_image = scores.pop("per_image", None)
    return {unit: {**scores, "shift": run.entry.is_shift(unit), "protocol": protocol.name}}, ({unit: per_image} if per_image is not None else {})


def score_split(run: "BuiltRun", split: str) -> dict[str, Any]:
    """The model + head's metrics on one of the run's own splits, with the split's facts.

    With several processes every rank calls this for every split and scores its share
    (:mod:`bench.distributed`), from pixels: the frozen-prefix cache would embed the whole
    split on every rank, and a process of a multi-process job runs one run, so no other run
    reuses those tokens. Every rank returns the whole split's numbers."""
    from bench.distributed import eval_batches
    from bench.features import SplitInputs
    from bench.segment import evaluate_segmentation

    cfg, ctx = run.cfg, run.ctx
    if run.dense:
        data = cfg.data.load(split)
        s = cfg.seg
        scores = evaluate_segmentation(run.logits, data, run.num_classes, run.entry.ignore_index, s.test_scale, s.crop, s.slide_stride, run.device,
                                       num_workers=cfg.data.workers(), ctx=ctx, norm=run.norm)
        return {**scores, "split_facts": data.meta}
    if not ctx.active:
        inputs = run.inputs(split)
        scores = evaluate_split(run.logits, inputs.sequential(cfg.train.eval_batch_size), inputs.labels, run.device, inputs.split.label_space)
        return {**scores, "split_facts": inputs.split.meta}
    data = run.train_split if split == cfg.data.resolved_train_split else cfg.data.load(split)
    inputs = SplitInputs(data, run.transform, cfg.data.workers())
    index = eval_batches(len(inputs), cfg.train.eval_batch_size, ctx)

    def from_pixels(x: Tensor) -> Tensor:
        with run.autocast:
            return run.model(x)

    scores = evaluate_split(from_pixels, inputs.batches(index), inputs.labels, run.device, data.label_space, index=index, ctx=ctx)
    return {**scores, "split_facts": data.meta}


def evaluate_protocol(protocol: Protocol, run: "BuiltRun", run_dir: "RunDir", done: Callable[[str], None] | None = None) -> dict[str, Metrics]:
    """Every unit of ``protocol`` for a built run: scored, or read back when a previous attempt
    saved it (:meth:`RunDir.save_evaluation`), so an evaluation interrupted after k of n units
    resumes at unit k + 1; ``done`` is called after each unit (progress).

    With several processes every rank scores every unit together (each its share of the images:
    :mod:`bench.distributed`), so every rank must take the same path: rank 0 alone reads and
    writes the run directory, and whether a unit is scored or read back from its saved scores is
    rank 0's decision, broadcast. Ranks other than 0 return the units they scored (whole-split
    numbers, like rank 0's) and nothing for units rank 0 read back; only rank 0's are recorded."""
    out: dict[str, Metrics] = {}
    ctx = run.ctx
    for unit in protocol.units(run.cfg):
        saved = run_dir.saved_evaluation(unit) if ctx.is_main else None
        if ctx.from_main(saved is None):  # a collective: all ranks score, or none does
            metrics, per_image = score_unit(protocol, run, run_dir, unit)
            if ctx.is_main:
                run_dir.save_evaluation(unit, metrics, per_image)
        else:
            metrics, per_image = saved if saved is not None else ({}, {})
        run.per_image.update(per_image)  # saved beside result.json (predictions.npz)
        out.update(metrics)
        if done:
            done(unit)
    return out


ECE_BINS = 15  # equal-width confidence bins, the usual definition (Guo et al., 2017)


def calibration_bins(confidence: Tensor, correct: Tensor, bins: int = ECE_BINS) -> tuple[Tensor, Tensor, Tensor]:
    """(count, confidence sum, correct sum) per bin; bin b holds (b/bins, (b+1)/bins]."""
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    count = torch.bincount(index, minlength=bins).double()
    conf_sum = torch.bincount(index, weights=confidence.double(), minlength=bins)
    correct_sum = torch.bincount(index, weights=correct.double(), minlength=bins)
    return count, conf_sum, correct_sum


def expected_calibration_error(count: Tensor, conf_sum: Tensor, correct_sum: Tensor) -> float:
    """Σ_b (n_b / N) · |accuracy_b − confidence_b| = Σ_b |correct_b − confidence_b| / N."""
    return float((correct_sum - conf_sum).abs().sum() / count.sum())


@no_grad
def evaluate_split(
    logits_fn: Callable[[Tensor], Tensor],
    batches: Iterable[Tensor],
    labels: np.ndarray,
    device: torch.device,
    label_space: Sequence[int] | None = None,
    *,
    index: Sequence[Tensor] | None = None,
    ctx: DistContext | None = None,
) -> dict[str, Any]:
    """top-1 / top-5 / NLL / ECE / Brier over a split fed as ``batches`` of inputs whose labels
    are ``labels``, plus per-image correctness, true-class probability and predicted class (``per_image``, numpy
    arrays in image order: what paired tests over images need; not stored in result.json).

    ``label_space`` restricts predictions to a class subset (ImageNet-R/-A's 200 classes, the 9
    classes CIFAR-10 shares with STL-10): other logits are set to −inf before top-k and softmax.
    ECE uses the top-1 probability in 15 equal-width bins; Brier is the multi-class score
    Σ_k (p_k − 1[k = y])², averaged over images.

    ``index`` gives each batch's image indices; without it the batches are the split's images
    in order. With several processes (``ctx`` active) every rank passes its share of the split
    (:func:`bench.distributed.eval_batches`, possibly none) and ``index``. Each batch becomes a
    record (top-1/top-5 counts, NLL and Brier sums, calibration bins, per-image arrays); the
    records of all ranks are gathered and added up in the order of their first image, which is
    the order one process adds the same batches in. So every rank returns what one process
    returns: counts exactly, float sums bitwise whenever each batch's logits are (the same batch
    on the same kind of device), rather than up to the reordering an all-reduce of partial sums
    would bring. The records are a few numbers and two arrays per batch; the gather is one call
    per split, made by every rank after its batches.

    The batches are scored on one CPU thread (:func:`bench.seeding.one_thread`): on CPU, a linear
    head's matmul on a batch splits its sum between threads (ViT-B's 1536 features, batches of
    16 … 256), so the logits, and a near tie, would depend on the run's thread count.
    """
    from bench.seeding import one_thread  # imports torch: only when a split is scored

    with one_thread():
        records = _score_batches(logits_fn, batches, labels, device, label_space, index)
    return _total(records, len(labels), label_space, ctx)


def _score_batches(logits_fn: Callable[[Tensor], Tensor], batches: Iterable[Tensor], labels: np.ndarray, device: torch.device,
                   label_space: Sequence[int] | None, index: Sequence[Tensor] | None) -> list[dict[str, Any]]:
    """One record per batch (counts, sums, calibration bins, per-image arrays): see evaluate_split."""
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    n = len(y_all)
    outside = None
    records: list[dict[str, Any]] = []
    positions = iter(index) if index is not None else None
    seen = 0
    for x in batches:
        logits = logits_fn(x.to(device, non_blocking=True)).float().cpu()
        if label_space is not None:
            if outside is None:
                outside = torch.ones(logits.shape[-1], dtype=torch.bool)
                outside[list(label_space)] = False
            logits = logits.masked_fill(outside, float("-inf"))
        pos = torch.arange(seen, seen + len(logits)) if positions is None else next(positions, None)
        if pos is None or len(pos) != len(logits):
            raise ValueError(f"a batch of {len(logits)} inputs for {'no' if pos is None else len(pos)} indices")
        seen += len(logits)
        if not len(logits):
            continue
        if int(pos.max()) >= n:
            raise ValueError(f"evaluated inputs beyond the {n} labels")
        y = y_all[pos]
        k = min(5, logits.shape[-1] if label_space is None else len(label_space))
        topk = logits.topk(k, dim=-1).indices
        hit = topk[:, 0] == y
        p = logits.softmax(-1)
        p_true = p.gather(1, y[:, None])[:, 0]
        records.append({
            "pos": pos.numpy(), "correct1": int(hit.sum()), "correct5": int((topk == y[:, None]).any(-1).sum()),
            "nll": float(F.cross_entropy(logits, y, reduction="sum")), "brier": float(((p**2).sum(-1) - 2 * p_true + 1).sum()),
            "bins": calibration_bins(p.max(-1).values, hit), "correct": hit.numpy(), "p_true": p_true.numpy(),
            "pred": topk[:, 0].numpy().astype(np.int32),  # the predicted class (per-sample outputs; no metric reads it)
        })
    if positions is not None and next(positions, None) is not None:
        raise ValueError("fewer batches than index tensors")
    return records


def _total(records: list[dict[str, Any]], n: int, label_space: Sequence[int] | None, ctx: DistContext | None) -> dict[str, Any]:
    """The split's metrics from every rank's batch records, added up in the order of their first image."""
    if ctx is not None and ctx.active:
        records = ctx.gather(records)
    records.sort(key=lambda r: int(r["pos"][0]))
    correct1 = correct5 = 0
    nll = brier = 0.0
    bins = [torch.zeros(ECE_BINS, dtype=torch.float64) for _ in range(3)]
    for r in records:  # one process's order of addition, whoever scored each batch
        correct1 += r["correct1"]
        correct5 += r["correct5"]
        nll += r["nll"]
        brier += r["brier"]
        for total, part in zip(bins, r["bins"]):
            total += part
    pos = np.concatenate([r["pos"] for r in records]) if records else np.zeros(0, np.int64)
    if len(pos) != n or not np.array_equal(np.sort(pos), np.arange(n)):
        raise ValueError(f"evaluated {len(pos)} inputs for {n} labels" + (" (some twice)" if len(pos) == n else ""))
    correct = np.zeros(n, bool)
    p_true_all = np.zeros(n, np.float32)
    pred_all = np.zeros(n, np.int32)
    if records:
        correct[pos] = np.concatenate([r["correct"] for r in records])
        p_true_all[pos] = np.concatenate([r["p_true"] for r in records])
        pred_all[pos] = np.concatenate([r["pred"] for r in records])
    count, conf_sum, correct_sum = bins
    out: dict[str, Any] = {
        "top1": correct1 / n, "top5": correct5 / n, "nll": nll / n, "n": n,
        "ece": expected_calibration_error(count, conf_sum, correct_sum), "brier": brier / n,
        "calibration": {"bins": ECE_BINS, "count": count.long().tolist(), "confidence_sum": conf_sum.tolist(), "correct_sum": correct_sum.tolist()},
        "per_image": {"correct": correct, "p_true": p_true_all, "pred": pred_all},
    }
    if label_space is not None:
        out["label_space_size"] = len(label_space)
    return out
