"""A segmentation suite end to end on the demo composites: SFT and per-pixel GRPO-RM train a
linear head and report mIoU on the test and shifted splits."""

from __future__ import annotations

import json

from bench.cli import main
from test_suite import write

SEG_SUITE = """
name: seg-tiny
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  model: {trainable_blocks: 1}
  data: {name: fmnist_composites_seg, num_workers: 0, params: {img_size: 28, train_size: 16, eval_size: 6}}
  train: {epochs: 1, batch_size: 8}
  seg: {crop: 28, scale: [28, 28], ratio_range: [0.75, 1.5], test_scale: [28, 28], slide_stride: 14}
matrix:
  method: [sft, grpo_rm]
"""


def test_segmentation_suite_reports_miou(tmp_path):
    suite = write(tmp_path, SEG_SUITE)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--reports", str(tmp_path / "reports")]) == 0
    runs = [json.loads(p.read_text()) for p in (results / "seg-tiny").glob("*/result.json")]
    assert {r["method"] for r in runs} == {"sft", "grpo_rm"}
    for r in runs:
        assert r["method_params"]["ignore_index"] == 255  # injected from the dataset's protocol facts
        test = r["metrics"]["test"]
        assert 0.0 <= test["mIoU"] <= 1.0 and 0.0 < test["aAcc"] <= 1.0 and len(test["per_class_iou"]) == 11
        assert test["n"] == 6 and r["metrics"]["shift_palette"]["shift"] and r["protocol"]["transform"]["crop"] == 28
    grpo = next(r for r in runs if r["method"] == "grpo_rm")
    steps = [json.loads(line) for line in (results / "seg-tiny" / grpo["run_id"] / "metrics.jsonl").read_text().splitlines()]
    assert steps and all("adv_std" in s and "entropy" in s for s in steps)  # per-pixel GRPO-RM statistics logged
    miou = (tmp_path / "reports" / "seg-tiny" / "table_miou.md").read_text()
    assert "| fmnist_composites_seg (random init) | id | test |" in miou and "OOD average (shift sets)" in miou


def test_a_segmentation_run_evaluated_again_from_its_final_weights_scores_the_same(tmp_path):
    """The head's BatchNorm running statistics are part of the checkpoint: a run whose result is
    lost (or whose evaluation was interrupted) evaluates again from last.pt to the same numbers."""
    suite = write(tmp_path, SEG_SUITE.replace("method: [sft, grpo_rm]", "method: [sft]"))
    results = tmp_path / "results"
    args = ["run", str(suite), "--results", str(results), "--reports", str(tmp_path / "reports")]
    assert main(args) == 0
    run_dir = next((results / "seg-tiny").glob("*/result.json")).parent
    first = json.loads((run_dir / "result.json").read_text())["metrics"]
    (run_dir / "result.json").unlink()
    for saved in (run_dir / "evaluated").glob("*.json"):
        saved.unlink()  # score every split again, from the checkpoint alone
    assert main(args) == 0
    again = json.loads((run_dir / "result.json").read_text())
    assert again["metrics"] == first
    assert "running_mean" in " ".join(__import__("torch").load(run_dir / "last.pt", weights_only=False)["model"])
