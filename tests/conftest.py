"""Shared fixtures: a tiny, fast run config and an isolated cache per test session."""

from __future__ import annotations

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs several pytest-xdist workers on a 2-core machine: one math thread each (and
    # in the processes they start), or their thread pools spin against each other. Set before any
    # test module imports torch, which reads it once.
    os.environ["OMP_NUM_THREADS"] = "1"

from bench.config import RunConfig

TINY = dict(
    backbone={"name": "dinov2_tiny", "weights": "random", "img_size": 28},
    model={"trainable_blocks": 1},
    data={"name": "fmnist_composites", "params": {"img_size": 28, "train_size": 48, "eval_size": 24}},
    train={"epochs": 2, "batch_size": 16, "eval_batch_size": 32},
)


def tiny_config(method: str = "grpo_rm", seed: int = 0, **overrides) -> RunConfig:
    tree = {**TINY, "method": {"name": method, "params": overrides.pop("method_params", {})}, "seed": seed}
    for key, value in overrides.items():
        tree[key] = {**tree.get(key, {}), **value}
    return RunConfig(**tree)


# Reports built on the way (every `bench run` ends with one) skip their figures: drawing them is
# most of a small report's cost, and the figures have tests of their own (test_report*.py turn them
# back on with the `figures` fixture below). Subprocesses inherit this.
os.environ.setdefault("BENCH_REPORT_FIGURES", "0")


@pytest.fixture(autouse=True, scope="module")
def figures(request):
    """Report tests (modules named test_report*) draw figures, module fixtures included; every
    other module skips them."""
    with pytest.MonkeyPatch.context() as mp:
        if request.module.__name__.startswith("test_report"):
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


# The longest tests (tens of seconds: subprocess runs, a Slurm time limit, torch.compile) start
# first, so that under `make test`'s parallel workers they overlap the many short ones instead of
# running alone at the end. Order changes nothing else: every test sets up its own state.
LONGEST_FIRST = (
    "test_time_limit_triggers_checkpoint_and_resume",
    "test_compiled_chunk_kernel_matches_eager",
    "test_kill_9_mid_training_then_rerun_gives_identical_numbers",
    "test_two_process_ddp_over_gloo_matches_single_process_training",
    "test_ctrl_c_prints_one_line_and_the_rerun_says_where_it_resumes",
    "test_local_executor_runs_subprocesses_in_parallel",
    "test_requeued_job_resumes_from_checkpoint_with_identical_numbers",
    "test_two_concurrent_bench_runs_train_the_run_once",
    "test_bench_run_writes_results_and_report_then_skips_done_runs",
    "test_with_data_it_runs_the_grid_and_renders_expected_vs_actual",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.originalname, len(rank)))  # stable: the rest keep their order
