"""Per-sample outputs (`bench samples`): each image of one evaluation split, its label where the
split can be loaded, and every final run's correctness, true-class probability (p_true) and, for
runs that recorded it, predicted class, per method and seed — read from the runs'
predictions.npz, never recomputed. Methods *differ* on an image when the majority over seeds
(right on more than half the seeds) is right for one method and wrong for another; the size of the
disagreement is the spread of the methods' fractions of seeds right.

Writes ``reports/<suite>/samples.parquet`` and ``samples.csv`` (one row per image), and
``samples_sheet.png`` (thumbnails of the top disagreements) when the split's images load, else
``samples.json`` says why; the HTML report links and embeds these when present. Nothing here
changes a result, a number of the report, or a run id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.io import atomic_write, atomic_write_text
from bench.report.stats import CORRECT, P_TRUE, PRED

CSV, PARQUET, SHEET, META = "samples.csv", "samples.parquet", "samples_sheet.png", "samples.json"
SHEET_SIZE = 24  # thumbnails on the sheet: the top disagreements


@dataclass
class Samples:
    split: str
    table: pd.DataFrame  # one row per image (see module docstring)
    groups: dict[str, list[tuple[int, str]]]  # method label → [(seed, run_id)] in seed order
    label_why: str | None = None  # why the label column is empty (the split did not load)
    skipped: dict[str, str] = field(default_factory=dict)  # run_id → why it has no per-image outputs here
    images: Any = None  # the loaded split (ImageArrays/ImageFiles) when it loaded

    def disagreements(self) -> pd.DataFrame:
        """The images where the methods differ, largest disagreement first (then the larger
        spread of mean p_true, then the image index)."""
        rows = self.table[self.table["differ"]]
        return rows.assign(_p=rows["p_true_spread"]).sort_values(["disagreement", "_p", "image"], ascending=[False, False, True],
                                                                kind="stable").drop(columns="_p")


def _labels(groups_runs: pd.DataFrame) -> dict[str, str]:
    """run_id → method label: the method name, with its config variant when a method has several."""
    out = {}
    for method, part in groups_runs.groupby("method", sort=False):
        several = part["variant"].nunique() > 1
        for r in part.itertuples():
            out[r.run_id] = f"{method}[{r.variant}]" if several else str(method)
    return out


def _choose_split(final: pd.DataFrame, predictions: dict, split: str | None) -> str:
    from bench.errors import SuiteError

    have = [r for r in final["run_id"].unique() if r in predictions]
    if not have:
        raise SuiteError("no finished final run has predictions.npz: nothing per sample to show")
    common = [s for s in dict.fromkeys(final["split"]) if all(CORRECT in predictions[r].get(s, {}) for r in have)]
    if split is not None:
        if not any(CORRECT in predictions[r].get(split, {}) for r in have):
            raise SuiteError(f"--split {split}: in no run's predictions.npz (splits with predictions: {', '.join(common) or 'none'})")
        return split
    if not common:
        raise SuiteError("no split has predictions in every run: pass --split")
    return "test" if "test" in common else common[0]


def _load_split(spec, split: str, n: int) -> tuple[Any, str | None]:
    """(the split's data, None) or (None, why not)."""
    try:
        data = spec.config.data.load(split)
    except Exception as exc:  # noqa: BLE001 — any failure to load only costs the labels and thumbnails
        return None, f"split {split} of {spec.config.data.name} could not be loaded here ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if len(data) != n:
        return None, f"split {split} loads with {len(data)} images but the predictions have {n}: not the images the runs saw"
    return data, None


def sample_table(specs, results_root: Path, split: str | None = None, load_images: bool = True) -> Samples:
    """The per-image table of ``split`` (default: 'test', else the first split every run has)."""
    from bench.report import load_final

    final, predictions, unread = load_final(specs, results_root)
    if final.empty:
        from bench.errors import SuiteError

        raise SuiteError("no finished final runs: nothing per sample to show")
    split = _choose_split(final, predictions, split)
    runs = final.drop_duplicates("run_id").sort_values(["method", "seed"], kind="stable")
    label_of = _labels(runs)
    skipped: dict[str, str] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for r in runs.itertuples():
        got = predictions.get(r.run_id, {}).get(split, {})
        if r.run_id not in predictions:
            skipped[r.run_id] = unread.get(r.run_id, "no predictions.npz")
        elif CORRECT not in got:
            skipped[r.run_id] = f"no {split} in predictions.npz"
        else:
            arrays[r.run_id] = got
    sizes = {len(a[CORRECT]) for a in arrays.values()}
    if len(sizes) > 1:
        n = max(sizes, key=lambda k: sum(len(a[CORRECT]) == k for a in arrays.values()))
        for run_id in [x for x, a in arrays.items() if len(a[CORRECT]) != n]:
            skipped[run_id] = f"{len(arrays.pop(run_id)[CORRECT])} images in {split}, the others {n}"
    n = sizes.pop() if len(sizes) == 1 else n
    groups: dict[str, list[tuple[int, str]]] = {}
    for r in runs.itertuples():
        if r.run_id in arrays:
            groups.setdefault(label_of[r.run_id], []).append((int(r.seed), r.run_id))
    spec_of = {s.run_id: s for s in specs}
    data, why = (None, "not asked to load the split") if not load_images else _load_split(spec_of[next(iter(arrays))], split, n)
    cols: dict[str, Any] = {"split": split, "image": np.arange(n)}
    cols["label"] = pd.array(np.asarray(data.labels) if data is not None else [None] * n, dtype="Int64")
    fractions, p_means = [], []
    for g, members in groups.items():
        right = np.zeros(n)
        p_sum = np.zeros(n)
        for seed, run_id in members:
            a = arrays[run_id]
            cols[f"{g}.s{seed}.correct"] = np.asarray(a[CORRECT], dtype=bool)
            cols[f"{g}.s{seed}.p_true"] = np.asarray(a[P_TRUE], dtype=np.float64) if P_TRUE in a else np.full(n, np.nan)
            if PRED in a:
                cols[f"{g}.s{seed}.pred"] = np.asarray(a[PRED], dtype=np.int64)
            right += cols[f"{g}.s{seed}.correct"]
            p_sum += cols[f"{g}.s{seed}.p_true"]
        k = len(members)
        cols[f"{g}.right"] = right.astype(np.int64)
        cols[f"{g}.seeds"] = k
        cols[f"{g}.majority"] = right > k / 2
        fractions.append(right / k)
        p_means.append(p_sum / k)
    frac, pm = np.vstack(fractions), np.vstack(p_means)
    majority = np.vstack([cols[f"{g}.majority"] for g in groups])
    cols["differ"] = majority.any(0) & ~majority.all(0)
    cols["disagreement"] = frac.max(0) - frac.min(0)
    cols["p_true_spread"] = pm.max(0) - pm.min(0)
    return Samples(split, pd.DataFrame(cols), groups, why, skipped, data)


def _mark(ok: bool) -> str:
    return "+" if ok else "-"


def table_lines(s: Samples, rows: pd.DataFrame) -> list[str]:
    """One line per image: index, label, then per method its seeds' right (+) / wrong (-), p_true
    and predicted class where recorded."""
    head = ["image", "label"] + [f"{g} (seeds {','.join(str(seed) for seed, _ in m)}: right, p_true[, pred])" for g, m in s.groups.items()]
    lines = ["  ".join(head)]
    for _, row in rows.iterrows():
        cells = [str(int(row["image"])), "?" if pd.isna(row["label"]) else str(int(row["label"]))]
        for g, members in s.groups.items():
            marks = "".join(_mark(bool(row[f"{g}.s{seed}.correct"])) for seed, _ in members)
            probs = "/".join(f"{row[f'{g}.s{seed}.p_true']:.2f}" for seed, _ in members)
            preds = [f"{int(row[f'{g}.s{seed}.pred'])}" for seed, _ in members if f"{g}.s{seed}.pred" in row.index]
            cells.append(f"{marks} {probs}" + (f" pred {'/'.join(preds)}" if len(preds) == len(members) else ""))
        lines.append("  ".join(cells))
    return lines


def _sheet(s: Samples, rows: pd.DataFrame, path: Path) -> None:
    """A PNG of the top disagreements' thumbnails, each captioned with its index, label and the
    methods' seeds right."""
    from PIL import Image, ImageDraw

    tile, pad, caption = 96, 6, 14 * (1 + len(s.groups))
    shown = rows.head(SHEET_SIZE)
    cols = min(6, max(1, len(shown)))
    nrows = max(1, -(-len(shown) // cols))
    sheet = Image.new("RGB", (cols * (tile + pad) + pad, nrows * (tile + caption + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (_, row) in enumerate(shown.iterrows()):
        x, y = pad + (k % cols) * (tile + pad), pad + (k // cols) * (tile + caption + pad)
        i = int(row["image"])
        img = Image.fromarray(np.asarray(s.images.image(i), dtype=np.uint8)).convert("RGB").resize((tile, tile), Image.NEAREST)
        sheet.paste(img, (x, y))
        label = "?" if pd.isna(row["label"]) else int(row["label"])
        text = [f"#{i} label {label}"] + [f"{g}: {int(row[f'{g}.right'])}/{int(row[f'{g}.seeds'])}" for g in s.groups]
        draw.multiline_text((x, y + tile + 1), "\n".join(text), fill="black", spacing=2)

    def write(tmp: Path) -> None:
        sheet.save(tmp, format="PNG")

    atomic_write(path, write)


def write_samples(s: Samples, out: Path) -> list[Path]:
    """samples.parquet, samples.csv, samples.json (split, runs, sheet or why not) and, when the
    split's images loaded and the methods differ somewhere, samples_sheet.png."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CSV, s.table.to_csv(index=False))
    atomic_write(out / PARQUET, lambda tmp: s.table.to_parquet(tmp, index=False))
    files = [out / PARQUET, out / CSV]
    top = s.disagreements()
    if s.images is None:
        sheet_why = f"no thumbnails: {s.label_why}"
    elif top.empty:
        sheet_why = "no thumbnails: the methods differ on no image"
    else:
        sheet_why = None
        _sheet(s, top, out / SHEET)
        files.append(out / SHEET)
    if sheet_why is not None:
        (out / SHEET).unlink(missing_ok=True)  # an older sheet would show other runs' disagreements
    meta = {"split": s.split, "images": len(s.table), "differ": int(s.table["differ"].sum()),
            "methods": {g: [{"seed": seed, "run_id": r} for seed, r in m] for g, m in s.groups.items()},
            "label": None if s.images is not None else s.label_why, "sheet": SHEET if sheet_why is None else None,
            "sheet_why": sheet_why, "shown": [int(i) for i in top["image"].head(SHEET_SIZE)], "skipped_runs": s.skipped}
    atomic_write_text(out / META, json.dumps(meta, indent=1) + "\n")
    files.append(out / META)
    return files


def report_context(out: Path) -> dict[str, Any] | None:
    """What the HTML report shows of `bench samples`' files in ``out``: None when there are none."""
    if not (out / CSV).is_file():
        return None
    try:
        meta = json.loads((out / META).read_text())
    except (OSError, ValueError):
        meta = {}
    sheet = out / SHEET if (out / SHEET).is_file() and meta.get("sheet") else None
    why = meta.get("sheet_why") or (None if sheet else "no thumbnails: samples.json is missing or unreadable")
    return {"csv": out / CSV, "sheet": sheet, "why": why, "split": meta.get("split", "?"), "differ": meta.get("differ"),
            "images": meta.get("images")}


def samples_markdown(out: Path) -> str:
    """report.md's pointer to `bench samples`' files (empty when there are none)."""
    ctx = report_context(out)
    if ctx is None:
        return ""
    differ = f": the methods differ on {ctx['differ']} of {ctx['images']} images" if ctx["differ"] is not None else ""
    sheet = f", thumbnails of the top disagreements in [{SHEET}]({SHEET})" if ctx["sheet"] else f" ({ctx['why']})"
    return (f"## Per-sample outputs\n\nWritten by `bench samples` (split {ctx['split']}{differ}); rerun it after new runs finish: "
            f"[{CSV}]({CSV}){sheet}.\n")
