"""Feature-transfer evaluation: the fine-tuned backbone frozen, features classified on other datasets.

Features are extracted once per (fine-tuned checkpoint, dataset, split, transform) and cached as
files in the run directory (written atomically), so later evaluations reuse them. Two probes:

- Softmax Regression: L2 multinomial logistic regression on [CLS, mean patch] features
  standardised with the train split's statistics. The inverse regularisation C is swept on a
  seeded held-out slice of the train split, then the model is refit on the whole train split.
  Solver (``transfer.sr_solver``): ``torch`` (default), full-batch L-BFGS on the run's device
  (:mod:`bench.probe`), or ``sklearn``, scikit-learn's LogisticRegression(lbfgs) on CPU, the
  reference; both minimise the same objective.
- kNN as DINOv2 evaluates it: cosine similarity on L2-normalised CLS features, the k = 20
  nearest train features vote with weight exp(sim / T), T = 0.07.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.config import dataset_transform
from bench.data import DATASETS
from bench.data.base import take
from bench.distributed import DistContext, eval_batches
from bench.features import SplitInputs, prefix_tokens
from bench.grid import grid_edge, ties
from bench.io import atomic_torch_save
from bench.probe import SR_SOLVERS, fit_softmax_regression
from bench.seeding import one_thread

if TYPE_CHECKING:
    from bench.built import BuiltRun
    from bench.store import RunDir

ExtractFn = Callable[[], dict[str, Tensor]]


class FeatureCache:
    """``<folder>/<key>.pt`` holding {"cls", "pooled", "labels"}; ``extract`` runs only on a miss."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, identity: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return self.folder / f"{identity.get('dataset', 'features')}_{identity.get('split', '')}_{key}.pt".replace("/", "-")

    def get(self, identity: dict[str, Any], extract: ExtractFn, ctx: DistContext | None = None) -> dict[str, Tensor]:
        """With several processes (``ctx`` active) extraction is collective (:func:`_extract`), so
        whether the file is there is rank 0's answer, followed by all; rank 0 alone writes it, and
        the others read the file rank 0 found (the run directory is shared, as for checkpoints)."""
        path = self.path(identity)
        cached = path.is_file() if ctx is None or ctx.is_main else None
        if ctx is not None:
            cached = ctx.from_main(cached)
        if cached:
            return torch.load(path, map_location="cpu", weights_only=True)
        features = extract()
        if ctx is None or ctx.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(features, path)
        return features


@torch.no_grad()
def knn_votes(train: Tensor, train_labels: Tensor, test: Tensor, num_classes: int, k: int = 20, temperature: float = 0.07,
              chunk: int = 1024) -> Tensor:
    """(n_test, num_classes) weighted kNN votes (DINOv2's protocol): each of the k train features
    most cosine-similar to a test feature votes for its label with weight exp(sim / T); chunked
    over test rows. On one CPU thread (:func:`bench.seeding.one_thread`): the similarity matmul
    splits its sum between threads for some shapes (few train rows, long features), and a
    similarity rounded differently can reorder two neighbours or tip a vote."""
    with one_thread():
        train = F.normalize(train.float(), dim=1)
        test = F.normalize(test.float(), dim=1)
        k = min(k, len(train))
        votes = torch.zeros(len(test), num_classes)
        for start in range(0, len(test), chunk):
            sim = test[start : start + chunk] @ train.T
            top_sim, top_idx = sim.topk(k, dim=1)
            votes[start : start + chunk].scatter_add_(1, train_labels[top_idx], (top_sim / temperature).exp())
    return votes


def knn_top1(train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, num_classes: int,
             k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> float:
    """Weighted kNN accuracy: the share of test features whose :func:`knn_votes` argmax is their label."""
    votes = knn_votes(train, train_labels, test, num_classes, k, temperature, chunk)
    return int((votes.argmax(1) == test_labels).sum()) / len(test)


def softmax_regression(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                       cs: tuple[float, ...], holdout: float, seed: int, max_iter: int = 1000, solver: str = "torch",
                       device: torch.device | str | None = None) -> dict[str, Any]:
    """Sweep C on a held-out slice of train, refit on all of train with the best C, score test.
    ``solver``: "torch" (L-BFGS on ``device``, default CPU) or "sklearn" (the reference, CPU).

    Besides the score it says how much the sweep decided: ``C_at_edge`` ('smallest'/'largest'
    when the best C is at that end of ``cs``: the best may lie beyond the sweep; None inside) and
    ``C_tie`` (the Cs whose held-out accuracy equals the best exactly, and that accuracy, when
    there are several: then the tie-break, the first listed, picked C; None otherwise)."""
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, int(round(holdout * len(train))))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    fit_x, fit_y, val_x, val_y = train[fit_idx], train_labels[fit_idx], train[val_idx], train_labels[val_idx]
    scores = [float((fit_sr(fit_x, fit_y, c, max_iter, solver, device)(val_x) == val_y).mean()) for c in cs]
    best = cs[int(np.argmax(scores))]  # first of equal scores: with cs ascending, the strongest regularisation
    tied = ties(scores, max(scores))
    predict = fit_sr(train, train_labels, best, max_iter, solver, device)
    return {"top1": float((predict(test) == test_labels).mean()), "C": best, "val_top1": max(scores), "val_scores": scores,
            "solver": solver, "C_at_edge": grid_edge(list(cs), best),
            "C_tie": {"Cs": [cs[i] for i in tied], "val_top1": max(scores)} if len(tied) > 1 else None}


def fit_sr(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 1000, solver: str = "torch",
           device: torch.device | str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Standardise with x's statistics, fit L2 multinomial logistic regression; return predict()
    (numpy labels; ``predict.model`` has scikit-learn's coef_, intercept_, classes_)."""
    if solver == "torch":
        model = fit_softmax_regression(torch.as_tensor(x), torch.as_tensor(y), c, max_iter, device=device)
        predict = lambda z: model.predict(torch.as_tensor(z)).cpu().numpy()  # noqa: E731
        predict.model, predict.scaler = model, model.scaler  # type: ignore[attr-defined]
        return predict
    if solver != "sklearn":
        raise ValueError(f"unknown softmax-regression solver {solver!r} (known: {', '.join(SR_SOLVERS)})")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(x), y)
    predict = lambda z: model.predict(scaler.transform(z))  # noqa: E731
    predict.model, predict.scaler = model, scaler  # type: ignore[attr-defined]
    return predict


def score_transfer_unit(protocol: Any, job: "BuiltRun", run_dir: "RunDir", unit: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The transfer protocol's scorer (:mod:`bench.protocols`): one target dataset, ``transfer/<name>``."""
    name = unit.removeprefix("transfer/")
    return evaluate_transfer(job, run_dir, [t for t in job.cfg.transfer.targets if t.name == name]), {}


def evaluate_transfer(job: "BuiltRun", run_dir: "RunDir", targets: list | None = None) -> dict[str, dict[str, Any]]:
    """SR and kNN on each transfer target's features from the frozen fine-tuned backbone
    (``targets``: a subset of the config's, e.g. one at a time; default all)."""
    cfg, tc = job.cfg, job.cfg.transfer
    cache = FeatureCache(run_dir.path / "features")
    weights = weights_digest(job.model)  # features belong to these exact weights
    out: dict[str, dict[str, Any]] = {}
    for target in tc.targets if targets is None else targets:
        entry = DATASETS.get(target.name)
        transform = dataset_transform(target.name, cfg.backbone.img_size)
        if hasattr(job, "normalized"):  # the backbone's own mean/std (a BuiltRun; test doubles may have none)
            transform = job.normalized(transform)
        feats = {}
        for role, split, limit in (("train", target.train_split or entry.train_split, target.train_limit),
                                   ("test", target.test_split or entry.test_split, target.test_limit)):
            identity = {"dataset": target.name, "split": split, "params": target.params, "limit": limit,
                        "transform": [transform.img_size, transform.crop_pct], "weights": weights,
                        "data": job.data_fingerprint(target.name, target.params, split)}  # other data: another entry
            feats[role] = cache.get(identity, lambda split=split, limit=limit: _extract(job, entry, target, split, limit, transform), getattr(job, "ctx", None))
        train_y, test_y = feats["train"]["labels"], feats["test"]["labels"]
        knn = knn_top1(feats["train"]["cls"], train_y, feats["test"]["cls"], test_y, entry.class_count(cfg.data.data_root, **target.params), tc.knn_k, tc.knn_temperature)
        sr = softmax_regression(feats["train"]["pooled"].numpy(), train_y.numpy(), feats["test"]["pooled"].numpy(), test_y.numpy(),
                                tc.sr_cs, tc.sr_holdout, seed=cfg.seed, solver=tc.sr_solver, device=job.device)
        common = {"n": len(test_y), "n_train": len(train_y), "shift": False, "protocol": "transfer", "dataset": target.name}
        out[f"transfer/{target.name}/knn"] = {"top1": knn, **common, "probe": "knn", "k": tc.knn_k, "temperature": tc.knn_temperature}
        out[f"transfer/{target.name}/sr"] = {"top1": sr["top1"], **common, "probe": "softmax_regression", "C": sr["C"],
                                             "val_top1": sr["val_top1"], "C_swept": list(tc.sr_cs), "holdout": tc.sr_holdout,
                                             "solver": sr["solver"], "C_val_top1": sr["val_scores"], "C_at_edge": sr["C_at_edge"],
                                             "C_tie": sr["C_tie"]}
    return out


@torch.no_grad()
def _extract(job: "BuiltRun", entry, target, split: str, limit: int | None, transform) -> dict[str, Tensor]:
    """Global and pooled features (ViT: CLS and [CLS, mean patch]; conv nets: the global pooling)
    of every image of ``split`` (first ``limit`` of a seeded permutation), in image order.

    With several processes each rank embeds its share of the split's batches
    (:func:`bench.distributed.eval_batches`, from pixels: a prefix cache would embed the whole split
    on every rank) and the rows are gathered, so every rank holds all the features — the features
    one process extracts from the same batches. The probes (kNN, Softmax Regression) then run on
    every rank alike: no rank waits in a collective while rank 0 fits them alone (a long wait hits
    NCCL's timeout), and rank 0's numbers are the ones recorded.
    """
    data = entry.load(split, job.cfg.data.data_root, **target.params)
    if limit is not None and limit < len(data):
        data = take(data, np.sort(np.random.default_rng(0).permutation(len(data))[:limit]))
    inputs = SplitInputs(data, transform, job.cfg.data.workers())
    model = job.model.eval()
    ctx = getattr(job, "ctx", None)
    distributed = ctx is not None and ctx.active
    embedded = job.use_prefix_cache and not distributed  # frozen prefix: its tokens are shared by every run of this backbone
    bs = job.cfg.train.eval_batch_size
    if embedded:
        key = job.prefix_key(target.name, target.params, split, transform, limit)
        inputs.tokens = prefix_tokens(model, inputs, bs, job.device, key, getattr(job, "cache_spend", None))
    index = eval_batches(len(inputs), bs, ctx) if distributed else [torch.arange(s, min(s + bs, len(inputs))) for s in range(0, len(inputs), bs)]
    cls, pooled = [], []
    with one_thread():  # the probes' input: the same features whatever the run's thread count
        for x in inputs.batches(index):
            with job.autocast:
                final = model.final_tokens(x.to(job.device), embedded=embedded).float()
            global_feature, pooled_feature = model.probe_features(final)
            cls.append(global_feature.cpu())
            pooled.append(pooled_feature.cpu())
    cls_dim, pooled_dim = model.probe_dims()
    cls_rows = torch.cat(cls) if cls else torch.zeros(0, cls_dim)
    pooled_rows = torch.cat(pooled) if pooled else torch.zeros(0, pooled_dim)
    if distributed:
        rows = torch.cat(index) if index else torch.zeros(0, dtype=torch.long)
        cls_rows, pooled_rows = ctx.gather_rows(cls_rows, rows, len(inputs)), ctx.gather_rows(pooled_rows, rows, len(inputs))
    return {"cls": cls_rows, "pooled": pooled_rows, "labels": torch.from_numpy(np.asarray(data.labels, dtype=np.int64))}


def weights_digest(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        # reshape(-1): 0-d tensors (BatchNorm's num_batches_tracked) have no byte view; other tensors' bytes are the same
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()[:16]
