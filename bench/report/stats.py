"""One uncertainty model for every paired Δ: seeds and test images, crossed.

Why: every seed of a comparison is scored on the same finite test set, so a Δ has two sources of
noise — which seeds trained (seed noise) and which images happened to be in the test set (image
noise) — and the two are *crossed*, not nested: the same images serve every seed. The earlier
bootstrap counted the seed × image interaction twice (once inside the per-seed spread, once in
the image resampling) and resampled shift splits that are built from the same source images as
if they were independent. This module replaces it with a variance-components estimate that is
right by construction and has no Monte-Carlo error.

The model. Seed pair j = 1..n (treatment and control trained with seed j), image i = 1..N of an
*image group* g (splits that share source images, aligned by index: the demo's shift and
generated-corruption splits of its test garments; CIFAR-10-C with CIFAR-10 test; see
:meth:`bench.data.base.DatasetEntry.image_source`). The paired per-image difference of a
quantity (top-1 correctness, or per-image NLL) is combined over the group's splits with the
quantity's split weights, z_gji = Σ_{s∈g} w_s d_jsi, and the quantity is Δ̂ = (1/n) Σ_j T_j with
T_j = Σ_g mean_i z_gji. Writing z_gji = μ_g + a_gj + b_gi + e_gji (seed effect, image effect,
interaction), the variance of Δ̂ over new seeds *and* a new test set is

    V(n) = σ²_seed / n + Σ_g σ²_img,g / N_g + Σ_g σ²_int,g / (n · N_g).

The components are estimated by the two-way ANOVA mean squares of each group (method of moments,
each truncated at 0): S_A = sample variance of T_j over seeds, S_B,g = sample variance over
images of the seed-averaged z̄_g·i, MS_E,g = the residual mean square, so that
σ̂²_int,g = MS_E,g, σ̂²_img,g = max(0, S_B,g − MS_E,g / n), σ̂²_seed = max(0, S_A − Σ_g MS_E,g / N_g).
Untruncated, V̂(n) = S_A/n + Σ_g S_B,g/N_g − Σ_g MS_E,g/(n N_g), an unbiased estimate.
The interval is Δ̂ ± t_{df} · √V̂ with Satterthwaite's degrees of freedom for that linear
combination of mean squares (df → n − 1 when seeds dominate, → large when images do). Its
coverage is checked by simulation with a known true Δ (tests/test_stats_coverage.py), with and
without shared images across splits, at 3, 5 and 10 seeds.

What follows from the components, with no resampling:
- p-values of two-sided and one-sided tests against any null value (claims, equivalence);
- the minimum detectable effect at 80 % power, MDE(n) = (t_{1−α/2,df} + t_{0.8,df}) · √V̂(n);
- V̂ for any other number of seeds n′ (planning), and its floor as n′ → ∞, Σ_g σ̂²_img,g / N_g,
  which only a larger test set lowers.

A quantity without per-image data (transfer probes, ECE, Brier, mIoU) has only its per-seed
values: the seed-level Student-t model (V̂ = s²/n, df = n − 1), whose seed spread then carries
the test-set noise as well; its floor is unknown. Such Δs are marked ``ci_method = "t"``.

The one entry point is :func:`delta_interval` (and :func:`delta_estimate`, which returns the
whole estimate); the verdict box, the claims, the forest plot and the tables all call it.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from bench.report import dist
from bench.report.aggregate import CONFIDENCE, FINAL, GROUP_COLUMNS, scale_of, significant, stage_of, zero_width
from bench.report.schema import row_tuples

CROSSED, T_INTERVAL = "crossed", "t"  # the ci_method of a Δ: seeds × images, or seeds only
POWER = 0.8  # the power a minimum detectable effect is stated at
DF_BOUND = 0.75  # Satterthwaite's seed weight at this upper confidence bound of S_A (small-sample correction, Components.df)
CORRECT, P_TRUE, PRED = "correct", "p_true", "pred"  # predictions.npz: <split>::correct, ::p_true, ::pred (predicted class; runs since per-sample outputs)
MATCH_TOL = {"top1": 1e-9, "nll": 1e-4}  # |per-image mean − result.json| above this: not this result's predictions
PER_IMAGE_METRICS = tuple(MATCH_TOL)  # metrics that are a mean over images, so the crossed model applies

Predictions = Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]  # run_id → split → array name → per-image values


# ---- the estimate ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Components:
    """Estimated variance components of a paired Δ (see the module docstring): ``seed_total`` is
    S_A's expectation part σ²_seed + Σ_g σ²_int,g / N_g at the seeds run (the variance of a seed's
    total over seeds, test set fixed); ``image`` and ``interaction`` are per image group,
    ``sizes`` the images per group."""

    n_seeds: int
    seed: float
    image: tuple[float, ...]
    interaction: tuple[float, ...]
    sizes: tuple[int, ...]
    seed_total: float = math.nan

    def _seed_ms(self, n: int) -> float:
        """S_A, the variance of per-seed totals over seeds: observed at the seeds run, else its
        expectation σ²_seed + Σ_g σ²_int,g / N_g (it does not depend on n)."""
        if n == self.n_seeds and math.isfinite(self.seed_total):
            return self.seed_total
        return self.seed + sum(e / m for e, m in zip(self.interaction, self.sizes))

    def variance(self, n_seeds: int | None = None) -> float:
        """V(n) = S_A / n + Σ_g σ²_img,g / N_g: the spread of per-seed totals (seed noise and the
        seed × image interaction, each once) plus the test set's shared image noise."""
        n = self.n_seeds if n_seeds is None else n_seeds
        return self._seed_ms(n) / n + sum(b / m for b, m in zip(self.image, self.sizes))

    def df(self, n_seeds: int | None = None, bounded: bool = True) -> float:
        """Satterthwaite's degrees of freedom of :meth:`variance`: S_A / n has n − 1; each image
        component (S_B,g − MS_E,g / n) / N_g is a difference of mean squares with N_g − 1 and
        (n − 1)(N_g − 1); a component estimated at 0 contributes no term. ``bounded``: the seed
        term weighted at its upper confidence bound (what intervals and tests use); unbounded, the
        plain approximation of how much V̂ itself varies (what power depends on)."""
        n = self.n_seeds if n_seeds is None else n_seeds
        if n < 2:
            return math.nan
        # the seed term's weight at the one-sided 75 % upper confidence bound of S_A: with 2-4
        # seed df, Satterthwaite's df from the estimate itself is liberal (a by-chance small S_A
        # inflates df: 92.3 % coverage at 3 seeds when seeds dominate); this bound restores
        # 94.9-96.2 % at 3 seeds and leaves 10 seeds at 95.0-95.2 % (simulated, see DF_BOUND)
        inflate = (n - 1) / dist.chi2_ppf(1 - DF_BOUND, n - 1) if bounded else 1.0
        terms = [(self._seed_ms(n) * inflate / n, n - 1)]
        for b, e, m in zip(self.image, self.interaction, self.sizes):
            if b > 0:
                terms.append(((b + e / n) / m, m - 1))
                terms.append((-e / (n * m), (n - 1) * (m - 1)))
        total = sum(c for c, _ in terms)
        denom = sum(c * c / d for c, d in terms if d > 0)
        return float(total * total / denom) if denom > 0 else math.inf

    @property
    def floor(self) -> float:
        """The standard error no number of seeds goes below: the test set's own sampling error."""
        return math.sqrt(sum(v / m for v, m in zip(self.image, self.sizes)))


@dataclass(frozen=True)
class DeltaEstimate:
    """A paired Δ with its standard error, degrees of freedom and, for the crossed model, the
    variance components (None for the seed-level t model)."""

    mean: float
    se: float
    df: float
    n_seeds: int
    method: str  # CROSSED or T_INTERVAL
    components: Components | None = None

    @property
    def defined(self) -> bool:
        """An interval exists: two or more seeds and a positive standard error (a zero-width
        interval measures nothing)."""
        return (self.n_seeds >= 2 and math.isfinite(self.se) and math.isfinite(self.df)
                and self.se > 1e-12 * max(1.0, abs(self.mean)))  # rounding noise of equal values is no spread

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        if self.n_seeds < 2 or not math.isfinite(self.se):
            return math.nan, math.nan
        if self.se == 0:
            return self.mean, self.mean
        half = dist.t_ppf(0.5 + confidence / 2, self.df) * self.se
        return self.mean - half, self.mean + half

    def p_two_sided(self, null: float = 0.0) -> float:
        if not self.defined:
            return math.nan
        return float(2 * dist.t_sf(abs(self.mean - null) / self.se, self.df))

    def p_greater(self, null: float) -> float:
        """One-sided p of H0: Δ ≤ null (evidence that Δ > null)."""
        return dist.t_sf((self.mean - null) / self.se, self.df) if self.defined else math.nan

    def p_less(self, null: float) -> float:
        """One-sided p of H0: Δ ≥ null (evidence that Δ < null)."""
        return dist.t_cdf((self.mean - null) / self.se, self.df) if self.defined else math.nan

    def se_at(self, n_seeds: int) -> float:
        """The standard error expected with ``n_seeds`` seeds and the same test set."""
        if self.components is not None:
            return math.sqrt(self.components.variance(n_seeds))
        return self.se * math.sqrt(self.n_seeds / n_seeds) if self.n_seeds else math.nan

    def df_at(self, n_seeds: int, bounded: bool = True) -> float:
        return self.components.df(n_seeds, bounded) if self.components is not None else float(n_seeds - 1)

    def mde(self, n_seeds: int | None = None, alpha: float = 1 - CONFIDENCE, power: float = POWER) -> float:
        """Minimum detectable effect of the two-sided t-test at ``alpha`` with ``power``, at this
        or another number of seeds: δ · SE where the non-central t with df degrees of freedom and
        non-centrality δ exceeds the critical value with probability ``power``. (The normal
        shortcut (t_{1−α/2} + t_power) · SE under-states it at few df: 64 % power at 3 seeds.)"""
        n = self.n_seeds if n_seeds is None else n_seeds
        if n < 2 or not self.defined:
            return math.nan
        return noncentral_effect(self.df_at(n), alpha, power, self.df_at(n, bounded=False)) * self.se_at(n)

    @property
    def floor(self) -> float:
        """The SE floor of more seeds (NaN when unknown: seed-level model)."""
        return self.components.floor if self.components is not None else math.nan

    def scaled(self, factor: float) -> "DeltaEstimate":
        """The same estimate in other units (×100: fractions to points)."""
        comps = self.components
        if comps is not None:
            f2 = factor * factor
            comps = Components(comps.n_seeds, comps.seed * f2, tuple(v * f2 for v in comps.image), tuple(v * f2 for v in comps.interaction),
                               comps.sizes, comps.seed_total * f2)
        return DeltaEstimate(self.mean * factor, self.se * abs(factor), self.df, self.n_seeds, self.method, comps)


def noncentral_effect(df: float, alpha: float = 1 - CONFIDENCE, power: float = POWER, df_variance: float | None = None) -> float:
    """The non-centrality δ at which a two-sided t-test with critical value t_{1−α/2, df} rejects
    with probability ``power`` when its SE estimate varies like a χ² with ``df_variance`` degrees of
    freedom (default ``df``): an effect of δ standard errors. Remembered with the report's
    estimates (:class:`EstimateCache`): the seed-level model asks it for the same few df again and
    again, and each answer is a root search."""
    cache = _CACHE
    if cache is not None:
        return cache.effect(df, alpha, power, df_variance)
    return _noncentral_effect(df, alpha, power, df_variance)


@lru_cache(maxsize=65536)
def _noncentral_effect(df: float, alpha: float, power: float, df_variance: float | None) -> float:
    from scipy.optimize import brentq

    dv = df if df_variance is None else df_variance
    if not math.isfinite(df) or df > 1e6:
        return float(dist.norm_ppf(1 - alpha / 2) + dist.norm_ppf(power))
    crit = dist.t_ppf(1 - alpha / 2, df)
    dv = min(dv, 1e6) if math.isfinite(dv) else 1e6

    def shortfall(delta: float) -> float:
        p = dist.nct_sf(crit, dv, delta) + dist.nct_cdf(-crit, dv, delta)
        return (1.0 if math.isnan(p) else p) - power  # far in the tail scipy can return NaN: power is 1 there

    return float(brentq(shortfall, 0.0, 4 * crit + 10, xtol=1e-6))


def _group_matrix(diffs: Sequence[Mapping[str, np.ndarray]], splits: list[str], weights: Mapping[str, float]) -> np.ndarray:
    """z (seeds × images) of one image group: Σ over its splits of weight · difference."""
    sizes = {len(np.asarray(diffs[0][s])) for s in splits}
    if len(sizes) != 1:
        raise ValueError(f"splits {', '.join(splits)} share images but have different image counts {sorted(sizes)}")
    z = np.zeros((len(diffs), sizes.pop()))
    for j, d in enumerate(diffs):
        for s in splits:
            z[j] += weights[s] * np.asarray(d[s], dtype=np.float64)
    return z


def delta_estimate(diffs: Sequence[Mapping[str, np.ndarray]], weights: Mapping[str, float], shared: Mapping[str, str] | None = None) -> DeltaEstimate:
    """The crossed seeds × images estimate of Δ = mean over seeds of Σ_split w · mean over images of d.

    ``diffs[j][split]``: seed pair j's per-image difference (treatment − control) on ``split``;
    every seed has the same images per split, in the same order. ``weights``: split → weight of the
    quantity (1 for one split, 1/k for a mean of k). ``shared``: split → image-source key; splits
    with the same key are built from the same source images, aligned by index, and are resampled
    jointly (default: every split its own source)."""
    n = len(diffs)
    if n == 0:
        raise ValueError("no seed pairs")
    source = {s: (shared or {}).get(s, s) for s in weights}
    groups: dict[str, list[str]] = {}
    for s in weights:
        groups.setdefault(source[s], []).append(s)
    zs = [_group_matrix(diffs, splits, weights) for splits in groups.values()]
    if any(z.shape[1] < 2 for z in zs):
        raise ValueError("an image group with fewer than 2 images")
    per_seed = sum(z.mean(axis=1) for z in zs)
    mean = float(np.mean(per_seed))
    if n < 2:
        return DeltaEstimate(mean, math.nan, math.nan, n, CROSSED)
    s_a = float(np.var(per_seed, ddof=1))
    image, interaction, sizes = [], [], []
    for z in zs:
        m = z.shape[1]
        col = z.mean(axis=0)
        resid = z - z.mean(axis=1, keepdims=True) - col + z.mean()
        ms_e = float((resid**2).sum() / ((n - 1) * (m - 1)))
        image.append(max(0.0, float(np.var(col, ddof=1)) - ms_e / n))
        interaction.append(ms_e)
        sizes.append(m)
    seed = max(0.0, s_a - sum(e / m for e, m in zip(interaction, sizes)))
    comps = Components(n, seed, tuple(image), tuple(interaction), tuple(sizes), s_a)
    variance = comps.variance()
    return DeltaEstimate(mean, math.sqrt(variance), comps.df() if variance > 0 else math.inf, n, CROSSED, comps)


def delta_interval(diffs: Sequence[Mapping[str, np.ndarray]], weights: Mapping[str, float], shared: Mapping[str, str] | None = None,
                   confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The two-sided ``confidence`` interval (low, high) of a paired Δ from per-seed, per-split,
    per-image differences: the project's one uncertainty model (see the module docstring and
    :func:`delta_estimate` for the arguments). (nan, nan) with one seed."""
    return delta_estimate(diffs, weights, shared).interval(confidence)


def seed_estimate(values: Sequence[float]) -> DeltaEstimate:
    """The seed-level t model for a Δ known only per seed (no per-image data)."""
    x = np.asarray([v for v in values if not pd.isna(v)], dtype=float)
    n = len(x)
    if n == 0:
        return DeltaEstimate(math.nan, math.nan, math.nan, 0, T_INTERVAL)
    if n < 2:
        return DeltaEstimate(float(x.mean()), math.nan, math.nan, n, T_INTERVAL)
    return DeltaEstimate(float(x.mean()), float(x.std(ddof=1) / math.sqrt(n)), float(n - 1), n, T_INTERVAL)


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


# ---- reading predictions ----------------------------------------------------------------------

def read_predictions(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """split → {correct, p_true[, pred]} per image from one predictions.npz; ValueError when unreadable
    (a damaged file must cost its run the crossed interval, never the report)."""
    try:
        out: dict[str, dict[str, np.ndarray]] = {}
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                split, _, name = key.rpartition("::")
                if name in (CORRECT, P_TRUE, PRED):
                    out.setdefault(split, {})[name] = np.asarray(npz[key])
        return out
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: {exc.__class__.__name__}: {exc}") from exc


def load_predictions(paths: Mapping[str, Path]) -> tuple[Predictions, dict[str, str]]:
    """run_id → predictions for every run whose file exists and reads; and run_id → why not for
    the others ('no predictions.npz', or the read error)."""
    found: dict[str, dict[str, dict[str, np.ndarray]]] = {}
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


class _SplitArrays(Mapping[str, np.ndarray]):
    """One split's arrays of a :class:`_FileArrays` (name → per-image values)."""

    def __init__(self, owner: "_FileArrays", split: str) -> None:
        self.owner, self.split = owner, split

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.owner.names.get(self.split, ()):
            raise KeyError(name)
        return self.owner.kind(name)[self.split]

    def __contains__(self, name: object) -> bool:  # listed, not read
        return name in self.owner.names.get(self.split, ())

    def __iter__(self):
        return iter(sorted(self.owner.names.get(self.split, ())))

    def __len__(self) -> int:
        return len(self.owner.names.get(self.split, ()))


class _FileArrays(Mapping[str, Mapping[str, np.ndarray]]):
    """split → {correct, p_true[, pred]} of one predictions.npz, read a kind at a time: listing the
    file reads its directory only, and the first ask for a kind (say ``correct``) reads that kind
    of every split at once. A top-1 Δ then never reads the other two thirds of the file, and each
    member read costs a header parse. A read that fails records why in ``problems`` (from then on
    the run has no predictions; a kind read before stays usable, so a file damaged in one member
    only can still serve the Δs of another kind) and raises :class:`Unavailable`. A damaged file
    reaches this only if it got past the store's verification (bench.ledger)."""

    def __init__(self, path: Path, run_id: str, problems: dict[str, str]) -> None:
        self.path, self.run_id, self.problems = path, run_id, problems
        self.names: dict[str, set[str]] = {}
        self._kinds: dict[str, dict[str, np.ndarray]] = {}
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                split, _, name = key.rpartition("::")
                if name in (CORRECT, P_TRUE, PRED):
                    self.names.setdefault(split, set()).add(name)

    def kind(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._kinds:
            try:
                with np.load(self.path, allow_pickle=False) as npz:
                    self._kinds[name] = {split: np.asarray(npz[f"{split}::{name}"]) for split, names in self.names.items() if name in names}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                self.problems[self.run_id] = f"unreadable predictions.npz ({self.path}: {exc.__class__.__name__}: {exc})"
                raise Unavailable(self.problems[self.run_id]) from exc
        return self._kinds[name]

    def __getitem__(self, split: str) -> Mapping[str, np.ndarray]:
        if split not in self.names:
            raise KeyError(split)
        return _SplitArrays(self, split)

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


class LazyPredictions(Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]):
    """run_id → predictions, each file listed when a Δ first asks for it and each kind of array
    read when first used (:class:`_FileArrays`; a report whose estimates are remembered reads
    none); a file that is absent or unreadable is recorded in ``problems`` (the mapping
    :func:`load_predictions` returns as its second value) and is then not in it."""

    def __init__(self, paths: Mapping[str, Path], problems: dict[str, str]) -> None:
        self.paths, self.problems = dict(paths), problems
        self._loaded: dict[str, _FileArrays] = {}

    def _load(self, run_id: str) -> bool:
        if run_id in self.problems:
            return False
        if run_id in self._loaded:
            return True
        if run_id not in self.paths:
            return False
        path = Path(self.paths[run_id])
        if not path.is_file():
            self.problems[run_id] = "no predictions.npz"
            return False
        try:
            self._loaded[run_id] = _FileArrays(path, run_id, self.problems)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            self.problems[run_id] = f"unreadable predictions.npz ({path}: {exc.__class__.__name__}: {exc})"
            return False
        return True

    def __getitem__(self, run_id: str) -> Mapping[str, Mapping[str, np.ndarray]]:
        if not self._load(run_id):
            raise KeyError(run_id)
        return self._loaded[run_id]

    def __contains__(self, run_id: object) -> bool:
        return isinstance(run_id, str) and self._load(run_id)

    def __iter__(self):
        return (r for r in self.paths if self._load(r))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def lazy_predictions(paths: Mapping[str, Path]) -> tuple[LazyPredictions, dict[str, str]]:
    """:func:`load_predictions`' pair, each file read on first use."""
    problems: dict[str, str] = {}
    return LazyPredictions(paths, problems), problems


def per_image(arrays: Mapping[str, np.ndarray], metric: str) -> np.ndarray | None:
    """A split's per-image values of ``metric`` (their mean is the split's value): top-1
    correctness, or NLL = −log p(true class). None when the file lacks them."""
    if metric == "top1" and CORRECT in arrays:
        return np.asarray(arrays[CORRECT], dtype=np.float64)
    if metric == "nll" and P_TRUE in arrays:
        with np.errstate(divide="ignore"):
            return -np.log(np.asarray(arrays[P_TRUE], dtype=np.float64))
    return None


# ---- which splits make a quantity -------------------------------------------------------------

def composition(rows: pd.DataFrame, split: str) -> dict[str, float] | None:
    """split → weight whose weighted sum of a run's measured top-1 values is the run's value of
    ``split``; mirrors :func:`bench.report.aggregate.with_averages`. ``rows``: one run's measured
    rows of one metric. None when ``split`` is no quantity of the run."""
    measured = rows[~rows["derived"].astype(bool)]
    return _composition(list(zip(measured["split"], measured["protocol"], measured["ood_set"], measured["probe"])), split)


def _text(value: Any) -> str | None:
    """A long-table text cell, None where it is missing (NA/NaN/None)."""
    return value if isinstance(value, str) else None


def _composition(measured: Sequence[tuple[Any, Any, Any, Any]], split: str) -> dict[str, float] | None:
    """:func:`composition` on a run's measured rows as (split, protocol, OOD set, probe) tuples in
    row order: plain Python, since it runs for every run of every Δ."""
    if any(s == split for s, _, _, _ in measured):
        return {split: 1.0}
    shift = [(s, o) for s, p, o, _ in measured if p == "shift" and _text(o) is not None]
    if split == "ood_avg":
        sets: dict[str, list[str]] = {}
        for s, o in shift:
            sets.setdefault(o, []).append(s)
        return {s: 1 / len(sets) / len(splits) for splits in sets.values() for s in splits} if len(sets) else None
    if split.endswith("/mean"):
        family = split[: -len("/mean")]
        splits = [s for s, o in shift if o == family]
        return {s: 1 / len(splits) for s in splits} if splits else None
    if split.startswith("transfer_avg/"):
        probe = split.split("/", 1)[1]
        splits = [s for s, p, _, q in measured if p == "transfer" and _text(q) == probe]
        return {s: 1 / len(splits) for s in splits} if len(splits) > 1 else None
    return None


# ---- building a Δ's per-image differences from finished runs --------------------------------

class Unavailable(ValueError):
    """Why a Δ keeps the seed-level model: no or unreadable predictions, splits that do not
    recombine, runs that disagree with their predictions."""


def image_sources(dataset: str, splits: Iterable[str]) -> dict[str, str]:
    """split → the key of the source images it is built from, as the dataset declares it
    (:meth:`bench.data.base.DatasetEntry.image_source`); a dataset unknown here keeps every split
    its own source (independent images: the conservative reading for none of them)."""
    from bench.data import DATASETS  # the registry only; no data is read

    entry = DATASETS.get(dataset) if dataset in DATASETS else None
    return {s: (entry.image_source(s) if entry is not None else s) for s in splits}


class RunTable:
    """One run's long-table rows of one metric, with what the Δ code asks of them at hand: the
    measured and derived values by split and each quantity's composition (computed once)."""

    def __init__(self, rows: pd.DataFrame | None = None, *, dataset: str = "", splits: Sequence[Any] = (), values: Sequence[float] = (),
                 derived: Sequence[bool] = (), protocols: Sequence[Any] = (), ood_sets: Sequence[Any] = (), probes: Sequence[Any] = ()) -> None:
        if rows is not None:  # from a frame of one run's rows; run_tables builds them from columns
            dataset = str(rows["dataset"].iloc[0]) if len(rows) else ""
            splits, values = list(rows["split"]), list(rows["value"].astype(float))
            derived, protocols = list(rows["derived"].astype(bool)), list(rows["protocol"])
            ood_sets, probes = list(rows["ood_set"]), list(rows["probe"])
        self.dataset = dataset
        self.measured = {s: v for s, v, d in zip(splits, values, derived) if not d}
        self.values = dict(zip(splits, values))
        self._rows = [(s, p, o, q) for s, d, p, o, q in zip(splits, derived, protocols, ood_sets, probes) if not d]
        self._compositions: dict[str, dict[str, float] | None] = {}

    def composition(self, split: str) -> dict[str, float] | None:
        """:func:`composition` of this run's ``split`` (a measured split is its own, at once)."""
        if split in self.measured:
            return {split: 1.0}
        if split not in self._compositions:
            self._compositions[split] = _composition(self._rows, split)
        return self._compositions[split]


def run_tables(long: pd.DataFrame, metric: str) -> dict[str, RunTable]:
    """run id → :class:`RunTable` of ``metric``, built from the long table's columns in one pass."""
    rows = long[long["metric"] == metric]
    if rows.empty:
        return {}
    columns = {c: rows[c].to_numpy(dtype=object) for c in ("run_id", "dataset", "split", "protocol", "ood_set", "probe")}
    values = rows["value"].to_numpy(dtype=float)
    derived = rows["derived"].astype(bool).to_numpy()
    where: dict[Any, list[int]] = {}
    for i, run in enumerate(columns["run_id"]):
        where.setdefault(run, []).append(i)
    out = {}
    for run, idx in where.items():
        out[run] = RunTable(dataset=str(columns["dataset"][idx[0]]), splits=[columns["split"][i] for i in idx], values=[values[i] for i in idx],
                            derived=[bool(derived[i]) for i in idx], protocols=[columns["protocol"][i] for i in idx],
                            ood_sets=[columns["ood_set"][i] for i in idx], probes=[columns["probe"][i] for i in idx])
    return out


@dataclass(frozen=True)
class Member:
    """One dataset's pair of runs at one seed, and its weight in the quantity (1 for a single
    comparison; 1/D for a mean over D datasets)."""

    treatment: str
    control: str
    weight: float = 1.0
    dataset: str = ""  # the registered dataset (which splits share images); "" = read it from the run
    prefix: str = ""  # what tells this member's splits from another member's in a mean over models


def paired_diffs(members: Sequence[Sequence[Member]], split: str, metric: str, values: Mapping[str, RunTable],
                 predictions: Predictions, problems: Mapping[str, str]) -> tuple[list[dict[str, np.ndarray]], dict[str, float], dict[str, str]]:
    """(diffs, weights, shared) for :func:`delta_estimate` from finished runs: ``members[j]`` are
    seed j's pairs of runs (one per dataset of the quantity). Each run's value of ``split`` must
    recombine from its measured splits (:func:`composition`) and each measured split's per-image
    mean must equal result.json's value; else :class:`Unavailable` says why."""
    runs = [r for seed in members for m in seed for r in (m.treatment, m.control)]
    missing = [r for r in runs if r not in predictions]
    if missing:
        reasons = sorted({problems.get(r, "no predictions.npz") for r in missing})
        raise Unavailable(f"{'; '.join(reasons)} ({len(missing)} of {len(runs)} runs)")
    tol = MATCH_TOL[metric]
    diffs: list[dict[str, np.ndarray]] = []
    weights: dict[str, float] = {}
    shared: dict[str, str] = {}
    for seed in members:
        d: dict[str, np.ndarray] = {}
        for m in seed:
            pair = []
            for run in (m.treatment, m.control):
                table = values.get(run)
                w = table.composition(split) if table is not None else None
                if w is None:
                    raise Unavailable(f"{split} is not made of measured splits")
                key = {k: f"{m.prefix}::{k}" if m.prefix else k for k in w}
                if any(key[k] in weights and not math.isclose(weights[key[k]], m.weight * wt) for k, wt in w.items()) or \
                        (weights and not m.prefix and set(key.values()) != set(weights)):
                    raise Unavailable(f"{split} is averaged over different splits in the paired runs")
                measured = table.measured
                if not math.isclose(sum(wt * measured[k] for k, wt in w.items()), table.values[split], abs_tol=tol):
                    raise Unavailable(f"{split} does not recombine from its splits")
                arrays = {}
                for k in w:
                    values_k = per_image(predictions[run].get(k, {}), metric)
                    if values_k is None:
                        raise Unavailable(f"split {k} not in predictions.npz")
                    if not np.all(np.isfinite(values_k)) or abs(float(np.mean(values_k)) - float(measured[k])) > tol:
                        raise Unavailable(f"predictions.npz disagrees with result.json on {k}")
                    arrays[k] = values_k
                pair.append(arrays)
            t, c = pair
            if set(t) != set(c) or any(len(t[k]) != len(c[k]) for k in t):
                raise Unavailable("the paired runs scored different images")
            sources = image_sources(m.dataset or values[m.treatment].dataset, t)
            for k, wt in values[m.treatment].composition(split).items():
                name = f"{m.prefix}::{k}" if m.prefix else k
                d[name] = t[k] - c[k]
                weights[name] = m.weight * wt
                shared[name] = f"{m.prefix}::{sources[k]}" if m.prefix else sources[k]
        if diffs and set(d) != set(diffs[0]):
            raise Unavailable("the seeds' runs cover different splits")
        diffs.append(d)
    return diffs, weights, shared


# ---- remembered estimates ----------------------------------------------------------------------

def _code_version() -> str:
    """A hash of the code a crossed estimate is computed by — this module, the distributions, the
    long table's averages, and the datasets' declarations of which splits share images: changing
    any of it forgets every estimate."""
    import hashlib

    here = Path(__file__).parent
    h = hashlib.sha256()
    for path in [here / "stats.py", here / "dist.py", here / "aggregate.py", *sorted((here.parent / "data").glob("*.py"))]:
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


class EstimateCache:
    """Crossed Δ estimates remembered across reports, keyed by what they are computed from: the
    split, the metric, the paired runs seed by seed (with weights) and each run's result digest
    (result.json covers its predictions.npz by SHA-256), and the estimation code. A report after
    one more finished run then computes only the Δs that involve it.

    Safe by construction: a changed or re-run run has another digest, so no entry of the old one
    is found; an estimate that could not read a run's predictions (absent or unreadable) is not
    remembered; the file carries a SHA-256 of its content and is written atomically, and a file
    that fails its check, or an entry that does not parse, is ignored and computed again.
    ``bench report --no-cache`` (or $BENCH_REPORT_CACHE=0) computes every estimate afresh."""

    VERSION = 1

    def __init__(self, path: Path | None, digests: Mapping[str, str | None]) -> None:
        self.path, self.digests = path, dict(digests)
        self.code = _code_version()
        self.entries: dict[str, Any] = {}
        self.used: set[str] = set()
        self.hits = self.misses = 0
        if path is not None:
            self._load()

    def _load(self) -> None:
        from bench.io import read_checked_json

        body = read_checked_json(Path(self.path))
        if isinstance(body, dict) and body.get("version") == self.VERSION and body.get("code") == self.code and isinstance(body.get("entries"), dict):
            self.entries = body["entries"]

    def key(self, members: Sequence[Sequence["Member"]], split: str, metric: str) -> str | None:
        """The entry key of a crossed estimate; None when a run has no digest (nothing to key it by)."""
        import hashlib
        import json

        parts = [self.code, split, metric]
        for seed in members:
            parts.append(";")
            for m in seed:
                dt, dc = self.digests.get(m.treatment), self.digests.get(m.control)
                if dt is None or dc is None:
                    return None
                parts += [m.treatment, dt, m.control, dc, repr(float(m.weight)), m.dataset, m.prefix]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def get(self, key: str) -> tuple[str, Any] | None:
        entry = self.entries.get(key)
        try:
            if entry["kind"] == "estimate":
                e = entry["value"]
                comps = e["components"]
                components = None if comps is None else Components(int(comps[0]), float(comps[1]), tuple(map(float, comps[2])),
                                                                    tuple(map(float, comps[3])), tuple(map(int, comps[4])), float(comps[5]))
                found = DeltaEstimate(float(e["mean"]), float(e["se"]), float(e["df"]), int(e["n"]), str(e["method"]), components)
                value: Any = (found, entry.get("mde"))
            else:
                value = (entry["kind"], str(entry["value"]))
        except (TypeError, KeyError, ValueError, IndexError):
            return None  # absent or damaged: computed again
        self.used.add(key)
        self.hits += 1
        return entry["kind"], value

    def put_estimate(self, key: str, est: DeltaEstimate) -> None:
        c = est.components
        comps = None if c is None else [c.n_seeds, c.seed, list(c.image), list(c.interaction), list(c.sizes), c.seed_total]
        self.entries[key] = {"kind": "estimate", "value": {"mean": est.mean, "se": est.se, "df": est.df, "n": est.n_seeds, "method": est.method,
                                                           "components": comps}}
        self.used.add(key)
        self.misses += 1

    def put_failure(self, key: str, exc: ValueError) -> None:
        self.entries[key] = {"kind": "unavailable" if isinstance(exc, Unavailable) else "invalid", "value": str(exc)}
        self.used.add(key)
        self.misses += 1

    def effect(self, df: float, alpha: float, power: float, df_variance: float | None) -> float:
        """:func:`noncentral_effect`, remembered (entries keyed by its arguments' exact repr)."""
        key = f"effect|{df!r}|{alpha!r}|{power!r}|{df_variance!r}"
        entry = self.entries.get(key)
        if isinstance(entry, dict) and entry.get("kind") == "effect" and isinstance(entry.get("value"), float):
            self.used.add(key)
            return entry["value"]
        value = _noncentral_effect(df, alpha, power, df_variance)
        if self.path is not None:
            self.entries[key] = {"kind": "effect", "value": value}
            self.used.add(key)
        return value

    def mde(self, key: str | None, est: DeltaEstimate) -> float:
        """``est.mde()``, remembered with its estimate (a root search per Δ)."""
        entry = self.entries.get(key) if key is not None else None
        if isinstance(entry, dict) and isinstance(entry.get("mde"), float):
            return entry["mde"]
        value = est.mde()
        if isinstance(entry, dict) and entry.get("kind") == "estimate":
            entry["mde"] = value
        return value

    def save(self) -> None:
        """Keep the entries this report used (others belong to runs no longer in it), atomically;
        a cache that cannot be written only costs time."""
        from bench.io import write_checked_json

        if self.path is None:
            return
        body = {"version": self.VERSION, "code": self.code, "entries": {k: v for k, v in self.entries.items() if k in self.used}}
        try:
            write_checked_json(Path(self.path), body)
        except OSError:
            pass


_CACHE: EstimateCache | None = None


class remembering:
    """``with remembering(cache): ...`` — the crossed estimates computed inside are looked up in,
    and added to, ``cache`` (:class:`EstimateCache`)."""

    def __init__(self, cache: EstimateCache | None) -> None:
        self.cache, self.outer = cache, None

    def __enter__(self) -> EstimateCache | None:
        global _CACHE
        self.outer, _CACHE = _CACHE, self.cache
        return self.cache

    def __exit__(self, *exc: Any) -> None:
        global _CACHE
        _CACHE = self.outer


def crossed_estimate(members: Sequence[Sequence["Member"]], split: str, metric: str, values: Mapping[str, RunTable],
                     predictions: Predictions, problems: Mapping[str, str]) -> tuple[DeltaEstimate, str | None]:
    """(``delta_estimate(*paired_diffs(...))``, its cache key or None): raises what they raise
    (:class:`Unavailable`, ValueError). Inside :class:`remembering` the result, or the reason
    there is none, is looked up first and remembered after, unless a run's predictions could not
    be read (that may be passing)."""
    cache = _CACHE
    key = cache.key(members, split, metric) if cache is not None else None
    if key is not None:
        hit = cache.get(key)
        if hit is not None:
            kind, value = hit
            if kind == "estimate":
                return value[0], key
            raise (Unavailable if kind == "unavailable" else ValueError)(value[1])
    try:
        diffs, weights, shared = paired_diffs(members, split, metric, values, predictions, problems)
        est = delta_estimate(diffs, weights, shared)
    except ValueError as exc:
        runs = {r for seed in members for m in seed for r in (m.treatment, m.control)}
        if key is not None and not any(r in problems for r in runs):
            cache.put_failure(key, exc)
        raise
    if key is not None:
        cache.put_estimate(key, est)
    return est, key


# ---- Δ rows ------------------------------------------------------------------------------------

RunIndex = dict[tuple, dict[Any, str]]  # (setting columns as text, method, variant) → seed → run id


def run_index(runs: pd.DataFrame) -> RunIndex:
    """Who ran what: built once per report, so a Δ row finds its runs by one lookup."""
    out: RunIndex = {}
    keys = zip(*(runs[c].astype(str).tolist() for c in GROUP_COLUMNS), runs["method"].tolist(), runs["variant"].tolist())
    for key, seed, run in zip(keys, runs["seed"].tolist(), runs["run_id"].tolist()):
        out.setdefault(tuple(key), {})[seed] = run
    return out


def row_members(row: Any, index: RunIndex) -> list[list[Member]]:
    """Seed by seed, the (treatment, control) runs of one paired-Δ row of the same setting."""
    setting = tuple(str(getattr(row, c)) for c in GROUP_COLUMNS)
    treated = index.get((*setting, row.treatment, row.treatment_variant), {})
    control = index.get((*setting, row.control, row.control_variant), {})
    return [[Member(treated[s], control[s])] for s in sorted(set(treated) & set(control))]


def estimate_of_row(row: Any, runs: RunIndex, values: Mapping[str, RunTable], predictions: Predictions,
                    problems: Mapping[str, str]) -> tuple[DeltaEstimate, str]:
    """The Δ estimate of one :func:`bench.report.aggregate.paired_delta` row: crossed seeds ×
    images where the metric is a per-image mean and every run's predictions match, else the
    seed-level t model with the reason."""
    est, why, _ = _row_estimate(row, runs, values, predictions, problems)
    return est, why


def _row_estimate(row: Any, runs: RunIndex, values: Mapping[str, RunTable], predictions: Predictions,
                  problems: Mapping[str, str]) -> tuple[DeltaEstimate, str, str | None]:
    """:func:`estimate_of_row` with the cache key of a crossed estimate (None otherwise)."""
    seed_level = DeltaEstimate(float(row.mean), float(row.std) / math.sqrt(row.n) if row.n >= 2 else math.nan,
                               float(row.n - 1) if row.n >= 2 else math.nan, int(row.n), T_INTERVAL)
    if row.metric not in PER_IMAGE_METRICS:
        return seed_level, "", None
    members = row_members(row, runs)
    if len(members) < 2:
        return seed_level, "one seed: no interval", None
    try:
        est, key = crossed_estimate(members, row.split, row.metric, values, predictions, problems)
        return est, "", key
    except Unavailable as why:
        return seed_level, str(why), None
    except ValueError as why:
        return seed_level, f"per-image data unusable ({why})", None


def with_intervals(delta: pd.DataFrame, long: pd.DataFrame, predictions: Predictions, problems: Mapping[str, str] | None = None,
                   confidence: float = CONFIDENCE, min_effect: Mapping[str, float] | None = None,
                   tables_of: Callable[[str], Mapping[str, RunTable]] | None = None) -> pd.DataFrame:
    """``delta`` (:func:`bench.report.aggregate.paired_delta` rows) with every row's interval from
    :func:`delta_estimate` — the crossed seeds × images model for per-image metrics (top-1, NLL)
    whose runs all have matching predictions, the seed-level t model otherwise — in
    ``ci_low``/``ci_high``, its ``p_value`` (two-sided against 0), ``se``, ``df``, ``mde`` (80 %
    power, two-sided 5 %), ``se_floor`` (the SE more seeds cannot remove; NaN when unknown),
    ``significant``, ``ci_method`` (crossed | t), ``ci_note`` (why a per-image metric kept the t
    model) and ``t_ci_low``/``t_ci_high`` (the seed-only interval, for comparison). ``significant``
    (the † of the tables) also needs |Δ| ≥ ``min_effect[metric]`` (report units: points, nats).
    ``tables_of``: metric → :func:`run_tables` of ``long``, when the caller has them already
    (:class:`bench.report.claims.Estimating`)."""
    out = delta.copy()
    out["t_ci_low"], out["t_ci_high"] = out["ci_low"], out["ci_high"]
    for col in ("se", "df", "mde", "se_floor", "p_value"):
        out[col] = math.nan
    out["ci_method"], out["ci_note"] = T_INTERVAL, ""
    if out.empty:
        return out
    runs = run_index(long.drop_duplicates("run_id")[["run_id", "method", "variant", "seed", *GROUP_COLUMNS]])
    values = {m: tables_of(m) if tables_of is not None else run_tables(long, m) for m in PER_IMAGE_METRICS}
    problems = problems or {}
    columns: dict[str, list[Any]] = {c: [] for c in ("ci_low", "ci_high", "se", "df", "se_floor", "mde", "p_value", "significant", "ci_method", "ci_note")}
    cache = _CACHE
    needed = [*GROUP_COLUMNS, "metric", "split", "mean", "std", "n", "treatment", "control", "treatment_variant", "control_variant"]
    for row in row_tuples(out[needed]):  # the columns an estimate reads, as plain values
        est, why, key = _row_estimate(row, runs, values.get(row.metric, {}), predictions, problems)
        low, high = est.interval(confidence)
        flat = pd.isna(low) or zero_width(low, high)
        floor = (min_effect or {}).get(row.metric, 0.0) / scale_of(row.metric)
        mde = math.nan if flat else cache.mde(key, est) if cache is not None and confidence == CONFIDENCE else est.mde()
        for c, v in zip(columns, (low, high, est.se, est.df, est.floor, mde, math.nan if flat else est.p_two_sided(),
                                  significant(low, high) and abs(est.mean) >= floor, est.method, why)):
            columns[c].append(v)
    for c, v in columns.items():
        out[c] = v
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


__all__ = ["Components", "DeltaEstimate", "delta_estimate", "delta_interval", "EstimateCache", "remembering", "crossed_estimate",
           "LazyPredictions", "lazy_predictions", "seed_estimate", "holm", "composition", "paired_diffs",
           "Member", "Unavailable", "with_intervals", "image_sources", "load_predictions", "read_predictions", "per_image",
           "calibration_bins", "pooled_ece", "CROSSED", "T_INTERVAL", "POWER", "scale_of"]
