"""Report figures (matplotlib, each saved as PNG and PDF, written atomically).

- ``bars``: headline numbers per source dataset (ID, OOD average, transfer averages), one bar
  per method, error bars = 95% CI over seeds.
- ``id_vs_ood``: every run as a point (ID vs OOD average), method means with CI crosses.
- ``curves``: training statistics per step (accuracy, p(true class), margin, entropy, logit
  norm, gradient norm, clip fraction — those that vary), mean over seeds with the seed range shaded.
- ``forest``: every paired Δ of one compared pair (e.g. GRPO-RM − SFT) with its CI against a zero line.
- ``reliability``: reliability diagrams of the ID split per method config, bins pooled over seeds.
- ``ablation``: every method config's Δ against the plain SFT, ranked (suites with several configs).
- ``severity``: accuracy against corruption severity (0 = the clean ID split).
- ``sweep``: model selection — the selection metric on the held-out split against each tuned
  value, per method, the chosen value marked (only for suites that tune).
Figures whose data the suite does not have are skipped (the report says so). Every frame carries
a ``model`` column (the setting's label, :func:`bench.report.tables.model_labels`): one panel or
marker per setting, so two backbones or settings of one dataset never mix; and an ``arm`` column
(the method config, :func:`bench.report.tables.arm_labels`): one bar, line or colour per method
config, so four GRPO-RM (ε, μ) configs of a setting are four series, never one. Methods are
ordered and coloured by the suite's compared pairs (``pairs``, :mod:`bench.report.pairs`): the
first pair's control blue, its treatment red, any other method a colour of its own.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import numpy as np
import pandas as pd

from bench.io import atomic_write
from bench.lazy import lazy
from bench.report.aggregate import param_name, short_number
from bench.report.pairs import Pair, default_pairs
from bench.report.tables import METRIC_NAMES, PROTOCOL_ORDER, method_name, method_order, model_labels, split_label
from bench.registry import Registry

# pyplot (~0.2 s to import) only where a figure is drawn: a report whose figures are all kept, or
# drawn by its worker process (bench.report.figures), never imports it
plt = lazy("matplotlib.pyplot")

PAIR_COLORS = ("#1f77b4", "#d62728")  # the first compared pair's control (blue) and treatment (red)
PAIR_SHADES = ("Blues", "Reds")  # their colormaps when a method has several configs
MARKERS = "osD^vP*X"
FORMATS = ("png", "pdf")


def _lead(pairs: Sequence[Pair]) -> list[str]:
    first = (tuple(pairs) or default_pairs())[0]
    return [first.control, first.treatment]


def _color(method: str, methods: list[str], pairs: Sequence[Pair] = ()) -> str:
    lead = _lead(pairs)
    return PAIR_COLORS[lead.index(method)] if method in lead else f"C{2 + methods.index(method)}"


def arms_of(frame: pd.DataFrame, pairs: Sequence[Pair] = ()) -> list[tuple[str, str]]:
    """(arm label, method) of every method config in ``frame``, the controls' first."""
    arms = list(dict.fromkeys(zip(frame["arm"], frame["method"])))
    methods = method_order(frame["method"], pairs)
    return sorted(arms, key=lambda p: methods.index(p[1]))


def arm_colors(arms: list[tuple[str, str]], pairs: Sequence[Pair] = ()) -> dict[str, str]:
    """A method's colour for its only config; shades of it when it has several (the treatment's reds)."""
    methods = method_order([m for _, m in arms], pairs)
    lead = _lead(pairs)
    out = {}
    for method in methods:
        mine = [a for a, m in arms if m == method]
        if len(mine) == 1:
            out[mine[0]] = _color(method, methods, pairs)
            continue
        cmap = matplotlib.colormaps[PAIR_SHADES[lead.index(method)] if method in lead else "Greens"]
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


PANEL_COLUMNS = 4  # panels per row of a figure with one panel per setting; more wrap (bench.report.figures caps the count)


def _panel_grid(panels: int, width: float, height: float, min_width: float) -> tuple[plt.Figure, np.ndarray]:
    """A figure of ``panels`` panels, :data:`PANEL_COLUMNS` per row (one row: as wide as they are)."""
    ncols = max(1, min(panels, PANEL_COLUMNS))
    nrows = -(-max(1, panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(min_width, 1.0 + width * ncols), height * nrows), squeeze=False)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    return fig, axes


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


def bars(summary: pd.DataFrame, stem: Path, title: str, pairs: Sequence[Pair] = ()) -> list[Path]:
    models = list(dict.fromkeys(summary["model"]))
    arms = arms_of(summary, pairs)
    colors = arm_colors(arms, pairs)
    fig, axes = _panel_grid(len(models), 3.6, 4.0, 5.5)
    for ax, model in zip(axes.flat, models):
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


def id_vs_ood(long: pd.DataFrame, summary: pd.DataFrame, stem: Path, title: str, pairs: Sequence[Pair] = ()) -> list[Path]:
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
    colors = arm_colors(arms_of(summary, pairs), pairs)
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


CURVE_PANELS = (  # (logged column, panel title): what the policy is becoming, step by step
    ("accuracy", "batch accuracy (%)"),
    ("p_true", "p(true class)"),
    ("margin", "top-1 − top-2 logit margin"),
    ("entropy", "predictive entropy (nats)"),
    ("logit_norm", "logit L2 norm"),
    ("grad_norm", "gradient norm (before clipping)"),
    ("clip_fraction", "clip fraction"),
    ("heldout_top1", "held-out top-1 % (per epoch)"),
    ("heldout_nll", "held-out NLL (per epoch)"),
)
EPOCH_PANELS = {"heldout_top1", "heldout_nll"}
"""Logged once per epoch (train.eval_every_epoch), at the epoch's last step: drawn unsmoothed, with markers."""
# Not drawn: the loss (GRPO-RM's clipped surrogate is 0 on a batch's first pass at μ = 1: ratio 1,
# advantages summing to 0) and the advantage spread (std ≈ 1 and a fixed max by construction);
# flat lines that say nothing about training. The reward mean repeats the batch accuracy.


PERCENT_COLUMNS = {"accuracy": 100.0, "heldout_top1": 100.0}  # drawn in %, like every accuracy in the report


CURVE_COLUMNS = 4  # panels per row; more wrap to the next row


def _constant(values: pd.Series) -> bool:
    x = values.dropna().to_numpy(dtype=float)
    return len(x) == 0 or float(np.ptp(x)) <= 1e-12 + 1e-9 * float(np.max(np.abs(x)))


def curve_panels(log: pd.DataFrame) -> tuple[list[tuple[str, str]], list[str]]:
    """(column, title) of the panels to draw — the logged quantities of :data:`CURVE_PANELS` that
    vary over training in at least one run — and a note for each logged one that is constant in
    every run (dropped: a flat line would look like a measurement)."""
    drawn, dropped = [], []
    for column, title in CURVE_PANELS:
        if column not in log or log[column].notna().sum() == 0:
            continue  # not logged by any method of this suite
        per_run = log.groupby("run_id", sort=False)[column]
        if all(_constant(v) for _, v in per_run):
            values = {float(v) for v in log[column].dropna().unique()}
            at = f" (at {short_number(next(iter(values)))})" if len(values) == 1 else ""
            dropped.append(f"{title}{at}")
        else:
            drawn.append((column, title))
    return drawn, dropped


def curves(log: pd.DataFrame, stem: Path, title: str, random_init: bool, pairs: Sequence[Pair] = ()) -> list[Path]:
    if log.empty:
        return []
    panels, _ = curve_panels(log)
    if not panels:
        return []
    models = list(dict.fromkeys(log["model"]))
    arms = arms_of(log, pairs)
    colors = arm_colors(arms, pairs)
    ncols = min(CURVE_COLUMNS, len(panels))
    per_model = -(-len(panels) // ncols)  # rows of panels per model
    fig, axes = plt.subplots(len(models) * per_model, ncols, figsize=(max(5.0, 3.3 * ncols), 2.7 * len(models) * per_model), squeeze=False)
    for r, model in enumerate(models):
        part = log[log["model"] == model]
        window = max(1, int(part["step"].max()) // 50)
        for ax in axes[r * per_model:(r + 1) * per_model].flat[len(panels):]:
            ax.set_visible(False)
        for c, (column, name) in enumerate(panels):
            ax = axes[r * per_model + c // ncols][c % ncols]
            for arm, _ in arms:
                runs = part[part["arm"] == arm]
                if column not in runs or runs[column].isna().all():
                    continue
                per_step = runs.pivot_table(index="step", columns="seed", values=column, aggfunc="mean") * PERCENT_COLUMNS.get(column, 1.0)
                smooth = per_step if column in EPOCH_PANELS else per_step.rolling(window, min_periods=1).mean()
                ax.plot(smooth.index, smooth.mean(axis=1), "o-" if column in EPOCH_PANELS else "-", color=colors[arm], lw=1.2, ms=3, label=arm)
                if smooth.shape[1] > 1:
                    ax.fill_between(smooth.index, smooth.min(axis=1), smooth.max(axis=1), color=colors[arm], alpha=0.15, lw=0)
            ax.set_title(name if c else f"{model}\n{name}", fontsize=9)  # the model once, above its first panel
            ax.set_xlabel(f"step (rolling mean of {window})" if window > 1 and column not in EPOCH_PANELS else "step", fontsize=8)
            ax.grid(alpha=0.3)
            if ax.lines and c == 0:
                ax.legend(fontsize=7)
    suffix = " — RANDOM INIT backbone (not pretrained)" if random_init else ""
    suptitle(fig, f"{title}: training curves, mean over seeds, band = seed range{suffix}")
    fig.tight_layout()
    return save(fig, stem)


FOREST_COLORS = {"ID": "#1f77b4", "OOD set": "#ff7f0e", "OOD average": "#d62728", "transfer": "#2ca02c"}


def forest(frame: pd.DataFrame, stem: Path, title: str, bands: list[tuple[str, float, float, str]] | None = None) -> list[Path]:
    """Every paired Δ (``bench.report.verdict.forest_frame``) as a point with its 95% CI against a
    zero line; filled where it earns a † (CI excludes 0, |Δ| ≥ the minimum practical effect). One
    row per (comparison, evaluation set). ``bands``: (split, low, high, label) of each claim, drawn
    as a shaded band behind the rows of that split."""
    if frame.empty:
        return []
    n = len(frame)
    fig, ax = plt.subplots(figsize=(8.0, 1.4 + 0.3 * n))
    y = np.arange(n)[::-1].astype(float)
    labelled = set()
    for split, low, high, label in bands or []:
        rows = y[(frame["split"] == split).to_numpy()] if "split" in frame else []
        for row in rows:
            ax.fill_betweenx([row - 0.45, row + 0.45], low, high, color="tab:orange", alpha=0.25, lw=0,
                             label=label if label not in labelled else None, zorder=0)
            labelled.add(label)
    for kind, color in FOREST_COLORS.items():
        mask = (frame["kind"] == kind).to_numpy()
        if not mask.any():
            continue
        part = frame[mask]
        mean = part["mean"].to_numpy(dtype=float)
        low = (mean - part["ci_low"].to_numpy(dtype=float))
        high = (part["ci_high"].to_numpy(dtype=float) - mean)
        xerr = np.nan_to_num(np.vstack([low, high]), nan=0.0)
        ax.errorbar(mean, y[mask], xerr=xerr, fmt="none", ecolor=color, elinewidth=1.3, capsize=3)
        sig = part["significant"].to_numpy(dtype=bool)
        ax.scatter(mean[sig], y[mask][sig], color=color, s=36, zorder=3, label=kind if sig.any() else None)  # one legend entry per kind
        ax.scatter(mean[~sig], y[mask][~sig], facecolors="white", edgecolors=color, s=36, zorder=3, label=None if sig.any() else kind)
    ax.axvline(0, color="black", lw=0.9)
    settings = list(frame["setting"])
    for i in range(1, n):  # a rule between comparisons
        if settings[i] != settings[i - 1]:
            ax.axhline(y[i] + 0.5, color="grey", lw=0.5, alpha=0.6)
    ax.set_yticks(y, [f"{s} — {e}" if i == 0 or settings[i - 1] != s else e for i, (s, e) in enumerate(zip(settings, frame["evaluation"]))],
                  fontsize=7)
    metrics = " / ".join(METRIC_NAMES.get(m, m) for m in dict.fromkeys(frame["metric"]))
    ax.set_xlabel(f"Δ {frame_pair(frame)}, {metrics} (points), 95% CI; filled: †", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.8, n - 0.2)
    ax.legend(fontsize=7, loc="best")
    suptitle(fig, f"{title}: every paired Δ with its 95% CI")
    fig.tight_layout()
    return save(fig, stem)


def frame_pair(frame: pd.DataFrame) -> str:
    """'GRPO-RM − SFT' from a frame's treatment/control columns; 'treatment − control' without them."""
    if not {"treatment", "control"} <= set(frame.columns) or frame.empty:
        return "treatment − control"
    return Pair(str(frame["treatment"].iloc[0]), str(frame["control"].iloc[0])).label


SUMMARY_LABELS = 12  # rows of a forest summary named on the axis: the largest and the smallest Δs


def forest_summary(frame: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """The forest plot when its rows do not fit one figure (``bench.report.figures``): one row
    per comparison — its OOD average, or its ID split where it has none — sorted by Δ, each with
    its 95% CI, filled where it earns a †; the largest and smallest Δs are named, the rest are the
    caterpillar between them. Every row of the full plot is in delta.csv and verdict.csv."""
    if frame.empty:
        return []
    head = frame[frame["kind"] == "OOD average"]
    rest = frame[~frame["setting"].isin(set(head["setting"])) & (frame["kind"] == "ID")].drop_duplicates("setting")
    part = pd.concat([head, rest]).sort_values("mean", kind="stable").reset_index(drop=True)
    n = len(part)
    fig, ax = plt.subplots(figsize=(8.0, min(11.0, 2.2 + 0.3 * min(n, 2 * SUMMARY_LABELS) + 0.01 * n)))
    y = np.arange(n, dtype=float)
    mean = part["mean"].to_numpy(dtype=float)
    err = np.nan_to_num(np.vstack([mean - part["ci_low"].to_numpy(dtype=float), part["ci_high"].to_numpy(dtype=float) - mean]), nan=0.0)
    sig = part["significant"].to_numpy(dtype=bool)
    for kind, color in (("OOD average", FOREST_COLORS["OOD average"]), ("ID", FOREST_COLORS["ID"])):
        mask = (part["kind"] == kind).to_numpy()
        if not mask.any():
            continue
        ax.errorbar(mean[mask], y[mask], xerr=err[:, mask], fmt="none", ecolor=color, elinewidth=0.8 if n > 100 else 1.3, alpha=0.7)
        ax.scatter(mean[mask & sig], y[mask & sig], color=color, s=10 if n > 100 else 30, zorder=3, label=f"{kind} (†)")
        ax.scatter(mean[mask & ~sig], y[mask & ~sig], facecolors="white", edgecolors=color, s=10 if n > 100 else 30, zorder=3, label=kind)
    ax.axvline(0, color="black", lw=0.9)
    named = list(range(n)) if n <= 2 * SUMMARY_LABELS else [*range(SUMMARY_LABELS), *range(n - SUMMARY_LABELS, n)]
    ax.set_yticks(y[named], [f"{part['setting'].iloc[i]} — {part['evaluation'].iloc[i]}" for i in named], fontsize=6)
    ax.set_ylim(-1, n)
    metrics = " / ".join(METRIC_NAMES.get(m, m) for m in dict.fromkeys(part["metric"]))
    ax.set_xlabel(f"Δ {frame_pair(part)}, {metrics} (points), 95% CI; filled: †", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    suptitle(fig, f"{title}: {n} comparisons, sorted by Δ (OOD average, else ID) with 95% CIs")
    fig.tight_layout()
    return save(fig, stem)


def reliability(bins: pd.DataFrame, stem: Path, title: str, pairs: Sequence[Pair] = ()) -> list[Path]:
    """Reliability diagrams of the ID split per (setting, method config): per confidence bin the
    accuracy (bars) and the mean confidence (dots) from bin sums pooled over seeds, the diagonal of
    perfect calibration, and the images per bin underneath. ``bins``: model, arm, method, bin,
    count, confidence_sum, correct_sum."""
    if bins.empty or bins["count"].sum() == 0:
        return []
    models = list(dict.fromkeys(bins["model"]))
    arms = arms_of(bins, pairs)
    colors = arm_colors(arms, pairs)
    per_model = {m: [a for a, _ in arms if ((bins["model"] == m) & (bins["arm"] == a)).any()] for m in models}
    ncols = max(len(v) for v in per_model.values())
    n_bins = int(bins["bin"].max()) + 1
    fig = plt.figure(figsize=(max(4.5, 3.3 * ncols), 4.2 * len(models)))
    grid = fig.add_gridspec(2 * len(models), ncols, height_ratios=[3, 1] * len(models))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for r, model in enumerate(models):
        for c, arm in enumerate(per_model[model]):
            part = bins[(bins["model"] == model) & (bins["arm"] == arm)].groupby("bin")[["count", "confidence_sum", "correct_sum"]].sum()
            part = part.reindex(range(n_bins), fill_value=0.0)
            count = part["count"].to_numpy(dtype=float)
            seen = count > 0
            acc = np.divide(part["correct_sum"].to_numpy(dtype=float), count, out=np.zeros(n_bins), where=seen)
            conf = np.divide(part["confidence_sum"].to_numpy(dtype=float), count, out=np.zeros(n_bins), where=seen)
            ece = float(np.abs(part["correct_sum"] - part["confidence_sum"]).sum() / count.sum()) if count.sum() else float("nan")
            ax = fig.add_subplot(grid[2 * r, c])
            hist = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
            # in % like every other accuracy of the report
            ax.bar(100 * edges[:-1][seen], 100 * acc[seen], 100.0 / n_bins, align="edge", color=colors[arm], alpha=0.75, edgecolor="white", label="accuracy")
            ax.plot(100 * conf[seen], 100 * acc[seen], "o", color="black", ms=3, label="mean confidence")
            ax.plot([0, 100], [0, 100], "--", color="grey", lw=1, label="perfect calibration")
            ax.set_xlim(0, 100)
            ax.set_ylim(0, 100)
            ax.set_ylabel("accuracy (%)", fontsize=8)
            ax.set_title(textwrap.fill(f"{model} · {arm} · ECE of bins pooled over seeds {100 * ece:.2f}%", width=48), fontsize=8)
            ax.grid(alpha=0.3)
            plt.setp(ax.get_xticklabels(), visible=False)
            if c == 0:
                ax.legend(fontsize=6, loc="upper left")
            hist.bar(100 * edges[:-1], count, 100.0 / n_bins, align="edge", color=colors[arm], alpha=0.75, edgecolor="white")
            hist.set_ylabel("images", fontsize=8)
            hist.set_xlabel("confidence (top-1 probability, %)", fontsize=8)
            hist.grid(alpha=0.3)
    suptitle(fig, f"{title}: reliability on the ID split, bins pooled over seeds{_title_suffix(bins)}")
    fig.tight_layout()
    return save(fig, stem)


def ablation(frame: pd.DataFrame, stem: Path, title: str, control: str | None = None) -> list[Path]:
    """The ranked ablation (``bench.report.verdict.ablation_frame``) as horizontal bars: per config
    its Δ against the plain ``control`` (default: the default comparison's) on the ID split and the
    OOD average, with 95% CIs; † where the CI excludes 0. One panel per setting."""
    if frame.empty:
        return []
    baseline = method_name(control if control is not None else default_pairs()[0].control)
    settings = list(dict.fromkeys(frame["setting"]))
    sizes = [int((frame["setting"] == s).sum()) for s in settings]
    fig, axes = plt.subplots(len(settings), 1, figsize=(8.0, sum(1.3 + 0.55 * k for k in sizes)), squeeze=False,
                             gridspec_kw={"height_ratios": [1.3 + 0.55 * k for k in sizes]})
    for ax, setting in zip(axes[:, 0], settings):
        part = frame[frame["setting"] == setting].sort_values("rank")
        y = np.arange(len(part))[::-1].astype(float)
        for offset, (q, name, color) in zip((0.2, -0.2), (("id", "ID", "#1f77b4"), ("ood", "OOD average", "#d62728"))):
            mean = part[f"{q}_mean"].to_numpy(dtype=float)
            if np.isnan(mean).all():
                continue
            err = np.nan_to_num(np.vstack([mean - part[f"{q}_ci_low"].to_numpy(dtype=float), part[f"{q}_ci_high"].to_numpy(dtype=float) - mean]),
                                nan=0.0)
            ax.barh(y + offset, np.nan_to_num(mean), 0.38, xerr=err, color=color, alpha=0.8, capsize=3, label=name)
            for yy, m, sig, hi in zip(y + offset, mean, part[f"{q}_significant"], part[f"{q}_ci_high"].to_numpy(dtype=float)):
                if sig and not np.isnan(m):
                    ax.annotate("†", (max(m, hi if not np.isnan(hi) else m), yy), xytext=(3, -3), textcoords="offset points", fontsize=8)
        ax.axvline(0, color="black", lw=0.9)
        ax.set_yticks(y, list(part["config"]), fontsize=8)
        ax.set_title(setting, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    metrics = " / ".join(METRIC_NAMES.get(m, m) for m in dict.fromkeys(frame["metric"]))
    axes[-1, 0].set_xlabel(f"Δ against the plain {baseline}, {metrics} (points), 95% CI")
    suptitle(fig, f"{title}: what each config changes, against the plain {baseline} of its setting")
    fig.tight_layout()
    return save(fig, stem)


def severity(sev: pd.DataFrame, stem: Path, title: str, pairs: Sequence[Pair] = ()) -> list[Path]:
    if sev.empty:
        return []
    panels = list(dict.fromkeys(zip(sev["model"], sev["ood_set"], sev["metric"])))
    panels = [p for p in panels if p[2] in ("top1", "mIoU")]
    arms = arms_of(sev, pairs)
    colors = arm_colors(arms, pairs)
    fig, axes = _panel_grid(len(panels), 3.8, 4.0, 5.5)
    for ax, (model, family, metric) in zip(axes.flat, panels):
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


def sweep(table: pd.DataFrame, stem: Path, title: str, pairs: Sequence[Pair] = ()) -> list[Path]:
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
    methods = method_order(table["method"], pairs)
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
                color = _color(method, methods, pairs)
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
    """A figure's caption and why it can be missing; '{treatment}' and '{control}' in either are
    the display names of the pair the figure is about (:meth:`about`)."""

    caption: str  # shown under the figure in the HTML report
    absent: str  # why the figure can be missing (said in the report when it is)

    def about(self, pair: Pair | None = None) -> "FigureInfo":
        """The texts with the pair's method names (the default comparison's when None)."""
        pair = pair if pair is not None else default_pairs()[0]
        names = {"treatment": method_name(pair.treatment), "control": method_name(pair.control)}
        return FigureInfo(self.caption.format(**names), self.absent.format(**names))


FIGURES: Registry[FigureInfo] = Registry("figure")
FIGURES.add("bars", FigureInfo("Headline numbers per source dataset; error bars are 95% confidence intervals over seeds.",
                               "no finished runs."))
FIGURES.add("id_vs_ood", FigureInfo("Each run's in-distribution accuracy against its OOD average; large markers are method means ± 95% CI.",
                                    "no run has both an ID split and OOD (shift) sets."))
FIGURES.add("curves", FigureInfo("Training statistics per optimiser step, mean over seeds; the band spans the seeds. Panels: the "
                                 "logged quantities that vary — batch accuracy, p(true class), logit margin, entropy, logit norm, "
                                 "gradient norm, clip fraction, and, for runs with train.eval_every_epoch, the held-out top-1 and NLL after each epoch (markers, unsmoothed). Not drawn: the loss and the advantage spread (a ratio-clipped surrogate "
                                 "is 0 on a batch's first pass at μ = 1 and its normalised advantages have a fixed spread: flat lines), "
                                 "and any quantity constant over training in every run (named below the figures).",
                                 "no training logs (metrics.jsonl) with a quantity that varies among the finished runs."))
FIGURES.add("forest", FigureInfo("Every paired Δ of the compared methods (against the plain control) per setting and evaluation set with "
                                 "its 95% CI (seeds × test images crossed where per-image predictions exist, else the seed-level "
                                 "t-interval; the same intervals as the tables and the verdict box); filled markers: † (the CI excludes 0 "
                                 "and |Δ| ≥ the minimum practical effect); shaded: a claim's band, expected ± tolerance.",
                                 "no {treatment} and {control} runs of one setting and seed."))
FIGURES.add("reliability", FigureInfo("Reliability diagrams of the ID split per method config: accuracy per confidence bin (bars) and the "
                                      "bin's mean confidence (dots) from bin sums pooled over seeds, against the diagonal of perfect "
                                      "calibration; the images per bin underneath. The ECE in each panel's title is that of the pooled "
                                      "bins; the calibration table's ECE is the mean of each seed's own ECE (both with 15 equal-width bins), "
                                      "which is larger when seeds are miscalibrated in different bins.",
                                      "no result carries calibration bins (segmentation results have none; classification results written before calibration was recorded)."))
FIGURES.add("ablation", FigureInfo("Each method config's Δ against the plain {control} of its setting on the ID split and the OOD average, "
                                   "ranked, with 95% CIs; † the CI excludes 0.",
                                   "fewer than two method configs to rank."))
FIGURES.add("severity", FigureInfo("Accuracy against corruption severity, averaged over corruptions; severity 0 is the clean ID split.",
                                   "the suite has no corruption-severity splits (c/<corruption>/<1-5> or gen/<corruption>/<1-5>)."))
FIGURES.add("sweep", FigureInfo("Model selection: the selection metric on the held-out split against each tuned value, per method "
                                "(line: the mean over tuning seeds that decided; dots: single tuning runs); the ring marks the chosen "
                                "value. Tuning runs enter no table, Δ or claim.",
                                "no tuning results (stage 'tune') and no recorded selection among the finished runs."))
