"""Comparison tables built from seed aggregates: one model, rendered as CSV, Markdown and LaTeX.

Every table has evaluation sets as rows and methods as columns, plus the paired Δ column:
cells show mean ± half-width of the 95% CI over seeds (in percent); the best method mean of
a row is bold; a Δ whose 95% CI excludes 0 is marked †. The CSV carries the same numbers at
full precision, so the rendered tables (and the HTML report) can be checked against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from bench.registry import Registry

METHOD_NAMES = {"sft": "SFT", "grpo_rm": "GRPO-RM"}
METRIC_NAMES = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "mIoU": "mIoU", "aAcc": "pixel accuracy", "mAcc": "mean class accuracy"}
PROTOCOL_ORDER = {"id": 0, "shift": 1, "transfer": 2}
PROBE_NAMES = {"knn": "kNN", "sr": "SR"}
MODEL_KEYS = ["dataset", "backbone", "init", "random_init", "variant"]
ROW_KEYS = [*MODEL_KEYS, "protocol", "split"]


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def method_order(methods) -> list[str]:
    """The baseline first, then GRPO-RM, then any other method in order of appearance."""
    seen = list(dict.fromkeys(methods))
    return [m for m in METHOD_NAMES if m in seen] + [m for m in seen if m not in METHOD_NAMES]


@dataclass(frozen=True)
class Table:
    """A rendered-ready comparison: ``frame`` has the label columns, then per method
    ``<method>_mean/_ci_low/_ci_high/_n`` and ``delta_mean/_ci_low/_ci_high/_n`` (percent)."""

    key: str  # file stem, e.g. "id" → table_id.csv/.md/.tex
    title: str
    caption: str
    labels: list[str]
    methods: list[str]
    frame: pd.DataFrame

    @property
    def has_delta(self) -> bool:
        return "delta_mean" in self.frame and self.frame["delta_n"].fillna(0).gt(0).any()

    def best(self, row: pd.Series) -> set[str]:
        """Methods with the highest mean in this row as displayed (2 decimals; ties all win);
        none with a single method."""
        means = {m: round(float(row[f"{m}_mean"]), 2) for m in self.methods if not pd.isna(row[f"{m}_mean"])}
        if len(means) < 2:
            return set()
        top = max(means.values())
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

def model_labels(frame: pd.DataFrame) -> pd.Series:
    """A row label per model: the dataset, plus backbone/init/variant where one dataset was run in
    several models, plus '(random init)' for a randomly initialised backbone."""
    models = frame[MODEL_KEYS].drop_duplicates()
    parts = {"backbone": models.groupby("dataset")["backbone"].nunique(), "init": models.groupby("dataset")["init"].nunique(),
             "variant": models.groupby("dataset")["variant"].nunique()}

    def label(r) -> str:
        extra = [f"{'variant ' if k == 'variant' else ''}{getattr(r, k)}" for k in ("backbone", "init", "variant") if parts[k][r.dataset] > 1]
        return " · ".join([r.dataset, *extra]) + (" (random init)" if bool(r.random_init) else "")

    return pd.Series([label(r) for r in frame[MODEL_KEYS].itertuples()], index=frame.index)


def comparison(
    key: str, title: str, summary: pd.DataFrame, delta: pd.DataFrame, metric: str,
    keep: Callable[[pd.DataFrame], pd.Series], set_sizes: dict[tuple[str, str], dict[str, int]] | None = None,
) -> Table | None:
    """A table of ``metric`` over the summary rows that ``keep`` selects; None when there are none."""
    rows = summary[(summary["metric"] == metric)]
    rows = rows[keep(rows).fillna(False).astype(bool)]
    if rows.empty:
        return None
    methods = method_order(rows["method"])
    wide = rows[ROW_KEYS].drop_duplicates().reset_index(drop=True)
    for method in methods:
        part = rows[rows["method"] == method][ROW_KEYS + ["mean", "ci_low", "ci_high", "n"]]
        part = part.rename(columns={c: f"{method}_{c}" for c in ("mean", "ci_low", "ci_high", "n")})
        wide = wide.merge(part, on=ROW_KEYS, how="left")
    d = delta[delta["metric"] == metric][ROW_KEYS + ["mean", "ci_low", "ci_high", "n"]] if not delta.empty else None
    if d is not None and not d.empty:
        wide = wide.merge(d.rename(columns={c: f"delta_{c}" for c in ("mean", "ci_low", "ci_high", "n")}), on=ROW_KEYS, how="left")
    else:
        for c in ("mean", "ci_low", "ci_high", "n"):
            wide[f"delta_{c}"] = math.nan
    scale = 1.0 if metric == "nll" else 100.0
    for c in wide.columns:
        if c.endswith(("_mean", "_ci_low", "_ci_high")):
            wide[c] = wide[c].astype(float) * scale
    order = {m: i for i, m in enumerate(dict.fromkeys(zip(*(wide[k] for k in MODEL_KEYS))))}
    wide["_model"] = [order[m] for m in zip(*(wide[k] for k in MODEL_KEYS))]
    wide["_protocol"] = wide["protocol"].map(PROTOCOL_ORDER).fillna(9)
    wide["_rank"] = [split_rank(s) for s in wide["split"]]
    wide["_seen"] = range(len(wide))
    wide = wide.sort_values(["_model", "_protocol", "_rank", "_seen"], kind="stable").reset_index(drop=True)
    sizes = set_sizes or {}
    labels = pd.DataFrame({
        "dataset": model_labels(wide),
        "protocol": wide["protocol"],
        "evaluation": [split_label(r.split, r.dataset, sizes.get((r.dataset, r.protocol), {})) for r in wide.itertuples()],
    })
    numbers = wide[[c for c in wide.columns if c.endswith(("_mean", "_ci_low", "_ci_high", "_n"))]]
    frame = pd.concat([labels, wide[["split"]], numbers], axis=1)
    for c in frame.columns:
        if c.endswith("_n"):
            frame[c] = frame[c].astype("Int64")
    unit = "" if metric == "nll" else " (%)"
    caption = (f"{METRIC_NAMES.get(metric, metric)}{unit}, mean ± half-width of the 95% t-interval over seeds; "
               f"bold: best method mean per row; Δ = GRPO-RM − SFT paired over matching seeds, † where its 95% CI excludes 0.")
    if wide["random_init"].astype(bool).any():
        caption = "RANDOM INIT (not pretrained) backbone in rows marked so. " + caption
    return Table(key, title, caption, ["dataset", "protocol", "evaluation"], methods, frame)


# ---- cells --------------------------------------------------------------------------------

def _half(low: float, high: float) -> float:
    return (high - low) / 2


def cell_text(mean: float, low: float, high: float, n, modal_n: int | None, signed: bool = False) -> str:
    """'72.67 ± 1.29', '+2.00 ± 1.41 †', '81.00 (n=1)'; '—' when absent."""
    if pd.isna(mean):
        return "—"
    text = (f"{mean:+.2f}" if signed else f"{mean:.2f}").replace("-", "−")  # a typographic minus
    if not pd.isna(low):
        text += f" ± {_half(low, high):.2f}"
    if signed and not pd.isna(low) and (low > 0 or high < 0):
        text += " †"
    if not pd.isna(n) and modal_n is not None and int(n) != modal_n:
        text += f" (n={int(n)})"
    return text


def modal_n(table: Table) -> int | None:
    counts = pd.concat([table.frame[f"{m}_n"] for m in table.methods]).dropna()
    return int(counts.mode().iloc[0]) if len(counts) else None


def header(table: Table) -> list[str]:
    n = modal_n(table)
    seeds = f" (n={n})" if n is not None else ""
    cols = [method_name(m) + seeds for m in table.methods]
    return ["dataset", "protocol", "evaluation", *cols] + (["Δ GRPO-RM − SFT"] if table.has_delta else [])


def row_cells(table: Table) -> list[tuple[list[str], list[str], set[int]]]:
    """Per row: label texts, value texts, indices of value cells to bold."""
    n = modal_n(table)
    out = []
    for _, row in table.frame.iterrows():
        best = table.best(row)
        values = [cell_text(row[f"{m}_mean"], row[f"{m}_ci_low"], row[f"{m}_ci_high"], row[f"{m}_n"], n) for m in table.methods]
        bold = {i for i, m in enumerate(table.methods) if m in best}
        if table.has_delta:
            values.append(cell_text(row["delta_mean"], row["delta_ci_low"], row["delta_ci_high"], row["delta_n"], n, signed=True))
        out.append(([str(row[c]) for c in table.labels], values, bold))
    return out


# ---- renderers ----------------------------------------------------------------------------

def to_csv(table: Table) -> str:
    frame = table.frame.copy()
    frame["best"] = [";".join(sorted(table.best(r))) for _, r in table.frame.iterrows()]
    return frame.to_csv(index=False)


def to_markdown(table: Table) -> str:
    head = header(table)
    lines = [f"### {table.title}", "", table.caption, "", "| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for labels, values, bold in row_cells(table):
        shown = [f"**{v}**" if i in bold else v for i, v in enumerate(values)]
        lines.append("| " + " | ".join(labels + shown) + " |")
    return "\n".join(lines) + "\n\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}",
                 "<": r"\textless{}", ">": r"\textgreater{}"}
# what pdflatex's default fonts lack, as LaTeX (so the tables compile without extra packages)
LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": r"$-$", "†": r"$^\dagger$", "·": r"$\cdot$", "≤": r"$\le$",
                 "≥": r"$\ge$", "×": r"$\times$", "—": "---", "–": "--", "…": r"\ldots{}", "→": r"$\to$"}


def latex_escape(text: str) -> str:
    out = "".join(LATEX_ESCAPES.get(ch, ch) for ch in text)
    for sym, tex in LATEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out


def to_latex(table: Table, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); a \\midrule between datasets."""
    head = header(table)
    spec = "lll" + "r" * (len(head) - 3)
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


TABLES: Registry[TableSpec] = Registry("table")
TABLES.add("id", TableSpec("In-distribution top-1 accuracy", "top1", lambda r: (r["protocol"] == "id") & ~r["derived"].astype(bool), 0))
TABLES.add("ood", TableSpec("OOD top-1 accuracy: shift sets (same head) and transfer (frozen backbone, kNN / SR)", "top1",
                            lambda r: r["protocol"].isin(["shift", "transfer"]) & r["corruption"].isna(), 1))
TABLES.add("ood_splits", TableSpec("OOD top-1 accuracy per corruption and severity", "top1",
                                   lambda r: (r["protocol"] == "shift") & r["corruption"].notna(), 2, detail=True))
TABLES.add("miou", TableSpec("Segmentation mIoU (dataset-level)", "mIoU", lambda r: r["corruption"].isna(), 3))


def set_sizes(summary: pd.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    """(dataset, protocol) → {corruption family: number of splits} for '<family>/mean' labels."""
    rows = summary[summary["corruption"].notna()]
    out: dict[tuple[str, str], dict[str, int]] = {}
    for (dataset, protocol, family), group in rows.groupby(["dataset", "protocol", "ood_set"]):
        out.setdefault((dataset, protocol), {})[family] = group["split"].nunique()
    return out


def build_tables(summary: pd.DataFrame, delta: pd.DataFrame) -> list[Table]:
    sizes = set_sizes(summary)
    tables = []
    for key in sorted(TABLES.names(), key=lambda k: TABLES.get(k).rank):
        spec = TABLES.get(key)
        table = comparison(key, spec.title, summary, delta, spec.metric, spec.keep, sizes)
        if table is not None:
            tables.append(table)
    return tables
