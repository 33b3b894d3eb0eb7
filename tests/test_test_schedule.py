"""The test suite's own schedule (conftest.spread_over_slices), checked against pytest-xdist's
work-stealing scheduler itself: each long unit must start on its own worker, not queue behind
another long one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from xdist.scheduler.worksteal import WorkStealingScheduling

from conftest import spread_over_slices

LONG = {"test_a": 80, "test_b": 45, "test_c": 40, "test_mod.py": 30, "test_d": 25, "test_e": 10}


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
        items.insert(at, SimpleNamespace(path=Path("tests/test_x.py"), originalname=name))
    items[40:40] = [SimpleNamespace(path=Path("tests/test_mod.py"), originalname=f"test_m{j}") for j in range(3)]
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


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_each_worker_starts_with_its_share_of_the_long_units(workers):
    items = collected()
    ordered = spread_over_slices(items, LONG, workers)
    assert sorted(map(id, ordered)) == sorted(map(id, items))  # a reordering: nothing lost or repeated
    batches = first_batches(ordered, workers)
    assert sum(map(len, batches)) == len(items)  # the first hand-out covers the whole collection
    heads = [b[0] for b in batches]
    assert heads == ["test_a", "test_b", "test_c", "test_m0"][:workers]  # the longest units, one per worker
    # every long unit sits at the start of a worker's batch, before any short test
    for batch in batches:
        shorts_from = next(i for i, n in enumerate(batch) if n.startswith("test_short"))
        assert not any(n.startswith("test_short") for n in batch[:shorts_from])
        assert not any(not n.startswith("test_short") for n in batch[shorts_from:]), batch
    # the module's tests stay together on one worker, so its module fixture is built once
    assert sum(any(n.startswith("test_m") for n in b) for b in batches) == 1
    # greedy balance: no worker's long-unit time exceeds another's by more than the longest unit
    load = [sum(LONG.get(n, 0) + (LONG["test_mod.py"] if n == "test_m0" else 0) for n in b) for b in batches]
    assert max(load) - min(load) <= max(LONG.values())
    # the short tests keep their collected order
    short = [i.originalname for i in items if i.originalname.startswith("test_short")]
    assert [n for b in batches for n in b if n.startswith("test_short")] == short


def test_without_spreading_the_long_tests_queue_on_one_worker():
    """Why the spreading exists: sorted longest-first, every long test lands in worker 0's slice."""
    items = collected()
    rank = {name: i for i, name in enumerate(LONG)}
    naive = sorted(items, key=lambda i: rank.get(i.originalname, len(rank)))
    batches = first_batches(naive, 4)
    assert {"test_a", "test_b", "test_c", "test_d", "test_e"} <= set(batches[0])
