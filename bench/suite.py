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
import difflib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.config import RunConfig


class SuiteError(ValueError):
    """A suite file that cannot be run; the message names the file, the key and the fix."""


class ResourceProfile(BaseModel):
    """What one run asks a scheduler for. Launcher settings: not part of a run's identity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: int = Field(0, ge=0, description="GPUs per run (>1 runs DDP inside the job)")
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


DEFAULT_PROFILE = "default"


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    matrix: dict[str, list[Any]] = Field(default_factory=dict)
    resources: dict[str, ResourceProfile] = Field(default_factory=lambda: {DEFAULT_PROFILE: ResourceProfile()})
    profile: str = Field(DEFAULT_PROFILE, description="resource profile of runs unless the matrix has a 'profile' axis")

    def resource(self, name: str) -> ResourceProfile:
        return self.resources[name]


@dataclass(frozen=True)
class RunSpec:
    suite: str
    run_id: str
    config: RunConfig
    profile: str = DEFAULT_PROFILE


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


def _format_validation(path: Path, prefix: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        key = ".".join(p for p in (prefix, loc) if p)
        lines.append(f"{path}: {key or '(top level)'}: {e['msg']}")
    return "\n".join(lines)


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite must be a YAML mapping with at least 'name'")
    try:
        return Suite(**raw)
    except ValidationError as exc:
        raise SuiteError(_format_validation(path, "", exc)) from None


def expand(suite: Suite, path: str | Path = "<suite>", overrides: list[str] | None = None) -> list[RunSpec]:
    """All runs of a suite, validated, in a deterministic order."""
    # the method axis is applied first so dotted keys such as method.params.epsilon refine it
    axes = sorted(suite.matrix.items(), key=lambda kv: kv[0] != "method")
    if "method" not in suite.matrix and "method" not in suite.defaults:
        raise SuiteError(f"{path}: matrix.method: missing; list the methods to compare, e.g. [sft, grpo_rm]")
    for key, values in axes:
        if not values:
            raise SuiteError(f"{path}: matrix.{key}: empty list; give at least one value")
    profiles = [suite.profile, *suite.matrix.get("profile", [])]
    for name in profiles:
        if name not in suite.resources:
            close = difflib.get_close_matches(str(name), list(suite.resources), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SuiteError(f"{path}: profile: unknown resource profile {name!r}{hint} (defined: {', '.join(suite.resources)})")
    specs: list[RunSpec] = []
    for combo in itertools.product(*(values for _, values in axes)):
        tree: dict[str, Any] = copy.deepcopy(suite.defaults)
        profile = suite.profile
        for (key, _), value in zip(axes, combo):
            if key == "profile":
                profile = value
            elif key == "method":
                tree["method"] = {"name": value, "params": suite.methods.get(value, {})}
            else:
                set_dotted(tree, key, value)
        for text in overrides or []:
            set_dotted(tree, *parse_override(text))
        try:
            config = RunConfig(**tree)
        except ValidationError as exc:
            where = ", ".join(f"{k}={v}" for (k, _), v in zip(axes, combo))
            raise SuiteError(f"{_format_validation(Path(path), '', exc)}\n  (in the run {where})") from None
        specs.append(RunSpec(suite.name, config.run_id(), config, profile))
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{path}: matrix produces duplicate runs (the same resolved config twice)")
    return specs
