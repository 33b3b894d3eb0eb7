"""Model selection in two stages: tune each method on the held-out split, then run the winners.

A suite's ``select`` block (:class:`bench.suite.Selection`) turns each point of its matrix,
seed left out, into a *group*: one method on one dataset/backbone/setting. Stage 1 runs every
group's tuning grid (the ``tune`` values, on ``select.seeds``) with the single evaluation
``heldout``. Once every tuning run of a group has ended, the value combination with the best
mean held-out metric is chosen (failed candidates never win; among exactly equal means the first
tried wins: the listed grid in order, then values added beyond an edge in the order added), and
stage 2 runs the group's matrix seeds at that combination with the suite's full evaluations.

Tuning seeds are not final seeds: by default they start at
:data:`bench.suite.DEFAULT_TUNING_SEED` (1000), and an explicit ``select.seeds`` that overlaps the
final seeds (:func:`final_seeds`) is refused unless ``select.allow_seed_overlap`` says so.
Otherwise a final run on a tuning seed would be the very tuning run that chose its settings
(same config but for the evaluations, so the same training), reported as if it were fresh.

What the decision leaves open is recorded rather than hidden: a chosen value at the smallest or
largest value tried of a tuned key (``at_edge``: the optimum may lie beyond the grid), a choice
made by the tie-break (``tie``), and with ``select.extend_edges`` the values tuned one step beyond
such an edge (``extensions``; :func:`bench.grid.step_beyond`) until the choice is interior or
``select.max_extensions`` values were added to that key. Each group extends its own grid, so a
method gets more candidates only where its own optimum was on the edge; the record says how many
candidates each group had.

The choice reads ``result.json["metrics"]["heldout"]`` of tuning runs and nothing else: a tuning
run is never scored on a test, shift or transfer split, so no such number can reach a choice.
Every group tunes the same listed grid, so each method gets the same budget before extensions.
The decision is written to ``results/<suite>/selection.json`` and recorded in each final run's
result.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.dataid import is_done
from bench.config import RunConfig
from bench.data.holdout import HELDOUT
from bench.errors import SuiteError
from bench.grid import grid_edge, is_number, step_beyond, ties
from bench.io import atomic_write_json
from bench.store import RunDir
from bench.suite import DEFAULT_TUNING_SEED, MatrixRun, RunSpec, Suite, build_config, set_dotted
from bench.yaml_lines import line_of

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
    extensions: list[dict[str, Any]] = field(default_factory=list)  # values tuned beyond an edge, in order
    extension_stopped: dict[str, str] = field(default_factory=dict)  # tuned key → why no further value was added

    def tried(self) -> dict[str, list[Any]]:
        """Each tuned key's values among the candidates, in the order tried."""
        keys = list(self.candidates[0].values) if self.candidates else []
        return {k: list(dict.fromkeys(c.values[k] for c in self.candidates)) for k in keys}

    def at_edge(self) -> dict[str, str]:
        """Tuned key → 'smallest' / 'largest' where the chosen value is at that edge of the values
        tried (of at least two); interior choices are left out."""
        if self.chosen is None:
            return {}
        tried = self.tried()
        return {k: edge for k, v in self.chosen.values.items() if (edge := grid_edge(tried[k], v)) is not None}

    def tie(self) -> dict[str, Any] | None:
        """The candidates whose mean equals the chosen one exactly, when there are several: then the
        tie-break (first tried) made the choice, not the data."""
        if self.chosen is None:
            return None
        complete = [c for c in self.candidates if c.scores and not c.failed]
        tied = ties([c.mean for c in complete], self.chosen.mean)
        if len(tied) < 2:
            return None
        return {"candidates": [complete[i].values for i in tied], "score": self.chosen.mean, "rule": "first tried wins"}

    def record(self) -> dict[str, Any]:
        return {
            "group": self.label, "key": self.key, "waiting": self.waiting, "error": self.error,
            "candidates": [{"values": c.values, "runs": [r.run_id for r in c.runs], "scores": c.scores, "mean": c.mean,
                            "failed": c.failed} for c in self.candidates],
            "n_candidates": len(self.candidates), "tried": self.tried(),
            "chosen": None if self.chosen is None else self.chosen.values,
            "chosen_mean": None if self.chosen is None else self.chosen.mean,
            "at_edge": self.at_edge(), "tie": self.tie(),
            "extensions": self.extensions, "extension_stopped": self.extension_stopped,
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


def final_seeds(suite: Suite) -> list[int]:
    """The seeds a suite's final runs use, as the suite file states them: the matrix's ``seed``
    axis, else ``defaults.seed``, else the run config's default seed; with adaptive seeds
    (``seeds:``) every seed a round may reach, 0 … max − 1. The one place that knows where final
    seeds are declared."""
    schedule = getattr(suite, "seeds", None)
    if schedule is not None:
        return list(range(schedule.max))
    if "seed" in suite.matrix:
        declared = list(suite.matrix["seed"])
    elif "seed" in suite.defaults:
        declared = [suite.defaults["seed"]]
    else:
        declared = [RunConfig.model_fields["seed"].default]
    return [s for s in dict.fromkeys(declared) if isinstance(s, int) and not isinstance(s, bool)]  # others fail validation elsewhere


def check_tuning_seeds(suite: Suite, path: str | Path, used: Sequence[int] = ()) -> list[int]:
    """The tuning seeds that are also final seeds (:func:`final_seeds`, plus ``used``: the seeds the
    built final configs really have, e.g. after ``-o seed=…``). Refused as ``file:line:
    select.seeds: reason`` unless ``select.allow_seed_overlap``: a final run on a tuning seed is
    the tuning run that chose its settings, trained again, so its seed's held-out score picked
    it. Returns the overlap (empty, or accepted by the opt-in)."""
    sel = suite.select
    assert sel is not None
    finals = list(dict.fromkeys([*final_seeds(suite), *used]))
    overlap = [s for s in sel.seeds if s in finals]
    if overlap and not sel.allow_seed_overlap:
        where = line_of(suite._lines, ("select", "seeds"), ("select",)) or 1
        given = "select.seeds" if "seeds" in sel.model_fields_set else "the default tuning seeds"
        raise SuiteError(
            f"{path}:{where}: select.seeds: tuning seed(s) {', '.join(map(str, overlap))} are also final seed(s) "
            f"({', '.join(map(str, finals))}): a final run on such a seed would repeat the tuning run that chose its settings; "
            f"leave select.seeds out (tuning seeds then start at {DEFAULT_TUNING_SEED}) or list seeds apart from the final ones, "
            f"or set select.allow_seed_overlap: true to accept it (the report then says so)" + ("" if given == "select.seeds" else
                                                                                                 f" ({given} {sel.seeds} collide)"))
    return overlap


def plan_selection(suite: Suite, path: str | Path, runs: list[MatrixRun], results_root: str | Path | None, overrides: list[str] | None = None) -> SelectionPlan:
    """Tuning runs for every group (with ``extend_edges``, also the values beyond an edge that the
    finished results call for), and the final runs of the groups ``results_root`` decides."""
    sel = suite.select
    assert sel is not None
    groups: dict[str, Group] = {}
    finals = {id(run): build_config(suite, path, run.tree, run.where, overrides) for run in runs}  # each matrix point validated once
    overlap = check_tuning_seeds(suite, path, [c.seed for c in finals.values()])
    final_seeds_of: dict[str, list[int]] = {}
    for run in runs:
        final_seeds_of.setdefault(_group_key(run.tree), []).append(finals[id(run)].seed)
    templates: dict[str, tuple[MatrixRun, list[str]]] = {}  # group → a matrix point and its final evaluations

    def candidate(key: str, values: dict[str, Any]) -> Candidate:
        run, final_evaluations = templates[key]
        specs = []
        for seed in sel.seeds:
            tree = _with(run.tree, values, seed=seed, evaluations=[HELDOUT])
            config = build_config(suite, path, tree, f"{run.where}, tuning {_show(values)}, seed={seed}", overrides)
            # the final runs' evaluations travel along, so a data check covers what they will read
            record = json.dumps({"tuned_values": values, "group": key, "final_evaluations": final_evaluations,
                                 "final_seeds": final_seeds_of[key]}, sort_keys=True, default=str)
            specs.append(RunSpec(suite.name, config.run_id(), config, run.profile, "tune", record))
        return Candidate(values, specs)

    for run in runs:
        key = _group_key(run.tree)
        if key not in groups:
            templates[key] = (run, list(finals[id(run)].evaluations))
            candidates = [candidate(key, values) for values in _combos(sel.tune)]
            first = candidates[0].runs[0].config
            label = {"method": first.method.name, "dataset": first.data.name, "backbone": first.backbone.name,
                     **{k: v for k, v in run.values.items() if k not in ("method", "seed")}}
            groups[key] = Group(key, label, candidates, [])
        groups[key].finals.append(run)
    final: list[RunSpec] = []
    for group in groups.values():
        if results_root is not None:
            decide(group, Path(results_root), sel.metric, sel.lower_is_better)
            while sel.extend_edges and group.chosen is not None and extend(group, sel.max_extensions, lambda v, k=group.key: candidate(k, v)):
                decide(group, Path(results_root), sel.metric, sel.lower_is_better)
        if group.chosen is None:
            continue
        selection = {"metric": sel.metric, "split": sel.split, "tuned": sel.tune, "seeds": sel.seeds, "chosen": group.chosen.values,
                     "scores": {json.dumps(c.values, sort_keys=True): c.mean for c in group.candidates}, "group": group.key,
                     "tried": group.tried(), "n_candidates": len(group.candidates), "at_edge": group.at_edge(), "tie": group.tie(),
                     "extensions": group.extensions, "extension_stopped": group.extension_stopped,
                     "seed_overlap": overlap}
        record = json.dumps({"selection": selection}, sort_keys=True, default=str)
        for run in group.finals:
            config = build_config(suite, path, _with(run.tree, group.chosen.values), f"{run.where}, chosen {_show(group.chosen.values)}", overrides)
            final.append(RunSpec(suite.name, config.run_id(), config, run.profile, "final", record))
    tune = [spec for g in groups.values() for c in g.candidates for spec in c.runs]
    if results_root is not None and any(g.chosen is not None for g in groups.values()):
        write_selection(Path(results_root) / suite.name, suite, list(groups.values()), overlap)
    return SelectionPlan(tune, final, list(groups.values()))


def extend(group: Group, cap: int, make: Callable[[dict[str, Any]], Candidate]) -> bool:
    """Add, for each numeric tuned key whose chosen value is at an edge of the values tried, one
    candidate one step beyond that edge (:func:`bench.grid.step_beyond`; the other keys keep their
    chosen values), unless ``cap`` values were already added to that key or the new value is not a
    valid setting (then why is recorded in ``extension_stopped``). True when a candidate was added:
    the group is then undecided until the new tuning runs have ended."""
    assert group.chosen is not None
    tried, added = group.tried(), False
    for key, edge in group.at_edge().items():
        values = tried[key]
        if not all(is_number(v) for v in values):
            group.extension_stopped[key] = "not numeric: no step beyond the listed order"
            continue
        if sum(1 for e in group.extensions if e["key"] == key) >= cap:
            group.extension_stopped[key] = f"max_extensions ({cap}) reached"
            continue
        value = step_beyond(values, edge)
        try:
            new = make({**group.chosen.values, key: value})
        except SuiteError as exc:  # e.g. a step below zero for a setting that must be positive
            group.extension_stopped[key] = f"{_show({key: value})} is not a valid setting: {str(exc).splitlines()[0]}"
            continue
        group.extensions.append({"key": key, "edge": edge, "value": value, "from": group.chosen.values[key], "values": new.values})
        group.candidates.append(new)
        added = True
    if added:
        group.chosen = None
    return added


def _show(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def decide(group: Group, results_root: Path, metric: str, lower_is_better: bool) -> None:
    """Fill each candidate's held-out scores from finished tuning runs; choose once none is waiting."""
    group.waiting = 0
    for candidate in group.candidates:
        candidate.scores, candidate.failed = [], 0
        for spec in candidate.runs:
            run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
            if is_done(run_dir, spec.config):  # on the data here now: a stale-data run waits to be run again
                score = heldout_score(run_dir.read_result(), metric)
                if score is None or not math.isfinite(score):
                    candidate.failed += 1
                else:
                    candidate.scores.append(score)
            elif run_dir.effective_state() == "failed":
                candidate.failed += 1
            else:
                group.waiting += 1
    group.chosen = None
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


DROPPED_REASON = "tuning run of a decided selection group: its held-out score is recorded and no tuning run is evaluated again"


def drop_decided_weights(specs: list[RunSpec], results_root: Path) -> list[RunDir]:
    """Delete the final weights (last.pt) of the finished tuning runs of every decided group:
    selection read their held-out scores from result.json, and nothing evaluates a tuning run
    again, so the weights are only disk (:meth:`RunDir.drop_final_weights`; result.json and
    metrics.jsonl stay and the run reads 'done'). A group is decided when final runs carrying its
    selection exist among ``specs``. Called by the launcher, never by a command that only reads
    (status, validate, report): expanding a suite deletes nothing. A run another process holds,
    or that is not done on the data here, is left alone. The run folders whose weights went."""
    from bench.store import RunHeld, RunLock

    decided = {json.loads(s.record).get("selection", {}).get("group") for s in specs if s.stage == "final"} - {None}
    dropped = []
    for spec in specs:
        if spec.stage != "tune" or json.loads(spec.record).get("group") not in decided:
            continue  # undecided (waiting, or extended beyond an edge): its runs may be read again
        run_dir = RunDir.of(results_root, spec.suite, spec.run_id)
        if not run_dir.checkpoint.is_file() or not is_done(run_dir, spec.config):
            continue
        try:
            lock = RunLock.acquire(run_dir)
        except (RunHeld, OSError):
            continue
        try:
            if run_dir.drop_final_weights(DROPPED_REASON):
                dropped.append(run_dir)
        except OSError:  # a read-only results folder: the weights stay, nothing else changes
            pass
        finally:
            lock.release()
    return dropped


def write_selection(folder: Path, suite: Suite, groups: list[Group], seed_overlap: Sequence[int] = ()) -> None:
    sel = suite.select
    assert sel is not None
    atomic_write_json(folder / SELECTION_FILE, {
        "suite": suite.name, "metric": sel.metric, "split": sel.split, "tune": sel.tune, "seeds": sel.seeds,
        "seed_overlap": list(seed_overlap), "allow_seed_overlap": sel.allow_seed_overlap,
        "extend_edges": sel.extend_edges, "max_extensions": sel.max_extensions,
        "groups": [g.record() for g in groups],
    })


def read_selection(folder: Path) -> dict[str, Any]:
    """The recorded decision of a suite ({} before any group is decided)."""
    path = Path(folder) / SELECTION_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
