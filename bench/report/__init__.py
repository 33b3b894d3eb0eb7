"""A suite's report: long table, seed aggregates, tables (CSV/Markdown/LaTeX), figures, HTML.

Everything lands in ``reports/<suite>/``; each file is written atomically. A partial suite is
reported from its finished runs, and the runs that are missing or failed are listed. What is
compared comes from the suite (``compare:``, :mod:`bench.report.pairs`): each pair gets its Δ
columns, verdict box and forest plot.
"""

from __future__ import annotations

import dataclasses

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from typing import Callable
import pandas as pd

from bench.io import atomic_write_json, atomic_write_text
from bench.report import figures as figs
from bench.report import html, longreuse, plots, stats, verdict
from bench.report.aggregate import (StoreRead, limited_note, describe_variants, finals, finished_results, long_from, paired_delta, probe_c_table,
                                    read_store, seed_summary, selection_table, severity_summary, sweep_table, training_log_of, variant_legend, with_averages)
from bench.report.cost import cost_table
from bench.report.longcsv import write_long_csv
from bench.report.runcache import RunCache, log_extremes, valid_extremes
from bench.report.worker import Worker
from bench.report.samples import report_context as samples_context
from bench.report.samples import samples_markdown
from bench.report.expected import CAPTION as EXPECTED_CAPTION
from bench.report.expected import compare, expected_latex, expected_markdown
from bench.report.pairs import pairs_of, stem, title_text
from bench.report.tables import (TABLES, Table, TextTable, arm_labels, build_tables, model_labels, probe_c_note, to_csv, to_latex, to_markdown,
                                 tuning_note)
from bench.store import CorruptFile, RunDir, link_problem
from bench.suite import RunSpec, Suite


@dataclass(frozen=True)
class Report:
    markdown: str  # the whole report.md
    console: str  # what `bench report` prints: the main tables, expectations and unfinished runs
    files: list[Path]
    states: pd.DataFrame
    tables: list[Table] = field(default_factory=list)
    extra_tables: list[TextTable] = field(default_factory=list)  # the ranked ablation, wall time
    verdict: pd.DataFrame = field(default_factory=pd.DataFrame)  # the verdict boxes' comparisons, every pair's (verdict.csv)
    summary: str = ""  # what `bench run` / `bench report` print by default: the verdict box's headline, expectations, unfinished runs; no tables



def _not_done_markdown(states: pd.DataFrame) -> str:
    rest = states[states["state"] != "done"]
    if rest.empty:
        return ""
    lines = [f"## Runs not in the tables ({len(rest)} of {len(states)})", "", "| run | method | dataset | seed | state | error |", "|---|---|---|---|---|---|"]
    for r in rest.itertuples():
        limit = 400 if r.state in ("corrupt", "stale-data") else 160  # a corrupt run's error names the file and why, a stale one the split: keep both
        error = r.error.splitlines()[0][:limit].replace("|", "\\|") if r.error else ""
        lines.append(f"| {r.run_id} | {r.method} | {r.dataset} | {r.seed} | {r.state} | {error} |")
    return "\n".join(lines) + "\n"


MANIFEST = "manifest.json"  # the files the last report wrote: the only ones a later report may delete


def _remove_stale(out: Path, written: list[Path]) -> None:
    """Drop files the previous report wrote that this one did not (e.g. a figure whose data is
    gone), so the folder always describes one report. Only files named in the previous report's
    own manifest are ever deleted — never by pattern, so a user's files beside a report (or a
    report folder pointed somewhere unexpected) are safe — and then the new manifest is written."""
    manifest = out / MANIFEST
    keep = {p.name for p in written}
    try:
        previous = json.loads(manifest.read_text()).get("files", []) if manifest.is_file() else []
    except (OSError, ValueError):
        previous = []  # an unreadable manifest deletes nothing
    for name in previous:
        if isinstance(name, str) and name not in keep and Path(name).name == name:  # plain names in this folder only
            (out / name).unlink(missing_ok=True)
    atomic_write_json(manifest, {"files": sorted(keep)})


def suite_files(suite: Suite, path: Path | None) -> list[tuple[str, str]]:
    """(path, text) of the suite file and of every suite it includes, for the HTML page."""
    out = [(str(path), Path(path).read_text())] if path is not None and Path(path).is_file() else []
    for child_path, child in suite._children:
        out += suite_files(child, child_path)
    return out


VARIANTS_INTRO = ("Seeds are pooled per method config (variant: the config without seed and method name); a paired Δ "
                  "compares the configs of one setting (the config without seed, method and tuned values). What the "
                  "settings and method configs named in the tables differ in:")


def _variants_markdown(legend: dict[str, dict]) -> str:
    if not legend:
        return ""
    lines = ["## Config variants", "", VARIANTS_INTRO, ""]
    lines += [f"- {name}: " + ", ".join(f"{k}={val}" for k, val in values.items()) for name, values in legend.items()]
    return "\n".join(lines) + "\n"


def _prediction_paths(specs: list[RunSpec], results_root: Path, final: pd.DataFrame) -> dict[str, Path]:
    """run_id → predictions.npz path of every finished final run (the per-image input of the Δ intervals)."""
    wanted = set(final["run_id"].tolist())
    return {s.run_id: RunDir.of(results_root, s.suite, s.run_id).predictions for s in specs if s.run_id in wanted}


def _id_calibration(results: list, runs: pd.DataFrame) -> pd.DataFrame:
    """Calibration bins of each final run's ID split ('test', else its first ID split) with the
    run's setting (model) and method config (arm): the reliability diagram's input."""
    chosen: dict[str, str] = {}
    for f in results:
        ids = [split for split, v in (f.result.get("metrics") or {}).items() if isinstance(v, dict) and v.get("protocol", "id") == "id"
               and not v.get("shift")]
        if ids:
            chosen[f.result["run_id"]] = "test" if "test" in ids else ids[0]
    # only the chosen split's bins are built: every split's would be a row per run × split × bin
    light = [{**{k: f.result[k] for k in ("run_id", "stage") if k in f.result},
              "metrics": {s: m for s, m in (f.result.get("metrics") or {}).items() if s == chosen.get(f.result.get("run_id"))}} for f in results]
    bins = stats.calibration_bins(light)
    bins = bins[bins["run_id"].isin(runs.index)]
    if bins.empty:
        return bins
    return bins.join(runs[["model", "arm", "method", "random_init"]], on="run_id")


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames of several pairs as one (the first alone when all are empty: its columns stay)."""
    full = [f for f in frames if not f.empty]
    return pd.concat(full, ignore_index=True) if len(full) > 1 else (full[0] if full else frames[0])


def _box_headline(contexts: list[dict], several: bool) -> list[str]:
    """The verdict boxes' headlines for `bench run`'s summary; with ``several`` pairs each under its pair."""
    if not several:
        return [f"- {line}" for c in contexts for line in c["headline"]]
    return [x for c in contexts for x in [f"- Δ {c['pair']}:", *(f"  - {line}" for line in c["headline"])]]


def claim_bands(suite: Suite, ends: "verdict.Endpoints") -> list[tuple[str, float, float, str]]:
    """(split, low, high, label) of each ``expected:`` Δ claim of the compared pair in the headline
    metric, for the forest plot's claim bands."""
    return [(e.split, e.value - e.tolerance, e.value + e.tolerance, f"claim {e.value:+.2f} ± {e.tolerance:.2f}") for e in suite.expected
            if e.quantity == "delta" and e.method == ends.treatment and e.baseline == ends.control and e.metric in ("top1", "mIoU")]


def figures_wanted() -> bool:
    """$BENCH_REPORT_FIGURES=0 writes tables, CSVs and the page without drawing figures (drawing is
    most of a small report's cost: ~3 s of ~4 on 2 cores) — for quick iterations, and for the tests
    of everything but the figures (tests/conftest.py; tests marked `figures` draw them)."""
    return os.environ.get("BENCH_REPORT_FIGURES", "1").strip().lower() not in ("0", "off", "no", "false")


def load_final(specs: list[RunSpec], results_root: Path) -> tuple[pd.DataFrame, stats.Predictions, dict[str, str]]:
    """The final runs' long table (with per-run averages), their per-image predictions, and why
    any run has none: what every Δ, claim and stopping decision is computed from."""
    final = finals(with_averages(long_from(finished_results(specs, results_root))))
    predictions, unread = stats.load_predictions(_prediction_paths(specs, results_root, final)) if not final.empty else ({}, {})
    return final, predictions, unread


def _log_extremes(store: StoreRead, cache: RunCache, final: set[str]) -> dict[str, dict[str, list[float] | None]]:
    """run id → :func:`bench.report.runcache.log_extremes` of each final run's metrics.jsonl (kept by
    result digest): every run's log is read once, and not again while its result is unchanged."""
    columns = ("step", *(c for c, _ in plots.CURVE_PANELS))
    out = {}
    for f in store.results:
        run_id = f.result.get("run_id")
        run_dir = store.dirs.get(run_id)
        if run_id not in final or run_dir is None:
            continue

        def compute(run_dir=run_dir) -> dict[str, list[float] | None]:
            try:
                return log_extremes(run_dir.read_metrics(), columns)
            except CorruptFile:  # damaged since the state was read: no curve now (not kept), listed as corrupt next time
                return None

        found = cache.get(f.digest, "log", compute, valid_extremes)
        out[run_id] = found if found is not None else {}
    return out


def _extremes_log(extremes: dict[str, dict[str, list[float] | None]]) -> pd.DataFrame:
    """Two rows per run, its minimum and its maximum of each logged quantity: the same verdict from
    :func:`bench.report.plots.curve_panels` (varies in a run, constant at which value) as its log."""
    rows = []
    for run_id, found in extremes.items():
        for k in (0, 1):
            rows.append({"run_id": run_id, **{c: v[k] for c, v in found.items() if v is not None and c != "step"}})
    return pd.DataFrame(rows)


def cache_wanted() -> bool:
    """$BENCH_REPORT_CACHE=0 computes every Δ estimate afresh (`bench report --no-cache` does too);
    by default a report reuses the estimates of an earlier report of the same runs
    (:class:`bench.report.stats.EstimateCache`)."""
    return os.environ.get("BENCH_REPORT_CACHE", "1").strip().lower() not in ("0", "off", "no", "false")


def estimate_cache(out: Path, results: list, enabled: bool) -> stats.EstimateCache:
    """The report folder's remembered estimates (in the user's cache, never beside the report),
    keyed by each finished run's result digest where result.json covers its predictions."""
    from bench.io import cache_file

    digests = {f.result["run_id"]: f.digest for f in results
               if f.digest and "predictions.npz" in ((f.result.get("files") or {}) if isinstance(f.result.get("files"), dict) else {})}
    path = None
    if enabled:
        path = cache_file("report-estimates", out)
    return stats.EstimateCache(path, digests if enabled else {})


def build_report(suite: Suite, specs: list[RunSpec], results_root: Path, reports_root: Path, suite_path: Path | None = None,
                 folder: str | None = None, note: str | None = None, cache: bool | None = None, worker: bool = False) -> Report:
    """Write ``reports/<suite>/`` (or ``reports/<folder>/``: a ``--only`` subset's own folder,
    whose ``note`` opens the report and says what it covers). Every Δ interval, p-value and MDE comes from the one
    uncertainty model (:func:`bench.report.stats.delta_estimate`); the primary endpoint, the
    minimum practical effects and the claims come from the suite. Figures are drawn unless
    :func:`figures_wanted` says otherwise. With ``worker`` (the ``bench`` command's choice) the
    figures and the large CSVs are written by a worker process where the process may use two CPUs
    (:mod:`bench.report.worker`) while the tables are written here. Other callers write
    everything in their own process by default: a spawned worker imports the caller's main
    module, which a script without a ``__main__`` guard would run again."""
    beside = Worker.start(worker, warm=figures_wanted())
    try:
        return _build_report(suite, specs, results_root, reports_root, suite_path, folder, note, cache, beside)
    finally:
        beside.close()


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as ``path`` (no index), atomically: a job for the worker beside the report."""
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def _build_report(suite: Suite, specs: list[RunSpec], results_root: Path, reports_root: Path, suite_path: Path | None,
                  folder: str | None, note: str | None, cache: bool | None, beside: Worker) -> Report:
    from bench.report import claims as claims_module

    out = Path(reports_root) / (folder or suite.name)
    refused = link_problem(out, Path(reports_root))  # never write, or delete stale files, through a link
    if refused is not None:
        raise refused
    every = verdict.Endpoints.all_of(suite, results_root)  # one per compared pair, in the suite's order
    pairs = pairs_of(suite)
    ends = next((e for e in every if e.primary is not None), every[0])  # the primary's pair: its box carries the claims
    store = read_store(specs, results_root)  # every run's files read and verified once
    states, results = store.states, store.results
    caching = cache_wanted() if cache is None else cache  # every cache between reports, on or off
    # tuning runs included (stage 'tune'): the record keeps them; unchanged runs' rows come from the last report (bench.report.longreuse)
    long = longreuse.long_with_averages(results, out / "results_long.parquet", caching)
    final = finals(long)  # what every table, Δ, figure but the sweep, and claim is made of
    pair_deltas = {(e.treatment, e.control): paired_delta(final, e.treatment, e.control) for e in every}  # the ablation reuses them
    summary, delta = seed_summary(final), _concat([pair_deltas[e.treatment, e.control] for e in every])
    # each predictions.npz is read when a Δ first needs it; Δs of unchanged runs come from the cache
    predictions, unread = stats.lazy_predictions(_prediction_paths(specs, results_root, final)) if not final.empty else ({}, {})
    remembered = estimate_cache(out, results, caching)
    shared = claims_module.Estimating.of(final)  # each metric's per-run tables, built once for every estimate below
    with stats.remembering(remembered):
        # seeds × images where predictions exist
        delta = stats.with_intervals(delta, final, predictions, unread, min_effect=ends.min_effect, tables_of=shared.tables_of)
        alpha = claims_module.report_alpha(suite, results_root)
        comparison = compare(list(suite.expected), final, predictions, unread, alpha)
        compared = [verdict.comparisons(delta, final, e) if not final.empty else [] for e in every]  # the verdict box's and forest plot's walk
        boxes = [(e, verdict.verdict_frame(delta, final, e, verdict.primary_estimates(e, final, predictions, unread, shared), found)
                  if not final.empty else pd.DataFrame(columns=verdict.VERDICT_COLUMNS)) for e, found in zip(every, compared)]
        verdict_rows = _concat([rows for _, rows in boxes])
        by_control: dict[str, verdict.Endpoints] = {}  # one ablation ranking per control, with its first pair's endpoints
        for e in every:
            by_control.setdefault(e.control, e)
        ablations = [(e, "ablation" if len(by_control) == 1 else f"ablation_{c}", verdict.ablation_frame(final, predictions, unread, e, shared, pair_deltas))
                     for c, e in by_control.items()]
    remembered.save()
    selections = selection_table(results)
    tables = build_tables(summary, delta, selections, pairs) if not final.empty else []
    limited = limited_note(final)  # data.limit / train.max_steps: every caption says these are smoke-test numbers
    if limited:
        tables = [dataclasses.replace(t, caption=f"{limited} {t.caption}") for t in tables]
    extra_tables = [t for t in (*(verdict.ablation_table(rows, e.control, key) for e, key, rows in ablations),
                                cost_table(final, pairs) if not final.empty else None) if t is not None]
    sev = severity_summary(final)
    probes = probe_c_table(results)
    title = f"{suite.name}: {title_text(pairs)}"
    skipped: list[str] = []
    run_cache = RunCache(out, caching)
    sweeps = sweep_table(long, selections)
    draw: list[figs.Figure] = []
    if not final.empty:
        labelled = final.assign(model=model_labels(final), variant_desc=describe_variants(final["variant"], final))
        labelled = labelled.assign(arm=arm_labels(labelled))
        by_model = summary.assign(model=model_labels(summary), arm=arm_labels(summary))
        runs = labelled.drop_duplicates("run_id").set_index("run_id")
        # each final run's log: its extremes per curve (kept between reports, bench.report.runcache); the
        # whole log only of the runs the curves figure draws
        extremes = _log_extremes(store, run_cache, set(runs.index))
        logged = [r for r, e in extremes.items() if (e.get("step") is not None)]
        first = list(dict.fromkeys(runs.loc[logged, "model"]))[: figs.MAX_CURVE_SETTINGS]
        log = training_log_of(store, only={r for r in logged if runs.at[r, "model"] in first})
        if not log.empty:
            log = log.assign(model=log["run_id"].map(runs["model"]), arm=log["run_id"].map(runs["arm"])).dropna(subset=["model"])
        labelled_sev = sev.assign(model=model_labels(sev), arm=arm_labels(sev)) if not sev.empty else sev
        calibration = _id_calibration(results, runs)
        # at most figs.MAX_PANELS panels per figure, the first settings in suite order (bench.report.figures)
        bars_in, shown, total = figs.first_settings(by_model, figs.MAX_PANELS)
        points, points_note = figs.cap_models(labelled, lambda g: g["arm"].nunique(), figs.MAX_POINT_GROUPS)
        curves_in, curves_shown, curves_total = log, len(first), len(dict.fromkeys(runs.loc[logged, "model"]))
        sev_in, sev_note = figs.cap_models(labelled_sev, lambda g: len(g.loc[g["metric"].isin(["top1", "mIoU"]), ["ood_set", "metric"]].drop_duplicates()))
        cal_in, cal_note = figs.cap_models(calibration, lambda g: g["arm"].nunique())
        draw.append(figs.Figure("bars", plots.bars, (bars_in, out / "bars", title, pairs), figs.shown_note(shown, total)))
        for e, found in zip(every, compared):  # one forest plot per compared pair; past figs.MAX_FOREST_ROWS rows, its summary view
            key = stem("forest", e.pair, pairs)
            forest_rows = verdict.forest_frame(delta, final, e, found)
            if len(forest_rows) > figs.MAX_FOREST_ROWS:
                draw.append(figs.Figure(key, plots.forest_summary, (forest_rows, out / key, title),
                                        f"Summary view: the {len(forest_rows)} rows of the full plot do not fit one figure; each comparison is shown "
                                        "by its OOD average (else its ID split), sorted by Δ; every Δ is in delta.csv and the verdict box.",
                                        kind="forest", pair=e.pair))
            else:
                draw.append(figs.Figure(key, plots.forest, (forest_rows, out / key, title, claim_bands(suite, e)), kind="forest", pair=e.pair))
        draw += [
            figs.Figure("id_vs_ood", plots.id_vs_ood, (points, by_model[by_model["model"].isin(set(points["model"]))], out / "id_vs_ood", title, pairs),
                        points_note),
            figs.Figure("curves", plots.curves, (curves_in, out / "curves", title, bool(final["random_init"].astype(bool).any()), pairs),
                        figs.shown_note(curves_shown, curves_total)),
            figs.Figure("severity", plots.severity, (sev_in, out / "severity", title, pairs), sev_note),
            figs.Figure("reliability", plots.reliability, (cal_in, out / "reliability", title, pairs), cal_note),
        ]
        for e, key, rows in ablations:
            if not rows.empty:  # a suite with one config per method has nothing to rank
                ranked, a_shown, a_total = figs.first_settings(rows, figs.MAX_ABLATION_SETTINGS, "setting")
                draw.append(figs.Figure(key, plots.ablation, (ranked, out / key, title, e.control), figs.shown_note(a_shown, a_total),
                                        kind="ablation", pair=e.pair))
        if logged:
            flat = plots.curve_panels(_extremes_log(extremes))[1]  # a quantity constant in every run (not only those drawn)
            if flat:
                skipped.append("Training curves: not drawn, constant over training in every run: " + "; ".join(flat) + ".")
    if not sweeps.empty:  # a suite that tunes nothing has no sweep to miss
        draw.append(figs.Figure("sweep", plots.sweep, (sweeps, out / "sweep", title, pairs)))
    if draw and not figures_wanted():
        skipped.append("Figures: not drawn ($BENCH_REPORT_FIGURES=0); unset it and run `bench report` to draw them.")
        draw = []
    run_cache.save()
    # drawn by the worker while the files below are written (bench.report.worker)
    pending = figs.start_all(draw, out, caching, lambda f: plots.FIGURES.get(f.kind).about(f.pair).absent, beside)

    files: list[Path] = []

    def write(name: str, text: str) -> Path:
        atomic_write_text(out / name, text)
        files.append(out / name)
        return out / name

    written_beside: list[Callable[[], Path]] = []

    def write_frame(name: str, frame: pd.DataFrame) -> None:
        """``frame`` as a CSV, formatted by the worker where there is one (waited for below)."""
        written_beside.append(beside.submit(_write_csv, frame, out / name))
        files.append(out / name)

    # the lines of runs unchanged since the last report are taken from its file (bench.report.longcsv)
    write_long_csv(long, out / "results_long.csv", {f.result["run_id"]: f.digest for f in results}, caching)
    files.append(out / "results_long.csv")
    long_files = [out / "results_long.csv"]
    longreuse.write(out / "results_long.parquet", long, results, caching)
    files.append(out / "results_long.parquet")
    write_frame("summary.csv", summary)
    write_frame("delta.csv", delta)
    if not verdict_rows.empty:
        write_frame("verdict.csv", verdict_rows)
    write("runs.csv", states.to_csv(index=False))
    if not sev.empty:
        write_frame("severity.csv", sev)
    if not selections.empty:
        write("selection.csv", selections.to_csv(index=False))
    if not probes.empty:
        write("probe_c.csv", probes.to_csv(index=False))

    markdown_of: dict[str, str] = {}  # each table's Markdown, also a part of report.md

    def table_files_of(t: Table | TextTable) -> list[Path]:
        markdown_of[t.key] = to_markdown(t)
        return [write(f"table_{t.key}.csv", to_csv(t)), write(f"table_{t.key}.md", markdown_of[t.key]),
                write(f"table_{t.key}.tex", to_latex(t, f"tab:{suite.name}-{t.key}"))]

    table_files: list[tuple[Table, list[Path]]] = [(t, table_files_of(t)) for t in tables]
    extra_files: list[tuple[TextTable, list[Path]]] = [(t, table_files_of(t)) for t in extra_tables]
    if not comparison.empty:
        write("expected.csv", comparison.to_csv(index=False))
        write("expected.md", expected_markdown(comparison))
        write("expected.tex", expected_latex(comparison, f"tab:{suite.name}-expected"))

    drawn, missing, figure_files = pending.finish()
    for job in written_beside:
        job()  # raises what formatting or writing the file raised
    files += figure_files
    skipped += missing
    infos = {f.key: plots.FIGURES.get(f.kind).about(f.pair) for f in draw}
    figures = [(key, " ".join(x for x in (infos[key].caption, note) if x), path) for key, path, note in drawn]

    done = int((states["state"] == "done").sum())
    head = [f"# {title}", "", *([note, ""] if note else []), f"{suite.description}".strip(), "", f"{done} of {len(states)} runs done."
            + (" Tables aggregate the finished runs only." if done < len(states) else ""), ""]
    if final.empty:
        head.append("No finished runs yet." + (" (Only tuning runs have finished.)" if not long.empty else "") + "\n")
    if limited:
        head.append(f"**{limited}**\n")
    if not final.empty and final["random_init"].astype(bool).any():
        head.append("**Some runs use a RANDOMLY INITIALISED backbone (not pretrained); their rows say so.**\n")
    tuning = " ".join(x for x in (tuning_note(selections), probe_c_note(probes)) if x)
    if tuning:
        head.append(tuning + "\n")
    box = [verdict.verdict_markdown(rows, e, comparison if e is ends else None) for e, rows in boxes] if not final.empty else []
    main = [markdown_of[t.key] for t in tables if not TABLES.get(t.key).detail]
    detail = [markdown_of[t.key] for t in tables if TABLES.get(t.key).detail] + [markdown_of[t.key] for t in extra_tables]
    legend = variant_legend(results)
    tail = [expected_markdown(comparison), _variants_markdown(legend), _not_done_markdown(states), samples_markdown(out),
            "\n".join(f"_{x}_" for x in skipped)]
    console = "\n".join([*head, *box, *main, *(x for x in tail if x)])
    markdown = "\n".join([*head, *box, *main, *detail, *(x for x in tail if x)])
    write("report.md", markdown)
    contexts = [c for e, rows in boxes if (c := verdict.verdict_context(rows, e, comparison if e is ends else None, stem("verdict", e.pair, pairs)))]
    headline = _box_headline(contexts, len(every) > 1)
    summary = "\n".join([f"# {title}", "", *([note, ""] if note else []), f"{done} of {len(states)} runs done.", "",
                         *(headline + [""] if headline else []), *(x for x in (expected_markdown(comparison), _not_done_markdown(states)) if x)])
    page = html.render(
        title=title, description=suite.description, tables=[*table_files, *extra_files],
        verdicts=contexts,
        expected=html.expected_context(comparison, EXPECTED_CAPTION), figures=figures, skipped_figures=skipped, states=states,
        suite_files=suite_files(suite, suite_path), variants=legend, long=long, downloads=long_files, tuning=tuning,
        variants_intro=VARIANTS_INTRO, samples=samples_context(out),
    )
    write("report.html", page)
    _remove_stale(out, files)
    return Report(markdown, console, files, states, tables, extra_tables, verdict_rows, summary)
