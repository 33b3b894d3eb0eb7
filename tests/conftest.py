"""Shared fixtures: a tiny, fast run config and an isolated cache per test session."""

from __future__ import annotations

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs several pytest-xdist workers on a 2-core machine: one math thread each (and
    # in the processes they start, except local-executor jobs, which get launch.local_threads), or
    # their thread pools spin against each other. Set before any test module imports torch, which
    # reads it once.
    os.environ["OMP_NUM_THREADS"] = "1"

from bench.config import RunConfig

TINY = dict(
    backbone={"name": "dinov2_tiny", "weights": "random", "img_size": 28},
    model={"trainable_blocks": 1},
    data={"name": "fmnist_composites", "params": {"img_size": 28, "train_size": 48, "eval_size": 24}},
    train={"epochs": 2, "batch_size": 16, "eval_batch_size": 32},
)


def isolated_registry(monkeypatch: pytest.MonkeyPatch, registry) -> None:
    """What a test registers in ``registry`` (as a plugin would) is gone when ``monkeypatch`` is
    undone: the registry's tables (entries, origins) are copies until then."""
    for name, table in list(vars(registry).items()):
        if isinstance(table, dict):
            monkeypatch.setattr(registry, name, dict(table))


def tiny_config(method: str = "grpo_rm", seed: int = 0, **overrides) -> RunConfig:
    tree = {**TINY, "method": {"name": method, "params": overrides.pop("method_params", {})}, "seed": seed}
    for key, value in overrides.items():
        tree[key] = {**tree.get(key, {}), **value}
    return RunConfig(**tree)


def run_in_this_process(spec, folder, threads: int):
    """``spec`` trained and evaluated here, uninterrupted, into ``folder``/<run id>: the reference a
    run through an executor must equal, number for number. ``threads`` must be the executor's
    (a 1-CPU Slurm job: 1; a local job: ``launch.local_threads``): a sum split over another
    number of threads can round differently. Returns its RunDir."""
    import torch

    from bench.job import run_job
    from bench.store import RunDir

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run_dir = RunDir(folder / spec.run_id)
        run_job(spec.config, run_dir)
        return run_dir
    finally:
        torch.set_num_threads(before)


# Reports skip their figures unless a test is marked `figures`: drawing and saving them (PNG and
# PDF) is most of a small report's cost, and only the tests that look at figures need them.
# Subprocesses inherit this.
os.environ.setdefault("BENCH_REPORT_FIGURES", "0")
# Figures are drawn in the report's own process: pytest-xdist already keeps both cores busy, and a
# drawing worker per report would only add start-ups. tests/test_report_scale.py checks that the
# worker draws the very same files.
os.environ.setdefault("BENCH_REPORT_PROCESSES", "0")


@pytest.fixture(autouse=True)
def figures(request):
    """A test marked ``figures`` (itself or its module) builds its reports with figures."""
    with pytest.MonkeyPatch.context() as mp:
        if request.node.get_closest_marker("figures") is not None:
            mp.setenv("BENCH_REPORT_FIGURES", "1")
        yield


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated data and converted weights go to a per-session folder, never the user's cache.
    Under pytest-xdist the workers of one session share it (their base folders sit side by side):
    each composite split is generated, and the demo weights converted, once rather than once per
    worker; every cache file is written atomically, so two workers filling one entry is harmless."""
    mp = pytest.MonkeyPatch()
    base = tmp_path_factory.getbasetemp()
    folder = base.parent / "bench-cache" if os.environ.get("PYTEST_XDIST_WORKER") else base / "bench-cache"
    folder.mkdir(exist_ok=True)
    mp.setenv("BENCH_CACHE", str(folder))
    yield
    mp.undo()


# The longest tests (tens of seconds: subprocess runs, a Slurm time limit, torch.compile), with
# their seconds under `make test` (4 workers on 2 cores; measured with --durations), and the
# modules whose module-scoped fixture is long (each worker that runs one of their tests builds it
# again). They start first and on different workers, so that they overlap the many short ones
# instead of queueing behind each other. pytest-xdist's work stealing hands worker k the k-th of n
# contiguous slices of the collected order (sizes len // n, then the rest likewise) and later moves
# tests only from the ends of slices; so each long unit is put at the head of a slice, longest
# first, each into the slice with the least long-unit time so far. Order changes nothing else:
# every test sets up its own state.
LONG_TESTS = {
    "test_time_limit_triggers_checkpoint_and_resume": 80,  # mostly waiting for Slurm's signal
    "test_two_process_ddp_over_gloo_matches_single_process_training": 45,
    "test_kill_9_mid_training_then_rerun_gives_identical_numbers": 40,
    "test_distributed.py": 30,  # two_ranks: two spawned processes run every scenario
    "test_local_executor_runs_subprocesses_in_parallel": 25,
    "test_two_task_ddp_job_on_slurm": 22,
    "test_two_concurrent_bench_runs_train_the_run_once": 22,
    "test_bench_run_writes_results_and_report_then_skips_done_runs": 20,
    "test_ctrl_c_prints_one_line_and_the_rerun_says_where_it_resumes": 20,
    "test_compiled_chunk_kernel_matches_eager": 20,  # with a cold inductor cache (a fresh machine)
    "test_report_verdict.py": 20,  # known: a report with figures; test_new_latex_tables_compile
    "test_requeued_job_resumes_from_checkpoint_with_identical_numbers": 18,
    "test_model_selection_on_slurm_needs_no_second_submission": 17,
    "test_reproduce_submits_once_then_renders_expected_vs_actual": 12,
    "test_a_run_killed_right_after_a_mid_epoch_checkpoint_resumes_to_identical_numbers": 12,
    "test_with_data_it_runs_the_grid_and_renders_expected_vs_actual": 10,
}


def spread_over_slices(items: list, seconds: dict[str, float], workers: int) -> list:
    """``items`` reordered so that the long units (a test by name, parametrisations included, or a
    whole module by file name) lead the ``workers`` slices that work stealing starts from,
    balanced greedily (longest first, into the least-loaded slice that has room for the whole
    unit); the other tests keep their order and fill the slices to the sizes work stealing gives
    them. A unit no slice has room for (a small selection) runs first among the others."""

    def unit(item) -> str | None:
        return next((key for key in (item.path.name, getattr(item, "originalname", None) or item.name) if key in seconds), None)

    sizes, left = [], len(items)
    for k in range(workers):
        sizes.append(left // (workers - k))
        left -= sizes[-1]
    units: dict[str, list] = {}
    for item in items:
        if (key := unit(item)) is not None:
            units.setdefault(key, []).append(item)
    heads: list[list] = [[] for _ in range(workers)]
    load = [0.0] * workers
    overflow: list = []
    for key in sorted(units, key=lambda k: -seconds[k]):
        room = [k for k in range(workers) if len(heads[k]) + len(units[key]) <= sizes[k]]
        if not room:
            overflow += units[key]
            continue
        k = min(room, key=lambda k: load[k])
        heads[k] += units[key]
        load[k] += seconds[key]
    rest = overflow + [item for item in items if unit(item) is None]
    ordered = []
    for k in range(workers):
        fill = sizes[k] - len(heads[k])
        ordered += heads[k] + rest[:fill]
        rest = rest[fill:]
    return ordered


@pytest.hookimpl(trylast=True)  # after -k/-m have deselected: the slices are cut from what runs
def pytest_collection_modifyitems(config, items):
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    items[:] = spread_over_slices(items, LONG_TESTS, workers)
