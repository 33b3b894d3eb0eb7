"""What the report answers first: which method is better, where, how sure, and could we tell.

- The headline (:func:`headline`): one sentence per endpoint family and per claim, each saying
  only what its test supports ("better" / "worse" needs a rejected null after the family's
  correction; otherwise "no difference shown", with the effect the comparison could have
  detected).
- The verdict box (:func:`verdict_frame`): the pre-specified *primary* endpoint (``primary:`` in
  the suite), tested alone at α; then the secondary endpoints in *families*, each corrected
  within itself by Holm's step-down: **ID** (the headline metric on the ID split), **OOD** (each
  OOD set, and the OOD average unless it is the primary), **transfer** (transfer averages, or the
  single targets) and **calibration** (NLL and ECE on the ID split and the OOD average). Every Δ
  has its 95 % CI, two-sided p and minimum detectable effect at 80 % power (MDE) from
  :func:`bench.report.stats.delta_estimate`. † = the CI excludes 0 *and* |Δ| ≥ the suite's
  minimum practical effect; ‡ = still so after Holm within the family (the primary: at α alone).
- The forest plot's rows (:func:`forest_frame`): the same Δs for every evaluation set.
- The ablation ranking (:func:`ablation_frame`): every method config against the plain control.

Each of these is about one compared pair (:class:`Endpoints`: a suite's ``compare:`` entry, see
:mod:`bench.report.pairs`); a suite that compares several pairs gets one verdict box and one
forest plot per pair, each box's families Holm-corrected within that box.

The baseline of every comparison here is the *plain* control of the setting — its default
parameters (no label smoothing) — so that a label-smoothing variant is one of the ablated
configs, not a second baseline.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd

from bench.report.aggregate import GROUP_COLUMNS, finals, paired_delta, param_name, short_number, significant, variant_descriptions
from bench.report.claims import ALPHA, Estimated, Estimating, Quantity, quantity_estimates, scale_of
from bench.report.pairs import Pair, default_pairs, pairs_of
from bench.report.schema import row_tuples
from bench.report.stats import CROSSED, Predictions, holm, with_intervals
from bench.report.tables import (METRIC_NAMES, TextTable, arm_text, cell_text, method_name, method_order, model_labels, signed_text,
                                 split_label)
from bench.suite import MIN_EFFECT_DEFAULTS

LOWER_IS_BETTER = ("nll", "ece", "brier")
FAMILIES = ("primary", "ID", "OOD", "transfer", "calibration")
VERDICT_COLUMNS = ["family", *GROUP_COLUMNS, "treatment", "control", "treatment_variant", "control_variant", "setting", "quantity", "split",
                   "metric", "mean", "ci_low", "ci_high", "n", "p_value", "mde", "se_floor", "ci_method", "ci_note", "significant",
                   "family_significant", "alpha"]


def _default_treatment() -> str:
    return default_pairs()[0].treatment


def _default_control() -> str:
    return default_pairs()[0].control


@dataclass(frozen=True)
class Endpoints:
    """What one verdict box tests: the compared pair, the primary endpoint (None: none declared,
    or it tests another pair), the minimum practical effect per metric (report units) and α."""

    treatment: str = field(default_factory=_default_treatment)
    control: str = field(default_factory=_default_control)
    primary: Quantity | None = None
    min_effect: Mapping[str, float] = field(default_factory=lambda: dict(MIN_EFFECT_DEFAULTS))
    alpha: float = ALPHA
    primary_alpha: float = ALPHA  # two-sided; with adaptive seeds the α spent at the look the rounds stopped at
    look: str = ""  # 'look 2 of 2' with adaptive seeds

    @classmethod
    def of(cls, suite: Any, results_root: Any = None) -> "Endpoints":
        """The endpoints of the suite's primary pair (its first compared pair when it declares no primary)."""
        every = cls.all_of(suite, results_root)
        return next((e for e in every if e.primary is not None), every[0])

    @classmethod
    def all_of(cls, suite: Any, results_root: Any = None) -> list["Endpoints"]:
        """One per pair the suite compares (:meth:`bench.suite.Suite.comparisons`), in its order;
        the primary endpoint belongs to the pair it tests."""
        from bench.report.claims import primary_quantity, report_alpha

        q = primary_quantity(suite)
        alpha, look = ALPHA, ""
        if getattr(suite, "seeds", None) is not None and results_root is not None:
            from bench.sequential import current_look

            k, looks = current_look(suite, results_root)
            alpha, look = 2 * report_alpha(suite, results_root), f"look {k + 1} of {len(looks)}, {looks[k]} seeds"
        mine = (lambda p: q if q is not None and (q.treatment, q.control) == (p.treatment, p.control) else None)
        return [cls(p.treatment, p.control, mine(p), suite.min_effects(), ALPHA, alpha, look) for p in pairs_of(suite)]

    @property
    def pair(self) -> Pair:
        return Pair(self.treatment, self.control)

    def floor(self, metric: str) -> float:
        """The minimum practical effect of ``metric`` in raw units (fractions for accuracy)."""
        return self.min_effect.get(metric, 0.0) / scale_of(metric)


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


def plain_controls(long: pd.DataFrame, control: str) -> set[str]:
    """Variants of the plain control: without label smoothing — the baseline every Δ here is
    taken against."""
    rows = long[long["method"] == control].drop_duplicates("variant")
    return {v for v, p in zip(rows["variant"].tolist(), rows["method_params"].tolist()) if float(_params(p).get("label_smoothing", 0.0) or 0.0) == 0.0}


def _against_plain(delta: pd.DataFrame, long: pd.DataFrame, control: str) -> pd.DataFrame:
    """Δ rows whose control is the plain control of their setting; a setting without a plain one
    keeps all its controls (each is then a comparison of its own)."""
    if delta.empty:
        return delta
    plain = plain_controls(long, control)
    keys = list(zip(*(delta[c].astype(str).tolist() for c in GROUP_COLUMNS)))  # listed: walking text cells one by one is slow
    controls = delta["control_variant"].tolist()
    has_plain = {k for k, v in zip(keys, controls) if v in plain}
    keep = [v in plain or k not in has_plain for k, v in zip(keys, controls)]
    return delta[keep]


Records = list[dict[str, Any]]  # Δ rows as plain dicts: the per-comparison walks below touch each row a few times


def _records(frame: pd.DataFrame) -> Records:
    """``frame``'s rows as dicts (a missing value stays pd.NA / NaN): at thousands of comparisons,
    filtering a DataFrame per quantity was most of the verdict's time."""
    columns = {c: frame[c].to_numpy(dtype=object) for c in frame.columns}
    return [{c: v[i] for c, v in columns.items()} for i in range(len(frame))]


def _rows_of(rows: pd.DataFrame | Records) -> Records:
    return _records(rows) if isinstance(rows, pd.DataFrame) else rows


def _is(value: Any, text: str) -> bool:
    """``value == text`` for a cell that may be missing (pd.NA compares as neither)."""
    return isinstance(value, str) and value == text


def _flag(value: Any) -> bool:
    return value is not pd.NA and bool(value)


def _headline(rows: pd.DataFrame | Records) -> str | None:
    metrics = {r["metric"] for r in _rows_of(rows)}
    return next((m for m in ("top1", "mIoU") if m in metrics), None)


def _id_split(rows: pd.DataFrame | Records) -> str | None:
    ids = [r for r in _rows_of(rows) if _is(r["protocol"], "id") and not _flag(r["derived"])]
    if not ids:
        return None
    return "test" if any(_is(r["split"], "test") for r in ids) else str(ids[0]["split"])


def _arms(frame: pd.DataFrame, long: pd.DataFrame, treatment: str) -> pd.Series:
    descs = variant_descriptions(long)
    return pd.Series([arm_text(treatment, descs.get(v, "")) for v in frame["treatment_variant"]], index=frame.index)


# ---- the verdict -----------------------------------------------------------------------------

def _is_set(r: dict[str, Any], own: bool = True) -> bool:
    """A shift row that is an OOD set's: its own split (a natural shift, ``own``) or a corruption
    benchmark's mean."""
    ood_set = r["ood_set"]
    if not isinstance(ood_set, str):
        return False
    return (own and r["split"] == ood_set and not _flag(r["derived"])) or r["split"] == ood_set + "/mean"


def _ood_sets(rows: pd.DataFrame | Records) -> list[str]:
    """Each OOD set's split: a natural shift split, or a corruption benchmark's mean."""
    shift = [r for r in _rows_of(rows) if _is(r["protocol"], "shift")]
    own = [r["split"] for r in shift if _is(r["ood_set"], r["split"]) and not _flag(r["derived"])]
    means = [r["split"] for r in shift if _is_set(r, own=False)]
    return list(dict.fromkeys([*own, *means]))


def _quantities(rows: pd.DataFrame | Records, metric: str, ends: Endpoints) -> list[tuple[str, str, str, str]]:
    """(family, quantity label, split, metric) the verdict box reports for one comparison's Δ rows."""
    out = []
    rows = _rows_of(rows)
    headline = [r for r in rows if r["metric"] == metric]
    first = _id_split(headline)
    if first is not None:
        out.append(("ID", f"ID ({first})", first, metric))
    primary_split = ends.primary.split if ends.primary is not None and ends.primary.metric == metric else None
    for split in _ood_sets(headline):
        out.append(("OOD", _set_label(split, str(rows[0]["dataset"])), split, metric))
    if any(_is(r["split"], "ood_avg") for r in headline) and primary_split != "ood_avg":
        out.append(("OOD", "OOD average", "ood_avg", metric))
    averages = sorted(s for s in {r["split"] for r in headline} if s.startswith("transfer_avg/"))
    if averages:
        out += [("transfer", split_label(s, "", {}), s, metric) for s in averages]
    else:  # one transfer target per probe: the target stands for the transfer result
        single = [r["split"] for r in headline if _is(r["protocol"], "transfer") and not _flag(r["derived"])]
        out += [("transfer", f"transfer · {split_label(s, '', {})}", s, metric) for s in dict.fromkeys(single)]
    for cal in ("nll", "ece"):
        mine = [r["split"] for r in rows if r["metric"] == cal]
        if first is not None and first in mine:
            out.append(("calibration", f"{METRIC_NAMES.get(cal, cal)} · ID", first, cal))
        if "ood_avg" in mine:
            out.append(("calibration", f"{METRIC_NAMES.get(cal, cal)} · OOD average", "ood_avg", cal))
    return out


def _set_label(split: str, dataset: str) -> str:
    if split.endswith("/mean"):
        return f"{dataset}-C (mean)" if split.startswith("c/") else "generated corruptions (mean)"
    return split_label(split, dataset, {})


def comparisons(delta: pd.DataFrame, long: pd.DataFrame, ends: Endpoints = Endpoints()) -> list[tuple[str, Records]]:
    """:func:`_comparisons` as a list: a report computes it once for its verdict box and its forest plot."""
    return list(_comparisons(delta, long, ends))


def _comparisons(delta: pd.DataFrame, long: pd.DataFrame, ends: Endpoints = Endpoints()):
    """(headline metric, all its Δ rows as :data:`Records`) per comparison of the treatment
    against the setting's plain control: what the verdict box and the forest plot both walk
    through. Grouped once, in order of first appearance (as ``groupby(sort=False)``)."""
    d = delta[(delta["treatment"] == ends.treatment) & (delta["control"] == ends.control)] if not delta.empty else delta
    d = _against_plain(d, long, ends.control)
    if d.empty:
        return
    groups: dict[tuple, Records] = {}
    for r in _records(d):
        groups.setdefault(tuple(r[c] for c in (*GROUP_COLUMNS, "treatment_variant", "control_variant")), []).append(r)
    for part in groups.values():
        metric = _headline(part)
        if metric is not None:
            yield metric, part


def _mark(mean: float, low: float, high: float, floor: float) -> bool:
    """† : the CI excludes 0 and the effect is at least the minimum practical effect."""
    return bool(significant(low, high) and abs(mean) >= floor)


def verdict_frame(delta: pd.DataFrame, long: pd.DataFrame, ends: Endpoints = Endpoints(), primary: list[Estimated] | None = None,
                  found: list[tuple[str, Records]] | None = None) -> pd.DataFrame:
    """One row per (family, comparison, quantity) in report units with CI, p, MDE, † and ‡ (see
    the module docstring). ``delta``: :func:`bench.report.stats.with_intervals` rows; ``long``:
    final runs; ``primary``: the primary endpoint's estimates (:func:`primary_estimates`);
    ``found``: :func:`comparisons` of the same, when the caller has it."""
    rows = []
    for item in primary or []:
        est = item.estimate
        low, high = est.interval(1 - ends.primary_alpha)  # with adaptive seeds: the CI at the α spent at the stopping look
        q = ends.primary
        assert q is not None
        floor = ends.min_effect.get(q.metric, 0.0)
        sig = _mark(est.mean, low, high, floor)
        rows.append({"family": "primary", **{c: None for c in GROUP_COLUMNS}, "treatment": q.treatment, "control": q.control,
                     "treatment_variant": None, "control_variant": None, "setting": item.label,
                     "quantity": f"{_split_words(q.split)}, {METRIC_NAMES.get(q.metric, q.metric)}", "split": q.split, "metric": q.metric,
                     "mean": est.mean, "ci_low": low, "ci_high": high, "n": est.n_seeds, "p_value": est.p_two_sided() if est.defined else math.nan,
                     "mde": est.mde(alpha=ends.primary_alpha), "se_floor": est.floor, "ci_method": est.method, "ci_note": item.note,
                     "significant": sig, "family_significant": sig, "alpha": ends.primary_alpha})
    for metric, mine in (found if found is not None else _comparisons(delta, long, ends)):
        for family, label, split, m in _quantities(mine, metric, ends):
            r = next((x for x in mine if _is(x["split"], split) and x["metric"] == m), None)
            if r is None:
                continue
            scale = scale_of(m)
            mean, low, high = scale * r["mean"], scale * r["ci_low"], scale * r["ci_high"]
            rows.append({"family": family, **{c: r[c] for c in GROUP_COLUMNS}, "treatment": r["treatment"], "control": r["control"],
                         "treatment_variant": r["treatment_variant"], "control_variant": r["control_variant"], "quantity": label,
                         "split": split, "metric": m, "mean": mean, "ci_low": low, "ci_high": high, "n": int(r["n"]),
                         "p_value": r.get("p_value", math.nan), "mde": scale * r.get("mde", math.nan),
                         "se_floor": scale * r.get("se_floor", math.nan), "ci_method": r.get("ci_method", "t"),
                         "ci_note": r.get("ci_note", ""), "significant": _mark(mean, low, high, ends.min_effect.get(m, 0.0)),
                         "alpha": ends.alpha})
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    secondary = out["family"] != "primary"
    if secondary.any():
        part = out[secondary]
        labels = model_labels(part, _arms(part, long, ends.treatment))
        several = part["metric"].isin(["top1", "top5"]).any() and part["metric"].isin(["mIoU", "aAcc", "mAcc"]).any()
        out.loc[secondary, "setting"] = [f"{lab} ({'classification' if m in ('top1', 'nll', 'ece') else 'segmentation'})" if several else lab
                                         for lab, m in zip(labels, part["metric"])]
    # Holm within each family (the primary: several comparisons only when it is run per dataset)
    out["family_significant"] = False
    for family, part in out.groupby("family", sort=False):
        rejected = holm(list(part["p_value"]), ends.alpha)
        out.loc[part.index, "family_significant"] = [bool(h and s) for h, s in zip(rejected, part["significant"])]
    order = {f: i for i, f in enumerate(FAMILIES)}
    out = out.assign(_f=out["family"].map(order)).sort_values("_f", kind="stable").drop(columns="_f")
    return out[VERDICT_COLUMNS].reset_index(drop=True)


def _split_words(split: str) -> str:
    return {"ood_avg": "OOD average"}.get(split, split_label(split, "", {}))


def primary_estimates(ends: Endpoints, final: pd.DataFrame, predictions: Predictions, problems: Mapping[str, str],
                      shared: Estimating | None = None) -> list[Estimated]:
    """The primary endpoint's estimates; ``shared``: an :class:`Estimating` of ``final`` the caller reuses."""
    return quantity_estimates(ends.primary, final, predictions, problems, shared) if ends.primary is not None and not final.empty else []


def p_text(p: float) -> str:
    return "" if pd.isna(p) else f"p = {p:.2g}"


def unit_of(metric: str) -> str:
    return {"nll": "nats", "brier": ""}.get(metric, "points")


def verdict_cell(r: Any) -> str:
    """'+2.00 [−0.48, +4.48] †‡'; '+3.00 (n=1, no CI)'."""
    if pd.isna(r.ci_low):
        return f"{signed_text(r.mean)} (n={r.n}, no CI)"
    marks = ("†" if r.significant else "") + ("‡" if r.family_significant else "")
    return f"{signed_text(r.mean)} [{signed_text(r.ci_low)}, {signed_text(r.ci_high)}]" + (f" {marks}" if marks else "")


def _direction(metric: str, mean: float) -> str:
    better = mean < 0 if metric in LOWER_IS_BETTER else mean > 0
    return "better" if better else "worse"


FAMILY_TITLES = {"primary": "Primary endpoint", "ID": "In distribution", "OOD": "Out of distribution",
                 "transfer": "Transfer (frozen backbone)", "calibration": "Calibration"}


def family_sentence(family: str, part: pd.DataFrame, treatment: str) -> str:
    """One sentence a test supports: '<T> better/worse' only where the family's (Holm-corrected)
    test rejects, else 'no difference shown' with the effect the comparison could detect."""
    name = method_name(treatment)
    found = part[part["family_significant"]]
    shown = "; ".join(f"{r.quantity} {verdict_cell(r)}" + (f" {unit_of(r.metric)}" if unit_of(r.metric) else "") for r in part.head(3).itertuples())
    if not found.empty:
        ways = {_direction(r.metric, r.mean) for r in found.itertuples()}
        word = f"{name} {ways.pop()}" if len(ways) == 1 else f"{name} better on some, worse on others"
        which = "; ".join(f"{r.quantity} {signed_text(r.mean)} [{signed_text(r.ci_low)}, {signed_text(r.ci_high)}]" for r in found.head(4).itertuples())
        how = f"p = {found['p_value'].iloc[0]:.2g}, tested alone" if family == "primary" else f"{len(found)} of {len(part)} after Holm within the family"
        return f"{FAMILY_TITLES[family]}: {word} ({which}; {how})."
    first = part["metric"].iloc[0]  # a family may mix units (NLL in nats, ECE in points): its first metric's MDE only
    mde = part.loc[part["metric"] == first, "mde"].dropna()
    could = f"; could detect ≥ {mde.max():.2g} {unit_of(first)} at 80 % power" if len(mde) else ""
    extra = f" and {len(part) - 3} more" if len(part) > 3 else ""
    raw = int(part["significant"].sum())
    after = f" after Holm within the family ({raw} uncorrected †)" if raw else ""
    title = FAMILY_TITLES[family] + (f" (α_k = {part['alpha'].iloc[0]:.4g} after adaptive seeds)" if family == "primary" and "alpha" in part
                                     and not pd.isna(part["alpha"].iloc[0]) and part["alpha"].iloc[0] < ALPHA else "")
    return f"{title}: no difference shown{after} ({shown}{extra}{could})."


def headline(frame: pd.DataFrame, claims: pd.DataFrame | None = None) -> list[str]:
    """One sentence per family of the verdict box, then one per claim (verdict and its p)."""
    lines = []
    if not frame.empty:
        treatment = str(frame["treatment"].iloc[0])
        for family in FAMILIES:
            part = frame[frame["family"] == family]
            if not part.empty:
                lines.append(family_sentence(family, part, treatment))
    if claims is not None and not claims.empty:
        for r in claims.itertuples():
            if r.verdict == "missing":
                lines.append(f"Claim {r.expectation} = {r.expected:+.2f}: missing (no finished run provides it).")
                continue
            p = {"reproduced": r.p_equivalence, "smaller than claimed": r.p_shortfall, "larger than claimed": r.p_excess}.get(r.verdict)
            more = f"; about {int(r.more_seeds)} more seeds expected to decide it" if r.verdict == "undecided" and not pd.isna(r.more_seeds) else (
                "; no number of seeds decides it with this test set" if r.verdict == "undecided" else "")
            lines.append(f"Claim {r.expectation} = {r.expected:+.2f} ± {r.tolerance:.2f} ({r.dataset}): {r.verdict}"
                         + (f" ({p_text(p)})" if p is not None and not pd.isna(p) else "") + f"{more}.")
    return lines


def verdict_lines(frame: pd.DataFrame, ends: Endpoints) -> list[str]:
    """How the box's numbers are formed, as sentences."""
    crossed = int((frame["ci_method"] == CROSSED).sum())
    m = len(frame)
    lines = []
    if (frame["family"] == "primary").any():
        if ends.look:
            lines.append(f"Primary endpoint: declared in the suite before the runs, tested alone (two-sided) at the α its adaptive seeds "
                         f"spent at the look they stopped at, α_k = {ends.primary_alpha:.4g} ({ends.look}); its interval is the "
                         f"{100 * (1 - ends.primary_alpha):.4g} % CI. Secondary endpoints are tested at the nominal α = {ends.alpha:g}.")
        else:
            lines.append(f"Primary endpoint: declared in the suite before the runs, tested alone at α = {ends.alpha:g} (two-sided).")
    else:
        lines.append("No primary endpoint is declared (`primary:` in the suite): every comparison below is secondary.")
    lines.append("Secondary endpoints form families (ID, OOD, transfer, calibration), each Holm-corrected within itself (‡). "
                 "† = 95 % CI excludes 0 and |Δ| ≥ the minimum practical effect ("
                 + ", ".join(f"{METRIC_NAMES.get(k, k)} {v:g}" for k, v in ends.min_effect.items() if k in set(frame["metric"].tolist())) + ").")
    if crossed:
        lines.append(f"Intervals for {crossed} of {m}: seeds × test images crossed (variance components, Satterthwaite df; "
                     "bench.report.stats.delta_estimate), shared source images resampled jointly. MDE: the Δ detectable with 80 % power "
                     "by a two-sided test at 5 % with these seeds and this test set.")
    rest = frame[frame["ci_method"] != CROSSED]
    if len(rest):
        counts = rest["ci_note"].fillna("").replace("", "no per-image values for this metric").value_counts(sort=False)
        why = "; ".join(f"{note} ({count}×)" for note, count in counts.items())
        lines.append(f"Seed-level t-interval (the seed spread carries test-set noise too) for {len(rest)} of {m}: {why}.")
    lines.append("Baseline: the setting's plain control (no label smoothing). A zero-width interval is never significant.")
    return lines


def verdict_title(frame: pd.DataFrame) -> str:
    t, c = str(frame["treatment"].iloc[0]), str(frame["control"].iloc[0])
    return f"Verdict: Δ {method_name(t)} − {method_name(c)}, mean over seeds [95% CI]"


def _box_rows(frame: pd.DataFrame) -> list[list[str]]:
    return [[r.family, str(r.setting), r.quantity, verdict_cell(r), p_text(r.p_value).replace("p = ", ""),
             "" if pd.isna(r.mde) else f"{r.mde:.2g}", str(r.n)] for r in row_tuples(frame)]


BOX_HEADER = ["family", "setting", "quantity", "Δ [95% CI]", "p", "MDE (80%)", "n"]


def verdict_markdown(frame: pd.DataFrame, ends: Endpoints = Endpoints(), claims: pd.DataFrame | None = None) -> str:
    """The box near the top of report.md and the console: the headline, then the table."""
    if frame.empty:
        return (f"## Verdict\n\nNo {method_name(ends.treatment)} − {method_name(ends.control)} comparison: the finished runs hold no "
                f"pair of the two methods in one setting and seed.\n")
    lines = [f"## {verdict_title(frame)}", ""]
    lines += [f"- {x}" for x in headline(frame, claims)] + [""]
    lines += ["| " + " | ".join(BOX_HEADER) + " |", "|---|---|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in _box_rows(frame)]
    lines += [""] + [f"{x}  " for x in verdict_lines(frame, ends)]
    return "\n".join(lines).rstrip() + "\n"


def verdict_context(frame: pd.DataFrame, ends: Endpoints = Endpoints(), claims: pd.DataFrame | None = None,
                    key: str = "verdict") -> dict[str, Any] | None:
    """The HTML verdict box of one pair: headline, header, cells (class holm for ‡, sig for †),
    sentences; ``key`` is its HTML id ('verdict', or 'verdict_<pair key>' with several pairs)."""
    if frame.empty:
        return None

    def cls(r: Any) -> str:
        return "holm" if r.family_significant else "sig" if r.significant else ""

    rows = [{"setting": cells[0], "cells": [{"text": t, "cls": (cls(r) if i == 2 else "") + ("" if i >= 2 else " text")}
                                            for i, t in enumerate(cells[1:])]}
            for cells, r in zip(_box_rows(frame), frame.itertuples())]
    return {"title": verdict_title(frame), "headline": headline(frame, claims), "header": BOX_HEADER,
            "lines": verdict_lines(frame, ends), "rows": rows, "id": key, "pair": ends.pair.label}


# ---- forest plot rows ------------------------------------------------------------------------



def forest_frame(delta: pd.DataFrame, long: pd.DataFrame, ends: Endpoints = Endpoints(), found: list[tuple[str, Records]] | None = None) -> pd.DataFrame:
    """Every Δ treatment − control (against the plain control) of the headline metric per comparison and
    evaluation set — the ID split(s), each OOD set (a natural shift split, or a corruption
    benchmark's mean), the OOD average and the transfer averages (single targets where a probe
    has no average) — in points, with CI and significance, in plotting order."""
    columns = ["setting", "evaluation", "kind", "split", "mean", "ci_low", "ci_high", "significant", "ci_method", "metric", "treatment", "control"]
    walked = found if found is not None else _comparisons(delta, long, ends)  # ``found``: :func:`comparisons`, when the caller has it
    comparisons = [(m, [r for r in part if r["metric"] == m]) for m, part in walked]
    if not comparisons:
        return pd.DataFrame(columns=columns)
    rows = []
    for metric, mine in comparisons:
        ids = [r for r in mine if _is(r["protocol"], "id") and not _flag(r["derived"])]
        shift = [r for r in mine if _is(r["protocol"], "shift")]
        sets = [r for r in shift if _is_set(r)]
        transfer = [r for r in mine if r["split"].startswith("transfer_avg/")]
        if not transfer:
            transfer = [r for r in mine if _is(r["protocol"], "transfer") and not _flag(r["derived"])]
        dataset = str(mine[0]["dataset"])
        chosen = [(ids, "ID"), (sets, "OOD set"), ([r for r in shift if _is(r["split"], "ood_avg")], "OOD average"), (transfer, "transfer")]
        for frame, kind in chosen:
            for r in frame:
                split = r["split"]
                name = f"{split} (ID)" if kind == "ID" else "OOD average" if kind == "OOD average" else split_label(split, dataset, {})
                if split.endswith("/mean"):
                    name = f"{dataset}-C (mean)" if split.startswith("c/") else "generated corruptions (mean)"
                mean, low, high = (scale_of(metric) * x for x in (r["mean"], r["ci_low"], r["ci_high"]))
                rows.append({**{c: r[c] for c in GROUP_COLUMNS}, "treatment_variant": r["treatment_variant"], "evaluation": name,
                             "kind": kind, "split": split, "mean": mean, "ci_low": low, "ci_high": high,
                             "significant": _mark(mean, low, high, ends.min_effect.get(metric, 0.0)),
                             "ci_method": r.get("ci_method", "t"), "metric": metric, "treatment": r["treatment"], "control": r["control"]})
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=columns)
    out["setting"] = model_labels(out, _arms(out, long, ends.treatment))
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
                   ends: Endpoints = Endpoints(), shared: Estimating | None = None,
                   deltas: Mapping[tuple[str, str], pd.DataFrame] | None = None) -> pd.DataFrame:
    """Every method config (GRPO-RM configs, linear margin, SFT with label smoothing, ...) against
    the plain control (``ends.control``) of its setting, on the ID split and the OOD average of the headline metric, in
    points with CIs (seeds × images crossed where predictions exist), ranked per setting by Δ ID. Empty
    when there are fewer than two configs to rank. ``shared`` (an :class:`Estimating` of ``final``)
    and ``deltas`` ((treatment, control) → :func:`paired_delta` of ``final``) are what the caller
    computed already."""
    final = finals(final)
    if final.empty:
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    control = ends.control
    plain = plain_controls(final, control)
    labels = config_labels(final)
    ranked = {labels[k] for k in labels if k[1] not in plain or k[0] != control}
    if len(ranked) < 2:
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    parts = []
    for method in method_order(final["method"], (ends.pair,)):
        known = (deltas or {}).get((method, control))
        d = known if known is not None else paired_delta(final, treatment=method, control=control)
        d = d[d["control_variant"].isin(plain) & (d["treatment_variant"] != d["control_variant"])]
        if d.empty:
            continue
        groups: dict[tuple, list[int]] = {}
        records = _records(d[[*GROUP_COLUMNS, "treatment_variant", "control_variant", "metric", "protocol", "derived", "split"]])
        for i, r in enumerate(records):
            groups.setdefault(tuple(r[c] for c in (*GROUP_COLUMNS, "treatment_variant", "control_variant")), []).append(i)
        keep: list[int] = []
        for positions in groups.values():  # per comparison: the headline metric's ID split and OOD average
            metric = _headline([records[i] for i in positions])
            mine = [i for i in positions if records[i]["metric"] == metric] if metric else []
            first = _id_split([records[i] for i in mine]) if mine else None
            keep += [i for i in mine if records[i]["split"] in (first, "ood_avg")]
        d = d.iloc[keep]
        parts.append(with_intervals(d, final, predictions, problems, tables_of=shared.tables_of if shared is not None else None))
    d = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if d.empty:
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    rows = []
    comparisons: dict[tuple, Records] = {}
    for rec in _records(d):
        comparisons.setdefault(tuple(rec[c] for c in (*GROUP_COLUMNS, "treatment", "treatment_variant", "control_variant")), []).append(rec)
    for part in comparisons.values():
        r0 = part[0]
        metric = str(r0["metric"])
        row: dict[str, Any] = {**{c: r0[c] for c in GROUP_COLUMNS}, "config": labels.get((r0["treatment"], r0["treatment_variant"]), r0["treatment"]),
                               "method": r0["treatment"], "variant": r0["treatment_variant"], "control_variant": r0["control_variant"],
                               "n": int(max(r["n"] for r in part)), "metric": metric, "id_split": None}
        for q, sel in (("id", [r for r in part if r["split"] != "ood_avg"]), ("ood", [r for r in part if r["split"] == "ood_avg"])):
            r = sel[0] if len(sel) else None
            if q == "id" and r is not None:
                row["id_split"] = r["split"]
            for c in ("mean", "ci_low", "ci_high"):
                row[f"{q}_{c}"] = scale_of(metric) * r[c] if r is not None else math.nan
            row[f"{q}_p_value"] = r["p_value"] if r is not None else math.nan
            row[f"{q}_significant"] = _mark(row[f"{q}_mean"], row[f"{q}_ci_low"], row[f"{q}_ci_high"], ends.min_effect.get(metric, 0.0)) if r is not None else False
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
    return cell_text(mean, low, high, n, n, signed=True, mark=significant)


def ablation_table(frame: pd.DataFrame, control: str | None = None, key: str = "ablation") -> TextTable | None:
    """The ranked ablation against the plain ``control`` (default: the default comparison's) as a
    table (None when there is nothing to rank); ``key`` names its files."""
    if frame.empty:
        return None
    name = method_name(control if control is not None else _default_control())
    rows = [([r.setting, str(r.rank), r.config],
             [_delta_cell(r.id_mean, r.id_ci_low, r.id_ci_high, r.n, r.id_significant, r.id_ci_method),
              _delta_cell(r.ood_mean, r.ood_ci_low, r.ood_ci_high, r.n, r.ood_significant, r.ood_ci_method), str(r.n)])
            for r in frame.itertuples()]
    splits = ", ".join(sorted({str(s) for s in frame["id_split"].dropna()}))
    metrics = " / ".join(METRIC_NAMES.get(m, m) for m in dict.fromkeys(frame["metric"]))
    caption = (f"Every method config against the plain {name} of its setting ({name}, no label smoothing): Δ {metrics} in points on the ID "
               f"split ({splits}) and the OOD average, paired over matching seeds, ranked per setting by Δ ID; a config is named by "
               "what differs from its method's defaults. ± half-width of the 95% CI: seeds × test images crossed where per-image "
               "predictions exist, else the seed-level t-interval; † the CI excludes 0 and |Δ| ≥ the minimum practical effect (never for "
               "a zero-width CI). No multiplicity correction: a ranking to read, not a test of each row.")
    return TextTable(key, f"Ablation: each config's Δ against the plain {name}", caption, ["setting", "rank", "config"],
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


__all__ = ["comparisons", "verdict_frame", "verdict_markdown", "verdict_context", "forest_frame", "ablation_frame", "ablation_table",
           "config_label", "config_labels", "plain_controls", "method_defaults", "duration_text"]
