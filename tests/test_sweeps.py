"""Command-line sweeps (``-m key=v1,v2``): matrix axes given on the command line expand to the
runs the same axes written in the suite file would, are refused with ``-m …: reason`` messages,
and travel with the suite to later expansions (the next stage, a Slurm job)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.launch import SuiteSource
from bench.suite import SuiteError, expand, load_suite
from test_suite import GOOD, write


def _runs(specs):
    return [(s.config.method.name, s.config.seed, s.config.train.lr, s.run_id) for s in specs]


def test_sweeps_expand_to_the_runs_of_the_same_axes_in_the_file(tmp_path):
    path = write(tmp_path, GOOD)
    in_file = write(tmp_path, GOOD.replace("seed: [0, 1]", "seed: [0, 1, 2]\n  train.lr: [1e-4, 3e-4]"), "f.yaml")
    want = expand(load_suite(in_file), in_file)
    got = expand(load_suite(path), path, sweeps=["train.lr=1e-4,3e-4", "seed=0,1,2"])
    assert len(want) == 12 and _runs(got) == _runs(want)  # same ids, same order: seed keeps its place, train.lr comes after
    brackets = expand(load_suite(path), path, sweeps=["train.lr=[1e-4, 3e-4]", "seed=[0,1,2]"])
    assert _runs(brackets) == _runs(want)
    # a sweep of the method axis, variants included, replaces the file's list
    methods = expand(load_suite(path), path, sweeps=["method=sft,{name: grpo_rm, params: {epsilon: 0.3}}"])
    assert [(s.config.method.name, s.config.method.params.get("epsilon")) for s in methods] == [
        ("sft", None), ("sft", None), ("grpo_rm", 0.3), ("grpo_rm", 0.3)]
    only = expand(load_suite(path), path, sweeps=["method=grpo_rm"])
    assert {s.run_id for s in only} < {s.run_id for s in expand(load_suite(path), path)}


@pytest.mark.parametrize("sweep, message", [
    ("train.lr=1e-4,abc", r"^-m train\.lr=1e-4,abc: train\.lr: .*valid number.* \(command-line sweep\)"),
    ("train.lrr=1e-4,3e-4", r"^-m train\.lrr=1e-4,3e-4: train\.lrr: .*\(command-line sweep\); did you mean 'lr'"),
    ("method=sft,grpo", r"^-m method=sft,grpo: method: unknown method 'grpo'; did you mean 'grpo_rm'.*\(command-line sweep\)"),
    ("seed=", r"^-m seed=: empty list; give at least one value \(command-line sweep\)$"),
    ("seed=[]", r"^-m seed=\[\]: empty list"),
    ("seed", r"^-m seed: a command-line sweep looks like key\.path=value,value"),
    ("train..lr=1", r"^-m train\.\.lr=1: 'train\.\.lr' is not a dotted key path .*\(command-line sweep\)"),
    ("seed=[0,1", r"^-m seed=\[0,1: not valid YAML.*\(in the values of a command-line sweep\)"),
    ("profile=gpu", r"^-m profile=gpu: unknown resource profile 'gpu'.*\(command-line sweep\)"),
    ("method=1,2", r"^-m method=1,2: value 1, 1, is not a method name"),
])
def test_sweep_mistakes_are_named_as_command_line_sweeps(tmp_path, sweep, message):
    path = write(tmp_path, GOOD)
    with pytest.raises(SuiteError, match=message) as err:
        expand(load_suite(path), path, sweeps=[sweep])
    assert "s.yaml" not in str(err.value).splitlines()[0]


def test_a_key_swept_twice_and_seeds_with_a_schedule_are_refused(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(SuiteError, match=r"^-m seed=1: seed is swept twice on the command line \(also -m seed=0\)"):
        expand(load_suite(path), path, sweeps=["seed=0", "seed=1"])
    scheduled = write(tmp_path, GOOD.replace("  seed: [0, 1]\n", "") + "seeds: {min: 2, max: 4}\n", "sched.yaml")
    assert len(expand(load_suite(scheduled), scheduled)) == 4  # the schedule's own first round
    with pytest.raises(SuiteError, match=r"^-m seed=0,1,2: this suite's seeds come from its seeds: schedule .*\(command-line sweep\)"):
        expand(load_suite(scheduled), scheduled, sweeps=["seed=0,1,2"])
    # other axes are fine beside a schedule
    assert len(expand(load_suite(scheduled), scheduled, sweeps=["train.lr=1e-4,3e-4"])) == 8


def test_override_with_a_list_still_sets_a_list_and_suggests_a_sweep(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(SuiteError, match=r"^-o train\.lr=\[1e-4,3e-4\]: train\.lr: .*\(command-line override\); .*sweep it with -m train\.lr=1e-4,3e-4"):
        expand(load_suite(path), path, ["train.lr=[1e-4,3e-4]"])
    listed = expand(load_suite(path), path, ["evaluations=[id]"])  # a key that takes a list still gets one
    assert all(s.config.evaluations == ("id",) for s in listed)
    # -o and -m of one key say two things about the same runs
    with pytest.raises(SuiteError, match=r"^-o train\.lr=5e-4: train\.lr is also swept with -m train\.lr=1e-4,3e-4"):
        expand(load_suite(path), path, ["train.lr=5e-4"], sweeps=["train.lr=1e-4,3e-4"])


def test_validate_shows_the_swept_axes_and_the_run_count(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["validate", str(path), "-m", "train.lr=1e-4,3e-4", "--sweep", "seed=0,1,2"]) == 0
    out = capsys.readouterr().out
    assert "12 runs" in out
    assert "matrix.seed: 0, 1, 2  (-m, command line)" in out and "matrix.train.lr: 1e-4, 3e-4  (-m, command line)" in out
    assert "matrix.method: sft, grpo_rm\n" in out
    assert main(["validate", str(path), "-m", "train.lr=1e-4,x"]) != 0
    captured = capsys.readouterr()
    assert "-m train.lr=1e-4,x: train.lr:" in captured.out + captured.err


@pytest.mark.parametrize("command", ["run", "validate", "status", "report", "config", "plan"])
def test_every_command_with_overrides_takes_sweeps(command):
    from bench.cli import parser

    args = parser().parse_args([command, "s.yaml", "-m", "seed=0,1", "-o", "train.lr=1e-4"])
    assert args.sweep == ["seed=0,1"] and args.override == ["train.lr=1e-4"]


def test_later_expansions_see_the_sweeps(tmp_path):
    """A Slurm next-stage job or a local subprocess expands the suite again from its SuiteSource."""
    path = write(tmp_path, GOOD)
    from bench import cli

    args = cli.parser().parse_args(["run", str(path), "-m", "train.lr=1e-4,3e-4", "--only", "seed=1"])
    source = cli._source(args)
    assert source.sweeps == ("train.lr=1e-4,3e-4",)
    suite, specs = source.expand(tmp_path / "results")
    assert {s.run_id for s in specs} == {s.run_id for s in cli._specs(args)[1]}
    assert sorted((s.config.method.name, s.config.train.lr) for s in specs) == [
        ("grpo_rm", 1e-4), ("grpo_rm", 3e-4), ("sft", 1e-4), ("sft", 3e-4)]
    assert suite.matrix["train.lr"] == ["1e-4", "3e-4"] or suite.matrix["train.lr"] == [1e-4, 3e-4]
    assert len(SuiteSource(str(Path(path).resolve())).expand(tmp_path / "results")[1]) == 4  # without: the file's runs


def test_included_suites_get_the_sweeps(tmp_path):
    write(tmp_path, GOOD, "child.yaml")
    parent = write(tmp_path, "name: parent\ninclude: [child.yaml]\n", "parent.yaml")
    specs = expand(load_suite(parent), parent, sweeps=["seed=0,1,2"])
    assert sorted((s.config.method.name, s.config.seed) for s in specs) == sorted((m, k) for m in ("sft", "grpo_rm") for k in (0, 1, 2))
