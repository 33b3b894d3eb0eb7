"""What a suite will do, in a screenful whatever its size: ``bench validate`` and ``--dry-run``.

One line per run stops being readable (and costs seconds) past a few hundred runs, so the default
is a summary: runs per matrix axis value, per resource profile, what each run evaluates (split
counts per protocol), and the defaults a suite relies on without saying so — the ones that change
what a result means (a ``cifar10`` suite that names no ``eval_splits`` scores 79 splits). The full
list is ``--list``.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from bench.config import DataConfig, RunConfig

if TYPE_CHECKING:
    from bench.suite import RunSpec, Suite

MAX_VALUES_SHOWN = 8


def _value_text(value: Any) -> str:
    if isinstance(value, dict):  # a method variant {name, params}
        return str(value.get("name")) + json.dumps(value.get("params", {}), sort_keys=True, separators=(",", "=")).replace('"', "")
    return str(value)


def axis_lines(suite: "Suite", specs: list["RunSpec"]) -> list[str]:
    """'  matrix.method: sft, grpo_rm' per matrix axis, those given with ``-m`` marked."""
    lines = []
    swept = {text.split("=", 1)[0].strip() for text in suite._sweeps}  # axes given with -m
    for key, values in suite.matrix.items():
        shown = [_value_text(v) for v in values[:MAX_VALUES_SHOWN]]
        more = f", … ({len(values)} values)" if len(values) > MAX_VALUES_SHOWN else ""
        lines.append(f"  matrix.{key}: {', '.join(shown)}{more}" + ("  (-m, command line)" if key in swept else ""))
    return lines


def profile_lines(suite: "Suite", specs: list["RunSpec"]) -> list[str]:
    lines = []
    backbones = Counter((s.profile, s.config.backbone.name, s.config.backbone.weights) for s in specs)  # one pass, any suite size
    for name, n in Counter(s.profile for s in specs).items():
        res = suite.resource(name)  # included suites' profiles are there as '<suite>/<profile>'
        lines.append(f"  profile {name}: {n} run(s), each {res.gpus} GPU, {res.cpus} CPUs, {res.mem_gb:g} GB, ≤ {res.time_min} min")
        used = [f"{backbone} ×{k}" + (" (random init)" if weights == "random" else "")
                for (profile, backbone, weights), k in backbones.items() if profile == name]
        lines.append(f"    backbones: {', '.join(used)}")  # what the profile's GPUs must hold (docs/backbones.md)
    return lines


def split_families(splits: list[str]) -> str:
    """'test, shift_palette, gen/<10 corruption×severity>' — grids folded, named splits listed."""
    named = [s for s in splits if s.count("/") != 2]
    grids = Counter(s.split("/")[0] for s in splits if s.count("/") == 2)
    parts = named[:MAX_VALUES_SHOWN] + ([f"… {len(named) - MAX_VALUES_SHOWN} more"] if len(named) > MAX_VALUES_SHOWN else [])
    parts += [f"{family}/* ({n})" for family, n in grids.items()]
    return ", ".join(parts)


def evaluation_lines(specs: list["RunSpec"]) -> list[str]:
    """Per dataset and stage: how many units each protocol scores per run (what a run costs beyond
    training). Runs are grouped on what decides their splits first, so 10,000 runs cost a few groups."""
    groups: dict[tuple, list["RunSpec"]] = {}
    for spec in specs:
        c = spec.config
        final = tuple(json.loads(spec.record).get("final_evaluations") or ()) if spec.stage == "tune" else ()  # finals record none
        key = (spec.stage, c.data.name, c.evaluations, final,
               tuple(c.data.eval_splits or ()), c.data.val_fraction, tuple(t.name for t in c.transfer.targets))
        groups.setdefault(key, []).append(spec)
    lines = []
    for (stage, dataset, *_), group in groups.items():
        cfg = group[0].final_config
        by_protocol: dict[str, list[str]] = {}
        for split, protocol in cfg.evaluation_splits().items():
            by_protocol.setdefault(protocol, []).append(split)
        targets = [t.name for t in cfg.transfer.targets] if "transfer" in cfg.evaluations else []
        parts = [f"{p} {len(v)} split{'s' if len(v) != 1 else ''} ({split_families(v)})" for p, v in by_protocol.items()]
        if targets:
            parts.append(f"transfer {len(targets)} target{'s' if len(targets) != 1 else ''} ({', '.join(targets)})")
        total = sum(len(v) for v in by_protocol.values()) + len(targets)
        if stage == "tune":
            lines.append(f"  {len(group)} tuning run(s) on {dataset} score the held-out split only; the final runs after them "
                         f"evaluate {total} unit(s) each: " + "; ".join(parts))
        else:
            lines.append(f"  {len(group)} run(s) on {dataset} evaluate {total} unit(s) each: " + "; ".join(parts))
    return lines


def _given(tree: dict[str, Any], dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def implicit_default_lines(suite: "Suite", specs: list["RunSpec"]) -> list[str]:
    """Defaults the suite relies on without naming them, where they change what a number means.
    An included suite answers for its own runs (its defaults are its own)."""
    if suite._children:
        lines = []
        for _, child in suite._children:
            own = [s for s in specs if s.profile.startswith(f"{child.name}/")]
            lines += [line.replace("  ", f"  {child.name}: ", 1) for line in implicit_default_lines(child, own)]
        return lines

    def set_anywhere(dotted: str) -> bool:
        return _given(suite.defaults, dotted) or dotted in suite.matrix or any(k.startswith(dotted + ".") for k in suite.matrix)

    lines = []
    if suite.evaluations is None and not _given(suite.defaults, "evaluations"):
        lines.append(f"  evaluations not set: every run scores {list(RunConfig.model_fields['evaluations'].default)}")
    if not set_anywhere("data.eval_splits"):
        counts = {s.config.data.name: len(s.final_config.data.resolved_eval_splits()) for s in specs}
        lines += [f"  data.eval_splits not set: {name} scores its {n} default evaluation splits" for name, n in counts.items()]
    if not set_anywhere("data.val_fraction"):
        fraction = DataConfig.model_fields["val_fraction"].default
        lines.append(f"  data.val_fraction not set: {fraction:.0%} of each training split is held out (split 'heldout') and never trained on")
    if not set_anywhere("train.epochs"):
        lines.append(f"  train.epochs not set: {RunConfig.model_fields['train'].default.epochs} epochs")
    random = sorted({s.config.backbone.name for s in specs if s.config.backbone.weights == "random"})
    if random:
        lines.append(f"  backbone.weights: random for {', '.join(random)}: results are labelled 'random init'")
    return lines


def limit_words(limit: dict[str, Any] | None, max_steps: int | None) -> str | None:
    """'train 64 / eval 32 images, max 10 steps' for a limited run (``data.limit`` as a mapping,
    ``train.max_steps``: smoke-test tools), None for a full one. Reports' ``limited`` column."""
    parts = []
    if limit:
        sizes = [f"{role} {limit[role]}" for role in ("train", "eval") if limit.get(role) is not None]
        parts.append(" / ".join(sizes) + " images")
    if max_steps is not None:
        parts.append(f"max {max_steps} steps")
    return ", ".join(parts) or None


def limit_text(cfg: RunConfig) -> str | None:
    """What validate says of a limited run (None for a full one)."""
    limit = cfg.data.limit
    words = limit_words(limit.model_dump() if limit is not None else None, cfg.train.max_steps)
    return None if words is None else words + (f" (subset seed {limit.seed})" if limit is not None else "")


def limit_lines(specs: list["RunSpec"]) -> list[str]:
    """'  3 run(s): train ≤ 64 / eval ≤ 64 images per split …' per distinct limit: limited runs are smoke tests."""
    counts = Counter(limit_text(s.config) for s in specs)
    counts.pop(None, None)
    return [f"  {n} run(s): {text} (smoke test: not comparable with full runs)" for text, n in counts.items()]


def summary_lines(suite: "Suite", specs: list["RunSpec"]) -> list[str]:
    axes = axis_lines(suite, specs)
    lines = (["matrix:", *axes] if axes else []) + ["resources:", *profile_lines(suite, specs), "evaluation:", *evaluation_lines(specs)]
    limited = limit_lines(specs)
    if limited:
        lines += ["limited runs (data.limit / train.max_steps / --limit):", *limited]
    implicit = implicit_default_lines(suite, specs)
    if implicit:
        lines += ["defaults this suite relies on (set them to silence this):", *implicit]
    return lines
