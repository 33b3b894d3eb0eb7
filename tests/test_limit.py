"""Subsets and budgets (smoke-test tools): data.limit / --limit and train.max_steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.cli import main
from bench.config import RunConfig
from bench.data.holdout import Subset
from bench.job import run_job
from bench.report.aggregate import limited_note, result_rows
from bench.store import RunDir
from bench.suite import expand, load_suite
from conftest import tiny_config
from test_suite import GOOD, write

# run ids of the tests' tiny configs computed on main before these settings existed (7abaa83)
MAIN_IDS = {"sft": "0b93dcb7adf7", "grpo_rm": "b8a55815e24b"}
MAIN_DEFAULT_SFT_ID = "131181b73edd"  # RunConfig(method={'name': 'sft'}), all defaults


def test_runs_without_limits_keep_their_ids():
    for method, run_id in MAIN_IDS.items():
        cfg = tiny_config(method)
        assert cfg.run_id() == run_id
        assert "limit" not in cfg.canonical()["data"] and "max_steps" not in cfg.canonical()["train"]
    assert RunConfig(method={"name": "sft"}).run_id() == MAIN_DEFAULT_SFT_ID


def test_limit_and_max_steps_change_run_ids():
    base = tiny_config("sft")
    ids = {
        base.run_id(),
        tiny_config("sft", data={"limit": {"train": 8, "eval": 8}}).run_id(),
        tiny_config("sft", data={"limit": {"train": 8, "eval": 4}}).run_id(),
        tiny_config("sft", data={"limit": {"train": 8, "eval": 8, "seed": 1}}).run_id(),
        tiny_config("sft", train={"max_steps": 3}).run_id(),
        tiny_config("sft", train={"max_steps": 4}).run_id(),
    }
    assert len(ids) == 6


def test_empty_limit_is_refused():
    with pytest.raises(ValueError, match="data.limit"):
        tiny_config("sft", data={"limit": {}})
    with pytest.raises(ValueError):
        tiny_config("sft", train={"max_steps": 0})


def test_cli_limit_is_data_limit_and_shows_in_validate(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    plain = {s.run_id for s in expand(load_suite(path), path)}
    limited = expand(load_suite(path), path, ["data.limit.train=8", "data.limit.eval=8"])
    assert {s.config.data.limit.train for s in limited} == {8} and {s.config.data.limit.eval for s in limited} == {8}
    assert not plain & {s.run_id for s in limited}
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "limited runs" not in out
    assert main(["validate", str(path), "--limit", "8", "-o", "train.max_steps=2"]) == 0
    out = capsys.readouterr().out
    assert "limited runs" in out and "4 run(s): train 8 / eval 8 images, max 2 steps" in out
    assert main(["validate", str(path), "--limit", "8", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(s.run_id[:8] in listed for s in limited)


@pytest.mark.parametrize("size", [1, 5, 10, 23, 40])
def test_stratified_subset_is_exact_and_balanced(size):
    labels = np.repeat(np.arange(4), [30, 12, 3, 9])  # imbalanced: class 2 has 3 members
    index = Subset(size, seed=0).indices(labels, stratify=True)
    assert len(index) == size and len(set(index)) == size and list(index) == sorted(index)
    counts = np.bincount(labels[index], minlength=4)
    full = np.bincount(labels, minlength=4)
    open_ = counts < full  # classes not given whole differ by at most one among themselves
    assert counts[open_].max(initial=0) - counts[open_].min(initial=size) <= 1 or open_.sum() <= 1
    assert all(counts[~open_] <= counts[open_].min(initial=size) + 1)  # a class given whole is no larger than the others


def test_subset_seeded_unstratified_and_noop_when_small():
    labels = np.repeat(np.arange(3), 10)
    a, b = Subset(7, 0).indices(labels, True), Subset(7, 0).indices(labels, True)
    assert np.array_equal(a, b) and not np.array_equal(a, Subset(7, 1).indices(labels, True))
    assert len(Subset(7, 0).indices(labels, stratify=False)) == 7
    assert np.array_equal(Subset(30, 0).indices(labels, True), np.arange(30))


def test_limited_run_evaluates_exactly_n_per_split_trains_on_at_most_n_and_stops(tmp_path):
    cfg = tiny_config("grpo_rm", data={"limit": {"train": 20, "eval": 10}}, train={"max_steps": 3})
    result = run_job(cfg, RunDir(tmp_path / "r"))
    assert set(result["metrics"]) == {"test", "shift_background", "shift_palette", "shift_corruption"}
    for split, values in result["metrics"].items():
        assert values["n"] == 10, split
        labels = cfg.data.load(split).labels
        counts = np.bincount(labels, minlength=10)
        assert len(labels) == 10 and counts.max() - counts.min() <= 1, split
    assert result["protocol"]["train_size"] <= 20 and len(cfg.data.load(cfg.data.resolved_train_split)) == 20
    assert result["protocol"]["steps"] == 3
    rows = [json.loads(line) for line in RunDir(tmp_path / "r").metrics.read_text().splitlines()]
    assert rows[-1]["step"] == 3
    long = result_rows(json.loads(RunDir(tmp_path / "r").result_file.read_text()))
    assert {r["limited"] for r in long} == {"train 20 / eval 10 images, max 3 steps"}
    import pandas as pd

    assert limited_note(pd.DataFrame(long)).startswith("LIMITED RUN")
    assert limited_note(pd.DataFrame(result_rows({**json.loads(RunDir(tmp_path / "r").result_file.read_text()),
                                                   "config": tiny_config("grpo_rm").canonical()}))) == ""


def test_max_steps_stops_at_that_step_with_the_full_schedule(tmp_path):
    full = run_job(tiny_config("sft"), RunDir(tmp_path / "full"))
    short = run_job(tiny_config("sft", train={"max_steps": 4}), RunDir(tmp_path / "short"))
    assert full["protocol"]["steps"] == 6 and short["protocol"]["steps"] == 4
    read = lambda d: [json.loads(line) for line in RunDir(tmp_path / d).metrics.read_text().splitlines()]  # noqa: E731
    full_rows, short_rows = read("full"), read("short")
    assert [r["step"] for r in short_rows] == [1, 2, 3, 4]
    # the schedule keeps the full run's length: the first 4 steps are the full run's first 4
    assert [r["lr"] for r in short_rows] == [r["lr"] for r in full_rows[:4]]
    assert [r["loss"] for r in short_rows] == [r["loss"] for r in full_rows[:4]]
