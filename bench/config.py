"""The resolved configuration of one run, as a typed schema.

Every choice the paper leaves open (lr, epochs, batch, ε, μ, …) is a field here with a default
and a description, so it is visible, overridable from a suite, and recorded in every result.
"""

from __future__ import annotations

import copy
import difflib
import functools
import fnmatch
import hashlib
import json
import math
import os
import sys
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_serializer, field_validator, model_validator

from bench.bounds import MAX_PATH, Checked, cut
from bench.data import DATASETS
from bench.data.base import Split
from bench.data.holdout import HELDOUT, Holdout, Subset, load_split
from bench.data.transforms import ClassificationTransform, TrainAug
from bench.protocols import EVALUATIONS, protocol_splits
from bench.methods import METHODS
from bench.models import BACKBONES, backbone_entry, check_backbone_name, is_timm_name
from bench.optim import OPTIMIZERS, SCHEDULES
from bench import plugins as plugin_code


SEED_LIMIT = 2**32
"""Seeds are whole numbers in [0, 2^32): what every RNG we seed accepts, and no YAML bool."""

MAX_EPOCHS = 10_000
MAX_IMG_SIZE = 2_048
"""Largest image side a run or a generated dataset may ask for: ``img_size: 12000`` passed
validation and then allocated 12.9 GiB in the data check (DINOv2 works at 224 … 518)."""
MAX_WORKERS = 256
"""Most DataLoader processes a run may start (``num_workers: 100000`` forked to the process limit)."""
AUTO_WORKERS_MAX = 8
"""Most loader processes ``num_workers: auto`` starts (more rarely pays for a single run's decoding)."""
MAX_DATASET_SIZE = 1_000_000
"""Most images a generated dataset parameter (``train_size``, ``eval_size``) may ask for."""
"""Most DataLoader processes a run may start (``num_workers: 100000`` forked to the process limit)."""
MAX_BATCH = 65_536


class Strict(Checked):
    """Base of every run-config section: unknown keys are errors, values are immutable, and
    floats must be finite (``lr: .inf`` passes ``gt=0``; only NaN fails comparisons)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def check_dataset_params(entry: Any, name: str, params: dict[str, Any], where: str) -> None:
    """Dataset parameters are a free-form mapping, so the schema cannot type them: each value
    must have the type of the entry's documented default, and whole-number parameters (sizes,
    seeds, severities) must lie in [0, 2^32) — a negative ``train_size`` would otherwise reach
    the generator."""
    for key, value in params.items():
        default = entry.params.get(key)
        if default is None:
            continue
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, want = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < SEED_LIMIT, "a whole number in [0, 2^32)"
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            want = "a finite number"
        elif isinstance(default, str):  # a file or folder of your own data (imagefolder's root, a manifest)
            ok, want = isinstance(value, str) and len(value) <= MAX_PATH, f"text of at most {MAX_PATH} characters"
        else:
            continue
        if ok and key == "img_size" and not 14 <= value <= MAX_IMG_SIZE:
            ok, want = False, f"an image side in [14, {MAX_IMG_SIZE}] (images are generated at this size before a run starts)"
        elif ok and key.endswith("_size") and isinstance(value, int) and value > MAX_DATASET_SIZE:
            ok, want = False, f"a count of at most {MAX_DATASET_SIZE:,} images"
        if not ok:
            raise ValueError(f"{where}.{key}: {cut(value)} is not {want} ({name} parameter)")


class BackboneConfig(Strict):
    name: str = Field("dinov2_vits14_imgfocus", description="registered backbone name, or any timm model as 'timm:<model>[.<tag>]' (docs/backbones.md)")
    weights: Literal["pretrained", "random"] = Field("pretrained", description="'random' is labelled 'random init' everywhere")
    checkpoint: str | None = Field(None, description="weights file: official DINOv2 layout for dinov2_* names, timm's format for timm: names; default: the entry's provider or the hub")
    img_size: int = Field(224, ge=14, le=MAX_IMG_SIZE, description=f"input resolution (a multiple of the backbone's patch size, e.g. 14 for DINOv2, or total stride; at most {MAX_IMG_SIZE}); default 224, a timm: model's own input size")
    _text_limits: ClassVar[dict[str, int]] = {"checkpoint": MAX_PATH}

    @model_validator(mode="before")
    @classmethod
    def _model_default_size(cls, data: Any) -> Any:
        """A timm: model's default input size is its own (its pretrained config), not 224."""
        if isinstance(data, dict) and "img_size" not in data and isinstance(data.get("name"), str) and is_timm_name(data["name"]):
            try:
                return {**data, "img_size": backbone_entry(data["name"]).default_img_size}
            except ValueError:
                return data  # the name's own validator says what is wrong with it
        return data

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return check_backbone_name(v)

    @field_validator("img_size")
    @classmethod
    def _multiple_of_patch(cls, v: int, info: ValidationInfo) -> int:
        name = info.data.get("name")
        if name is None:  # the name was refused: nothing to check the size against
            return v
        entry = backbone_entry(name)
        m = entry.size_multiple
        if v % m:
            of = "" if entry.official_positions else f" of {name}"
            raise ValueError(f"img_size {v} is not a multiple of the {entry.size_word} {m}{of} (try {m * max(1, round(v / m))})")
        return v


class ModelConfig(Strict):
    trainable_blocks: int | Literal["all"] = Field("all", description="fine-tune the last k blocks (+ norm + head); 0 = linear probe")
    cache_frozen_prefix: bool = Field(True, description="compute the frozen blocks once per image (no augmentation) and reuse")


class DataLimit(Strict):
    """``data.limit``: a seeded, class-stratified subset of each split (a smoke-test tool, see docs/suites.md)."""

    train: int | None = Field(None, ge=1, lt=SEED_LIMIT, strict=True, description="images trained on at most (the training split after the held-out carve)")
    eval: int | None = Field(None, ge=1, lt=SEED_LIMIT, strict=True, description="images scored per evaluated split at most (heldout included)")
    seed: int = Field(0, ge=0, lt=SEED_LIMIT, strict=True, description="seed of the subsets (independent of the run's seed and of data.val_seed)")

    @model_validator(mode="after")
    def _something(self) -> "DataLimit":
        if self.train is None and self.eval is None:
            raise ValueError("data.limit: set train, eval or both (e.g. {train: 64, eval: 32}), or leave the key out")
        return self

    def subset(self, role: str) -> Subset | None:
        n = self.train if role == "train" else self.eval
        return Subset(n, self.seed, role) if n is not None else None


class DataConfig(Strict):
    name: str = Field("fmnist_composites", description="registered dataset name (`bench data list`)")
    params: dict[str, Any] = Field(default_factory=dict, description="dataset parameters (see the dataset entry)")
    data_root: str | None = Field(None, description="root folder of datasets on disk (else --data-root, the suite's data_root, $BENCH_DATA_ROOT)")
    train_split: str | None = Field(None, description="default: the dataset's train split (voc2012: train_aug)")
    eval_splits: tuple[str, ...] | None = Field(
        None, description="split names or shell patterns such as 'c/*/5'; default: the dataset's test split plus its standard shift sets"
    )
    crop_pct: float | None = Field(None, gt=0, le=1, description="eval resize = img_size / crop_pct, then centre crop (DINOv2: 0.875); default: the dataset's")
    train_aug: TrainAug | None = Field(None, description="none | flip | rrc_flip (DINOv2 linear-eval train transform); default: the dataset's")
    # an int or 'auto' (the default): the schema checks counts only, _auto_workers lets 'auto' pass (one
    # message for a bad count, not one per branch of a union)
    num_workers: int = Field(  # type: ignore[assignment]
        "auto", ge=0, le=MAX_WORKERS,
        description=f"loader processes for datasets decoded from files, at most {MAX_WORKERS} and at most the profile's cpus when set; "
        f"auto (default): the CPUs the run may use (its affinity, e.g. a Slurm allocation) minus one, 0 … {AUTO_WORKERS_MAX}, "
        "resolved when the run starts (not part of a run's identity)",
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of the training split held out (seeded, class-stratified) as split 'heldout' for model selection; 0 trains on all"
    )
    val_seed: int = Field(0, ge=0, lt=SEED_LIMIT, strict=True, description="seed of the held-out carve (shared by every run of a comparison, independent of the run's seed)")
    limit: DataLimit | None = Field(
        None, description="smoke tests: {train: N, eval: N} images per split at most (seeded, class-stratified); --limit N sets both; "
        "part of a run's identity only when set",
    )
    _text_limits: ClassVar[dict[str, int]] = {"data_root": MAX_PATH}

    @field_validator("num_workers", mode="wrap")
    @classmethod
    def _auto_workers(cls, value: Any, handler: Any) -> Any:
        """'auto' stays as it is (resolved when the run starts: :meth:`workers`); anything else is a count."""
        return value if value == "auto" else handler(value)

    @field_serializer("num_workers")
    def _workers_as_set(self, value: Any) -> Any:
        return value  # 'auto' or a count, as set (the schema's int would warn on 'auto')

    @model_validator(mode="wrap")
    @classmethod
    def _known(cls, value: Any, handler: Any) -> "DataConfig":
        # pydantic would re-run an "after" check on an already-built section passed into a
        # RunConfig (once per run of a suite, each matching split patterns); a built DataConfig
        # was checked when it was built and is frozen, so it passes as it is
        if isinstance(value, cls):
            return value
        self = handler(value)
        if self.name not in DATASETS:
            raise ValueError(f"data.name: {DATASETS.unknown_message(self.name)}")
        entry = DATASETS.get(self.name)
        unknown = set(self.params) - set(entry.params)
        if unknown:
            raise ValueError(f"data.params: unknown {self.name} parameter(s) {sorted(unknown)} (known: {sorted(entry.params) or 'none'})")
        check_dataset_params(entry, self.name, self.params, "data.params")
        if self.eval_splits is not None and not self.eval_splits:
            raise ValueError("data.eval_splits: empty list, so the run would evaluate nothing; name splits, or leave the key out for the dataset's defaults")
        if self.train_split is not None and self.train_split not in entry.splits:
            raise ValueError(f"data.train_split: {self.name} has no split {self.train_split!r}{_split_hint(self.train_split, entry.splits)}")
        for pattern in self.eval_splits or ():
            if not _matching_splits(self.name, (pattern,)) and fnmatch.fnmatchcase(HELDOUT, pattern):
                raise ValueError(f"data.eval_splits: {pattern!r} names the held-out split, which only the 'heldout' evaluation scores (add it to evaluations)")
            if not _matching_splits(self.name, (pattern,)):
                raise ValueError(f"data.eval_splits: {self.name} has no split matching {pattern!r}{_split_hint(pattern, entry.splits)}")
        return self

    @property
    def holdout(self) -> Holdout | None:
        """The held-out carve of the training split (None when val_fraction is 0), or the held-out
        split the data brings itself (your own data: an imagefolder's val/, see DatasetEntry.heldout_from_data)."""
        if self.val_fraction <= 0:
            return None
        entry = DATASETS.get(self.name)
        given = None
        if entry.heldout_from_data is not None:
            try:
                given = entry.heldout_from_data(self.resolved_train_split, data_root=self.data_root, **{**entry.params, **self.params})
            except (OSError, ValueError):  # the data cannot be read here (DatasetError): `bench data check` says why
                given = None
        return Holdout(self.resolved_train_split, self.val_fraction, self.val_seed, given)

    def workers(self) -> int:
        """Loader processes this run starts: ``num_workers`` as set, else (``auto``) :func:`auto_workers`,
        read where the run executes (a launcher's host may have other CPUs than the job's node)."""
        return auto_workers() if self.num_workers == "auto" else self.num_workers

    def load(self, split: str, data_root: str | None = None) -> Split:
        """A split as runs see it: the training split without its held-out part, 'heldout', or any other split."""
        entry = DATASETS.get(self.name)
        data = load_split(entry, split, data_root if data_root is not None else self.data_root, self.params, self.holdout)
        subset = self.subset(split)
        return subset.apply(data, stratify=entry.task == "classification") if subset is not None else data

    def subset(self, split: str) -> Subset | None:
        """The ``data.limit`` subset ``split`` is cut to (None: the whole split): ``train`` for the
        training split, ``eval`` for every other split."""
        if self.limit is None:
            return None
        return self.limit.subset("train" if split == self.resolved_train_split else "eval")

    @property
    def resolved_train_split(self) -> str:
        """The split trained on: as configured, else the dataset's own train split."""
        return self.train_split or DATASETS.get(self.name).train_split

    def resolved_eval_splits(self) -> tuple[str, ...]:
        """Patterns expanded against the dataset's splits, in the order written, no repeats."""
        if self.eval_splits is None:
            return DATASETS.get(self.name).default_eval_splits
        return _matching_splits(self.name, tuple(self.eval_splits))

    def transform(self, img_size: int) -> ClassificationTransform:
        return dataset_transform(self.name, img_size, self.crop_pct, self.train_aug)


def _class_count(data: DataConfig) -> int | None:
    """The dataset's class count (read from the data for your own data: a folder listing or class
    file), or None when the data cannot be read here (a login node): `bench data check` says why."""
    try:
        return DATASETS.get(data.name).class_count(data.data_root, **data.params)
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (which a Slurm allocation's cpuset, taskset
    or a container's cpuset narrow), else the machine's count where there is no such call (macOS)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_workers() -> int:
    """``num_workers: auto``: one loader process per usable CPU but one (the training process
    keeps a core), 0 … AUTO_WORKERS_MAX. A fixed 4 on a 2-core machine started more workers than
    CPUs, and torch warned about it twice per run."""
    return max(0, min(AUTO_WORKERS_MAX, usable_cpus() - 1))


@functools.lru_cache(maxsize=4096)
def _matching_splits(dataset: str, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The dataset's splits matching the patterns, in the order written, no repeats. Cached: a
    10,000-run suite names the same few patterns 10,000 times, against up to ~100 splits each."""
    splits = DATASETS.get(dataset).splits
    chosen: dict[str, None] = {}
    for pattern in patterns:
        for split in splits:
            if fnmatch.fnmatchcase(split, pattern):
                chosen[split] = None
    return tuple(chosen)


def dataset_transform(name: str, img_size: int, crop_pct: float | None = None, train_aug: TrainAug | None = None) -> ClassificationTransform:
    """The transform a dataset gets: explicit settings, else the dataset entry's defaults."""
    defaults = DATASETS.get(name).transform_defaults
    return ClassificationTransform(
        img_size,
        crop_pct if crop_pct is not None else defaults.get("crop_pct", 0.875),
        train_aug if train_aug is not None else defaults.get("train_aug", "none"),
    )


def _split_hint(name: str, splits: tuple[str, ...]) -> str:
    # patterns are matched against patterns: 'c/gausian_noise/*' → 'c/gaussian_noise/*'
    wildcards = dict.fromkeys(s.rsplit("/", 1)[0] + "/*" for s in splits if s.count("/") == 2)
    close = difflib.get_close_matches(name, [*splits, *wildcards] if "*" in name else list(splits), n=1)
    shown = ", ".join(_families(splits))
    return f"; did you mean {close[0]!r}?" if close else f" (known: {shown})"


def _families(splits: tuple[str, ...]) -> list[str]:
    """Split names with corruption grids folded into patterns, e.g. 'c/<corruption>/<1-5>'."""
    out: dict[str, None] = {}
    for s in splits:
        parts = s.split("/")
        out["/".join([parts[0], "<corruption>", "<1-5>"]) if len(parts) == 3 else s] = None
    return list(out)


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    lr: float = Field(1e-4, gt=0, description="peak AdamW learning rate (our choice: the paper reports none)")
    head_lr: float | None = Field(None, gt=0, description="head learning rate; default = lr")
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="linear warmup share of all optimiser steps, then the schedule (cosine: to 0)")
    optimizer: str = Field("adamw", description="adamw (default) | adam | sgd (with train.momentum): bench.optim")
    schedule: str = Field("cosine", description="LR schedule after the warmup: cosine (default, to 0) | constant | linear (to 0) | step (bench.optim)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (optimizer sgd only)")
    step_gamma: float = Field(0.1, gt=0, le=1, description="LR factor at each milestone (schedule step only)")
    step_milestones: tuple[float, ...] = Field((0.5, 0.75), min_length=1, description="milestones as fractions of all steps, in (0, 1) (schedule step only)")
    eval_every_epoch: bool = Field(
        False, description="score the held-out split after every epoch (top-1, NLL into metrics.jsonl and the curves figure); "
        "a record only: model selection reads the final held-out score alone"
    )
    max_steps: int | None = Field(
        None, ge=1, strict=True,
        description="smoke tests: stop after this many optimiser steps; the LR schedule keeps the full run's length (so the run is "
        "the first max_steps steps of the full run); part of a run's identity only when set",
    )
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; null disables")
    eval_batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    checkpoint_every_min: float = Field(
        10.0, ge=0,
        description="minutes of training between mid-epoch checkpoints (last.pt is also written at every epoch end); 0: epoch ends "
        "only; a value below one batch's time checkpoints after every batch (tests). Not part of a run's identity",
    )

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        return OPTIMIZERS.check(v)

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, v: str) -> str:
        return SCHEDULES.check(v)

    @model_validator(mode="after")
    def _settings_used(self) -> "TrainConfig":
        """A setting of one choice set beside another choice would be silently ignored: refused."""
        for key, needs, value in (("momentum", "optimizer", "sgd"), ("step_gamma", "schedule", "step"), ("step_milestones", "schedule", "step")):
            if key in self.model_fields_set and getattr(self, needs) != value and getattr(self, key) != type(self).model_fields[key].default:
                raise ValueError(f"train.{key}: only {needs} {value} reads it (train.{needs} is {getattr(self, needs)})")
        if not all(0 < m < 1 for m in self.step_milestones):
            raise ValueError(f"train.step_milestones: {list(self.step_milestones)}: each is a fraction of all steps in (0, 1)")
        return self


class SegConfig(Strict):
    """Segmentation runs (DINOv2 linear protocol in mmsegmentation's pipeline); all our documented choices."""

    crop: int = Field(512, ge=14, description="training crop and sliding-window size (inputs are centre-padded to multiples of the patch size or stride)")
    scale: tuple[int, int] = Field((2048, 512), description="base (long, short) scale of the random keep-ratio resize")
    ratio_range: tuple[float, float] = Field((0.5, 2.0), description="random resize ratio range")
    cat_max_ratio: float = Field(0.75, gt=0, le=1, description="crop retries while one class covers more than this")
    test_scale: tuple[int, int] = Field((2048, 512), description="keep-ratio resize before sliding-window inference")
    slide_stride: int = Field(341, ge=1, description="sliding-window stride (DINOv2's linear configs: 341 for 512 crops)")
    layers: int = Field(1, ge=1, description="patch-token layers concatenated for the head: 1 (last) or 4 (last four)")


class TransferTarget(Strict):
    name: str = Field(description="registered classification dataset whose features are probed")
    params: dict[str, Any] = Field(default_factory=dict)
    train_split: str | None = Field(None, description="default: the dataset's train split")
    test_split: str | None = Field(None, description="default: the dataset's test split")
    train_limit: int | None = Field(None, ge=2, description="seeded subset of the train split (speed); null = all")
    test_limit: int | None = Field(None, ge=1, description="seeded subset of the test split; null = all")

    @model_validator(mode="after")
    def _known(self) -> "TransferTarget":
        if self.name not in DATASETS:
            raise ValueError(f"transfer.targets: {DATASETS.unknown_message(self.name)}")
        entry = DATASETS.get(self.name)
        if entry.task != "classification":
            raise ValueError(f"transfer.targets: {self.name} is a {entry.task} dataset; transfer probes classify images")
        check_dataset_params(entry, self.name, self.params, "transfer.targets")
        for key, split in (("train_split", self.train_split), ("test_split", self.test_split)):
            if split is not None and split not in entry.splits:
                raise ValueError(f"transfer.targets: {self.name} has no split {split!r}{_split_hint(split, entry.splits)}")
        return self


class TransferConfig(Strict):
    """Feature transfer (evaluation ``transfer``): kNN as DINOv2 and Softmax Regression with a C sweep."""

    targets: tuple[TransferTarget, ...] = Field((), description="datasets to probe with the frozen fine-tuned backbone")
    knn_k: int = Field(20, ge=1, description="neighbours (DINOv2: 20)")
    knn_temperature: float = Field(0.07, gt=0, description="vote weight exp(sim / T) (DINOv2: 0.07)")
    sr_cs: tuple[float, ...] = Field((1e-3, 1e-2, 1e-1, 1.0, 10.0), min_length=1, description="inverse L2 strengths swept (our choice)")
    sr_holdout: float = Field(0.1, gt=0, lt=1, description="share of the train split held out to choose C, then refit on all")
    sr_solver: Literal["torch", "sklearn"] = Field(
        "torch", description="Softmax Regression solver: torch (full-batch L-BFGS on the run's device, bench.probe) or sklearn (LogisticRegression lbfgs on CPU, the reference); same objective"
    )


class MethodConfig(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid(self) -> "MethodConfig":
        METHODS.check(self.name)
        params_cls = METHODS.get(self.name).Params
        try:
            self.resolved_params()
        except ValidationError as exc:
            e = exc.errors()[0]
            key = ".".join(str(p) for p in e["loc"])
            hint = ""
            if e["type"] == "extra_forbidden":
                close = difflib.get_close_matches(key, list(params_cls.model_fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(params_cls.model_fields)})"
            where = f"method.params.{key}" if key else "method.params"
            raise ValueError(f"{where}: {e['msg'].removeprefix('Value error, ')}{hint}") from None
        return self

    def resolved_params(self) -> dict[str, Any]:
        """All parameters including defaults: what the run really used."""
        key = (self.name, repr(self.params))  # YAML data: equal reprs are equal values
        resolved = _RESOLVED_PARAMS.get(key)
        if resolved is None:
            resolved = METHODS.get(self.name).Params(**self.params).model_dump()
            if len(_RESOLVED_PARAMS) > 4096:
                _RESOLVED_PARAMS.clear()
            _RESOLVED_PARAMS[key] = resolved
        return dict(resolved)  # a new mapping per caller (the values are scalars or read-only)


def copy_tree(node: Any) -> Any:
    """A copy of a plain-data tree (mappings and lists are new, scalar leaves shared: immutable).
    ``copy.deepcopy`` does the same with memo bookkeeping that costs seconds per 10,000 runs."""
    if isinstance(node, dict):
        return {k: copy_tree(v) for k, v in node.items()}
    if isinstance(node, list):
        return [copy_tree(v) for v in node]
    return node if isinstance(node, (str, int, float, bool, type(None))) else copy.deepcopy(node)


# (method, repr(params)) → validated parameters with defaults: each run of a large suite resolves
# its method's parameters several times (validation, consistency, identity), nearly always the same few
_RESOLVED_PARAMS: dict[tuple[str, str], dict[str, Any]] = {}


def segmentation_dataset(tree: dict[str, Any]) -> Any:
    """The registered segmentation dataset a run tree names (its ``data`` section, a mapping or a
    DataConfig; the default dataset when it names none), else None. Such a run's method takes the
    dataset's ignore index (:class:`RunConfig`), so its method section depends on its data section.
    Anything but a mapping or a DataConfig is left for field validation to refuse, with a message."""
    section = tree.get("data", {})
    name = section.get("name", DataConfig.model_fields["name"].default) if isinstance(section, dict) else getattr(section, "name", None)
    return DATASETS.get(name) if isinstance(name, str) and name in DATASETS and DATASETS.get(name).task == "segmentation" else None


class RunConfig(Strict):
    plugins: tuple[str, ...] = Field((), description="plugin modules imported before the names below are resolved (the suite's plugins: key; bench.plugins)")
    method: MethodConfig
    seed: int = Field(0, ge=0, lt=SEED_LIMIT, strict=True, description="whole number in [0, 2^32); a YAML true/false is not a seed")
    evaluations: tuple[str, ...] = Field(("id", "shift"), description="evaluation protocols to run (see bench.protocols)")
    backbone: BackboneConfig = BackboneConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    transfer: TransferConfig = TransferConfig()
    seg: SegConfig = SegConfig()

    @model_validator(mode="before")
    @classmethod
    def _segmentation_ignore_index(cls, data: Any) -> Any:
        """Dense labels mark unlabelled pixels with the dataset's ignore index (255): the method must skip them.
        Plugins are imported first: the names checked below may be theirs."""
        if isinstance(data, dict) and isinstance(data.get("plugins"), (list, tuple)) and all(isinstance(m, str) for m in data["plugins"]):
            try:
                plugin_code.load(data["plugins"])
            except plugin_code.PluginError as exc:
                raise ValueError(f"plugins: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("method"), dict):
            return data
        dense = segmentation_dataset(data)
        params = data["method"].get("params") or {}
        if dense is not None and isinstance(params, dict):
            params = dict(params)
            params.setdefault("ignore_index", dense.ignore_index)
            data = {**data, "method": {**data["method"], "params": params}}
        return data

    @field_validator("evaluations")
    @classmethod
    def _known_evaluations(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            EVALUATIONS.check(name)
        if not v:
            raise ValueError("list at least one evaluation protocol (e.g. [id, shift])")
        return v

    @property
    def task(self) -> str:
        return DATASETS.get(self.data.name).task

    def evaluation_splits(self) -> dict[str, str]:
        """split → protocol, for the splits this run evaluates (transfer targets excluded)."""
        return protocol_splits(self)

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        """Combinations that no run can satisfy, caught before anything launches."""
        backbone = backbone_entry(self.backbone.name)
        depth = backbone.depth
        blocks = self.model.trainable_blocks
        if blocks != "all" and not 0 <= blocks <= depth:
            raise ValueError(f"model.trainable_blocks: {blocks} but {self.backbone.name} has {depth} {backbone.unit} (use 0..{depth} or 'all')")
        params = self.method.resolved_params()
        if params.get("group_size"):  # a dataset whose classes are the data's own: counted from it, when it can be read here
            classes = _class_count(self.data)
            if classes is not None and params["group_size"] > classes:
                raise ValueError(f"method.params.group_size: {params['group_size']} exceeds the {classes} classes of {self.data.name}")
        if self.task == "segmentation":
            if "transfer" in self.evaluations:
                raise ValueError(f"evaluations.transfer: {self.data.name} is a segmentation dataset: 'transfer' probes classify images; use id (mIoU)")
            if self.seg.layers > backbone.most_seg_layers:
                if backbone.most_seg_layers == depth:
                    raise ValueError(f"seg.layers: {self.seg.layers} but {self.backbone.name} has {depth} {backbone.unit}")
                raise ValueError(f"seg.layers: {self.seg.layers} but {self.backbone.name} ({backbone.family}) gives its last stage's feature map only (seg.layers: 1)")
        if "heldout" in self.evaluations and self.data.holdout is None:
            raise ValueError("evaluations.heldout: data.val_fraction is 0, so no held-out split exists; set data.val_fraction (e.g. 0.1)")
        if self.train.eval_every_epoch and self.data.holdout is None:
            raise ValueError("train.eval_every_epoch: data.val_fraction is 0, so no held-out split exists to score after each epoch")
        if self.train.eval_every_epoch and self.task == "segmentation":
            raise ValueError("train.eval_every_epoch: scores held-out top-1 and NLL, which a segmentation run has not (classification only)")
        if "transfer" in self.evaluations and not self.transfer.targets:
            raise ValueError("transfer.targets: the 'transfer' evaluation needs at least one target dataset, e.g. [{name: cifar100}]")
        if self.backbone.weights == "random" and self.backbone.checkpoint:
            raise ValueError("backbone.checkpoint: set while backbone.weights is 'random'; remove one of them")
        return self

    def canonical(self) -> dict[str, Any]:
        """Defaults filled in, method parameters resolved: the identity of a run."""
        dump = self.model_dump(mode="json")
        dump["method"]["params"] = self.method.resolved_params()
        dump["data"]["params"] = {**DATASETS.get(self.data.name).params, **self.data.params}
        dump["data"]["eval_splits"] = list(self.data.resolved_eval_splits())
        dump["data"]["train_split"] = self.data.resolved_train_split
        transform = self.data.transform(self.backbone.img_size)
        dump["data"]["crop_pct"], dump["data"]["train_aug"] = transform.crop_pct, transform.train_aug
        del dump["data"]["data_root"], dump["data"]["num_workers"]  # where files live and how they load do not change what a run is
        del dump["train"]["checkpoint_every_min"]  # how often progress is saved does not change what a run computes
        del dump["plugins"]  # which modules were imported is not what ran: the code of those that provide its parts is
        # only runs that use plugin components have these keys: every other run keeps its id. The
        # method's code sits with the method (runs of two methods pair when all else is equal)
        method_code = plugin_code.code_digests([(METHODS, self.method.name)])
        if method_code:
            dump["method"]["code"] = method_code
        code = {m: d for m, d in plugin_code.code_digests(self.registry_names()[1:]).items() if m not in method_code}
        if code:
            dump["code"] = code
        # smoke-test settings enter a run's identity only when set: every run without them keeps its id
        if self.data.limit is None:
            del dump["data"]["limit"]
        if self.train.max_steps is None:
            del dump["train"]["max_steps"]
        for key, default in DEFAULT_OMITTED.items():  # settings added later: at their defaults, run ids stay as they were
            if dump["train"].get(key) == default:
                del dump["train"][key]
        return dump

    def registry_names(self) -> list[tuple[Any, str]]:
        """(registry, name) of every registered component this run uses: whose code it runs (the method first)."""
        used: list[tuple[Any, str]] = [(METHODS, self.method.name), (BACKBONES, self.backbone.name), (DATASETS, self.data.name),
                                       (OPTIMIZERS, self.train.optimizer), (SCHEDULES, self.train.schedule)]
        used += [(EVALUATIONS, e) for e in self.evaluations]
        used += [(DATASETS, t.name) for t in self.transfer.targets] if "transfer" in self.evaluations else []
        # the backbone's family adapter: a plugin can register one (bench.models.families imports
        # torch, so it is read only once imported; before that, no plugin can have registered one)
        families = sys.modules.get("bench.models.families")
        if families is not None:
            used.append((families.FAMILIES, backbone_entry(self.backbone.name).family))
        return used

    def run_id(self, memo: dict[tuple, Any] | None = None) -> str:
        """The SHA-256 of :meth:`canonical` as sorted, compact JSON (12 hex digits). ``memo``: a dict
        an expansion keeps while it names many runs (bench.suite.expand): runs whose config
        sections are the very same objects (expansion shares equal sections) and that differ only
        in their seed share one :meth:`canonical` and its JSON, the seed put in its sorted place —
        the same text, so the same id, without the work (most of a 100,000-run validate)."""
        if memo is None:
            blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
            return hashlib.sha256(blob.encode()).hexdigest()[:12]
        fields = [(name, value) for name, value in self if name != "seed"]  # every field: a section by identity, the rest by value
        key = tuple((name, id(value)) if isinstance(value, BaseModel) else (name, value) for name, value in fields)
        try:
            found = memo.get(key)
        except TypeError:  # a field value that cannot be a key: named the plain way
            return self.run_id()
        if found is None:
            if len(memo) >= 256:  # bounded: the runs of one setting follow one another in a matrix; memory stays flat
                memo.clear()
            dump = self.canonical()
            del dump["seed"]
            parts = {name: json.dumps(value, sort_keys=True, separators=(",", ":")) for name, value in dump.items()}
            found = memo[key] = (fields, parts)  # the sections held: their ids stay theirs
        parts = {**found[1], "seed": json.dumps(self.seed)}
        blob = "{" + ",".join(f"{json.dumps(name)}:{parts[name]}" for name in sorted(parts)) + "}"
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---- what `bench config` shows ------------------------------------------------------------------

DEFAULT_OMITTED: dict[str, Any] = {
    "optimizer": "adamw", "schedule": "cosine", "momentum": 0.9, "step_gamma": 0.1, "step_milestones": [0.5, 0.75], "eval_every_epoch": False,
}
"""train settings that enter a run's identity only when they differ from these defaults (JSON
form): they were added after runs existed, whose ids (and the demo's) must not change."""

NOT_IDENTITY = (("data", "data_root"), ("data", "num_workers"), ("train", "checkpoint_every_min"))
"""Settings that are no part of a run's identity (:meth:`RunConfig.canonical` leaves them out)."""


def unused_sections(cfg: RunConfig) -> dict[str, str]:
    """Config sections this run never reads, with why: ``seg`` for a classification run,
    ``transfer`` for a run without the transfer evaluation (a segmentation run never has one)."""
    unused = {}
    if cfg.task != "segmentation":
        unused["seg"] = f"{cfg.data.name} is a {cfg.task} dataset"
    if "transfer" not in cfg.evaluations:
        unused["transfer"] = "the run has no 'transfer' evaluation"
    return unused


def shown_config(cfg: RunConfig) -> dict[str, Any]:
    """The canonical config (the run's identity) without the sections the run never reads."""
    dump = cfg.canonical()
    for section in unused_sections(cfg):
        dump.pop(section, None)
    return dump


def config_differences(cfg: RunConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that differ from RunConfig's defaults, nested as in the config:
    what a suite (or -o) set, not what the defaults fill in. Method parameters are compared with
    the method's own defaults (the ignore index a segmentation dataset sets is left out, as in
    method labels), ``method.name`` is always there, and settings outside the run's identity and
    sections it never reads are left out; dataset parameters are compared with the dataset's defaults."""
    mine = cfg.model_dump(mode="json")
    default = RunConfig(method=MethodConfig(name=cfg.method.name)).model_dump(mode="json")
    for section, key in NOT_IDENTITY:
        mine[section].pop(key, None)
        default[section].pop(key, None)
    mine.pop("plugins"), default.pop("plugins")  # imports, not settings: the run id carries the code they provide
    for section in unused_sections(cfg):
        mine.pop(section, None)
    dataset_params = DATASETS.get(cfg.data.name).params  # a dataset parameter set to the dataset's own default is no change
    mine["data"]["params"] = {k: v for k, v in mine["data"]["params"].items() if k not in dataset_params or dataset_params[k] != v}
    method_defaults = METHODS.get(cfg.method.name).Params().model_dump(mode="json")
    params = {k: v for k, v in json.loads(json.dumps(cfg.method.resolved_params())).items()
              if k != "ignore_index" and method_defaults.get(k) != v}
    mine["method"], default["method"] = {"name": cfg.method.name, **({"params": params} if params else {})}, {}

    def changed(node: Any, base: Any) -> Any:
        if isinstance(node, dict) and isinstance(base, dict):
            out = {k: d for k, v in node.items() if (d := changed(v, base.get(k, _MISSING))) is not _MISSING}
            return out if out else _MISSING
        return _MISSING if node == base else node

    diff = changed(mine, default)
    return {} if diff is _MISSING else diff


_MISSING = object()

