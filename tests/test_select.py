"""Model selection: tuning runs scored on the held-out split only, the choice, the final stage."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.select import SELECTION_FILE, heldout_score, read_selection
from bench.store import RunDir
from bench.suite import SuiteError, expand, load_suite
from test_suite import write

SELECT_SUITE = """
name: sel
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  model: {trainable_blocks: 1}
  data: {name: fmnist_composites, params: {img_size: 28, train_size: 60, eval_size: 16}}
  train: {epochs: 1, batch_size: 16}
select:
  metric: top1
  tune: {train.lr: [1.0e-4, 3.0e-3]}
matrix:
  method: [sft, grpo_rm]
  seed: [0, 1]
"""


def _args(tmp_path, suite):
    return [str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]


def test_selection_expands_an_equal_tuning_grid_per_method_scored_on_heldout_only(tmp_path):
    path = write(tmp_path, SELECT_SUITE)
    specs = expand(load_suite(path), path)  # no results yet: tuning runs only
    assert [s.stage for s in specs] == ["tune"] * 4
    grid = {}
    for s in specs:
        record = json.loads(s.record)
        grid.setdefault(s.config.method.name, []).append(record["tuned_values"]["train.lr"])
        assert s.config.evaluations == ("heldout",) and s.config.seed == 1000  # apart from the final seeds 0, 1
        assert s.config.train.lr == record["tuned_values"]["train.lr"]
    assert grid == {"sft": [1e-4, 3e-3], "grpo_rm": [1e-4, 3e-3]}


def test_tuning_method_parameters_or_seeds_is_refused(tmp_path):
    for key in ("method.params.epsilon", "seed"):
        path = write(tmp_path, SELECT_SUITE.replace("tune: {train.lr: [1.0e-4, 3.0e-3]}", f"tune: {{{key}: [1, 2]}}"))
        with pytest.raises(SuiteError, match=r"s\.yaml:\d+: select\.tune: .*cannot be tuned"):
            load_suite(path)


def _fake_result(run_dir: RunDir, heldout: float | None, test: float) -> None:
    metrics = {"test": {"top1": test, "nll": 1.0}}
    if heldout is not None:
        metrics["heldout"] = {"top1": heldout, "nll": 1.0}
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.write_result({"metrics": metrics})


def test_the_choice_reads_heldout_scores_only_and_never_a_test_number(tmp_path):
    path = write(tmp_path, SELECT_SUITE)
    suite = load_suite(path)
    results = tmp_path / "results"
    tune = expand(suite, path, results_root=results)
    choices = []
    for test_scores in ((0.9, 0.1), (0.1, 0.9)):  # test numbers flip; held-out ones do not
        for spec, heldout, test in zip(tune, (0.4, 0.6, 0.7, 0.2), test_scores * 2):
            _fake_result(RunDir.of(results, spec.suite, spec.run_id), heldout, test)
        specs = expand(suite, path, results_root=results)
        finals = [s for s in specs if s.stage == "final"]
        choices.append({(s.config.method.name, s.config.seed): s.config.train.lr for s in finals})
        selection = json.loads(finals[0].record)["selection"]
        assert selection["split"] == "heldout" and selection["tuned"] == {"train.lr": [1e-4, 3e-3]}
    assert choices[0] == choices[1] == {("sft", 0): 3e-3, ("sft", 1): 3e-3, ("grpo_rm", 0): 1e-4, ("grpo_rm", 1): 1e-4}
    recorded = read_selection(results / "sel")
    assert [g["chosen"] for g in recorded["groups"]] == [{"train.lr": 3e-3}, {"train.lr": 1e-4}]
    assert recorded["groups"][0]["candidates"][1]["mean"] == 0.6
    assert heldout_score({"metrics": {"test": {"top1": 1.0}}}, "top1") is None


def test_a_group_waits_for_every_tuning_run_and_a_failed_candidate_never_wins(tmp_path):
    path = write(tmp_path, SELECT_SUITE.replace("  tune:", "  seeds: [1000, 1001]\n  tune:"))
    suite = load_suite(path)
    results = tmp_path / "results"
    tune = expand(suite, path, results_root=results)
    sft = [s for s in tune if s.config.method.name == "sft"]
    low, high = [s for s in sft if s.config.train.lr == 1e-4], [s for s in sft if s.config.train.lr == 3e-3]
    _fake_result(RunDir.of(results, "sel", high[0].run_id), 0.9, 0.0)
    _fake_result(RunDir.of(results, "sel", low[0].run_id), 0.5, 0.0)
    _fake_result(RunDir.of(results, "sel", low[1].run_id), 0.5, 0.0)
    assert not [s for s in expand(suite, path, results_root=results) if s.stage == "final"]  # high[1] not ended
    failed = RunDir.of(results, "sel", high[1].run_id)
    failed.path.mkdir(parents=True)
    failed.set_status("failed", error="diverged")
    finals = [s for s in expand(suite, path, results_root=results) if s.stage == "final" and s.config.method.name == "sft"]
    assert {s.config.train.lr for s in finals} == {1e-4}  # 0.9 on one seed does not beat a complete 0.5


def test_lower_is_better_for_nll(tmp_path):
    path = write(tmp_path, SELECT_SUITE.replace("metric: top1", "metric: nll"))
    suite = load_suite(path)
    results = tmp_path / "results"
    for spec, nll in zip(expand(suite, path, results_root=results), (0.3, 0.7, 0.9, 0.2)):
        run_dir = RunDir.of(results, spec.suite, spec.run_id)
        run_dir.path.mkdir(parents=True)
        run_dir.write_result({"metrics": {"heldout": {"top1": 0.5, "nll": nll}}})
    finals = [s for s in expand(suite, path, results_root=results) if s.stage == "final"]
    assert {(s.config.method.name, s.config.train.lr) for s in finals} == {("sft", 1e-4), ("grpo_rm", 3e-3)}


def test_bench_run_carries_both_stages_and_the_test_labels_cannot_change_the_choice(tmp_path, capsys):
    """Tune (held-out only) → choose → final runs, in one `bench run`; then the same with the test
    split's labels permuted: identical held-out scores and choice."""
    from bench.data import DATASETS

    suite = write(tmp_path, SELECT_SUITE.replace("seed: [0, 1]", "seed: [0]"))
    assert main(["run", *_args(tmp_path, suite)]) == 0
    out = capsys.readouterr().out
    assert "selection decided: launching 2 final run(s)" in out
    results = tmp_path / "results" / "sel"
    first = json.loads((results / SELECTION_FILE).read_text())
    runs = [json.loads(p.read_text()) for p in results.glob("*/result.json")]
    tuning = [r for r in runs if r.get("stage") == "tune"]
    final = [r for r in runs if r.get("stage") == "final"]
    assert len(tuning) == 4 and len(final) == 2
    assert all(set(r["metrics"]) == {"heldout"} for r in tuning)  # never scored on test or shift
    for r in final:
        chosen = r["selection"]["chosen"]["train.lr"]
        assert r["config"]["train"]["lr"] == chosen and "test" in r["metrics"]
        group = next(g for g in first["groups"] if g["group"]["method"] == r["method"])
        assert group["chosen"] == {"train.lr": chosen}
        assert r["protocol"]["train_split_facts"]["holdout_role"] == "train"

    entry = DATASETS.get("fmnist_composites")
    real_build = entry.build

    def shifted_test_labels(split, data_root=None, **params):
        data = real_build(split, data_root=data_root, **params)
        if split != "test":
            return data
        import dataclasses

        return dataclasses.replace(data, labels=(data.labels + 1) % 10)

    object.__setattr__(entry, "build", shifted_test_labels)  # a frozen registry entry: patched and restored here
    try:
        other = tmp_path / "other"
        args = [str(suite), "--results", str(other), "--reports", str(tmp_path / "reports2")]
        assert main(["run", *args]) == 0
    finally:
        object.__setattr__(entry, "build", real_build)
    second = json.loads((other / "sel" / SELECTION_FILE).read_text())
    assert [g["chosen"] for g in second["groups"]] == [g["chosen"] for g in first["groups"]]
    assert [[c["scores"] for c in g["candidates"]] for g in second["groups"]] == [[c["scores"] for c in g["candidates"]] for g in first["groups"]]
    finals2 = [json.loads(p.read_text()) for p in (other / "sel").glob("*/result.json")]
    assert any(r.get("stage") == "final" and r["metrics"]["test"]["top1"] != next(
        f for f in final if f["method"] == r["method"])["metrics"]["test"]["top1"] for r in finals2)  # the test labels did change


def test_status_shows_both_stages(tmp_path, capsys):
    suite = write(tmp_path, SELECT_SUITE)
    assert main(["status", *_args(tmp_path, suite)]) == 0
    out = capsys.readouterr().out
    assert "tune lr=0.0001" in out and "model selection: 0 group(s) decided" in out
