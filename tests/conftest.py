"""Shared fixtures: a tiny, fast run config and an isolated cache per test session."""

from __future__ import annotations

import pytest

from bench.config import RunConfig

TINY = dict(
    backbone={"name": "dinov2_tiny", "weights": "random", "img_size": 28},
    model={"trainable_blocks": 1},
    data={"name": "fmnist_composites", "params": {"img_size": 28, "train_size": 48, "eval_size": 24}},
    train={"epochs": 2, "batch_size": 16, "eval_batch_size": 32},
)


def tiny_config(method: str = "grpo_rm", seed: int = 0, **overrides) -> RunConfig:
    tree = {**TINY, "method": {"name": method, "params": overrides.pop("method_params", {})}, "seed": seed}
    for key, value in overrides.items():
        tree[key] = {**tree.get(key, {}), **value}
    return RunConfig(**tree)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated data and converted weights go to a per-session folder, never the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("bench-cache")))
    yield
    mp.undo()
