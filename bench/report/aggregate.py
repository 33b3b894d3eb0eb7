"""Results of a suite as one long table, and seed aggregates with paired GRPO-RM − SFT deltas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.store import RunDir
from bench.suite import RunSpec

IDENTITY = ["method", "dataset", "backbone", "init", "random_init", "seed"]
LONG_COLUMNS = ["run_id", *IDENTITY, "split", "shift", "metric", "value"]


def long_table(specs: list[RunSpec], results_root: Path) -> tuple[pd.DataFrame, list[RunSpec]]:
    """One row per (run, split, metric) for the runs that are done; also the runs that are not."""
    rows, missing = [], []
    for spec in specs:
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        if not run_dir.is_done():
            missing.append(spec)
            continue
        r = run_dir.read_result()
        ident = {
            "run_id": r["run_id"], "method": r["method"], "dataset": r["dataset"],
            "backbone": r["backbone"]["display"], "init": r["backbone"]["init"],
            "random_init": bool(r["backbone"]["random_init"]), "seed": r["seed"],
        }
        for split, values in r["metrics"].items():
            for metric in (m for m in ("top1", "top5", "nll", "mIoU", "aAcc", "mAcc") if m in values):  # each protocol reports its own
                rows.append({**ident, "split": split, "shift": bool(values["shift"]), "metric": metric, "value": float(values[metric])})
    return pd.DataFrame(rows, columns=LONG_COLUMNS), missing


def with_ood_average(long: pd.DataFrame) -> pd.DataFrame:
    """Add a per-run 'ood_avg' split: the unweighted mean over shift splits, as the paper averages."""
    shifted = long[long["shift"]]
    if shifted.empty:
        return long
    keys = ["run_id", *IDENTITY, "metric"]
    avg = shifted.groupby(keys, dropna=False)["value"].mean().reset_index()
    avg["split"], avg["shift"] = "ood_avg", True
    return pd.concat([long, avg[LONG_COLUMNS]], ignore_index=True)


def with_transfer_average(long: pd.DataFrame) -> pd.DataFrame:
    """Add per-run 'transfer_avg/<probe>' splits: the mean over target datasets of each probe
    (split names 'transfer/<dataset>/<probe>')."""
    parts = long["split"].str.split("/", expand=True) if not long.empty else None
    if parts is None or parts.shape[1] < 3:
        return long
    transfer = long[(parts[0] == "transfer") & parts[2].notna()].copy()
    if transfer.empty:
        return long
    transfer["probe"] = parts.loc[transfer.index, 2]
    avg = transfer.groupby(["run_id", *IDENTITY, "metric", "probe"], dropna=False)["value"].mean().reset_index()
    avg["split"], avg["shift"] = "transfer_avg/" + avg["probe"], False
    return pd.concat([long, avg[LONG_COLUMNS]], ignore_index=True)


def seed_summary(long: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """mean, std and n over seeds per (method, dataset, backbone, init, split)."""
    data = long[long["metric"] == metric]
    group = ["method", "dataset", "backbone", "init", "split"]
    return data.groupby(group, sort=False)["value"].agg(mean="mean", std="std", n="count").reset_index()


def paired_delta(long: pd.DataFrame, treatment: str = "grpo_rm", control: str = "sft", metric: str = "top1") -> pd.DataFrame:
    """Δ = treatment − control over matching seeds (same dataset, backbone, init, split)."""
    data = long[long["metric"] == metric]
    keys = ["dataset", "backbone", "init", "split", "seed"]
    a = data[data["method"] == treatment].set_index(keys)["value"]
    b = data[data["method"] == control].set_index(keys)["value"]
    diff = (a - b).dropna().rename("delta").reset_index()
    return diff.groupby(["dataset", "backbone", "init", "split"], sort=False)["delta"].agg(mean="mean", std="std", n="count").reset_index()
