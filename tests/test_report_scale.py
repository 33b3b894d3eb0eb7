"""Bookkeeping at scale (issue 24): the faster paths give the numbers the plain ones give, and the
caches between commands (verification ledger, remembered estimates, per-run aggregates, figures)
are safe — a changed run, a damaged cache or a damaged store file is never taken on trust."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench import ledger as ledgers
from bench.report import build_report, dist, figures, worker
from bench.report.aggregate import _describe, _describe_complete, describe_groups
from bench.store import RunDir
from bench.suite import expand, load_suite
from bench.synthetic_store import write_run
from test_suite import write

SUITE = """
name: tiny-scale
description: a small synthetic suite written through the store's record API
evaluations: [id, shift]
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  data: {name: fmnist_composites, params: {img_size: 28, train_size: 48, eval_size: 24}, eval_splits: [test, shift_background, "gen/contrast/[13]"]}
methods:
  grpo_rm: {epsilon: 0.2}
primary: {split: ood_avg, metric: top1, treatment: grpo_rm, control: sft}
matrix:
  method: [sft, grpo_rm, {name: grpo_rm, params: {mu: 2}}]
  seed: [0, 1, 2]
"""
COMPARED = ("summary.csv", "delta.csv", "verdict.csv", "severity.csv", "runs.csv", "results_long.csv", "report.md", "table_id.csv",
            "table_ood.csv", "table_calibration.csv", "table_ablation.csv")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The tiny suite's store with its last run unfinished, and a cache of this test's own."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    path = write(tmp_path, SUITE, "tiny.yaml")
    specs = expand(load_suite(path), path)
    for spec in specs[:-1]:
        write_run(spec, tmp_path / "results", images=40, checkpoint_bytes=256)
    return path, specs


def report(path, specs, root: Path, folder: str, cache: bool) -> dict[str, str]:
    suite = load_suite(path)
    with ledgers.ledger_scope():
        build_report(suite, specs, root / "results", root / "reports", path, folder=folder, cache=cache)
    return {name: (root / "reports" / folder / name).read_text() for name in COMPARED if (root / "reports" / folder / name).is_file()}


def test_incremental_and_cached_reports_equal_a_report_from_scratch(store, tmp_path):
    path, specs = store
    report(path, specs, tmp_path, "cached", cache=True)  # the first 8 runs: caches filled
    write_run(specs[-1], tmp_path / "results", images=40, checkpoint_bytes=256)  # one more run finishes
    incremental = report(path, specs, tmp_path, "cached", cache=True)
    fresh = report(path, specs, tmp_path, "fresh", cache=False)
    assert {"summary.csv", "delta.csv", "verdict.csv", "results_long.csv", "report.md", "table_ablation.csv"} <= set(fresh)
    assert incremental == fresh  # every number, table and sentence
    delta = pd.read_csv(tmp_path / "reports" / "fresh" / "delta.csv")
    assert (delta["ci_method"] == "crossed").any()  # the remembered estimates are the crossed ones
    again = report(path, specs, tmp_path, "cached", cache=True)  # all remembered now
    assert again == fresh


def test_a_damaged_or_stale_cache_is_not_trusted(store, tmp_path):
    path, specs = store
    write_run(specs[-1], tmp_path / "results", images=40, checkpoint_bytes=256)
    fresh = report(path, specs, tmp_path, "fresh", cache=False)
    report(path, specs, tmp_path, "cached", cache=True)
    caches = sorted((tmp_path / "cache" / "report-estimates").glob("*.json"))
    assert len(caches) == 1
    check, _, text = caches[0].read_text().partition("\n")
    body = json.loads(text)
    assert check == hashlib.sha256(text.encode()).hexdigest()  # the file proves itself by the hash of its very text
    for entry in body["entries"].values():  # every remembered number changed, the checksum left as it was
        if entry["kind"] == "estimate":
            entry["value"]["mean"] += 1.0
    caches[0].write_text(f"{check}\n{json.dumps(body, separators=(',', ':'))}")
    assert report(path, specs, tmp_path, "cached", cache=True) == fresh  # the checksum fails: all computed again
    (tmp_path / "cache" / "report-runs").joinpath(caches[0].name).write_text("{not json")
    assert report(path, specs, tmp_path, "cached", cache=True) == fresh
    # a run computed again with other numbers has another digest: nothing remembered of it is reused
    spec = specs[0]
    RunDir.of(tmp_path / "results", spec.suite, spec.run_id).clear_outputs()
    write_run(spec, tmp_path / "results", images=40, checkpoint_bytes=256, salt="computed again")
    rerun = report(path, specs, tmp_path, "fresh", cache=False)
    assert rerun["delta.csv"] != fresh["delta.csv"]
    assert report(path, specs, tmp_path, "cached", cache=True) == rerun


def test_the_ledger_skips_unchanged_runs_and_catches_changed_ones(store, tmp_path, monkeypatch):
    path, specs = store
    run = RunDir.of(tmp_path / "results", specs[0].suite, specs[0].run_id)
    monkeypatch.setattr(ledgers, "SETTLE_S", -3600.0)  # every file counts as settled: this test does not wait
    calls = []
    real = RunDir.damaged_evaluations
    monkeypatch.setattr(RunDir, "damaged_evaluations", lambda self: calls.append(self.path.name) or real(self))
    other = RunDir.of(tmp_path / "results", specs[1].suite, specs[1].run_id)
    with ledgers.ledger_scope():
        assert run.effective_state() == other.effective_state() == "done"
    assert calls == [run.path.name, other.path.name]  # verified in full, and recorded
    with ledgers.ledger_scope():
        assert run.effective_state() == "done" and run.record().facts["digest"]
    assert calls == [run.path.name, other.path.name]  # not verified again: nothing changed
    with open(run.predictions, "ab") as fh:  # damaged after it was recorded
        fh.write(b"\0")
    with ledgers.ledger_scope():
        assert run.effective_state() == "corrupt"
        assert "predictions.npz" in str(run.corruption())
    # a ledger that is not what was written is ignored: the run is verified again
    ledger_file = next((tmp_path / "cache" / "store-ledger").glob("*.json"))
    ledger_file.write_text(ledger_file.read_text().replace('"version"', '"versio"'))
    calls.clear()
    with ledgers.ledger_scope():
        assert other.effective_state() == "done"
    assert calls == [other.path.name]


def test_a_run_written_a_moment_ago_is_verified_in_full_every_time(store, tmp_path, monkeypatch):
    path, specs = store
    monkeypatch.setattr(ledgers, "SETTLE_S", 3600.0)  # "a moment ago" however slow the machine: no test by the clock
    write_run(specs[-1], tmp_path / "results", images=40, checkpoint_bytes=256)
    run = RunDir.of(tmp_path / "results", specs[-1].suite, specs[-1].run_id)
    assert ledgers.signature(run.path) is None  # its files changed less than SETTLE_S ago: the racy case
    with ledgers.ledger_scope():
        assert run.is_done()
        assert specs[-1].run_id not in ledgers.ledger_for(run.path).runs


def test_describe_groups_equals_pandas_groupby_apply():
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({
        "a": pd.array(rng.choice(["x", "y", None], n), dtype="string"), "b": pd.array(rng.integers(0, 4, n), dtype="Int64"),
        "c": pd.array(rng.choice([True, False], n), dtype="boolean"), "value": rng.normal(0.5, 0.2, n),
    })
    frame.loc[frame.index[::17], "value"] = np.nan
    frame.loc[frame.index[::29], "b"] = pd.NA
    keys = ["a", "b", "c"]
    expected = frame.groupby(keys, sort=False, dropna=False)["value"].apply(_describe).unstack().reset_index()
    pd.testing.assert_frame_equal(describe_groups(frame, keys), expected, check_exact=True)
    # many small groups (1 to 9 values: the vectorised path up to 7, the loop beyond), a few with gaps
    sizes = rng.integers(1, 10, 300)
    small = pd.DataFrame({"g": pd.array(np.repeat([f"g{i}" for i in range(len(sizes))], sizes), dtype="string"),
                          "value": rng.normal(0.6, 0.25, sizes.sum()) * rng.choice([1e-3, 1.0, 1e3], sizes.sum())})
    small.loc[small.index[::97], "value"] = np.nan
    small.loc[small.index[5::11], "value"] = 0.5  # ties
    expected = small.groupby(["g"], sort=False, dropna=False)["value"].apply(_describe).unstack().reset_index()
    pd.testing.assert_frame_equal(describe_groups(small, ["g"]), expected, check_exact=True)
    signed = small.assign(value=small["value"].where(small.index % 13 != 0, -0.0).where(small.index % 31 != 1, np.inf))
    with np.errstate(invalid="ignore"):  # inf − inf in a deviation: NaN, as pandas has it
        expected = signed.groupby(["g"], sort=False, dropna=False)["value"].apply(_describe).unstack().reset_index()
        pd.testing.assert_frame_equal(describe_groups(signed, ["g"]), expected, check_exact=True)  # negative zeros and infinities
    for size in (1, 2, 5, 9, 130):  # the fast path against the one it replaces, bit for bit
        x = rng.normal(0.7, 0.1, size)
        fast, plain = _describe_complete(x), list(_describe(pd.Series(x)).values)
        assert all(same(a, b) for a, b in zip(fast, plain))


def same(a: float, b: float) -> bool:
    """Equal bit for bit, NaN included."""
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("df", [0.7, 2.0, 4.0, 17.3, 1e5, 1e6, math.inf])
def test_scalar_distributions_equal_scipy_stats(df):
    for q in (0.001, 0.1, 0.5, 0.8, 0.975):
        assert same(dist.t_ppf(q, df), float(sps.t.ppf(q, df)))
        assert same(dist.norm_ppf(q), float(sps.norm.ppf(q)))
    for x in (-3.2, -0.1, 0.0, 1.7, 9.0):
        assert same(dist.t_sf(x, df), float(sps.t.sf(x, df))) and same(dist.t_cdf(x, df), float(sps.t.cdf(x, df)))
        if math.isfinite(df):
            for nc in (0.0, 1.3, 6.0, 40.0):
                assert same(dist.nct_sf(x, df, nc), float(sps.nct.sf(x, df, nc)))
                assert same(dist.nct_cdf(x, df, nc), float(sps.nct.cdf(x, df, nc)))
    if math.isfinite(df):
        assert same(dist.chi2_ppf(0.25, df), float(sps.chi2.ppf(0.25, df)))


def test_base_folders_are_torchvisions():
    import torchvision

    from bench.data.classification import BASE_FOLDERS

    readers = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100, "stl10": torchvision.datasets.STL10}
    assert BASE_FOLDERS == {name: reader.base_folder for name, reader in readers.items()}


def test_figures_cap_panels_and_keep_what_did_not_change(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    frame = pd.DataFrame({"model": [f"s{i // 3}" for i in range(60)], "arm": ["a", "b", "c"] * 20})
    shown, k, total = figures.first_settings(frame, 12)
    assert (k, total) == (12, 20) and list(dict.fromkeys(shown["model"])) == [f"s{i}" for i in range(12)]
    capped, note = figures.cap_models(frame, lambda g: g["arm"].nunique(), 12)  # 3 panels a setting: 4 settings
    assert capped["model"].nunique() == 4 and "first 4 of 20 settings" in note
    drawn = []

    def draw(data: pd.DataFrame, stem: Path) -> list[Path]:
        drawn.append(len(data))
        stem.with_suffix(".png").write_bytes(data.to_csv().encode())
        return [stem.with_suffix(".png")]

    figure = figures.Figure("bars", draw, (frame, tmp_path / "bars"))
    for _ in range(2):
        figures.draw_all([figure], tmp_path, True, lambda key: "")
    assert drawn == [60]  # the second report kept the file: same inputs, file unchanged
    (tmp_path / "bars.png").write_bytes(b"edited")
    figures.draw_all([figure], tmp_path, True, lambda key: "")
    assert drawn == [60, 60]  # a file that is not what was drawn is drawn again
    figures.draw_all([figures.Figure("bars", draw, (frame.iloc[:30], tmp_path / "bars"))], tmp_path, True, lambda key: "")
    assert drawn == [60, 60, 30]  # other inputs: drawn again


def test_sacct_is_asked_once_per_array(tmp_path, monkeypatch):
    from bench.launch import scheduler_states

    argv = tmp_path / "argv"
    fake = tmp_path / "sacct"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {argv}\nprintf 'JobID|State\\n180_1|RUNNING\\n180_2|PENDING\\n181|COMPLETED\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert scheduler_states(["180_1", "180_2", "181"]) == {"180_1": "RUNNING", "180_2": "PENDING", "181": "COMPLETED"}
    assert argv.read_text().split() == ["-X", "--parsable2", "-o", "JobID,State", "-j", "180,181"]


def test_a_large_status_table_is_plain_text_with_the_same_cells(monkeypatch):
    import io

    from rich.console import Console

    from bench import status

    rows = [{"run": f"r{i}", "stage": "final", "method": "sft", "seed": i, "dataset": "d", "profile": "default", "state": "done",
             "progress": "", "attempts": 1, "job": "", "scheduler": "", "error": "", "data": ""} for i in range(4)]
    console = Console(width=200, file=io.StringIO())
    console.print(status.status_table(rows))
    rich_cells = [[c.strip() for c in line.strip("│ ").split("│")] for line in console.file.getvalue().splitlines() if line.startswith("│")]
    monkeypatch.setattr(status, "RICH_ROWS", 2)
    text = status.status_table(rows)
    assert isinstance(text, str)
    assert [line.split() for line in text.splitlines()[2:]] == rich_cells


def test_a_slurm_launch_that_submits_builds_no_report(tmp_path, monkeypatch):
    """`bench run --executor slurm` returns once its jobs are submitted: the report is written by
    `bench report` (or a later `bench run`), never by the login node while jobs run."""
    from bench import cli, launch
    from bench.launch import RunOutcome

    path = write(tmp_path, SUITE, "tiny.yaml")
    monkeypatch.setattr(launch, "launch_suite", lambda executor, source, results, options, console, first=None:
                        [RunOutcome(s, "submitted") for s in expand(load_suite(path), path)])
    built = []
    monkeypatch.setattr("bench.report.build_report", lambda *a, **k: built.append(a))
    code = cli.main(["run", str(path), "--executor", "slurm", "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"),
                     "--skip-data-check"])
    assert code == 0 and built == []


@pytest.mark.figures
def test_the_drawing_worker_writes_the_files_the_report_process_writes(store, tmp_path, monkeypatch):
    if worker.cores() < 2:
        pytest.skip("one CPU: every report draws in its own process")
    path, specs = store
    monkeypatch.setenv(worker.PROCESSES_ENV, "1")
    started = []
    real = worker.Worker.start
    monkeypatch.setattr(worker.Worker, "start", classmethod(lambda cls, wanted, **kw: started.append(real(wanted, **kw)) or started[-1]))
    suite = load_suite(path)
    for folder, beside in (("here", False), ("worker", True)):
        with ledgers.ledger_scope():
            build_report(suite, specs, tmp_path / "results", tmp_path / "reports", path, folder=folder, cache=False, worker=beside)
    here, there = started
    assert here.pool is None and not here.used  # the first report drew and wrote everything itself
    assert there.handed > 5 and there.ran_there == there.handed  # the second handed figures and CSVs to the worker, and each ran there
    drawn = sorted(p.name for p in (tmp_path / "reports" / "here").glob("*.p*") if p.suffix in (".png", ".pdf"))
    assert {"bars.png", "forest.pdf", "id_vs_ood.png"} <= set(drawn)
    for name in [*drawn, "report.md", "summary.csv", "delta.csv", "verdict.csv", "severity.csv"]:  # byte for byte
        assert (tmp_path / "reports" / "worker" / name).read_bytes() == (tmp_path / "reports" / "here" / name).read_bytes(), name


def test_a_figure_that_fails_in_the_worker_is_reported_and_one_the_worker_cannot_take_is_drawn_here(tmp_path, monkeypatch):
    if worker.cores() < 2:
        pytest.skip("one CPU: no worker")
    monkeypatch.setenv(worker.PROCESSES_ENV, "1")
    beside = worker.Worker.start(True)
    try:
        failing = figures.Figure("bars", _raise_value_error, (1,))
        local = figures.Figure("sweep", _touch, (lambda: None, tmp_path / "sweep.png"))  # a lambda cannot go to the worker
        drawn, skipped, files = figures.draw_all([failing, local], tmp_path, False, lambda f: "absent", beside)
        assert (beside.handed, beside.ran_there) == (2, 1)  # the failing figure ran in the worker; the lambda could not go there
        with pytest.raises(ValueError, match="no data for 2"):  # a job's own exception is raised where its result is asked for
            beside.submit(_raise_value_error, 2)()
        # an exception that cannot travel back as itself comes back as its text, and the worker goes on
        with pytest.raises(worker.JobFailed, match="TwoArgumentError: 3 apples"):
            beside.submit(_raise_two_argument_error, 3)()
        assert beside.submit(_display_name, "sft")() == "SFT" and beside.ran_there == 4
    finally:
        beside.close()
    assert skipped == ["No bars figure: drawing it failed (ValueError: no data for 1)"]
    assert [key for key, _, _ in drawn] == ["sweep"] and files == [tmp_path / "sweep.png"]


def _raise_value_error(n):
    raise ValueError(f"no data for {n}")


class TwoArgumentError(Exception):
    def __init__(self, count, what):
        super().__init__(f"{count} {what}")


def _raise_two_argument_error(n):
    raise TwoArgumentError(n, "apples")


def _display_name(method):
    from bench.report.pairs import method_name

    return method_name(method)


def test_the_worker_loads_the_report_process_plugins(tmp_path, monkeypatch):
    """Figures name methods by their display names; a plugin's method must be named there as here."""
    if worker.cores() < 2:
        pytest.skip("one CPU: no worker")
    from bench import plugins
    from bench.methods import METHODS
    from conftest import isolated_registry

    monkeypatch.setenv(worker.PROCESSES_ENV, "1")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "scale_plugin.py").write_text(
        "from typing import ClassVar\nfrom bench.methods.base import METHODS\nfrom bench.methods.sft import SFT\n\n"
        "@METHODS.register('scaled_sft')\nclass ScaledSFT(SFT):\n    name: ClassVar[str] = 'scaled_sft'\n    display_name: ClassVar[str] = 'Scaled SFT'\n")
    isolated_registry(monkeypatch, METHODS)
    plugins.load(["scale_plugin"])
    beside = worker.Worker.start(True, warm=False)
    try:
        assert _display_name("scaled_sft") == "Scaled SFT"
        assert beside.submit(_display_name, "scaled_sft")() == "Scaled SFT" and beside.ran_there == 1
    finally:
        beside.close()
        sys.modules.pop("scale_plugin", None)


def _touch(_unpicklable, path):
    path.write_bytes(b"png")
    return [path]


def test_long_rows_of_unchanged_runs_come_from_the_last_report_and_equal_rows_built_afresh(tmp_path, monkeypatch):
    from bench.report import longreuse
    from bench.report.aggregate import long_from, read_store, with_averages

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    two_targets = SUITE.replace("evaluations: [id, shift]", "evaluations: [id, shift, transfer]").replace(
        "defaults:\n", "defaults:\n  transfer: {targets: [{name: fashion_mnist, train_limit: 60, test_limit: 30}, "
                        "{name: cifar10, train_limit: 60, test_limit: 30}]}\n")
    path = write(tmp_path, two_targets, "tiny.yaml")
    specs = expand(load_suite(path), path)
    for spec in specs[:-1]:
        write_run(spec, tmp_path / "results", images=40, checkpoint_bytes=256)
    parquet = tmp_path / "reports" / "cached" / "results_long.parquet"

    def rows_now() -> tuple:
        with ledgers.ledger_scope():
            results = read_store(specs, tmp_path / "results").results
        return results, with_averages(long_from(results))

    report(path, specs, tmp_path, "cached", cache=True)  # 8 of 9 runs: the parquet and its index written
    write_run(specs[-1], tmp_path / "results", images=40, checkpoint_bytes=256)  # one more run finishes
    spec = specs[1]  # and one is computed again with other numbers (another digest)
    RunDir.of(tmp_path / "results", spec.suite, spec.run_id).clear_outputs()
    write_run(spec, tmp_path / "results", images=40, checkpoint_bytes=256, salt="computed again")
    results, fresh = rows_now()
    splits = set(fresh.loc[fresh["derived"].astype(bool), "split"])  # every kind of per-run average is among the rows
    assert "ood_avg" in splits and any(x.endswith("/mean") for x in splits) and any(x.startswith("transfer_avg/") for x in splits)
    built = []
    monkeypatch.setattr(longreuse, "long_from", lambda runs: built.append([f.result["run_id"] for f in runs]) or long_from(runs))
    reused = longreuse.long_with_averages(results, parquet, enabled=True)
    pd.testing.assert_frame_equal(reused, fresh, check_exact=True)
    assert sorted(r for part in built for r in part) == sorted([spec.run_id, specs[-1].run_id])  # only the two changed runs built
    # a parquet that is not the one the last report wrote is not used
    built.clear()
    pd.read_parquet(parquet).iloc[::-1].to_parquet(parquet, index=False)
    pd.testing.assert_frame_equal(longreuse.long_with_averages(results, parquet, enabled=True), fresh, check_exact=True)
    assert len(built) == 1 and len(built[0]) == len(results)  # everything built afresh

def test_row_helpers_give_what_itertuples_and_to_dict_give():
    from bench.report.schema import row_dicts, row_tuples

    frame = pd.DataFrame({
        "n": pd.array([1, None, 3], dtype="Int64"), "flag": pd.array([True, None, False], dtype="boolean"), "x": [1.5, np.nan, -0.0],
        "b": [True, False, True], "str": ["a", None, "c"], "arrow": pd.array(["u", None, "w"], dtype=pd.StringDtype("pyarrow")),
        "python": pd.array([None, "v", "w"], dtype=pd.StringDtype("python")), "two words": ["p", "q", "r"], "Index": [7, 8, 9],
    }, index=[4, 5, 6])

    def cells(values):  # type and value of each cell, NaN equal to NaN
        return [(type(v), "nan" if isinstance(v, float) and math.isnan(v) else repr(v)) for v in values]

    for ours, theirs in zip(row_tuples(frame), frame.itertuples()):
        assert ours._fields == theirs._fields and cells(ours) == cells(theirs)
    for ours, theirs in zip(row_dicts(frame), frame.to_dict("records")):
        assert list(ours) == list(theirs) and cells(ours.values()) == cells(theirs.values())
