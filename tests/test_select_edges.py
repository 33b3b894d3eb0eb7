"""Model selection without self-reuse, with what a choice leaves open recorded: tuning seeds apart
from the final seeds, choices at a grid edge flagged (and, with select.extend_edges, tuned one
step further), ties reported; the transfer probe's C the same way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.grid import grid_edge, step_beyond
from bench.report.aggregate import Finished, finished_results, probe_c_table, selection_table
from bench.report.tables import probe_c_note, tuning_note
from bench.select import final_seeds, read_selection
from bench.store import RunDir
from bench.suite import DEFAULT_TUNING_SEED, SuiteError, expand, load_suite
from test_suite import write

SUITE = """
name: edges
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  model: {trainable_blocks: 1}
  data: {name: fmnist_composites, params: {img_size: 28, train_size: 60, eval_size: 16}}
  train: {epochs: 1, batch_size: 16}
select:
  metric: top1
  tune: {train.lr: [1.0e-4, 3.0e-4, 1.0e-3]}
matrix:
  method: [sft, grpo_rm]
  seed: [0, 1]
"""


def _finish(results: Path, spec, heldout: float) -> None:
    """A finished run in the store: a tuning run's held-out score, or a final run's record."""
    run_dir = RunDir.of(results, spec.suite, spec.run_id)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    c = spec.config
    run_dir.write_result({"run_id": spec.run_id, "method": c.method.name, "dataset": c.data.name, "seed": c.seed, "config": c.canonical(),
                          **spec.stage_record, "metrics": {"heldout": {"top1": heldout, "nll": 1.0}, "test": {"top1": 0.5}}})


def _score_tuning(results: Path, specs, score) -> int:
    """Finish every unfinished tuning run with ``score(method, lr)``; how many were finished."""
    done = 0
    for spec in specs:
        if spec.stage == "tune" and RunDir.of(results, spec.suite, spec.run_id).effective_state() != "done":
            _finish(results, spec, score(spec.config.method.name, spec.config.train.lr))
            done += 1
    return done


def _groups(results: Path) -> dict[str, dict]:
    return {g["group"]["method"]: g for g in read_selection(results / "edges")["groups"]}


# ---- tuning seeds apart from the final seeds ---------------------------------------------------

def test_default_tuning_seeds_lie_apart_from_the_final_seeds(tmp_path):
    path = write(tmp_path, SUITE)
    suite = load_suite(path)
    specs = expand(suite, path)
    assert final_seeds(suite) == [0, 1]
    tuning = {s.config.seed for s in specs if s.stage == "tune"}
    assert tuning == {DEFAULT_TUNING_SEED} and not tuning & set(final_seeds(suite))
    # where the final seeds come from: the matrix axis, else defaults.seed, else the config default
    assert final_seeds(load_suite(write(tmp_path, SUITE.replace("  seed: [0, 1]\n", ""), "a.yaml"))) == [0]
    no_axis = SUITE.replace("  seed: [0, 1]\n", "").replace("defaults:\n", "defaults:\n  seed: 7\n")
    assert final_seeds(load_suite(write(tmp_path, no_axis, "b.yaml"))) == [7]


def test_tuning_seeds_that_are_final_seeds_are_refused_with_file_and_line_unless_allowed(tmp_path, capsys):
    text = SUITE.replace("  tune:", "  seeds: [1, 5]\n  tune:")
    path = write(tmp_path, text)
    line = text.splitlines().index("  seeds: [1, 5]") + 1
    with pytest.raises(SuiteError, match=rf"s\.yaml:{line}: select\.seeds: tuning seed\(s\) 1 are also final seed\(s\) \(0, 1\)"):
        expand(load_suite(path), path)
    assert main(["validate", str(path), "--results", str(tmp_path / "results")]) != 0
    assert f"s.yaml:{line}: select.seeds:" in capsys.readouterr().out
    # the default seeds collide with a final seed set on the command line: refused too
    default = write(tmp_path, SUITE, "d.yaml")
    with pytest.raises(SuiteError, match=r"select\.seeds: tuning seed\(s\) 1000 are also final seed\(s\)"):
        expand(load_suite(default), default, overrides=["seed=1000"])

    allowed = write(tmp_path, text.replace("  seeds: [1, 5]", "  seeds: [1, 5]\n  allow_seed_overlap: true"), "ok.yaml")
    suite, results = load_suite(allowed), tmp_path / "results"
    _score_tuning(results, expand(suite, allowed, results_root=results), lambda m, lr: 0.5 + lr)
    finals = [s for s in expand(suite, allowed, results_root=results) if s.stage == "final"]
    assert finals and all(json.loads(s.record)["selection"]["seed_overlap"] == [1] for s in finals)
    for s in finals:
        _finish(results, s, 0.5)
    note = tuning_note(selection_table(finished_results(finals, results)))
    assert "Tuning seeds overlap the final seeds (seed(s) 1, select.allow_seed_overlap)" in note


# ---- edges and ties ----------------------------------------------------------------------------

def test_a_choice_at_the_grid_edge_is_flagged_smallest_or_largest_and_an_interior_one_is_not(tmp_path):
    path = write(tmp_path, SUITE)
    suite, results = load_suite(path), tmp_path / "results"
    best = {"sft": 1e-3, "grpo_rm": 1e-4}
    _score_tuning(results, expand(suite, path, results_root=results), lambda m, lr: 1.0 - abs(np.log(lr / best[m])))
    finals = [s for s in expand(suite, path, results_root=results) if s.stage == "final"]
    groups = _groups(results)
    assert groups["sft"]["at_edge"] == {"train.lr": "largest"} and groups["grpo_rm"]["at_edge"] == {"train.lr": "smallest"}
    assert groups["sft"]["tie"] is None and groups["sft"]["n_candidates"] == 3
    by_method = {s.config.method.name: json.loads(s.record)["selection"] for s in finals}
    assert by_method["sft"]["at_edge"] == {"train.lr": "largest"} and by_method["grpo_rm"]["at_edge"] == {"train.lr": "smallest"}
    for s in finals:
        _finish(results, s, 0.5)
    table = selection_table(finished_results(finals, results))
    assert set(table["at_edge"]) == {'{"train.lr": "largest"}', '{"train.lr": "smallest"}'}
    note = tuning_note(table)
    assert "GRPO-RM's lr = 1e-4 is the smallest value tried (grid edge): the optimum may lie below it." in note
    assert "SFT's lr = 0.001 is the largest value tried (grid edge): the optimum may lie beyond it." in note

    interior = tmp_path / "interior"
    _score_tuning(interior, expand(suite, path, results_root=interior), lambda m, lr: 1.0 - abs(np.log(lr / 3e-4)))
    expand(suite, path, results_root=interior)
    assert all(g["at_edge"] == {} and g["chosen"] == {"train.lr": 3e-4} for g in _groups(interior).values())
    assert "grid edge" not in tuning_note(selection_table([]))


def test_grid_edges_numeric_by_value_others_by_listed_order():
    assert grid_edge([3e-4, 1e-4, 1e-3], 1e-4) == "smallest" and grid_edge([3e-4, 1e-4, 1e-3], 3e-4) is None
    assert grid_edge(["adamw", "sgd", "lion"], "adamw") == "smallest" and grid_edge(["adamw", "sgd", "lion"], "lion") == "largest"
    assert grid_edge(["adamw", "sgd", "lion"], "sgd") is None
    assert grid_edge([1e-3], 1e-3) is None  # a single value is no grid


def test_a_tie_is_decided_by_the_first_listed_and_reported_with_the_candidates(tmp_path):
    path = write(tmp_path, SUITE)
    suite, results = load_suite(path), tmp_path / "results"
    scores = {1e-4: 0.75, 3e-4: 0.75, 1e-3: 0.5}
    _score_tuning(results, expand(suite, path, results_root=results), lambda m, lr: scores[lr] if m == "sft" else lr)
    finals = [s for s in expand(suite, path, results_root=results) if s.stage == "final"]
    sft = _groups(results)["sft"]
    assert sft["chosen"] == {"train.lr": 1e-4}
    assert sft["tie"] == {"candidates": [{"train.lr": 1e-4}, {"train.lr": 3e-4}], "score": 0.75, "rule": "first tried wins"}
    assert _groups(results)["grpo_rm"]["tie"] is None
    record = next(json.loads(s.record)["selection"] for s in finals if s.config.method.name == "sft")
    assert record["tie"]["candidates"] == [{"train.lr": 1e-4}, {"train.lr": 3e-4}]
    for s in finals:
        _finish(results, s, 0.5)
    note = tuning_note(selection_table(finished_results(finals, results)))
    assert "SFT's choice was made by the tie-break (the first tried wins): lr=1e-4 and lr=3e-4 tied at held-out top-1 accuracy 0.75." in note


# ---- extending the grid beyond an edge ---------------------------------------------------------

def test_step_beyond_is_geometric_on_a_log_spaced_grid_else_arithmetic():
    assert step_beyond([1e-4, 3e-4, 1e-3], "largest") == 3.33e-3  # 1e-3 · (1e-3 / 3e-4), 3 significant digits
    assert step_beyond([1e-4, 3e-4, 1e-3], "smallest") == 3.33e-5  # 1e-4 / (3e-4 / 1e-4)
    assert step_beyond([1.0, 2.0, 3.0], "largest") == 4.0  # evenly spaced: arithmetic
    assert step_beyond([0.0, 0.05], "largest") == 0.1  # not all positive: arithmetic
    assert step_beyond([1, 2, 4], "largest") == 8 and isinstance(step_beyond([1, 2, 4], "largest"), int)


EXTEND = SUITE.replace("  tune:", "  extend_edges: true\n  max_extensions: 2\n  tune:")


def test_extend_edges_tunes_one_geometric_step_beyond_until_interior_or_the_cap(tmp_path):
    path = write(tmp_path, EXTEND)
    suite, results = load_suite(path), tmp_path / "results"
    # SFT keeps improving with lr (stops at the cap); GRPO-RM's optimum is just beyond the grid
    score = {"sft": lambda lr: lr, "grpo_rm": lambda lr: 1.0 - abs(np.log(lr / 3.3e-3))}
    specs = expand(suite, path, results_root=results)
    assert _score_tuning(results, specs, lambda m, lr: score[m](lr)) == 6
    specs = expand(suite, path, results_root=results)
    new = [s for s in specs if s.stage == "tune" and RunDir.of(results, s.suite, s.run_id).effective_state() != "done"]
    assert sorted((s.config.method.name, s.config.train.lr) for s in new) == [("grpo_rm", 3.33e-3), ("sft", 3.33e-3)]
    assert all(json.loads(s.record)["tuned_values"] == {"train.lr": 3.33e-3} and s.config.seed == DEFAULT_TUNING_SEED for s in new)
    assert not [s for s in specs if s.stage == "final"]  # undecided until the new candidates have ended

    _score_tuning(results, specs, lambda m, lr: score[m](lr))
    specs = expand(suite, path, results_root=results)
    new = [s for s in specs if s.stage == "tune" and RunDir.of(results, s.suite, s.run_id).effective_state() != "done"]
    # both chose their new value, again the largest tried: one more step (ratio 3.33e-3 / 1e-3 again)
    assert sorted((s.config.method.name, s.config.train.lr) for s in new) == [("grpo_rm", 1.11e-2), ("sft", 1.11e-2)]

    _score_tuning(results, specs, lambda m, lr: score[m](lr))
    specs = expand(suite, path, results_root=results)
    assert not [s for s in specs if RunDir.of(results, s.suite, s.run_id).effective_state() != "done" and s.stage == "tune"]
    grpo = _groups(results)["grpo_rm"]  # 1.11e-2 did worse: 3.33e-3 is now an interior choice
    assert grpo["chosen"] == {"train.lr": 3.33e-3} and grpo["at_edge"] == {} and grpo["extension_stopped"] == {}
    assert [s.config.train.lr for s in specs if s.stage == "final" and s.config.method.name == "grpo_rm"] == [3.33e-3, 3.33e-3]
    sft = _groups(results)["sft"]
    assert sft["chosen"] == {"train.lr": 1.11e-2} and sft["at_edge"] == {"train.lr": "largest"}  # the cap, still on the edge
    assert [e["value"] for e in sft["extensions"]] == [3.33e-3, 1.11e-2] and sft["n_candidates"] == 5
    assert sft["extension_stopped"] == {"train.lr": "max_extensions (2) reached"}
    assert sft["tried"] == {"train.lr": [1e-4, 3e-4, 1e-3, 3.33e-3, 1.11e-2]}


def test_an_extension_that_does_worse_leaves_an_interior_choice(tmp_path):
    path = write(tmp_path, EXTEND)
    suite, results = load_suite(path), tmp_path / "results"
    score = lambda m, lr: {1e-4: 0.1, 3e-4: 0.2, 1e-3: 0.3}.get(lr, 0.0)  # noqa: E731 — beyond the edge it is worse
    for _ in range(3):
        _score_tuning(results, expand(suite, path, results_root=results), score)
    finals = [s for s in expand(suite, path, results_root=results) if s.stage == "final"]
    sft = _groups(results)["sft"]
    assert sft["chosen"] == {"train.lr": 1e-3} and sft["at_edge"] == {} and sft["n_candidates"] == 4
    assert [e["value"] for e in sft["extensions"]] == [3.33e-3] and {s.config.train.lr for s in finals} == {1e-3}
    for s in finals:
        _finish(results, s, 0.5)
    note = tuning_note(selection_table(finished_results(finals, results)))
    assert "candidates per method: SFT 4, GRPO-RM 4." in note and "grid edge" not in note


def test_launch_suite_launches_tuning_runs_beyond_an_edge_then_the_finals(tmp_path, monkeypatch, capsys):
    """The launcher expands again until nothing new appears: extension tuning runs come back as
    new runs just as final runs do; a Slurm selection job submits them (never the runs it has
    already submitted) and another selection job after them."""
    import bench.launch as launch_module
    from rich.console import Console

    path = write(tmp_path, EXTEND)
    results = tmp_path / "results"
    launched: list[list] = []

    def fake_launch(executor, suite, specs, root, options, console):
        launched.append([(s.stage, s.config.method.name, s.config.train.lr) for s in specs])
        for s in specs:
            if s.stage == "tune":
                _finish(root, s, 1.0 - abs(np.log(s.config.train.lr / 3.3e-3)))
            else:
                _finish(root, s, 0.5)
        return []

    monkeypatch.setattr(launch_module, "launch", fake_launch)
    source = launch_module.SuiteSource(str(path))
    launch_module.launch_suite("debug", source, results, launch_module.LaunchOptions(), Console())
    # the grid; one step beyond for each method (its best, again at the edge); one more step (worse); the finals
    assert [len(batch) for batch in launched] == [6, 2, 2, 4]
    assert {lr for _, _, lr in launched[1]} == {3.33e-3} and {lr for _, _, lr in launched[2]} == {1.11e-2}
    assert {(stage, lr) for stage, _, lr in launched[3]} == {("final", 3.33e-3)}
    assert "launching 2 tuning run(s) beyond a grid edge" in capsys.readouterr().out

    # the Slurm selection job: submits the finals and the unsubmitted extension runs, then waits again
    slurm = tmp_path / "slurm"
    suite = load_suite(path)
    _score_tuning(slurm, expand(suite, path, results_root=slurm), lambda m, lr: lr)
    submitted, again = [], []
    monkeypatch.setattr(launch_module, "launch", lambda executor, suite, specs, root, options, console: submitted.append(specs) or [])
    monkeypatch.setattr(launch_module, "submit_next_stage", lambda suite, specs, source, root, console: again.append(len(specs)))
    launch_module.NextStageTask(launch_module.SuiteSource(str(path)), str(slurm))()
    assert [(s.stage, s.config.train.lr) for s in submitted[0]] == [("tune", 3.33e-3), ("tune", 3.33e-3)] and again


# ---- the transfer probe's C --------------------------------------------------------------------

def test_the_probe_records_a_c_at_the_edge_and_a_tie_break():
    from bench.transfer import softmax_regression

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    x = (rng.normal(size=(80, 4)) + 6.0 * y[:, None]).astype(np.float32)  # far apart: every C is perfect on the held-out slice
    out = softmax_regression(x, y, x, y, cs=(0.01, 0.1, 1.0), holdout=0.25, seed=0)
    assert out["C"] == 0.01 and out["C_at_edge"] == "smallest"
    assert out["C_tie"] == {"Cs": [0.01, 0.1, 1.0], "val_top1": 1.0}


def test_the_report_counts_probe_cs_at_the_edge_and_by_a_tie_break():
    def run(i: int, c: float, tie: dict | None, recorded: bool = True) -> Finished:
        sr = {"top1": 0.5, "probe": "softmax_regression", "C": c, "C_swept": [0.01, 0.1, 1.0]}
        if recorded:
            sr.update(C_at_edge=grid_edge([0.01, 0.1, 1.0], c), C_tie=tie)
        return Finished({"run_id": f"r{i}", "method": "sft", "dataset": "d", "seed": i, "metrics": {"transfer/t/sr": sr}}, None)

    tie = {"Cs": [0.01, 0.1], "val_top1": 0.9}
    probes = probe_c_table([run(0, 1.0, None), run(1, 0.01, tie), run(2, 0.1, None), run(3, 0.1, None),
                            run(4, 0.01, None, recorded=False)])  # a result from before: its edge from C and the sweep
    assert list(probes["at_edge"]) == ["largest", "smallest", "", "", "smallest"]
    note = probe_c_note(probes)
    assert "C at the grid edge in 3 of 5 runs" in note and "1 of them by a tie-break" in note
    assert "C chosen by a tie-break (the first listed C wins) in 1 of 5 runs" in note
    assert probe_c_note(probe_c_table([run(0, 0.1, None)])) == ""
    assert re.search(r"C swept over \{0\.01, 0\.1, 1\}", note)
