"""`bench plan`: detectable effects per endpoint and the seeds the primary claim needs, from a pilot.

The pilot is a synthetic 3-seed run of the whole `suites/paper.yaml` grid written through the
store's own formats (tuning runs, then the final runs selection asks for), with per-image
predictions whose seed and image noise is known.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.data import DATASETS
from bench.suite import expand, load_suite
from report_fixtures import write_run

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "suites" / "paper.yaml"
IMAGES = 60  # per split: small, so the pilot is quick to write


def write_pilot(results: Path) -> list:
    """Tuning runs (held-out scores) for every group, then every final run selection asks for:
    classification runs with per-image predictions (GRPO-RM 2 points below SFT on average, seed
    noise, image noise), segmentation runs with mIoU only."""
    suite = load_suite(PAPER)
    rng = np.random.default_rng(0)
    for spec in expand(suite, PAPER, results_root=results):
        if spec.stage == "tune":
            write_run(results, spec, {"heldout": {"top1": 0.5 + spec.config.train.lr, "mIoU": 0.3, "n": 100, "protocol": "heldout"}},
                      dataset=spec.config.data.name, stage=spec.stage_record)
    finals = [s for s in expand(suite, PAPER, results_root=results) if s.stage == "final"]
    assert finals, "selection decided nothing"
    hard = {}  # per dataset and split: which images are hard (shared by methods and seeds)
    for spec in finals:
        c = spec.config
        entry = DATASETS.get(c.data.name)
        metrics, predictions = {}, {}
        for split in c.data.resolved_eval_splits():
            shift = entry.is_shift(split)
            if entry.task == "segmentation":
                metrics[split] = {"mIoU": 0.4 + 0.01 * c.seed, "aAcc": 0.8, "mAcc": 0.5, "n": IMAGES, "shift": shift, "protocol": "shift" if shift else "id"}
                continue
            key = (c.data.name, split)
            hard.setdefault(key, rng.random(IMAGES))
            p = 0.7 - 0.02 * (c.method.name == "grpo_rm") + rng.normal(0, 0.02)
            correct = hard[key] < p + rng.normal(0, 0.1, IMAGES)
            predictions[split] = correct
            metrics[split] = {"top1": float(correct.mean()), "n": IMAGES, "shift": shift, "protocol": "shift" if shift else "id"}
        write_run(results, spec, metrics, dataset=c.data.name, stage=spec.stage_record, predictions=predictions or None)
    return finals


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    results = tmp_path_factory.mktemp("plan") / "results"
    write_pilot(results)
    return results


def test_plan_prints_mde_per_endpoint_and_the_seeds_the_primary_claim_needs(pilot, capsys):
    assert main(["plan", str(PAPER), "--results", str(pilot)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("| endpoint"))
    assert all(f"MDE {n}" in head for n in (3, 5, 10, 20)) and "MDE floor" in head and "seeds to detect pilot Δ" in head
    primary = next(line for line in lines if line.startswith("| primary · OOD average"))
    assert "mean of 5 datasets" in primary  # cifar10, cifar100, stl10, tiny_imagenet and imagenet (suites/imagenet.yaml)
    # every classification dataset has its ID endpoint, and the segmentation settings theirs
    for dataset in ("cifar10", "cifar100", "stl10", "tiny_imagenet"):
        assert any(line.startswith("| ID · ID (") and dataset in line for line in lines), dataset
    assert any(line.startswith("| ID ·") and "voc2012" in line for line in lines)
    assert "Primary claim +4.26 ± 1.50 (mean of 5 datasets (random init))" in out


def test_plan_projections_follow_the_variance_components(pilot):
    """The MDEs fall with seeds towards the floor the test set sets, and the seeds to decide the
    claim are what ClaimTest projects (an independent recomputation from the same estimate)."""
    from bench.plan import SEED_COUNTS, plan
    from bench.report import load_final
    from bench.report.claims import ClaimTest, Quantity, quantity_estimates

    suite = load_suite(PAPER)
    specs = expand(suite, PAPER, results_root=pilot)
    rows, sentences = plan(suite, specs, pilot)
    first = rows[0]
    assert first.endpoint.startswith("primary") and first.n == 3
    mdes = [first.mde[n] for n in SEED_COUNTS]
    assert mdes == sorted(mdes, reverse=True) and mdes[-1] > first.floor_mde > 0
    final, predictions, problems = load_final(specs, pilot)
    est = quantity_estimates(Quantity("grpo_rm", "sft", "ood_avg", "top1", None, "mean"), final, predictions, problems)[0].estimate
    assert est.method == "crossed" and first.mean == pytest.approx(est.mean)
    test = ClaimTest(est, 4.26, 1.5)
    more = test.more_seeds()
    sentence = next(s for s in sentences if s.startswith("Primary claim"))
    if test.verdict != "undecided":
        assert f"already {test.verdict}" in sentence
    elif more is None:
        assert "no number of seeds" in sentence
    else:
        assert f"about {3 + more} seeds ({more} more)" in sentence
    assert math.isfinite(first.floor_mde)


def test_plan_without_finished_runs_says_how_to_make_a_pilot(tmp_path, capsys):
    assert main(["plan", str(PAPER), "--results", str(tmp_path / "none")]) == 0
    assert "No finished final runs to plan from: run a pilot first" in capsys.readouterr().out
