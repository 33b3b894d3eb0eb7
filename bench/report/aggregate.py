"""A suite's results as one long table, per-run averages over OOD sets, and seed aggregates.

Statistics, and why:
- Seeds are the unit of replication: a run's metric is one observation. Aggregates over seeds
  give mean, sample std (n − 1), n and a two-sided 95% Student-t confidence interval
  (mean ± t₀.₉₇₅,ₙ₋₁ · s/√n); with n = 1 there is no interval (NaN), never a fake zero.
- Δ GRPO-RM − SFT is paired: both methods share data order and head init per seed, so the
  difference is taken per seed first and the interval is over those differences.
- OOD average, per run: each OOD *set* counts once. A corruption benchmark (``c/*/*``: all its
  corruptions × severities) or the generated corruptions (``gen/*/*``) is one set whose value is
  the mean over its splits; a natural-shift split (CIFAR-10.1, STL-10, ImageNet-V2, ...) is a set
  on its own. ``ood_avg`` is the unweighted mean over sets, so 75 CIFAR-10-C splits do not
  outweigh CIFAR-10.1. The paper does not state its averaging; this choice is ours.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.schema import COLUMNS, conform
from bench.store import RunDir
from bench.suite import RunSpec

METRICS = ("top1", "top5", "nll", "mIoU", "aAcc", "mAcc")  # each protocol reports its own subset
CORRUPTION_FAMILIES = ("c", "gen")  # <family>/<corruption>/<severity> splits
CONFIDENCE = 0.95
# columns that describe an evaluation set; aggregates keep them, grouped with NaN kept as a key
SET_COLUMNS = ["protocol", "split", "derived", "ood_set", "corruption", "severity", "target", "probe"]
# what a seed aggregate is over: runs that differ only in seed (the method is a column of its own)
MODEL_COLUMNS = ["dataset", "backbone", "init", "random_init", "variant"]
UNKNOWN_VARIANT = "unknown"  # results written without their config


def config_variant(config: dict[str, Any] | None) -> str:
    """Short hash of a canonical run config without method and seed. Runs of one suite that vary
    anything else (an lr sweep, trainable blocks, ...) get different variants and are never pooled
    as if they were seeds."""
    if not config:
        return UNKNOWN_VARIANT
    rest = {k: v for k, v in config.items() if k not in ("method", "seed")}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]


def variant_legend(specs: list[RunSpec]) -> dict[str, dict[str, Any]]:
    """variant → the config values that tell it apart from the suite's other variants
    (flattened dotted keys); empty when the suite has one variant per dataset."""
    flat: dict[str, dict[str, Any]] = {}
    for spec in specs:
        config = spec.config.canonical()
        flat.setdefault(config_variant(config), _flatten({k: v for k, v in config.items() if k not in ("method", "seed")}))
    by_dataset: dict[str, list[str]] = {}
    for variant, values in flat.items():
        by_dataset.setdefault(values.get("data.name"), []).append(variant)
    legend = {}
    for variants in by_dataset.values():
        if len(variants) < 2:
            continue
        keys = sorted({k for v in variants for k in flat[v]})
        differ = [k for k in keys if len({json.dumps(flat[v].get(k), sort_keys=True, default=str) for v in variants}) > 1]
        legend.update({v: {k: flat[v].get(k) for k in differ} for v in variants})
    return legend


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def split_parts(split: str) -> dict[str, Any]:
    """Facts encoded in a split's name: corruption family/name/severity, or transfer target/probe."""
    parts = split.split("/")
    if len(parts) == 3 and parts[0] in CORRUPTION_FAMILIES and parts[2].isdigit():
        return {"ood_set": parts[0], "corruption": parts[1], "severity": int(parts[2])}
    if len(parts) == 3 and parts[0] == "transfer":
        return {"target": parts[1], "probe": parts[2]}
    return {}


def _finished_utc(run_dir: RunDir) -> str | None:
    end = run_dir.read_status().get("end")
    return dt.datetime.fromtimestamp(end, dt.timezone.utc).isoformat(timespec="seconds") if end else None


def result_rows(result: dict[str, Any], finished_utc: str | None = None) -> list[dict[str, Any]]:
    """The long-table rows of one finished run (its result.json)."""
    backbone, proto = result.get("backbone", {}), result.get("protocol", {})
    versions, git = result.get("versions", {}), result.get("git", {})
    run = {
        "suite": result.get("suite"), "run_id": result["run_id"], "method": result["method"], "dataset": result["dataset"],
        "backbone": backbone.get("display"), "init": backbone.get("init"), "random_init": bool(backbone.get("random_init")),
        "seed": result["seed"], "variant": config_variant(result.get("config")), "img_size": proto.get("img_size"), "trainable_blocks": _text(proto.get("trainable_blocks")),
        "train_size": proto.get("train_size"), "steps": proto.get("steps"),
        "method_params": json.dumps(result.get("method_params", {}), sort_keys=True),
        "git_commit": git.get("commit"), "git_dirty": git.get("dirty"), "torch": versions.get("torch"), "timm": versions.get("timm"),
        "host": result.get("host"), "device": result.get("device"), "wall_time_s": result.get("wall_time_s"), "finished_utc": finished_utc,
    }
    rows = []
    for split, values in result["metrics"].items():
        shift = bool(values.get("shift"))
        protocol = values.get("protocol") or ("shift" if shift else "id")
        facts = split_parts(split)
        if shift and "ood_set" not in facts:
            facts["ood_set"] = split  # a natural-shift split is an OOD set of its own
        where = {**run, **facts, "protocol": protocol, "split": split, "derived": False,
                 "label_space_size": values.get("label_space_size"), "n_eval": values.get("n")}
        rows += [{**where, "metric": m, "value": float(values[m])} for m in METRICS if m in values]
    return rows


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def long_table(specs: list[RunSpec], results_root: Path) -> pd.DataFrame:
    """Measured rows of every finished run of ``specs`` (unfinished runs contribute nothing)."""
    rows: list[dict[str, Any]] = []
    for spec in specs:
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        if run_dir.is_done():
            rows += result_rows(run_dir.read_result(), _finished_utc(run_dir))
    return conform(pd.DataFrame(rows, columns=COLUMNS))


def run_states(specs: list[RunSpec], results_root: Path) -> pd.DataFrame:
    """One row per run of the suite: state (done, failed, interrupted, running, pending) and error."""
    rows = []
    for spec in specs:
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        status = run_dir.read_status()
        c = spec.config
        rows.append({
            "run_id": spec.run_id, "method": c.method.name, "dataset": c.data.name, "seed": c.seed,
            "state": run_dir.effective_state(), "attempts": status.get("attempts", 0), "error": status.get("error") or "",
        })
    return pd.DataFrame(rows, columns=["run_id", "method", "dataset", "seed", "state", "attempts", "error"])


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
    """Add derived per-run rows: ``<set>/mean`` for multi-split OOD sets, ``ood_avg`` (mean over
    OOD sets) and ``transfer_avg/<probe>`` (mean over transfer targets, when there are several)."""
    measured = long[~long["derived"].astype(bool)]
    shift = measured[(measured["protocol"] == "shift") & measured["ood_set"].notna()]
    per_set = _derived(shift, ["ood_set"], protocol="shift")
    # corruption families always get a mean row (it stands for them in the OOD table); a natural
    # shift split is its own set and needs none
    n_splits = shift.groupby(["run_id", "metric", "ood_set"])["split"].nunique()
    several = per_set.set_index(["run_id", "metric", "ood_set"]).index.map(lambda k: n_splits.get(k, 0) > 1)
    set_means = per_set[several | per_set["ood_set"].isin(CORRUPTION_FAMILIES)].assign(split=lambda f: f["ood_set"] + "/mean")
    ood_avg = _derived(per_set, [], protocol="shift", split="ood_avg")
    transfer = measured[(measured["protocol"] == "transfer") & measured["probe"].notna()]
    # an average over a single target would only repeat it
    transfer = transfer[transfer.groupby(["run_id", "metric", "probe"])["target"].transform("nunique") > 1]
    transfer_avg = _derived(transfer, ["probe"], protocol="transfer", split=lambda f: "transfer_avg/" + f["probe"])
    parts = [long] + [conform(p.reindex(columns=COLUMNS)) for p in (set_means, ood_avg, transfer_avg) if not p.empty]
    return conform(pd.concat(parts, ignore_index=True))


def t_interval(values: np.ndarray | pd.Series, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Student-t confidence interval for the mean; (nan, nan) below two values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return float(x.mean()) - half, float(x.mean()) + half


def _describe(values: pd.Series) -> pd.Series:
    low, high = t_interval(values)
    return pd.Series({"mean": values.mean(), "std": values.std(ddof=1) if len(values) > 1 else math.nan,
                      "n": len(values), "ci_low": low, "ci_high": high})


def seed_summary(long: pd.DataFrame) -> pd.DataFrame:
    """mean, std, n and 95% CI over seeds per (method, model, evaluation set, metric)."""
    keys = ["method", *MODEL_COLUMNS, *SET_COLUMNS, "metric"]
    if long.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n", "ci_low", "ci_high"])
    out = long.groupby(keys, sort=False, dropna=False)["value"].apply(_describe).unstack().reset_index()
    out["n"] = out["n"].astype(int)
    return out


def paired_delta(long: pd.DataFrame, treatment: str = "grpo_rm", control: str = "sft") -> pd.DataFrame:
    """Δ = treatment − control per matching seed (same model and evaluation set), then mean, std,
    n (pairs) and 95% CI over seeds."""
    keys = [*MODEL_COLUMNS, *SET_COLUMNS, "metric"]
    pair = [*keys, "seed"]
    a = long[long["method"] == treatment].set_index(pair)["value"]
    b = long[long["method"] == control].set_index(pair)["value"]
    diff = (a - b).dropna().rename("value").reset_index()
    if diff.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n", "ci_low", "ci_high", "treatment", "control"])
    out = diff.groupby(keys, sort=False, dropna=False)["value"].apply(_describe).unstack().reset_index()
    out["n"] = out["n"].astype(int)
    out["treatment"], out["control"] = treatment, control
    return out


def severity_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against corruption severity per (method, model, corruption family, metric):
    per run, the mean over corruptions at each severity (severity 0 = the first ID split), then
    mean / CI over seeds. Feeds the severity curves."""
    rows = long[long["severity"].notna() & ~long["derived"].astype(bool)]
    if rows.empty:
        return pd.DataFrame(columns=["method", *MODEL_COLUMNS, "ood_set", "severity", "metric", "mean", "std", "n", "ci_low", "ci_high"])
    per_run = rows.groupby(["run_id", "method", "seed", *MODEL_COLUMNS, "ood_set", "severity", "metric"], dropna=False)["value"].mean().reset_index()
    ids = long[(long["protocol"] == "id") & ~long["derived"].astype(bool)]
    clean = ids[ids["split"] == ids.groupby("run_id")["split"].transform("first")][["run_id", "metric", "value"]]
    families = per_run[["run_id", "method", "seed", *MODEL_COLUMNS, "ood_set", "metric"]].drop_duplicates()
    zero = families.merge(clean, on=["run_id", "metric"]).assign(severity=0)
    per_run = pd.concat([zero, per_run], ignore_index=True)
    keys = ["method", *MODEL_COLUMNS, "ood_set", "severity", "metric"]
    out = per_run.groupby(keys, sort=False, dropna=False)["value"].apply(_describe).unstack().reset_index()
    out["n"] = out["n"].astype(int)
    return out.sort_values(["method", "dataset", "ood_set", "severity"], kind="stable").reset_index(drop=True)


def training_log(specs: list[RunSpec], results_root: Path) -> pd.DataFrame:
    """Per-step training statistics (metrics.jsonl) of the finished runs, with run identity."""
    frames = []
    for spec in specs:
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        if not (run_dir.is_done() and run_dir.metrics.is_file()):
            continue
        log = pd.read_json(run_dir.metrics, lines=True)
        if log.empty:
            continue
        c = spec.config
        frames.append(log.assign(run_id=spec.run_id, method=c.method.name, dataset=c.data.name, seed=c.seed, variant=config_variant(c.canonical())))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "method", "dataset", "seed", "variant", "step"])


__all__ = ["long_table", "run_states", "with_averages", "seed_summary", "paired_delta", "severity_summary",
           "training_log", "t_interval", "split_parts", "config_variant", "variant_legend"]
