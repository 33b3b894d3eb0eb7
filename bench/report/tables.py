"""Markdown comparison tables: mean ± std over seeds per method, and the paired Δ row."""

from __future__ import annotations

import math

import pandas as pd

METHOD_NAMES = {"sft": "SFT", "grpo_rm": "GRPO-RM"}


def split_order(long: pd.DataFrame) -> list[str]:
    """In-distribution splits first (in result order), then shifts, then the OOD average."""
    seen = list(dict.fromkeys(long["split"]))
    shift = set(long.loc[long["shift"], "split"])
    ordered = [s for s in seen if s not in shift] + [s for s in seen if s in shift and s != "ood_avg"]
    return ordered + (["ood_avg"] if "ood_avg" in seen else [])


def split_header(split: str, long: pd.DataFrame) -> str:
    if split == "ood_avg":
        return "OOD avg"
    is_shift = bool(long.loc[long["split"] == split, "shift"].any())
    return f"{split} ({'OOD' if is_shift else 'ID'})"


def _cell(mean: float, std: float, n: int, signed: bool = False) -> str:
    sign = "+" if signed and mean > 0 else ""
    spread = f" ± {100 * std:.2f}" if n > 1 and not math.isnan(std) else ""
    return f"{sign}{100 * mean:.2f}{spread} (n={n})"


METRIC_NAMES = {"top1": "Top-1 accuracy", "mIoU": "mIoU (dataset-level)"}


def comparison_markdown(long: pd.DataFrame, summary: pd.DataFrame, delta: pd.DataFrame, title: str, metric: str = "top1") -> str:
    """One table per (dataset, backbone, init): methods as rows, evaluation splits as columns."""
    parts = [f"# {title}", "", f"{METRIC_NAMES[metric]} (%), mean ± std over seeds; Δ is paired over matching seeds.", ""]
    for (dataset, backbone, init), block in summary.groupby(["dataset", "backbone", "init"], sort=False):
        random_init = init == "random init"
        warning = " — **random init (not pretrained)**" if random_init else ""
        parts += [f"## {dataset} · {backbone} · {init}{warning}", ""]
        splits = [s for s in split_order(long) if s in set(block["split"])]
        header = ["method", *(split_header(s, long) for s in splits)]
        parts += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, rows in block.groupby("method", sort=False):
            label = METHOD_NAMES.get(method, method) + (" (random init)" if random_init else "")
            by_split = rows.set_index("split")
            cells = [_cell(by_split.at[s, "mean"], by_split.at[s, "std"], int(by_split.at[s, "n"])) if s in by_split.index else "—" for s in splits]
            parts.append("| " + " | ".join([label, *cells]) + " |")
        d = delta[(delta["dataset"] == dataset) & (delta["backbone"] == backbone) & (delta["init"] == init)].set_index("split")
        if not d.empty:
            cells = [_cell(d.at[s, "mean"], d.at[s, "std"], int(d.at[s, "n"]), signed=True) if s in d.index else "—" for s in splits]
            parts.append("| " + " | ".join(["Δ GRPO-RM − SFT", *cells]) + " |")
        parts.append("")
    return "\n".join(parts)
