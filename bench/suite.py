"""Suites: a YAML file that declares a grid of runs, expanded into resolved run configs.

```yaml
name: demo
defaults:            # any RunConfig field except method/seed
  backbone: {name: dinov2_vits14_imgfocus, img_size: 112}
methods:             # parameters per method name
  grpo_rm: {epsilon: 0.2}
matrix:              # the grid: method, seed, or any dotted RunConfig path
  method: [sft, grpo_rm]
  seed: [0, 1, 2]
```

Expansion is deterministic (matrix keys in file order, values in listed order) and each run's
identity is the hash of its canonical resolved config (:meth:`RunConfig.run_id`).

Suite files are read defensively (:mod:`bench.yaml_lines`: no aliases, duplicate keys, tags,
deep nesting or non-UTF-8 text), a suite expands to at most ``max_runs`` runs (default
:data:`MAX_RUNS`), every method declared under ``methods:`` is checked even when the matrix does
not use it, and strings that end up in sbatch scripts are limited to safe characters.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterator, Literal

import re
import typing

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from bench import plugins as plugin_code
from bench.bounds import MAX_DESCRIPTION, MAX_ERRORS, MAX_NAME, MAX_PATH, Checked, capped, cut
from bench.config import SEED_LIMIT, MethodConfig, RunConfig, copy_tree, segmentation_dataset
from bench.errors import SuiteError
from bench.data import DATASETS
from bench.methods import DEFAULT_COMPARISON, METHODS
from bench.yaml_lines import MAX_BYTES, Refused, decode, line_of, locate
from bench.yaml_lines import load as load_yaml

MAX_RUNS = 10_000
"""Most runs one expansion may produce unless raised (``--max-runs`` / $BENCH_MAX_RUNS): a typo
such as ``seed: [0, ..., 999]`` times four other axes should not queue a million jobs."""

# Characters a scheduler string may hold: each becomes a ``#SBATCH --key=value`` line, so a
# newline would start a directive (or a shell line) of its own; spaces and quotes are not needed.
_SAFE_CHARS = "\\-A-Za-z0-9_.,:=@+/\\[\\]"  # "-" escaped: more characters are appended for constraints
_SAFE = re.compile(f"[{_SAFE_CHARS}]+")
_SAFE_CONSTRAINT = re.compile(f"[{_SAFE_CHARS}&|!*()]+")  # Slurm feature expressions: a100|h100, intel&ib
_SAFE_SHOWN = "letters, digits and _ . , : = @ + / - [ ]"
_EXTRA_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_OVERRIDE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


MAX_TIME_MIN = 366 * 24 * 60
"""Longest wall-clock limit a profile may ask for: a year (``time_min: 1e15`` is a typo)."""

MAX_MEM_GB = 65_536
"""Most memory a profile may ask for (64 TiB); the least is 1 GB (``mem_gb: 1e-9`` was written as
``--mem=0M``, which Slurm reads as *all* of a node's memory)."""

MAX_GPUS, MAX_CPUS, MAX_CPU_TASKS = 64, 4096, 256
"""Per-run caps: one node's worth of GPUs, CPUs per task, and processes of a CPU-only run."""

_MAIL_TYPES = {"NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT", "TIME_LIMIT",
               "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS"}

SBATCH_ALLOWED: dict[str, str] = {
    # option → value kind; each only says where and when a job may run, never what it runs
    "account": "text", "qos": "text", "partition": "text", "reservation": "text", "comment": "text",
    "constraint": "constraint", "cluster-constraint": "constraint", "gres": "text", "licenses": "text",
    "nodelist": "text", "exclude": "text", "switches": "text", "wckey": "text", "begin": "text",
    "exclusive": "flag", "requeue": "flag", "contiguous": "flag", "overcommit": "flag",
    "mail-type": "mail-type", "mail-user": "email", "nice": "count", "priority": "count",
    "hint": "hint", "gpu-bind": "text", "cpu-freq": "text", "distribution": "text", "mem-bind": "text",
}
"""sbatch options ``resources.extra`` may set, with the kind of value each takes."""

SBATCH_REFUSED: dict[str, str] = {
    **dict.fromkeys(("output", "error", "open-mode", "o", "e"), "it changes where the job's output goes (submitit's logs are how a run's failure is read)"),
    **dict.fromkeys(("export", "export-file", "get-user-env", "propagate"), "it changes the job's environment (LD_PRELOAD, PYTHONPATH, … would run other code)"),
    **dict.fromkeys(("array", "a"), "submitit sets the job array itself (one task per run); another would run runs that do not exist"),
    **dict.fromkeys(("chdir", "workdir", "d", "D"), "it changes the job's working directory, where relative paths resolve"),
    **dict.fromkeys(("input", "i"), "it feeds a file to the job's standard input"),
    **dict.fromkeys(("wrap", "container", "container-id", "prolog", "epilog", "task-prolog", "task-epilog"), "it runs a command of its own"),
    **dict.fromkeys(("uid", "gid"), "it changes who the job runs as"),
    **dict.fromkeys(("job-name", "J"), "the job name is set from the suite and profile (bench cancel finds jobs by it)"),
    **dict.fromkeys(("signal", "no-requeue", "kill-on-invalid-dep"), "checkpoint-and-requeue depends on submitit's own signal and requeue settings"),
    **dict.fromkeys(("time", "t", "mem", "mem-per-cpu", "mem-per-gpu", "cpus-per-task", "c", "cpus-per-gpu", "ntasks", "n", "ntasks-per-node",
                     "nodes", "N", "gpus", "G", "gpus-per-node", "gpus-per-task", "array-parallelism"),
                    "the profile's own fields set it (time_min, mem_gb, cpus, gpus, tasks, array_parallelism), and the run reads them"),
    **dict.fromkeys(("parsable", "test-only", "hold", "wait", "dependency"), "it changes how the submission itself behaves"),
}
"""sbatch options refused in ``resources.extra``, with the reason given."""


def _extra_value(key: str, kind: str, value: Any) -> Any:
    """The value of an allowed sbatch option, checked for its kind; raises ValueError saying what
    the option takes."""
    if kind == "flag":
        if value is True:
            return True
        raise ValueError(f"extra.{key}: {cut(value)}: {key} is a flag; write {key}: true (it becomes a bare --{key}), or leave it out")
    if isinstance(value, bool):
        raise ValueError(f"extra.{key}: {cut(value)} is a boolean; {key} takes {'a whole number' if kind == 'count' else 'text'}")
    if kind == "count":
        if isinstance(value, int) and 0 <= value <= 1_000_000:
            return value
        raise ValueError(f"extra.{key}: {cut(value)}: {key} takes a whole number in [0, 1,000,000]")
    if isinstance(value, int) and kind == "text":
        value = str(value)  # e.g. switches: 1
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise ValueError(f"extra.{key}: {cut(value)}: {key} takes text of 1 to {MAX_NAME} characters")
    if kind == "mail-type":
        bad = [t for t in value.split(",") if t.upper() not in _MAIL_TYPES]
        if bad:
            raise ValueError(f"extra.{key}: {cut(value)}: unknown mail type {cut(bad[0])} (known: {', '.join(sorted(_MAIL_TYPES))})")
    elif kind == "hint" and value not in ("compute_bound", "memory_bound", "multithread", "nomultithread"):
        raise ValueError(f"extra.{key}: {cut(value)}: hint is compute_bound, memory_bound, multithread or nomultithread")
    elif kind == "email" and not re.fullmatch(r"[A-Za-z0-9_.+-]+@[A-Za-z0-9.-]+", value):
        raise ValueError(f"extra.{key}: {cut(value)} is not an e-mail address")
    pattern = _SAFE_CONSTRAINT if kind == "constraint" else _SAFE
    if not pattern.fullmatch(value):
        raise ValueError(f"extra.{key}: {cut(value)} has characters an sbatch script must not get (allowed: {_SAFE_SHOWN}"
                         f"{' & | ! * ( )' if kind == 'constraint' else ''}; no spaces or newlines)")
    return value


class ResourceProfile(Checked):
    """What one run asks a scheduler for. Launcher settings: not part of a run's identity.

    Every number is bounded here, at validate, because a scheduler takes nonsense literally
    (``--mem=0M`` is a whole node, ``--time`` of 10^15 minutes holds a queue slot forever)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    gpus: int = Field(0, ge=0, le=MAX_GPUS, description="GPUs per run (>1 runs DDP inside the job, one process per GPU)")
    tasks: int | None = Field(None, ge=1, description=f"processes per run; default one per GPU (or 1); >1 on CPU = DDP over gloo; at most gpus (or {MAX_CPU_TASKS} without GPUs)")
    cpus: int = Field(1, ge=1, le=MAX_CPUS, description="CPUs per run; also the run's torch thread count")
    mem_gb: float = Field(8, ge=1, le=MAX_MEM_GB, description="memory per run in GB, 1 … 65,536")
    time_min: int = Field(60, ge=1, le=MAX_TIME_MIN, description="wall-clock limit (at most a year); on timeout the run checkpoints and requeues")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = Field(16, ge=1, le=100_000, description="array tasks running at once")
    signal_delay_s: int = Field(90, ge=0, le=MAX_TIME_MIN * 60, description="USR2 this long before the limit triggers checkpoint()")
    extra: dict[str, Any] = Field(default_factory=dict, description="further sbatch options from an allow-list (SBATCH_ALLOWED), e.g. {exclusive: true, reservation: r1}")

    @field_validator("partition", "account", "qos", "constraint")
    @classmethod
    def _scheduler_safe(cls, v: str | None, info: Any) -> str | None:
        """These strings are written into the sbatch script verbatim: a newline in one would add a
        line of its own (``partition: "debug\\n#SBATCH --wrap=..."``)."""
        pattern = _SAFE_CONSTRAINT if info.field_name == "constraint" else _SAFE
        if v is not None and not pattern.fullmatch(v):
            extra = " & | ! * ( )" if info.field_name == "constraint" else ""
            raise ValueError(f"{cut(v)} has characters an sbatch script must not get (allowed: {_SAFE_SHOWN}{extra}; no spaces or newlines)")
        return v

    @field_validator("extra")
    @classmethod
    def _extra_safe(cls, v: dict[str, Any]) -> dict[str, Any]:
        """Each entry becomes ``#SBATCH --key=value``, and sbatch options can do far more than
        schedule: redirect output, set LD_PRELOAD, replace the array, run a command. So only an
        allow-list of scheduling options passes, each with a typed value; keys are written with
        dashes (submitit turns ``mail_type`` into ``--mail-type`` too)."""
        out: dict[str, Any] = {}
        for key, value in v.items():
            if not isinstance(key, str) or len(key) > 40 or not _EXTRA_KEY.fullmatch(key):
                raise ValueError(f"sbatch option name {cut(key)} is not an option name (letters, digits, _ and -)")
            name = key.replace("_", "-")
            name = name if name in SBATCH_REFUSED else name.lower()
            if name in SBATCH_REFUSED or name.lower() in SBATCH_REFUSED:
                raise ValueError(f"extra.{key}: --{name} is not allowed: {SBATCH_REFUSED.get(name) or SBATCH_REFUSED[name.lower()]}")
            if name not in SBATCH_ALLOWED:
                close = difflib.get_close_matches(name, list(SBATCH_ALLOWED), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"extra.{key}: --{name} is not on the list of sbatch options a suite may set ({hint}allowed: {', '.join(sorted(SBATCH_ALLOWED))})")
            if name in out:
                raise ValueError(f"extra.{key}: --{name} is given twice (as {name} and {key})")
            out[name] = _extra_value(name, SBATCH_ALLOWED[name], value)
        return out

    @model_validator(mode="after")
    def _consistent(self) -> "ResourceProfile":
        """Bounds between fields: more processes than GPUs would put two ranks on one GPU, and an
        option set both as a field and in ``extra`` would say two things."""
        if self.tasks is not None:
            most = self.gpus if self.gpus else MAX_CPU_TASKS
            if self.tasks > most:
                what = f"the {self.gpus} GPU(s) of the run (one process per GPU, on one node)" if self.gpus else f"{MAX_CPU_TASKS} processes on one node"
                raise ValueError(f"tasks: {self.tasks} is more than {what}")
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key) is not None and key in self.extra:
                raise ValueError(f"extra.{key}: {key} is also set as a field of this profile; keep one")
        return self

    @property
    def processes(self) -> int:
        return self.tasks or max(1, self.gpus)

DEFAULT_PROFILE = "default"


class Expectation(Checked):
    """A figure to compare against (e.g. a paper's claim), with the tolerance it is judged by."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    quantity: Literal["delta", "value"] = Field("delta", description="delta = method − baseline, paired over seeds; value = method's mean")
    # in a suite, an entry without them takes the treatment and control of the suite's first comparison (Suite._pair_defaults)
    method: str = Field(default_factory=lambda: DEFAULT_COMPARISON[0], description="the method (a delta's treatment); default: the suite's first comparison's treatment")
    baseline: str = Field(default_factory=lambda: DEFAULT_COMPARISON[1], description="a delta's control; default: the suite's first comparison's control")
    dataset: str | None = Field(None, description="restrict to one dataset (default: every dataset in the suite)")
    split: str = Field("ood_avg", description="an evaluation split, or a derived average: 'ood_avg' (mean over OOD sets), 'transfer_avg/knn', 'transfer_avg/sr'")
    metric: Literal["top1", "top5", "mIoU", "aAcc", "mAcc"] = Field("top1", description="the metric the figure is stated in")
    across: Literal["each", "mean"] = Field("each", description="each: one comparison per dataset; mean: the mean over the suite's datasets (per seed, then over seeds)")
    value: float = Field(description="expected figure in percent (points for a delta)")
    tolerance: float = Field(ge=0, description="within ± this many points counts as reproduced")
    source: str = Field("", description="where the figure comes from, e.g. 'arXiv 2511.15256, abstract'")
    _text_limits: ClassVar[dict[str, int]] = {"source": 1000}

    @field_validator("method", "baseline")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return METHODS.check(v)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str | None) -> str | None:
        return v if v is None else DATASETS.check(v)


class Primary(Checked):
    """The suite's pre-specified primary endpoint: the one comparison tested alone at α (no
    multiplicity correction), on which an ``expected:`` claim with the same split and metric is
    judged and on which adaptive seeds (``seeds: {until: primary}``) stop. Everything else in the
    report is a secondary endpoint, corrected within its family."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    split: str = Field("ood_avg", description="an evaluation split or a derived average ('ood_avg', 'transfer_avg/sr', ...)")
    metric: Literal["top1", "top5", "nll", "mIoU", "aAcc", "mAcc"] = "top1"
    treatment: str = Field(default_factory=lambda: DEFAULT_COMPARISON[0], description="default: the treatment of the suite's first comparison (compare:)")
    control: str = Field(default_factory=lambda: DEFAULT_COMPARISON[1], description="default: the control of the suite's first comparison (compare:)")
    across: Literal["each", "mean"] = Field("mean", description="mean: one test of the mean over the suite's datasets; each: one per dataset (Holm-corrected among themselves)")

    @field_validator("treatment", "control")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return METHODS.check(v)

    @model_validator(mode="after")
    def _two_methods(self) -> "Primary":
        if self.treatment == self.control:
            raise ValueError(f"treatment and control are both {self.treatment}; the primary endpoint compares two different methods")
        return self


class Comparison(Checked):
    """One pair the report compares (``compare:`` in the suite): Δ = treatment − control, paired
    per seed within a setting. Each pair gets its own Δ columns in the tables, its own verdict
    box and its own forest plot; display names come from the methods registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    treatment: str = Field(description="the method whose effect is measured (a registered method the suite runs)")
    control: str = Field(description="the baseline it is measured against (a registered method the suite runs)")

    @field_validator("treatment", "control")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return METHODS.check(v)

    @model_validator(mode="after")
    def _two_methods(self) -> "Comparison":
        if self.treatment == self.control:
            raise ValueError(f"treatment and control are both {self.treatment}; a comparison needs two different methods")
        return self

    @property
    def pair(self) -> tuple[str, str]:
        return self.treatment, self.control


def default_comparison() -> Comparison:
    """The pair of a suite that declares neither ``compare:`` nor ``primary:``."""
    return Comparison(treatment=DEFAULT_COMPARISON[0], control=DEFAULT_COMPARISON[1])


MIN_EFFECT_DEFAULTS = {"top1": 0.5, "top5": 0.5, "mIoU": 0.5, "aAcc": 0.5, "mAcc": 0.5, "ece": 0.5, "nll": 0.01, "brier": 0.005}
"""The smallest Δ worth a † per metric, in the report's units (points for accuracy, mIoU and
ECE; nats for NLL; the Brier score as it is): a Δ whose CI excludes 0 but whose size is below it is
too small to matter (a 1.5e-5-point ECE difference), not a finding."""


DEFAULT_TUNING_SEED = 1000
"""The first tuning seed when ``select.seeds`` is not given: tuning seeds count from 1000 and final
seeds (the matrix's ``seed`` axis) from 0, so no final run is the tuning run that chose its own
settings (see :func:`bench.select.check_tuning_seeds`)."""


class Selection(Checked):
    """Model selection on the held-out split: each method (per dataset, backbone and every other
    matrix value) runs the ``tune`` grid on ``seeds``, scored on split ``heldout`` only; the best
    value combination by mean ``metric`` then runs with the matrix's seeds and full evaluations.
    Tuning seeds lie apart from the final seeds unless ``allow_seed_overlap``; ``extend_edges``
    tunes further values beyond a grid edge the choice sits on (see :mod:`bench.select`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    metric: Literal["top1", "top5", "nll", "mIoU", "aAcc", "mAcc"] = Field("top1", description="held-out metric that picks the winner (nll: lower is better)")
    split: Literal["heldout"] = Field("heldout", description="the only split selection may read: carved from training data (data.val_fraction)")
    tune: dict[str, list[Any]] = Field(description="dotted run-config paths → values tried, the same grid for every method, e.g. {train.lr: [3e-5, 1e-4, 3e-4]}")
    seeds: list[Annotated[int, Field(strict=True, ge=0, lt=SEED_LIMIT)]] = Field(
        default_factory=lambda: [DEFAULT_TUNING_SEED], min_length=1,
        description=f"seeds of the tuning runs (their mean decides); default [{DEFAULT_TUNING_SEED}], apart from the final seeds, which they may not overlap")
    allow_seed_overlap: bool = Field(False, description="accept tuning seeds that are also final seeds (a final run then repeats the tuning run that chose it); the report says so")
    extend_edges: bool = Field(False, description="when a group's choice is the smallest or largest value tried of a numeric tuned key, tune one more value one step beyond it, until the choice is interior or max_extensions is reached")
    max_extensions: int = Field(3, ge=0, le=20, description="most values extend_edges adds to each tuned key of a group")

    @field_validator("tune")
    @classmethod
    def _tunable(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not v:
            raise ValueError("name at least one setting to tune, e.g. {train.lr: [3e-5, 1e-4, 3e-4]}")
        for key, values in v.items():
            if key.split(".")[0] in ("method", "seed", "evaluations", "profile") or key.startswith("data.val_"):
                raise ValueError(f"{key} cannot be tuned (tune training settings such as train.lr; methods are compared, not chosen)")
            if not values:
                raise ValueError(f"{key}: empty list; give the values to try")
        return v

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "nll"


class SeedSchedule(Checked):
    """Seeds added in rounds until a claim resolves (``seeds: {min: 3, max: 12, step: 2, until: primary}``).

    The final runs start with ``min`` seeds; after each round the decider (:mod:`bench.sequential`)
    looks at what finished and either stops or adds ``step`` seeds, never beyond ``max``. A fixed
    list of looks, known before any run, is what lets an anytime-valid procedure spend its error
    rate over them; ``looks()`` is that list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # strict: a YAML ``true`` is not a count, nor is ``3.0`` or ``"3"``
    min: int = Field(strict=True, ge=2, description="seeds of the first round (two at least: one seed has no interval)")
    max: int = Field(strict=True, le=SEED_LIMIT, description="most seeds ever run; the last look is exactly this")
    step: int = Field(1, strict=True, ge=1, description="seeds added per round")
    until: Literal["primary"] = Field("primary", description="what must resolve: the suite's primary claim")

    @model_validator(mode="after")
    def _ordered(self) -> "SeedSchedule":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min}); the schedule runs min seeds first and never more than max")
        return self

    def looks(self) -> list[int]:
        """Seed counts at which a round is decided: min, min+step, …, capped at max (the last is max)."""
        return [*range(self.min, self.max, self.step), self.max]


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")  # a dotted Python module name


class Suite(Checked):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _text_limits: ClassVar[dict[str, int]] = {"description": MAX_DESCRIPTION, "data_root": MAX_PATH, "include": MAX_PATH}

    # a path component under results/ and reports/: starts with a letter, digit or '_' (so never
    # '.', '..' or hidden), no separators, at most 64 characters
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", description="safe folder name: letters, digits, _ . - (not leading '.'), ≤ 64 chars")
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    matrix: dict[str, list[Any]] = Field(default_factory=dict)
    resources: dict[str, ResourceProfile] = Field(default_factory=lambda: {DEFAULT_PROFILE: ResourceProfile()})
    profile: str = Field(DEFAULT_PROFILE, description="resource profile of runs unless the matrix has a 'profile' axis")
    evaluations: list[str] | None = Field(None, description="evaluation protocols for every run (default: id, shift)")
    expected: list[Expectation] = Field(default_factory=list, description="figures to reproduce, shown as expected vs actual")
    compare: list[Comparison] | None = Field(None, description="the (treatment, control) pairs the report compares, each with its own Δ, verdict box "
                                                       "and forest plot; default: the primary endpoint's pair, else "
                                                       f"{DEFAULT_COMPARISON[0]} vs {DEFAULT_COMPARISON[1]} (see Comparison)")
    primary: Primary | None = Field(None, description="the pre-specified primary endpoint, tested alone at α (see Primary); its pair must be one of compare's")
    min_effect: dict[Literal["top1", "top5", "mIoU", "aAcc", "mAcc", "ece", "nll", "brier"], Annotated[float, Field(ge=0, strict=False)]] = Field(
        default_factory=dict, description="smallest Δ worth a † per metric (report units); unset metrics keep MIN_EFFECT_DEFAULTS")
    data_root: str | None = Field(None, description="datasets folder for every run (relative: to this file); --data-root overrides, $BENCH_DATA_ROOT is the fallback")
    select: Selection | None = Field(None, description="tune each method on the held-out split before the final runs (see Selection)")
    include: list[str] = Field(default_factory=list, description="other suite files (relative to this one) whose runs join this suite, stored under their own results/<suite>/; their resource profiles become '<suite>/<profile>'")
    seeds: SeedSchedule | None = Field(None, description="add final-run seeds in rounds until the primary claim resolves (see SeedSchedule, bench.sequential)")
    plugins: list[Annotated[str, Field(pattern=_MODULE_NAME.pattern, max_length=200)]] = Field(
        default_factory=list, max_length=100,
        description="Python modules (importable: installed, or on PYTHONPATH) that register methods, datasets, backbones or evaluations; imported before the suite's names are checked, and by every run (docs/extending.md)")
    _lines: dict = PrivateAttr(default_factory=dict)  # key path → line in the suite file
    _children: list = PrivateAttr(default_factory=list)  # (path, Suite) per suite file reached through include, flat
    _child_roots: dict = PrivateAttr(default_factory=dict)  # path → data_root its runs inherit (None: their own)
    _sweeps: tuple = PrivateAttr(default=())  # -m texts already applied to matrix (see with_sweeps)

    @field_validator("resources")
    @classmethod
    def _profile_names(cls, v: dict[str, ResourceProfile]) -> dict[str, ResourceProfile]:
        """Profile names become Slurm job names (``bench-<suite>-<profile>``): the suite name's rule."""
        for name in v:
            if not _PROFILE_NAME.fullmatch(name):
                raise ValueError(f"profile name {name!r}: use letters, digits, '_', '.' and '-' only (it becomes a Slurm job name)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _pair_defaults(cls, data: Any) -> Any:
        """A ``primary:`` or ``expected:`` entry that names no method compares the suite's first
        ``compare:`` pair; one that names only one side takes the other from the first pair with
        that side (without ``compare:``, or without such a pair: the defaults of Primary and
        Expectation)."""
        if not isinstance(data, dict) or not isinstance(data.get("compare"), list):
            return data
        pairs = [(c["treatment"], c["control"]) for c in data["compare"]
                 if isinstance(c, dict) and isinstance(c.get("treatment"), str) and isinstance(c.get("control"), str)]

        def filled(entry: Any, keys: tuple[str, str]) -> Any:
            if not isinstance(entry, dict):
                return entry
            given = [entry.get(k) for k in keys]
            match = next((p for p in pairs if all(g is None or g == v for g, v in zip(given, p))), None)
            return entry if match is None else {**dict(zip(keys, match)), **{k: v for k, v in entry.items() if v is not None or k not in keys}}

        data = dict(data)
        data["primary"] = filled(data.get("primary"), ("treatment", "control"))
        if isinstance(data.get("expected"), list):
            data["expected"] = [filled(e, ("method", "baseline")) for e in data["expected"]]
        return data

    @model_validator(mode="after")
    def _pairs_consistent(self) -> "Suite":
        """``compare:`` lists each pair once, and the primary endpoint tests one of them."""
        if self.compare is None:
            return self
        if not self.compare:
            raise ValueError("compare: empty list; list at least one {treatment, control} pair, or leave compare out "
                             f"(default: the primary endpoint's pair, else {DEFAULT_COMPARISON[0]} vs {DEFAULT_COMPARISON[1]})")
        seen: dict[tuple[str, str], int] = {}
        for i, c in enumerate(self.compare):
            if c.pair in seen:
                raise ValueError(f"compare.{i}: {c.treatment} vs {c.control} is listed twice (also compare.{seen[c.pair]}); list each pair once")
            seen[c.pair] = i
        if self.primary is not None and (self.primary.treatment, self.primary.control) not in seen:
            listed = ", ".join(f"{t} vs {c}" for t, c in seen)
            raise ValueError(f"primary: {self.primary.treatment} vs {self.primary.control} is not one of the compared pairs ({listed}); "
                             "add it to compare, or test one of them")
        return self

    def comparisons(self) -> list[Comparison]:
        """The pairs the report compares, in the order given: ``compare:``; without it the primary
        endpoint's pair; without that :data:`bench.methods.DEFAULT_COMPARISON`."""
        if self.compare is not None:
            return list(self.compare)
        if self.primary is not None:
            return [Comparison(treatment=self.primary.treatment, control=self.primary.control)]
        return [default_comparison()]

    def min_effects(self) -> dict[str, float]:
        """Per metric, the smallest Δ worth a † (the suite's values over the defaults)."""
        return {**MIN_EFFECT_DEFAULTS, **self.min_effect}

    @field_validator("seeds")
    @classmethod
    def _seeds_alone(cls, v: SeedSchedule | None, info: ValidationInfo) -> SeedSchedule | None:
        """The schedule owns the seed axis: a ``matrix.seed`` or ``defaults.seed`` beside it would
        say two things about the same runs (and make every round's runs duplicates)."""
        if v is None:
            return v
        axes = [k for k in info.data.get("matrix") or {} if k == "seed" or k.startswith("seed.")]
        if axes or "seed" in (info.data.get("defaults") or {}):
            where = f"matrix.{axes[0]}" if axes else "defaults.seed"
            raise ValueError(f"this suite also sets {where}; with seeds: the rounds choose the seeds (0, 1, …), so remove {where}")
        if info.data.get("include") and not info.data.get("matrix"):
            raise ValueError("a suite made only of included suites has no runs of its own to add seeds to; put seeds: in the included suites")
        return v

    def resource(self, name: str) -> ResourceProfile:
        """The named profile (validated to exist when the suite is expanded)."""
        return self.resources[name]


@dataclass(frozen=True)
class RunSpec:
    """One run: its suite, identity, resolved config and resource profile. ``stage`` is 'tune' for
    a model-selection run and 'final' otherwise; ``record`` is what result.json records about the
    stage (tuned values, or the selection a final run's config came from)."""

    suite: str
    run_id: str
    config: RunConfig
    profile: str = DEFAULT_PROFILE
    stage: str = "final"
    record: str = "{}"  # JSON (keeps the spec hashable)

    @property
    def final_config(self) -> RunConfig:
        """The config as its final runs evaluate it: a tuning run's own config carries only the
        'heldout' evaluation, so data checks and claim coverage look at what will follow it."""
        final = json.loads(self.record).get("final_evaluations")
        return self.config.model_copy(update={"evaluations": tuple(final)}) if final else self.config

    @property
    def stage_record(self) -> dict[str, Any]:
        return {"stage": self.stage, **json.loads(self.record)} if self.stage != "final" or self.record != "{}" else {}


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a config tree, copying each mapping on the way down: the runs of a suite
    share the subtrees they do not change (copy on write), so a 10,000-run expansion does not
    copy the whole defaults tree 10,000 times."""
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.get(key, {})
        if not isinstance(child, dict):
            raise SuiteError(f"{dotted}: {key!r} is not a mapping")
        node[key] = child = dict(child)
        node = child
    node[leaf] = value


def shown_override(text: str, flag: str = "-o") -> str:
    """``-o <text>`` (or ``-m <text>``) as a message shows it: one line whatever was typed, and a long value cut with
    the rest counted (a 100,000-character value echoed whole gave no output for two minutes)."""
    head = text[:80]
    shown = head if head.isprintable() else repr(head)
    return f"{flag} " + shown + (f"… (… {len(text) - 80:,} more characters)" if len(text) > 80 else "")


def _key_and_value(text: str, shown: str, kind: str, form: str) -> tuple[str, str]:
    """``key.path=<raw>`` split at the first '=', the key checked as a dotted path: what `-o` and
    `-m` share (``kind``: 'override' or 'sweep', named in their errors; ``form``: how one looks)."""
    if "=" not in text:
        raise SuiteError(f"{shown}: a command-line {kind} looks like {form}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not all(_OVERRIDE_KEY.fullmatch(part) for part in key.split(".")):
        raise SuiteError(f"{shown}: {key!r} is not a dotted key path such as train.lr (command-line {kind})")
    return key, raw


def parse_override(text: str) -> tuple[str, Any]:
    """``train.lr=1e-4`` → ("train.lr", 1e-4); the value is parsed as YAML by the same defensive
    loader as suite files. Errors are one line that starts ``-o <text>:`` so nobody searches a
    suite file for a mistake made on the command line."""
    shown = shown_override(text)
    key, raw = _key_and_value(text, shown, "override", "key.path=value, e.g. -o train.lr=1e-4")
    try:
        value, _ = load_yaml(raw)
    except Refused as exc:
        raise SuiteError(f"{shown}: {exc.reason} (in the value of a command-line override)") from None
    return key, value


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``train.lr=1e-4,3e-4`` (or ``train.lr=[1e-4,3e-4]``) → ("train.lr", [1e-4, 3e-4]): a
    command-line matrix axis. The values are read as one YAML flow list by the same defensive
    loader as suite files and ``-o`` (so ``-m method=sft,{name: grpo_rm, params: {mu: 2}}`` and
    quoted text work); a value that is itself a list needs its own brackets: ``[[id,shift],[id]]``.
    Errors are one line that starts ``-m <text>:``."""
    shown = shown_override(text, "-m")
    key, raw = _key_and_value(text, shown, "sweep", "key.path=value,value, e.g. -m train.lr=1e-4,3e-4")
    values: Any = None
    stripped = raw.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            values, _ = load_yaml(stripped)
        except Refused:
            values = None  # e.g. [a,b],[c]: two list values, read below
    if not isinstance(values, list):
        try:
            values, _ = load_yaml("[" + raw + "]")
        except Refused as exc:
            raise SuiteError(f"{shown}: {exc.reason} (in the values of a command-line sweep)") from None
    if not values:
        raise SuiteError(f"{shown}: empty list; give at least one value (command-line sweep)")
    return key, values


def with_sweeps(suite: Suite, sweeps: list[str] | tuple[str, ...] | None) -> Suite:
    """The suite as if its file's ``matrix`` had the ``-m`` axes: a key the matrix has gets the
    given values in its place, a new key is added after the file's axes (in command-line order).
    A suite made only of included suites keeps its (empty) matrix: :func:`expand` passes the
    sweeps on to the included suites. Applied once: the result remembers its sweeps."""
    if not sweeps or suite._sweeps:
        return suite
    axes: dict[str, list[Any]] = {}
    first: dict[str, str] = {}
    for text in sweeps:
        key, values = parse_sweep(text)
        shown = shown_override(text, "-m")
        if key in axes:
            raise SuiteError(f"{shown}: {key} is swept twice on the command line (also {shown_override(first[key], '-m')}); give all its values in one -m")
        if suite.seeds is not None and (key == "seed" or key.startswith("seed.")):
            raise SuiteError(f"{shown}: this suite's seeds come from its seeds: schedule (0, 1, … per round); "
                             "use --only seed=N to run or show one seed (command-line sweep)")
        if key.startswith("methods."):
            raise SuiteError(f"{shown}: an axis applies to every run; sweep method.params.<name> when every method has the "
                             "parameter, or list method variants under matrix.method in the suite file (command-line sweep)")
        for i, value in enumerate(values):
            if key == "method" and not (isinstance(value, str) or (isinstance(value, dict) and isinstance(value.get("name"), str)
                                                                   and set(value) <= {"name", "params"} and isinstance(value.get("params", {}) or {}, dict))):
                raise SuiteError(f"{shown}: value {i + 1}, {cut(value)}, is not a method name or a variant {{name: <method>, params: {{...}}}} (command-line sweep)")
            if key == "profile":
                if not isinstance(value, str):
                    raise SuiteError(f"{shown}: value {i + 1}, {cut(value)}, is not a profile name (command-line sweep)")
                if value not in suite.resources:
                    close = difflib.get_close_matches(value, list(suite.resources), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise SuiteError(f"{shown}: unknown resource profile {value!r}{hint} (defined: {', '.join(suite.resources)}) (command-line sweep)")
        axes[key], first[key] = values, text
    own = bool(suite.matrix) or not suite.include
    swept = suite.model_copy(update={"matrix": {**suite.matrix, **axes}} if own else {})
    swept._lines, swept._children, swept._child_roots = suite._lines, suite._children, suite._child_roots
    swept._sweeps = tuple(sweeps)
    return swept


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of ``loc`` (for did-you-mean)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str) and part in current.model_fields:
            current = current.model_fields[part].annotation
        elif typing.get_origin(current) is dict:  # a mapping's key (e.g. a profile name)
            current = typing.get_args(current)[1]
        else:
            return None
        while typing.get_origin(current) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            current = next((a for a in typing.get_args(current) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if typing.get_origin(current) is dict:
        current = typing.get_args(current)[1]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _hint(model: type[BaseModel], loc: tuple, error_type: str) -> str:
    if error_type != "extra_forbidden" or not loc:
        return ""
    holder = _model_at(model, loc)
    if holder is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(holder.model_fields), n=1)
    return f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(holder.model_fields)})"


def _message(e: dict) -> str:
    return re.sub(r"^Value error, ", "", e["msg"])


def _format_validation(path: Path, err: ValidationError, model: type[BaseModel], lines: dict, to_suite_paths) -> str:
    """``file:line: key.path: reason`` per error, at most :data:`bench.bounds.MAX_ERRORS` of them
    (then how many more: 40,000 unknown keys were a 40,000-line message after a minute of
    did-you-mean); ``to_suite_paths`` maps a model loc to where in the suite file that value could
    have been written. A validator may name the key it rejects at the start of its message: a
    dotted path from the top (``data.name: …``), or a key inside the value it checks
    (``extra.output: …`` for ``resources.gpu.extra``, ``tasks: …`` for ``resources.gpu``)."""
    out = []
    errors = err.errors()
    for e in errors[:MAX_ERRORS]:
        loc = tuple(e["loc"])
        msg = _message(e)
        candidates = list(to_suite_paths(loc))
        keyed = re.match(r"^([a-z_]+(?:\.[A-Za-z0-9_-]+)*): ", msg)  # validators name the key they reject
        if keyed:
            parts = tuple(int(p) if p.isdigit() else p for p in keyed.group(1).split("."))
            if len(loc) >= 2 and parts[0] == loc[-1]:  # a key inside the checked value: extra.output
                msg, candidates = msg[keyed.end():], [loc[:-1] + parts, *candidates]
            elif len(parts) == 1:  # a field of the checked section: tasks
                if loc + parts in lines:
                    msg, candidates = msg[keyed.end():], [loc + parts, *candidates]
            else:  # a dotted path from the top: data.name
                loc, msg = parts, msg[keyed.end():]
                candidates = list(to_suite_paths(loc))
        found, line = locate(lines, *candidates)
        shown = ".".join(str(p) for p in found) if found else "(top level)"
        out.append(f"{path}:{line or 1}: {shown}: {msg}{_hint(model, tuple(e['loc']), e['type'])}")
    if len(errors) > MAX_ERRORS:
        out.append(f"… and {len(errors) - MAX_ERRORS:,} more errors (fix these first)")
    return "\n".join(out)


def read_suite_file(path: Path) -> tuple[Any, dict]:
    """The YAML document of a suite file (or an included one) and its key lines, read through
    :func:`bench.yaml_lines.load`; anything refused becomes ``file:line: reason``."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite file: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise SuiteError(f"{path}:1: larger than {MAX_BYTES // 1024} KiB; a suite file is a short YAML document")
    try:
        return load_yaml(decode(data))
    except Refused as exc:
        raise SuiteError(f"{path}:{exc.line}: {exc.reason}") from None


def _is_file(path: Path) -> bool:
    """``Path.is_file`` that reports errors it does not swallow (a name too long, no permission)."""
    try:
        return path.is_file()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite file: {exc.strerror or exc}") from None


MAX_INCLUDED = 256
"""Most distinct suite files one suite may reach through ``include`` (paper.yaml reaches 4)."""


def load_suite(path: str | Path, _seen: tuple[Path, ...] = (), _loaded: dict[Path, Suite] | None = None) -> Suite:
    """A suite file, validated, with the suites it includes.

    ``_loaded`` (one per top-level call) holds every file loaded so far: a file reached through
    several includes is read and validated once. Without it an include graph where each level
    includes the next twice took 2^depth loads (depth 12: 19 s; 26: no answer)."""
    path = Path(path)
    loaded: dict[Path, Suite] = {} if _loaded is None else _loaded
    if not _is_file(path):
        raise SuiteError(f"{path}: suite file not found")
    raw, lines = read_suite_file(path)
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}:1: a suite must be a YAML mapping with at least 'name'")
    _import_plugins(raw.get("plugins"), path, lines)
    try:
        suite = Suite(**raw)
    except ValidationError as exc:
        raise SuiteError(_format_validation(path, exc, Suite, lines, lambda loc: [loc])) from None
    suite._lines = lines
    return _with_includes(suite, path, _seen, loaded)


def _import_plugins(modules: Any, path: Path, lines: dict) -> None:
    """Import a suite's plugins before the suite is validated: its methods, pairs and datasets
    may name what they register. Anything but a list of module names is left to validation."""
    if not isinstance(modules, list) or not all(isinstance(m, str) and _MODULE_NAME.match(m) for m in modules):
        return
    for i, module in enumerate(modules):
        try:
            plugin_code.load([module])
        except plugin_code.PluginError as exc:
            raise SuiteError(f"{path}:{line_of(lines, ('plugins', i), ('plugins',)) or 1}: plugins.{i}: {exc}") from None


def _with_includes(suite: Suite, path: Path, seen: tuple[Path, ...], loaded: dict[Path, Suite]) -> Suite:
    """Load the suites ``include`` names; their profiles join this suite's as ``<suite>/<profile>``.

    The included suites are kept flat: ``_children`` lists every suite file reached (directly or
    through others) once, in the order first reached, each without children of its own, so every
    walk over them (expansion, run counts, reports) is linear in the number of files. What
    nesting meant is kept: a file's runs take the ``data_root`` of the outermost suite on the path
    that sets one (``_child_roots``), and a file reached twice joins once."""
    if not suite.include:
        return suite
    here = path.resolve()
    seen = (*seen, here)
    own_root = _resolve_root(suite, path, None)
    children: dict[Path, Suite] = {}
    roots: dict[Path, str | None] = {}
    resources = dict(suite.resources)
    direct: dict[Path, int] = {}
    for i, name in enumerate(suite.include):
        line = line_of(suite._lines, ("include", i), ("include",)) or 1
        try:
            child_path = (path.parent / name).resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise SuiteError(f"{path}:{line}: include.{i}: cannot resolve {cut(name)}: {exc}") from None
        if child_path in seen:
            raise SuiteError(f"{path}:{line}: include.{i}: {name} includes itself (directly or through another suite)")
        if child_path in direct:
            raise SuiteError(f"{path}:{line}: include.{i}: {name} is already included (include.{direct[child_path]}); a suite joins once")
        direct[child_path] = i
        child = loaded.get(child_path)
        if child is None:
            try:
                exists = child_path.is_file()
            except OSError as exc:  # a name too long, no permission: is_file swallows only "not there"
                raise SuiteError(f"{path}:{line}: include.{i}: cannot read {cut(name)}: {exc.strerror or exc}") from None
            if not exists:
                raise SuiteError(f"{path}:{line}: include.{i}: suite file {child_path} not found; paths are relative to {path.parent}")
            if len(loaded) >= MAX_INCLUDED:
                raise SuiteError(f"{path}:{line}: include.{i}: more than {MAX_INCLUDED} suite files are included in all; a suite includes a handful")
            child = loaded[child_path] = load_suite(child_path, seen, loaded)
        reached = [(child_path, child, None), *((p, c, child._child_roots.get(p)) for p, c in child._children)]
        for p, c, inherited in reached:
            if p == here or p in children:
                continue  # reached before, through another include: its runs join once
            leaf = c
            if c._children:  # flat: its own descendants are in this list already
                leaf = c.model_copy(update={"resources": {k: v for k, v in c.resources.items() if "/" not in k}})
                leaf._lines, leaf._children = c._lines, []
            children[p] = leaf
            # the outermost suite that sets data_root decides (this one, else the path below it)
            roots[p] = own_root if own_root is not None else (_resolve_root(child, child_path, None) if p != child_path else None) or inherited
            resources.update({f"{leaf.name}/{k}": v for k, v in leaf.resources.items() if "/" not in k})
    merged = suite.model_copy(update={"resources": resources})
    merged._lines, merged._children, merged._child_roots = suite._lines, list(children.items()), roots
    return merged


def _run_config_paths(loc: tuple, method: str) -> list[tuple]:
    """Where a RunConfig field could be set in a suite file, most specific first."""
    dotted = ".".join(str(p) for p in loc)
    if loc[:2] == ("method", "params"):
        return [("methods", method, *loc[2:]), ("matrix", dotted), ("defaults", *loc), ("methods", method), ("matrix", "method")]
    if loc and loc[0] == "method":
        return [("matrix", "method"), ("defaults", *loc)]
    if loc and loc[0] == "seed":
        return [("matrix", "seed"), ("defaults", "seed")]
    if loc and loc[0] == "evaluations":
        return [("evaluations", *loc[1:]), ("defaults", *loc), ("evaluations",)]
    prefixes = [".".join(str(p) for p in loc[:i]) for i in range(len(loc), 0, -1)]
    return [("defaults", *loc), *(("matrix", p) for p in prefixes)]


def max_runs_default() -> int:
    """:data:`MAX_RUNS`, or $BENCH_MAX_RUNS when set. The CLI's ``--max-runs`` sets that variable,
    so expansions that happen later (the launcher's second stage, a Slurm selection job, local
    subprocesses) honour the raised limit too."""
    text = os.environ.get("BENCH_MAX_RUNS")
    if text is None:
        return MAX_RUNS
    try:
        value = int(text)
    except ValueError:
        raise SuiteError(f"$BENCH_MAX_RUNS={text!r}: not a whole number of runs") from None
    if value < 1:
        raise SuiteError(f"$BENCH_MAX_RUNS={text!r}: must be at least 1")
    return value


def planned_runs(suite: Suite) -> int:
    """Runs a suite can expand to, counted before anything is built: the matrix product, plus
    with model selection every group's tuning grid on its seeds; included suites add theirs."""
    own = 0
    if suite.matrix or not suite.include:
        own = math.prod(len(values) for values in suite.matrix.values()) * (suite.seeds.max if suite.seeds else 1)  # the most rounds can add
        if suite.select is not None:
            groups = math.prod(len(values) for key, values in suite.matrix.items() if key != "seed")
            own += groups * math.prod(len(values) for values in suite.select.tune.values()) * len(suite.select.seeds)
            if suite.select.extend_edges:  # at most max_extensions values beyond an edge per tuned key and group
                own += groups * suite.select.max_extensions * len(suite.select.tune) * len(suite.select.seeds)
    return own + sum(planned_runs(child) for _, child in suite._children)


def _check_size(suite: Suite, path: str | Path, max_runs: int) -> None:
    planned = planned_runs(suite)
    if planned > max_runs:
        line = line_of(suite._lines, ("matrix",), ("include",), ("select",)) or 1
        raise SuiteError(f"{path}:{line}: matrix: the suite expands to {planned:,} runs (the product of the matrix axes"
                         f"{', with tuning runs' if suite.select else ''}{f', times seeds.max = {suite.seeds.max}' if suite.seeds else ''}"
                         f"{', with included suites' if suite._children else ''}), "
                         f"more than the limit of {max_runs:,}; shrink an axis, or raise the limit with --max-runs {planned} "
                         "(or $BENCH_MAX_RUNS) if you mean it")


def _resolve_root(suite: Suite, path: str | Path, data_root: str | Path | None) -> str | None:
    """``data.data_root`` for every run: the flag, else the suite's field relative to the file."""
    try:
        if data_root is not None:
            return str(Path(data_root).expanduser().resolve())
        if suite.data_root is not None:
            return str((Path(path).parent / Path(suite.data_root).expanduser()).resolve())
    except (OSError, RuntimeError, ValueError) as exc:  # ~nosuchuser, NUL, a symlink loop
        if data_root is not None:
            raise SuiteError(f"--data-root {str(data_root)!r}: cannot resolve it: {exc}") from None
        where = line_of(suite._lines, ("data_root",)) or 1
        raise SuiteError(f"{path}:{where}: data_root: cannot resolve {suite.data_root!r}: {exc}") from None
    return None


def method_entry(value: Any) -> tuple[str, dict[str, Any]]:
    """A ``matrix.method`` entry: a method name, or ``{name: grpo_rm, params: {mu: 2}}`` — a
    variant of that method whose params refine ``methods.<name>`` for those runs only (so an
    ablation varies one method's settings without touching the others)."""
    if isinstance(value, str):
        return value, {}
    params = value.get("params") if isinstance(value, dict) else None
    # a malformed entry (params: [1, 2]) is refused with its line by _check_names; until then it
    # must not raise a TypeError wherever entries are read
    return str(value.get("name") if isinstance(value, dict) else value), dict(params) if isinstance(params, dict) else {}


def _check_names(suite: Suite, path: str | Path) -> None:
    """Matrix method and profile values are looked up by name: anything but text (or, for
    methods, a ``{name, params}`` variant) is refused here rather than failing further on."""
    for key in ("method", "profile"):
        for i, value in enumerate(suite.matrix.get(key, [])):
            where = line_of(suite._lines, ("matrix", key, i), ("matrix", key)) or 1
            if key == "method" and isinstance(value, dict):
                extra = set(value) - {"name", "params"}
                if extra or not isinstance(value.get("name"), str) or not isinstance(value.get("params", {}) or {}, dict):
                    raise SuiteError(f"{path}:{where}: matrix.method.{i}: a method variant is {{name: <method>, params: {{...}}}}"
                                     + (f"; unexpected {', '.join(sorted(map(str, extra)))}" if extra else ""))
                continue
            if not isinstance(value, str):
                raise SuiteError(f"{path}:{where}: matrix.{key}.{i}: {value!r} is not a {key} name; list names as text")


def _check_method_overrides(suite: Suite, parsed: list[tuple[str, Any]], texts: list[str]) -> None:
    """``-o methods.<name>.<param>=v`` must name a method this suite runs, and a parameter."""
    running = {method_entry(v)[0] for v in suite.matrix.get("method", []) if isinstance(v, (str, dict))}
    if isinstance(suite.defaults.get("method"), dict):
        running.add(str(suite.defaults["method"].get("name")))
    for (key, _), text in zip(parsed, texts):
        if not key.startswith("methods."):
            continue
        parts = key.split(".", 2)
        if len(parts) < 3:
            raise SuiteError(f"{shown_override(text)}: name a parameter, e.g. -o methods.grpo_rm.epsilon=0.3 (command-line override)")
        if parts[1] not in running and (running or suite._children):
            if not suite._children:  # an including suite passes overrides on to its children, which check them
                close = difflib.get_close_matches(parts[1], sorted(running), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise SuiteError(f"{shown_override(text)}: no run of this suite uses method {cut(parts[1])}{hint} (runs: {', '.join(sorted(running))})")


def _check_swept_overrides(suite: Suite, parsed: list[tuple[str, Any]], texts: list[str]) -> None:
    """An ``-o`` of a key a ``-m`` sweeps would set every run of the axis to one value (and make
    them duplicates): refused, naming both."""
    for (key, _), text in zip(parsed, texts):
        for sweep in suite._sweeps:
            swept = sweep.split("=", 1)[0].strip()
            if key == swept or key.startswith(swept + ".") or swept.startswith(key + "."):
                raise SuiteError(f"{shown_override(text)}: {key} is also swept with {shown_override(sweep, '-m')}; "
                                 "give its values with -m, or one value with -o (command-line override)")


def _check_declared_methods(suite: Suite, path: str | Path) -> None:
    """Every method under ``methods:`` is checked, not only those the matrix runs: a typo in the
    settings of a method left out today would otherwise surface the day it is added back."""
    in_matrix = {method_entry(v)[0] for v in suite.matrix.get("method", [])}
    for name, params in suite.methods.items():
        where = line_of(suite._lines, ("methods", name)) or 1
        if name not in METHODS:
            raise SuiteError(f"{path}:{where}: methods.{name}: {METHODS.unknown_message(name)}")
        if name in in_matrix:
            continue  # checked with each run's full config (dataset-aware messages included)
        try:
            MethodConfig(name=name, params=params)
        except ValidationError as exc:
            raise SuiteError(_format_validation(Path(path), exc, MethodConfig, suite._lines,
                                                lambda loc: [("methods", name, *loc[2:]), ("methods", name)])) from None


def expand(
    suite: Suite, path: str | Path = "<suite>", overrides: list[str] | None = None, data_root: str | Path | None = None,
    results_root: str | Path | None = None, max_runs: int | None = None, sweeps: list[str] | tuple[str, ...] | None = None,
) -> list[RunSpec]:
    """All runs of a suite, validated, in a deterministic order.

    With a ``select`` block: the tuning runs, then the final runs of every group whose tuning runs
    in ``results_root`` have all ended (see :mod:`bench.select`; none without a results root).

    With a ``seeds`` schedule: the final runs carry the current round's seeds 0 … n−1, and a round
    whose runs in ``results_root`` have all ended is decided first (see :mod:`bench.sequential`).

    ``data_root`` (the ``--data-root`` flag) wins over the suite's ``data_root`` field, which is
    resolved relative to the suite file; both become ``data.data_root`` of each run.

    ``sweeps`` (``-m key=v1,v2``) are matrix axes given on the command line (:func:`with_sweeps`);
    they reach included suites too, as ``overrides`` do.

    More than ``max_runs`` runs (default :func:`max_runs_default`) is refused before any is built.
    """
    suite = with_sweeps(suite, sweeps)  # command-line mistakes first; planned_runs counts the axes
    limit = max_runs if max_runs is not None else max_runs_default()
    _check_size(suite, path, limit)
    _check_names(suite, path)  # before anything reads matrix.method entries as name/params pairs
    if suite.seeds is not None:  # the current round's seeds become a plain matrix axis (bench.sequential)
        from bench.sequential import expand_round

        return expand_round(suite, path, overrides, data_root, results_root, limit)
    parsed = [parse_override(text) for text in overrides or []]  # command-line mistakes first, named as such
    _check_method_overrides(suite, parsed, overrides or [])
    _check_swept_overrides(suite, parsed, overrides or [])
    root = _resolve_root(suite, path, data_root)
    # the method axis is applied first so dotted keys such as method.params.epsilon refine it
    included: list[RunSpec] = []
    for child_path, child in suite._children:  # flat: every file reached once (see _with_includes)
        # --data-root wins everywhere; else the outermost data_root on the way, else the included suite's own
        child_root = data_root if data_root is not None else root if root is not None else suite._child_roots.get(child_path)
        for spec in expand(child, child_path, overrides, child_root, results_root, limit, suite._sweeps):
            # stored where the included suite stores it (results/<child>/<run>): finished runs of
            # that suite are reused, never recomputed
            included.append(dataclasses.replace(spec, profile=f"{child.name}/{spec.profile}"))
    if suite.include and not suite.matrix:  # a suite made of included suites only
        return _check_compared(suite, path, _unique(included, path, suite))
    axes = sorted(suite.matrix.items(), key=lambda kv: kv[0] != "method")
    if "method" not in suite.matrix and "method" not in suite.defaults:
        raise SuiteError(f"{path}:{line_of(suite._lines, ('matrix',), ('name',)) or 1}: matrix.method: missing; list the methods to compare, e.g. [sft, grpo_rm]")
    for key, values in axes:
        if not values:
            raise SuiteError(f"{path}:{line_of(suite._lines, ('matrix', key))}: matrix.{key}: empty list; give at least one value")
    _check_names(suite, path)
    profiles = [suite.profile, *suite.matrix.get("profile", [])]
    for name in profiles:
        if name not in suite.resources:
            close = difflib.get_close_matches(str(name), list(suite.resources), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = line_of(suite._lines, ("matrix", "profile"), ("profile",)) if name != suite.profile else line_of(suite._lines, ("profile",))
            raise SuiteError(f"{path}:{where or 1}: profile: unknown resource profile {name!r}{hint} (defined: {', '.join(suite.resources)})")
    _check_declared_methods(suite, path)
    # which matrix axes write into each config section: two runs that take the same values on
    # them have equal sections (defaults and overrides are the same for every run)
    touching = {section: [i for i, (key, _) in enumerate(axes) if key == section or key.startswith(section + ".")] for section in _SECTIONS}

    def matrix_runs() -> Iterator[MatrixRun]:
        try:
            for index in itertools.product(*(range(len(values)) for _, values in axes)):
                combo = tuple(values[i] for (_, values), i in zip(axes, index))
                yield MatrixRun(_tree(suite, axes, combo, root, data_root, parsed), _profile(suite, axes, combo),
                                {k: v for (k, _), v in zip(axes, combo)}, {section: tuple(index[i] for i in at) for section, at in touching.items()})
        except SuiteError as exc:
            raise SuiteError(f"{path}:{line_of(suite._lines, ('matrix',)) or 1}: {exc}") from None

    if suite.select is None:
        shared: dict[Any, Any] = {}
        ids: dict[tuple, Any] = {}  # RunConfig.run_id's memo: runs that share their sections and differ in the seed
        # one matrix point at a time: its config tree is dropped once validated (100,000 trees at once were most of the memory)
        specs = [RunSpec(suite.name, c.run_id(ids), c, run.profile) for run in matrix_runs()
                 for c in [build_config(suite, path, run.tree, run.where, overrides, shared, run.sections)]]
    else:
        from bench.select import plan_selection  # the selection stages read finished tuning results

        specs = plan_selection(suite, path, list(matrix_runs()), results_root, overrides).specs
    _check_workers(suite, path, specs)
    return _check_compared(suite, path, _unique(specs + included, path, suite))


def _check_compared(suite: Suite, path: str | Path, specs: list[RunSpec]) -> list[RunSpec]:
    """Every method of a ``compare:`` pair must be run by the suite (its matrix, defaults, overrides
    or included suites: whatever the expanded runs hold), or its Δ, verdict box and forest plot
    could never exist. Checked on the runs themselves, so ``-m method=...`` and includes count.
    Returns ``specs``."""
    if suite.compare is None:
        return specs
    running = {s.config.method.name for s in specs}
    for i, c in enumerate(suite.compare):
        for role, method in (("treatment", c.treatment), ("control", c.control)):
            if method not in running:
                line = line_of(suite._lines, ("compare", i, role), ("compare", i), ("compare",)) or 1
                raise SuiteError(f"{path}:{line}: compare.{i}.{role}: {method} is not run by this suite (its runs use: "
                                 f"{', '.join(sorted(running)) or 'no method'}); add it to matrix.method or compare methods the suite runs")
    return specs


def _check_workers(suite: Suite, path: str | Path, specs: list[RunSpec]) -> None:
    """A ``data.num_workers`` that is set must fit the run's profile: more loader processes than
    CPUs only contend (and 100,000 forked until the process limit). ``auto`` (the default, set or
    not) is left alone: it is resolved from the CPUs the run has when it starts
    (:func:`bench.config.auto_workers`)."""
    for spec in specs:
        data = spec.config.data
        cpus = suite.resource(spec.profile).cpus
        if "num_workers" in data.model_fields_set and data.num_workers != "auto" and data.num_workers > cpus:
            line = line_of(suite._lines, ("defaults", "data", "num_workers"), ("matrix", "data.num_workers"), ("defaults", "data")) or 1
            raise SuiteError(f"{path}:{line}: data.num_workers: {data.num_workers} loader processes, but profile {spec.profile!r} gives the run "
                             f"{cpus} CPU(s); set num_workers ≤ cpus (or raise resources.{spec.profile}.cpus)\n  (in the run {spec.run_id})")


@dataclass(frozen=True)
class MatrixRun:
    """One point of a suite's matrix before validation: the config tree, its profile, and how to
    name it in an error ('method=sft, seed=0')."""

    tree: dict[str, Any]
    profile: str
    values: dict[str, Any]  # matrix axis → value
    sections: dict[str, tuple] | None = None  # config section → indices of the values its matrix axes take (build_config)

    @property
    def where(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


def _profile(suite: Suite, axes: list, combo: tuple) -> str:
    return next((value for (key, _), value in zip(axes, combo) if key == "profile"), suite.profile)


def _tree(suite: Suite, axes: list, combo: tuple, root: str | None, data_root: Any, overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    tree: dict[str, Any] = dict(suite.defaults)  # nested sections are shared until set_dotted copies them
    if suite.plugins:  # every process that runs this run imports them first (bench.plugins.activate)
        tree["plugins"] = list(suite.plugins)
    if suite.evaluations is not None:
        tree["evaluations"] = list(suite.evaluations)
    for (key, _), value in zip(axes, combo):
        if key == "method":
            name, variant = method_entry(value)
            tree["method"] = {"name": name, "params": copy_tree({**suite.methods.get(name, {}), **variant})}
        elif key != "profile":
            set_dotted(tree, key, value)
    own_root = isinstance(tree.get("data"), dict) and "data_root" in tree["data"]  # not a mapping: set_dotted says so
    if root is not None and (data_root is not None or not own_root):
        set_dotted(tree, "data.data_root", root)
    for key, value in overrides:
        if key.startswith("methods."):  # -o methods.grpo_rm.epsilon=0.3: that method's runs only (checked in expand)
            _, name, param = key.split(".", 2)
            if isinstance(tree.get("method"), dict) and tree["method"].get("name") == name:
                set_dotted(tree["method"].setdefault("params", {}), param, copy_tree(value))
            continue
        set_dotted(tree, key, copy_tree(value))  # parsed once; each run gets its own copy
    return tree


_SECTIONS = ("backbone", "model", "data", "train", "transfer", "seg", "method")


def build_config(suite: Suite, path: str | Path, tree: dict[str, Any], where: str, overrides: list[str] | None = None,
                 shared: dict[Any, Any] | None = None, sections: dict[str, tuple] | None = None) -> RunConfig:
    """The validated run config of a matrix point; errors as ``file:line: key: reason``, or as
    ``-o key=value: reason`` when the rejected key came from a command-line override.

    ``shared`` (one per expansion) remembers each config section validated so far together with the
    very mapping it came from: a run whose section is that same, unchanged mapping (``set_dotted``
    copies what it changes) reuses the validated section, so a 10,000-run suite validates its
    common sections once. With ``sections`` (section → the indices of the values its matrix axes
    take, :class:`MatrixRun`) a section built anew for a run but from the same axis values reuses
    the validated one too: a 100,000-run sweep validates each distinct learning rate's train
    section once, and its runs share one object per section instead of a copy each. Checks
    across sections still run for every run."""
    original = tree
    # a segmentation run's method section takes its dataset's ignore index (RunConfig): it depends on
    # another section, so it is neither reused from nor lent to other runs
    own = {"method"} if segmentation_dataset(tree) is not None else set()
    if shared:
        same, by_axes = shared.setdefault("same", {}), shared.setdefault("axes", {})
        reuse = {k: v[1] for k, v in same.items() if original.get(k) is v[0] and k not in own}
        for k, key in (sections or {}).items():
            found = by_axes.get((k, key))
            if k not in reuse and k not in own and isinstance(original.get(k), dict) and found is not None:
                reuse[k] = found
        tree = {**tree, **reuse}
    try:
        config = RunConfig(**tree)
        if shared is not None:
            shared.setdefault("same", {}).update({k: (original[k], getattr(config, k)) for k in _SECTIONS if isinstance(original.get(k), dict) and k not in own})
            shared.setdefault("axes", {}).update({(k, key): getattr(config, k) for k, key in (sections or {}).items()
                                                  if isinstance(original.get(k), dict) and k not in own})
        return config
    except ValidationError as exc:
        given = tree.get("method")
        method = str(given.get("name", "")) if isinstance(given, dict) else ""  # defaults.method may be anything
        from_command_line = _override_errors(exc, overrides or [], method, suite._sweeps)
        if from_command_line:
            raise SuiteError("\n".join(from_command_line) + f"\n  (in the run {where})") from None
        message = _format_validation(Path(path), exc, RunConfig, suite._lines, lambda loc: _run_config_paths(loc, method))
        raise SuiteError(f"{message}\n  (in the run {where})") from None


def _override_errors(exc: ValidationError, overrides: list[str], method: str, sweeps: tuple[str, ...] = ()) -> list[str]:
    """One line per validation error whose key an override or a sweep set (``methods.<m>.<p>``
    counts as ``method.params.<p>`` for method ``m``); [] unless every error is such a one. An
    override is applied after the sweeps, so it is the one blamed when both set a key."""
    keys = [(text.split("=", 1)[0].strip(), text, "-m") for text in sweeps]
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key.startswith("methods."):
            parts = key.split(".", 2)
            key = "method.params." + parts[2] if len(parts) == 3 and parts[1] == method else ""
        keys.append((key, text, "-o"))
    lines = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = _message(e)
        keyed = re.match(r"^([a-z_]+(?:\.[a-z_]+)+): ", msg)  # validators name the key they reject
        if keyed:
            loc, msg = keyed.group(1), msg[keyed.end():]
        # the last override of a key is the one that took effect (later -o win), so it is the one blamed
        match = next(((key, text, flag) for key, text, flag in reversed(keys)
                      if key and (loc == key or loc.startswith(key + ".") or key.startswith(loc + "."))), None)
        if match is None:
            return []
        key, text, flag = match
        what = "command-line sweep" if flag == "-m" else "command-line override"
        lines.append(f"{shown_override(text, flag)}: {loc}: {msg} ({what}){_hint(RunConfig, tuple(e['loc']), e['type'])}{_sweep_hint(key, text, flag, loc)}")
    return capped(lines)


def _sweep_hint(key: str, text: str, flag: str, loc: str) -> str:
    """``-o train.lr=[1e-4,3e-4]`` sets one list value; where the key takes no list, the user
    most likely meant one run per value: say how (``-m``)."""
    raw = text.split("=", 1)[1].strip() if "=" in text else ""
    if flag != "-o" or loc != key or not (raw.startswith("[") and raw.endswith("]")):
        return ""
    return f"; -o sets one value for every run: to run one run per value, sweep it with -m {key}={raw[1:-1].strip()}"


def _unique(specs: list[RunSpec], path: str | Path, suite: Suite) -> list[RunSpec]:
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{path}:{line_of(suite._lines, ('matrix',), ('include',)) or 1}: matrix: produces duplicate runs (the same resolved config twice); a 'profile' axis alone does not make runs different, nor does including a suite twice")
    return specs


def parse_only(text: str | None) -> tuple[tuple[str, str], ...]:
    """``--only method=grpo_rm,seed=0`` → (("method", "grpo_rm"), ("seed", "0"))."""
    if not text:
        return ()
    pairs = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SuiteError(f"--only {text!r}: give key=value pairs separated by commas, e.g. --only method=grpo_rm,seed=0")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def only_folder(suite_name: str, only: tuple[tuple[str, str], ...]) -> str:
    """The report folder of a ``--only`` subset, ``<suite>--only-<slug>`` (``method=sft,seed=0`` →
    ``syn--only-method-sft_seed-0``), so a subset never overwrites the suite's own report."""
    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"

    return f"{suite_name}--only-" + "_".join(f"{clean(k)}-{clean(v)}" for k, v in only)[:120]


def select_only(specs: list[RunSpec], only: tuple[tuple[str, str], ...]) -> list[RunSpec]:
    """The runs whose resolved config has every given value (``method`` is the method's name,
    ``stage`` the selection stage, anything else a dotted config path compared as text)."""
    if not only:
        return specs
    return [s for s in specs if all(str(_only_value(s, k)) == v for k, v in only)]


def only_miss(specs: list[RunSpec], only: tuple[tuple[str, str], ...], shown: int = 12) -> str:
    """Why ``--only`` chose no run: per key given, the values the runs have (a filter that matches
    nothing is a typo far more often than a wish to do nothing)."""
    text = ",".join(f"{k}={v}" for k, v in only)
    parts = []
    for key, _ in only:
        values = list(dict.fromkeys(str(_only_value(s, key)) for s in specs))
        more = f", … ({len(values)} values)" if len(values) > shown else ""
        parts.append(f"{key} is one of: {', '.join(values[:shown])}{more}" if values else f"the suite has no runs to choose {key} from")
    note = ("; final runs appear once their group's tuning runs end (`bench status` follows them)"
            if ("stage", "final") in only else "")
    return f"--only {text} matches no run; " + "; ".join(parts) + note


def _only_value(spec: RunSpec, key: str) -> Any:
    """A run's value of one --only key: ``method`` is the method's name, ``stage`` the selection stage."""
    if key == "method":
        return spec.config.method.name
    if key == "stage":
        return spec.stage
    node: Any = spec.config.canonical()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SuiteError(f"--only {key}=…: {key!r} is not a setting of these runs (e.g. method, seed, data.name, method.params.mu)")
        node = node[part]
    return node
