"""Seeds until it resolves: a suite's final runs gain seeds in rounds until its claim is decided.

A suite with ``seeds: {min: 3, max: 12, step: 2, until: primary}`` (:class:`bench.suite.SeedSchedule`)
runs its final runs with seeds ``0 … n−1``, where ``n`` is the current round's seed count:
``min`` at first, then ``min + step``, … up to ``max`` (the *looks*, fixed before any run so that
an anytime-valid procedure can spend its error rate over them). Those seeds are an ordinary
matrix axis: the run ids are the ones ``matrix.seed: [0, …, n−1]`` would give, so finished runs
are reused and a later round only adds the new seeds.

A round is decided during expansion with a results root — where model selection decides
(:mod:`bench.select`) — once every final run of the round has ended (done or failed) and the
round is not recorded yet: :func:`decide_round` asks the decider the schedule's ``until`` names
(``primary``: ``bench.report.claims.decide_primary``, written elsewhere; what it computes is in
docs/reports.md). The round is recorded in ``results/<suite>/seeds.json``; an undecided round
below ``max`` moves ``n`` to the next look, so the same expansion (and every later one) yields the
new seeds. Because the decision lives in expansion, every launcher carries the rounds through
without a person: the local loop in :func:`bench.launch.launch_suite`, and on Slurm the dependent
:class:`bench.launch.NextStageTask`.

This module is the mechanism only; whether a round is decided is the decider's business.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bench.dataid import run_state
from bench.errors import SuiteError
from bench.io import atomic_write_json
from bench.registry import Registry
from bench.store import RunDir

if TYPE_CHECKING:
    from bench.suite import RunSpec, SeedSchedule, Suite

SEEDS_FILE = "seeds.json"
ENDED = ("done", "failed")  # a round waits for nothing else: interrupted or corrupt runs are resumed first


@dataclass(frozen=True)
class RoundDecision:
    """What the decider says about one round: ``decided`` stops the rounds; ``verdict`` is a short
    word for people and reports (e.g. 'reproduced', 'undecided'); ``detail`` says why."""

    decided: bool
    verdict: str
    detail: str = ""


Decider = Callable[["Suite", list["RunSpec"], Path, int, list[int]], RoundDecision]
DECIDERS: Registry[Decider] = Registry("seed-round decider")
"""``SeedSchedule.until`` → the function that decides a round. One entry per thing a schedule can
wait for; the statistics live with the decider, not here."""


@DECIDERS.register("primary")
def _primary_claim(suite: "Suite", specs: list["RunSpec"], results_root: Path, look: int, looks: list[int]) -> RoundDecision:
    """The suite's primary claim, judged by ``bench.report.claims.decide_primary`` (imported when a
    round is due: the report code is not needed to expand a suite)."""
    try:
        from bench.report.claims import decide_primary
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench.report.claims", "bench.report"):
            raise  # the module is there and something it imports is not: say that, not this
        raise SuiteError(f"seeds: round {look + 1} of suite {suite.name!r} ({looks[look]} seeds) has ended, but the decider of "
                         "'until: primary', bench.report.claims.decide_primary, is not installed in this checkout; nothing "
                         f"was recorded: add it (see docs/reports.md) or remove seeds: and list matrix.seed instead") from None
    return decide_primary(suite, specs, results_root, look, looks)


def decide_round(suite: "Suite", specs: list["RunSpec"], results_root: Path, look: int, looks: list[int]) -> RoundDecision:
    """Decide one round. ``specs`` are the round's final runs, every one ended (done or failed:
    a decider reads only the finished ones and may say how many failed); ``look`` is the index of
    this round in ``looks`` (0 for the first), so ``looks[look]`` is its seed count. Tests replace
    this function (``monkeypatch.setattr(bench.sequential, "decide_round", fake)``)."""
    assert suite.seeds is not None
    return DECIDERS.get(suite.seeds.until)(suite, specs, results_root, look, looks)


# ---- the recorded rounds -------------------------------------------------------------------------


def _schedule_record(schedule: "SeedSchedule") -> dict[str, Any]:
    return schedule.model_dump()


def read_rounds(folder: Path) -> dict[str, Any]:
    """``results/<suite>/seeds.json`` as written ({} before the first round is decided)."""
    path = Path(folder) / SEEDS_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SuiteError(f"{path}: cannot read the recorded seed rounds ({exc}); move it aside to decide the rounds anew "
                         "(finished runs are reused)") from None
    return state if isinstance(state, dict) else {}


def round_state(suite: "Suite", results_root: str | Path | None) -> dict[str, Any]:
    """The schedule's state: current ``n``, ``stopped`` and the recorded ``rounds`` — from
    seeds.json, or the first round's when nothing is recorded (or there is no results root).
    A file recorded under another schedule is refused: the looks an error rate was spent over
    cannot change half-way."""
    schedule = suite.seeds
    assert schedule is not None
    fresh = {"suite": suite.name, "schedule": _schedule_record(schedule), "looks": schedule.looks(), "n": schedule.min,
             "stopped": None, "rounds": []}
    if results_root is None:
        return fresh
    state = read_rounds(Path(results_root) / suite.name)
    if not state:
        return fresh
    if state.get("schedule") != fresh["schedule"] or state.get("n") not in fresh["looks"]:
        raise SuiteError(f"seeds: {Path(results_root) / suite.name / SEEDS_FILE} records rounds of the schedule "
                         f"{state.get('schedule')}, and the suite now says {fresh['schedule']}; the looks cannot change "
                         "half-way: restore the schedule, or move seeds.json aside to start the rounds anew (finished runs are reused)")
    return {**fresh, **state}


def seed_count(suite: "Suite", results_root: str | Path | None) -> int:
    """Seeds the suite's final runs have in the current round (1 without a schedule: one matrix point)."""
    return 1 if suite.seeds is None else int(round_state(suite, results_root)["n"])


# ---- expansion -----------------------------------------------------------------------------------


def with_seeds(suite: "Suite", n: int) -> "Suite":
    """The suite as if it listed ``matrix.seed: [0, …, n−1]`` and had no schedule: expanding it
    gives the run ids that list would (seed is an ordinary axis; key order is not part of an id)."""
    plain = suite.model_copy(update={"seeds": None, "matrix": {**suite.matrix, "seed": list(range(n))}})
    plain._lines, plain._children, plain._child_roots = suite._lines, suite._children, suite._child_roots
    plain._sweeps = suite._sweeps
    return plain


def expand_round(suite: "Suite", path: str | Path, overrides: list[str] | None, data_root: str | Path | None,
                 results_root: str | Path | None, limit: int) -> list["RunSpec"]:
    """The suite's runs at the current round (:func:`bench.suite.expand`'s hook for ``seeds:``);
    with a results root, a round whose final runs have all ended is decided and recorded first,
    and an undecided one below ``max`` yields the next look's seeds at once."""
    from bench.suite import expand, shown_override

    for text in overrides or []:
        if text.split("=", 1)[0].strip() == "seed":
            raise SuiteError(f"{shown_override(text)}: this suite's seeds come from its seeds: schedule (0, 1, … per round); "
                             "use --only seed=N to run or show one seed (command-line override)")
    state = round_state(suite, results_root)
    specs = expand(with_seeds(suite, state["n"]), path, overrides, data_root, results_root, limit)
    if results_root is None or state["stopped"] or any(r.get("n") == state["n"] for r in state["rounds"]):
        return specs
    finals = round_runs(suite, specs, state["n"], Path(results_root))
    if finals is None:
        return specs
    advanced = record_round(suite, state, finals, Path(results_root))
    return expand(with_seeds(suite, advanced), path, overrides, data_root, results_root, limit) if advanced != state["n"] else specs


def round_runs(suite: "Suite", specs: list["RunSpec"], n: int, results_root: Path) -> list["RunSpec"] | None:
    """The round's final runs when every one exists and has ended, else None. With model selection
    a group's final runs exist only once it is decided, so a round also waits for every group."""
    finals = [s for s in specs if s.suite == suite.name and s.stage == "final"]
    expected = math.prod(len(values) for key, values in suite.matrix.items() if key != "seed") * n
    if len(finals) != expected:
        return None
    if any(run_state(RunDir.of(results_root, s.suite, s.run_id), s.config)[0] not in ENDED for s in finals):
        return None
    return finals


def record_round(suite: "Suite", state: dict[str, Any], finals: list["RunSpec"], results_root: Path) -> int:
    """Ask the decider about the round, record it in seeds.json (atomically: a reader sees the old
    state or the new one), and return the seed count of the round that follows (the same when the
    rounds stop)."""
    looks: list[int] = state["looks"]
    n: int = state["n"]
    look = looks.index(n)
    decision = decide_round(suite, finals, results_root, look, list(looks))
    failed = sum(1 for s in finals if RunDir.of(results_root, s.suite, s.run_id).effective_state() == "failed")
    rounds = [*state["rounds"], {
        "look": look, "n": n, "decided": bool(decision.decided), "verdict": decision.verdict, "detail": decision.detail,
        "runs": len(finals), "failed": failed, "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }]
    last = look == len(looks) - 1
    stopped = "decided" if decision.decided else "max" if last else None
    following = n if stopped else looks[look + 1]
    atomic_write_json(results_root / suite.name / SEEDS_FILE, {**state, "n": following, "stopped": stopped, "rounds": rounds})
    return following


# ---- what people see -----------------------------------------------------------------------------


def scheduled(suite: "Suite") -> list["Suite"]:
    """The suite and every included suite that has a seed schedule (each keeps its own)."""
    own = [suite] if suite.seeds is not None else []
    return own + [s for _, child in suite._children for s in scheduled(child)]


def open_schedules(suite: "Suite", results_root: Path) -> set[str]:
    """Names of the suites whose rounds can still add seeds: ending one of their runs can make
    something new to launch (what a dependent Slurm job waits for)."""
    return {s.name for s in scheduled(suite) if not round_state(s, results_root)["stopped"]}


def schedule_line(schedule: "SeedSchedule") -> str:
    """'3 → up to 12 in steps of 2 until the primary claim resolves (looks at 3, 5, …, 12)'."""
    looks = schedule.looks()
    return (f"{schedule.min} → up to {schedule.max} in steps of {schedule.step} until the {schedule.until} claim resolves "
            f"(looks at {', '.join(map(str, looks))})")


def round_line(suite: "Suite", state: dict[str, Any]) -> str:
    """'round 2 (5 seeds of 3→12, step 2); round 1 (3 seeds): undecided — <detail>'."""
    schedule = suite.seeds
    assert schedule is not None
    current = state["looks"].index(state["n"]) + 1
    head = f"round {current} ({state['n']} seeds of {schedule.min}→{schedule.max}, step {schedule.step})"
    if state["stopped"]:
        head += f", stopped: {'decided' if state['stopped'] == 'decided' else 'max reached, undecided'}"
    past = [f"round {r['look'] + 1} ({r['n']} seeds): {r['verdict']}" + (f" — {r['detail']}" if r.get("detail") else "")
            + (f" ({r['failed']} of {r['runs']} runs failed)" if r.get("failed") else "") for r in reversed(state["rounds"])]
    return "; ".join([head, *past])


def round_status(suite: "Suite", results_root: Path) -> list[dict[str, Any]]:
    """Per scheduled suite: its state and the line ``bench status`` prints (``--json`` gets both)."""
    out = []
    for s in scheduled(suite):
        state = round_state(s, results_root)
        round_no = state["looks"].index(state["n"]) + 1
        out.append({**state, "round": round_no, "line": round_line(s, state)})
    return out


def current_look(suite: "Suite", results_root: str | Path | None) -> tuple[int, list[int]]:
    """(index of the look the rounds are at — or stopped at — and the looks): which share of α a
    report of the suite judges its claims at (bench.report.claims.report_alpha)."""
    state = round_state(suite, results_root)
    looks = list(state["looks"])
    return looks.index(int(state["n"])), looks
