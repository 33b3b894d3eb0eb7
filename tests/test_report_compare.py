"""Comparisons declared by the suite (``compare:``): validation with file:line errors, a report
whose every label, Δ column, verdict box, forest plot and ablation is derived from the pairs —
checked on a synthetic store of three methods (SFT, GRPO-RM and a focal loss registered here,
as a plugin would) with hand-computed Δs — and a check that report code names no method."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from pydantic import Field
from scipy import stats as sps

from bench.errors import SuiteError
from bench.methods import METHODS, display_name
from bench.methods.base import IGNORE_INDEX, LossOutput, MethodBase, MethodParams, flatten_questions, full_precision
from bench.report import build_report, plots
from bench.suite import expand, load_suite
from conftest import isolated_registry
from report_fixtures import write_run
from test_suite import write

ROOT = Path(__file__).resolve().parents[1]


# ---- a method from outside the package, registered through the registry ----------------------

class FocalParams(MethodParams):
    gamma: float = Field(2.0, ge=0.0, description="focusing parameter γ; 0 is cross-entropy")
    ignore_index: int = Field(IGNORE_INDEX, description="label of unlabelled questions (pixels)")


class Focal(MethodBase):
    """Softmax focal loss, −(1 − p_y)^γ log p_y (Lin et al. 2017): a third method for a suite to compare."""

    name: ClassVar[str] = "focal"
    display_name: ClassVar[str] = "Focal"
    Params = FocalParams
    params: FocalParams

    def loss(self, logits, labels, rollout) -> LossOutput:
        z, y = flatten_questions(logits, labels, self.params.ignore_index)
        logp = full_precision(z).log_softmax(-1).gather(-1, y[:, None])[:, 0]
        loss = (-((1 - logp.exp()) ** self.params.gamma) * logp).mean()
        return LossOutput(loss, {"loss": loss.item()})


@pytest.fixture(scope="module")
def focal():
    """``focal`` registered as a plugin would (``METHODS.add``), for this module's tests only: the
    registry's tables are copies while it lives, the originals come back afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        isolated_registry(mp, METHODS)
        METHODS.add("focal", Focal)
        yield Focal


def test_the_focal_method_is_cross_entropy_at_gamma_0_and_down_weights_easy_questions(focal):
    import torch
    import torch.nn.functional as F

    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.3, 0.2]]), torch.tensor([0, 2])
    assert Focal(FocalParams(gamma=0.0)).loss(logits, labels, None).loss.item() == pytest.approx(F.cross_entropy(logits, labels).item())
    p = logits.softmax(-1)[torch.arange(2), labels]
    by_hand = (-((1 - p) ** 2) * p.log()).mean().item()
    assert Focal(FocalParams()).loss(logits, labels, None).loss.item() == pytest.approx(by_hand)
    assert display_name("focal") == "Focal" and display_name("sft") == "SFT" and display_name("not_registered") == "not_registered"


# ---- suite validation ---------------------------------------------------------------------------

HEAD = """
name: syn
description: three methods, two comparisons
defaults:
  backbone: {name: dinov2_tiny, weights: random, img_size: 28}
  data: {name: fmnist_composites, params: {img_size: 28}}
matrix:
  method: [sft, grpo_rm, focal]
  seed: [0, 1, 2]
"""
PAIRS = "compare:\n  - {treatment: grpo_rm, control: sft}\n  - {treatment: focal, control: sft}\n"


@pytest.mark.parametrize("extra, where, reason", [
    ("compare:\n  - {treatment: grpo_rm, control: sft}\n  - {treatment: focl, control: sft}\n", ":12: compare.1.treatment: ",
     "unknown method 'focl'; did you mean 'focal'?"),
    ("compare:\n  - {treatment: linear_margin, control: sft}\n", ":11: compare.0.treatment: ",
     "linear_margin is not run by this suite (its runs use: focal, grpo_rm, sft)"),
    ("compare:\n  - {treatment: focal, control: focal}\n", ":11: compare.0: ", "treatment and control are both focal"),
    (PAIRS + "  - {treatment: grpo_rm, control: sft}\n", ":13: compare.2: ", "grpo_rm vs sft is listed twice (also compare.0)"),
    ("compare: []\n", ":10: compare: ", "empty list"),
    (PAIRS + "primary: {split: test, treatment: focal, control: grpo_rm}\n", ":13: primary: ",
     "focal vs grpo_rm is not one of the compared pairs (grpo_rm vs sft, focal vs sft)"),
])
def test_bad_compare_entries_are_refused_with_file_line_and_key(tmp_path, focal, extra, where, reason):
    path = write(tmp_path, HEAD + extra)
    with pytest.raises(SuiteError) as err:
        expand(load_suite(path), path)
    assert f"{path}{where}" in str(err.value) and reason in str(err.value)


def test_primary_and_claims_default_to_the_first_pair_and_no_compare_keeps_the_old_pair(tmp_path, focal):
    text = HEAD + "compare:\n  - {treatment: focal, control: sft}\n  - {treatment: grpo_rm, control: sft}\n"
    suite = load_suite(write(tmp_path, text + "primary: {split: test}\nexpected:\n  - {split: test, value: 1, tolerance: 1}\n"
                                              "  - {split: test, baseline: sft, method: grpo_rm, value: 1, tolerance: 1}\n"))
    assert [c.pair for c in suite.comparisons()] == [("focal", "sft"), ("grpo_rm", "sft")]
    assert (suite.primary.treatment, suite.primary.control) == ("focal", "sft")
    assert [(e.method, e.baseline) for e in suite.expected] == [("focal", "sft"), ("grpo_rm", "sft")]
    one_side = load_suite(write(tmp_path, text + "primary: {split: test, treatment: grpo_rm}\n", "one.yaml"))
    assert (one_side.primary.treatment, one_side.primary.control) == ("grpo_rm", "sft")
    assert [c.pair for c in load_suite(write(tmp_path, HEAD, "plain.yaml")).comparisons()] == [("grpo_rm", "sft")]
    declared = load_suite(write(tmp_path, HEAD + "primary: {split: test, treatment: focal, control: sft}\n", "p.yaml"))
    assert [c.pair for c in declared.comparisons()] == [("focal", "sft")]  # no compare: the primary's pair, as before


# ---- a report of two pairs ------------------------------------------------------------------------

# top-1 per (method, split) at seed 0, then + a per-seed offset: Δ focal − SFT on test is
# (0.86 − 0.80) + (offset_focal − offset_sft) per seed = +6, +5, +8 points
BASE = {"sft": {"test": 0.80, "shift_a": 0.60}, "grpo_rm": {"test": 0.82, "shift_a": 0.64}, "focal": {"test": 0.86, "shift_a": 0.66}}
OFFSETS = {"sft": (0.00, 0.02, 0.01), "grpo_rm": (0.01, 0.01, 0.03), "focal": (0.00, 0.01, 0.03)}


def top1(method: str, split: str, seed: int) -> float:
    return BASE[method][split] + OFFSETS[method][seed]


@pytest.fixture(scope="module")
def report(tmp_path_factory, focal):
    root = tmp_path_factory.mktemp("compare")
    text = HEAD + PAIRS + "primary: {split: ood_avg, metric: top1, treatment: focal, control: sft, across: each}\n" \
        "expected:\n  - {method: focal, split: test, value: 6.0, tolerance: 2.0, source: made up}\n"
    path = write(root, text, "syn.yaml")
    suite = load_suite(path)
    specs = expand(suite, path)
    for spec in specs:
        method, seed = spec.config.method.name, spec.config.seed
        metrics = {split: {"top1": top1(method, split, seed), "nll": 0.5 + 0.01 * seed + 0.02 * (method == "sft"), "n": 100,
                           "shift": split != "test", "protocol": "shift" if split != "test" else "id"} for split in ("test", "shift_a")}
        write_run(root / "results", spec, metrics)
    labels: dict[str, list[str]] = {}

    def save(fig, stem):  # the figure's texts instead of its pixels: what each one says it shows
        labels[stem.name] = [t.get_text() for t in fig.texts] + [ax.get_xlabel() for ax in fig.axes]
        plots.plt.close(fig)
        out = stem.with_suffix(".png")
        out.write_bytes(b"\x89PNG")
        return [out]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_REPORT_FIGURES", "1")
        mp.setattr(plots, "save", save)
        result = build_report(suite, specs, root / "results", root / "reports", path)
    return root / "reports" / "syn", result, labels, suite, specs, root / "results"


def by_hand(treatment: str, control: str, split: str) -> tuple[float, float]:
    """Mean and 95% t half-width over seeds of the per-seed Δ, in points, from the values written."""
    d = np.array([100 * (top1(treatment, split, s) - top1(control, split, s)) for s in range(3)])
    return float(d.mean()), float(sps.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3))


def test_tables_have_one_delta_column_per_pair_computed_from_that_pairs_runs(report):
    out, result, _, _, _, _ = report
    table = pd.read_csv(out / "table_id.csv").set_index("evaluation")
    mean, half = by_hand("focal", "sft", "test")
    assert mean == pytest.approx(19 / 3)  # +6, +5, +8 points
    assert table.at["test", "delta_focal_vs_sft_mean"] == pytest.approx(mean)
    assert table.at["test", "delta_focal_vs_sft_ci_high"] - table.at["test", "delta_focal_vs_sft_mean"] == pytest.approx(half)
    assert table.at["test", "delta_grpo_rm_vs_sft_mean"] == pytest.approx(by_hand("grpo_rm", "sft", "test")[0])
    assert "delta_mean" not in table  # with two pairs no column silently means "the first one"
    md = (out / "table_id.md").read_text()
    assert "| SFT (n=3) | GRPO-RM (n=3) | Focal (n=3) | Δ GRPO-RM − SFT | Δ Focal − SFT |" in md
    assert "Δ = GRPO-RM − SFT and Focal − SFT paired over matching seeds" in md
    assert f"+{mean:.2f} ± {half:.2f} †" in md
    delta = pd.read_csv(out / "delta.csv")
    assert set(zip(delta["treatment"], delta["control"])) == {("grpo_rm", "sft"), ("focal", "sft")}
    calibration = (out / "table_calibration.md").read_text()
    assert "Δ GRPO-RM − SFT | Δ Focal − SFT |" in calibration and "(negative: the first-named method better)" in calibration


def test_each_pair_has_its_own_verdict_box_and_the_primary_sits_in_its_pairs_box(report):
    out, result, _, _, _, _ = report
    assert result.markdown.startswith("# syn: SFT vs GRPO-RM and Focal\n")
    assert "## Verdict: Δ GRPO-RM − SFT, mean over seeds [95% CI]" in result.markdown
    assert "## Verdict: Δ Focal − SFT, mean over seeds [95% CI]" in result.markdown
    assert "No GRPO-RM − SFT comparison" not in result.markdown
    v = pd.read_csv(out / "verdict.csv")
    primary = v[v["family"] == "primary"]
    assert list(zip(primary["treatment"], primary["control"])) == [("focal", "sft")]
    assert primary["mean"].iloc[0] == pytest.approx(by_hand("focal", "sft", "shift_a")[0])  # one OOD set: its own Δ is the average
    focal_id = v[(v["treatment"] == "focal") & (v["quantity"] == "ID (test)")]
    grpo_id = v[(v["treatment"] == "grpo_rm") & (v["quantity"] == "ID (test)")]
    assert focal_id["mean"].iloc[0] == pytest.approx(by_hand("focal", "sft", "test")[0])
    assert grpo_id["mean"].iloc[0] == pytest.approx(by_hand("grpo_rm", "sft", "test")[0])
    focal_box = result.markdown.split("## Verdict: Δ Focal − SFT")[1]
    assert "- Primary endpoint: Focal better (OOD average" in focal_box and "Claim Δ Focal − SFT, test, top-1 accuracy" in focal_box
    assert "Primary endpoint" not in result.markdown.split("## Verdict: Δ GRPO-RM − SFT")[1].split("## Verdict: Δ Focal")[0]
    assert "- Δ GRPO-RM − SFT:" in result.summary and "- Δ Focal − SFT:" in result.summary
    page = (out / "report.html").read_text()
    assert 'id="verdict_grpo_rm_vs_sft"' in page and 'id="verdict_focal_vs_sft"' in page and 'href="#verdict_focal_vs_sft"' in page


def test_each_pair_has_its_own_forest_plot_and_the_ablation_ranks_both_against_sft(report):
    out, result, labels, _, _, _ = report
    assert {"forest_grpo_rm_vs_sft", "forest_focal_vs_sft"} <= set(labels) and "forest" not in labels
    assert any(x.startswith("Δ GRPO-RM − SFT, top-1 accuracy") for x in labels["forest_grpo_rm_vs_sft"])
    assert any(x.startswith("Δ Focal − SFT, top-1 accuracy") for x in labels["forest_focal_vs_sft"])
    assert any("against the plain SFT" in x for x in labels["ablation"])
    ablation = pd.read_csv(out / "table_ablation.csv")
    assert list(ablation["config"]) == ["Focal", "GRPO-RM"]  # ranked by Δ ID
    assert list(ablation["id_mean"]) == pytest.approx([by_hand("focal", "sft", "test")[0], by_hand("grpo_rm", "sft", "test")[0]])
    assert "### Ablation: each config's Δ against the plain SFT" in result.markdown
    expected = pd.read_csv(out / "expected.csv")
    assert list(expected["expectation"]) == ["Δ Focal − SFT, test, top-1 accuracy"]
    assert expected["actual"].iloc[0] == pytest.approx(by_hand("focal", "sft", "test")[0])


def test_plan_names_each_pairs_endpoints(report):
    from bench.plan import plan

    _, _, _, suite, specs, results = report
    rows, _ = plan(suite, specs, results)
    assert {r.endpoint.split(" · ")[0] for r in rows} == {"Δ GRPO-RM − SFT", "Δ Focal − SFT"}


# ---- report code names no method ------------------------------------------------------------------

REPORT_CODE = [*sorted((ROOT / "bench" / "report").glob("*.py")), ROOT / "bench" / "readme_table.py", ROOT / "bench" / "plan.py"]


def method_words() -> list[str]:
    """Every registered method's name and display name."""
    return sorted({w for m in METHODS.names() for w in (m, display_name(m))})


def literals_naming_methods(source: str, words: list[str]) -> list[tuple[int, str]]:
    """(line, text) of each string constant in ``source`` — docstrings aside: prose, not labels —
    that contains one of ``words`` as a whole word (f-strings' literal parts included)."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    pattern = re.compile("|".join(rf"(?<![\w-]){re.escape(w)}(?![\w-])" for w in words))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings and pattern.search(node.value)]


def test_the_literal_check_finds_method_names_in_labels_and_not_in_docstrings():
    words = ["grpo_rm", "GRPO-RM", "SFT"]
    source = '"""About GRPO-RM."""\ndef f(x):\n    """SFT first."""\n    return f"Δ GRPO-RM − {x}", {"sft": 1, "grpo_rm": 2}, "grpo-rm-bench"\n'
    assert [text for _, text in literals_naming_methods(source, words)] == ["Δ GRPO-RM − ", "grpo_rm"]


@pytest.mark.parametrize("path", REPORT_CODE, ids=lambda p: p.name)
def test_report_code_spells_out_no_method(path, focal):
    found = literals_naming_methods(path.read_text(), method_words())
    assert not found, f"{path.relative_to(ROOT)} names methods in string literals (derive them from the suite's pairs): {found}"


def test_the_report_template_spells_out_no_method(focal):
    text = (ROOT / "bench" / "report" / "report.html.j2").read_text()
    assert not [w for w in method_words() if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)]
