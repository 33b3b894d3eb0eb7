"""The ``bench`` command: parses arguments, delegates, prints. No logic of its own.

Module-level imports stay light (argparse and our error types): each command imports what it
needs when it runs, so ``bench --help`` answers at once and ``bench status`` never loads torch.
Every command ends with one code of :class:`bench.errors.Exit`, listed in ``bench --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bench.errors import EXIT_HELP, Exit, LinkRefused, SuiteError

if TYPE_CHECKING:
    from rich.console import Console

    from bench.launch import SuiteSource
    from bench.report import Report

EXECUTORS = ("debug", "local", "slurm")  # bench.launch.LAUNCHERS (a test keeps the two equal); named here so --help needs no import
MAX_RUNS_HELP = "10,000"  # bench.suite.MAX_RUNS (a test keeps the two equal)
INTERRUPTED = "interrupted: rerun the same command to resume"


def _specs(args: argparse.Namespace, only: bool = True):
    """The suite and its runs; with model selection, the final runs of groups already decided.
    ``--only`` chooses among them (``only=False``: every run, e.g. for the suite's own report);
    a filter that chooses no run is a usage error naming the values each key has."""
    if args.max_runs is not None:
        if args.max_runs < 1:
            raise SuiteError(f"--max-runs {args.max_runs}: must be at least 1")
        # later expansions (the launcher's next stage, local subprocesses, a Slurm selection job)
        # read the limit from the environment they inherit
        os.environ["BENCH_MAX_RUNS"] = str(args.max_runs)
    from bench.suite import expand, load_suite, max_runs_default, only_miss, parse_only, select_only, with_sweeps

    limit = args.max_runs if args.max_runs is not None else max_runs_default()
    sweeps = getattr(args, "sweep", None) or []
    suite = with_sweeps(load_suite(args.suite), sweeps)  # the -m axes are the suite's from here on (validate shows them)
    specs = expand(suite, args.suite, args.override, args.data_root, getattr(args, "results", None), limit, sweeps)
    chosen = parse_only(args.only) if only else ()
    selected = select_only(specs, chosen)
    if chosen and not selected:
        raise SuiteError(only_miss(specs, chosen))
    return suite, selected


def _source(args: argparse.Namespace) -> "SuiteSource":
    from bench.launch import SuiteSource
    from bench.suite import parse_only

    # absolute paths: a Slurm selection job expands the suite again from wherever it runs
    data_root = str(Path(args.data_root).expanduser().resolve()) if args.data_root else None
    return SuiteSource(str(Path(args.suite).resolve()), tuple(args.override), data_root, parse_only(args.only), tuple(getattr(args, "sweep", None) or ()))


def _data_problems(specs, console: "Console") -> bool:
    """Print the data check; True when something a run needs is missing."""
    from bench.datacheck import check_specs, summarise

    groups = check_specs(specs)
    for line in summarise(groups):
        console.print(line, markup=False, soft_wrap=True)
    return any(g.error is not None for g in groups)


def _weights_problems(specs, console: "Console") -> bool:
    """Print what keeps pretrained weights from loading here; True when a run could not start."""
    from bench.weights import weights_problems

    problems = weights_problems(specs)
    for line in problems:
        console.print(line, style="red", markup=False, soft_wrap=True)
    return bool(problems)


def _suite_specs(args: argparse.Namespace, specs):
    """Every run of the suite, whatever ``--only`` chose: what the suite's own report covers, so a
    filtered `bench run` never rewrites it from a subset."""
    return _specs(args, only=False)[1] if args.only else specs


def _build_report(suite, specs, args: argparse.Namespace, subset: bool = False) -> "Report":
    """The suite's report in reports/<suite>/ from ``specs`` (every run of the suite), or with
    ``subset`` the ``--only`` runs' report in its own folder reports/<suite>--only-<slug>/."""
    from bench.report import build_report
    from bench.suite import only_folder, parse_only

    cache = False if getattr(args, "no_cache", False) else None  # None: $BENCH_REPORT_CACHE decides (default on)
    if not (subset and args.only):
        return build_report(suite, specs, args.results, args.reports, args.suite, cache=cache, worker=getattr(args, "report_worker", False))
    total = len(_specs(args, only=False)[1])
    folder = only_folder(suite.name, parse_only(args.only))
    note = (f"Subset report: only the runs with {args.only} ({len(specs)} of the suite's {total} runs), in {args.reports / folder}/; "
            f"the suite's report, {args.reports / suite.name}/, is left as it is.")
    return build_report(suite, specs, args.results, args.reports, args.suite, folder=folder, note=note, cache=cache,
                        worker=getattr(args, "report_worker", False))


def _display(folder: Path) -> str:
    return str(folder) if folder.is_absolute() or str(folder).startswith(".") else f"./{folder}"


def _checkout_results(suite_path: Path, names: list[str], root: Path) -> Path | None:
    """The results folder of the checkout the suite file lives in, when it holds this suite's
    results and is not ``root``: walks up from the suite file to the checkout's root (.git)."""
    here = root.resolve()
    for folder in [Path(suite_path).resolve().parent, *Path(suite_path).resolve().parent.parents]:
        candidate = folder / "results"
        if candidate.resolve() != here and any((candidate / n).is_dir() for n in names):
            return candidate
        if (folder / ".git").exists():
            break
    return None


def _nothing_found(args: argparse.Namespace, specs) -> str | None:
    """When no run of ``specs`` has a result in --results: one line naming the folder read (and,
    if the suite's checkout has its results elsewhere, where), so '0 of 6 runs done' is never
    read as 'my runs are lost'. None when something was found."""
    from bench.store import RunDir

    root = Path(args.results)
    if any(RunDir.of(root, suite, run_id).result_file.is_file() for suite, run_id in _stored_runs(root, specs)):
        return None
    names = list(dict.fromkeys(s.suite for s in specs)) or [args.suite.stem]
    elsewhere = _checkout_results(args.suite, names, root)
    if elsewhere is not None:
        return (f"no results under {_display(root)}; the suite's checkout has them in {elsewhere}: "
                f"pass --results {elsewhere}")
    return "no finished runs in " + ", ".join(str((root / n).resolve()) for n in names)


def _stored_runs(root: Path, specs) -> list[tuple[str, str]]:
    """(suite, run id) of the runs of ``specs`` that have a folder under ``root``: one listing per
    suite folder instead of a stat per run (a 100,000-run suite mostly has none yet)."""
    out = []
    for suite in dict.fromkeys(s.suite for s in specs):
        try:
            present = set(os.listdir(root / suite))
        except OSError:
            continue
        out += [(suite, s.run_id) for s in specs if s.suite == suite and s.run_id in present]
    return out


def _say_nothing_found(args: argparse.Namespace, specs, console: "Console") -> None:
    line = _nothing_found(args, specs)
    if line:
        console.print(line, style="yellow", markup=False, soft_wrap=True)


def _print_report(report: "Report", console: "Console", full: bool = False) -> None:
    """The verdict box's headline (and expectations, unfinished runs) and where the report is;
    ``full`` (``--full``): the main tables too, as before."""
    console.print(report.console if full else report.summary, markup=False, highlight=False, soft_wrap=True)
    folder = report.files[0].parent if report.files else None
    page = f"{folder}/report.html" if folder is not None else "report.html"
    console.print(f"wrote {len(report.files)} files to {folder}/; the report: {page} (open it in a browser)"
                  + ("" if full else "; --full prints its tables here"), markup=False, soft_wrap=True)


def _report(suite, specs, args: argparse.Namespace, console: "Console", subset: bool = False) -> bool:
    """Build, write and print the report; False (said in one line) when a disk refused a write:
    the runs' results are untouched, and `bench report` writes the report once there is room."""
    from bench.io import disk_message

    try:
        report = _build_report(suite, specs, args, subset)
    except OSError as exc:
        why = disk_message(exc)
        if why is None:
            raise
        console.print(f"report not written: {why}; free space and rerun `bench report {args.suite}` (the results are kept)",
                      style="red", markup=False, soft_wrap=True)
        return False
    _say_nothing_found(args, specs, console)
    _print_report(report, console, getattr(args, "full", False))
    return True


def cmd_validate(args: argparse.Namespace, console: "Console") -> int:
    from bench.sequential import schedule_line, scheduled, seed_count
    from bench.summary import summary_lines

    suite, specs = _specs(args)
    tune = [s for s in specs if s.stage == "tune"]
    finals = math.prod(len(v) for v in suite.matrix.values()) * seed_count(suite, getattr(args, "results", None)) if suite.select else 0
    console.print(f"{args.suite}: ok — suite {suite.name!r}, {len(specs)} runs"
                  + (f" now, then {finals} final runs at each method's chosen settings" if finals else ""), markup=False)
    if tune:
        sel = suite.select
        groups = len({json.loads(s.record)["group"] for s in tune})
        console.print(f"  model selection: {len(tune)} tuning runs ({groups} groups × the grid {sel.tune if sel else 'of the included suites'}), "
                      f"scored on the held-out split only; each group's final runs follow once its tuning runs end", markup=False)
    for own in scheduled(suite):  # each suite with a schedule, included ones named
        assert own.seeds is not None
        console.print(f"  seeds{'' if own is suite else ' (' + own.name + ')'}: {schedule_line(own.seeds)}", markup=False)
    lines = summary_lines(suite, specs) + claim_coverage(suite, specs)
    if args.list:
        from bench.runner import describe  # imports rich's progress machinery: only for the list

        lines += ["runs:", *(f"  {describe(spec)} profile={spec.profile}" for spec in specs)]
    else:
        lines.append(f"(`bench validate {args.suite} --list` prints each of the {len(specs)} runs)")
    console.print("\n".join(lines), markup=False, soft_wrap=True)
    return Exit.USAGE if _wrong_checkpoint_files(specs, console) else Exit.OK


def _wrong_checkpoint_files(specs, console: "Console") -> bool:
    """Name every backbone.checkpoint that exists here but is not a checkpoint (a missing one may
    be on the compute nodes only: `bench run` checks that). True when there was one."""
    from bench.weights import checkpoint_file_problem

    paths = dict.fromkeys(s.config.backbone.checkpoint for s in specs if s.config.backbone.weights == "pretrained" and s.config.backbone.checkpoint)
    problems = [why for p in paths if Path(p).expanduser().exists() and (why := checkpoint_file_problem(p))]
    for why in problems:
        console.print(why, style="red", markup=False, soft_wrap=True)
    return bool(problems)


def claim_coverage(suite, specs) -> list[str]:
    """Per expected figure: the datasets it is judged on and each one's shift splits, so a claim
    about OOD that a source without shift sets would silently drop out of is visible before running."""
    lines = []
    task = {"top1": "classification", "top5": "classification"}
    for e in suite.expected:
        runs = [s for s in specs if s.config.task == task.get(e.metric, "segmentation") and (e.dataset is None or s.config.data.name == e.dataset)]
        shifts: dict[str, int] = {}
        for s in runs:
            n = sum(1 for protocol in s.final_config.evaluation_splits().values() if protocol == "shift")
            shifts[s.config.data.name] = max(shifts.get(s.config.data.name, 0), n)
        sign = "+" if e.value >= 0 else ""
        what = f"{'Δ ' + e.method + ' − ' + e.baseline if e.quantity == 'delta' else e.method} {e.split} {e.metric} = {sign}{e.value} ± {e.tolerance}"
        scope = f"mean over {len(shifts)} datasets" if e.across == "mean" else f"each of {len(shifts)} datasets"
        lines.append(f"  claim: {what} ({scope}): " + ", ".join(f"{d} ({n} shift splits)" for d, n in shifts.items()))
        if e.split == "ood_avg":
            lines += [f"    !! {d} has no shift split: it cannot enter the OOD average the claim is judged on" for d, n in shifts.items() if not n]
    return lines


def _print_table(console: "Console", table: Any) -> None:
    """A status table: rich's, or (thousands of runs) plain aligned text, printed as it is."""
    if isinstance(table, str):
        console.print(table, markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(table)


def cmd_dry_run(args: argparse.Namespace, suite, specs, console: "Console") -> int:
    """What `run` would do: the summary (or, with --list, every run's state), then per profile the
    resources and, for Slurm, the sbatch script submitit would submit."""
    from bench.dataid import is_done
    from bench.launch import sbatch_preview, submitit_folder
    from bench.status import run_rows, status_table
    from bench.store import RunDir
    from bench.summary import summary_lines

    if args.list:
        _print_table(console, status_table(run_rows(specs, args.results)))
    else:
        console.print("\n".join(summary_lines(suite, specs)), markup=False, soft_wrap=True)
    stored = {(suite, run_id) for suite, run_id in _stored_runs(Path(args.results), specs)}  # a run without a folder has nothing done
    todo = [s for s in specs if args.force or (s.suite, s.run_id) not in stored or not is_done(RunDir.of(args.results, s.suite, s.run_id), s.config)]
    console.print(f"{len(specs)} runs, {len(specs) - len(todo)} done, {len(todo)} to run with --executor {args.executor}", markup=False)
    _say_nothing_found(args, specs, console)
    for name in dict.fromkeys(s.profile for s in todo):
        group = [s for s in todo if s.profile == name]
        console.print(f"\nprofile {name!r}: {len(group)} run(s), {suite.resource(name).model_dump()}", markup=False)
        if args.executor == "slurm":
            console.print(sbatch_preview(suite.name, name, suite.resource(name), len(group), submitit_folder(args.results, suite.name)), markup=False, soft_wrap=True)
    return Exit.OK


def _resume_lines(specs, results: Path) -> list[str]:
    """'resuming <run> from epoch 1, step 45 (its last checkpoint)' for each run a rerun continues."""
    from bench.runner import describe
    from bench.store import RunDir

    lines = []
    for spec in specs:
        run_dir = RunDir.of(results, spec.suite, spec.run_id)
        where = run_dir.read_status().get("checkpoint") if run_dir.checkpoint.is_file() else None
        if isinstance(where, dict):
            batch = f", batch {where['batch']}" if where.get("batch") else ""
            at = "its final weights: evaluation only" if where.get("complete") else f"epoch {where.get('epoch')}{batch}, step {where.get('step')}"
            lines.append(f"resuming {describe(spec)} from {at}")
    return lines


def cmd_run(args: argparse.Namespace, console: "Console") -> int:
    suite, specs = _specs(args)
    if args.dry_run:  # before the launcher's imports (submitit, rich's live view): a dry run needs none
        return cmd_dry_run(args, suite, specs, console)
    from bench.dataid import is_done
    from bench.launch import LaunchOptions, launch_suite
    from bench.store import RunDir, unwritable
    for name, folder in (("results", args.results), ("reports", args.reports)):
        why = unwritable(folder)  # refused now, not after hours of training
        if why:
            console.print(f"{name} folder {why}: nothing was launched (pass --{name} DIR to write elsewhere)", style="red", markup=False, soft_wrap=True)
            return Exit.USAGE
    for spec in specs:  # a linked run folder is refused before anything runs, with or without --force
        RunDir.of(args.results, spec.suite, spec.run_id).refuse_links()
    todo = [s for s in specs if args.force or not is_done(RunDir.of(args.results, s.suite, s.run_id), s.config)]
    if not args.skip_data_check and todo:
        if _data_problems(todo, console):
            console.print("data missing: nothing was launched (fix the layout above, or pass --skip-data-check "
                          "if only the compute nodes can see the data root)", style="red", markup=False)
            return Exit.MISSING_INPUT
        if _weights_problems(todo, console):
            console.print("weights missing: nothing was launched (or pass --skip-data-check if only the compute nodes can reach them)",
                          style="red", markup=False)
            return Exit.MISSING_INPUT
    console.print(f"suite {suite.name!r}: {len(specs)} runs → {args.results / suite.name} (executor {args.executor})", markup=False)
    for line in _resume_lines([] if args.force else todo, args.results):
        console.print(line, markup=False, soft_wrap=True)
    options = LaunchOptions(force=args.force, parallel=args.parallel, wait=args.wait, keep_checkpoints=args.keep_checkpoints)
    outcomes = launch_suite(args.executor, _source(args), args.results, options, console)
    suite, specs = _specs(args)  # with model selection, the final runs decided meanwhile
    failed = [o for o in outcomes if o.state == "failed"]
    held = [o for o in outcomes if o.state == "held"]
    reported = True
    kept = args.reports / suite.name / "manifest.json"  # bench.report.MANIFEST: a report is there
    if args.only and all(o.state == "skipped" for o in outcomes) and kept.is_file():
        console.print(f"--only {args.only}: the {len(specs)} runs chosen are done and nothing ran; the suite's report "
                      f"{args.reports / suite.name}/ is left as it is (`bench report {args.suite}` rebuilds it)", markup=False, soft_wrap=True)
    elif all(is_done(RunDir.of(args.results, s.suite, s.run_id), s.config) for s in specs) or failed:
        if args.only:
            console.print(f"--only {args.only}: the report covers every finished run of the suite, not only these "
                          f"(`bench report {args.suite} --only {args.only}` writes the subset's own)", markup=False, soft_wrap=True)
        reported = _report(suite, _suite_specs(args, specs), args, console)
    elif any(o.state == "submitted" for o in outcomes):
        console.print(f"submitted; follow with `bench status {args.suite}`, report with `bench report {args.suite}`", markup=False)
    elif not held:
        console.print(f"not every run is done; `bench status {args.suite}` says why, rerun the same command to continue", markup=False)
    if held:  # each was named on its own line above; nothing was launched for them
        console.print(f"{len(held)} run(s) not run here: another launcher holds them (or their lock.json is damaged), said above; "
                      f"`bench status {args.suite}` follows them, rerun the same command once they end", markup=False, soft_wrap=True)
    if failed:
        console.print(f"{len(failed)} run(s) failed; rerun the same command to retry them (done runs are skipped)", style="red", markup=False)
    if any(o.disk for o in failed) or not reported:
        return Exit.NO_SPACE
    return Exit.RUNS_FAILED if failed else Exit.OK


def cmd_report(args: argparse.Namespace, console: "Console") -> int:
    """The suite's report in reports/<suite>/; with --only, the subset's in reports/<suite>--only-<slug>/."""
    suite, specs = _specs(args)
    return Exit.OK if _report(suite, specs, args, console, subset=True) else Exit.NO_SPACE


def cmd_plan(args: argparse.Namespace, console: "Console") -> int:
    from bench.plan import plan, plan_lines

    suite, specs = _specs(args)
    rows, sentences = plan(suite, specs, args.results)
    console.print("\n".join(plan_lines(rows, sentences)), markup=False, soft_wrap=True)
    _say_nothing_found(args, specs, console)
    return Exit.OK


def cmd_samples(args: argparse.Namespace, console: "Console") -> int:
    """reports/<suite>/samples.{parquet,csv,json} (+ samples_sheet.png) and the per-image table."""
    from bench.report.samples import sample_table, table_lines, write_samples

    suite, specs = _specs(args)
    samples = sample_table(specs, args.results, args.split)
    rows = samples.disagreements() if args.disagree else samples.table
    out = Path(args.reports) / suite.name
    files = write_samples(samples, out)
    what = (f"{len(rows)} of {len(samples.table)} images where the methods differ (majority over seeds), largest disagreement first"
            if args.disagree else f"{len(rows)} images")
    console.print(f"# {samples.split}: {what}; +/- = right/wrong per seed", markup=False, soft_wrap=True)
    console.print("\n".join(table_lines(samples, rows)), markup=False, highlight=False, soft_wrap=True)
    if samples.label_why:
        console.print(f"# labels unknown: {samples.label_why}", markup=False, soft_wrap=True)
    for run_id, why in samples.skipped.items():
        console.print(f"# run {run_id} left out: {why}", markup=False, soft_wrap=True)
    console.print(f"wrote {', '.join(f.name for f in files)} to {out}/", markup=False, soft_wrap=True)
    return Exit.OK


def cmd_reproduce(args: argparse.Namespace, console: "Console") -> int:
    from bench.dataid import is_done
    from bench.launch import LaunchOptions, launch_suite
    from bench.reproduce import explain, launch_plan, progress_line, readiness
    from bench.store import RunDir

    suite, specs = _specs(args)
    executor = args.executor if args.executor != "auto" else ("slurm" if shutil.which("sbatch") else "local")
    plan = launch_plan(specs, args.results)
    todo, queued = plan.todo, plan.queued
    if not plan.squeue_answered:
        console.print(f"squeue did not answer: the {len(queued)} unfinished run(s) submitted before are not resubmitted "
                      "(`bench status` shows them; `bench run --executor slurm` submits regardless)", style="yellow", markup=False)
    if todo:
        ready = readiness(suite, todo, executor, args.allow_cpu)
        if ready.why_not:
            console.print(explain(suite, args.suite, specs, ready), markup=False, soft_wrap=True)
            if len(todo) < len(specs):
                _report(suite, _suite_specs(args, specs), args, console)
            if sys.stdin.isatty() and Path(DEMO_SUITE).is_file():
                if console.input("Run the demo now (a few minutes on a 2-core CPU)? [y/N] ").strip().lower() in ("y", "yes"):
                    return main(["run", DEMO_SUITE])
            return Exit.MISSING_INPUT if ready.data_missing else Exit.USAGE
        if _weights_problems(todo, console):
            return Exit.MISSING_INPUT
        console.print(f"{args.suite}: {progress_line(specs, args.results)}; {len(queued)} still queued on Slurm; "
                      f"launching {len(todo)} with --executor {executor} ({ready.gpu or 'CPU, --allow-cpu'})", markup=False)
    options = LaunchOptions(parallel=args.parallel, wait=args.wait, keep_checkpoints=args.keep_checkpoints)
    outcomes = launch_suite(executor, _source(args), args.results, options, console, first=todo) if todo else []
    suite, specs = _specs(args)  # with model selection, the final runs decided meanwhile
    if not _report(suite, _suite_specs(args, specs), args, console):
        return Exit.NO_SPACE
    if not all(is_done(RunDir.of(args.results, s.suite, s.run_id), s.config) for s in specs):
        console.print(f"not all runs are done ({progress_line(specs, args.results)}); the tables show the finished ones. "
                      "Rerun the same command when the jobs end to complete them.", markup=False)
    return Exit.RUNS_FAILED if any(o.state == "failed" for o in outcomes) else Exit.OK


def cmd_status(args: argparse.Namespace, console: "Console") -> int:
    """Counts per state, then the runs (compact unless --wide; --json for scripts). Exit 1 when a
    run failed or is corrupt, so `bench status && …` stops on failures."""
    from bench.launch import has_selection, scheduler_states
    from bench.select import read_selection
    from bench.sequential import round_status
    from bench.dataid import STALE
    from bench.status import FAILED_STATES, run_rows, state_counts, status_table, summary_line
    from bench.store import RunDir

    suite, specs = _specs(args)
    rows = run_rows(specs, args.results)  # each run's files read once; the scheduler's view joins by job id
    scheduler = scheduler_states([row["job"] for row in rows if row["job"]])
    for row in rows:
        row["scheduler"] = scheduler.get(row["job"], "")
    plan = read_selection(args.results / suite.name) if has_selection(suite) else {}
    rounds = round_status(suite, args.results)
    failed = any(row["state"] in FAILED_STATES for row in rows)
    if args.json:
        print(json.dumps({"suite": suite.name, "counts": state_counts(rows), "runs": rows, "selection": plan or None,
                          "seeds": rounds or None}, indent=2, default=str))
        return Exit.RUNS_FAILED if failed else Exit.OK
    console.print(f"{args.suite}: {summary_line(rows)}", markup=False)
    _say_nothing_found(args, specs, console)
    _print_table(console, status_table(rows, wide=args.wide))
    for spec, row in zip(specs, rows):  # the table cuts errors short; a damaged file is named in full
        problem = RunDir.of(args.results, spec.suite, spec.run_id).corruption() if row["state"] == "corrupt" else None
        if problem:
            console.print(f"run {spec.run_id} is corrupt: {problem} (`bench run` moves the file aside and resumes the run)",
                          style="red", markup=False, soft_wrap=True)
        if row["state"] == STALE:
            console.print(f"run {spec.run_id} is stale-data: {row['error']} (`bench run` moves its outputs aside and computes it again)",
                          style="red", markup=False, soft_wrap=True)
    unchecked = [row for row in rows if row["data"].startswith("data could not be checked")]
    if unchecked:  # a data root only compute nodes see: the runs stay done, unverified here
        console.print(f"{len(unchecked)} done run(s): {unchecked[0]['data']}; they count as done (`bench status` on a node that "
                      "sees the data root checks them)", markup=False, soft_wrap=True)
    if has_selection(suite):
        decided = [g for g in plan.get("groups", []) if g.get("chosen") is not None]
        console.print(f"model selection: {len(decided)} group(s) decided on the held-out split"
                      + "".join(f"\n  {g['group']['method']} {g['group']['dataset']}: {g['chosen']} (held-out {plan['metric']} {g['chosen_mean']:.4f})" for g in decided)
                      + ("\n  final runs of undecided groups appear here once their tuning runs end" if not plan or len(decided) < len(plan.get("groups", [])) else ""), markup=False)
    for entry in rounds:
        console.print(f"seeds{'' if entry['suite'] == suite.name else ' (' + entry['suite'] + ')'}: {entry['line']}", markup=False, soft_wrap=True)
    return Exit.RUNS_FAILED if failed else Exit.OK


def cmd_cancel(args: argparse.Namespace, console: "Console") -> int:
    from bench.launch import cancel

    suite, specs = _specs(args)
    cancelled = cancel(specs, args.results)
    console.print(f"cancelled {len(cancelled)} Slurm job(s): {' '.join(cancelled)}", markup=False)
    return Exit.OK


def cmd_data_check(args: argparse.Namespace, console: "Console") -> int:
    suite, specs = _specs(args)
    missing = _data_problems(specs, console)
    console.print(f"{args.suite}: {'some datasets are missing' if missing else 'every dataset split the suite needs is in place'}", markup=False)
    return Exit.MISSING_INPUT if missing else Exit.OK


def cmd_data_list(args: argparse.Namespace, console: "Console") -> int:
    from rich.table import Table

    from bench.data import DATASETS

    table = Table("dataset", "task", "classes", "ignore", "reduce_zero_label", "splits", "shift splits", "description")
    for name in DATASETS.names():
        e = DATASETS.get(name)
        families = ", ".join(dict.fromkeys("/".join(s.split("/")[:1] + ["*", "*"]) if s.count("/") == 2 else s for s in e.splits))
        table.add_row(name, e.task, str(e.num_classes) if e.classes_from_data is None else "from the data", str(e.ignore_index), str(e.reduce_zero_label), families, str(len(e.shift_splits)), e.description)
    console.print(table)
    return Exit.OK


DEMO_SUITE = "suites/demo.yaml"
_KINDS = ("methods", "backbones", "datasets", "evaluations", "executors")

COMMANDS = {
    "run": (cmd_run, "run a suite (skips finished runs, resumes interrupted ones), then report"),
    "report": (cmd_report, "aggregate a suite's finished runs into tables and plots"),
    "validate": (cmd_validate, "check a suite file and summarise its runs (--list: each run) without running anything"),
    "reproduce": (cmd_reproduce, "run a paper-grid suite when data and GPUs are there, then render tables with expected vs actual"),
    "status": (cmd_status, "counts per state and each run's state and progress (--json for scripts; exit 1 if a run failed)"),
    "cancel": (cmd_cancel, "cancel a suite's queued or running Slurm jobs"),
    "samples": (cmd_samples, "per-image outputs of one split (label, each method's right/wrong, p_true, prediction per seed); --disagree: where the methods differ"),
    "plan": (cmd_plan, "from finished (pilot) runs: per endpoint the detectable effect at 3/5/10/20 seeds, and the seeds the primary claim needs"),
}


def _suite_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("suite", type=Path, help="suite YAML file")
    s.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. train.lr=1e-4, or methods.grpo_rm.epsilon=0.3 for one method's runs only (repeatable)")
    s.add_argument("-m", "--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="a matrix axis, e.g. train.lr=1e-4,3e-4 or seed=0,1,2; replaces the suite's axis of that key (repeatable)")
    s.add_argument("--only", default=None, metavar="KEY=VALUE,...", help="a subset of the runs, e.g. method=grpo_rm,seed=0 (any dotted config path)")
    s.add_argument("--data-root", default=None, help="datasets folder (wins over the suite's data_root and $BENCH_DATA_ROOT)")
    s.add_argument("--limit", type=_at_least_one, default=None, metavar="N",
                   help="smoke test: train on at most N images and score at most N per split (seeded, class-stratified); "
                        "shorthand for -o data.limit.train=N -o data.limit.eval=N, so limited runs have their own run ids")
    s.add_argument("--max-runs", type=int, default=None, metavar="N",
                   help=f"refuse a suite that expands to more runs than this (default $BENCH_MAX_RUNS, else {MAX_RUNS_HELP})")


def _at_least_one(text: str) -> int:
    """--parallel: 0 would start nothing and wait forever."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1 (runs at once)")
    return value


def _registries() -> dict[str, Callable[[], list[tuple[str, str]]]]:
    """What `bench ls` lists: (name, one-line description) per registered component."""
    from bench.data import DATASETS
    from bench.protocols import EVALUATIONS
    from bench.methods import METHODS
    from bench.models import BACKBONES

    def doc(obj: Any) -> str:
        return ((obj.__doc__ or "").strip().splitlines() or [""])[0]

    return {
        "methods": lambda: [(n, doc(sys.modules[METHODS.get(n).__module__])) for n in METHODS.names()],
        "backbones": lambda: [(n, BACKBONES.get(n).display) for n in BACKBONES.names()]
        + [("timm:<model>[.<tag>]", "any timm ViT, Eva, ConvNeXt or ResNet (docs/backbones.md)")],
        "datasets": lambda: [(n, DATASETS.get(n).description) for n in DATASETS.names()],
        "evaluations": lambda: [(n, doc(EVALUATIONS.get(n))) for n in EVALUATIONS.names()],
        "executors": lambda: [(n, {"debug": "in this process, one run after another", "local": "subprocesses (submitit LocalExecutor)",
                                   "slurm": "Slurm job arrays (submitit)"}.get(n, "")) for n in EXECUTORS],
    }


def cmd_ls(args: argparse.Namespace, console: "Console") -> int:
    from bench.plugins import load

    load(args.plugin)  # what a suite's plugins: key would add (installed entry points are loaded already)
    kinds = _registries()
    for kind in [args.kind] if args.kind else list(kinds):
        console.print(f"{kind}:", markup=False)
        for name, text in kinds[kind]():
            console.print(f"  {name:<28} {text}", markup=False, soft_wrap=True)
    return Exit.OK


def cmd_config(args: argparse.Namespace, console: "Console") -> int:
    """The resolved config of a run (default: the first), as YAML: what would run, defaults filled."""
    import yaml

    from bench.config import config_differences, shown_config, unused_sections
    from bench.runner import describe

    suite, specs = _specs(args)
    chosen = [s for s in specs if args.run is None or s.run_id.startswith(args.run)]
    if not chosen:
        console.print(f"{args.suite}: no run id starts with {args.run!r} (`bench validate {args.suite} --list` lists them)", style="red", markup=False)
        return Exit.USAGE
    spec = chosen[0]
    cfg = spec.config
    console.print(f"# run {spec.run_id} ({describe(spec)}), stage {spec.stage}, profile {spec.profile}", markup=False)
    left_out = "; ".join(f"{section} ({why})" for section, why in unused_sections(cfg).items())
    if args.diff:
        console.print("# only the values that differ from the defaults (`bench config` without --diff: all)"
                      + (f"; not read by this run: {left_out}" if left_out else ""), markup=False, soft_wrap=True)
        console.print(yaml.safe_dump(config_differences(cfg), sort_keys=True), markup=False, soft_wrap=True)
        return Exit.OK
    if left_out:
        console.print(f"# not shown, never read by this run: {left_out}", markup=False, soft_wrap=True)
    console.print(yaml.safe_dump(shown_config(cfg), sort_keys=True), markup=False, soft_wrap=True)
    return Exit.OK


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("grpo-rm-bench")
    except PackageNotFoundError:
        return "unknown (not installed)"


def exit_code_help() -> str:
    return "exit codes:\n" + "\n".join(f"  {int(code):<4} {text}" for code, text in EXIT_HELP.items())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench", description="GRPO-RM vs SFT benchmark harness", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=exit_code_help() + "\n\nshell completion (bash/zsh): eval \"$(register-python-argcomplete bench)\"",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list what exists: methods, backbones, datasets, evaluations, executors")
    ls.add_argument("kind", nargs="?", choices=list(_KINDS), help="one kind (default: all)")
    ls.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import this plugin module first (as a suite's plugins: key does; docs/extending.md)")
    ls.set_defaults(fn=cmd_ls)
    config = sub.add_parser("config", help="print the resolved config of a run before running it")
    _suite_arguments(config)
    config.add_argument("--run", default=None, metavar="ID", help="run id or its prefix (default: the first run)")
    config.add_argument("--diff", action="store_true", help="only the values that differ from the run-config defaults")
    config.add_argument("--results", type=Path, default=Path("results"), help="result store root (selection stages read it)")
    config.set_defaults(fn=cmd_config)
    data = sub.add_parser("data", help="datasets: list the registry, check a suite's data on disk")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="check every dataset split a suite needs (exit 3 if any is missing)")
    _suite_arguments(check)
    check.set_defaults(fn=cmd_data_check)
    data_sub.add_parser("list", help="registered datasets and their protocol facts").set_defaults(fn=cmd_data_list)
    for name, (fn, help_text) in COMMANDS.items():
        s = sub.add_parser(name, help=help_text)
        _suite_arguments(s)
        s.add_argument("--results", type=Path, default=Path("results"), help="result store root (default: results/)")
        s.add_argument("--reports", type=Path, default=Path("reports"), help="report output root (default: reports/)")
        if name == "reproduce":
            s.add_argument("--executor", choices=["auto", *EXECUTORS], default="auto", help="auto: slurm when sbatch is on PATH, else local")
            s.add_argument("--allow-cpu", action="store_true", help="launch even without a GPU (the paper grid then takes days)")
        if name in ("run", "reproduce"):
            s.add_argument("--parallel", type=_at_least_one, default=1, help="local executor: runs at once (≥ 1)")
            s.add_argument("--wait", action="store_true", help="slurm executor: block until all jobs end")
            s.add_argument("--keep-checkpoints", action="store_true",
                           help="finished runs keep prev.pt as well as last.pt (default: only last.pt, the final weights "
                                "re-evaluation needs); not part of any run's identity")
        if name in ("run", "report", "reproduce"):
            s.add_argument("--full", action="store_true", help="print the report's main tables too, not only its headline and path")
            s.add_argument("--no-cache", action="store_true",
                           help="compute every Δ estimate afresh instead of reusing those remembered from earlier reports of the same runs")
        if name == "run":
            s.add_argument("--executor", choices=EXECUTORS, default="debug",
                           help="debug: in this process (default; runs share in-memory caches); local: subprocesses; slurm: job arrays")
            s.add_argument("--dry-run", action="store_true", help="summarise the runs, what is done, resources and sbatch scripts; submit nothing")
            s.add_argument("--force", action="store_true", help="rerun runs that are already done")
            s.add_argument("--skip-data-check", action="store_true",
                           help="launch without checking data and pretrained weights on this machine first (only compute nodes see them)")
        if name in ("run", "validate"):
            s.add_argument("--list", action="store_true", help="one line per run instead of the summary")
        if name == "samples":
            s.add_argument("--split", default=None, help="evaluation split (default: test, else the first split every run has)")
            s.add_argument("--disagree", action="store_true", help="only the images where the methods differ, largest disagreement first")
        if name == "status":
            s.add_argument("--json", action="store_true", help="counts and runs as JSON")
            s.add_argument("--wide", action="store_true", help="every column, including empty ones")
        s.set_defaults(fn=fn)
    _complete_suite_files(p)
    return p


def _complete_suite_files(p: argparse.ArgumentParser) -> None:
    """Shell completion offers YAML files for the suite argument (argcomplete reads ``.completer``)."""
    def yaml_files(prefix: str, **_: Any) -> list[str]:
        folder, _, start = prefix.rpartition("/")
        base = Path(folder or ".")
        try:
            entries = sorted(base.iterdir())
        except OSError:
            return []
        out = [str(Path(folder) / e.name) if folder else e.name for e in entries if e.name.startswith(start) and not e.name.startswith(".")]
        return [f + "/" if Path(f).is_dir() else f for f in out if Path(f).is_dir() or f.endswith((".yaml", ".yml"))]

    stack = [p]
    while stack:
        parser_ = stack.pop()
        for action in parser_._actions:
            if action.dest == "suite":
                action.completer = yaml_files  # type: ignore[attr-defined]
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. A reader that closes the pipe early (``bench status --json
    | head -1``) ends it quietly with Exit.BROKEN_PIPE, as Python's docs recommend for SIGPIPE:
    stdout is pointed at /dev/null so that the interpreter's last flush cannot fail again, and no
    traceback is printed (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: buffered output meets a closed pipe here, not at exit
        return code
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no file descriptor behind sys.stdout (captured in tests)
            pass
        return Exit.BROKEN_PIPE


def _main(argv: list[str] | None = None) -> int:
    p = parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions: answer and exit
        import argcomplete

        argcomplete.autocomplete(p)
    args = p.parse_args(argv)
    # a report's worker process (bench.report.worker) only for `bench` run as a command: a spawned
    # process imports the caller's main module, which a script calling main([...]) without a
    # __main__ guard would run again there
    args.report_worker = argv is None
    if getattr(args, "limit", None) is not None:  # --limit N: overrides, so launched subprocesses and jobs see them too
        args.override = [*args.override, f"data.limit.train={args.limit}", f"data.limit.eval={args.limit}"]
    from rich.console import Console

    # logs and pipes have no width: without one, rich truncates tables to 80 columns. highlight=False:
    # rich's highlighter is quadratic in a line's length and every message may carry user text
    # (a 1 MB description kept `bench report` from returning); markup=False is passed per print
    console = Console(highlight=False) if sys.stdout.isatty() else Console(width=200, highlight=False)
    saved = os.environ.get("BENCH_MAX_RUNS")
    from bench.data.fingerprint import memoised
    from bench.ledger import ledger_scope

    from bench.plugins import PluginError, load_entry_points

    try:
        load_entry_points()  # installed extensions (bench.plugins.ENTRY_POINT_GROUP) for every command
        # each split's data fingerprint is computed once per command (bench.dataid), and finished
        # runs whose files are unchanged since they were verified are not verified again (bench.ledger)
        with memoised(), ledger_scope():
            return int(args.fn(args, console))
    except (SuiteError, PluginError) as exc:
        console.print(str(exc), markup=False, highlight=False, style="red", soft_wrap=True)
        return Exit.USAGE
    except LinkRefused as exc:  # a run or report folder that is (or holds) a symbolic link: `<path>: <reason>`
        console.print(f"refused: {exc}", markup=False, style="red", soft_wrap=True)
        return Exit.USAGE
    except KeyboardInterrupt:  # runs record 'interrupted' themselves; the rerun resumes them
        console.print(INTERRUPTED, markup=False)
        return Exit.INTERRUPTED
    except BrokenPipeError:  # stdout's reader is gone: nothing more can be said there (main ends quietly)
        raise
    except OSError as exc:  # a full / read-only disk anywhere else: one line with the path, no traceback
        from bench.io import disk_message

        why = disk_message(exc)
        if why is None:
            raise
        console.print(f"{why}: free space and rerun the same command to resume (finished runs are kept)", style="red", markup=False, soft_wrap=True)
        return Exit.NO_SPACE
    finally:  # --max-runs reaches this command's own subprocesses and jobs, not the caller
        if saved is None:
            os.environ.pop("BENCH_MAX_RUNS", None)
        else:
            os.environ["BENCH_MAX_RUNS"] = saved


if __name__ == "__main__":
    sys.exit(main())
