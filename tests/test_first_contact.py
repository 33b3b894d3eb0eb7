"""What a new user meets first: light imports, the validate summary, status counts and --json,
exit codes, weights checked before launch, Ctrl-C, progress through evaluation, evaluation that
resumes split by split, shell completion, the XDG cache. (Latency itself is a benchmark:
benchmarks/cli_latency.py; here only what can be checked without a clock.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.cli import EXECUTORS, INTERRUPTED, MAX_RUNS_HELP, main
from bench.errors import EXIT_HELP, Exit
from bench.suite import MAX_RUNS
from test_cli_run import TINY_SUITE
from test_suite import write

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HEAVY = ("torch", "torchvision", "timm", "pandas", "matplotlib", "scipy", "sklearn")


def _bench(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "bench.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600, **kw)


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    out = subprocess.run([PYTHON, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return [m for m in (out.stderr.rstrip("\n").splitlines() or [""])[-1].split(",") if m]


# ---- fast paths import nothing heavy ------------------------------------------------------------

def test_help_validate_and_status_never_import_torch_pandas_or_matplotlib(tmp_path):
    suite = write(tmp_path, TINY_SUITE)
    assert _imported_after("import bench.cli") == []
    assert _imported_after(f"from bench.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass") == []
    assert _imported_after(f"from bench.cli import main\nmain(['validate', {str(suite)!r}])") == []
    assert _imported_after(f"from bench.cli import main\nmain(['status', {str(suite)!r}, '--results', {str(tmp_path / 'r')!r}])") == []


def test_static_names_in_the_parser_match_the_registries():
    from bench.launch import LAUNCHERS

    assert sorted(EXECUTORS) == LAUNCHERS.names()
    assert MAX_RUNS_HELP == f"{MAX_RUNS:,}"


def test_help_lists_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert [int(code) for code in EXIT_HELP] == [0, 1, 2, 3, 4, 130, 141]
    for code, text in EXIT_HELP.items():
        assert f"  {int(code):<4} {text}" in out


# ---- validate: a summary, not a line per run ----------------------------------------------------

BIG = """
name: big
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  data: {name: fmnist_composites, params: {img_size: 28, train_size: 32, eval_size: 16}}
matrix:
  method: [sft, grpo_rm]
  seed: [0, 1, 2, 3, 4]
  train.lr: [1.0e-4, 3.0e-4, 1.0e-3]
"""


def test_validate_summarises_axes_profiles_splits_and_unstated_defaults(tmp_path, capsys):
    path = write(tmp_path, BIG)
    assert main(["validate", str(path)]) == Exit.OK
    out = capsys.readouterr().out
    assert "suite 'big', 30 runs" in out
    assert "matrix.method: sft, grpo_rm" in out and "matrix.seed: 0, 1, 2, 3, 4" in out
    assert "profile default: 30 run(s)" in out
    # fmnist_composites' defaults: test (id) + the three composite shifts
    assert "30 run(s) on fmnist_composites evaluate 4 unit(s) each: id 1 split (test); shift 3 splits (shift_background, shift_palette, shift_corruption)" in out
    assert "evaluations not set: every run scores ['id', 'shift']" in out
    assert "data.eval_splits not set: fmnist_composites scores its 4 default evaluation splits" in out
    assert "train.epochs not set: 10 epochs" in out and "data.val_fraction not set: 10%" in out
    assert "backbone.weights: random for dinov2_tiny" in out
    assert "(run " not in out  # no line per run
    assert main(["validate", str(path), "--list"]) == Exit.OK
    assert capsys.readouterr().out.count("(run ") == 30


def test_defaults_a_suite_states_are_not_reported(tmp_path, capsys):
    stated = BIG.replace("params: {img_size: 28, train_size: 32, eval_size: 16}}",
                         "params: {img_size: 28, train_size: 32, eval_size: 16}, eval_splits: [test], val_fraction: 0.2}\n  train: {epochs: 2}")
    stated = stated.replace("name: big\n", "name: big\nevaluations: [id]\n")
    assert main(["validate", str(write(tmp_path, stated))]) == Exit.OK
    out = capsys.readouterr().out
    assert "evaluate 1 unit(s) each: id 1 split (test)" in out
    for unset in ("evaluations not set", "eval_splits not set", "val_fraction not set", "epochs not set"):
        assert unset not in out


# ---- status: counts, compact table, --json, exit 1 on failure -----------------------------------

def test_status_counts_compact_view_json_and_failure_exit(tmp_path, capsys):
    from bench.store import RunDir
    from bench.suite import expand, load_suite

    path = write(tmp_path, TINY_SUITE)
    results = tmp_path / "results"
    specs = expand(load_suite(path), path)
    args = ["status", str(path), "--results", str(results)]
    assert main(args) == Exit.OK
    out = capsys.readouterr().out
    assert "2 runs: 2 pending" in out
    header = next(line for line in out.splitlines() if "state" in line and "run" in line)
    for silent in ("job", "scheduler", "attempts", "error", "profile", "dataset"):  # nothing to say: not shown
        assert silent not in header.split(), silent
    RunDir.of(results, specs[0].suite, specs[0].run_id).set_status("failed", error="ValueError: boom")
    RunDir.of(results, specs[1].suite, specs[1].run_id).set_status("interrupted", total_steps=2)
    assert main(args) == Exit.RUNS_FAILED
    out = capsys.readouterr().out
    assert "2 runs: 1 interrupted, 1 failed" in out and "interrupted" in out and "ValueError: boom" in out
    assert main([*args, "--json"]) == Exit.RUNS_FAILED
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"interrupted": 1, "failed": 1}
    assert {r["run"]: r["state"] for r in report["runs"]} == {specs[0].run_id: "failed", specs[1].run_id: "interrupted"}
    assert main([*args, "--wide"]) == Exit.RUNS_FAILED
    assert "scheduler" in capsys.readouterr().out


def test_scheduler_states_read_sacct_through_submitit_parser(tmp_path, monkeypatch):
    from bench.launch import scheduler_states

    fake = tmp_path / "sacct"
    fake.write_text("#!/bin/sh\ncat <<'EOF'\nJobID|State\n180_[0-2%4]|PENDING\n181|RUNNING\n182_5|CANCELLED by 0\n182_5.batch|CANCELLED\nEOF\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    states = scheduler_states(["180", "181", "182_5"])
    assert states == {"180_0": "PENDING", "180_1": "PENDING", "180_2": "PENDING", "181": "RUNNING", "182_5": "CANCELLED"}


# ---- weights checked before launch --------------------------------------------------------------

def test_an_unreachable_hub_is_reported_at_once_with_the_offline_fix(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    suite = write(tmp_path, TINY_SUITE.replace("name: dinov2_tiny, weights: random", "name: dinov2_vits14, weights: pretrained"))
    started = time.monotonic()
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]) == Exit.MISSING_INPUT
    out = capsys.readouterr().out
    assert "backbone dinov2_vits14 (pretrained)" in out and "did not answer" in out and "Set backbone.checkpoint" in out
    assert not (tmp_path / "results" / "tiny").exists()
    assert time.monotonic() - started < 60  # generous: the point is no per-run hub retries (50+ s each)


def test_weights_in_the_local_hub_cache_need_no_network(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from bench.weights import backbone_problem, hub_file

    repo, filename = hub_file("dinov2_vits14")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert "did not answer" in backbone_problem("dinov2_vits14", None)
    snapshot = tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(b"weights")
    (tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0" * 40)
    assert backbone_problem("dinov2_vits14", None) is None


# ---- progress through evaluation; evaluation resumes split by split ------------------------------

def test_progress_covers_training_then_each_evaluation_unit_and_status_shows_the_phase(tmp_path):
    from bench.job import run_job
    from bench.store import RunDir
    from conftest import tiny_config

    cfg = tiny_config().model_copy(update={"evaluations": ("heldout", "id", "shift")})
    run_dir = RunDir(tmp_path / "run")
    events, phases = [], []

    def record(event):
        events.append(event)
        phases.append(run_dir.read_status().get("phase"))

    run_job(cfg, run_dir, progress=record)
    train = [e for e in events if e.phase == "train"]
    evaluate = [e for e in events if e.phase == "evaluate"]
    units = len(cfg.evaluation_splits())  # heldout + the id and shift splits
    assert train and train[-1].step == train[-1].total
    assert [e.step for e in evaluate] == list(range(1, units + 1)) and {e.total for e in evaluate} == {units}
    assert [e.detail for e in evaluate] == list(cfg.evaluation_splits())
    assert events.index(evaluate[0]) > events.index(train[-1])  # training, then evaluation
    seen = list(zip(events, phases))  # the status phase when each event came
    assert events[0].phase == "prepare" and events[0].detail == "preparing data"  # the data-preparation phase comes first
    assert {p for e, p in seen if e.phase == "train"} == {"train"} and {p for e, p in seen if e.phase == "evaluate"} == {"evaluate"}
    status = run_dir.read_status()
    assert status["evaluated"] == status["evaluations"] == units


def test_plain_progress_lines_when_stdout_is_not_a_terminal(tmp_path, capsys):
    suite = write(tmp_path, TINY_SUITE.replace("seed: [0]", "seed: [0]\n  method: [sft]").replace("  method: [sft, grpo_rm]\n", ""))
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]) == 0
    out = capsys.readouterr().out
    assert "run 1/1: sft seed=0" in out
    assert ": train epoch 1/1, step 2/2" in out  # 32 images, batch 16, 1 epoch (minus the held-out tenth: still 2 batches)
    assert ": evaluate 1/4 (test)" in out and ": evaluate 4/4 (shift_corruption)" in out
    # $BENCH_REPORT_FIGURES=0 (tests/conftest.py): tables and page, no figures, and the page says so
    report = tmp_path / "reports" / "tiny"
    assert (report / "report.html").is_file() and not list(report.glob("*.png"))
    assert "Figures: not drawn ($BENCH_REPORT_FIGURES=0)" in (report / "report.md").read_text()


def test_an_interrupted_evaluation_resumes_at_the_next_split_with_identical_numbers(tmp_path, monkeypatch):
    from bench import evaluate
    from bench.job import run_job
    from bench.store import RunDir
    from conftest import tiny_config

    cfg = tiny_config()
    reference = run_job(cfg, RunDir(tmp_path / "reference"))["metrics"]
    scored: list[str] = []
    real_score = evaluate.score_split

    def score(run, split):
        if len(scored) == 3 and not (tmp_path / "interrupted").exists():
            (tmp_path / "interrupted").touch()
            raise KeyboardInterrupt  # Ctrl-C while the fourth split is being scored
        scored.append(split)
        return real_score(run, split)

    monkeypatch.setattr(evaluate, "score_split", score)
    run_dir = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, run_dir)
    assert run_dir.read_status()["state"] == "interrupted" and len(scored) == 3
    result = run_job(cfg, run_dir)
    splits = list(cfg.evaluation_splits())
    assert scored == splits  # the first three were not scored again
    assert json.dumps(result["metrics"], sort_keys=True) == json.dumps(reference, sort_keys=True)
    # different weights (a retrained run) never reuse those scores
    monkeypatch.setattr(RunDir, "weights_digest", lambda self: "other")
    assert run_dir.saved_evaluation(splits[0]) is None


# ---- Ctrl-C: one line, exit 130; the rerun says where it resumes ---------------------------------

def test_ctrl_c_prints_one_line_and_the_rerun_says_where_it_resumes(tmp_path):
    suite = write(tmp_path, TINY_SUITE.replace("epochs: 1", "epochs: 2").replace("  method: [sft, grpo_rm]\n", "  method: [sft]\n"))
    hold = tmp_path / "hold"
    hold.touch()
    results = tmp_path / "results"
    args = ["run", str(suite), "--results", str(results), "--reports", str(tmp_path / "reports")]
    # a shell's background jobs (`make test &`, CI runners) start with SIGINT ignored, and a process
    # inherits that: restore the default so that Python installs its KeyboardInterrupt handler
    proc = subprocess.Popen([PYTHON, "-m", "bench.cli", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "BENCH_HOLD_AFTER_EPOCH": str(hold)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        status = next(iter(results.glob("tiny/*/status.json")), None)
        while status is None or json.loads(status.read_text() or "{}").get("held_after_epoch") != 1:
            assert proc.poll() is None and time.monotonic() < deadline, "the run never reached the barrier"
            time.sleep(0.2)
            status = next(iter(results.glob("tiny/*/status.json")), None)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == Exit.INTERRUPTED, out
    assert out.rstrip().splitlines()[-1] == INTERRUPTED and "Traceback" not in out
    assert json.loads(status.read_text())["state"] == "interrupted"
    hold.unlink()
    rerun = _bench(*args)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "resuming sft seed=0 fmnist_composites" in rerun.stdout and "from epoch 1, step 2" in rerun.stdout


# ---- shell completion, cache location -----------------------------------------------------------

def test_shell_completion_offers_commands_and_suite_files(tmp_path):
    def complete(line: str) -> list[str]:
        out = tmp_path / "completions"
        env = {"_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line, "COMP_POINT": str(len(line)),
               "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
        done = subprocess.run([PYTHON, "-m", "bench.cli"], cwd=REPO, capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return [c.strip() for c in out.read_text().split("\n")]

    assert "validate" in complete("bench val")
    assert complete("bench validate suites/de") == ["suites/demo.yaml", "suites/demo_seg.yaml"]


def test_cache_follows_xdg_cache_home_unless_bench_cache_is_set(tmp_path, monkeypatch):
    from bench.io import cache_dir

    monkeypatch.delenv("BENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("weights") == tmp_path / "xdg" / "grpo-rm-bench" / "weights"
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "own"))
    assert cache_dir("weights") == tmp_path / "own" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("BENCH_CACHE")
    assert cache_dir("x") == Path.home() / ".cache" / "grpo-rm-bench" / "x"
