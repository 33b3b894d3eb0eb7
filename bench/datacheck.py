"""Check that every dataset split a suite needs is on disk in its official layout, before training.

Cheap: each entry's ``locate`` resolves and verifies paths without decoding images. Splits that
fail for the same reason (e.g. all 75 CIFAR-10-C splits when the folder is missing) are reported
once, with the full DatasetError message naming the expected path, what was found, the layout and
where the official archive comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.data import DATASETS, DatasetError
from bench.data.holdout import disk_split
from bench.suite import RunSpec


@dataclass
class CheckGroup:
    dataset: str
    data_root: str | None
    splits: list[str] = field(default_factory=list)
    error: str | None = None  # None: present


Key = tuple[str, "str | None", tuple]


def needed_splits(specs: list[RunSpec]) -> dict[Key, tuple[str, ...]]:
    """(dataset, data_root, params as sorted items) → splits any run trains or evaluates on, in first-seen order."""
    needed: dict[Key, dict[str, None]] = {}
    for spec in specs:
        data = spec.config.data
        key = (data.name, data.data_root, tuple(sorted(data.params.items())))
        bucket = needed.setdefault(key, {})
        for split in (data.resolved_train_split, *_all_splits(spec)):
            bucket[disk_split(split, data.holdout)] = None  # 'heldout' is read from the training split
        if "transfer" in spec.final_config.evaluations:  # target datasets are read from the same data root
            for t in spec.config.transfer.targets:
                entry = DATASETS.get(t.name)
                target = needed.setdefault((t.name, data.data_root, tuple(sorted(t.params.items()))), {})
                target.update(dict.fromkeys((t.train_split or entry.train_split, t.test_split or entry.test_split)))
    return {k: tuple(v) for k, v in needed.items()}


def _all_splits(spec: RunSpec) -> tuple[str, ...]:
    """What a run evaluates; for a tuning run, also what its group's final runs will evaluate."""
    return (*spec.config.evaluation_splits(), *spec.final_config.evaluation_splits())


def check_specs(specs: list[RunSpec]) -> list[CheckGroup]:
    groups: dict[tuple, CheckGroup] = {}
    for (name, root, params), splits in needed_splits(specs).items():
        entry = DATASETS.get(name)
        for split in splits:
            try:
                entry.check(split, root, **dict(params))
                reason, error = "ok", None
            except DatasetError as exc:
                reason, error = f"{exc.expected}|{str(exc).splitlines()[0].split(': ', 1)[-1]}", str(exc)
            except (FileNotFoundError, ValueError) as exc:  # generated datasets: their sources
                reason, error = str(exc), str(exc)
            group = groups.setdefault((name, root, reason), CheckGroup(name, root, error=error))
            group.splits.append(split)
    return list(groups.values())


def summarise(groups: list[CheckGroup]) -> list[str]:
    lines = []
    for g in groups:
        shown = ", ".join(g.splits[:6]) + (f", … ({len(g.splits)} splits)" if len(g.splits) > 6 else "")
        lines.append(f"{'ok     ' if g.error is None else 'MISSING'} {g.dataset}: {shown}")
        if g.error is not None:
            lines += ["    " + line for line in g.error.splitlines()]
    return lines
