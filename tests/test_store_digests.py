"""Every stored number digested and verified, and no write, move or deletion through a link
(docs/reliability.md). Each damage test changes one digit (or byte) of one stored file kind and
checks that the run reads `corrupt`, that `run_job` recomputes only what depends on that file,
and that the numbers come back as they were."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench import evaluate
from bench.features import clear_cache
from bench.job import run_job
from bench.store import RunDir
from bench.suite import expand, load_suite
from conftest import tiny_config
from test_store import ONE_RUN_SUITE, crash_on_save, rows
from test_suite import write


def scored_units(monkeypatch) -> list[str]:
    """The evaluation units scored from the weights (not read back from their saved files)."""
    scored: list[str] = []
    real = evaluate.score_unit

    def spy(protocol, job, run_dir, unit):
        scored.append(unit)
        return real(protocol, job, run_dir, unit)

    monkeypatch.setattr(evaluate, "score_unit", spy)
    return scored


def change_a_digit(path: Path, pattern: str = r'"top1": (0\.\d*?)(\d)') -> None:
    """Change the last digit of the first number matching ``pattern`` (a plausible edit, still valid JSON)."""
    text = path.read_text()
    m = re.search(pattern, text)
    assert m, f"no number to change in {path}"
    digit = m.group(2)
    path.write_text(text[: m.start(2)] + str((int(digit) + 1) % 10) + text[m.end(2):])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def predictions_of(run_dir: RunDir) -> dict[str, np.ndarray]:
    with np.load(run_dir.predictions) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> RunDir:
    """One finished tiny run: the numbers every repaired run must give back."""
    run_dir = RunDir(tmp_path_factory.mktemp("clean") / "run")
    run_job(tiny_config("sft"), run_dir)
    return run_dir


def finished_copy(clean: RunDir, tmp_path: Path) -> RunDir:
    """A byte-for-byte copy of the clean run (cheaper than training it again)."""
    import shutil

    target = tmp_path / "run"
    shutil.copytree(clean.path, target, ignore=shutil.ignore_patterns("lock.json"))
    run_dir = RunDir(target)
    assert run_dir.effective_state() == "done" and run_dir.corruption() is None
    return run_dir


def test_a_changed_digit_in_a_saved_evaluation_unit_is_caught_and_only_that_unit_is_scored_again(clean, tmp_path, monkeypatch):
    run_dir = finished_copy(clean, tmp_path)
    units = sorted(run_dir.evaluations_dir.glob("*.json"))
    assert len(units) >= 2, "the tiny run scores several units"
    damaged = next(p for p in units if p.name.startswith("test-"))
    change_a_digit(damaged)
    problem = run_dir.corruption()
    assert problem is not None and problem.path == damaged and "digest mismatch" in problem.reason
    assert run_dir.effective_state() == "corrupt" and not run_dir.is_done()
    log = run_dir.metrics.read_bytes()

    scored = scored_units(monkeypatch)
    result = run_job(tiny_config("sft"), run_dir)
    assert scored == ["test"]
    assert result["metrics"] == clean.read_result()["metrics"] and run_dir.metrics.read_bytes() == log  # nothing trained
    assert run_dir.effective_state() == "done" and run_dir.corruption() is None
    assert len(list(run_dir.evaluations_dir.glob("*.corrupt-*"))) == 1 and len(list(run_dir.path.glob("result.json.superseded-*"))) == 1


def test_a_changed_unit_with_result_json_missing_is_never_sealed_into_a_new_result(clean, tmp_path, monkeypatch):
    """The hostile tester's case: the edited unit was reused and digested into a fresh result.json."""
    run_dir = finished_copy(clean, tmp_path)
    damaged = next(p for p in run_dir.evaluations_dir.glob("test-*.json"))
    change_a_digit(damaged)
    run_dir.result_file.unlink()
    assert run_dir.effective_state() == "corrupt"
    scored = scored_units(monkeypatch)
    result = run_job(tiny_config("sft"), run_dir)
    assert scored == ["test"] and result["metrics"] == clean.read_result()["metrics"]


def test_damaged_predictions_npz_is_corrupt_and_rebuilt_from_the_saved_units_without_scoring(clean, tmp_path, monkeypatch):
    run_dir = finished_copy(clean, tmp_path)
    before = predictions_of(run_dir)
    flip_a_byte(run_dir.predictions)
    problem = run_dir.corruption()
    assert problem is not None and problem.path == run_dir.predictions and "result.json records" in problem.reason
    assert run_dir.effective_state() == "corrupt"
    log = run_dir.metrics.read_bytes()

    scored = scored_units(monkeypatch)
    result = run_job(tiny_config("sft"), run_dir)
    assert scored == []  # every unit read back from its verified file
    after = predictions_of(run_dir)
    assert sorted(after) == sorted(before) and all(np.array_equal(after[k], before[k]) for k in before)
    assert result["metrics"] == clean.read_result()["metrics"] and run_dir.metrics.read_bytes() == log
    assert run_dir.corruption() is None and len(list(run_dir.path.glob("predictions.npz.corrupt-*"))) == 1


def test_damaged_predictions_and_unit_rescore_only_that_unit_from_the_final_weights(clean, tmp_path, monkeypatch):
    run_dir = finished_copy(clean, tmp_path)
    before = predictions_of(run_dir)
    flip_a_byte(run_dir.predictions)
    change_a_digit(next(run_dir.evaluations_dir.glob("test-*.json")))
    scored = scored_units(monkeypatch)
    run_job(tiny_config("sft"), run_dir)
    after = predictions_of(run_dir)
    assert scored == ["test"] and all(np.array_equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("damage", ["digit", "truncate", "delete"])
def test_a_changed_truncated_or_deleted_metrics_log_of_a_finished_run_is_corrupt(clean, tmp_path, damage):
    run_dir = finished_copy(clean, tmp_path)
    if damage == "digit":
        change_a_digit(run_dir.metrics, r'"loss": (\d+\.\d*?)(\d)')
    elif damage == "truncate":
        run_dir.metrics.write_text("".join(run_dir.metrics.read_text().splitlines(keepends=True)[:-1]))  # a whole last line gone
    else:
        run_dir.metrics.unlink()
    problem = run_dir.corruption()
    assert problem is not None and problem.path == run_dir.metrics, problem
    assert run_dir.effective_state() == "corrupt" and not run_dir.is_done()


def test_a_changed_digit_in_the_metrics_log_is_rebuilt_to_the_original_numbers(clean, tmp_path):
    run_dir = finished_copy(clean, tmp_path)
    change_a_digit(run_dir.metrics, r'"loss": (\d+\.\d*?)(\d)')
    assert run_dir.effective_state() == "corrupt"
    clear_cache()
    result = run_job(tiny_config("sft"), run_dir)  # the log is training output: trained again to rebuild it
    assert rows(run_dir) == rows(clean) and result["metrics"] == clean.read_result()["metrics"]
    assert run_dir.corruption() is None and len(list(run_dir.path.glob("metrics.jsonl.corrupt-*"))) == 1


def test_a_changed_digit_in_the_log_of_an_unfinished_run_is_caught_by_its_checkpoint_digest(clean, tmp_path, monkeypatch):
    run_dir = RunDir(tmp_path / "run")
    crash_on_save(monkeypatch, 1)  # killed right after epoch 1's checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_job(tiny_config("sft"), run_dir)
    monkeypatch.undo()
    change_a_digit(run_dir.metrics, r'"loss": (\d+\.\d*?)(\d)')
    problem = run_dir.corruption()
    assert problem is not None and problem.path == run_dir.metrics and "metrics.jsonl.sha256 records" in problem.reason
    clear_cache()
    result = run_job(tiny_config("sft"), run_dir)
    assert rows(run_dir) == rows(clean) and result["metrics"] == clean.read_result()["metrics"]


def test_a_changed_byte_in_a_finished_runs_checkpoint_is_corrupt_and_never_reused(clean, tmp_path, monkeypatch):
    run_dir = finished_copy(clean, tmp_path)
    flip_a_byte(run_dir.checkpoint)
    problem = run_dir.corruption()
    assert problem is not None and problem.path == run_dir.checkpoint and "fails its SHA-256 check" in problem.reason
    assert run_dir.effective_state() == "corrupt"
    clear_cache()
    result = run_job(tiny_config("sft"), run_dir)
    status = run_dir.read_status()
    assert "last.pt fails its SHA-256 check" in status["resume_note"] and len(list(run_dir.path.glob("last.pt.corrupt-*"))) == 1
    # a finished run keeps no prev.pt (bench run --keep-checkpoints aside): trained again from step 0, to the same numbers
    assert not run_dir.prev_checkpoint.exists() and "restarting from step 0" in status["resume_note"]
    assert result["metrics"] == clean.read_result()["metrics"] and rows(run_dir) == rows(clean)
    assert run_dir.corruption() is None and not run_dir.prev_checkpoint.exists()


# ---- links -------------------------------------------------------------------------------------

def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def someone_elses_run(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "their_run"
    victim.mkdir(parents=True)
    for name in ("result.json", "status.json", "last.pt", "prev.pt", "metrics.jsonl"):
        (victim / name).write_text(f"their {name}\n")
    return victim


@pytest.mark.parametrize("force", [False, True])
def test_a_symlinked_run_folder_is_refused_and_its_target_untouched(tmp_path, capsys, force):
    suite = write(tmp_path, ONE_RUN_SUITE)
    spec = expand(load_suite(suite), suite)[0]
    victim = someone_elses_run(tmp_path)
    before = tree_digest(victim)
    link = RunDir.of(tmp_path / "results", spec.suite, spec.run_id).path
    link.parent.mkdir(parents=True)
    link.symlink_to(victim, target_is_directory=True)
    args = [str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert main(["run", *args, *(["--force"] if force else [])]) == 2
    assert f"{link}: is a symbolic link to {victim}" in capsys.readouterr().out
    assert tree_digest(victim) == before and sorted(p.name for p in victim.iterdir()) == sorted(before)
    assert main(["status", *args]) == 1 and "symbolic link" in capsys.readouterr().out
    with pytest.raises(Exception, match="symbolic link"):
        run_job(spec.config, RunDir.of(tmp_path / "results", spec.suite, spec.run_id))
    assert tree_digest(victim) == before


@pytest.mark.parametrize("force", [False, True])
def test_a_run_folder_holding_a_symlinked_file_is_refused_and_the_target_untouched(tmp_path, capsys, force):
    suite = write(tmp_path, ONE_RUN_SUITE)
    spec = expand(load_suite(suite), suite)[0]
    victim = someone_elses_run(tmp_path)
    before = tree_digest(victim)
    run_dir = RunDir.of(tmp_path / "results", spec.suite, spec.run_id)
    run_dir.path.mkdir(parents=True)
    run_dir.metrics.symlink_to(victim / "metrics.jsonl")
    args = [str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert main(["run", *args, *(["--force"] if force else [])]) == 2
    assert f"{run_dir.metrics}: is a symbolic link to {victim / 'metrics.jsonl'}" in capsys.readouterr().out
    assert tree_digest(victim) == before and run_dir.metrics.is_symlink()


def test_a_symlinked_suite_folder_pointing_outside_the_results_folder_is_refused(tmp_path, capsys):
    suite = write(tmp_path, ONE_RUN_SUITE)
    spec = expand(load_suite(suite), suite)[0]
    victim = tmp_path / "elsewhere"
    someone_elses_run(tmp_path)
    (victim / spec.run_id).mkdir()
    before = tree_digest(victim)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / spec.suite).symlink_to(victim, target_is_directory=True)
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), "--force"]) == 2
    assert "outside" in capsys.readouterr().out and tree_digest(victim) == before


def test_a_symlinked_report_folder_is_refused_and_its_target_untouched(tmp_path, capsys):
    suite = write(tmp_path, ONE_RUN_SUITE)
    name = load_suite(suite).name
    victim = tmp_path / "their_report"
    victim.mkdir()
    for file in ("report.md", "summary.csv", "manifest.json"):
        (victim / file).write_text(f"their {file}\n")
    (victim / "manifest.json").write_text(json.dumps({"files": ["report.md", "summary.csv"]}))
    before = tree_digest(victim)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / name).symlink_to(victim, target_is_directory=True)
    assert main(["report", str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]) == 2
    assert f"{tmp_path / 'reports' / name}: is a symbolic link to {victim}" in capsys.readouterr().out
    assert tree_digest(victim) == before
