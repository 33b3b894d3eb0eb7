"""A suite's results as one long table, per-run averages over OOD sets, and seed aggregates.

Statistics, and why:
- Seeds are the unit of replication: a run's metric is one observation. Aggregates over seeds
  give mean, sample std (n − 1), n and a two-sided 95% Student-t confidence interval
  (mean ± t₀.₉₇₅,ₙ₋₁ · s/√n); with n = 1 there is no interval (NaN), never a fake zero.
- What is pooled: a seed aggregate is per (method, ``variant``), the variant being the hash of the
  run's config without its seed and without the method's *name* — the method's parameters are
  in it. Two GRPO-RM configs that differ in ε or μ are two rows, never six seeds of one.
- What is compared: Δ GRPO-RM − SFT is paired per seed (both methods share data order and head
  init per seed) and only between runs with the same ``pair`` key: the hash of the config
  without seed, without the whole ``method`` (name and parameters) and with every *tuned* key
  masked. So each GRPO-RM variant gets its own Δ against the SFT run of its setting, and SFT at
  its chosen lr pairs with GRPO-RM at its chosen lr. A Δ whose CI has zero width (the same
  difference on every seed) is never called significant: such an interval measures nothing.
- Model selection (``stage``): tuning runs (``"stage": "tune"``) are scored on the held-out split
  only and enter no aggregate, Δ, table or claim — only the sweep figure (:func:`sweep_table`).
  A result without ``stage`` is a final run.
- OOD average, per run: each OOD *set* counts once. A corruption benchmark (``c/*/*``: all its
  corruptions × severities) or the generated corruptions (``gen/*/*``) is one set whose value is
  the mean over its splits; a natural-shift split (CIFAR-10.1, STL-10, ImageNet-V2, ...) is a set
  on its own. ``ood_avg`` is the unweighted mean over sets, so 75 CIFAR-10-C splits do not
  outweigh CIFAR-10.1. The paper does not state its averaging; this choice is ours.
- Transfer to the run's own source dataset (CIFAR-10 → CIFAR-10) is not out of domain: it is
  reported under protocol ``id_probe`` (an in-domain probe of the frozen backbone) and counts in
  neither ``transfer_avg/*`` nor ``ood_avg``.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from bench.report import dist

from bench.grid import grid_edge
from bench.dataid import STALE, run_state
from bench.report.schema import COLUMNS, COST_COLUMNS, conform
from bench.store import CorruptFile, RunDir
from bench.suite import RunSpec

METRICS = ("top1", "top5", "nll", "ece", "brier", "mIoU", "aAcc", "mAcc")  # each protocol reports its own subset
CORRUPTION_FAMILIES = ("c", "gen")  # <family>/<corruption>/<severity> splits
CONFIDENCE = 0.95
IN_DOMAIN_PROBE = "id_probe"  # the protocol of a transfer probe on the run's own source dataset
FINAL, TUNE = "final", "tune"  # result.json "stage"; absent = final
TUNED_MARK = "<tuned>"  # what a tuned key's value becomes in the pair key
# columns that describe an evaluation set; aggregates keep them, grouped with NaN kept as a key
SET_COLUMNS = ["protocol", "split", "derived", "ood_set", "corruption", "severity", "target", "probe"]
# what a paired comparison is within: everything but the method, its parameters and tuned keys
GROUP_COLUMNS = ["dataset", "backbone", "init", "random_init", "pair"]
# what a seed aggregate is over: runs that differ only in seed (the method is a column of its own)
MODEL_COLUMNS = [*GROUP_COLUMNS, "variant"]
UNKNOWN_VARIANT = "unknown"  # results written without their config
RAW_METRICS = ("nll", "brier")  # shown as they are (nats; the multi-class Brier score in [0, 2]); the others in percent


def scale_of(metric: str) -> float:
    """Report units: accuracy-like metrics (and ECE) in points (×100), NLL and Brier as they are."""
    return 1.0 if metric in RAW_METRICS else 100.0
PARAM_NAMES = {"epsilon": "ε", "mu": "μ", "beta": "β"}  # short display names of method parameters


# ---- identity: variant and pair keys --------------------------------------------------------

def _hash(tree: Any) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:8]


def config_variant(config: dict[str, Any] | None) -> str:
    """Short hash of a canonical run config without its seed and without the method's name (its
    parameters stay in). Runs that differ in anything else — an lr, ε, μ, trainable blocks — get
    different variants and are never pooled as if they were seeds."""
    if not config:
        return UNKNOWN_VARIANT
    rest = {k: v for k, v in config.items() if k != "seed"}
    rest["method"] = {k: v for k, v in (config.get("method") or {}).items() if k != "name"}
    return _hash(rest)


def pair_key(config: dict[str, Any] | None, tuned_keys: Iterable[str] = ()) -> str:
    """Short hash of a canonical run config without seed and method (name and parameters), with
    each tuned key's value replaced by a mark. Runs with equal pair keys differ only in the method,
    its own parameters and the values selection chose for them: those are the runs a paired Δ may
    compare. Tuned keys are masked, not dropped, so a tuned run never pairs with an untuned one."""
    if not config:
        return UNKNOWN_VARIANT
    tuned_keys = list(tuned_keys)
    rest = {k: v for k, v in config.items() if k not in ("seed", "method")}
    if tuned_keys:  # masked in a copy: the config itself is the run's record
        rest = copy.deepcopy(rest)
    for key in tuned_keys:
        node = rest
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[leaf] = TUNED_MARK
    return _hash(rest)


def stage_of(result: dict[str, Any]) -> str:
    """'tune' for a model-selection run, else the recorded stage; 'final' when none is recorded."""
    return str(result.get("stage") or FINAL)


def tuned_values(result: dict[str, Any]) -> dict[str, Any]:
    """The run's values of the tuned keys: what a tuning run tried, or what selection chose for a
    final run; empty for an untuned run."""
    if stage_of(result) == TUNE:
        return dict(result.get("tuned_values") or {})
    return dict((result.get("selection") or {}).get("chosen") or {})


def tuned_keys(result: dict[str, Any]) -> list[str]:
    selection = result.get("selection") or {}
    return sorted({*tuned_values(result), *(selection.get("tuned") or {})})


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differing(flat: dict[str, dict[str, Any]]) -> list[str]:
    """Keys whose value is not the same in every one of ``flat``'s trees."""
    keys = sorted({k for tree in flat.values() for k in tree})
    return [k for k in keys if len({json.dumps(tree.get(k), sort_keys=True, default=str) for tree in flat.values()}) > 1]


def short_number(value: Any) -> str:
    """A value as people write it: 3e-5, 1e-4, 0.2, 1 (tiny and huge floats in e-notation
    without padding zeros, so an lr reads as in a paper)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        mantissa, exponent = f"{value:.6e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}"


def param_name(key: str) -> str:
    """'method.params.epsilon' → 'ε', 'train.lr' → 'lr': the last part, Greek where the paper is."""
    last = key.split(".")[-1]
    return PARAM_NAMES.get(last, last)


def _json(text: Any) -> dict[str, Any]:
    return {} if text is None or (not isinstance(text, str) and pd.isna(text)) else json.loads(text)


def variant_descriptions(long: pd.DataFrame) -> dict[str, str]:
    """variant → what tells it apart from the method's other variants in its comparison group
    ('ε=0.1, μ=2'); only variants that share a group with another variant of their method get one.
    Within a group and method, variants differ only in the method's parameters and tuned values,
    so those two columns say everything; when they cannot (a result without config) the hash does."""
    if long.empty:
        return {}
    runs = long.drop_duplicates("run_id")
    runs = runs[[c for c in (*GROUP_COLUMNS, "method", "variant", "method_params", "tuned") if c in runs]]
    # a report asks this of the same runs many times (tables, figures, verdict): remembered by content
    key = tuple(map(tuple, runs.astype(object).where(runs.notna(), None).to_numpy()))
    if key in _DESCRIPTIONS:
        return dict(_DESCRIPTIONS[key])
    out = _describe_variants(runs)
    if len(_DESCRIPTIONS) > 16:
        _DESCRIPTIONS.clear()
    _DESCRIPTIONS[key] = out
    return dict(out)


_DESCRIPTIONS: dict[tuple, dict[str, str]] = {}


def _describe_variants(runs: pd.DataFrame) -> dict[str, str]:
    out: dict[str, str] = {}
    for _, part in runs.groupby([*GROUP_COLUMNS, "method"], sort=False, dropna=False):
        variants = part.drop_duplicates("variant")
        if len(variants) < 2:
            continue
        flat = {r.variant: {**_flatten({"method.params": _json(r.method_params)}), **_json(r.tuned)} for r in variants.itertuples()}
        differ = _differing(flat)
        texts = {v: ", ".join(f"{param_name(k)}={short_number(tree.get(k))}" for k in differ) for v, tree in flat.items()}
        if not all(texts.values()) or len(set(texts.values())) < len(texts):
            texts = {v: f"variant {v}" for v in flat}
        out.update(texts)
    return out


def describe_variants(variants: pd.Series, long: pd.DataFrame) -> list[str]:
    """:func:`variant_descriptions` of ``long`` for each of ``variants`` ('' where none)."""
    descs = variant_descriptions(long)
    return [descs.get(v, "") for v in (variants.tolist() if isinstance(variants, pd.Series) else variants)]


def variant_legend(results: list["Finished"]) -> dict[str, dict[str, Any]]:
    """What the hashes in the tables and CSVs stand for, as the config values that tell them apart
    (flattened dotted keys): 'setting <pair>' for each setting of a dataset run in several (an
    untuned lr sweep, trainable blocks, ...), 'variant <hash> (<method>)' for each method config of
    a setting run in several (an ε × μ sweep). Empty when every dataset has one of each. Final runs
    only: tuning runs are in no table."""
    settings: dict[str, dict[str, Any]] = {}
    by_dataset: dict[Any, set[str]] = {}
    configs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for f in results:
        config, result = f.result.get("config"), f.result
        if not config or stage_of(result) != FINAL:
            continue
        keys = tuned_keys(result)
        pair = pair_key(config, keys)
        masked = {k: v for k, v in config.items() if k not in ("seed", "method")}
        flat = _flatten(masked)
        flat.update({k: TUNED_MARK for k in keys})
        settings.setdefault(pair, flat)
        by_dataset.setdefault(flat.get("data.name"), set()).add(pair)
        own = {**_flatten({"method.params": (config.get("method") or {}).get("params") or {}}), **tuned_values(result)}
        configs.setdefault((pair, str(result.get("method"))), {}).setdefault(config_variant(config), own)
    legend: dict[str, dict[str, Any]] = {}
    for pairs in by_dataset.values():
        if len(pairs) > 1:
            ordered = sorted(pairs)
            differ = _differing({p: settings[p] for p in ordered})
            legend.update({f"setting {p}": {k: settings[p].get(k) for k in differ} for p in ordered})
    for (_, method), variants in configs.items():
        if len(variants) > 1:
            differ = _differing(variants)
            legend.update({f"variant {v} ({method})": {k: values.get(k) for k in differ} for v, values in variants.items()})
    return legend


def split_parts(split: str) -> dict[str, Any]:
    """Facts encoded in a split's name: corruption family/name/severity, or transfer target/probe."""
    parts = split.split("/")
    if len(parts) == 3 and parts[0] in CORRUPTION_FAMILIES and parts[2].isdigit():
        return {"ood_set": parts[0], "corruption": parts[1], "severity": int(parts[2])}
    if len(parts) == 3 and parts[0] == "transfer":
        return {"target": parts[1], "probe": parts[2]}
    return {}


# ---- reading the store ----------------------------------------------------------------------

@dataclass(frozen=True)
class Finished:
    """One finished run: its result.json and when it finished (UTC, ISO 8601)."""

    result: dict[str, Any]
    finished_utc: str | None
    digest: str | None = None  # result.json's digest (it covers the run's logs and predictions by SHA-256)


def _finished_utc(run_dir: RunDir, status: dict[str, Any] | None = None) -> str | None:
    end = (status if status is not None else run_dir.read_status()).get("end")
    return dt.datetime.fromtimestamp(end, dt.timezone.utc).isoformat(timespec="seconds") if end else None


STATE_COLUMNS = ["run_id", "method", "dataset", "seed", "stage", "state", "attempts", "error"]


@dataclass(frozen=True)
class StoreRead:
    """A suite's runs as a report reads them, each run's files read and verified once:
    ``states`` (:func:`run_states`' frame), ``results`` (:func:`finished_results`' list) and the
    run folder of each finished run (``dirs``, by run id: where its predictions and log are)."""

    states: pd.DataFrame
    results: list[Finished]
    dirs: dict[str, RunDir]


def read_store(specs: list[RunSpec], results_root: Path) -> StoreRead:
    """One pass over the store: every run's state (with its data check) and every finished run's
    verified result.json. What :func:`run_states`, :func:`finished_results` and the report use, so
    that no run's files are read or verified twice (bench.store.RunDir.record)."""
    from bench.dataid import record_state

    rows, results, dirs = [], [], {}
    for spec in specs:
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        state, data, record = record_state(run_dir, spec.config)  # stale-data: the split that changed as the error
        problem, status, c = record.problem, record.status, spec.config
        rows.append({
            "run_id": spec.run_id, "method": c.method.name, "dataset": c.data.name, "seed": c.seed, "stage": getattr(spec, "stage", FINAL),
            "state": state, "attempts": status.get("attempts", 0),
            "error": f"corrupt file {problem}" if problem else data.reason if state == STALE and data else status.get("error") or "",
        })
        if state != "done":
            continue  # unfinished, failed, corrupt or stale-data: listed in the states, no table uses it
        try:
            facts = record.facts or {}
            results.append(Finished(run_dir.read_result_signed(facts.get("signed")), _finished_utc(run_dir, status), facts.get("digest")))
            dirs[spec.run_id] = run_dir
        except (CorruptFile, FileNotFoundError):  # damaged since the state was read: listed as corrupt next time
            continue
    return StoreRead(pd.DataFrame(rows, columns=STATE_COLUMNS), results, dirs)


def finished_results(specs: list[RunSpec], results_root: Path) -> list[Finished]:
    """The result of every finished run of ``specs``, tuning runs included (unfinished: none)."""
    return read_store(specs, results_root).results


def result_rows(result: dict[str, Any], finished_utc: str | None = None) -> list[dict[str, Any]]:
    """The long-table rows of one finished run (its result.json)."""
    backbone, proto = result.get("backbone", {}), result.get("protocol", {})
    versions, git = result.get("versions", {}), result.get("git", {})
    config, tuned = result.get("config"), tuned_values(result)
    cost = result.get("cost") or {}  # absent in results from before costs were recorded: those columns stay empty
    run = {
        "suite": result.get("suite"), "run_id": result["run_id"], "method": result["method"], "dataset": result["dataset"],
        "backbone": backbone.get("display"), "init": backbone.get("init"), "random_init": bool(backbone.get("random_init")),
        "variant": config_variant(config), "pair": pair_key(config, tuned_keys(result)), "seed": result["seed"],
        "stage": stage_of(result), "tuned": json.dumps(tuned, sort_keys=True) if tuned else None,
        "img_size": proto.get("img_size"), "trainable_blocks": _text(proto.get("trainable_blocks")),
        "train_size": proto.get("train_size"), "steps": proto.get("steps"), "limited": limited_of(config),
        "method_params": json.dumps(result.get("method_params", {}), sort_keys=True),
        "git_commit": git.get("commit"), "git_dirty": git.get("dirty"), "torch": versions.get("torch"), "timm": versions.get("timm"),
        "host": result.get("host"), "device": result.get("device"), "wall_time_s": result.get("wall_time_s"), "finished_utc": finished_utc,
        **{c: cost.get(c) for c in COST_COLUMNS},
    }
    rows = []
    for split, values in result["metrics"].items():
        shift = bool(values.get("shift"))
        protocol = values.get("protocol") or ("shift" if shift else "id")
        facts = split_parts(split)
        if shift and "ood_set" not in facts:
            facts["ood_set"] = split  # a natural-shift split is an OOD set of its own
        if protocol == "transfer" and (facts.get("target") or values.get("dataset")) == result["dataset"]:
            protocol = IN_DOMAIN_PROBE  # probing the source dataset is not transfer
        where = {**run, **facts, "protocol": protocol, "split": split, "derived": False,
                 "label_space_size": values.get("label_space_size"), "n_eval": values.get("n")}
        rows += [{**where, "metric": m, "value": float(values[m])} for m in METRICS if m in values]
    return rows


def limited_of(config: dict[str, Any] | None) -> str | None:
    """The smoke-test limits a result's canonical config records (absent keys: a full run)."""
    from bench.summary import limit_words

    if not isinstance(config, dict):
        return None
    return limit_words((config.get("data") or {}).get("limit"), (config.get("train") or {}).get("max_steps"))


def limited_note(long: pd.DataFrame) -> str:
    """The caption sentence for tables with limited runs among their rows ('' when none)."""
    if long.empty or "limited" not in long or not long["limited"].notna().any():
        return ""
    kinds = "; ".join(sorted(str(x) for x in long["limited"].dropna().unique()))
    return f"LIMITED RUN (smoke test, not comparable with full runs): {kinds}."


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def long_from(results: list[Finished]) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for f in results:
        rows += result_rows(f.result, f.finished_utc)
    return conform(pd.DataFrame(rows, columns=COLUMNS))


def long_table(specs: list[RunSpec], results_root: Path) -> pd.DataFrame:
    """Measured rows of every finished run of ``specs`` (unfinished runs contribute nothing),
    tuning runs included with ``stage`` 'tune'."""
    return long_from(finished_results(specs, results_root))


def finals(long: pd.DataFrame) -> pd.DataFrame:
    """The rows of final runs: the only ones any table, Δ, aggregate or claim is made of (a row
    without a stage is a final run's)."""
    return long[(long["stage"].fillna(FINAL) == FINAL).astype(bool)]


def run_states(specs: list[RunSpec], results_root: Path) -> pd.DataFrame:
    """One row per run of the suite: stage (final, tune), state (done, failed, interrupted,
    running, pending, corrupt) and error (for corrupt: the damaged file and why)."""
    return read_store(specs, results_root).states


# ---- per-run averages -----------------------------------------------------------------------

def _derived(source: pd.DataFrame, keys: list[str], **fields: Any) -> pd.DataFrame:
    """Per-run means of ``source`` over everything but ``keys``; run-level columns are kept."""
    if source.empty:
        return source.iloc[0:0]
    run_level = [c for c in COLUMNS if c not in SET_COLUMNS + ["label_space_size", "n_eval", "metric", "value"]]
    group = list(dict.fromkeys(["run_id", "metric", *keys]))
    first = source.groupby(group, sort=False, dropna=False)[[c for c in run_level if c not in group]].first()
    value = source.groupby(group, sort=False, dropna=False)["value"].mean()
    out = first.join(value).reset_index()
    for name, val in fields.items():
        out[name] = val(out) if callable(val) else val
    out["derived"] = True
    return out


def with_averages(long: pd.DataFrame) -> pd.DataFrame:
    """Add derived per-run rows to final runs: ``<set>/mean`` for multi-split OOD sets,
    ``ood_avg`` (mean over OOD sets) and ``transfer_avg/<probe>`` (mean over transfer targets other
    than the source dataset, when there are several)."""
    measured = finals(long[~long["derived"].astype(bool)])
    shift = measured[(measured["protocol"] == "shift") & measured["ood_set"].notna()]
    per_set = _derived(shift, ["ood_set"], protocol="shift")
    # corruption families always get a mean row (it stands for them in the OOD table); a natural
    # shift split is its own set and needs none
    n_splits = shift.groupby(["run_id", "metric", "ood_set"])["split"].nunique()
    keys = pd.MultiIndex.from_frame(per_set[["run_id", "metric", "ood_set"]])
    several = n_splits.reindex(keys).fillna(0).to_numpy() > 1  # a set measured on more than one split
    set_means = per_set[several | per_set["ood_set"].isin(CORRUPTION_FAMILIES)].assign(split=lambda f: f["ood_set"] + "/mean")
    ood_avg = _derived(per_set, [], protocol="shift", split="ood_avg")
    # in-domain probes carry protocol id_probe, so this is transfer to other datasets only
    transfer = measured[(measured["protocol"] == "transfer") & measured["probe"].notna()]
    # an average over a single target would only repeat it
    transfer = transfer[transfer.groupby(["run_id", "metric", "probe"])["target"].transform("nunique") > 1]
    transfer_avg = _derived(transfer, ["probe"], protocol="transfer", split=lambda f: "transfer_avg/" + f["probe"])
    parts = [long] + [conform(p.reindex(columns=COLUMNS)) for p in (set_means, ood_avg, transfer_avg) if not p.empty]
    return conform(pd.concat(parts, ignore_index=True))


# ---- seed aggregates ------------------------------------------------------------------------

def t_interval(values: np.ndarray | pd.Series, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Student-t confidence interval for the mean; (nan, nan) below two values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return math.nan, math.nan
    half = float(dist.t_ppf_cached(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return float(x.mean()) - half, float(x.mean()) + half


def zero_width(low: float, high: float) -> bool:
    """An interval of (numerically) zero width: every seed gave the same value, so the t-interval
    degenerates to a point and says nothing about uncertainty. Rounding noise of differences of
    sums (~1e-16) counts as zero."""
    return math.isclose(low, high, rel_tol=1e-9, abs_tol=1e-12)


def significant(low: float, high: float) -> bool:
    """A Δ interval that excludes 0 and has a width: zero-width intervals (identical differences on
    every seed) are never significant, missing ones (n < 2) neither."""
    if pd.isna(low) or pd.isna(high) or zero_width(float(low), float(high)):
        return False
    return bool(low > 0 or high < 0)


def _describe(values: pd.Series) -> pd.Series:
    low, high = t_interval(values)
    return pd.Series({"mean": values.mean(), "std": values.std(ddof=1) if len(values) > 1 else math.nan,
                      "n": len(values), "ci_low": low, "ci_high": high})


DESCRIBED = ["mean", "std", "n", "ci_low", "ci_high"]


def _describe_complete(x: np.ndarray) -> tuple[float, float, int, float, float]:
    """:func:`_describe` of values without a missing one, by the very operations pandas' nanmean /
    nanstd and numpy's mean / std perform (sum, then divide; mean of squared deviations), without
    their per-call dispatch (tests/test_report_scale.py checks it bit for bit against _describe)."""
    n = len(x)
    total = x.sum(dtype=np.float64)
    mean = total / np.float64(n)
    if n < 2:
        return mean, math.nan, n, math.nan, math.nan
    dev = x - mean
    sd = np.sqrt((dev * dev).sum(dtype=np.float64) / (np.float64(n) - np.float64(1)))
    half = float(dist.t_ppf_cached(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n))
    return mean, sd, n, float(mean) - half, float(mean) + half


SEQUENTIAL = 7  # numpy sums a float64 array of up to 7 values left to right (longer ones pairwise, 8 partial sums)


def _describe_short(values: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """:func:`_describe_complete` of many groups of 1 to :data:`SEQUENTIAL` values (``values[start :
    start + size]``) at once, one row each: every sum is the left-to-right chain numpy's sum
    performs on so few values, padded with zeros that add nothing; every other operation is the
    same IEEE operation on the same operands (tests/test_report_scale.py checks it bit for bit)."""
    count = len(starts)
    width = int(sizes.max())
    taken = np.arange(width)[None, :] < sizes[:, None]
    grid = np.zeros((count, width))
    grid[taken] = values[(starts[:, None] + np.arange(width)[None, :])[taken]]
    total = grid[:, 0].copy()
    for j in range(1, width):
        total = total + grid[:, j]
    n = sizes.astype(np.float64)
    mean = total / n
    dev = np.where(taken, grid - mean[:, None], 0.0)
    squares = dev * dev
    sum_sq = squares[:, 0].copy()
    for j in range(1, width):
        sum_sq = sum_sq + squares[:, j]
    out = np.full((count, 5), np.nan)
    out[:, 0], out[:, 2] = mean, sizes
    two = sizes >= 2
    sd = np.sqrt(sum_sq[two] / (n[two] - np.float64(1)))
    t = np.array([dist.t_ppf_cached(0.5 + CONFIDENCE / 2, int(k) - 1) for k in sizes[two]])
    half = t * sd / np.sqrt(n[two])
    out[two, 1], out[two, 3], out[two, 4] = sd, mean[two] - half, mean[two] + half
    return out


def describe_groups(frame: pd.DataFrame, keys: list[str], value: str = "value") -> pd.DataFrame:
    """``frame.groupby(keys, sort=False, dropna=False)[value].apply(_describe).unstack().reset_index()``
    — the same numbers from the same functions (pandas' nanmean/nanstd, :func:`t_interval`) in the
    same row order, without a pandas object per group: at thousands of runs the groups number
    tens of thousands, and building a Series for each was most of a report's time.

    Row order is what ``unstack`` gives: groups sorted by each key's position of first appearance
    in ``frame`` (missing values included, as a value), the first key slowest."""
    from pandas.core import nanops

    if frame.empty:
        return pd.DataFrame(columns=[*keys, *DESCRIBED])
    codes = np.stack([pd.factorize(frame[k], use_na_sentinel=False)[0] for k in keys])
    order = np.lexsort(codes[::-1])  # stable: a group's rows keep their order
    ordered = codes[:, order]
    starts = np.flatnonzero(np.r_[True, (ordered[:, 1:] != ordered[:, :-1]).any(axis=0)])
    ends = np.r_[starts[1:], len(order)]
    values = frame[value].to_numpy(dtype=float)[order]
    missing = np.isnan(values)
    stats_ = np.empty((len(starts), 5))
    sizes = ends - starts
    gaps = np.add.reduceat(missing.astype(np.int64), starts) > 0
    # complete groups of at most SEQUENTIAL values at once (no negative zero anywhere, whose sign a
    # padded zero could flip): the same additions in the same order as numpy's own sum of so few
    quick = ~gaps & (sizes <= SEQUENTIAL) if not np.any((values == 0) & np.signbit(values)) else np.zeros(len(starts), bool)
    if quick.any():
        stats_[quick] = _describe_short(values, starts[quick], sizes[quick])
    for g in np.flatnonzero(~quick):
        a, b = starts[g], ends[g]
        x = values[a:b]
        if gaps[g]:  # pandas skips missing values: its own functions, as Series.mean/std call them
            stats_[g] = (nanops.nanmean(x, skipna=True), nanops.nanstd(x, skipna=True, ddof=1) if b - a > 1 else math.nan, b - a, *t_interval(x))
        else:
            stats_[g] = _describe_complete(x)
    out = frame.iloc[order[starts]][keys].reset_index(drop=True)
    for i, name in enumerate(DESCRIBED):
        out[name] = stats_[:, i]
    return out


def seed_summary(long: pd.DataFrame) -> pd.DataFrame:
    """mean, std, n and 95% CI over seeds per (method, variant, evaluation set, metric), final runs
    only; ``variant_desc`` says what tells a variant from its method's others in its group."""
    keys = ["method", *MODEL_COLUMNS, *SET_COLUMNS, "metric"]
    long = finals(long)
    if long.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n", "ci_low", "ci_high", "variant_desc"])
    out = describe_groups(long, keys)
    out["n"] = out["n"].astype(int)
    out["variant_desc"] = describe_variants(out["variant"], long)
    return out


DELTA_KEYS = [*GROUP_COLUMNS, *SET_COLUMNS, "metric", "treatment_variant", "control_variant"]


def paired_delta(long: pd.DataFrame, treatment: str | None = None, control: str | None = None) -> pd.DataFrame:
    """Δ = treatment − control per matching seed between runs of one setting (same ``pair`` key
    and evaluation set), then mean, std, n (pairs), 95% CI and whether it is significant, per
    (treatment variant, control variant): every GRPO-RM variant of a setting gets its own Δ.
    Without ``treatment``/``control``: the default comparison (:data:`bench.methods.DEFAULT_COMPARISON`)."""
    if treatment is None or control is None:
        from bench.methods import DEFAULT_COMPARISON

        treatment, control = treatment or DEFAULT_COMPARISON[0], control or DEFAULT_COMPARISON[1]
    columns = [*DELTA_KEYS, "mean", "std", "n", "ci_low", "ci_high", "significant", "treatment", "control"]
    long = finals(long)
    keys = [*GROUP_COLUMNS, *SET_COLUMNS, "metric"]
    cols = [*keys, "seed", "variant", "value"]
    a = long.loc[long["method"] == treatment, cols].rename(columns={"variant": "treatment_variant", "value": "a"})
    b = long.loc[long["method"] == control, cols].rename(columns={"variant": "control_variant", "value": "b"})
    both = a.merge(b, on=[*keys, "seed"])
    both["value"] = both["a"] - both["b"]
    both = both.dropna(subset=["value"])
    if both.empty:
        return pd.DataFrame(columns=columns)
    out = describe_groups(both, DELTA_KEYS)
    out["n"] = out["n"].astype(int)
    out["significant"] = [significant(lo, hi) for lo, hi in zip(out["ci_low"], out["ci_high"])]
    out["treatment"], out["control"] = treatment, control
    return out[columns]


def severity_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against corruption severity per (method, model, corruption family, metric):
    per run, the mean over corruptions at each severity (severity 0 = the first ID split), then
    mean / CI over seeds. Feeds the severity curves. Final runs only."""
    long = finals(long)
    rows = long[long["severity"].notna() & ~long["derived"].astype(bool)]
    if rows.empty:
        return pd.DataFrame(columns=["method", *MODEL_COLUMNS, "ood_set", "severity", "metric", "mean", "std", "n", "ci_low", "ci_high", "variant_desc"])
    per_run = rows.groupby(["run_id", "method", "seed", *MODEL_COLUMNS, "ood_set", "severity", "metric"], dropna=False)["value"].mean().reset_index()
    ids = long[(long["protocol"] == "id") & ~long["derived"].astype(bool)]
    clean = ids[ids["split"] == ids.groupby("run_id")["split"].transform("first")][["run_id", "metric", "value"]]
    families = per_run[["run_id", "method", "seed", *MODEL_COLUMNS, "ood_set", "metric"]].drop_duplicates()
    zero = families.merge(clean, on=["run_id", "metric"]).assign(severity=0)
    per_run = pd.concat([zero, per_run], ignore_index=True)
    keys = ["method", *MODEL_COLUMNS, "ood_set", "severity", "metric"]
    out = describe_groups(per_run, keys)
    out["n"] = out["n"].astype(int)
    out["variant_desc"] = describe_variants(out["variant"], long)
    return out.sort_values(["method", "dataset", "ood_set", "severity"], kind="stable").reset_index(drop=True)


LOG_IDENTITY = ["run_id", "method", "dataset", "seed", "variant"]


def training_log(specs: list[RunSpec], results_root: Path) -> pd.DataFrame:
    """Per-step training statistics (metrics.jsonl) of the finished final runs, with run identity
    (tuning runs are left out: their curves would join the final runs' seed bands)."""
    return training_log_of(read_store(specs, results_root))


def training_log_of(store: StoreRead, only: set[str] | None = None) -> pd.DataFrame:
    """:func:`training_log` of an already read store (``only``: of these runs): each final run's
    log parsed once, and one frame built from all of them (not one per run)."""
    rows: list[dict[str, Any]] = []
    for f in store.results:
        run_dir = store.dirs.get(f.result.get("run_id"))
        if run_dir is None or stage_of(f.result) != FINAL or (only is not None and f.result.get("run_id") not in only) or not run_dir.metrics.is_file():
            continue
        try:
            log = run_dir.read_metrics()
        except CorruptFile:  # damaged since the state was read: no curve, listed as corrupt next time
            continue
        config = f.result.get("config") or {}
        identity = {"run_id": f.result["run_id"], "method": (config.get("method") or {}).get("name", f.result.get("method")),
                    "dataset": (config.get("data") or {}).get("name", f.result.get("dataset")), "seed": config.get("seed", f.result.get("seed")),
                    "variant": config_variant(config)}
        rows += [{**row, **identity} for row in log]
    if not rows:
        return pd.DataFrame(columns=[*LOG_IDENTITY, "step"])
    return pd.DataFrame(rows)


# ---- model selection ------------------------------------------------------------------------

SELECTION_COLUMNS = ["run_id", "method", *GROUP_COLUMNS, "variant", "seed", "metric", "split", "grid", "chosen", "tune_seeds", "scores",
                     "at_edge", "tie", "tried", "n_candidates", "extensions", "seed_overlap"]


def _values_of(key: str, grid: dict[str, Any]) -> dict[str, Any]:
    """A selection score's key (JSON of the tuned values) as {tuned key: value}: a JSON object is
    taken as is; a list or a scalar is matched to the grid's keys in order."""
    values = json.loads(key)
    if isinstance(values, dict):
        return values
    values = values if isinstance(values, list) else [values]
    return dict(zip(grid, values))


def selection_table(results: list[Finished]) -> pd.DataFrame:
    """One row per final run that records a selection: which grid was tuned (``grid``, JSON), on
    which split and metric, over which tuning seeds, the mean score per tried combination
    (``scores``, JSON keyed by the combination's canonical JSON) and what was ``chosen``; then
    what the choice leaves open: ``at_edge`` (tuned key → 'smallest'/'largest' where the chosen value
    is at that edge of the values tried), ``tie`` (the tied candidates and their score when the
    tie-break decided; null otherwise), ``tried`` (each key's values, extensions included),
    ``n_candidates`` (the method's candidates: more than the grid only where its grid was
    extended beyond an edge), ``extensions`` and ``seed_overlap`` (tuning seeds that are also
    final seeds, accepted by ``select.allow_seed_overlap``). Results recorded before these
    fields existed get the edge computed from the grid, the rest empty."""
    rows = []
    for f in results:
        r = f.result
        selection = r.get("selection")
        if stage_of(r) != FINAL or not selection:
            continue
        grid = dict(selection.get("tuned") or {})
        scores = {json.dumps(_values_of(k, grid), sort_keys=True): v for k, v in (selection.get("scores") or {}).items()}
        backbone = r.get("backbone", {})
        rows.append({
            "run_id": r["run_id"], "method": r["method"], "dataset": r["dataset"], "backbone": backbone.get("display"),
            "init": backbone.get("init"), "random_init": bool(backbone.get("random_init")),
            "pair": pair_key(r.get("config"), tuned_keys(r)), "variant": config_variant(r.get("config")), "seed": r["seed"],
            "metric": selection.get("metric", "top1"), "split": selection.get("split", "heldout"),
            "grid": json.dumps(grid), "chosen": json.dumps(selection.get("chosen") or {}, sort_keys=True),
            "tune_seeds": json.dumps(selection.get("seeds") or []), "scores": json.dumps(scores, sort_keys=True),
            **_selection_facts(selection, grid),
        })
    return pd.DataFrame(rows, columns=SELECTION_COLUMNS)


def _selection_facts(selection: dict[str, Any], grid: dict[str, Any]) -> dict[str, Any]:
    """The selection record's edge, tie, extension and seed-overlap facts as CSV cells (JSON)."""
    tried = dict(selection.get("tried") or grid)
    chosen = selection.get("chosen") or {}
    at_edge = selection.get("at_edge")
    if at_edge is None:  # recorded before edges were: the same rule on the grid
        at_edge = {k: e for k, v in chosen.items() if k in tried and (e := grid_edge(tried[k], v)) is not None}
    n = selection.get("n_candidates") or len(selection.get("scores") or {}) or None
    return {"at_edge": json.dumps(at_edge, sort_keys=True), "tie": json.dumps(selection.get("tie"), sort_keys=True, default=str),
            "tried": json.dumps(tried), "n_candidates": n, "extensions": json.dumps(selection.get("extensions") or [], default=str),
            "seed_overlap": json.dumps(selection.get("seed_overlap") or [])}


PROBE_C_COLUMNS = ["run_id", "method", "dataset", "seed", "split", "C", "C_swept", "at_edge", "tie"]


def probe_c_table(results: list[Finished]) -> pd.DataFrame:
    """The Softmax-Regression probe's C per final run and transfer target: the chosen ``C``, the
    values swept (``C_swept``, JSON), ``at_edge`` ('smallest'/'largest', or empty inside the sweep)
    and ``tie`` (JSON: the Cs tied at the best held-out accuracy when a tie-break picked C; 'null'
    when none did, empty when the run did not record it). A sweep on the probe's own held-out slice
    is a choice like any other: a C at the sweep's edge says the best C may lie beyond it."""
    rows = []
    for f in results:
        r = f.result
        if stage_of(r) != FINAL:
            continue
        for split, values in (r.get("metrics") or {}).items():
            if values.get("probe") != "softmax_regression" or "C" not in values:
                continue
            swept = list(values.get("C_swept") or [])
            edge = values["C_at_edge"] if "C_at_edge" in values else grid_edge(swept, values["C"])  # older results: the same rule
            rows.append({"run_id": r["run_id"], "method": r.get("method"), "dataset": r.get("dataset"), "seed": r.get("seed"), "split": split,
                         "C": values["C"], "C_swept": json.dumps(swept), "at_edge": edge or "",
                         "tie": json.dumps(values["C_tie"], sort_keys=True) if "C_tie" in values else ""})
    return pd.DataFrame(rows, columns=PROBE_C_COLUMNS)


SWEEP_MODEL = ["dataset", "backbone", "init", "random_init"]
SWEEP_COLUMNS = [*SWEEP_MODEL, "method", "values", "metric", "split", "score", "seed_values", "chosen"]


def _grid_position(values: dict[str, Any], grid: dict[str, list]) -> tuple:
    """Where a value combination sits in the tuned grid (as listed), so sweeps read in grid order."""
    return tuple(grid[k].index(v) if k in grid and v in grid[k] else len(grid.get(k, [])) for k, v in values.items())


def sweep_table(long: pd.DataFrame, selections: pd.DataFrame) -> pd.DataFrame:
    """The selection metric on the held-out split per tried value combination, per method and
    model (dataset, backbone, init): ``score`` is the mean the choice was made on (the selection's
    record, else the mean over the tuning runs found), ``seed_values`` the single tuning runs,
    ``chosen`` marks the combination selection picked. Tuning runs are matched to a method's
    selection by model, not by pair key: their configs differ from the finals' (held-out
    evaluation only)."""
    tune = long[(long["stage"] == TUNE) & long["tuned"].notna() & ~long["derived"].astype(bool)]
    groups: dict[tuple, dict[str, Any]] = {}
    for r in selections.itertuples():
        key = (r.dataset, r.backbone, r.init, bool(r.random_init), r.method)
        g = groups.setdefault(key, {"metric": r.metric, "split": r.split, "scores": {}, "chosen": set(), "grid": json.loads(getattr(r, "tried", None) or r.grid)})
        g["scores"].update(json.loads(r.scores))
        g["chosen"].add(r.chosen)
    for key, part in tune.groupby([*SWEEP_MODEL, "method"], sort=False, dropna=False):
        key = (*key[:3], bool(key[3]), key[4])
        if key not in groups:  # tuning runs whose finals are not in yet: the usual metric, no choice
            metric = next((m for m in METRICS if (part["metric"] == m).any()), None)
            groups[key] = {"metric": metric, "split": "heldout", "scores": {}, "chosen": set(), "grid": {}}
    rows = []
    for key, g in groups.items():
        dataset, backbone, init, random_init, method = key
        runs = tune[(tune["dataset"] == dataset) & (tune["method"] == method) & (tune["split"] == g["split"]) & (tune["metric"] == g["metric"])
                    & (tune["backbone"].fillna("") == (backbone or "")) & (tune["init"].fillna("") == (init or ""))
                    & (tune["random_init"].astype(bool) == random_init)]
        seeds = {json.dumps(_json(t), sort_keys=True): list(v) for t, v in runs.groupby("tuned", sort=False)["value"]}
        for values in sorted(dict.fromkeys([*g["scores"], *seeds]), key=lambda v: _grid_position(json.loads(v), g["grid"])):
            found = seeds.get(values, [])
            score = g["scores"].get(values, float(np.mean(found)) if found else math.nan)
            rows.append({"dataset": dataset, "backbone": backbone, "init": init, "random_init": random_init, "method": method,
                         "values": values, "metric": g["metric"], "split": g["split"], "score": score, "seed_values": found,
                         "chosen": values in g["chosen"]})
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


__all__ = ["long_table", "long_from", "finished_results", "finals", "run_states", "with_averages", "seed_summary", "paired_delta",
           "severity_summary", "training_log", "t_interval", "zero_width", "significant", "split_parts", "config_variant", "pair_key",
           "variant_legend", "variant_descriptions", "describe_variants", "selection_table", "sweep_table", "short_number", "param_name",
           "probe_c_table"]
