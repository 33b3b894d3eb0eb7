"""Significance of a paired Δ that accounts for seed noise *and* test-set noise.

Why: the seed-level t-interval (:func:`bench.report.aggregate.paired_delta`) treats each seed's
accuracy as exact. It is not: every seed is scored on the same finite test set, so a Δ can look
certain (three seeds, the same +2 points each: a zero-width interval) while the images that
produce it are few enough to be chance. Each run's ``predictions.npz`` holds per image whether
top-1 was right (``<split>::correct``); both methods score the same images in the same order, so
the per-image difference ``d = correct_treatment − correct_control`` ∈ {−1, 0, 1} is paired.

The bootstrap (:func:`paired_bootstrap`), B replicates (2,000 by default), each:

1. *images*: the test images are resampled with replacement — the same indices for both methods
   (the difference is per image) and, by default (``images="shared"``), for every seed as well:
   all seeds are scored on one test set, so its sampling error is shared by them (seeds and images
   are crossed, not nested). ``images="per_seed"`` draws each seed's images independently (a
   nested design; it shrinks the test-set noise by up to the number of seeds when the seeds err
   on the same images). Each OOD split is resampled on its own; an average (``ood_avg``, a
   corruption set's mean, a transfer average) is recombined from its splits with the same
   weights as :func:`bench.report.aggregate.with_averages`.
2. *seeds*: by default (``seed_level="student_t"``) the seed-to-seed spread enters as
   s/√n · T with T ~ Student t(n − 1) and s the standard deviation of the per-seed Δ: resampling
   three seeds with replacement gives only ten distinct means, and its percentile interval is the
   range of the seeds — about a 75% interval, not a 95% one. With no image noise this level alone
   reproduces the seed-level t-interval exactly; with no seed spread the images alone decide.
   ``seed_level="resample"`` resamples the seed pairs with replacement instead (fine for many
   seeds; too narrow for few).

The CI is the percentile interval of the replicates; the two-sided p-value is
2 · min((1 + #{Δ* ≤ 0}) / (B + 1), (1 + #{Δ* ≥ 0}) / (B + 1)), capped at 1. One generator,
``numpy.random.default_rng(seed)`` (seed 0), is started per comparison, so a comparison's interval
does not depend on which other comparisons a report holds. A zero-width interval is never
significant and gets no p-value; with one seed there is no interval (seed noise unmeasured).

Image resampling is drawn per distinct *pattern* (a column of d over seeds; at most 3^seeds of
them) from a multinomial with the patterns' frequencies: the same distribution as drawing n image
indices, at a cost independent of the number of images.

Where a run's predictions are missing (older results), unreadable, or disagree with its
result.json, the Δ keeps the seed-level t-interval, and the report says so (``ci_method``).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.report.aggregate import CONFIDENCE, FINAL, GROUP_COLUMNS, significant, stage_of, zero_width

B_DEFAULT = 2000
SEED_DEFAULT = 0
BOOTSTRAP, T_INTERVAL = "bootstrap", "t"  # the ci_method of a Δ
CORRECT = "correct"  # predictions.npz: <split>::correct
MATCH_TOL = 1e-9  # |mean(correct) − top1 of result.json| above this: the predictions are not this result's

Predictions = dict[str, dict[str, np.ndarray]]  # run_id → split → per-image top-1 correctness (bool)


@dataclass(frozen=True)
class BootstrapSettings:
    """How the paired bootstrap runs; the defaults are the report's (see the module docstring)."""

    replicates: int = B_DEFAULT
    seed: int = SEED_DEFAULT
    seed_level: Literal["student_t", "resample"] = "student_t"
    images: Literal["shared", "per_seed"] = "shared"
    confidence: float = CONFIDENCE

    def describe(self) -> str:
        """One sentence for captions and the verdict box."""
        images = ("images resampled with replacement, the same images for both methods and every seed" if self.images == "shared"
                  else "images resampled with replacement per seed, the same images for both methods")
        seeds = ("seed spread as Student t(n − 1)" if self.seed_level == "student_t" else "seeds resampled with replacement")
        return f"paired bootstrap over test images and seeds ({images}; {seeds}; B = {self.replicates}, rng seed {self.seed})"


# ---- reading predictions ----------------------------------------------------------------------

def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """split → per-image top-1 correctness from one predictions.npz; ValueError when unreadable
    (a damaged file must cost its run the bootstrap, never the report)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key.rsplit("::", 1)[0]: np.asarray(npz[key], dtype=bool) for key in npz.files if key.endswith(f"::{CORRECT}")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: {exc.__class__.__name__}: {exc}") from exc


def load_predictions(paths: Mapping[str, Path]) -> tuple[Predictions, dict[str, str]]:
    """run_id → predictions for every run whose file exists and reads; and run_id → why not for
    the others ('no predictions.npz', or the read error)."""
    found: Predictions = {}
    problems: dict[str, str] = {}
    for run_id, path in paths.items():
        if not Path(path).is_file():
            problems[run_id] = "no predictions.npz"
            continue
        try:
            found[run_id] = read_predictions(Path(path))
        except ValueError as exc:
            problems[run_id] = f"unreadable predictions.npz ({exc})"
    return found, problems


# ---- the bootstrap ---------------------------------------------------------------------------

def _patterns(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct columns of ``d`` (seeds × images) and how many images have each: each seed's
    values coded as small integers, the codes combined per image (fast where np.unique(axis=0)
    sorts rows of floats)."""
    code = np.zeros(d.shape[1], dtype=np.int64)
    size = 1  # how many codes there can be so far
    for row in d:
        values, inverse = np.unique(row, return_inverse=True)
        size *= len(values)
        if size > 2**62:  # too many distinct values to code in int64: the general (slower) path
            return np.unique(d.T, axis=0, return_counts=True)
        code = code * len(values) + inverse
    _, first, counts = np.unique(code, return_index=True, return_counts=True)
    return d[:, first].T, counts


def paired_bootstrap(
    diffs: Sequence[Mapping[str, np.ndarray]], weights: Mapping[str, float], *, replicates: int = B_DEFAULT,
    rng: np.random.Generator | None = None, seed_level: str = "student_t", images: str = "shared",
) -> np.ndarray:
    """B bootstrap replicates of Δ = mean over seeds of Σ_split w · mean over images of d.

    ``diffs[j][split]``: seed pair j's per-image difference (treatment − control) on ``split``;
    every seed must have the same images per split. ``weights``: split → weight of the quantity
    (1 for a single split; 1/k for a mean of k splits). See the module docstring for the scheme."""
    if seed_level not in ("student_t", "resample") or images not in ("shared", "per_seed"):
        raise ValueError(f"unknown bootstrap scheme seed_level={seed_level!r}, images={images!r}")
    rng = rng if rng is not None else np.random.default_rng(SEED_DEFAULT)
    n_seeds, b = len(diffs), int(replicates)
    if n_seeds == 0:
        raise ValueError("no seed pairs")
    # which seed each of a replicate's n_seeds slots holds
    slots = rng.integers(0, n_seeds, size=(b, n_seeds)) if seed_level == "resample" else np.broadcast_to(np.arange(n_seeds), (b, n_seeds))
    per_slot = np.zeros((b, n_seeds))
    for split, weight in weights.items():
        d = np.stack([np.asarray(x[split], dtype=np.float64) for x in diffs])  # seeds × images
        n = d.shape[1]
        if n == 0:
            raise ValueError(f"split {split!r} has no images")
        if images == "shared":
            patterns, counts = _patterns(d)  # distinct columns of d, patterns × seeds
            draws = rng.multinomial(n, counts / n, size=b)  # replicates × patterns
            per_seed = draws @ patterns / n  # replicates × seeds: each seed's mean d on the replicate's images
            per_slot += weight * np.take_along_axis(per_seed, slots, axis=1)
        else:
            values, inverse = np.unique(d, return_inverse=True)
            inverse = inverse.reshape(d.shape)
            probs = np.stack([np.bincount(row, minlength=len(values)) / n for row in inverse])  # seeds × values
            draws = rng.multinomial(n, probs[slots])  # replicates × slots × values: independent images per slot
            per_slot += weight * (draws @ values) / n
    out = per_slot.mean(axis=1)
    if seed_level == "student_t" and n_seeds > 1:
        point = np.array([sum(w * np.mean(x[s]) for s, w in weights.items()) for x in diffs])
        spread = float(np.std(point, ddof=1))
        if spread > 0:
            out = out + spread / math.sqrt(n_seeds) * rng.standard_t(n_seeds - 1, size=b)
    return out


def percentile_ci(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    low, high = np.quantile(replicates, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def bootstrap_p(replicates: np.ndarray) -> float:
    """Two-sided: 2 · min(P(Δ* ≤ 0), P(Δ* ≥ 0)), each with the +1 correction (never exactly 0)."""
    b = len(replicates)
    below = (1 + int(np.sum(replicates <= 0))) / (b + 1)
    above = (1 + int(np.sum(replicates >= 0))) / (b + 1)
    return min(1.0, 2 * min(below, above))


def t_p_value(mean: float, std: float, n: int) -> float:
    """Two-sided one-sample t-test p of the per-seed Δ; NaN for one seed or no spread (an
    interval of zero width measures nothing)."""
    if pd.isna(mean) or pd.isna(std) or n < 2 or std <= 0:
        return math.nan
    t = abs(float(mean)) / (float(std) / math.sqrt(n))
    return float(2 * sps.t.sf(t, n - 1))


def holm(p_values: Sequence[float], alpha: float = 1 - CONFIDENCE) -> list[bool]:
    """Holm's step-down: which hypotheses are rejected with family-wise error ≤ ``alpha`` over all
    of them. A missing p (no interval) counts in the family and is never rejected."""
    p = np.array([1.0 if pd.isna(x) else float(x) for x in p_values])
    m = len(p)
    reject = [False] * m
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - rank):
            break
        reject[int(i)] = True
    return reject


# ---- which splits make a quantity -------------------------------------------------------------

def composition(rows: pd.DataFrame, split: str) -> dict[str, float] | None:
    """split → weight whose weighted sum of a run's measured top-1 values is the run's value of
    ``split``; mirrors :func:`bench.report.aggregate.with_averages`. ``rows``: one run's measured
    rows of one metric. None when ``split`` is no quantity of the run."""
    measured = rows[~rows["derived"].astype(bool)]
    if (measured["split"] == split).any():
        return {split: 1.0}
    shift = measured[(measured["protocol"] == "shift") & measured["ood_set"].notna()]
    if split == "ood_avg":
        sets = shift.groupby("ood_set", sort=False)["split"].apply(list)
        return {s: 1 / len(sets) / len(splits) for splits in sets for s in splits} if len(sets) else None
    if split.endswith("/mean"):
        splits = list(shift.loc[shift["ood_set"] == split[: -len("/mean")], "split"])
        return {s: 1 / len(splits) for s in splits} if splits else None
    if split.startswith("transfer_avg/"):
        probe = split.split("/", 1)[1]
        splits = list(measured.loc[(measured["protocol"] == "transfer") & (measured["probe"] == probe), "split"])
        return {s: 1 / len(splits) for s in splits} if len(splits) > 1 else None
    return None


# ---- Δ rows with the bootstrap ---------------------------------------------------------------

def _run_values(long: pd.DataFrame, metric: str) -> dict[str, pd.DataFrame]:
    rows = long[long["metric"] == metric]
    return {run: part for run, part in rows.groupby("run_id", sort=False)}


def _row_bootstrap(row: Any, runs: pd.DataFrame, values: dict[str, pd.DataFrame], predictions: Predictions,
                   problems: Mapping[str, str], settings: BootstrapSettings) -> tuple[np.ndarray | None, str]:
    """The replicates of one Δ row, or None and why the t-interval stays."""
    group = np.ones(len(runs), dtype=bool)
    for col in GROUP_COLUMNS:
        group &= (runs[col].astype(str) == str(getattr(row, col))).to_numpy()
    mine = runs[group]
    treated = mine[(mine["method"] == row.treatment) & (mine["variant"] == row.treatment_variant)].set_index("seed")["run_id"]
    control = mine[(mine["method"] == row.control) & (mine["variant"] == row.control_variant)].set_index("seed")["run_id"]
    seeds = sorted(set(treated.index) & set(control.index))
    if len(seeds) < 2:
        return None, "one seed: no interval"
    missing = [r for s in seeds for r in (treated[s], control[s]) if r not in predictions]
    if missing:
        reasons = sorted({problems.get(r, "no predictions.npz") for r in missing})
        return None, f"{'; '.join(reasons)} ({len(missing)} of {2 * len(seeds)} runs)"
    diffs, weights = [], None
    for s in seeds:
        pair = []
        for run in (treated[s], control[s]):
            run_rows = values.get(run)
            w = composition(run_rows, row.split) if run_rows is not None else None
            if w is None:
                return None, f"{row.split} is not made of measured splits"
            if weights is None:
                weights = w
            elif set(w) != set(weights) or any(not math.isclose(w[k], weights[k]) for k in w):
                return None, f"{row.split} is averaged over different splits in the paired runs"
            measured = run_rows[~run_rows["derived"].astype(bool)].set_index("split")["value"]
            derived = run_rows.set_index("split")["value"]
            if not math.isclose(sum(wt * measured[k] for k, wt in w.items()), float(derived[row.split]), abs_tol=MATCH_TOL):
                return None, f"{row.split} does not recombine from its splits"
            arrays = predictions[run]
            for k in w:
                if k not in arrays:
                    return None, f"split {k} not in predictions.npz"
                if abs(float(np.mean(arrays[k])) - float(measured[k])) > MATCH_TOL:
                    return None, f"predictions.npz disagrees with result.json on {k}"
            pair.append(arrays)
        t, c = pair
        if any(len(t[k]) != len(c[k]) for k in weights):
            return None, "the paired runs scored different numbers of images"
        diffs.append({k: t[k].astype(np.int8) - c[k].astype(np.int8) for k in weights})
    rng = np.random.default_rng(settings.seed)
    reps = paired_bootstrap(diffs, weights, replicates=settings.replicates, rng=rng, seed_level=settings.seed_level, images=settings.images)
    return reps, ""


def with_bootstrap(delta: pd.DataFrame, long: pd.DataFrame, predictions: Predictions, problems: Mapping[str, str] | None = None,
                   settings: BootstrapSettings = BootstrapSettings(), metric: str = "top1") -> pd.DataFrame:
    """``delta`` (:func:`bench.report.aggregate.paired_delta` rows) with the bootstrap CI and p in
    ``ci_low``/``ci_high``/``p_value``/``significant`` for every ``metric`` row whose runs all have
    matching predictions; other rows keep the seed-level t-interval with its t-test p. Added:
    ``ci_method`` (bootstrap | t), ``ci_note`` (why a ``metric`` row kept the t-interval) and
    ``t_ci_low``/``t_ci_high`` (the seed-only interval, for comparison)."""
    out = delta.copy()
    out["t_ci_low"], out["t_ci_high"] = out["ci_low"], out["ci_high"]
    out["p_value"] = [t_p_value(m, s, n) for m, s, n in zip(out["mean"], out["std"], out["n"])]
    out["ci_method"], out["ci_note"] = T_INTERVAL, ""
    if out.empty:
        return out
    runs = long.drop_duplicates("run_id")[["run_id", "method", "variant", "seed", *GROUP_COLUMNS]]
    values = _run_values(long, metric)
    problems = problems or {}
    for i, row in zip(out.index, out.itertuples()):
        if row.metric != metric:
            continue
        reps, why = _row_bootstrap(row, runs, values, predictions, problems, settings)
        if reps is None:
            out.at[i, "ci_note"] = why
            continue
        low, high = percentile_ci(reps, settings.confidence)
        flat = zero_width(low, high)
        out.at[i, "ci_low"], out.at[i, "ci_high"] = low, high
        out.at[i, "p_value"] = math.nan if flat else bootstrap_p(reps)
        out.at[i, "significant"] = significant(low, high)
        out.at[i, "ci_method"] = BOOTSTRAP
    out["significant"] = out["significant"].astype(bool)
    return out


# ---- calibration, pooled over seeds ----------------------------------------------------------

CALIBRATION_COLUMNS = ["run_id", "split", "bin", "count", "confidence_sum", "correct_sum"]


def calibration_bins(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (final run, split, confidence bin) from result.json's ``calibration`` sums.
    Sums, not per-run accuracies, are what pool: a bin's accuracy over seeds is Σ correct / Σ count."""
    rows = []
    for r in results:
        if stage_of(r) != FINAL:
            continue
        for split, values in (r.get("metrics") or {}).items():
            cal = values.get("calibration") if isinstance(values, dict) else None
            if not cal:
                continue
            for k, (count, conf, corr) in enumerate(zip(cal.get("count", []), cal.get("confidence_sum", []), cal.get("correct_sum", []))):
                rows.append({"run_id": r["run_id"], "split": split, "bin": k, "count": float(count), "confidence_sum": float(conf),
                             "correct_sum": float(corr)})
    return pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)


def pooled_ece(count: np.ndarray, confidence_sum: np.ndarray, correct_sum: np.ndarray) -> float:
    """ECE of pooled bins: Σ_bins |accuracy − confidence| · count / total."""
    count = np.asarray(count, dtype=float)
    total = count.sum()
    if total == 0:
        return math.nan
    return float(np.abs(np.asarray(correct_sum, dtype=float) - np.asarray(confidence_sum, dtype=float)).sum() / total)


__all__ = ["BootstrapSettings", "paired_bootstrap", "percentile_ci", "bootstrap_p", "t_p_value", "holm", "composition",
           "with_bootstrap", "load_predictions", "read_predictions", "calibration_bins", "pooled_ece", "BOOTSTRAP", "T_INTERVAL"]
