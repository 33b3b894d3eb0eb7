"""Data identity of a run: which data it trained and evaluated on, recorded and checked.

A run id covers what a run computes but not where its data lives (``data_root`` is left out, so
the same data mounted elsewhere keeps its results). That alone would let a run made on other data
under the same id — a label-inverted copy, another extraction — count as done for this one. So a
finished run records in ``result.json`` (``data.fingerprints``) the fingerprint of every split it
read (:mod:`bench.data.fingerprint`), and every command that decides whether a run is done
compares them with the data on disk now:

- ``same``: every recorded split has the same fingerprint now → the run is ``done``;
- ``stale``: one differs → the run's state is ``stale-data``: not in the report's tables (listed
  with the split that changed), and ``bench run`` moves its outputs aside and runs it again;
- ``unchecked``: a split cannot be read here (no data root: a login node when only compute nodes
  see the data) → the run stays ``done`` and ``bench status`` says the data could not be checked;
- ``unrecorded``: a result from before fingerprints were recorded → ``done``, unchecked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bench.data import DATASETS
from bench.data.holdout import disk_split

if TYPE_CHECKING:
    from bench.config import RunConfig
    from bench.store import RunDir, RunRecord

STALE = "stale-data"


def run_splits(cfg: "RunConfig") -> list[tuple[str, str, dict[str, Any]]]:
    """(dataset, split as read from disk, resolved parameters) for every split ``cfg`` trains and
    evaluates on, transfer targets included, without repeats (``heldout`` reads the training split)."""
    entry = DATASETS.get(cfg.data.name)
    params = {**entry.params, **cfg.data.params}
    holdout = cfg.data.holdout
    splits = [cfg.data.resolved_train_split, *cfg.evaluation_splits()]
    out = [(cfg.data.name, disk_split(s, holdout), params) for s in splits]
    if "transfer" in cfg.evaluations:
        for target in cfg.transfer.targets:
            t = DATASETS.get(target.name)
            tparams = {**t.params, **target.params}
            out += [(target.name, target.train_split or t.train_split, tparams), (target.name, target.test_split or t.test_split, tparams)]
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for dataset, split, p in out:
        key = (dataset, split, repr(sorted(p.items())))
        if key not in seen:
            seen.add(key)
            unique.append((dataset, split, p))
    return unique


def split_fingerprint(dataset: str, split: str, data_root: Any, params: dict[str, Any]) -> str:
    """One split's fingerprint (memoised within a command: :func:`bench.data.fingerprint.memoised`)."""
    return DATASETS.get(dataset).split_fingerprint(split, data_root, **params)


def fingerprints(cfg: "RunConfig") -> list[dict[str, Any]]:
    """What result.json records under ``data.fingerprints``: one entry per split the run reads,
    with enough (dataset, split, parameters) to compute it again under any data root."""
    return [{"dataset": d, "split": s, "params": p, "fingerprint": split_fingerprint(d, s, cfg.data.data_root, p)}
            for d, s, p in run_splits(cfg)]


@dataclass(frozen=True)
class DataCheck:
    """How a run's recorded data compares with the data on disk now, and why (for people)."""

    state: Literal["same", "stale", "unchecked", "unrecorded"]
    reason: str = ""


def check(result: dict[str, Any], cfg: "RunConfig") -> DataCheck:
    """Compare ``result``'s recorded fingerprints with those of the data under ``cfg``'s data root.
    A split that cannot be read here makes the check ``unchecked`` (never ``stale``): a missing
    data root must not turn every finished run stale."""
    recorded = (result.get("data") or {}).get("fingerprints")
    if not isinstance(recorded, list):
        return DataCheck("unrecorded", "result.json records no data fingerprints (from before they were recorded)")
    from bench.data import fingerprint as fp

    # within one command (fingerprint.memoised) runs that record the same splits are checked once:
    # a suite's runs of one dataset share them, and a split that cannot be read is tried once
    key = ("dataid.check", str(cfg.data.data_root), json.dumps(recorded, sort_keys=True, default=str))
    found = fp.memo_get(key)
    if found is None:
        found = _check(recorded, cfg)
        fp.memo_put(key, found)  # type: ignore[arg-type]  # the memo holds any value of its command
    return found  # type: ignore[return-value]


def _check(recorded: list[Any], cfg: "RunConfig") -> DataCheck:
    unreadable = []
    for entry in recorded:
        try:
            dataset, split, params, was = entry["dataset"], entry["split"], dict(entry["params"]), entry["fingerprint"]
        except (KeyError, TypeError, ValueError):
            return DataCheck("stale", f"result.json's data fingerprint entry {str(entry)[:80]} is malformed")
        try:
            now = split_fingerprint(dataset, split, cfg.data.data_root, params)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # DatasetError is a FileNotFoundError
            unreadable.append(f"{dataset} {split}: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}")
            continue
        if now != was:
            return DataCheck("stale", f"data changed: {dataset} split {split!r} has fingerprint {now}, the result was computed on {was}")
    if unreadable:
        return DataCheck("unchecked", "data could not be checked (" + "; ".join(unreadable[:2]) + (", …" if len(unreadable) > 2 else "") + ")")
    return DataCheck("same")


def run_state(run_dir: "RunDir", cfg: "RunConfig") -> tuple[str, DataCheck | None]:
    """The run's state as every command sees it: the store's (done, corrupt, running, …), except
    that a done run whose recorded data differs from the data on disk is ``stale-data``. The data
    check is returned for done and stale-data runs (None otherwise); it is made only for them."""
    state, found, _ = record_state(run_dir, cfg)
    return state, found


def record_state(run_dir: "RunDir", cfg: "RunConfig") -> tuple[str, DataCheck | None, "RunRecord"]:
    """:func:`run_state` with the run's :class:`bench.store.RunRecord` (status, damage, result
    facts), each file read and verified once: what commands over a whole suite use."""
    record = run_dir.record()
    if record.state != "done" or record.facts is None:
        return record.state, None, record
    found = check(record.facts, cfg)  # the facts carry result.json's "data" block
    return (STALE if found.state == "stale" else "done"), found, record


def is_done(run_dir: "RunDir", cfg: "RunConfig") -> bool:
    """Done and computed on the data that is on disk now (or data that cannot be checked here)."""
    return run_state(run_dir, cfg)[0] == "done"
