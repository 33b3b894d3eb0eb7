"""Report figures (matplotlib, each saved as PNG and PDF, written atomically).

- ``bars``: headline numbers per source dataset (ID, OOD average, transfer averages), one bar
  per method, error bars = 95% CI over seeds.
- ``id_vs_ood``: every run as a point (ID vs OOD average), method means with CI crosses.
- ``curves``: training statistics per step (loss, accuracy, reward, advantage spread),
  mean over seeds with the seed range shaded.
- ``severity``: accuracy against corruption severity (0 = the clean ID split).
- ``sweep``: model selection — the selection metric on the held-out split against each tuned
  value, per method, the chosen value marked (only for suites that tune).
Figures whose data the suite does not have are skipped (the report says so). Every frame carries
a ``model`` column (the setting's label, :func:`bench.report.tables.model_labels`): one panel or
marker per setting, so two backbones or settings of one dataset never mix; and an ``arm`` column
(the method config, :func:`bench.report.tables.arm_labels`): one bar, line or colour per method
config, so four GRPO-RM (ε, μ) configs of a setting are four series, never one.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bench.io import atomic_write
from bench.report.aggregate import param_name, short_number
from bench.report.tables import METRIC_NAMES, PROTOCOL_ORDER, method_name, method_order, model_labels, split_label
from bench.registry import Registry

COLORS = {"sft": "#1f77b4", "grpo_rm": "#d62728"}
SHADES = {"sft": "Blues", "grpo_rm": "Reds"}  # colormaps for a method with several configs
MARKERS = "osD^vP*X"
FORMATS = ("png", "pdf")


def _color(method: str, methods: list[str]) -> str:
    return COLORS.get(method, f"C{2 + methods.index(method)}")


def arms_of(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(arm label, method) of every method config in ``frame``, the baseline's first."""
    pairs = list(dict.fromkeys(zip(frame["arm"], frame["method"])))
    methods = method_order(frame["method"])
    return sorted(pairs, key=lambda p: methods.index(p[1]))


def arm_colors(arms: list[tuple[str, str]]) -> dict[str, str]:
    """A method's colour for its only config; shades of it when it has several (GRPO-RM reds)."""
    methods = method_order([m for _, m in arms])
    out = {}
    for method in methods:
        mine = [a for a, m in arms if m == method]
        if len(mine) == 1:
            out[mine[0]] = _color(method, methods)
            continue
        cmap = matplotlib.colormaps[SHADES.get(method, "Greens")]
        for i, arm in enumerate(mine):
            out[arm] = matplotlib.colors.to_hex(cmap(0.45 + 0.5 * i / (len(mine) - 1)))
    return out


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``, each atomically (a reader never sees half a file)."""
    paths = []
    for fmt in FORMATS:
        path = stem.with_suffix(f".{fmt}")
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, dpi=120, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None))
        paths.append(path)
    plt.close(fig)
    return paths


def suptitle(fig: plt.Figure, text: str) -> None:
    """The figure title, wrapped to the figure's width so that it is never cut off."""
    fig.suptitle(textwrap.fill(text, width=max(40, int(fig.get_figwidth() * 11))), fontsize=10)


def headline_metric(summary: pd.DataFrame, model: str) -> str:
    metrics = set(summary.loc[summary["model"] == model, "metric"])
    return "top1" if "top1" in metrics else "mIoU"


def _half(frame: pd.DataFrame) -> np.ndarray:
    return ((frame["ci_high"] - frame["ci_low"]) / 2).fillna(0).to_numpy(dtype=float)


def _title_suffix(summary: pd.DataFrame) -> str:
    return " — RANDOM INIT backbone (not pretrained)" if summary["random_init"].astype(bool).any() else ""


def bar_label(split: str, protocol: str) -> str:
    if split == "ood_avg":
        return "OOD avg"
    return f"{split} (ID)" if protocol == "id" else split_label(split, "", {})


def bars(summary: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    models = list(dict.fromkeys(summary["model"]))
    arms = arms_of(summary)
    colors = arm_colors(arms)
    fig, axes = plt.subplots(1, len(models), figsize=(max(5.5, 1.0 + 3.6 * len(models)), 4.0), squeeze=False)
    for ax, model in zip(axes[0], models):
        metric = headline_metric(summary, model)
        rows = summary[(summary["model"] == model) & (summary["metric"] == metric)]
        head = rows[((rows["protocol"] == "id") & ~rows["derived"].astype(bool)) | (rows["split"] == "ood_avg")]
        averaged = rows[rows["split"].str.startswith("transfer_avg/")]
        head = pd.concat([head, averaged if not averaged.empty else rows[rows["protocol"] == "transfer"]])
        groups = sorted(dict.fromkeys(zip(head["split"], head["protocol"])), key=lambda g: PROTOCOL_ORDER.get(g[1], 3))
        x = np.arange(len(groups))
        mine = [a for a in arms if (head["arm"] == a[0]).any()]
        width = 0.8 / max(1, len(mine))
        for i, (arm, _) in enumerate(mine):
            m = head[head["arm"] == arm].drop_duplicates("split").set_index("split").reindex([g[0] for g in groups])
            ax.bar(x + (i - (len(mine) - 1) / 2) * width, 100 * m["mean"].to_numpy(dtype=float), width, yerr=100 * _half(m),
                   capsize=3, color=colors[arm], label=arm)
        ax.set_xticks(x, [bar_label(s, p) for s, p in groups], rotation=20, ha="right")
        ax.set_title(model, fontsize=10)
        ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower left", fontsize=7)
    suptitle(fig, f"{title}: mean over seeds, error bar = 95% CI{_title_suffix(summary)}")
    fig.tight_layout()
    return save(fig, stem)


def id_vs_ood(long: pd.DataFrame, summary: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """x = ID (first ID split), y = OOD average, per run; crosses = method means ± 95% CI."""
    points = []
    for model in dict.fromkeys(long["model"]):
        metric = headline_metric(summary, model)
        rows = long[(long["model"] == model) & (long["metric"] == metric)]
        ids = rows[(rows["protocol"] == "id") & ~rows["derived"].astype(bool)]
        if ids.empty or not (rows["split"] == "ood_avg").any():
            continue
        first = ids["split"].iloc[0]
        x = ids[ids["split"] == first].set_index("run_id")["value"]
        y = rows[rows["split"] == "ood_avg"].set_index("run_id")["value"]
        meta = rows.drop_duplicates("run_id").set_index("run_id")
        both = pd.DataFrame({"x": x, "y": y, "arm": meta["arm"], "method": meta["method"]}).dropna()
        points.append((model, metric, first, both))
    if not points:
        return []
    colors = arm_colors(arms_of(summary))
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    for k, (model, metric, first, both) in enumerate(points):
        for arm, group in both.groupby("arm", sort=False):
            color = colors[arm]
            ax.scatter(100 * group["x"], 100 * group["y"], marker=MARKERS[k % len(MARKERS)], color=color, alpha=0.45, s=28)
            mx = summary[(summary["arm"] == arm) & (summary["model"] == model) & (summary["metric"] == metric)].drop_duplicates("split").set_index("split")
            if first in mx.index and "ood_avg" in mx.index:
                ax.errorbar(100 * mx.at[first, "mean"], 100 * mx.at["ood_avg", "mean"], xerr=100 * _half(mx.loc[[first]])[0],
                            yerr=100 * _half(mx.loc[["ood_avg"]])[0], marker=MARKERS[k % len(MARKERS)], color=color, ms=9,
                            mec="black", capsize=3, label=f"{arm} · {model}")
    lo = min(min(p[3]["x"].min(), p[3]["y"].min()) for p in points) * 100 - 2
    hi = max(max(p[3]["x"].max(), p[3]["y"].max()) for p in points) * 100 + 2
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="OOD = ID")
    ax.set_xlabel("in-distribution (%)")
    ax.set_ylabel("OOD average over shift sets (%)")
    ax.set_title(textwrap.fill(f"{title}: ID vs OOD per run{_title_suffix(summary)}", width=70), fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, stem)


CURVE_PANELS = (  # (title, columns with line styles); a panel is drawn when any column was logged
    ("loss", (("loss", "-"),)),
    ("batch accuracy", (("accuracy", "-"),)),
    ("reward mean (GRPO-RM)", (("reward_mean", "-"),)),
    ("advantage std, max (GRPO-RM)", (("adv_std", "-"), ("adv_max", ":"))),
)


def curves(log: pd.DataFrame, stem: Path, title: str, random_init: bool) -> list[Path]:
    if log.empty:
        return []
    models = list(dict.fromkeys(log["model"]))
    arms = arms_of(log)
    colors = arm_colors(arms)
    panels = [p for p in CURVE_PANELS if any(c in log.columns and log[c].notna().any() for c, _ in p[1])]
    fig, axes = plt.subplots(len(models), len(panels), figsize=(3.3 * len(panels), 2.7 * len(models)), squeeze=False)
    for r, model in enumerate(models):
        part = log[log["model"] == model]
        window = max(1, int(part["step"].max()) // 50)
        for c, (name, columns) in enumerate(panels):
            ax = axes[r][c]
            for arm, _ in arms:
                runs = part[part["arm"] == arm]
                for column, style in columns:
                    if column not in runs or runs[column].isna().all():
                        continue
                    per_step = runs.pivot_table(index="step", columns="seed", values=column, aggfunc="mean")
                    smooth = per_step.rolling(window, min_periods=1).mean()
                    label = arm + (f" {column}" if len(columns) > 1 else "")
                    ax.plot(smooth.index, smooth.mean(axis=1), style, color=colors[arm], lw=1.2, label=label)
                    if smooth.shape[1] > 1:
                        ax.fill_between(smooth.index, smooth.min(axis=1), smooth.max(axis=1), color=colors[arm], alpha=0.15, lw=0)
            ax.set_title(name, fontsize=9)
            if c == 0:  # the row's model, once, where a long name does not collide with titles
                ax.set_ylabel(model, fontsize=9)
            ax.set_xlabel(f"step (rolling mean of {window})" if window > 1 else "step", fontsize=8)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
    suffix = " — RANDOM INIT backbone (not pretrained)" if random_init else ""
    suptitle(fig, f"{title}: training curves, mean over seeds, band = seed range{suffix}")
    fig.tight_layout()
    return save(fig, stem)


def severity(sev: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    if sev.empty:
        return []
    panels = list(dict.fromkeys(zip(sev["model"], sev["ood_set"], sev["metric"])))
    panels = [p for p in panels if p[2] in ("top1", "mIoU")]
    arms = arms_of(sev)
    colors = arm_colors(arms)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.5, 1.0 + 3.8 * len(panels)), 4.0), squeeze=False)
    for ax, (model, family, metric) in zip(axes[0], panels):
        for arm, _ in arms:
            s = sev[(sev["model"] == model) & (sev["ood_set"] == family) & (sev["metric"] == metric) & (sev["arm"] == arm)]
            if s.empty:
                continue
            s = s.sort_values("severity")
            color = colors[arm]
            ax.plot(s["severity"], 100 * s["mean"], "o-", color=color, label=arm)
            ax.fill_between(s["severity"].astype(float), 100 * s["ci_low"].astype(float), 100 * s["ci_high"].astype(float), color=color, alpha=0.15, lw=0)
        name = f"{model}: {'prepared corruptions (-C)' if family == 'c' else 'generated corruptions'}"
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("severity (0 = clean ID split)")
        ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} (%), mean over corruptions")
        ax.set_xticks(range(0, 6))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    suptitle(fig, f"{title}: corruption severity, band = 95% CI over seeds{_title_suffix(sev)}")
    fig.tight_layout()
    return save(fig, stem)


def _is_log(key: str, values: list) -> bool:
    """Log x-axis for lr-like values: all positive numbers, and a learning rate (…lr) or spanning
    about a factor of 10 or more (3e-5 … 3e-4 is 9.999… in floating point)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not (len(numbers) == len(values) > 1 and min(numbers) > 0):
        return False
    return key.split(".")[-1].endswith("lr") or max(numbers) / min(numbers) >= 9.99


def sweep(table: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """One panel per (model, tuned key): the selection metric on the held-out split against the
    key's value, a line per method (and per combination of the other tuned keys), dots for single
    tuning runs, a ring and a dashed line at the chosen value. ``table``: aggregate.sweep_table."""
    if table.empty:
        return []
    table = table.assign(model=model_labels(table.assign(pair="")), parsed=[json.loads(v) for v in table["values"]])
    keys = list(dict.fromkeys(k for values in table["parsed"] for k in values))
    panels = [(model, key) for model in dict.fromkeys(table["model"]) for key in keys
              if any(key in v for v in table.loc[table["model"] == model, "parsed"])]
    if not panels:
        return []
    methods = method_order(table["method"])
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 0.8 + 4.2 * len(panels)), 3.8), squeeze=False)
    for ax, (model, key) in zip(axes[0], panels):
        part = table[(table["model"] == model) & table["parsed"].map(lambda v: key in v)]
        xs = list(dict.fromkeys(v[key] for v in part["parsed"]))
        log = _is_log(key, xs)
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        where = (lambda x: x) if numeric else (lambda x: xs.index(x))
        scale = 1.0 if (part["metric"] == "nll").all() else 100.0
        for method in methods:
            mine = part[part["method"] == method]
            others = mine["parsed"].map(lambda v: json.dumps({k: x for k, x in v.items() if k != key}, sort_keys=True))
            for other, line in mine.groupby(others, sort=False):
                line = line.assign(x=line["parsed"].map(lambda v: where(v[key]))).sort_values("x")
                extra = ", ".join(f"{param_name(k)}={short_number(x)}" for k, x in json.loads(other).items())
                label = method_name(method) + (f" ({extra})" if extra else "")
                color = _color(method, methods)
                ax.plot(line["x"], scale * line["score"].astype(float), "o-", color=color, lw=1.4, ms=4, label=label)
                for x, seeds in zip(line["x"], line["seed_values"]):
                    ax.scatter([x] * len(seeds), [scale * s for s in seeds], color=color, s=12, alpha=0.5, lw=0)
                for x, score in zip(line.loc[line["chosen"], "x"], line.loc[line["chosen"], "score"]):
                    ax.scatter([x], [scale * float(score)], s=160, facecolors="none", edgecolors=color, lw=2, zorder=5)
                    ax.axvline(x, color=color, ls="--", lw=0.8, alpha=0.6)
        if log:
            ax.set_xscale("log")
        ax.set_xticks([where(x) for x in xs], [short_number(x) for x in xs])
        ax.minorticks_off()
        metric, split = part["metric"].iloc[0], part["split"].iloc[0]
        ax.set_xlabel(param_name(key) + (" (log scale)" if log else ""))
        ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} on {split}" + ("" if scale == 1.0 else " (%)"))
        ax.set_title(model, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    suptitle(fig, f"{title}: model selection on the held-out split; ring = chosen value{_title_suffix(table)}")
    fig.tight_layout()
    return save(fig, stem)


@dataclass(frozen=True)
class FigureInfo:
    caption: str  # shown under the figure in the HTML report
    absent: str  # why the figure can be missing (said in the report when it is)


FIGURES: Registry[FigureInfo] = Registry("figure")
FIGURES.add("bars", FigureInfo("Headline numbers per source dataset; error bars are 95% confidence intervals over seeds.",
                               "no finished runs."))
FIGURES.add("id_vs_ood", FigureInfo("Each run's in-distribution accuracy against its OOD average; large markers are method means ± 95% CI.",
                                    "no run has both an ID split and OOD (shift) sets."))
FIGURES.add("curves", FigureInfo("Training statistics per optimiser step, mean over seeds; the band spans the seeds. GRPO-RM's "
                                 "clipped surrogate is 0 on a batch's first pass (ratio 1, advantages sum to 0), so its loss curve "
                                 "is flat at μ = 1; its gradient is not.",
                                 "no training logs (metrics.jsonl) among the finished runs."))
FIGURES.add("severity", FigureInfo("Accuracy against corruption severity, averaged over corruptions; severity 0 is the clean ID split.",
                                   "the suite has no corruption-severity splits (c/<corruption>/<1-5> or gen/<corruption>/<1-5>)."))
FIGURES.add("sweep", FigureInfo("Model selection: the selection metric on the held-out split against each tuned value, per method "
                                "(line: the mean over tuning seeds that decided; dots: single tuning runs); the ring marks the chosen "
                                "value. Tuning runs enter no table, Δ or claim.",
                                "no tuning results (stage 'tune') and no recorded selection among the finished runs."))
