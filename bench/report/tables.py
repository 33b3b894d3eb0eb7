"""Comparison tables built from seed aggregates: one model, rendered as CSV, Markdown and LaTeX.

Every table has evaluation sets as rows and methods as columns, plus the paired Δ column:
cells show mean ± half-width of the 95% CI over seeds (in percent); the best method mean of
a row is bold; a Δ whose 95% CI excludes 0 (and has a width) is marked †. The CSV carries the
same numbers at full precision, so the rendered tables (and the HTML report) can be checked
against it.

Rows come in blocks, one per comparison: a setting (dataset, backbone, init, ``pair`` key) and
one config variant per method. A setting whose GRPO-RM was run in four (ε, μ) configs has four
blocks, each naming its config ('cifar10 · GRPO-RM ε=0.1, μ=2') next to the setting's SFT, with
that config's own paired Δ. A suite that compares several pairs (``compare:``) gets one Δ
column per pair (:mod:`bench.report.pairs`).
"""

from __future__ import annotations

import functools
from collections import namedtuple

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pandas as pd

from bench.registry import Registry
from bench.report.aggregate import GROUP_COLUMNS, IN_DOMAIN_PROBE, RAW_METRICS, param_name, scale_of, short_number
from bench.report.pairs import Pair, deltas_text, default_pairs, method_name, method_order, pairs_in, stem
from bench.report.schema import row_dicts, row_tuples

METRIC_NAMES = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "mIoU": "mIoU", "aAcc": "pixel accuracy", "mAcc": "mean class accuracy",
                "nll": "NLL", "ece": "ECE", "brier": "Brier score"}
LOWER_BETTER = ("nll", "ece", "brier")  # calibration: the best method is the lowest
PROTOCOL_ORDER = {"id": 0, IN_DOMAIN_PROBE: 1, "shift": 2, "transfer": 3}
PROTOCOL_NAMES = {IN_DOMAIN_PROBE: "in-domain probe"}  # the others read as they are stored
PROBE_NAMES = {"knn": "kNN", "sr": "SR"}
MODEL_KEYS = GROUP_COLUMNS  # a table's row group: one setting, whatever the methods' configs
ROW_KEYS = [*MODEL_KEYS, "protocol", "split"]
_ModelRow = namedtuple("_ModelRow", MODEL_KEYS)  # one row's setting, read by attribute as itertuples gives it


@dataclass(frozen=True)
class Table:
    """A rendered-ready comparison: ``frame`` has the label columns, then per method
    ``<method>_mean/_ci_low/_ci_high/_n`` and per compared pair ``<prefix>_mean/_ci_low/_ci_high/_n``
    (percent; the prefix is 'delta' with one pair, 'delta_<treatment>_vs_<control>' with several:
    :meth:`prefix`)."""

    key: str  # file stem, e.g. "id" → table_id.csv/.md/.tex
    title: str
    caption: str
    labels: list[str]
    methods: list[str]
    frame: pd.DataFrame
    lower_is_better: bool = False  # calibration tables: the lowest mean is the best
    pairs: tuple[Pair, ...] = ()  # the compared pairs, each with its Δ columns (the default comparison when empty)

    def prefix(self, pair: Pair) -> str:
        return delta_prefix(pair, self.pairs or default_pairs())

    @functools.cached_property
    def shown_pairs(self) -> list[Pair]:
        """The pairs with at least one Δ in this table: one Δ column each (computed once: every
        row's cells ask for it)."""
        return [p for p in (self.pairs or default_pairs())
                if f"{self.prefix(p)}_mean" in self.frame and self.frame[f"{self.prefix(p)}_n"].fillna(0).gt(0).any()]

    @functools.cached_property
    def cells(self) -> list[tuple[list[str], list[str], set[int]]]:
        """:func:`row_cells` of this table, made once: the Markdown, LaTeX, HTML and report.md
        renderings all show the same cells."""
        return _table_cells(self)

    @property
    def has_delta(self) -> bool:
        return bool(self.shown_pairs)

    def best(self, row: pd.Series) -> set[str]:
        """Methods with the highest (``lower_is_better``: lowest) mean in this row as displayed
        (2 decimals; ties all win); none with a single method."""
        means = {m: round(float(row[f"{m}_mean"]), 2) for m in self.methods if not pd.isna(row[f"{m}_mean"])}
        if len(means) < 2:
            return set()
        top = min(means.values()) if self.lower_is_better else max(means.values())
        return {m for m, v in means.items() if v == top}


# ---- split display ------------------------------------------------------------------------

def split_label(split: str, dataset: str, set_sizes: dict[str, int]) -> str:
    """A human name for an evaluation split or derived average."""
    if split == "ood_avg":
        return "OOD average (shift sets)"
    if split.startswith("transfer_avg/"):
        return f"transfer average · {PROBE_NAMES.get(split.split('/')[1], split.split('/')[1])}"
    if split.startswith("transfer/"):
        _, target, probe = split.split("/")
        return f"{target} · {PROBE_NAMES.get(probe, probe)}"
    if split.endswith("/mean"):
        family = split.split("/")[0]
        n = set_sizes.get(family, 0)
        name = f"{dataset}-C" if family == "c" else "generated corruptions"
        return f"{name} (mean of {n} splits)"
    return split


def split_rank(split: str) -> tuple[int, str]:
    """Within a protocol: single sets first, then per-set means, then the averages."""
    if split in ("ood_avg",) or split.startswith("transfer_avg/"):
        return (3, split)
    if split.endswith("/mean"):
        return (2, split)
    return (1, "")  # keeps the order in which splits appear


# ---- building -----------------------------------------------------------------------------

def model_labels(frame: pd.DataFrame, arms: pd.Series | None = None) -> pd.Series:
    """A row label per setting: the dataset, plus backbone/init/'setting <pair>' where one dataset
    was run in several, plus ``arms`` (the methods' configs, e.g. 'GRPO-RM ε=0.1, μ=2') where
    given, plus '(random init)' for a randomly initialised backbone."""
    models = frame[MODEL_KEYS].drop_duplicates()
    parts = {k: models.groupby("dataset", dropna=False)[k].nunique(dropna=False).to_dict() for k in ("backbone", "init", "pair")}
    suffix = arms if arms is not None else pd.Series("", index=frame.index)

    def label(r, arm: str) -> str:
        extra = [f"{'setting ' if k == 'pair' else ''}{getattr(r, k)}" for k in ("backbone", "init", "pair") if parts[k][r.dataset] > 1]
        return " · ".join([r.dataset, *extra, *([arm] if arm else [])]) + (" (random init)" if bool(r.random_init) else "")

    known: dict[tuple, str] = {}  # rows of one setting and arm share their label: made once
    columns = [frame[k].tolist() for k in MODEL_KEYS]  # plain lists: iterating pandas arrays costs ~µs a cell
    labels = [known[k] if (k := (*r, a)) in known else known.setdefault(k, label(_ModelRow(*r), a)) for r, a in zip(zip(*columns), suffix.tolist())]
    return pd.Series(labels, index=frame.index)


def arm_text(method: str, desc: str) -> str:
    """'GRPO-RM ε=0.1, μ=2' for a method config that must be told from others; '' otherwise."""
    return f"{method_name(method)} {desc}" if isinstance(desc, str) and desc else ""


def arm_labels(frame: pd.DataFrame) -> pd.Series:
    """The name of each row's method config (series of a figure): the method, plus what sets the
    variant apart (``variant_desc``) where its method has several in the setting."""
    descs = frame["variant_desc"] if "variant_desc" in frame else pd.Series("", index=frame.index)
    known: dict[tuple[str, str], str] = {}  # a few method configs label thousands of rows
    pairs = zip(frame["method"].tolist(), descs.fillna("").tolist())
    return pd.Series([known[k] if k in known else known.setdefault(k, arm_text(*k) or method_name(k[0])) for k in pairs], index=frame.index)


def comparison_blocks(rows: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per setting, every combination of one variant per method: the table's row blocks, with
    ``<method>_variant`` and ``arm`` (the variants' descriptions joined, '' when each method has
    one config in the setting)."""
    out = []
    # each (setting, method, variant) once, in order of appearance; then one pass in plain Python
    # (filtering a frame per setting and method was most of a large table's cost)
    firsts = rows.drop_duplicates([*MODEL_KEYS, "method", "variant"])
    grouped = firsts.groupby(MODEL_KEYS, sort=False, dropna=False)
    found: list[dict[str, list[tuple[Any, str]]]] = [{m: [] for m in methods} for _ in range(grouped.ngroups)]
    for code, m, v, d in zip(grouped.ngroup().tolist(), firsts["method"].tolist(), firsts["variant"].tolist(),
                             firsts["variant_desc"].fillna("").tolist()):
        if m in found[code]:
            found[code][m].append((v, d))
    for group, by_method in zip(grouped.size().index, found):
        choices = [by_method[m] or [(None, "")] for m in methods]
        for combo in itertools.product(*choices):
            arm = ", ".join(t for t in (arm_text(m, d) for m, (_, d) in zip(methods, combo)) if t)
            out.append({**dict(zip(MODEL_KEYS, group)), **{f"{m}_variant": v for m, (v, _) in zip(methods, combo)}, "arm": arm})
    return pd.DataFrame(out)


STATS = ("mean", "ci_low", "ci_high", "n")


def delta_prefix(pair: Pair, pairs: Sequence[Pair]) -> str:
    """A pair's Δ columns: 'delta_mean', … with one pair; 'delta_<treatment>_vs_<control>_mean', … with several."""
    return stem("delta", pair, pairs)


def _merge_delta(wide: pd.DataFrame, delta: pd.DataFrame, metric: str, pair: Pair, prefix: str) -> pd.DataFrame:
    """``wide`` with the pair's Δ columns (NaN where the table has no runs of both methods)."""
    variants = [f"{pair.treatment}_variant", f"{pair.control}_variant"]
    d = pd.DataFrame()
    if set(variants) <= set(wide.columns) and not delta.empty:
        d = delta[(delta["metric"] == metric) & (delta["treatment"] == pair.treatment) & (delta["control"] == pair.control)]
    if d.empty:
        for c in STATS:
            wide[f"{prefix}_{c}"] = math.nan
        wide[f"{prefix}_significant"] = False
        return wide
    extra = [c for c in DELTA_EXTRA if c in d.columns]  # how the CI was formed (bench.report.stats.with_intervals)
    d = d[[*ROW_KEYS, "treatment_variant", "control_variant", *STATS, "significant", *extra]]
    d = d.rename(columns={"treatment_variant": variants[0], "control_variant": variants[1], "significant": f"{prefix}_significant",
                          **{c: f"{prefix}_{c}" for c in (*STATS, *extra)}})
    return wide.merge(d, on=[*ROW_KEYS, *variants], how="left")


def comparison(
    key: str, title: str, summary: pd.DataFrame, delta: pd.DataFrame, metric: str,
    keep: Callable[[pd.DataFrame], pd.Series], set_sizes: dict[tuple[str, str], dict[str, int]] | None = None,
    selections: pd.DataFrame | None = None, pairs: Sequence[Pair] = (),
) -> Table | None:
    """A table of ``metric`` over the summary rows that ``keep`` selects; None when there are none.
    ``selections`` (:func:`bench.report.aggregate.selection_table`) adds how the compared configs
    were tuned to the caption. ``pairs``: the compared pairs, one Δ column each (default: those
    ``delta`` holds, else the default comparison)."""
    pairs = tuple(pairs) or pairs_in(delta) or default_pairs()
    rows = summary[(summary["metric"] == metric)]
    rows = rows[keep(rows).fillna(False).astype(bool)]
    if rows.empty:
        return None
    if "variant_desc" not in rows:
        rows = rows.assign(variant_desc="")
    methods = method_order(rows["method"], pairs)
    blocks = comparison_blocks(rows, methods)
    sets = rows[ROW_KEYS].drop_duplicates()
    wide = sets.merge(blocks, on=MODEL_KEYS, how="left").reset_index(drop=True)
    for method in methods:
        part = rows[rows["method"] == method][ROW_KEYS + ["variant", *STATS]]
        part = part.rename(columns={"variant": f"{method}_variant", **{c: f"{method}_{c}" for c in STATS}})
        wide = wide.merge(part, on=[*ROW_KEYS, f"{method}_variant"], how="left")
    prefixes = [delta_prefix(p, pairs) for p in pairs]
    for pair, prefix in zip(pairs, prefixes):
        wide = _merge_delta(wide, delta, metric, pair, prefix)
        wide[f"{prefix}_significant"] = wide[f"{prefix}_significant"].fillna(False).astype(bool)
    scale = scale_of(metric)
    for c in wide.columns:
        if c.endswith(("_mean", "_ci_low", "_ci_high")):
            wide[c] = wide[c].astype(float) * scale
    # a row without any method value (a block whose variants lack this split) shows nothing
    wide = wide[wide[[f"{m}_mean" for m in methods]].notna().any(axis=1)].reset_index(drop=True)
    order = {m: i for i, m in enumerate(dict.fromkeys(zip(*(wide[k] for k in MODEL_KEYS))))}
    wide["_model"] = [order[m] for m in zip(*(wide[k] for k in MODEL_KEYS))]
    arm_order = {a: i for i, a in enumerate(dict.fromkeys(wide["arm"]))}
    wide["_arm"] = wide["arm"].map(arm_order)
    wide["_protocol"] = wide["protocol"].map(PROTOCOL_ORDER).fillna(9)
    wide["_rank"] = [split_rank(s) for s in wide["split"]]
    wide["_seen"] = range(len(wide))
    wide = wide.sort_values(["_model", "_arm", "_protocol", "_rank", "_seen"], kind="stable").reset_index(drop=True)
    sizes = set_sizes or {}
    labels = pd.DataFrame({
        "dataset": model_labels(wide, wide["arm"]),
        "protocol": wide["protocol"].map(lambda p: PROTOCOL_NAMES.get(p, p)),
        "evaluation": [split_label(r.split, r.dataset, sizes.get((r.dataset, r.protocol), {})) for r in row_tuples(wide)],
    })
    numbers = wide[[c for c in wide.columns if c.endswith(("_mean", "_ci_low", "_ci_high", "_n"))] + [f"{p}_significant" for p in prefixes]
                   + [f"{p}_{c}" for p in prefixes for c in DELTA_EXTRA if f"{p}_{c}" in wide.columns]]
    ids = wide[["split", "pair", *(f"{m}_variant" for m in methods)]]
    frame = pd.concat([labels, ids, numbers], axis=1)
    for c in frame.columns:
        if c.endswith("_n"):
            frame[c] = frame[c].astype("Int64")
    unit = "" if metric in RAW_METRICS else " (%)"
    shown = [p for p, prefix in zip(pairs, prefixes) if wide[f"{prefix}_mean"].notna().any()] or list(pairs)
    caption = (f"{METRIC_NAMES.get(metric, metric)}{unit}, mean ± half-width of the 95% t-interval over seeds; "
               f"bold: best method mean per row; Δ = {deltas_text(shown)} paired over matching seeds, † where its 95% CI excludes 0 "
               f"(never for a zero-width CI: the same difference on every seed).")
    caption += interval_note(wide, prefixes)
    if (wide["protocol"] == IN_DOMAIN_PROBE).any():
        caption += " In-domain probe: the transfer probes on the source dataset itself, in no transfer or OOD average."
    shown_methods = {tuple(model): [m for m in methods if part[f"{m}_mean"].notna().any()]
                     for model, part in wide.groupby(["dataset", "backbone", "init", "random_init"], sort=False, dropna=False)}
    note = tuning_note(selections, wide, shown_methods, pairs)
    if note:
        caption += " " + note
    if wide["random_init"].astype(bool).any():
        caption = "RANDOM INIT (not pretrained) backbone in rows marked so. " + caption
    return Table(key, title, caption, ["dataset", "protocol", "evaluation"], methods, frame, pairs=pairs)


DELTA_EXTRA = ("p_value", "ci_method")  # carried from a Δ frame with its intervals when present


def interval_note(wide: pd.DataFrame, prefixes: Sequence[str] = ("delta",)) -> str:
    """The caption's sentence on how the Δ intervals were formed (bench.report.stats.delta_estimate):
    seeds × test images crossed where per-image predictions exist, else seeds only; over the Δ
    columns of every pair (``prefixes``)."""
    prefixes = [p for p in prefixes if f"{p}_ci_method" in wide and wide[f"{p}_mean"].notna().any()]
    if not prefixes:
        return ""
    crossed = sum(int((wide[f"{p}_ci_method"] == "crossed").sum()) for p in prefixes)
    shown = sum(int(wide[f"{p}_mean"].notna().sum()) for p in prefixes)
    if not crossed:
        return ""  # the caption's own words describe the seed-level t-interval
    rest = "" if crossed == shown else "; the others the seed-level t-interval (no per-image values)"
    return (f" Δ intervals: seeds × test images crossed, variance components with Satterthwaite df, shared source images jointly "
            f"({crossed} of {shown} Δs{rest}); † also needs |Δ| ≥ the minimum practical effect; no multiplicity correction here "
            "(the verdict box corrects within families: this table's Δs belong to the ID, OOD or transfer family).")


# ---- how the compared configs were tuned ----------------------------------------------------

def _split_words(split: str) -> str:
    return "held-out split" if split == "heldout" else f"split {split}"


def _grid_text(grid: dict[str, list]) -> str:
    return " × ".join(f"{param_name(k)} ∈ {{{', '.join(short_number(v) for v in values)}}}" for k, values in grid.items())


def _chosen_text(chosen: dict, one_key: bool) -> str:
    if one_key:
        return ", ".join(short_number(v) for v in chosen.values())
    return ", ".join(f"{param_name(k)}={short_number(v)}" for k, v in chosen.items())


def tuning_note(selections: pd.DataFrame | None, settings: pd.DataFrame | None = None, methods: dict[tuple, list[str]] | None = None,
                pairs: Sequence[Pair] = ()) -> str:
    """'Hyperparameters tuned on held-out split over lr ∈ {3e-5, 1e-4, 3e-4}; chosen: SFT 3e-5,
    GRPO-RM 1e-4 (...)' for the models (dataset, backbone, init) in ``settings`` (all when None);
    per dataset/backbone where the choices differ. ``methods`` (model → methods shown) lets it name
    a compared method that was not tuned; ``pairs`` orders the methods (:func:`method_order`). '' when nothing was tuned. A table must say how its
    configs were picked: that decides what its Δ means."""
    if selections is None or selections.empty:
        return ""
    models = ["dataset", "backbone", "init", "random_init"]
    sel = selections
    if settings is not None:
        sel = sel.merge(settings[models].drop_duplicates(), on=models)
    if sel.empty:
        return ""
    keys = {k for g in sel["grid"] for k in json.loads(g)}
    grids = sel[["split", "metric", "grid", "tune_seeds"]].drop_duplicates()
    if len(grids) == 1:
        g = grids.iloc[0]
        over = f"tuned on {_split_words(g['split'])} over {_grid_text(json.loads(g['grid']))}"
        seeds = ", ".join(map(str, json.loads(g["tune_seeds"])))
        how = f" (selection: mean {METRIC_NAMES.get(g['metric'], g['metric'])} over tuning seed(s) {seeds})"
    else:
        parts = []
        for (split, metric, grid, _), part in sel.groupby(["split", "metric", "grid", "tune_seeds"], sort=False):
            owners = ", ".join(dict.fromkeys(f"{method_name(m)} on {d}" for m, d in zip(part["method"], part["dataset"])))
            parts.append(f"{owners}: {_split_words(split)}, {_grid_text(json.loads(grid))}, by {METRIC_NAMES.get(metric, metric)}")
        over, how = "tuned per method and dataset (" + "; ".join(parts) + ")", ""
    several_backbones = sel["backbone"].nunique(dropna=False) > 1
    per_model: dict[str, str] = {}
    for model, mine in sel.groupby(models, sort=False, dropna=False):
        shown = method_order([*(methods or {}).get(tuple(model), []), *mine["method"]], pairs)
        texts = []
        for m in shown:
            chosen = list(dict.fromkeys(mine.loc[mine["method"] == m, "chosen"]))
            texts.append(f"{method_name(m)} " + (" / ".join(_chosen_text(json.loads(c), len(keys) == 1) for c in chosen) if chosen else "not tuned"))
        name = str(model[0]) + (f" · {model[1]}" if several_backbones else "")
        per_model[name] = ", ".join(texts)
    if len(set(per_model.values())) == 1:
        chosen_text = next(iter(per_model.values()))
    else:
        chosen_text = "; ".join(f"{name}: {text}" for name, text in per_model.items())
    caveats = selection_caveats(sel, several_models=len(per_model) > 1, several_backbones=several_backbones)
    return " ".join([f"Hyperparameters {over}; chosen: {chosen_text}{how}.", *caveats])


EDGE_WORDS = {"smallest": "below", "largest": "beyond"}


def probe_c_note(probes: pd.DataFrame) -> str:
    """'Transfer probe (Softmax Regression): C at the grid edge in 3 of 6 runs (largest: 2,
    smallest: 1), by a tie-break in 1 of them: ...' from :func:`bench.report.aggregate.probe_c_table`;
    '' when no run fitted the probe or no C sits on an edge or was tied. The probe picks C on its
    own held-out slice; an edge or tie-break choice qualifies its transfer numbers the way an
    edge lr qualifies a Δ."""
    if probes.empty:
        return ""
    n = len(probes)
    several = probes["run_id"].nunique() < n
    unit = "probe fits (runs × targets)" if several else "runs"
    edge = probes[probes["at_edge"].astype(bool)]
    tied = probes[[bool(t) and t != "null" for t in probes["tie"]]]
    if edge.empty and tied.empty:
        return ""
    parts = []
    if not edge.empty:
        sides = ", ".join(f"{side}: {count}" for side, count in edge["at_edge"].value_counts().items())
        by_tie = len(edge.index.intersection(tied.index))
        parts.append(f"C at the grid edge in {len(edge)} of {n} {unit} ({sides}" + (f"; {by_tie} of them by a tie-break" if by_tie else "")
                     + "): the best C may lie beyond the swept values")
    if not tied.empty:
        parts.append(f"C chosen by a tie-break (the first listed C wins) in {len(tied)} of {n} {unit}")
    swept = ", ".join(short_number(c) for c in json.loads(probes["C_swept"].iloc[0]))
    return f"Transfer probe (Softmax Regression, C swept over {{{swept}}} on a held-out slice of the probe's train split): " + "; ".join(parts) + "."


def selection_caveats(sel: pd.DataFrame, several_models: bool = False, several_backbones: bool = False) -> list[str]:
    """Sentences on what a choice leaves open, one per fact, from :func:`selection_table`'s
    columns (absent columns: nothing to say): a chosen value at the edge of the values tried (the
    optimum may lie beyond it), a choice the tie-break made, grids extended beyond an edge (with
    every method's number of candidates, since extension gives a method more only where its own
    optimum sat on the edge), and tuning seeds accepted as final seeds."""
    out: list[str] = []
    facts = [c for c in ("at_edge", "tie", "extensions", "n_candidates") if c in sel]
    if not facts:
        return _overlap_caveat(sel)
    models = ["dataset", "backbone", "init", "random_init"]
    rows = sel.drop_duplicates([*models, "method", "chosen", *facts])

    def where(r: pd.Series) -> str:
        return f" on {r['dataset']}" + (f" · {r['backbone']}" if several_backbones else "") if several_models else ""

    for _, r in rows.iterrows():
        chosen = json.loads(r["chosen"])
        for key, edge in (json.loads(r["at_edge"]) if "at_edge" in r and isinstance(r["at_edge"], str) else {}).items():
            out.append(f"{method_name(r['method'])}'s {param_name(key)} = {short_number(chosen.get(key))}{where(r)} is the {edge} value tried "
                       f"(grid edge): the optimum may lie {EDGE_WORDS.get(edge, 'beyond')} it.")
    for _, r in rows.iterrows():
        tie = json.loads(r["tie"]) if "tie" in r and isinstance(r["tie"], str) else None
        if tie:
            tied = " and ".join(_chosen_text(c, False) for c in tie["candidates"])
            out.append(f"{method_name(r['method'])}'s choice{where(r)} was made by the tie-break (the first tried wins): {tied} tied at "
                       f"held-out {METRIC_NAMES.get(r['metric'], r['metric'])} {short_number(tie['score'])}.")
    extended = [r for _, r in rows.iterrows() if "extensions" in r and isinstance(r["extensions"], str) and json.loads(r["extensions"])]
    if extended:
        added = "; ".join(f"{method_name(r['method'])}{where(r)} " + ", ".join(
            f"{param_name(e['key'])} {short_number(e['value'])}" for e in json.loads(r["extensions"])) for r in extended)
        counts = ", ".join(f"{method_name(r['method'])}{where(r)} {int(r['n_candidates'])}" for _, r in rows.iterrows() if pd.notna(r.get("n_candidates")))
        out.append(f"Grids extended one step at a time beyond an edge the choice sat on (each method its own): {added}; "
                   f"candidates per method: {counts}.")
    return out + _overlap_caveat(sel)


def _overlap_caveat(sel: pd.DataFrame) -> list[str]:
    """The sentence a suite that set ``select.allow_seed_overlap`` has earned: its final runs on a
    tuning seed repeat the tuning run that chose their settings."""
    if "seed_overlap" not in sel:
        return []
    seeds = sorted({s for text in sel["seed_overlap"].dropna() for s in json.loads(text)})
    if not seeds:
        return []
    return [f"Tuning seeds overlap the final seeds (seed(s) {', '.join(map(str, seeds))}, select.allow_seed_overlap): a final run on "
            "such a seed repeats the tuning run that chose its settings, so that seed's own held-out score picked them."]


# ---- cells --------------------------------------------------------------------------------

def _half(low: float, high: float) -> float:
    return (high - low) / 2


def signed_text(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")  # a typographic minus


def cell_text(mean: float, low: float, high: float, n, modal_n: int | None, signed: bool = False, mark: bool = False,
              bounds: bool = False) -> str:
    """'72.67 ± 1.29', '+2.00 ± 1.41 †', '81.00 (n=1)', '+10.00 [+7.00, +13.00] †' (``bounds``: an
    interval given by its bounds); "—" when absent.
    ``mark``: the † of a significant Δ, decided on the unrounded interval
    (:func:`bench.report.aggregate.significant`)."""
    if pd.isna(mean):
        return "—"
    text = signed_text(mean) if signed else f"{mean:.2f}".replace("-", "−")
    if not pd.isna(low) and bounds:
        text += f" [{signed_text(low)}, {signed_text(high)}]"
    elif not pd.isna(low):
        text += f" ± {_half(low, high):.2f}"
    if signed and mark:
        text += " †"
    if not pd.isna(n) and modal_n is not None and int(n) != modal_n:
        text += f" (n={int(n)})"
    return text


@dataclass(frozen=True)
class TextTable:
    """A table whose cells are already text (the ranked ablation, wall time): written through the
    same CSV/Markdown/LaTeX/HTML renderers as :class:`Table`. ``frame`` is the CSV, at full
    precision, so the rendered numbers can be checked against it."""

    key: str
    title: str
    caption: str
    labels: list[str]  # label columns (left-aligned)
    columns: list[str]  # value columns (right-aligned)
    rows: list[tuple[list[str], list[str]]]
    frame: pd.DataFrame


def modal_n(table: Table) -> int | None:
    counts = pd.concat([table.frame[f"{m}_n"] for m in table.methods]).dropna()
    return int(counts.mode().iloc[0]) if len(counts) else None


def header(table: Table | TextTable) -> list[str]:
    if isinstance(table, TextTable):
        return [*table.labels, *table.columns]
    n = modal_n(table)
    seeds = f" (n={n})" if n is not None else ""
    cols = [method_name(m) + seeds for m in table.methods]
    return [*table.labels, *cols] + [f"Δ {p.label}" for p in table.shown_pairs]


def row_cells(table: Table | TextTable) -> list[tuple[list[str], list[str], set[int]]]:
    """Per row: label texts, value texts, indices of value cells to bold."""
    if isinstance(table, TextTable):
        return [(list(labels), list(values), set()) for labels, values in table.rows]
    return table.cells


def _table_cells(table: Table) -> list[tuple[list[str], list[str], set[int]]]:
    n = modal_n(table)
    out = []
    for row in row_dicts(table.frame):  # plain dicts: a Series per row was most of a large table's cost
        best = table.best(row)
        values = [cell_text(row[f"{m}_mean"], row[f"{m}_ci_low"], row[f"{m}_ci_high"], row[f"{m}_n"], n) for m in table.methods]
        bold = {i for i, m in enumerate(table.methods) if m in best}
        for pair in table.shown_pairs:
            d = table.prefix(pair)
            values.append(cell_text(row[f"{d}_mean"], row[f"{d}_ci_low"], row[f"{d}_ci_high"], row[f"{d}_n"], n, signed=True,
                                    mark=bool(row.get(f"{d}_significant", False))))
        out.append(([str(row[c]) for c in table.labels], values, bold))
    return out


# ---- renderers ----------------------------------------------------------------------------

def to_csv(table: Table | TextTable) -> str:
    if isinstance(table, TextTable):
        return table.frame.to_csv(index=False)
    frame = table.frame.copy()
    frame["best"] = [";".join(sorted(table.best(r))) for r in row_dicts(table.frame)]
    return frame.to_csv(index=False)


def to_markdown(table: Table | TextTable) -> str:
    head, k = header(table), len(table.labels)
    lines = [f"### {table.title}", "", table.caption, "", "| " + " | ".join(head) + " |", "|" + "---|" * k + "---:|" * (len(head) - k)]
    for labels, values, bold in row_cells(table):
        shown = [f"**{v}**" if i in bold else v for i, v in enumerate(values)]
        lines.append("| " + " | ".join(labels + shown) + " |")
    return "\n".join(lines) + "\n\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}",
                 "<": r"\textless{}", ">": r"\textgreater{}"}
# what pdflatex's default fonts lack, as LaTeX (so the tables compile without extra packages)
LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": r"$-$", "†": r"$^\dagger$", "·": r"$\cdot$", "≤": r"$\le$",
                 "≥": r"$\ge$", "×": r"$\times$", "α": r"$\alpha$", "‡": r"$^\ddagger$", "δ": r"$\delta$", "²": r"$^2$", "—": "---", "–": "--", "…": r"\ldots{}", "→": r"$\to$", "∈": r"$\in$",
                 "ε": r"$\varepsilon$", "μ": r"$\mu$", "β": r"$\beta$", "‡": r"$^\ddagger$"}


# every key is one character and the escapes' replacements are ASCII (no symbol among them), and the
# symbols' replacements were never escaped (escaping came first): so one pass of str.translate maps
# each character exactly as escaping and then replacing the symbols did
_LATEX_TRANSLATION = str.maketrans({**LATEX_ESCAPES, **LATEX_SYMBOLS})


def latex_escape(text: str) -> str:
    return text.translate(_LATEX_TRANSLATION)


def to_latex(table: Table | TextTable, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); a \\midrule between datasets."""
    head, k = header(table), len(table.labels)
    spec = "l" * k + "r" * (len(head) - k)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(latex_escape(h) for h in head) + r" \\", r"\midrule"]
    previous = None
    for labels, values, bold in row_cells(table):
        if previous is not None and labels[0] != previous:
            lines.append(r"\midrule")
        shown = [rf"\textbf{{{latex_escape(v)}}}" if i in bold else latex_escape(v) for i, v in enumerate(values)]
        lines.append(" & ".join([latex_escape(x) for x in labels] + shown) + r" \\")
        previous = labels[0]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ---- the tables a report has --------------------------------------------------------------

@dataclass(frozen=True)
class TableSpec:
    """Which summary rows a table shows (``keep``) and in which metric; printed unless ``detail``."""

    title: str
    metric: str
    keep: Callable[[pd.DataFrame], pd.Series]
    rank: int  # position in reports
    detail: bool = False
    build: Callable[..., "Table | None"] | None = None  # a table of several metrics: build(key, title, summary, delta, selections, pairs)


def calibration_table(key: str, title: str, summary: pd.DataFrame, delta: pd.DataFrame, selections: pd.DataFrame | None = None,
                      pairs: Sequence[Pair] = ()) -> Table | None:
    """NLL, ECE and Brier per method config on the ID split(s) and the OOD average, one row block
    per setting: how confident each method is against how often it is right (a method can gain
    accuracy and still be worse calibrated). None when no run reports any of them."""
    pairs = tuple(pairs) or pairs_in(delta) or default_pairs()
    keep = lambda r: ((r["protocol"] == "id") & ~r["derived"].astype(bool)) | (r["split"] == "ood_avg")  # noqa: E731
    parts = [(m, t) for m in CALIBRATION_METRICS if (t := comparison(key, title, summary, delta, m, keep, None, selections, pairs)) is not None]
    if not parts:
        return None
    methods = method_order([m for _, t in parts for m in t.methods], pairs)
    frame = pd.concat([t.frame.assign(metric=CALIBRATION_LABELS[m], _metric=i, _row=range(len(t.frame))) for i, (m, t) in enumerate(parts)],
                      ignore_index=True)
    block = {d: i for i, d in enumerate(dict.fromkeys(frame["dataset"]))}
    frame = frame.assign(_block=frame["dataset"].map(block)).sort_values(["_block", "_metric", "_row"], kind="stable")
    for m in methods:  # a method missing from one metric's part has empty cells there
        for c in STATS:
            if f"{m}_{c}" not in frame:
                frame[f"{m}_{c}"] = math.nan
    labels = ["dataset", "metric", "evaluation"]
    frame = frame[[*labels, *(c for c in frame.columns if c not in labels and not c.startswith("_"))]].reset_index(drop=True)
    for pair in pairs:
        frame[f"{delta_prefix(pair, pairs)}_significant"] = frame[f"{delta_prefix(pair, pairs)}_significant"].fillna(False).astype(bool)
    shown = list(dict.fromkeys(p for _, t in parts for p in t.shown_pairs)) or list(pairs)
    better = f"{method_name(shown[0].treatment)} better" if len(shown) == 1 else "the first-named method better"
    first = parts[0][1].caption
    caption = ("RANDOM INIT (not pretrained) backbone in rows marked so. " if first.startswith("RANDOM INIT") else "")
    caption += ("Calibration: NLL (nats) and the multi-class Brier score (0–2) as they are, ECE (15 equal-width confidence bins) in % — "
                "each seed's own ECE, then the mean over seeds (the reliability figure's ECE pools the bins of all seeds instead), "
                "on the ID split and the OOD average over shift sets; mean ± half-width of the 95% t-interval over seeds; bold: the "
                f"lowest (best) method mean per row; Δ = {deltas_text(shown)} paired over matching seeds (negative: {better}), † where "
                "its 95% CI excludes 0 (never for a zero-width CI).")
    note = tuning_note(selections, pairs=pairs)
    if note:
        caption += " " + note
    return Table(key, title, caption, labels, methods, frame, lower_is_better=True, pairs=pairs)


CALIBRATION_METRICS = ("nll", "ece", "brier")
CALIBRATION_LABELS = {"nll": "NLL", "ece": "ECE (%)", "brier": "Brier"}

TABLES: Registry[TableSpec] = Registry("table")
TABLES.add("id", TableSpec("In-distribution top-1 accuracy", "top1",
                           lambda r: r["protocol"].isin(["id", IN_DOMAIN_PROBE]) & ~r["derived"].astype(bool), 0))
TABLES.add("ood", TableSpec("OOD top-1 accuracy: shift sets (same head) and transfer (frozen backbone, kNN / SR)", "top1",
                            lambda r: r["protocol"].isin(["shift", "transfer"]) & r["corruption"].isna(), 1))
TABLES.add("ood_splits", TableSpec("OOD top-1 accuracy per corruption and severity", "top1",
                                   lambda r: (r["protocol"] == "shift") & r["corruption"].notna(), 2, detail=True))
TABLES.add("miou", TableSpec("Segmentation mIoU (dataset-level)", "mIoU", lambda r: r["corruption"].isna(), 3))
TABLES.add("calibration", TableSpec("Calibration: NLL, ECE and Brier score (ID and OOD average)", "nll", lambda r: r["split"].notna(), 4,
                                    detail=True, build=calibration_table))


def set_sizes(summary: pd.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    """(dataset, protocol) → {corruption family: number of splits} for '<family>/mean' labels."""
    rows = summary[summary["corruption"].notna()]
    out: dict[tuple[str, str], dict[str, int]] = {}
    for (dataset, protocol, family), group in rows.groupby(["dataset", "protocol", "ood_set"]):
        out.setdefault((dataset, protocol), {})[family] = group["split"].nunique()
    return out


def build_tables(summary: pd.DataFrame, delta: pd.DataFrame, selections: pd.DataFrame | None = None, pairs: Sequence[Pair] = ()) -> list[Table]:
    """Every registered table the summary has rows for, in rank order; one Δ column per compared
    pair (``pairs``; default: those ``delta`` holds)."""
    sizes = set_sizes(summary)
    tables = []
    for key in sorted(TABLES.names(), key=lambda k: TABLES.get(k).rank):
        spec = TABLES.get(key)
        if spec.build is not None:
            table = spec.build(key, spec.title, summary, delta, selections, pairs)
        else:
            table = comparison(key, spec.title, summary, delta, spec.metric, spec.keep, sizes, selections, pairs)
        if table is not None:
            tables.append(table)
    return tables
