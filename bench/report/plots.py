"""Bar plot of accuracy per evaluation split, one bar per method, error bars = std over seeds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bench.io import atomic_write
from bench.report.tables import METHOD_NAMES, split_header, split_order


def accuracy_bars(long: pd.DataFrame, summary: pd.DataFrame, path: Path, title: str, metric: str = "top1") -> None:
    splits = [s for s in split_order(long) if s in set(summary["split"])]
    methods = list(dict.fromkeys(summary["method"]))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(splits), 4.0))
    x = np.arange(len(splits))
    for i, method in enumerate(methods):
        rows = summary[summary["method"] == method].set_index("split").reindex(splits)
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, 100 * rows["mean"], width, yerr=100 * rows["std"].fillna(0), capsize=3, label=METHOD_NAMES.get(method, method))
    ax.set_xticks(x, [split_header(s, long) for s in splits], rotation=15)
    ax.set_ylabel(f"{'top-1 accuracy' if metric == 'top1' else metric} (%), error bar = std over seeds")
    ax.set_ylim(0, min(100.0, 100 * float((summary["mean"] + summary["std"].fillna(0)).max()) * 1.18))
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", ncol=len(methods))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".")))
    plt.close(fig)
