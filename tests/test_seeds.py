"""Seeds until it resolves (``seeds:``): the schedule, rounds as a seed axis, rounds decided and
recorded during expansion, carried through by the local loop and the dependent Slurm job.

Runs here are fake (``bench.job.run_job`` writes a finished result through the store API) and the
decider is a fake too: what is tested is the mechanism, not training or the statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

import bench.launch as launch_mod
import bench.sequential as sequential
from bench.cli import main
from bench.launch import LaunchOptions, NextStageTask, SuiteSource, launch_suite, submit_next_stage
from bench.sequential import SEEDS_FILE, RoundDecision, read_rounds
from bench.store import RunDir
from bench.suite import SeedSchedule, SuiteError, expand, load_suite
from test_suite import write

SUITE = """
name: sq
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  data: {name: fmnist_composites, params: {img_size: 28, train_size: 60, eval_size: 16}}
  train: {epochs: 1, batch_size: 16}
seeds: {min: 3, max: 12, step: 2, until: primary}
matrix:
  method: [sft, grpo_rm]
"""


# ---- schema --------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule, message", [
    ("{min: 1, max: 4}", r"seeds\.min: Input should be greater than or equal to 2"),
    ("{min: 5, max: 4}", r"seeds: max \(4\) is below min \(5\)"),
    ("{min: 3, max: 6, step: 0}", r"seeds\.step: Input should be greater than or equal to 1"),
    ("{min: true, max: 4}", r"seeds\.min: True is a boolean, not a number"),
    ("{min: 3, max: 4, step: true}", r"seeds\.step: True is a boolean, not a number"),
    ("{min: 3.0, max: 4}", r"seeds\.min: Input should be a valid integer"),
    ("{min: 3, max: 4, until: secondary}", r"seeds\.until: Input should be 'primary'"),
    ("{min: 3, max: 4, stpe: 2}", r"seeds\.stpe: Extra inputs are not permitted; did you mean 'step'\?"),
])
def test_schedule_checks(tmp_path, schedule, message):
    path = write(tmp_path, SUITE.replace("{min: 3, max: 12, step: 2, until: primary}", schedule))
    with pytest.raises(SuiteError, match=r"s\.yaml:7: " + message):
        load_suite(path)


@pytest.mark.parametrize("where, text", [("matrix.seed", "  seed: [0, 1]\n"), ("matrix.seed.x", "  seed.x: [0]\n"), ("defaults.seed", None)])
def test_a_seed_axis_beside_a_schedule_is_refused_at_the_seeds_line(tmp_path, where, text):
    body = SUITE + text if text else SUITE.replace("defaults:\n", "defaults:\n  seed: 4\n")
    path = write(tmp_path, body)
    line = body.splitlines().index("seeds: {min: 3, max: 12, step: 2, until: primary}") + 1
    with pytest.raises(SuiteError, match=rf"s\.yaml:{line}: seeds: this suite also sets {where}"):
        load_suite(path)


def test_a_seed_override_is_refused(tmp_path):
    path = write(tmp_path, SUITE)
    with pytest.raises(SuiteError, match=r"^-o seed=3: this suite's seeds come from its seeds: schedule"):
        expand(load_suite(path), path, ["seed=3"])


def test_looks_end_exactly_at_max():
    assert SeedSchedule(min=3, max=12, step=2).looks() == [3, 5, 7, 9, 11, 12]
    assert SeedSchedule(min=2, max=8, step=3).looks() == [2, 5, 8]
    assert SeedSchedule(min=4, max=9, step=10).looks() == [4, 9]
    assert SeedSchedule(min=3, max=3).looks() == [3]


def test_the_run_limit_counts_the_most_seeds_a_schedule_can_reach(tmp_path):
    path = write(tmp_path, SUITE)
    with pytest.raises(SuiteError, match=r"expands to 24 runs \(the product of the matrix axes, times seeds.max = 12\)"):  # round 1 has 6
        expand(load_suite(path), path, max_runs=23)


# ---- expansion -----------------------------------------------------------------------------------


def _ids(path) -> list[str]:
    return [s.run_id for s in expand(load_suite(path), path)]


def test_rounds_are_a_plain_seed_axis_and_reuse_run_ids(tmp_path):
    path = write(tmp_path, SUITE)
    suite = load_suite(path)
    results = tmp_path / "results"
    first = expand(suite, path, results_root=results)
    assert [(s.config.method.name, s.config.seed) for s in first] == [(m, i) for m in ("sft", "grpo_rm") for i in range(3)]
    listed = write(tmp_path, SUITE.replace("seeds: {min: 3, max: 12, step: 2, until: primary}\n", "") + "  seed: [0, 1, 2]\n", "l.yaml")
    assert [s.run_id for s in first] == _ids(listed)
    assert expand(suite, path) == first  # no results root: the first round
    state = {**sequential.round_state(suite, None), "n": 5}
    (results / "sq").mkdir(parents=True)
    (results / "sq" / SEEDS_FILE).write_text(json.dumps(state))
    fifth = expand(suite, path, results_root=results)
    assert sorted(s.config.seed for s in fifth) == sorted([0, 1, 2, 3, 4] * 2)
    assert {s.run_id for s in first} < {s.run_id for s in fifth}
    assert {s.run_id for s in fifth} == set(_ids(write(tmp_path, SUITE.replace("seeds: {min: 3, max: 12, step: 2, until: primary}\n", "")
                                                        + "  seed: [4, 3, 2, 1, 0]\n", "l5.yaml")))


def test_a_changed_schedule_is_refused_rather_than_mixing_looks(tmp_path):
    path = write(tmp_path, SUITE)
    results = tmp_path / "results"
    (results / "sq").mkdir(parents=True)
    (results / "sq" / SEEDS_FILE).write_text(json.dumps({**sequential.round_state(load_suite(path), None), "n": 5}))
    changed = write(tmp_path, SUITE.replace("step: 2", "step: 3"))
    with pytest.raises(SuiteError, match="the looks cannot change half-way"):
        expand(load_suite(changed), changed, results_root=results)


# ---- fakes ---------------------------------------------------------------------------------------


class FakeDecider:
    """Decides at the looks listed in ``decide_at`` (seed counts); records every call."""

    def __init__(self, decide_at: tuple[int, ...] = ()) -> None:
        self.decide_at, self.calls = decide_at, []

    def __call__(self, suite, specs, results_root, look, looks) -> RoundDecision:
        states = [RunDir.of(results_root, s.suite, s.run_id).effective_state() for s in specs]
        self.calls.append({"suite": suite.name, "look": look, "looks": looks, "seeds": sorted({s.config.seed for s in specs}),
                           "runs": len(specs), "states": states})
        if looks[look] in self.decide_at:
            return RoundDecision(True, "reproduced", f"CI inside the band at {looks[look]} seeds")
        return RoundDecision(False, "undecided", "CI overlaps the band")


@pytest.fixture
def fake_runs(monkeypatch):
    """``bench.job.run_job`` replaced by a finished result written through the store API (no
    training); a seed listed in ``fake_runs.fail`` raises instead, as a diverged run would."""
    import bench.job

    class Runs:
        fail: set[int] = set()
        ran: list[tuple[str, int]] = []

    def run_job(cfg, run_dir, suite="", progress=None, stage=None, **fields):
        Runs.ran.append((cfg.method.name, cfg.seed))
        run_dir.path.mkdir(parents=True, exist_ok=True)
        if cfg.seed in Runs.fail:
            run_dir.set_status("failed", error="diverged")
            raise RuntimeError("diverged")
        top1 = 0.5 + 0.01 * cfg.seed + (0.02 if cfg.train.lr > 1e-3 else 0.0)
        result = {"run_id": run_dir.path.name, "method": cfg.method.name, "seed": cfg.seed, "wall_time_s": 0.0, **(stage or {}),
                  "metrics": {split: {"top1": top1, "nll": 1.0} for split in cfg.evaluations}}
        run_dir.write_result(result)
        run_dir.set_status("done")
        return result

    monkeypatch.setattr(bench.job, "run_job", run_job)
    Runs.fail, Runs.ran = set(), []
    return Runs


def _launch(path, results) -> None:
    launch_suite("debug", SuiteSource(str(path)), results, LaunchOptions(), Console(width=200))


# ---- a full local flow ---------------------------------------------------------------------------


def test_undecided_at_3_runs_5_then_stops_when_decided(tmp_path, fake_runs, monkeypatch, capsys):
    decider = FakeDecider(decide_at=(5,))
    monkeypatch.setattr(sequential, "decide_round", decider)
    path = write(tmp_path, SUITE)
    results = tmp_path / "results"
    _launch(path, results)
    assert [(c["look"], c["seeds"], c["runs"]) for c in decider.calls] == [(0, [0, 1, 2], 6), (1, [0, 1, 2, 3, 4], 10)]
    assert decider.calls[0]["looks"] == [3, 5, 7, 9, 11, 12]
    assert sorted(fake_runs.ran) == sorted((m, i) for m in ("sft", "grpo_rm") for i in range(5))  # each run once
    assert "seed round undecided: launching 4 run(s) with more seeds" in capsys.readouterr().out
    state = read_rounds(results / "sq")
    assert state["stopped"] == "decided" and state["n"] == 5
    assert [(r["look"], r["n"], r["decided"], r["verdict"]) for r in state["rounds"]] == [(0, 3, False, "undecided"), (1, 5, True, "reproduced")]
    assert all(r["utc"] and r["failed"] == 0 for r in state["rounds"])
    _launch(path, results)  # a rerun: nothing new, nothing decided again
    assert len(decider.calls) == 2 and len(fake_runs.ran) == 10

    args = [str(path), "--results", str(results)]
    assert main(["status", *args]) == 0
    out = capsys.readouterr().out
    assert ("seeds: round 2 (5 seeds of 3→12, step 2), stopped: decided; round 2 (5 seeds): reproduced — CI inside the band at "
            "5 seeds; round 1 (3 seeds): undecided — CI overlaps the band") in out
    assert main(["status", *args, "--json"]) == 0
    seeds = json.loads(capsys.readouterr().out)["seeds"]
    assert seeds[0]["round"] == 2 and seeds[0]["stopped"] == "decided" and len(seeds[0]["rounds"]) == 2


def test_never_past_max(tmp_path, fake_runs, monkeypatch):
    decider = FakeDecider()  # never decides
    monkeypatch.setattr(sequential, "decide_round", decider)
    path = write(tmp_path, SUITE.replace("{min: 3, max: 12, step: 2, until: primary}", "{min: 2, max: 5, step: 2}"))
    results = tmp_path / "results"
    _launch(path, results)
    assert [c["seeds"] for c in decider.calls] == [[0, 1], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
    assert sorted({seed for _, seed in fake_runs.ran}) == [0, 1, 2, 3, 4] and len(fake_runs.ran) == 10
    state = read_rounds(results / "sq")
    assert state["stopped"] == "max" and state["n"] == 5 and [r["n"] for r in state["rounds"]] == [2, 4, 5]
    assert len(list((results / "sq").glob("*/result.json"))) == 10


def test_a_failed_run_ends_its_round_and_the_decider_sees_it(tmp_path, fake_runs, monkeypatch):
    decider = FakeDecider(decide_at=(5,))
    monkeypatch.setattr(sequential, "decide_round", decider)
    fake_runs.fail = {1}
    path = write(tmp_path, SUITE)
    results = tmp_path / "results"
    _launch(path, results)
    assert decider.calls[0]["states"].count("failed") == 2 and decider.calls[0]["runs"] == 6
    rounds = read_rounds(results / "sq")["rounds"]
    assert [(r["n"], r["failed"]) for r in rounds] == [(3, 2), (5, 2)]
    assert fake_runs.ran.count(("sft", 1)) == 1  # the next round adds seeds; it does not retry the failed one


def test_without_a_decider_the_round_says_what_is_missing(tmp_path, fake_runs, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bench.report.claims", None)  # as if the module were not written yet
    path = write(tmp_path, SUITE)
    with pytest.raises(SuiteError, match=r"seeds: round 1 of suite 'sq' \(3 seeds\) has ended, but the decider .*decide_primary"):
        _launch(path, tmp_path / "results")
    assert not (tmp_path / "results" / "sq" / SEEDS_FILE).exists()


SELECT = SUITE.replace("matrix:", "select: {metric: top1, tune: {train.lr: [1.0e-4, 3.0e-3]}, seeds: [1000]}\nmatrix:")


def test_with_selection_the_rounds_start_after_the_choice(tmp_path, fake_runs, monkeypatch):
    decider = FakeDecider(decide_at=(5,))
    monkeypatch.setattr(sequential, "decide_round", decider)
    path = write(tmp_path, SELECT)
    results = tmp_path / "results"
    assert {s.stage for s in expand(load_suite(path), path, results_root=results)} == {"tune"}  # no finals, no round yet
    assert not decider.calls
    _launch(path, results)
    runs = [json.loads(p.read_text()) for p in (results / "sq").glob("*/result.json")]
    assert sum(r.get("stage") == "tune" for r in runs) == 4  # tuning runs unaffected by the rounds
    finals = [r for r in runs if r.get("stage") == "final"]
    assert sorted(r["seed"] for r in finals) == sorted(list(range(5)) * 2)
    assert all(r["selection"]["chosen"] == {"train.lr": 3e-3} for r in finals)
    assert [c["runs"] for c in decider.calls] == [6, 10]


def test_included_suites_keep_their_own_schedule(tmp_path, fake_runs, monkeypatch):
    decider = FakeDecider(decide_at=(5,))
    monkeypatch.setattr(sequential, "decide_round", decider)
    write(tmp_path, SUITE)
    parent = write(tmp_path, "name: top\ninclude: [s.yaml]\n", "top.yaml")
    results = tmp_path / "results"
    _launch(parent, results)
    assert read_rounds(results / "sq")["stopped"] == "decided" and not (results / "top").exists()
    assert {c["suite"] for c in decider.calls} == {"sq"} and len(decider.calls) == 2
    capsys_out = []
    console = Console(width=200, record=True)
    from bench.cli import cmd_validate
    import argparse

    cmd_validate(argparse.Namespace(suite=str(parent), max_runs=None, override=[], data_root=None, results=results, only=None, list=False), console)
    capsys_out.append(console.export_text())
    assert "seeds (sq): 3 → up to 12 in steps of 2 until the primary claim resolves (looks at 3, 5, 7, 9, 11, 12)" in capsys_out[0]


def test_a_suite_of_includes_only_cannot_have_a_schedule(tmp_path):
    write(tmp_path, SUITE)
    parent = write(tmp_path, "name: top\ninclude: [s.yaml]\nseeds: {min: 2, max: 4}\n", "top.yaml")
    with pytest.raises(SuiteError, match=r"top\.yaml:3: seeds: a suite made only of included suites"):
        load_suite(parent)


def test_validate_summarises_the_schedule(tmp_path, capsys):
    path = write(tmp_path, SUITE)
    assert main(["validate", str(path)]) == 0
    assert "seeds: 3 → up to 12 in steps of 2 until the primary claim resolves (looks at 3, 5, 7, 9, 11, 12)" in capsys.readouterr().out


# ---- the dependent Slurm job, with a fake scheduler ----------------------------------------------


class FakeSlurm:
    """Stands in for sbatch: each submitted array gets the next job id; the dependent job's
    parameters (its afterany list) are kept."""

    def __init__(self) -> None:
        self.next_id, self.arrays, self.dependent = 100, [], []

    def launch_slurm(self, suite, specs, results_root, wait, console):
        job = str(self.next_id)
        self.next_id += 1
        for i, spec in enumerate(specs):
            run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
            run_dir.path.mkdir(parents=True, exist_ok=True)
            run_dir.set_status("pending", executor="slurm", executor_job_id=f"{job}_{i}")
        self.arrays.append((job, sorted((s.config.method.name, s.config.seed) for s in specs)))
        return []

    def executor(self, folder):
        slurm = self

        class Executor:
            def update_parameters(self, **params):
                self.params = params

            def submit(self, task):
                slurm.dependent.append((self.params["additional_parameters"]["dependency"], task))
                job = type("Job", (), {"job_id": str(slurm.next_id)})()
                slurm.next_id += 1
                return job

        return Executor()


def _finish(results: Path, job: str) -> None:
    """Every run of a submitted array ends with a result (as its job would write)."""
    for folder in (results / "sq").iterdir():
        status = folder / "status.json"
        if status.is_file() and json.loads(status.read_text()).get("executor_job_id", "").startswith(job + "_"):
            run_dir = RunDir(folder)
            run_dir.write_result({"run_id": folder.name, "metrics": {"test": {"top1": 0.5}}})
            run_dir.set_status("done")


def test_the_dependent_job_submits_each_round_once_and_stops(tmp_path, monkeypatch):
    slurm = FakeSlurm()
    monkeypatch.setattr(launch_mod, "launch_slurm", slurm.launch_slurm)
    monkeypatch.setattr(launch_mod.submitit, "SlurmExecutor", lambda folder: slurm.executor(folder))
    decider = FakeDecider(decide_at=(5,))
    monkeypatch.setattr(sequential, "decide_round", decider)
    path = write(tmp_path, SUITE)
    results = tmp_path / "results"
    launch_suite("slurm", SuiteSource(str(path)), results, LaunchOptions(), Console(width=200))  # `bench run --executor slurm`
    assert slurm.arrays == [("100", sorted((m, i) for m in ("sft", "grpo_rm") for i in range(3)))]
    assert [d for d, _ in slurm.dependent] == ["afterany:100"]
    task = slurm.dependent[-1][1]
    assert isinstance(task, NextStageTask)

    task()  # started early (a requeue, say): round 1 has not ended, nothing new, wait again
    assert len(slurm.arrays) == 1 and [d for d, _ in slurm.dependent][-1] == "afterany:100" and not decider.calls
    _finish(results, "100")
    task = slurm.dependent[-1][1]
    task()  # round 1 ends undecided: seeds 3 and 4 submitted, and the job itself after them
    assert slurm.arrays[-1] == ("103", [("grpo_rm", 3), ("grpo_rm", 4), ("sft", 3), ("sft", 4)])
    assert [d for d, _ in slurm.dependent][-1] == "afterany:103"
    task()  # run again before they end: nothing is submitted twice
    assert len(slurm.arrays) == 2
    _finish(results, "103")
    dependents = len(slurm.dependent)
    slurm.dependent[-1][1]()  # round 2 decided: nothing new, nothing to wait for, the chain ends
    assert len(slurm.arrays) == 2 and len(slurm.dependent) == dependents
    assert read_rounds(results / "sq")["stopped"] == "decided" and [c["runs"] for c in decider.calls] == [6, 10]


def test_submit_next_stage_waits_only_on_runs_that_can_add_runs(tmp_path, monkeypatch):
    """A selection-only suite's final runs add nothing: no dependent job waits for them (as before)."""
    slurm = FakeSlurm()
    monkeypatch.setattr(launch_mod.submitit, "SlurmExecutor", lambda folder: slurm.executor(folder))
    path = write(tmp_path, SUITE.replace("seeds: {min: 3, max: 12, step: 2, until: primary}\n", "") + "  seed: [0, 1]\n")
    suite = load_suite(path)
    specs = expand(suite, path, results_root=tmp_path / "results")
    slurm.launch_slurm(suite, specs, tmp_path / "results", False, None)
    assert submit_next_stage(suite, specs, SuiteSource(str(path)), tmp_path / "results", Console()) is None
    assert not slurm.dependent
