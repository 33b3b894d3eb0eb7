"""train.optimizer / train.schedule choices, train.eval_every_epoch, and dropping decided tuning runs' weights."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from bench.config import RunConfig
from bench.job import run_job
from bench.optim import OPTIMIZERS, SCHEDULES, build_optimizer
from bench.store import RunDir
from conftest import tiny_config

# metrics.jsonl of tiny_config("sft", data={"val_fraction": 0.25}) at main 7abaa83 (before these
# options existed): (step, loss, lr) of every step
BEFORE = [[1, 2.2890219688415527, 9.330127018922194e-05], [2, 2.305332899093628, 7.500000000000001e-05], [3, 2.3013579845428467, 5e-05],
          [4, 2.293952226638794, 2.500000000000001e-05], [5, 2.3038580417633057, 6.698729810778065e-06], [6, 2.245816707611084, 0.0]]


def _lrs(train: dict, total: int, steps: int | None = None) -> tuple[torch.optim.Optimizer, list[float]]:
    model = nn.Linear(3, 2)
    optimizer, schedule = build_optimizer(model, tiny_config("sft", train=train), total)
    out = [schedule.get_last_lr()[0]]
    for _ in range(steps or total):
        optimizer.step()
        schedule.step()
        out.append(schedule.get_last_lr()[0])
    return optimizer, out


def _reference(make, total: int) -> list[float]:
    optimizer = torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=1e-3)
    schedule = make(optimizer)
    out = [schedule.get_last_lr()[0]]
    for _ in range(total):
        optimizer.step()
        schedule.step()
        out.append(schedule.get_last_lr()[0])
    return out


def test_every_registered_choice_builds():
    assert OPTIMIZERS.names() == ["adam", "adamw", "sgd"] and SCHEDULES.names() == ["constant", "cosine", "linear", "step"]
    kinds = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    for name, kind in kinds.items():
        train = {"optimizer": name, "lr": 1e-3, **({"momentum": 0.8} if name == "sgd" else {})}
        optimizer, _ = _lrs(train, 4)
        assert type(optimizer) is kind
        if name == "sgd":
            assert optimizer.param_groups[0]["momentum"] == 0.8
        assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.05}  # the bias has none


@pytest.mark.parametrize("name, make", [
    ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10)),
    ("constant", lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0, total_iters=0)),
    ("linear", lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=10)),
    ("step", lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 7], gamma=0.1)),
])
def test_schedules_without_warmup_match_torch(name, make):
    _, ours = _lrs({"lr": 1e-3, "schedule": name, "warmup_fraction": 0.0}, 10)
    assert ours == pytest.approx(_reference(make, 10), rel=1e-9, abs=1e-15)


def test_schedules_with_warmup_by_hand():
    total, lr = 10, 1e-3  # warmup int(10 * 0.2) = 2 steps: lr/2, lr, then the schedule over 8 steps from progress 0
    _, cosine = _lrs({"lr": lr, "warmup_fraction": 0.2}, total, 4)
    assert cosine == pytest.approx([lr / 2, lr, lr, lr * 0.5 * (1 + math.cos(math.pi / 8)), lr * 0.5 * (1 + math.cos(math.pi * 2 / 8))])
    _, linear = _lrs({"lr": lr, "warmup_fraction": 0.2, "schedule": "linear"}, total, 4)
    assert linear == pytest.approx([lr / 2, lr, lr, lr * 7 / 8, lr * 6 / 8])
    _, constant = _lrs({"lr": lr, "warmup_fraction": 0.2, "schedule": "constant"}, total, 4)
    assert constant == pytest.approx([lr / 2, lr, lr, lr, lr])
    _, step = _lrs({"lr": lr, "warmup_fraction": 0.2, "schedule": "step", "step_milestones": [0.3, 0.5], "step_gamma": 0.5}, total, 6)
    assert step == pytest.approx([lr / 2, lr, lr, lr / 2, lr / 2, lr / 4, lr / 4])  # milestones at steps 3 and 5


def test_choices_are_validated():
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'; did you mean 'sgd'"):
        tiny_config("sft", train={"optimizer": "sgdd"})
    with pytest.raises(ValueError, match="unknown schedule 'cosin'; did you mean 'cosine'"):
        tiny_config("sft", train={"schedule": "cosin"})
    with pytest.raises(ValueError, match="train.momentum: only optimizer sgd reads it"):
        tiny_config("sft", train={"momentum": 0.5})
    with pytest.raises(ValueError, match="train.step_gamma: only schedule step reads it"):
        tiny_config("sft", train={"step_gamma": 0.5})
    with pytest.raises(ValueError, match=r"step_milestones: \[1.5\]"):
        tiny_config("sft", train={"schedule": "step", "step_milestones": [1.5]})
    with pytest.raises(ValueError, match="eval_every_epoch: data.val_fraction is 0"):
        tiny_config("sft", train={"eval_every_epoch": True}, data={"val_fraction": 0.0})


def test_defaults_keep_run_ids_and_stay_out_of_the_identity():
    # ids at main 7abaa83, before these settings existed
    assert tiny_config("sft").run_id() == "0b93dcb7adf7" and tiny_config("grpo_rm").run_id() == "b8a55815e24b"
    assert RunConfig(method={"name": "sft"}).run_id() == "131181b73edd"
    explicit = tiny_config("sft", train={"optimizer": "adamw", "schedule": "cosine", "momentum": 0.9, "eval_every_epoch": False})
    assert explicit.run_id() == "0b93dcb7adf7"
    train = tiny_config("sft").canonical()["train"]
    assert not {"optimizer", "schedule", "momentum", "step_gamma", "step_milestones", "eval_every_epoch"} & set(train)
    ids = {tiny_config("sft", train=t).run_id() for t in ({"optimizer": "sgd"}, {"optimizer": "adam"}, {"schedule": "linear"},
                                                           {"optimizer": "sgd", "momentum": 0.5}, {"eval_every_epoch": True})}
    assert len(ids) == 5 and "0b93dcb7adf7" not in ids
    assert tiny_config("sft", train={"schedule": "step"}).canonical()["train"]["schedule"] == "step"


def _rows(run_dir: RunDir) -> list[dict]:
    return [json.loads(line) for line in run_dir.metrics.read_text().splitlines()]


def test_default_training_is_unchanged_and_eval_every_epoch_logs_one_heldout_row_per_epoch(tmp_path):
    plain = RunDir(tmp_path / "plain")
    run_job(tiny_config("sft", data={"val_fraction": 0.25}), plain)
    assert [[r["step"], r["loss"], r["lr"]] for r in _rows(plain)] == BEFORE  # the same numbers as before the options existed
    evald = RunDir(tmp_path / "eval")
    cfg = tiny_config("sft", data={"val_fraction": 0.25}, train={"eval_every_epoch": True})
    result = run_job(RunConfig(**{**cfg.model_dump(), "evaluations": ["id", "heldout"]}), evald)
    rows = _rows(evald)
    held = [r for r in rows if "heldout_top1" in r]
    assert [(r["epoch"], r["step"]) for r in held] == [(0, 3), (1, 6)]  # one per epoch, at its last step
    assert all(0 <= r["heldout_top1"] <= 1 and r["heldout_nll"] > 0 for r in held)
    assert [[r["step"], r["loss"], r["lr"]] for r in rows if "loss" in r] == BEFORE  # scoring draws no random number training uses
    assert held[-1]["heldout_top1"] == pytest.approx(result["metrics"]["heldout"]["top1"])  # the last one is the final weights'
    assert json.loads(evald.status_file.read_text())["state"] == "done"


def _fake_weights(run_dir: RunDir) -> None:
    import hashlib

    data = b"final weights"
    run_dir.checkpoint.write_bytes(data)
    (run_dir.path / "last.pt.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {len(data)}\n")


def test_a_decided_tuning_run_drops_its_weights_and_still_reads_done(tmp_path):
    from bench.select import drop_decided_weights
    from bench.suite import expand, load_suite
    from test_select import SELECT_SUITE, _fake_result
    from test_suite import write

    path = write(tmp_path, SELECT_SUITE)
    suite, results = load_suite(path), tmp_path / "results"
    tune = expand(suite, path, results_root=results)
    sft = [s for s in tune if s.config.method.name == "sft"]
    grpo = [s for s in tune if s.config.method.name == "grpo_rm"]
    for spec, score in zip(sft + grpo[:1], (0.4, 0.6, 0.7)):  # grpo_rm's second candidate never ends: undecided
        run_dir = RunDir.of(results, spec.suite, spec.run_id)
        _fake_result(run_dir, score, 0.0)
        run_dir.set_status("done")
        _fake_weights(run_dir)
        assert run_dir.effective_state() == "done"
    tampered = RunDir.of(results, "sel", grpo[0].run_id)
    tampered.checkpoint.write_bytes(b"changed")
    assert tampered.effective_state() == "corrupt"  # the digest check of a finished run's weights still works
    _fake_weights(tampered)
    specs = expand(suite, path, results_root=results)
    assert {s.config.method.name for s in specs if s.stage == "final"} == {"sft"}
    # expanding (what bench status and validate do) deletes nothing: only the launcher drops weights
    assert all(RunDir.of(results, s.suite, s.run_id).checkpoint.is_file() for s in sft)
    assert {d.path.name for d in drop_decided_weights(specs, results)} == {s.run_id for s in sft}
    for spec in sft:  # decided: weights gone, the result and status stay, and the run is done, not corrupt
        run_dir = RunDir.of(results, spec.suite, spec.run_id)
        assert not run_dir.checkpoint.exists() and not (run_dir.path / "last.pt.sha256").exists()
        assert run_dir.result_file.is_file() and run_dir.effective_state() == "done" and run_dir.corruption() is None
        status = json.loads(run_dir.status_file.read_text())
        assert status["state"] == "done" and "decided selection group" in status["weights_dropped"]["reason"]
        assert len(status["weights_dropped"]["sha256"]) == 64
    assert tampered.checkpoint.is_file()  # its group waits for a run: nothing dropped
    assert drop_decided_weights(expand(suite, path, results_root=results), results) == []  # again: nothing left to drop
    assert all(RunDir.of(results, s.suite, s.run_id).effective_state() == "done" for s in sft)


def test_curves_draw_the_per_epoch_heldout_scores(tmp_path):
    import pandas as pd

    from bench.report.plots import curve_panels, curves

    rows = [{"run_id": f"r{seed}", "seed": seed, "model": "m", "arm": "sft", "method": "sft", "step": s, "accuracy": s / 10 + seed} for seed in (0, 1) for s in range(1, 7)]
    rows += [{"run_id": f"r{seed}", "seed": seed, "model": "m", "arm": "sft", "method": "sft", "step": s, "heldout_top1": s / 10 + seed, "heldout_nll": 2 - s / 10}
             for seed in (0, 1) for s in (3, 6)]
    log = pd.DataFrame(rows)
    panels, _ = curve_panels(log)
    assert [c for c, _ in panels] == ["accuracy", "heldout_top1", "heldout_nll"]
    assert curves(log, tmp_path / "curves", "t", False)
