"""`bench run` end to end on a tiny suite: results, report files, and rerun = resume/skip."""

from __future__ import annotations

import json

from bench.cli import main
from test_suite import write

TINY_SUITE = """
name: tiny
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  model: {trainable_blocks: 1}
  data: {name: fmnist_composites, params: {img_size: 28, train_size: 32, eval_size: 16}}
  train: {epochs: 1, batch_size: 16}
matrix:
  method: [sft, grpo_rm]
  seed: [0]
"""


def test_bench_run_writes_results_and_report_then_skips_done_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_REPORT_FIGURES", "1")  # the whole user path, figures included
    suite = write(tmp_path, TINY_SUITE)
    args = [str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    # the headline (the verdict box's sentences) and where the report is; the tables stay in the report
    import html

    page = html.unescape((tmp_path / "reports" / "tiny" / "report.html").read_text())
    bullets = [line[2:] for line in out.splitlines() if line.startswith("- ")]
    assert bullets and all(f"<li>{b}</li>" in page for b in bullets), bullets  # the verdict box's headline, sentence for sentence
    assert "2 of 2 runs done." in out and f"{tmp_path / 'reports' / 'tiny'}/report.html" in out
    assert "| SFT (n=1) | GRPO-RM (n=1) | Δ GRPO-RM − SFT |" not in out and "fmnist_composites (random init) | id | test |" not in out
    assert "| SFT (n=1) | GRPO-RM (n=1) | Δ GRPO-RM − SFT |" in (tmp_path / "reports" / "tiny" / "report.md").read_text()  # …which has them
    results = sorted((tmp_path / "results" / "tiny").glob("*/result.json"))
    assert len(results) == 2
    table = (tmp_path / "reports" / "tiny" / "table_id.md").read_text()
    assert "RANDOM INIT (not pretrained)" in table
    assert (tmp_path / "reports" / "tiny" / "bars.png").stat().st_size > 1000
    assert (tmp_path / "reports" / "tiny" / "report.html").stat().st_size > 1000
    before = {p: p.stat().st_mtime_ns for p in results}

    monkeypatch.setenv("BENCH_REPORT_FIGURES", "0")  # from here on the test is about what reruns, not figures
    assert main(["run", *args]) == 0  # everything is done: nothing reruns
    assert main(["report", *args, "--full"]) == 0  # --full: the tables printed as well
    assert "| SFT (n=1) | GRPO-RM (n=1) | Δ GRPO-RM − SFT |" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in results} == before
    assert main(["run", *args, "--force"]) == 0
    assert all(p.stat().st_mtime_ns != before[p] for p in results)
    assert {json.loads(p.read_text())["method"] for p in results} == {"sft", "grpo_rm"}


def test_failed_run_is_recorded_and_others_finish(tmp_path, capsys):
    suite = write(tmp_path, TINY_SUITE.replace("weights: random", "weights: pretrained, checkpoint: /nonexistent/dinov2.pth").replace("dinov2_tiny", "dinov2_vits14"))
    args = [str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    # checked before launch: exit 3, the file named, nothing written
    assert main(["run", *args]) == 3
    out = capsys.readouterr().out
    assert "/nonexistent/dinov2.pth does not exist" in out and "nothing was launched" in out
    assert not (tmp_path / "results" / "tiny").exists()
    # past the check (only compute nodes see the file, say), each run fails and is recorded
    assert main(["run", *args, "--skip-data-check"]) == 1
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "results" / "tiny").glob("*/status.json")]
    assert len(statuses) == 2 and all(s["state"] == "failed" for s in statuses)
    assert all("/nonexistent/dinov2.pth" in s["error"] and "Traceback" in s["traceback"] for s in statuses)
    assert not list((tmp_path / "results" / "tiny").glob("*/result.json"))
    assert "2 run(s) failed" in capsys.readouterr().out


def test_dry_run_prints_matrix_resources_and_sbatch_script_without_submitting(tmp_path, capsys):
    suite = write(tmp_path, TINY_SUITE.replace("matrix:", "resources:\n  default: {cpus: 3, mem_gb: 5, time_min: 42, partition: gpu, qos: high, array_parallelism: 4}\nmatrix:"))
    args = [str(suite), "--results", str(tmp_path / "results")]
    assert main(["run", *args, "--executor", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 0 done, 2 to run" in out
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --cpus-per-task=3", "#SBATCH --mem=5120M", "#SBATCH --time=42",
                 "#SBATCH --partition=gpu", "#SBATCH --qos=high", "#SBATCH --job-name=bench-tiny-default"):
        assert line in out, line
    assert not (tmp_path / "results").exists()  # nothing submitted, nothing written
