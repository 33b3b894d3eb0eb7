"""Model selection in two stages: tune each method on the held-out split, then run the winners.

A suite's ``select`` block (:class:`bench.suite.Selection`) turns each point of its matrix,
seed left out, into a *group*: one method on one dataset/backbone/setting. Stage 1 runs every
group's tuning grid (the ``tune`` values, on ``select.seeds``) with the single evaluation
``heldout``. Once every tuning run of a group has ended, the value combination with the best
mean held-out metric is chosen (failed candidates never win; ties go to the first listed), and
stage 2 runs the group's matrix seeds at that combination with the suite's full evaluations.

The choice reads ``result.json["metrics"]["heldout"]`` of tuning runs and nothing else: a tuning
run is never scored on a test, shift or transfer split, so no such number can reach a choice.
Every group tunes the same grid, so each method gets the same budget. The decision is written to
``results/<suite>/selection.json`` and recorded in each final run's result.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data.holdout import HELDOUT
from bench.io import atomic_write_json
from bench.store import RunDir
from bench.suite import MatrixRun, RunSpec, Suite, build_config, set_dotted

SELECTION_FILE = "selection.json"


@dataclass
class Candidate:
    values: dict[str, Any]  # tuned key → value
    runs: list[RunSpec]
    scores: list[float] = field(default_factory=list)
    failed: int = 0

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else math.nan


@dataclass
class Group:
    """One method on one setting: its candidates and, once decided, the chosen values."""

    key: str
    label: dict[str, Any]  # method, dataset, backbone, other matrix values
    candidates: list[Candidate]
    finals: list[MatrixRun]
    chosen: Candidate | None = None
    waiting: int = 0  # tuning runs not ended yet
    error: str | None = None

    def record(self) -> dict[str, Any]:
        return {
            "group": self.label, "key": self.key, "waiting": self.waiting, "error": self.error,
            "candidates": [{"values": c.values, "runs": [r.run_id for r in c.runs], "scores": c.scores, "mean": c.mean,
                            "failed": c.failed} for c in self.candidates],
            "chosen": None if self.chosen is None else self.chosen.values,
            "chosen_mean": None if self.chosen is None else self.chosen.mean,
        }


@dataclass
class SelectionPlan:
    tune: list[RunSpec]
    final: list[RunSpec]  # the decided groups' final runs
    groups: list[Group]

    @property
    def specs(self) -> list[RunSpec]:
        return self.tune + self.final

    @property
    def undecided(self) -> list[Group]:
        return [g for g in self.groups if g.chosen is None]


def _combos(tune: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(tune)
    return [dict(zip(keys, values)) for values in itertools.product(*(tune[k] for k in keys))]


def _group_key(tree: dict[str, Any]) -> str:
    rest = {k: v for k, v in tree.items() if k != "seed"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _with(tree: dict[str, Any], values: dict[str, Any], **top: Any) -> dict[str, Any]:
    out = copy.deepcopy(tree)
    out.update(top)
    for key, value in values.items():
        set_dotted(out, key, value)
    return out


def plan_selection(suite: Suite, path: str | Path, runs: list[MatrixRun], results_root: str | Path | None, overrides: list[str] | None = None) -> SelectionPlan:
    """Tuning runs for every group, and the final runs of the groups ``results_root`` decides."""
    sel = suite.select
    assert sel is not None
    groups: dict[str, Group] = {}
    finals = {id(run): build_config(suite, path, run.tree, run.where, overrides) for run in runs}  # each matrix point validated once
    final_seeds: dict[str, list[int]] = {}
    for run in runs:
        final_seeds.setdefault(_group_key(run.tree), []).append(finals[id(run)].seed)
    for run in runs:
        key = _group_key(run.tree)
        if key not in groups:
            candidates = []
            final_evaluations = list(finals[id(run)].evaluations)
            for values in _combos(sel.tune):
                specs = []
                for seed in sel.seeds:
                    tree = _with(run.tree, values, seed=seed, evaluations=[HELDOUT])
                    config = build_config(suite, path, tree, f"{run.where}, tuning {_show(values)}, seed={seed}", overrides)
                    # the final runs' evaluations travel along, so a data check covers what they will read
                    record = json.dumps({"tuned_values": values, "group": key, "final_evaluations": final_evaluations,
                                         "final_seeds": final_seeds[key]}, sort_keys=True, default=str)
                    specs.append(RunSpec(suite.name, config.run_id(), config, run.profile, "tune", record))
                candidates.append(Candidate(values, specs))
            first = candidates[0].runs[0].config
            label = {"method": first.method.name, "dataset": first.data.name, "backbone": first.backbone.name,
                     **{k: v for k, v in run.values.items() if k not in ("method", "seed")}}
            groups[key] = Group(key, label, candidates, [])
        groups[key].finals.append(run)
    tune = [spec for g in groups.values() for c in g.candidates for spec in c.runs]
    final: list[RunSpec] = []
    for group in groups.values():
        if results_root is not None:
            decide(group, Path(results_root), sel.metric, sel.lower_is_better)
        if group.chosen is None:
            continue
        selection = {"metric": sel.metric, "split": sel.split, "tuned": sel.tune, "seeds": sel.seeds, "chosen": group.chosen.values,
                     "scores": {json.dumps(c.values, sort_keys=True): c.mean for c in group.candidates}, "group": group.key}
        record = json.dumps({"selection": selection}, sort_keys=True, default=str)
        for run in group.finals:
            config = build_config(suite, path, _with(run.tree, group.chosen.values), f"{run.where}, chosen {_show(group.chosen.values)}", overrides)
            final.append(RunSpec(suite.name, config.run_id(), config, run.profile, "final", record))
    if results_root is not None and any(g.chosen is not None for g in groups.values()):
        write_selection(Path(results_root) / suite.name, suite, list(groups.values()))
    return SelectionPlan(tune, final, list(groups.values()))


def _show(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def decide(group: Group, results_root: Path, metric: str, lower_is_better: bool) -> None:
    """Fill each candidate's held-out scores from finished tuning runs; choose once none is waiting."""
    group.waiting = 0
    for candidate in group.candidates:
        candidate.scores, candidate.failed = [], 0
        for spec in candidate.runs:
            run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
            if run_dir.is_done():
                score = heldout_score(run_dir.read_result(), metric)
                if score is None or not math.isfinite(score):
                    candidate.failed += 1
                else:
                    candidate.scores.append(score)
            elif run_dir.effective_state() == "failed":
                candidate.failed += 1
            else:
                group.waiting += 1
    if group.waiting:
        return
    complete = [c for c in group.candidates if c.scores and not c.failed]
    if not complete:
        group.error = "every tuning candidate failed"
        return
    sign = 1.0 if lower_is_better else -1.0
    group.chosen = min(complete, key=lambda c: sign * c.mean)  # min() keeps the first of equals


def heldout_score(result: dict[str, Any], metric: str) -> float | None:
    """The one number selection reads from a tuning run: its held-out metric."""
    entry = result.get("metrics", {}).get(HELDOUT)
    return None if entry is None or metric not in entry else float(entry[metric])


def write_selection(folder: Path, suite: Suite, groups: list[Group]) -> None:
    sel = suite.select
    assert sel is not None
    atomic_write_json(folder / SELECTION_FILE, {
        "suite": suite.name, "metric": sel.metric, "split": sel.split, "tune": sel.tune, "seeds": sel.seeds,
        "groups": [g.record() for g in groups],
    })


def read_selection(folder: Path) -> dict[str, Any]:
    """The recorded decision of a suite ({} before any group is decided)."""
    path = Path(folder) / SELECTION_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
