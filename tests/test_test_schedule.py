"""The test suite's own schedule (conftest.spread_over_slices), checked against pytest-xdist's
work-stealing scheduler itself: the long units must lead the workers' first batches, spread over
them, instead of queueing on one worker."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from xdist.scheduler.worksteal import WorkStealingScheduling

from conftest import spread_over_slices

LONG = {"test_a": 80, "test_b": 45, "test_c": 40, "test_mod.py": 30, "test_d": 25, "test_e": 10}
MODULE = ["test_m0", "test_m1", "test_m2"]


class FakeWorker:
    """What the scheduler needs of a worker: a name and somewhere to send test indices."""

    shutting_down = False

    def __init__(self, name: str) -> None:
        self.gateway, self.received = SimpleNamespace(id=name), []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.received += indices

    def shutdown(self) -> None:
        pass


def collected(n_short: int = 90) -> list[SimpleNamespace]:
    """Long tests scattered through the collection, a module of three tests, and short ones."""
    items = [SimpleNamespace(path=Path(f"tests/test_{i % 7}.py"), originalname=f"test_short{i}") for i in range(n_short)]
    for at, name in ((5, "test_e"), (20, "test_a"), (33, "test_d"), (60, "test_c"), (61, "test_b")):
        items.insert(min(at, len(items)), SimpleNamespace(path=Path("tests/test_x.py"), originalname=name))
    at = min(40, len(items))
    items[at:at] = [SimpleNamespace(path=Path("tests/test_mod.py"), originalname=name) for name in MODULE]
    for item in items:
        item.nodeid = f"{item.path}::{item.originalname}"
    return items


def first_batches(items: list, workers: int) -> list[list[str]]:
    """What xdist's work stealing initially sends each worker, for this collection order."""
    scheduler = WorkStealingScheduling(SimpleNamespace(getvalue=lambda key: [f"{workers}*popen"]))
    nodes = [FakeWorker(f"gw{k}") for k in range(workers)]
    for node in nodes:
        scheduler.add_node(node)
    for node in nodes:
        scheduler.add_node_collection(node, [item.nodeid for item in items])
    scheduler.schedule()
    return [[items[i].originalname for i in node.received] for node in nodes]


def is_short(name: str) -> bool:
    return name.startswith("test_short")


# The long units each worker's first batch starts with, worked out by hand: longest first, each
# into the worker with the least long-unit seconds so far (ties: the lower worker).
EXPECTED_HEADS = {
    2: [["test_a", *MODULE, "test_e"], ["test_b", "test_c", "test_d"]],  # 80+30+10 | 45+40+25
    3: [["test_a"], ["test_b", "test_d", "test_e"], ["test_c", *MODULE]],  # 80 | 45+25+10 | 40+30
    4: [["test_a"], ["test_b"], ["test_c", "test_e"], [*MODULE, "test_d"]],  # 80 | 45 | 40+10 | 30+25
}


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_each_worker_starts_with_its_share_of_the_long_units(workers):
    items = collected()
    ordered = spread_over_slices(items, LONG, workers)
    assert sorted(map(id, ordered)) == sorted(map(id, items))  # a reordering: nothing lost or repeated
    batches = first_batches(ordered, workers)
    assert sum(map(len, batches)) == len(items)  # the first hand-out covers the whole collection
    heads = [[name for name in batch if not is_short(name)] for batch in batches]
    assert heads == EXPECTED_HEADS[workers]
    for batch, head in zip(batches, heads):
        assert batch[: len(head)] == head  # the long units come before any short test
    short = [i.originalname for i in items if is_short(i.originalname)]
    assert [n for b in batches for n in b if is_short(n)] == short  # the short tests keep their order


SMALL = {
    # 11 tests: slices of 2, 3, 3, 3. The module (3 tests) fits only the last slice, which is empty;
    # test_d and test_e then go to the least-loaded slices that still have room.
    3: [["test_a", "test_short0"], ["test_b", "test_e", "test_short1"], ["test_c", "test_d", "test_short2"], MODULE],
    # 8 tests: slices of 2. No slice has room for the module: its tests fill the slices' second
    # places first, in order, and test_e joins test_d (the least-loaded slice with room).
    0: [["test_a", "test_m0"], ["test_b", "test_m1"], ["test_c", "test_m2"], ["test_d", "test_e"]],
}


@pytest.mark.parametrize("n_short", [3, 0])
def test_small_selections_keep_xdists_slice_sizes(n_short):
    """`pytest -n 4 tests/test_slurm.py`, say: slices of 2 or 3 tests. A unit goes only where it
    fits whole; one that fits nowhere runs first among the rest."""
    assert first_batches(spread_over_slices(collected(n_short), LONG, 4), 4) == SMALL[n_short]


def test_without_spreading_the_long_tests_queue_on_one_worker():
    """Why the spreading exists: sorted longest-first, every long test lands in worker 0's slice."""
    items = collected()
    rank = {name: i for i, name in enumerate(LONG)}
    naive = sorted(items, key=lambda i: rank.get(i.originalname, len(rank)))
    batches = first_batches(naive, 4)
    assert {"test_a", "test_b", "test_c", "test_d", "test_e"} <= set(batches[0])
