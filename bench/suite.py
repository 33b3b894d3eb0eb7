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
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
import re
import typing

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from bench.config import RunConfig
from bench.data import DATASETS
from bench.methods import METHODS
from bench.yaml_lines import key_lines, line_of, locate


class SuiteError(ValueError):
    """A suite file that cannot be run; the message names the file, the key and the fix."""


class ResourceProfile(BaseModel):
    """What one run asks a scheduler for. Launcher settings: not part of a run's identity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: int = Field(0, ge=0, description="GPUs per run (>1 runs DDP inside the job, one process per GPU)")
    tasks: int | None = Field(None, ge=1, description="processes per run; default one per GPU (or 1); >1 on CPU = DDP over gloo")
    cpus: int = Field(1, ge=1, description="CPUs per run; also the run's torch thread count")
    mem_gb: float = Field(8, gt=0)
    time_min: int = Field(60, ge=1, description="wall-clock limit; on timeout the run checkpoints and requeues")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = Field(16, ge=1, description="array tasks running at once")
    signal_delay_s: int = Field(90, ge=0, description="USR2 this long before the limit triggers checkpoint()")
    extra: dict[str, Any] = Field(default_factory=dict, description="further sbatch parameters, e.g. {exclusive: true}")


    @property
    def processes(self) -> int:
        return self.tasks or max(1, self.gpus)


DEFAULT_PROFILE = "default"


class Expectation(BaseModel):
    """A figure to compare against (e.g. a paper's claim), with the tolerance it is judged by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: Literal["delta", "value"] = Field("delta", description="delta = method − baseline, paired over seeds; value = method's mean")
    method: str = "grpo_rm"
    baseline: str = "sft"
    dataset: str | None = Field(None, description="restrict to one dataset (default: every dataset in the suite)")
    split: str = Field("ood_avg", description="an evaluation split, or a derived average: 'ood_avg' (mean over OOD sets), 'transfer_avg/knn', 'transfer_avg/sr'")
    metric: Literal["top1", "top5", "mIoU", "aAcc", "mAcc"] = Field("top1", description="the metric the figure is stated in")
    across: Literal["each", "mean"] = Field("each", description="each: one comparison per dataset; mean: the mean over the suite's datasets (per seed, then over seeds)")
    value: float = Field(description="expected figure in percent (points for a delta)")
    tolerance: float = Field(ge=0, description="within ± this many points counts as reproduced")
    source: str = Field("", description="where the figure comes from, e.g. 'arXiv 2511.15256, abstract'")

    @field_validator("method", "baseline")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return METHODS.check(v)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str | None) -> str | None:
        return v if v is None else DATASETS.check(v)


class Selection(BaseModel):
    """Model selection on the held-out split: each method (per dataset, backbone and every other
    matrix value) runs the ``tune`` grid on ``seeds``, scored on split ``heldout`` only; the best
    value combination by mean ``metric`` then runs with the matrix's seeds and full evaluations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["top1", "top5", "nll", "mIoU", "aAcc", "mAcc"] = Field("top1", description="held-out metric that picks the winner (nll: lower is better)")
    split: Literal["heldout"] = Field("heldout", description="the only split selection may read: carved from training data (data.val_fraction)")
    tune: dict[str, list[Any]] = Field(description="dotted run-config paths → values tried, the same grid for every method, e.g. {train.lr: [3e-5, 1e-4, 3e-4]}")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="seeds of the tuning runs (their mean decides)")

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


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    matrix: dict[str, list[Any]] = Field(default_factory=dict)
    resources: dict[str, ResourceProfile] = Field(default_factory=lambda: {DEFAULT_PROFILE: ResourceProfile()})
    profile: str = Field(DEFAULT_PROFILE, description="resource profile of runs unless the matrix has a 'profile' axis")
    evaluations: list[str] | None = Field(None, description="evaluation protocols for every run (default: id, shift)")
    expected: list[Expectation] = Field(default_factory=list, description="figures to reproduce, shown as expected vs actual")
    data_root: str | None = Field(None, description="datasets folder for every run (relative: to this file); --data-root overrides, $BENCH_DATA_ROOT is the fallback")
    select: Selection | None = Field(None, description="tune each method on the held-out split before the final runs (see Selection)")
    include: list[str] = Field(default_factory=list, description="other suite files (relative to this one) whose runs join this suite, stored under their own results/<suite>/; their resource profiles become '<suite>/<profile>'")
    _lines: dict = PrivateAttr(default_factory=dict)  # key path → line in the suite file
    _children: list = PrivateAttr(default_factory=list)  # (path, Suite) per include

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
    def stage_record(self) -> dict[str, Any]:
        return {"stage": self.stage, **json.loads(self.record)} if self.stage != "final" or self.record != "{}" else {}


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise SuiteError(f"{dotted}: {key!r} is not a mapping")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``train.lr=1e-4`` → ("train.lr", 1e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise SuiteError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


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
    """``file:line: key.path: reason`` per error; ``to_suite_paths`` maps a model loc to where
    in the suite file that value could have been written."""
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        msg = _message(e)
        keyed = re.match(r"^([a-z_]+(?:\.[a-z_]+)+): ", msg)  # validators name the key they reject
        if keyed:
            loc = tuple(keyed.group(1).split("."))
            msg = msg[keyed.end():]
        found, line = locate(lines, *to_suite_paths(loc))
        shown = ".".join(str(p) for p in found) if found else "(top level)"
        out.append(f"{path}:{line or 1}: {shown}: {msg}{_hint(model, tuple(e['loc']), e['type'])}")
    return "\n".join(out)


def load_suite(path: str | Path, _seen: tuple[Path, ...] = ()) -> Suite:
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
        lines = key_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SuiteError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}:1: a suite must be a YAML mapping with at least 'name'")
    try:
        suite = Suite(**raw)
    except ValidationError as exc:
        raise SuiteError(_format_validation(path, exc, Suite, lines, lambda loc: [loc])) from None
    suite._lines = lines
    return _with_includes(suite, path, _seen)


def _with_includes(suite: Suite, path: Path, seen: tuple[Path, ...]) -> Suite:
    """Load the suites ``include`` names; their profiles join this suite's, namespaced."""
    if not suite.include:
        return suite
    seen = (*seen, path.resolve())
    children, resources = [], dict(suite.resources)
    for i, name in enumerate(suite.include):
        child_path = (path.parent / name).resolve()
        line = line_of(suite._lines, ("include", i), ("include",)) or 1
        if child_path in seen:
            raise SuiteError(f"{path}:{line}: include.{i}: {name} includes itself (directly or through another suite)")
        if not child_path.is_file():
            raise SuiteError(f"{path}:{line}: include.{i}: suite file {child_path} not found; paths are relative to {path.parent}")
        child = load_suite(child_path, seen)
        children.append((child_path, child))
        resources.update({f"{child.name}/{k}": v for k, v in child.resources.items()})
    merged = suite.model_copy(update={"resources": resources})
    merged._lines, merged._children = suite._lines, children
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


def expand(
    suite: Suite, path: str | Path = "<suite>", overrides: list[str] | None = None, data_root: str | Path | None = None,
    results_root: str | Path | None = None,
) -> list[RunSpec]:
    """All runs of a suite, validated, in a deterministic order.

    With a ``select`` block: the tuning runs, then the final runs of every group whose tuning runs
    in ``results_root`` have all ended (see :mod:`bench.select`; none without a results root).

    ``data_root`` (the ``--data-root`` flag) wins over the suite's ``data_root`` field, which is
    resolved relative to the suite file; both become ``data.data_root`` of each run.
    """
    if data_root is not None:
        root: str | None = str(Path(data_root).expanduser().resolve())
    elif suite.data_root is not None:
        root = str((Path(path).parent / Path(suite.data_root).expanduser()).resolve())
    else:
        root = None
    # the method axis is applied first so dotted keys such as method.params.epsilon refine it
    included: list[RunSpec] = []
    for child_path, child in suite._children:
        # --data-root wins everywhere; else this suite's data_root, else the included suite's own
        child_root = data_root if data_root is not None else root
        for spec in expand(child, child_path, overrides, child_root, results_root):
            # stored where the included suite stores it (results/<child>/<run>): finished runs of
            # that suite are reused, never recomputed
            included.append(dataclasses.replace(spec, profile=f"{child.name}/{spec.profile}"))
    if suite.include and not suite.matrix:  # a suite made of included suites only
        return _unique(included, path, suite)
    axes = sorted(suite.matrix.items(), key=lambda kv: kv[0] != "method")
    if "method" not in suite.matrix and "method" not in suite.defaults:
        raise SuiteError(f"{path}:{line_of(suite._lines, ('matrix',), ('name',)) or 1}: matrix.method: missing; list the methods to compare, e.g. [sft, grpo_rm]")
    for key, values in axes:
        if not values:
            raise SuiteError(f"{path}:{line_of(suite._lines, ('matrix', key))}: matrix.{key}: empty list; give at least one value")
    profiles = [suite.profile, *suite.matrix.get("profile", [])]
    for name in profiles:
        if name not in suite.resources:
            close = difflib.get_close_matches(str(name), list(suite.resources), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = line_of(suite._lines, ("matrix", "profile"), ("profile",)) if name != suite.profile else line_of(suite._lines, ("profile",))
            raise SuiteError(f"{path}:{where or 1}: profile: unknown resource profile {name!r}{hint} (defined: {', '.join(suite.resources)})")
    try:
        trees = [
            MatrixRun(_tree(suite, axes, combo, root, data_root, overrides), _profile(suite, axes, combo),
                      {k: v for (k, _), v in zip(axes, combo)})
            for combo in itertools.product(*(values for _, values in axes))
        ]
    except SuiteError as exc:
        raise SuiteError(f"{path}:{line_of(suite._lines, ('matrix',)) or 1}: {exc}") from None
    if suite.select is None:
        specs = [RunSpec(suite.name, c.run_id(), c, run.profile) for run in trees for c in [build_config(suite, path, run.tree, run.where)]]
    else:
        from bench.select import plan_selection  # the selection stages read finished tuning results

        specs = plan_selection(suite, path, trees, results_root).specs
    return _unique(specs + included, path, suite)


@dataclass(frozen=True)
class MatrixRun:
    """One point of a suite's matrix before validation: the config tree, its profile, and how to
    name it in an error ('method=sft, seed=0')."""

    tree: dict[str, Any]
    profile: str
    values: dict[str, Any]  # matrix axis → value

    @property
    def where(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


def _profile(suite: Suite, axes: list, combo: tuple) -> str:
    return next((value for (key, _), value in zip(axes, combo) if key == "profile"), suite.profile)


def _tree(suite: Suite, axes: list, combo: tuple, root: str | None, data_root: Any, overrides: list[str] | None) -> dict[str, Any]:
    tree: dict[str, Any] = copy.deepcopy(suite.defaults)
    if suite.evaluations is not None:
        tree["evaluations"] = list(suite.evaluations)
    for (key, _), value in zip(axes, combo):
        if key == "method":
            tree["method"] = {"name": value, "params": copy.deepcopy(suite.methods.get(value, {}))}
        elif key != "profile":
            set_dotted(tree, key, value)
    if root is not None and (data_root is not None or "data_root" not in tree.get("data", {})):
        set_dotted(tree, "data.data_root", root)
    for text in overrides or []:
        set_dotted(tree, *parse_override(text))
    return tree


def build_config(suite: Suite, path: str | Path, tree: dict[str, Any], where: str) -> RunConfig:
    """The validated run config of a matrix point; errors as ``file:line: key: reason``."""
    try:
        return RunConfig(**tree)
    except ValidationError as exc:
        method = str((tree.get("method") or {}).get("name", ""))
        message = _format_validation(Path(path), exc, RunConfig, suite._lines, lambda loc: _run_config_paths(loc, method))
        raise SuiteError(f"{message}\n  (in the run {where})") from None


def _unique(specs: list[RunSpec], path: str | Path, suite: Suite) -> list[RunSpec]:
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{path}:{line_of(suite._lines, ('matrix',), ('include',)) or 1}: matrix: produces duplicate runs (the same resolved config twice); a 'profile' axis alone does not make runs different, nor does including a suite twice")
    return specs
