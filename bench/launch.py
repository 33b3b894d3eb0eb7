"""Launchers: where a suite's runs execute. All of them call the same job callable.

- ``debug``: in this process, one after another (breakpoints work).
- ``local``: each run in its own subprocess through submitit's LocalExecutor, N at a time.
- ``slurm``: one submitit job array per resource profile; returns once submitted unless ``wait``.

The job callable :class:`RunTask` implements submitit's ``checkpoint()``: on a time-limit signal
or preemption it asks to be requeued as itself, and the requeued job resumes from the run's
``last.pt``. A plain ``scontrol requeue`` restarts the same pickled task with the same effect.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import submitit
from rich.console import Console
from rich.live import Live

from bench.config import RunConfig
from bench.dataid import is_done
from bench.io import DISK_WORDS
from bench.registry import Registry
from bench.runner import RunOutcome, run_local
from bench.select import drop_decided_weights
from bench.status import run_rows, status_renderable
from bench.store import RunDir, RunHeld, RunLock, held_message
from bench.suite import ResourceProfile, RunSpec, Suite



class RunTask:
    """A picklable job: train + evaluate one run into its run directory."""

    def __init__(self, config_json: str, suite: str, run_dir: str, stage: dict[str, Any] | None = None, keep_checkpoints: bool = False) -> None:
        self.config_json = config_json
        self.suite = suite
        self.run_dir = run_dir
        self.stage = stage or {}
        self.keep_checkpoints = keep_checkpoints  # bench run --keep-checkpoints: a finished run keeps prev.pt too

    @classmethod
    def of(cls, spec: RunSpec, results_root: Path, keep_checkpoints: bool = False) -> "RunTask":
        return cls(spec.config.model_dump_json(), spec.suite, str(RunDir.of(results_root, spec.suite, spec.run_id).path.resolve()), spec.stage_record,
                   keep_checkpoints)

    def __call__(self) -> dict[str, Any]:
        import torch

        from bench.job import run_job

        from bench.distributed import init_from_submitit

        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            torch.set_num_threads(int(cpus))
        try:
            env = submitit.JobEnvironment()
            job_id = env.job_id
            if env.num_tasks > 1:  # several processes for this run: data-parallel training
                init_from_submitit()
        except RuntimeError:  # not inside a submitit job (debug executor)
            job_id = None
        run_dir = RunDir(Path(self.run_dir))
        cfg = RunConfig.model_validate_json(self.config_json)
        if is_done(run_dir, cfg):  # a requeued copy of a job that finished before it was killed (on the data here now)
            result = run_dir.read_result()
        else:
            try:
                # a task pickled before the option existed has no attribute: the default
                keep = getattr(self, "keep_checkpoints", False)
                result = run_job(cfg, run_dir, self.suite, stage=self.stage, keep_checkpoints=keep, executor_job_id=job_id) or run_dir.read_result()  # ranks > 0: rank 0's
            except RunHeld as held:  # another live job trains this run: this one leaves it alone
                return {"run_id": run_dir.path.name, "held_by": held.holder, "message": str(held)}
        return {"run_id": result["run_id"], "metrics": result["metrics"]}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue as the same task: the run resumes from its last checkpoint."""
        return submitit.helpers.DelayedSubmission(RunTask(self.config_json, self.suite, self.run_dir, self.stage, getattr(self, "keep_checkpoints", False)))


def submitit_folder(results_root: Path, suite: str) -> Path:
    """A fresh log folder per launch: Slurm job ids restart after a state wipe, so reusing a
    folder could hand back an old job's result."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return (Path(results_root) / suite / ".submitit" / f"{stamp}-{uuid.uuid4().hex[:6]}").resolve()


def pending_specs(specs: list[RunSpec], results_root: Path, force: bool) -> list[RunSpec]:
    """Runs to launch: not done (a corrupt run is not done: its job moves the damaged file aside
    and resumes it), or all with ``force`` (their outputs deleted first). Pass only runs that no
    live process holds (see :func:`held_runs`): their files are not ours to delete."""
    todo = []
    for spec in specs:
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        if force:
            run_dir.clear_outputs()
        if not is_done(run_dir, spec.config):  # stale-data is not done: its job sets the old outputs aside
            todo.append(spec)
    return todo


def held_runs(specs: list[RunSpec], results_root: Path, force: bool) -> dict[str, str]:
    """run id → why it is skipped, for unfinished runs (all with ``force``) whose lock a live
    process holds: it is training them now, so launching them again would train them twice."""
    held = {}
    for spec in specs:
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        if not force and is_done(run_dir, spec.config):
            continue
        holder = RunLock.holder(run_dir)
        if holder is not None:
            held[spec.run_id] = held_message(spec.run_id, holder)
    return held


def slurm_parameters(profile: ResourceProfile, array_size: int) -> dict[str, Any]:
    """submitit SlurmExecutor parameters for a resource profile."""
    params: dict[str, Any] = {
        "time": profile.time_min,
        "cpus_per_task": profile.cpus,
        "mem": f"{int(profile.mem_gb * 1024)}M",
        "array_parallelism": min(profile.array_parallelism, max(1, array_size)),
        "signal_delay_s": profile.signal_delay_s,
        "ntasks_per_node": profile.processes,
        "additional_parameters": dict(profile.extra),
    }
    if profile.gpus:
        params["gpus_per_node"] = profile.gpus
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(profile, key)
        if value is not None:
            params[key] = value
    return params


def job_name(suite: str, profile: str) -> str:
    return f"bench-{suite}-{profile}".replace("/", "-")  # included suites name profiles <suite>/<profile>


def sbatch_preview(suite: str, profile_name: str, profile: ResourceProfile, size: int, folder: Path) -> str:
    """The sbatch script submitit will write for this profile's array (for --dry-run)."""
    from submitit.slurm.slurm import _make_sbatch_string  # the exact template submitit submits

    return _make_sbatch_string(
        command="<python> -u -m submitit.core._submit <folder>", folder=folder,
        job_name=job_name(suite, profile_name), map_count=size, **slurm_parameters(profile, size),
    )


def job_outcome(spec: RunSpec, job: Any, results_root: Path | None = None) -> RunOutcome:
    """Wait for a submitit job (every task, i.e. every DDP rank) and say how it ended; the
    traceback itself is in the run's status.json. With ``results_root``, a failure's line is the
    one the run recorded (a full disk: 'no space left on <path>', which sets Exit.NO_SPACE)."""
    try:
        results = job.results()
        held = [r for r in results if isinstance(r, dict) and r.get("held_by")]
        if held:  # the job found another live job training the run and left it alone
            return RunOutcome(spec, "held", held[0].get("message"))
        return RunOutcome(spec, "done")
    except Exception as exc:
        error = f"{exc.__class__.__name__}: {str(exc)[:200]}"
        if results_root is not None:
            try:
                recorded = RunDir.of(results_root, spec.suite, spec.run_id).read_status().get("error")
            except Exception:  # noqa: BLE001 — a damaged status: the job's own exception says enough
                recorded = None
            if isinstance(recorded, str) and recorded.startswith(DISK_WORDS):
                return RunOutcome(spec, "failed", recorded, disk=True)
        return RunOutcome(spec, "failed", error)


def _said(outcome: RunOutcome, console: Console) -> RunOutcome:
    """Print the one line a held run gets (another launcher took its lock between our check and
    the job's start): every executor says so, as the debug executor does, never a silent skip."""
    if outcome.state == "held":
        console.print(outcome.error or f"run {outcome.spec.run_id} is held by another launcher, skipped", markup=False, soft_wrap=True)
    return outcome


def local_threads(parallel: int) -> int:
    """Math threads per local run: the machine's cores shared by the ``parallel`` runs at once, so
    that they do not oversubscribe it. A run's numbers can depend on its thread count (how a sum is
    split), so a reference for a local run must use the same."""
    return max(1, (os.cpu_count() or 1) // max(1, parallel))


def launch_local(suite: Suite, specs: list[RunSpec], results_root: Path, parallel: int, console: Console, keep_checkpoints: bool = False) -> list[RunOutcome]:
    """Each run in a subprocess (submitit LocalExecutor), at most ``parallel`` at once; a profile
    with several processes per run starts that many (DDP over gloo on CPU)."""
    executor = submitit.LocalExecutor(folder=submitit_folder(results_root, specs[0].suite) if specs else results_root)
    executor.update_parameters(timeout_min=24 * 60)
    queue, running, outcomes = list(specs), {}, []
    threads = local_threads(parallel)
    live = Live(status_renderable(run_rows(specs, results_root)), console=console, refresh_per_second=1) if console.is_terminal else None
    shown: dict[str, tuple[str, str]] = {}  # without a terminal: a plain line when a run's state or phase moves on
    with live or contextlib.nullcontext():
        while queue or running:
            while queue and len(running) < parallel:
                spec = queue.pop(0)
                executor.update_parameters(setup=[f"export OMP_NUM_THREADS={threads}"], tasks_per_node=suite.resource(spec.profile).processes)
                running[spec.run_id] = (spec, executor.submit(RunTask.of(spec, results_root, keep_checkpoints)))
            for run_id, (spec, job) in list(running.items()):
                if job.done():
                    del running[run_id]
                    outcomes.append(_said(job_outcome(spec, job, results_root), console))
            rows = run_rows(specs, results_root)
            if live is not None:
                live.update(status_renderable(rows))
            else:
                for row in rows:
                    now = (row["state"], _coarse(row["progress"]))
                    if row["state"] != "pending" and shown.get(row["run"]) != now:
                        shown[row["run"]] = now
                        console.print(f"  {row['run']} {row['method']} seed={row['seed']}: {row['state']} {row['progress']}".rstrip(), markup=False)
            time.sleep(0.5)
    return outcomes


def _coarse(progress: str) -> str:
    """'train 37/90' → 'train 3' (tenths), 'eval 3/16' as is: how often a log line is due."""
    phase, _, count = progress.partition(" ")
    done, _, total = count.partition("/")
    if phase == "train" and done.isdigit() and total.isdigit() and int(total):
        return f"train {10 * int(done) // int(total)}"
    return progress


def launch_slurm(suite: Suite, specs: list[RunSpec], results_root: Path, wait: bool, console: Console, keep_checkpoints: bool = False) -> list[RunOutcome]:
    """Submit one job array per resource profile; record job ids in each run's status."""
    folder = submitit_folder(results_root, suite.name)
    jobs: list[tuple[RunSpec, Any]] = []
    for profile_name in dict.fromkeys(s.profile for s in specs):
        group = [s for s in specs if s.profile == profile_name]
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(job_name=job_name(suite.name, profile_name), **slurm_parameters(suite.resource(profile_name), len(group)))
        with executor.batch():
            submitted = [executor.submit(RunTask.of(spec, results_root, keep_checkpoints)) for spec in group]
        for spec, job in zip(group, submitted):
            run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
            run_dir.path.mkdir(parents=True, exist_ok=True)
            run_dir.write_config(spec.config.canonical())
            submitted_as = dict(executor="slurm", executor_job_id=job.job_id, submitit_folder=str(folder))
            if run_dir.status_file.is_file() and run_dir.read_status().get("state") == "running":
                # the job may already have started and said so; or 'running' is stale (a job killed
                # without a word): either way the new job id is what a rerun must see
                run_dir.update_status(**submitted_as)
            else:
                run_dir.set_status("pending", **submitted_as)
            jobs.append((spec, job))
        console.print(f"submitted {len(group)} run(s) as Slurm array {submitted[0].job_id.split('_')[0]} (profile {profile_name!r})", markup=False)
    if not wait:
        return [RunOutcome(spec, "submitted") for spec, _ in jobs]
    return [_said(job_outcome(spec, job, results_root), console) for spec, job in jobs]


def scheduler_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's view of jobs ({} when Slurm is not reachable): one sacct call, parsed by submitit's
    own reader (array ranges such as '180_[0-3%16]' expand to one entry per task)."""
    import subprocess

    from submitit.slurm.slurm import SlurmInfoWatcher

    if not job_ids:
        return {}
    # an array task '180_5' is asked as its array '180' (sacct lists every task of it): thousands of
    # runs submitted as a few arrays make one short command line, not one id per run
    asked = dict.fromkeys(j.split("_", 1)[0] if j.split("_", 1)[-1].isdigit() else j for j in job_ids)
    try:  # our call rather than the watcher's: it needs a timeout, and -X (allocations only)
        out = subprocess.run(["sacct", "-X", "--parsable2", "-o", "JobID,State", "-j", ",".join(asked)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    info = SlurmInfoWatcher().read_info(out.stdout) if out.returncode == 0 else {}
    return {job: (stats.get("State") or "").split()[0] if stats.get("State") else "" for job, stats in info.items()}


def active_job_ids() -> set[str] | None:
    """Jobs the Slurm controller holds right now (pending, running, ...), one id per array task
    (squeue -r); None when Slurm cannot be asked. Unlike sacct, squeue sees a job the moment
    sbatch returns."""
    import subprocess

    try:
        out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {t for line in out.stdout.split() for t in array_tasks(line)} if out.returncode == 0 else None


def array_tasks(job: str) -> list[str]:
    """One id per task of a Slurm job id as squeue/sacct print it ('180_[0-3,7%16]'), read with
    submitit's parser of those ids."""
    from submitit.slurm.slurm import read_job_id

    tasks = []
    for part in read_job_id(job):
        tasks += [f"{part[0]}_{i}" for i in range(int(part[1]), int(part[2]) + 1)] if len(part) >= 3 else ["_".join(part)]
    return tasks


def cancel(specs: list[RunSpec], results_root: Path) -> list[str]:
    """scancel every unfinished run's Slurm job; mark those runs failed (cancelled)."""
    import subprocess

    cancelled = []
    for spec in specs:
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        st = run_dir.read_status()
        job = st.get("executor_job_id")
        if run_dir.is_done() or not job or st.get("executor") != "slurm":
            continue
        subprocess.run(["scancel", str(job)], check=False)
        run_dir.set_status("failed", error="cancelled by `bench cancel`", cancelled=True)
        cancelled.append(str(job))
    return cancelled


@dataclass(frozen=True)
class LaunchOptions:
    force: bool = False
    parallel: int = 1  # local executor: runs at once
    wait: bool = False  # slurm executor: block until every job ends
    keep_checkpoints: bool = False  # finished runs keep prev.pt as well as last.pt (not part of any run's identity)


def kept(keep_checkpoints: bool) -> dict[str, bool]:
    """``keep_checkpoints`` as a keyword only when it is set: the default calls stay as they were."""
    return {"keep_checkpoints": True} if keep_checkpoints else {}


Launcher = Callable[[Suite, list[RunSpec], Path, LaunchOptions, Console], list[RunOutcome]]
LAUNCHERS: Registry[Launcher] = Registry("executor")

LAUNCHERS.add("debug", lambda suite, todo, root, opts, console: run_local(todo, root, console=console,
                                                                       threads=lambda spec: suite.resource(spec.profile).cpus,
                                                                       **kept(opts.keep_checkpoints)))
LAUNCHERS.add("local", lambda suite, todo, root, opts, console: launch_local(suite, todo, root, opts.parallel, console, **kept(opts.keep_checkpoints)))
LAUNCHERS.add("slurm", lambda suite, todo, root, opts, console: launch_slurm(suite, todo, root, opts.wait, console, **kept(opts.keep_checkpoints)))


def launch(executor: str, suite: Suite, specs: list[RunSpec], results_root: Path, options: LaunchOptions, console: Console) -> list[RunOutcome]:
    """Run (or submit) every run of ``specs`` that is not done yet; done runs are 'skipped', runs
    a live process holds (its lock) are 'held' and said so. The check here spares a submission;
    the lock the job itself takes (run_job) is what guarantees a run is never trained twice."""
    launcher = LAUNCHERS.get(executor)
    held = held_runs(specs, results_root, options.force)
    for message in held.values():
        console.print(message, markup=False, soft_wrap=True)
    todo = pending_specs([s for s in specs if s.run_id not in held], results_root, options.force)
    skipped = [RunOutcome(s, "held", held[s.run_id]) if s.run_id in held else RunOutcome(s, "skipped") for s in specs if s not in todo]
    return skipped + (launcher(suite, todo, results_root, options, console) if todo else [])


@dataclass(frozen=True)
class SuiteSource:
    """How to expand a suite again later (after tuning runs end, or inside a Slurm job)."""

    path: str
    overrides: tuple[str, ...] = ()
    data_root: str | None = None
    only: tuple[tuple[str, str], ...] = ()  # --only: the subset of runs to launch
    sweeps: tuple[str, ...] = ()  # -m: matrix axes given on the command line

    def expand(self, results_root: Path) -> tuple[Suite, list[RunSpec]]:
        from bench.suite import expand, load_suite, select_only, with_sweeps

        suite = with_sweeps(load_suite(self.path), self.sweeps)
        return suite, select_only(expand(suite, self.path, list(self.overrides), self.data_root, results_root, sweeps=self.sweeps), self.only)


def has_selection(suite: Suite) -> bool:
    return suite.select is not None or any(has_selection(child) for _, child in suite._children)


def has_stages(suite: Suite) -> bool:
    """Whether ending some runs can make new runs appear on the next expansion: model selection
    (final runs follow tuning) or a seed schedule (a round's end may add seeds)."""
    return has_selection(suite) or suite.seeds is not None or any(has_stages(child) for _, child in suite._children)


def launch_suite(
    executor: str, source: SuiteSource, results_root: Path, options: LaunchOptions, console: Console, first: list[RunSpec] | None = None,
) -> list[RunOutcome]:
    """Launch a suite's runs; with model selection, each group's final runs follow its tuning runs;
    with a seed schedule, each undecided round's end adds the next round's seeds.

    In-process and local executors (and Slurm with ``wait``) carry every stage through in one
    call: launch what is known, expand again (the expansion decides selection groups and seed
    rounds from what has ended, and with ``select.extend_edges`` calls for tuning runs beyond a grid edge),
    launch what is new, until nothing new appears. Slurm without
    ``wait`` submits the known runs and one small dependent job (:class:`NextStageTask`,
    ``afterany`` on their jobs) that expands again, submits what is new and itself after that,
    so nobody has to come back.

    ``first`` restricts the first launch to those runs (``bench reproduce`` leaves out runs that
    Slurm still holds); later stages launch every new run.
    """
    suite, specs = source.expand(results_root)
    outcomes = launch(executor, suite, specs if first is None else first, results_root, options, console)
    if not has_stages(suite):
        return outcomes
    if executor == "slurm" and not options.wait:
        submit_next_stage(suite, specs, source, results_root, console, **kept(options.keep_checkpoints))
        return outcomes
    seen = {s.run_id for s in specs}
    while True:
        suite, specs = source.expand(results_root)  # decides what has ended: selection groups, seed rounds
        if not options.keep_checkpoints:
            drop_decided_weights(specs, results_root)  # decided groups' tuning runs: their weights are only disk now
        new = [s for s in specs if s.run_id not in seen]
        if not new:
            return outcomes
        say_what_is_new(suite, new, results_root, console)
        seen |= {s.run_id for s in new}
        outcomes += launch(executor, suite, new, results_root, options, console)


def stage_message(new: list[RunSpec]) -> str:
    """What a later stage launches: final runs at the chosen settings, and tuning runs one step
    beyond a grid edge (``select.extend_edges``)."""
    final = sum(1 for s in new if s.stage == "final")
    tune = len(new) - final
    parts = ([f"launching {final} final run(s) at the chosen settings"] if final else []) + \
            ([f"{'and ' if final else 'launching '}{tune} tuning run(s) beyond a grid edge"] if tune else [])
    return "selection decided: " + " ".join(parts)


def _added_by_rounds(suite: Suite, spec: RunSpec) -> bool:
    """A final run whose seed only a later seed round brings (the first round's come with the
    suite, or with its selection)."""
    from bench.sequential import scheduled

    schedule = next((s.seeds for s in scheduled(suite) if s.name == spec.suite), None)
    return schedule is not None and spec.stage == "final" and spec.config.seed >= schedule.min


def say_what_is_new(suite: Suite, new: list[RunSpec], results_root: Path, console: Console) -> None:
    """One line per reason new runs appeared: a selection decided, or a seed round undecided."""
    from bench.sequential import round_status

    rounds = [s for s in new if _added_by_rounds(suite, s)]
    chosen = [s for s in new if s not in rounds]
    if chosen:
        console.print(stage_message(chosen), markup=False)
    if rounds:
        lines = "; ".join(f"{r['suite']}: {r['line']}" for r in round_status(suite, results_root))
        console.print(f"seed round undecided: launching {len(rounds)} run(s) with more seeds ({lines})", markup=False, soft_wrap=True)


def never_submitted(spec: RunSpec, results_root: Path) -> bool:
    """Not done and never handed to an executor: what a dependent job may submit without
    submitting anything twice (a failed or queued run is someone else's to retry)."""
    run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
    return run_dir.effective_state() == "pending" and not run_dir.read_status().get("executor_job_id")


def submit_next_stage(suite: Suite, specs: list[RunSpec], source: SuiteSource, results_root: Path, console: Console,
                      keep_checkpoints: bool = False) -> str | None:
    """A 1-CPU Slurm job that starts once every unfinished run whose end can add runs has ended
    (tuning runs; final runs of a seed schedule still open); None when there is none to wait for."""
    from bench.sequential import open_schedules

    opened = open_schedules(suite, results_root)
    decisive = [s for s in specs if s.stage == "tune" or (s.stage == "final" and s.suite in opened)]
    # only runs a scheduler still holds: a failed one is never waited for (nor resubmitted)
    waiting = [s for s in decisive if RunDir.of(results_root, s.suite, s.run_id).effective_state() in ("pending", "running")]
    jobs = sorted({str(RunDir.of(results_root, s.suite, s.run_id).read_status().get("executor_job_id") or "").split("_")[0] for s in waiting} - {""})
    if not jobs:
        return None
    executor = submitit.SlurmExecutor(folder=submitit_folder(results_root, suite.name))
    profile = suite.resource(specs[0].profile)
    params = {"time": 30, "cpus_per_task": 1, "mem": "2048M", "additional_parameters": {"dependency": "afterany:" + ":".join(jobs)}}
    for key in ("partition", "account", "qos"):
        if getattr(profile, key) is not None:
            params[key] = getattr(profile, key)
    what = " and ".join(name for name, on in (("selection", any(s.stage == "tune" for s in waiting)),
                                              ("seed-round", any(s.stage == "final" for s in waiting))) if on)
    executor.update_parameters(job_name=job_name(suite.name, "next"), **params)
    job = executor.submit(NextStageTask(source, str(Path(results_root).resolve()), keep_checkpoints))
    console.print(f"submitted the {what} job {job.job_id} (after jobs {', '.join(jobs)}): it decides what has ended "
                  "(each method's settings on the held-out split; whether a seed round resolves the claim), submits the "
                  "runs that follow, and itself again after them", markup=False)
    return job.job_id


class NextStageTask:
    """The Slurm job between stages: expand again (which decides selection groups from held-out
    scores of the finished tuning runs, and seed rounds from their finished final runs), submit
    the runs that appeared and were never submitted, and another such job after whatever can
    still add runs; with nothing left to wait for, it submits nothing and the chain ends."""

    def __init__(self, source: SuiteSource, results_root: str, keep_checkpoints: bool = False) -> None:
        self.source, self.results_root, self.keep_checkpoints = source, results_root, keep_checkpoints

    def __call__(self) -> list[str]:
        console = Console(width=200, highlight=False)  # user text is never highlighted (quadratic)
        root = Path(self.results_root)
        suite, specs = self.source.expand(root)
        new = [s for s in specs if never_submitted(s, root)]
        keep = getattr(self, "keep_checkpoints", False)  # a job pickled before the option: the default
        if not keep:
            drop_decided_weights(specs, root)
        if new:
            say_what_is_new(suite, new, root, console)
            launch("slurm", suite, new, root, LaunchOptions(keep_checkpoints=keep), console)
        submit_next_stage(suite, specs, self.source, root, console, **kept(keep))
        return [s.run_id for s in new]


# the names of the selection-only version: a job pickled before the rename still unpickles
SelectTask = NextStageTask
submit_selection = submit_next_stage
