"""`--only` filters that cannot hurt (issue 23, item 1): a filter that matches no run is a usage
error naming the values that exist; a filtered `bench run` never rewrites the suite's report from a
subset; `bench report --only` writes its own folder; a command that finds no results names the
folder it read, and where the suite's checkout keeps them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import Exit
from report_fixtures import write_suite


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tmp_path):
    """A finished synthetic suite (2 methods × 3 seeds) and its report, built by `bench report`."""
    path, specs = write_suite(tmp_path)
    args = [str(path), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert main(["report", *args]) == Exit.OK
    report = tmp_path / "reports" / "syn"
    assert "6 of 6 runs done" in (report / "report.md").read_text()
    return path, args, report


@pytest.mark.parametrize("command", ["run", "report", "status", "validate", "plan"])
def test_only_matching_no_run_is_a_usage_error_naming_the_values(finished, capsys, command):
    path, args, report = finished
    before = _snapshot(report.parent)
    capsys.readouterr()
    extra = ["--executor", "debug"] if command == "run" else []
    assert main([command, *(args if command != "validate" else [str(path)]), *extra, "--only", "method=foo"]) == Exit.USAGE
    out = capsys.readouterr().out
    assert "--only method=foo matches no run; method is one of: sft, grpo_rm" in out
    assert _snapshot(report.parent) == before  # the report, byte for byte, and no new folder


def test_only_names_each_keys_values(finished, capsys):
    _, args, _ = finished
    assert main(["status", *args, "--only", "method=sft,seed=7"]) == Exit.USAGE
    assert "--only method=sft,seed=7 matches no run; method is one of: sft, grpo_rm; seed is one of: 0, 1, 2" in capsys.readouterr().out


def test_filtered_run_on_a_finished_suite_keeps_the_full_report(finished, capsys):
    _, args, report = finished
    before = _snapshot(report.parent)
    assert main(["run", *args, "--executor", "debug", "--only", "method=sft"]) == Exit.OK
    out = capsys.readouterr().out
    assert f"the suite's report {report}/ is left as it is" in out
    after = _snapshot(report.parent)
    assert set(after) == set(before)
    text = (report / "report.md").read_text()
    assert "6 of 6 runs done" in text and "GRPO-RM" in text and "SFT" in text
    assert after == before  # nothing ran: not rewritten, byte for byte


def test_filtered_run_reports_every_finished_run_of_the_suite(finished, capsys):
    """When the report is rebuilt after a filtered run (here: no report yet), it covers the whole suite."""
    _, args, report = finished
    for p in report.iterdir():
        p.unlink()
    report.rmdir()
    assert main(["run", *args, "--executor", "debug", "--only", "method=sft"]) == Exit.OK
    text = (report / "report.md").read_text()
    assert "6 of 6 runs done" in text and "GRPO-RM (n=3)" in text and "SFT (n=3)" in text
    assert not list(report.parent.glob("syn--only-*"))


def test_report_only_writes_the_subset_to_its_own_folder(finished, capsys):
    _, args, report = finished
    before = _snapshot(report)
    assert main(["report", *args, "--only", "method=sft"]) == Exit.OK
    out = capsys.readouterr().out
    subset = report.parent / "syn--only-method-sft"
    assert _snapshot(report) == before  # the suite's report is untouched
    text = (subset / "report.md").read_text()
    assert "3 of 3 runs done" in text and "Subset report: only the runs with method=sft (3 of the suite's 6 runs)" in text
    assert "Subset report" in "\n".join(text.splitlines()[:4])
    assert "Subset report: only the runs with method=sft" in "\n".join(out.splitlines()[:4])
    assert f"{subset}/report.html" in out


def test_report_from_another_directory_names_where_it_looked(finished, tmp_path, capsys, monkeypatch):
    path, _, _ = finished
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["report", str(path)]) == Exit.OK
    out = capsys.readouterr().out
    assert f"no results under ./results; the suite's checkout has them in {tmp_path / 'results'}: pass --results {tmp_path / 'results'}" in out
    assert main(["status", str(path)]) == Exit.OK
    assert f"pass --results {tmp_path / 'results'}" in capsys.readouterr().out


def test_nothing_found_names_the_absolute_folder(tmp_path, capsys, monkeypatch):
    path, _ = write_suite(tmp_path / "suite", skip={(m, s) for m in ("sft", "grpo_rm") for s in range(3)})
    monkeypatch.chdir(tmp_path)
    assert main(["status", str(path), "--results", "store"]) == Exit.OK
    assert f"no finished runs in {tmp_path / 'store' / 'syn'}" in capsys.readouterr().out
