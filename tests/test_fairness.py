"""A fair comparison: for a seed, SFT and GRPO-RM start from identical backbone and head weights and
see identical batches in identical order; model selection gives every method the same tuning budget."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from bench.distributed import DistContext
from bench.features import clear_cache
from bench.built import BuiltRun
from bench.store import RunDir
from bench.suite import expand, load_suite
from bench.train import train
from conftest import tiny_config
from test_suite import write

METHODS = (("sft", {}), ("grpo_rm", {}), ("grpo_rm", {"mu": 2}))


def _trace(cfg, run_dir: RunDir, monkeypatch) -> tuple[dict[str, torch.Tensor], list[tuple[int, torch.Tensor, torch.Tensor]]]:
    """The model's state before training, and every (epoch, inputs, labels) batch training consumed."""
    clear_cache()  # each job computes its own frozen-prefix tokens: nothing is shared by accident
    job = BuiltRun(cfg, DistContext())
    initial = {k: v.detach().clone() for k, v in job.model.state_dict().items()}
    consumed: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    real = job.train_batches

    def recording(inputs, batches, epoch):
        for x, y in real(inputs, batches, epoch):
            consumed.append((epoch, x.detach().clone(), y.detach().clone()))
            yield x, y

    monkeypatch.setattr(job, "train_batches", recording)
    trained = train(job, run_dir)
    batches_per_epoch = math.ceil(len(job.train_split) / cfg.train.batch_size)
    assert len(consumed) == cfg.train.epochs * batches_per_epoch
    assert trained.steps == len(consumed) * job.method.passes
    return initial, consumed


@pytest.mark.parametrize("trainable_blocks", [1, "all"])  # frozen-prefix tokens, and raw pixels
def test_methods_start_identical_and_see_identical_batches(tmp_path, monkeypatch, trainable_blocks):
    traces = {}
    for name, params in METHODS:
        cfg = tiny_config(name, seed=0, method_params=params, model={"trainable_blocks": trainable_blocks})
        assert cfg.train.epochs == 2
        key = f"{name}{params}"
        traces[key] = _trace(cfg, RunDir(tmp_path / key), monkeypatch)

    (ref_state, ref_batches), *others = traces.values()
    assert any(k.startswith("head.") for k in ref_state) and any(k.startswith("vit.") for k in ref_state)
    for state, batches in others:
        assert state.keys() == ref_state.keys()
        for k in ref_state:
            assert torch.equal(state[k], ref_state[k]), k
        assert len(batches) == len(ref_batches)
        for (e0, x0, y0), (e1, x1, y1) in zip(ref_batches, batches):
            assert e0 == e1 and torch.equal(y0, y1) and torch.equal(x0, x1)

    # the test can fail: another seed changes both the head init and the data order
    other_state, other_batches = _trace(
        tiny_config("sft", seed=1, model={"trainable_blocks": trainable_blocks}), RunDir(tmp_path / "seed1"), monkeypatch
    )
    assert not torch.equal(other_state["head.linear.weight"], ref_state["head.linear.weight"])
    order = [y.tolist() for _, _, y in ref_batches]
    assert [y.tolist() for _, _, y in other_batches] != order
    # the same multiset of training labels, only reordered: the training split does not follow the seed
    assert Counter(sum(order, [])) == Counter(sum([y.tolist() for _, _, y in other_batches], []))
    # and each epoch reshuffles within a run
    per_epoch = [[y.tolist() for e, _, y in ref_batches if e == epoch] for epoch in (0, 1)]
    assert per_epoch[0] != per_epoch[1]


SELECT_SUITE = """
name: fair
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  model: {trainable_blocks: 1}
  data: {name: fmnist_composites, params: {img_size: 28, train_size: 48, eval_size: 16}}
  train: {epochs: 1, batch_size: 16}
methods:
  grpo_rm: {epsilon: 0.1, mu: 2}
select:
  metric: top1
  tune: {train.lr: [1.0e-4, 3.0e-3], train.weight_decay: [0.0, 0.05]}
  seeds: [1000, 1001]
matrix:
  method: [sft, grpo_rm]
  seed: [0, 1, 2]
  model.trainable_blocks: [0, 1]
"""


def test_selection_gives_every_method_the_same_tuning_runs(tmp_path):
    path = write(tmp_path, SELECT_SUITE)
    specs = expand(load_suite(path), path)
    tune = [s for s in specs if s.stage == "tune"]
    assert tune and len(tune) == len(specs)  # nothing decided yet: tuning runs only

    grid = {}  # (method, other matrix values) → sorted (tuned values, seed)
    for s in tune:
        values = json.loads(s.record)["tuned_values"]
        assert s.config.evaluations == ("heldout",)
        assert s.config.train.lr == values["train.lr"] and s.config.train.weight_decay == values["train.weight_decay"]
        grid.setdefault((s.config.method.name, s.config.model.trainable_blocks), []).append(
            (json.dumps(values, sort_keys=True), s.config.seed)
        )

    # 2 lr × 2 weight decay × 2 tuning seeds, for each method and each trainable_blocks value
    assert set(grid) == {(m, b) for m in ("sft", "grpo_rm") for b in (0, 1)}
    expected = sorted(
        (json.dumps({"train.lr": lr, "train.weight_decay": wd}, sort_keys=True), seed)
        for lr in (1e-4, 3e-3) for wd in (0.0, 0.05) for seed in (1000, 1001)
    )
    for key, runs in grid.items():
        assert sorted(runs) == expected, key
    assert len(tune) == 2 * 2 * len(expected)

    # a tuning run differs from its other-method twin only in the method
    def without_method(s):
        canon = s.config.canonical()
        del canon["method"]
        return json.dumps(canon, sort_keys=True)

    by_method = {m: Counter(without_method(s) for s in tune if s.config.method.name == m) for m in ("sft", "grpo_rm")}
    assert by_method["sft"] == by_method["grpo_rm"]
    assert len({s.run_id for s in tune}) == len(tune)
