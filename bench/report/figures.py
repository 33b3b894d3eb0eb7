"""Which figures a report draws, how they stay readable at scale, and which it need not redraw.

Why: every figure used to draw every setting (one panel per dataset × backbone × setting, one
forest row per comparison and evaluation set, a reliability panel per setting × method config).
At a thousand runs that is a figure hundreds of inches wide or tall, minutes to draw and nothing
a person can read. So:

- each figure draws at most :data:`MAX_PANELS` panels (fewer settings where a setting is a row
  of panels or many markers) — the first settings in suite order — and its caption says how many
  it shows of how many (every number is in the tables and CSVs);
- the forest plot, past :data:`MAX_FOREST_ROWS` rows, becomes its summary view
  (:func:`bench.report.plots.forest_summary`): one row per comparison, sorted by Δ;
- never one image per run: a figure is one file pair (PNG, PDF) per family;
- a figure whose inputs are unchanged since the last report of this folder is not drawn again:
  its inputs' digest, and the SHA-256 of the files it wrote, are remembered in the user's cache,
  and the files are kept when both still match (``bench report --no-cache`` draws everything).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bench.io import cache_file, read_checked_json, sha256_file, write_checked_json
from bench.report.worker import Worker, failure_text

MAX_PANELS = 8  # panels (settings, or setting × method config) per figure
MAX_CURVE_SETTINGS = 2  # training curves: a setting is a row of up to 9 panels, a line per config
MAX_POINT_GROUPS = 20  # ID vs OOD: (setting, config) groups, each a colour × marker with its own legend entry
MAX_ABLATION_SETTINGS = 6  # the ranked ablation: a setting is a panel as tall as its configs
MAX_FOREST_ROWS = 60  # rows of the full forest plot; beyond, its summary view


@dataclass
class Figure:
    """One figure to draw: ``draw(*args)`` writes it and returns its paths; ``note`` is what the
    figure leaves out (appended to its caption)."""

    key: str  # its file stem and cache entry ('forest_focal_vs_sft')
    draw: Callable[..., list[Path]]
    args: tuple
    note: str = ""
    kind: str = ""  # its plots.FIGURES entry (caption, why absent); default: the key
    pair: Any = None  # the compared pair it is about (forest, ablation), for its caption's method names

    def __post_init__(self) -> None:
        self.kind = self.kind or self.key


def first_settings(frame: pd.DataFrame, limit: int, column: str = "model") -> tuple[pd.DataFrame, int, int]:
    """(the rows of the first ``limit`` settings in order of appearance, settings shown, settings in all)."""
    if frame.empty or column not in frame:
        return frame, 0, 0
    settings = list(dict.fromkeys(frame[column].tolist()))
    shown = settings[:limit]
    return (frame if len(shown) == len(settings) else frame[frame[column].isin(shown)]), len(shown), len(settings)


def shown_note(shown: int, total: int, what: str = "settings") -> str:
    """'Showing the first 12 of 20 settings (suite order); ...' — '' when all are shown."""
    if shown >= total:
        return ""
    return (f"Showing the first {shown} of {total} {what} (in suite order), so that the figure stays readable; every setting's "
            "numbers are in the tables and CSVs.")


def cap_models(frame: pd.DataFrame, per_model: Callable[[pd.DataFrame], int], limit: int = MAX_PANELS) -> tuple[pd.DataFrame, str]:
    """The first settings (``model``) whose panels (``per_model`` of each setting's rows) fit in
    ``limit`` (at least one setting), and the caption note."""
    if frame.empty or "model" not in frame:
        return frame, ""
    settings = list(dict.fromkeys(frame["model"].tolist()))
    rows = frame.groupby("model", sort=False).indices  # positions only: a setting's rows are taken when it is weighed
    kept, used = [], 0
    for s in settings:
        k = per_model(frame.iloc[rows[s]])
        if kept and used + k > limit:
            break
        kept.append(s)
        used += k
    if len(kept) == len(settings):
        return frame, ""
    return frame[frame["model"].isin(kept)], shown_note(len(kept), len(settings))


# ---- remembering what was drawn ---------------------------------------------------------------

def _digest_of(value: Any, h: "hashlib._Hash") -> None:
    if isinstance(value, pd.DataFrame):
        h.update(json.dumps([list(map(str, value.columns)), list(map(str, value.dtypes))]).encode())
        try:
            h.update(pd.util.hash_pandas_object(value, index=False).to_numpy().tobytes())
        except TypeError:  # unhashable cells (lists): their text
            h.update(value.to_csv(index=False).encode())
    elif isinstance(value, Path):
        h.update(value.name.encode())
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for v in value:
            _digest_of(v, h)
        h.update(b"]")
    else:
        h.update(repr(value).encode())


def _code() -> str:
    import matplotlib

    here = Path(__file__).parent
    # plots.py and the modules it takes labels, names and colour order from
    sources = ("plots.py", "figures.py", "tables.py", "pairs.py", "aggregate.py")
    return hashlib.sha256(b"".join((here / name).read_bytes() for name in sources) + matplotlib.__version__.encode()).hexdigest()


class FigureCache:
    """The inputs' digest and the written files' SHA-256 of each figure of one report folder."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.path = cache_file("report-figures", out) if enabled else None
        self.entries: dict[str, Any] = {}
        self.code = _code()
        if self.path is not None:
            saved = read_checked_json(self.path)
            if isinstance(saved, dict) and saved.get("code") == self.code and isinstance(saved.get("figures"), dict):
                self.entries = saved["figures"]

    def digest(self, figure: Figure) -> str:
        h = hashlib.sha256(f"{figure.key}\0{figure.draw.__module__}.{figure.draw.__qualname__}\0".encode())
        _digest_of(list(figure.args), h)
        return h.hexdigest()

    def kept(self, figure: Figure, digest: str, out: Path) -> list[Path] | None:
        """The files drawn last time from the same inputs, if each is still what was written."""
        entry = self.entries.get(figure.key)
        if not isinstance(entry, dict) or entry.get("digest") != digest or not isinstance(entry.get("files"), dict):
            return None
        paths = []
        for name, sha in entry["files"].items():
            path = out / str(name)
            try:
                if Path(name).name != name or sha256_file(path) != sha:
                    return None
            except OSError:
                return None
            paths.append(path)
        return paths or None

    def remember(self, figure: Figure, digest: str, paths: list[Path]) -> None:
        self.entries[figure.key] = {"digest": digest, "files": {p.name: sha256_file(p) for p in paths}}

    def save(self, keys: list[str]) -> None:
        if self.path is None:
            return
        try:
            write_checked_json(self.path, {"code": self.code, "figures": {k: v for k, v in self.entries.items() if k in keys}})
        except OSError:
            pass


@dataclass
class Pending:
    """Figures being drawn (:func:`start_all`); :meth:`finish` waits for them."""

    cache: FigureCache
    figures: list[Figure]
    jobs: list[tuple[Figure, str, list[Path] | None, Callable[[], list[Path]] | None]]
    absent: Callable[[Figure], str]

    def finish(self) -> tuple[list[tuple[str, Path, str]], list[str], list[Path]]:
        """([(key, first path, note)], skipped notes, every file), in the order of the figures."""
        cache = self.cache
        drawn, skipped, files = [], [], []
        for figure, digest, kept, job in self.jobs:
            paths = kept
            if job is not None:
                try:  # a figure that fails must not cost the tables and the page
                    paths = job()
                except Exception as exc:  # noqa: BLE001 — reported in the report itself
                    paths, reason = [], f"drawing it failed ({failure_text(exc)})"
                else:
                    reason = self.absent(figure)
                    if paths:
                        cache.remember(figure, digest, paths)
            else:
                reason = ""
            paths = paths or []
            files += paths
            if paths:
                drawn.append((figure.key, paths[0], figure.note))
            else:
                cache.entries.pop(figure.key, None)
                what = figure.kind.replace("_", " ") + (f" ({figure.pair.label})" if figure.pair is not None and figure.key != figure.kind else "")
                skipped.append(f"No {what} figure: {reason}")
        cache.save([f.key for f in self.figures])
        return drawn, skipped, files


def start_all(figures: list[Figure], out: Path, enabled: bool, absent: Callable[[Figure], str], worker: Worker | None = None) -> Pending:
    """Begin drawing each figure whose inputs or files changed since the last report (the others
    are kept), in ``worker`` (:mod:`bench.report.worker`; default: in this process, when
    :meth:`Pending.finish` asks)."""
    cache = FigureCache(out, enabled)
    worker = worker or Worker(None)
    jobs = []
    for figure in figures:
        digest = cache.digest(figure)
        kept = cache.kept(figure, digest, out)
        jobs.append((figure, digest, kept, worker.submit(figure.draw, *figure.args) if kept is None else None))
    return Pending(cache, figures, jobs, absent)


def draw_all(figures: list[Figure], out: Path, enabled: bool, absent: Callable[[Figure], str],
             worker: Worker | None = None) -> tuple[list[tuple[str, Path, str]], list[str], list[Path]]:
    """Draw (or keep) each figure: ([(key, first path, note)], skipped notes, every file)."""
    return start_all(figures, out, enabled, absent, worker).finish()


__all__ = ["Figure", "MAX_PANELS", "MAX_FOREST_ROWS", "first_settings", "cap_models", "shown_note", "draw_all", "start_all", "Pending",
           "FigureCache"]
