"""What the report answers first: is GRPO-RM better than SFT, where, and how sure are we.

- The verdict box (:func:`verdict_frame`): per setting (and GRPO-RM config), Δ GRPO-RM − SFT of
  the headline metric on the ID split, the OOD average and the transfer averages, each with its
  95% CI and p-value (the paired bootstrap over seeds and images where per-image predictions
  exist, :mod:`bench.report.stats`), and how many are significant — raw and after Holm's
  correction, because a box of a dozen comparisons at 5% each will call one "significant" by
  chance more often than not.
- The forest plot's rows (:func:`forest_frame`): the same Δs for every evaluation set.
- The ablation ranking (:func:`ablation_frame`): every method config against the plain SFT of its
  setting (label_smoothing 0), labelled with what differs from the method's defaults.
- Wall time per method config (:func:`wall_time_table`).

The baseline of every comparison here is the *plain* SFT of the setting — SFT with its default
parameters (no label smoothing) — so that an SFT label-smoothing variant is one of the ablated
configs, not a second baseline.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from bench.report.aggregate import GROUP_COLUMNS, finals, paired_delta, param_name, short_number, variant_descriptions
from bench.report.stats import BOOTSTRAP, BootstrapSettings, Predictions, holm, with_bootstrap
from bench.report.tables import (METRIC_NAMES, TextTable, arm_text, cell_text, method_name, method_order, model_labels, signed_text,
                                 split_label)

TREATMENT, CONTROL = "grpo_rm", "sft"
ALPHA = 0.05
VERDICT_COLUMNS = [*GROUP_COLUMNS, "treatment_variant", "control_variant", "setting", "quantity", "split", "metric", "mean", "ci_low",
                   "ci_high", "n", "p_value", "ci_method", "ci_note", "significant", "holm_significant"]


# ---- what a config is ------------------------------------------------------------------------

def _params(text: Any) -> dict[str, Any]:
    return {} if text is None or (not isinstance(text, str) and pd.isna(text)) else json.loads(text)


def method_defaults(method: str) -> dict[str, Any] | None:
    """The method's default parameters (from its registered parameter model); None when the
    method is not registered here (a result from another version)."""
    from bench.methods import METHODS  # the registry, not the training code

    try:
        return METHODS.get(method).Params().model_dump()
    except Exception:  # noqa: BLE001 — unknown method or parameters that need values: no defaults
        return None


def config_label(method: str, params: dict[str, Any]) -> str:
    """'GRPO-RM μ=2', 'GRPO-RM adv_norm=none', 'linear margin', 'SFT label_smoothing=0.1': the
    method and the parameters that differ from its defaults (all of them when the defaults are
    unknown), so an ablation row says what was changed, not the whole config."""
    defaults = method_defaults(method)
    keys = sorted(params) if defaults is None else [k for k in sorted(params) if k not in defaults or params[k] != defaults[k]]
    text = ", ".join(f"{param_name(k)}={short_number(params[k])}" for k in keys)
    return f"{method_name(method)} {text}".strip()


def plain_controls(long: pd.DataFrame) -> set[str]:
    """Variants of the plain SFT: SFT without label smoothing — the baseline every Δ here is
    taken against."""
    sft = long[long["method"] == CONTROL].drop_duplicates("variant")
    return {v for v, p in zip(sft["variant"], sft["method_params"]) if float(_params(p).get("label_smoothing", 0.0) or 0.0) == 0.0}


def _against_plain(delta: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """Δ rows whose control is the plain SFT of their setting; a setting without a plain SFT keeps
    all its controls (each is then a comparison of its own)."""
    if delta.empty:
        return delta
    plain = plain_controls(long)
    keys = list(zip(*(delta[c].astype(str) for c in GROUP_COLUMNS)))
    has_plain = {k for k, v in zip(keys, delta["control_variant"]) if v in plain}
    keep = [v in plain or k not in has_plain for k, v in zip(keys, delta["control_variant"])]
    return delta[keep]


def _scale(metric: str) -> float:
    return 1.0 if metric in ("nll", "brier") else 100.0


def _headline(rows: pd.DataFrame) -> str | None:
    metrics = set(rows["metric"])
    return next((m for m in ("top1", "mIoU") if m in metrics), None)


def _id_split(rows: pd.DataFrame) -> str | None:
    ids = rows[(rows["protocol"] == "id") & ~rows["derived"].astype(bool)]
    if ids.empty:
        return None
    return "test" if (ids["split"] == "test").any() else str(ids["split"].iloc[0])


def _arms(frame: pd.DataFrame, long: pd.DataFrame) -> pd.Series:
    descs = variant_descriptions(long)
    return pd.Series([arm_text(TREATMENT, descs.get(v, "")) for v in frame["treatment_variant"]], index=frame.index)


# ---- the verdict -----------------------------------------------------------------------------

def _quantities(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(quantity label, split) the verdict reports for one comparison's Δ rows of one metric."""
    out = []
    first = _id_split(rows)
    if first is not None:
        out.append((f"ID ({first})", first))
    if (rows["split"] == "ood_avg").any():
        out.append(("OOD average", "ood_avg"))
    averages = sorted(s for s in set(rows["split"]) if s.startswith("transfer_avg/"))
    if averages:
        out += [(split_label(s, "", {}), s) for s in averages]
    else:  # one transfer target per probe: the target stands for the transfer result
        single = rows[(rows["protocol"] == "transfer") & ~rows["derived"].astype(bool)]
        out += [(f"transfer · {split_label(s, '', {})}", s) for s in dict.fromkeys(single["split"])]
    return out


def _comparisons(delta: pd.DataFrame, long: pd.DataFrame):
    """(headline metric, its Δ rows) per comparison of GRPO-RM against the setting's plain SFT:
    what the verdict box and the forest plot both walk through."""
    d = delta[(delta["treatment"] == TREATMENT) & (delta["control"] == CONTROL)] if not delta.empty else delta
    d = _against_plain(d, long)
    if d.empty:
        return
    for _, part in d.groupby([*GROUP_COLUMNS, "treatment_variant", "control_variant"], sort=False, dropna=False):
        metric = _headline(part)
        if metric is not None:
            yield metric, part[part["metric"] == metric]


def verdict_frame(delta: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """One row per (comparison, quantity): Δ GRPO-RM − SFT in points of the setting's headline
    metric with CI, p, whether significant and whether still so after Holm's correction over all
    rows. ``delta``: :func:`bench.report.stats.with_bootstrap` rows; ``long``: final runs."""
    comparisons = list(_comparisons(delta, long))
    if not comparisons:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    rows = []
    for metric, mine in comparisons:
        for label, split in _quantities(mine):
            r = mine[mine["split"] == split].iloc[0]
            scale = _scale(metric)
            rows.append({**{c: r[c] for c in GROUP_COLUMNS}, "treatment_variant": r["treatment_variant"],
                         "control_variant": r["control_variant"], "quantity": label, "split": split, "metric": metric,
                         "mean": scale * r["mean"], "ci_low": scale * r["ci_low"], "ci_high": scale * r["ci_high"], "n": int(r["n"]),
                         "p_value": r.get("p_value", math.nan), "ci_method": r.get("ci_method", "t"), "ci_note": r.get("ci_note", ""),
                         "significant": bool(r["significant"])})
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    labels = model_labels(out, _arms(out, long))
    several = out["metric"].nunique() > 1  # classification and segmentation in one suite: say which
    out["setting"] = [f"{lab} ({METRIC_NAMES.get(m, m)})" if several else lab for lab, m in zip(labels, out["metric"])]
    out["holm_significant"] = [bool(h and s) for h, s in zip(holm(list(out["p_value"]), ALPHA), out["significant"])]
    return out[VERDICT_COLUMNS]


def p_text(p: float) -> str:
    return "" if pd.isna(p) else f"p = {p:.2g}"


def verdict_cell(r: Any) -> str:
    """'+2.00 [−0.48, +4.48] †‡, p = 0.004'; '+3.00 (n=1, no CI)'."""
    if pd.isna(r.ci_low):
        return f"{signed_text(r.mean)} (n={r.n}, no CI)"
    marks = ("†" if r.significant else "") + ("‡" if r.holm_significant else "")
    text = f"{signed_text(r.mean)} [{signed_text(r.ci_low)}, {signed_text(r.ci_high)}]" + (f" {marks}" if marks else "")
    p = p_text(r.p_value)
    return text + (f", {p}" if p else "")


def _wide(frame: pd.DataFrame) -> tuple[list[str], list[tuple[str, list[str], list[Any]]]]:
    """Columns (quantities in order of first appearance) and per comparison (setting, cells, rows)."""
    quantities = list(dict.fromkeys(frame["quantity"]))
    out = []
    for setting, part in frame.groupby("setting", sort=False):
        by = {r.quantity: r for r in part.itertuples()}
        out.append((setting, [verdict_cell(by[q]) if q in by else "—" for q in quantities], [by.get(q) for q in quantities]))
    return quantities, out


def verdict_lines(frame: pd.DataFrame, settings: BootstrapSettings) -> list[str]:
    """The counts, the multiplicity note and how the intervals were formed, as sentences."""
    m = len(frame)
    sig = frame[frame["significant"]]
    up, down = int((sig["mean"] > 0).sum()), int((sig["mean"] < 0).sum())
    holm_n = int(frame["holm_significant"].sum())
    lines = [f"**{len(sig)} of {m} comparisons significant** (95% CI excludes 0, †: {up} favour GRPO-RM, {down} SFT); "
             f"**{holm_n} of {m} after Holm's correction** (‡: family-wise error ≤ 5% over the {m} comparisons of this box). "
             f"With {m} comparisons at 5% each, some raw † are expected by chance alone; the Holm count is the one to quote."]
    boot = int((frame["ci_method"] == BOOTSTRAP).sum())
    if boot:
        lines.append(f"Intervals and p: {settings.describe()} for {boot} of {m}; percentile 95% CI, p = 2 · min(P(Δ* ≤ 0), P(Δ* ≥ 0)) "
                     "with the +1 correction.")
    rest = frame[frame["ci_method"] != BOOTSTRAP]
    if len(rest):
        counts = rest["ci_note"].fillna("").replace("", "no per-image predictions for this metric").value_counts(sort=False)
        why = next(iter(counts.index)) if len(counts) == 1 else "; ".join(f"{note} ({count}×)" for note, count in counts.items())
        lines.append(f"Seed-level t-interval (seed noise only, not test-set noise) and its t-test p for {len(rest)} of {m}: {why}.")
    lines.append("Baseline: the setting's plain SFT (no label smoothing). A zero-width interval is never significant.")
    return lines


def verdict_title(frame: pd.DataFrame) -> str:
    metrics = list(dict.fromkeys(frame["metric"]))
    what = " / ".join(METRIC_NAMES.get(m, m) for m in metrics)
    return f"Verdict: Δ GRPO-RM − SFT, {what} in points, mean over seeds [95% CI]"


def verdict_markdown(frame: pd.DataFrame, settings: BootstrapSettings) -> str:
    """The box at the top of report.md and the console."""
    if frame.empty:
        return "## Verdict\n\nNo GRPO-RM − SFT comparison: the finished runs hold no GRPO-RM and SFT pair of one setting and seed.\n"
    quantities, rows = _wide(frame)
    lines = [f"## {verdict_title(frame)}", "", "| setting | " + " | ".join(quantities) + " |", "|---|" + "---:|" * len(quantities)]
    lines += ["| " + " | ".join([setting, *cells]) + " |" for setting, cells, _ in rows]
    lines += [""] + [f"{x}  " for x in verdict_lines(frame, settings)]
    return "\n".join(lines).rstrip() + "\n"


def verdict_context(frame: pd.DataFrame, settings: BootstrapSettings) -> dict[str, Any] | None:
    """The HTML verdict box: header, cells (class sig / holm for † / ‡), sentences."""
    if frame.empty:
        return None
    quantities, rows = _wide(frame)

    def cls(r: Any) -> str:
        return "" if r is None else "holm" if r.holm_significant else "sig" if r.significant else ""

    return {"title": verdict_title(frame), "header": ["setting", *quantities], "lines": [x.replace("**", "") for x in verdict_lines(frame, settings)],
            "rows": [{"setting": s, "cells": [{"text": t, "cls": cls(r)} for t, r in zip(cells, found)]} for s, cells, found in rows]}


# ---- forest plot rows ------------------------------------------------------------------------



def forest_frame(delta: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """Every Δ GRPO-RM − SFT (against the plain SFT) of the headline metric per comparison and
    evaluation set — the ID split(s), each OOD set (a natural shift split, or a corruption
    benchmark's mean), the OOD average and the transfer averages (single targets where a probe
    has no average) — in points, with CI and significance, in plotting order."""
    columns = ["setting", "evaluation", "kind", "mean", "ci_low", "ci_high", "significant", "ci_method", "metric"]
    comparisons = list(_comparisons(delta, long))
    if not comparisons:
        return pd.DataFrame(columns=columns)
    rows = []
    for metric, mine in comparisons:
        derived = mine["derived"].astype(bool)
        ids = mine[(mine["protocol"] == "id") & ~derived]
        shift = mine[mine["protocol"] == "shift"]
        sets = shift[((shift["split"] == shift["ood_set"]) & ~shift["derived"].astype(bool)) | (shift["split"] == shift["ood_set"] + "/mean")]
        transfer = mine[mine["split"].str.startswith("transfer_avg/")]
        if transfer.empty:
            transfer = mine[(mine["protocol"] == "transfer") & ~derived]
        dataset = str(mine["dataset"].iloc[0])
        chosen = [(ids, "ID"), (sets, "OOD set"), (shift[shift["split"] == "ood_avg"], "OOD average"), (transfer, "transfer")]
        for frame, kind in chosen:
            for r in frame.itertuples():
                name = f"{r.split} (ID)" if kind == "ID" else "OOD average" if kind == "OOD average" else split_label(r.split, dataset, {})
                if r.split.endswith("/mean"):
                    name = f"{dataset}-C (mean)" if r.split.startswith("c/") else "generated corruptions (mean)"
                rows.append({**{c: getattr(r, c) for c in GROUP_COLUMNS}, "treatment_variant": r.treatment_variant, "evaluation": name,
                             "kind": kind, "mean": _scale(metric) * r.mean, "ci_low": _scale(metric) * r.ci_low,
                             "ci_high": _scale(metric) * r.ci_high, "significant": bool(r.significant),
                             "ci_method": getattr(r, "ci_method", "t"), "metric": metric})
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=columns)
    out["setting"] = model_labels(out, _arms(out, long))
    return out[columns].reset_index(drop=True)


# ---- ablation --------------------------------------------------------------------------------

ABLATION_COLUMNS = ["setting", "rank", "config", "method", "variant", "control_variant", "n", "metric", "id_split",
                    *(f"{q}_{c}" for q in ("id", "ood") for c in ("mean", "ci_low", "ci_high", "p_value", "significant", "ci_method"))]


def config_labels(long: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(method, variant) → its config label; where two configs of one setting would read the same
    (they differ in tuned values, not parameters) the variant's own description is added."""
    runs = long.drop_duplicates(["method", "variant"])
    labels = {(m, v): config_label(m, _params(p)) for m, v, p in zip(runs["method"], runs["variant"], runs["method_params"])}
    descs = variant_descriptions(long)
    for _, part in runs.groupby(GROUP_COLUMNS, sort=False, dropna=False):
        mine = [(m, v) for m, v in zip(part["method"], part["variant"])]
        texts = [labels[k] for k in mine]
        for k in mine:
            if texts.count(labels[k]) > 1:
                labels[k] = f"{labels[k]} ({descs.get(k[1]) or 'variant ' + k[1]})"
    return labels


def ablation_frame(final: pd.DataFrame, predictions: Predictions, problems: dict[str, str] | None = None,
                   settings: BootstrapSettings = BootstrapSettings()) -> pd.DataFrame:
    """Every method config (GRPO-RM configs, linear margin, SFT with label smoothing, ...) against
    the plain SFT of its setting, on the ID split and the OOD average of the headline metric, in
    points with CIs (the bootstrap where predictions exist), ranked per setting by Δ ID. Empty
    when there are fewer than two configs to rank."""
    final = finals(final)
    if final.empty:
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    plain = plain_controls(final)
    labels = config_labels(final)
    ranked = {labels[k] for k in labels if k[1] not in plain or k[0] != CONTROL}
    if len(ranked) < 2:
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    parts = []
    for method in method_order(final["method"]):
        d = paired_delta(final, treatment=method, control=CONTROL)
        d = d[d["control_variant"].isin(plain) & (d["treatment_variant"] != d["control_variant"])]
        if d.empty:
            continue
        keep = []
        for _, part in d.groupby([*GROUP_COLUMNS, "treatment_variant", "control_variant"], sort=False, dropna=False):
            metric = _headline(part)
            mine = part[part["metric"] == metric] if metric else part.iloc[0:0]
            first = _id_split(mine) if not mine.empty else None
            keep.append(mine[mine["split"].isin([first, "ood_avg"])])
        d = pd.concat(keep) if keep else d.iloc[0:0]
        parts.append(with_bootstrap(d, final, predictions, problems, settings))
    d = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if d.empty:
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    rows = []
    for _, part in d.groupby([*GROUP_COLUMNS, "treatment", "treatment_variant", "control_variant"], sort=False, dropna=False):
        r0 = part.iloc[0]
        metric = str(r0["metric"])
        row: dict[str, Any] = {**{c: r0[c] for c in GROUP_COLUMNS}, "config": labels.get((r0["treatment"], r0["treatment_variant"]), r0["treatment"]),
                               "method": r0["treatment"], "variant": r0["treatment_variant"], "control_variant": r0["control_variant"],
                               "n": int(part["n"].max()), "metric": metric, "id_split": None}
        for q, sel in (("id", part[part["split"] != "ood_avg"]), ("ood", part[part["split"] == "ood_avg"])):
            r = sel.iloc[0] if len(sel) else None
            if q == "id" and r is not None:
                row["id_split"] = r["split"]
            for c in ("mean", "ci_low", "ci_high"):
                row[f"{q}_{c}"] = _scale(metric) * r[c] if r is not None else math.nan
            row[f"{q}_p_value"] = r["p_value"] if r is not None else math.nan
            row[f"{q}_significant"] = bool(r["significant"]) if r is not None else False
            row[f"{q}_ci_method"] = r["ci_method"] if r is not None else ""
        rows.append(row)
    out = pd.DataFrame(rows)
    out["setting"] = model_labels(out)
    out["_key"] = out["id_mean"].fillna(out["ood_mean"]).fillna(-math.inf)
    block = {s: i for i, s in enumerate(dict.fromkeys(out["setting"]))}
    out = out.assign(_block=out["setting"].map(block)).sort_values(["_block", "_key"], ascending=[True, False], kind="stable")
    out["rank"] = out.groupby("_block").cumcount() + 1
    return out[ABLATION_COLUMNS].reset_index(drop=True)


def _delta_cell(mean: float, low: float, high: float, n: int, significant: bool, method: str) -> str:
    return cell_text(mean, low, high, n, n, signed=True, mark=significant, bounds=method == BOOTSTRAP)


def ablation_table(frame: pd.DataFrame) -> TextTable | None:
    """The ranked ablation as a table (None when there is nothing to rank)."""
    if frame.empty:
        return None
    rows = [([r.setting, str(r.rank), r.config],
             [_delta_cell(r.id_mean, r.id_ci_low, r.id_ci_high, r.n, r.id_significant, r.id_ci_method),
              _delta_cell(r.ood_mean, r.ood_ci_low, r.ood_ci_high, r.n, r.ood_significant, r.ood_ci_method), str(r.n)])
            for r in frame.itertuples()]
    splits = ", ".join(sorted({str(s) for s in frame["id_split"].dropna()}))
    metrics = " / ".join(METRIC_NAMES.get(m, m) for m in dict.fromkeys(frame["metric"]))
    caption = (f"Every method config against the plain SFT of its setting (SFT, no label smoothing): Δ {metrics} in points on the ID "
               f"split ({splits}) and the OOD average, paired over matching seeds, ranked per setting by Δ ID; a config is named by "
               "what differs from its method's defaults. [lo, hi]: 95% paired bootstrap over seeds and test images; ± half-width: "
               "the seed-level t-interval (no per-image predictions); † the CI excludes 0 (never for a zero-width CI). No multiplicity "
               "correction: a ranking to read, not a test of each row.")
    return TextTable("ablation", "Ablation: each config's Δ against the plain SFT", caption, ["setting", "rank", "config"],
                     ["Δ ID", "Δ OOD average", "n"], rows, frame)


# ---- wall time -------------------------------------------------------------------------------

def duration_text(seconds: float) -> str:
    if pd.isna(seconds):
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["verdict_frame", "verdict_markdown", "verdict_context", "forest_frame", "ablation_frame", "ablation_table",
           "config_label", "config_labels", "plain_controls", "method_defaults", "duration_text"]
