"""The report that answers the question: the verdict box, significance over seeds and test images
(seeds × images crossed), the forest plot, calibration, informative training curves, the ablation
ranking and wall time — on synthetic results whose answers are known by hand."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.report import build_report
from bench.report.aggregate import long_table, paired_delta, with_averages
from bench.report.stats import calibration_bins, composition, delta_estimate, delta_interval, holm, pooled_ece, with_intervals
from bench.report.verdict import config_label
from bench.suite import expand, load_suite
from report_fixtures import CONSTANT_CURVES, SUITE, VARYING_CURVES, write_run, write_suite
from test_suite import write

N = 400  # images per split in the known-answer suite
T975_2 = 4.302652729911275  # Student t 0.975 quantile, df = 2 (printed tables)


# ---- the uncertainty model on its own -------------------------------------------------------

def nested(extra: int, base: int = 200, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """(control, treatment) correctness: the treatment is right on every image the control is
    right on, plus ``extra`` more (negative: fewer)."""
    control = np.arange(n) < base
    treatment = np.arange(n) < base + extra
    return control, treatment


def diffs_of(pairs: list[tuple[np.ndarray, np.ndarray]], split: str = "test") -> list[dict[str, np.ndarray]]:
    return [{split: t.astype(np.int8) - c.astype(np.int8)} for c, t in pairs]


def test_b_right_on_40_more_of_400_images_on_every_seed_is_plus_10_points_and_significant():
    """The same +1 on 40 of 400 images on every seed: no seed noise, only the test set's. The
    crossed interval is then exactly scipy's one-sample t-interval of the per-image differences
    (df 399), while the seed-only t-interval has zero width and would measure nothing."""
    control, treatment = nested(40)
    d = treatment.astype(float) - control.astype(float)
    est = delta_estimate(diffs_of([(control, treatment)] * 3), {"test": 1.0})
    low, high = est.interval()
    ref = sps.ttest_1samp(d, 0.0)
    assert est.mean == pytest.approx(0.10) and (low, high) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert est.df == pytest.approx(N - 1) and est.p_two_sided() == pytest.approx(ref.pvalue)
    assert est.floor == pytest.approx(est.se)  # all of it is test-set noise: more seeds cannot shrink it


def test_identical_predictions_give_a_zero_delta_that_is_not_significant():
    control, _ = nested(0)
    est = delta_estimate(diffs_of([(control, control.copy())] * 3), {"test": 1.0})
    assert est.mean == 0 and est.interval() == (0.0, 0.0) and not est.defined and math.isnan(est.p_two_sided())


def test_seed_level_is_the_t_interval_when_images_add_nothing():
    """Δ 1, 2, 3 points on every image of a seed: no image noise, so the interval is the seed-level
    Student t-interval over 3 seeds (scipy), whatever the seed term's df weighting."""
    diffs = [{"s": np.full(1000, v)} for v in (0.01, 0.02, 0.03)]
    est = delta_estimate(diffs, {"s": 1.0})
    ref = sps.ttest_1samp([0.01, 0.02, 0.03], 0.0)
    assert est.interval() == pytest.approx(tuple(ref.confidence_interval(0.95))) and est.df == pytest.approx(2)
    assert est.floor == 0.0


def test_the_variance_estimate_is_unbiased_for_a_known_crossed_design():
    """d_ji = a_j + b_i + e_ji with σ_seed 2, σ_image 10, σ_int 15 points, 3 seeds × 200 images:
    V = 4/3 + 100/200 + 225/600 = 2.2083 points². The mean of V̂ over 3,000 experiments matches it
    (the estimator counts the interaction once), and the shortcut that adds the image variance to
    the seed spread of per-seed Δs (the old bootstrap's scheme) over-states it by σ²_int/(nN)."""
    rng = np.random.default_rng(0)
    n, m = 3, 200
    true = 4 / n + 100 / m + 225 / (n * m)
    v_hat, double = [], []
    for _ in range(3000):
        d = rng.normal(0, 2, (n, 1)) + rng.normal(0, 10, (1, m)) + rng.normal(0, 15, (n, m))
        est = delta_estimate([{"s": row} for row in d], {"s": 1.0})
        v_hat.append(est.se**2)
        double.append(np.var(d.mean(axis=1), ddof=1) / n + np.var(d.mean(axis=0), ddof=1) / m)
    assert np.mean(v_hat) == pytest.approx(true, rel=0.04)
    assert np.mean(double) == pytest.approx(true + 225 / (n * m), rel=0.04)


def test_splits_that_share_images_are_combined_per_image():
    """Two splits that are the same images (the second a copy of the first), averaged: declared as
    shared they are one image group, so the average has the single split's uncertainty; as
    independent splits the image noise would wrongly shrink by √2."""
    rng = np.random.default_rng(1)
    base = rng.choice([-1, 0, 1], size=N, p=[0.15, 0.6, 0.25])  # the images decide most of d: image noise dominates
    d = np.stack([np.where(rng.random(N) < 0.1, rng.choice([-1, 0, 1], size=N), base) for _ in range(3)]).astype(float)
    one = delta_estimate([{"a": row} for row in d], {"a": 1.0})
    both = [{"a": row, "b": row.copy()} for row in d]
    shared = delta_estimate(both, {"a": 0.5, "b": 0.5}, {"a": "test", "b": "test"})
    apart = delta_estimate(both, {"a": 0.5, "b": 0.5})
    assert shared.se == pytest.approx(one.se) and shared.interval() == pytest.approx(one.interval())
    assert apart.se < shared.se
    assert delta_interval(both, {"a": 0.5, "b": 0.5}, {"a": "test", "b": "test"}) == pytest.approx(one.interval())
    with pytest.raises(ValueError, match="different image counts"):
        delta_estimate([{"a": row, "b": row[:100]} for row in d], {"a": 0.5, "b": 0.5}, {"a": "x", "b": "x"})


def test_more_seeds_shrink_the_interval_down_to_the_image_floor():
    rng = np.random.default_rng(2)
    d = rng.normal(0, 3, (3, 1)) + rng.normal(0, 10, (1, N)) + rng.normal(0, 15, (3, N))
    est = delta_estimate([{"s": row} for row in d], {"s": 1.0})
    assert est.se_at(3) == pytest.approx(est.se)
    assert est.se_at(10) < est.se_at(5) < est.se and est.se_at(10**6) == pytest.approx(est.floor, rel=1e-3)
    assert est.mde(20) < est.mde(10) < est.mde()


def test_holm_counts_fewer_than_the_raw_count():
    p = [0.001, 0.03, 0.04, 0.5]
    assert sum(x < 0.05 for x in p) == 3
    assert holm(p) == [True, False, False, False]  # 0.03 > 0.05 / 3: the step-down stops
    assert holm([0.01, 0.02, 0.04]) == [True, True, True]  # 0.01 ≤ .05/3, 0.02 ≤ .05/2, 0.04 ≤ .05
    assert holm([math.nan, 0.001]) == [False, True]  # no p: in the family, never rejected


def test_composition_recombines_every_average_of_with_averages(tmp_path):
    _, specs = write_suite(tmp_path)
    long = with_averages(long_table(specs, tmp_path / "results"))
    top1 = long[long["metric"] == "top1"]
    for run, rows in top1.groupby("run_id"):
        measured = rows[~rows["derived"]].set_index("split")["value"]
        for split in rows.loc[rows["derived"], "split"]:
            weights = composition(rows, split)
            assert weights is not None and sum(weights.values()) == pytest.approx(1.0)
            assert sum(w * measured[s] for s, w in weights.items()) == pytest.approx(rows.set_index("split").at[split, "value"])
    assert composition(top1[top1["run_id"] == run], "ood_avg") == pytest.approx(
        {"c/fog/1": 1 / 12, "c/fog/2": 1 / 12, "c/snow/1": 1 / 12, "c/snow/2": 1 / 12, "cifar10.1-v6": 1 / 3, "cifar10.1-v4": 1 / 3})


# ---- a suite whose answer is known -----------------------------------------------------------

# per split: (protocol, SFT images right, GRPO-RM images right) of 400, the same on every seed,
# GRPO-RM right on every image SFT is right on
KNOWN = {"test": ("id", 200, 240), "c/fog/1": ("shift", 180, 200), "c/fog/2": ("shift", 160, 160), "cifar10.1-v6": ("shift", 200, 200)}
# transfer has no per-image predictions: per seed (SFT, GRPO-RM); Δ per seed 4, 2, 4 points on average
TRANSFER = {"stl10": ((0.90, 0.92, 0.94), (0.93, 0.93, 0.97)), "cifar100": ((0.50, 0.52, 0.54), (0.55, 0.55, 0.59))}
CALIBRATION = {  # per method: {bin: (count, confidence sum, correct sum)} of the test split, every seed
    "sft": {10: (200, 140.0, 90.0), 14: (200, 190.0, 110.0)},  # ECE (50 + 80) / 400 = 32.5%
    "grpo_rm": {12: (400, 332.0, 240.0)},  # ECE 92 / 400 = 23%
}
WALL = {"sft": 10.0, "grpo_rm": 30.0}  # + seed seconds


def known_metrics(method: str, seed: int) -> tuple[dict, dict]:
    metrics, predictions = {}, {}
    sft = method == "sft"
    for split, (protocol, a, b) in KNOWN.items():
        k = a if sft else b
        predictions[split] = np.arange(N) < k
        cal = CALIBRATION[method]
        metrics[split] = {"top1": k / N, "top5": 0.99, "n": N, "shift": protocol == "shift", "protocol": protocol,
                          "nll": (1.0 + 0.02 * seed) if sft else (0.9 + 0.01 * seed), "ece": 0.325 if sft else 0.23,
                          "brier": (0.6 if sft else 0.5) + 0.01 * seed,
                          "calibration": {"bins": 15, "count": [cal.get(i, (0, 0, 0))[0] for i in range(15)],
                                          "confidence_sum": [cal.get(i, (0, 0, 0))[1] for i in range(15)],
                                          "correct_sum": [cal.get(i, (0, 0, 0))[2] for i in range(15)]}}
    for target, values in TRANSFER.items():
        for probe in ("knn", "sr"):
            metrics[f"transfer/{target}/{probe}"] = {"top1": values[0 if sft else 1][seed], "n": 100, "shift": False, "protocol": "transfer",
                                                     "dataset": target, "probe": probe}
    return metrics, predictions


def write_known(root, with_predictions: bool = True, corrupt: set[tuple[str, int]] = frozenset()):
    root.mkdir(parents=True, exist_ok=True)
    path = write(root, SUITE, "syn.yaml")
    specs = expand(load_suite(path), path)
    for spec in specs:
        method, seed = spec.config.method.name, spec.config.seed
        metrics, predictions = known_metrics(method, seed)
        if (method, seed) in corrupt:  # a stale file: one image more right than result.json says
            predictions["test"] = np.arange(N) < int(metrics["test"]["top1"] * N) + 1
        write_run(root / "results", spec, metrics, predictions=predictions if with_predictions else None, wall_time_s=WALL[method] + seed)
    return path, specs


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    root = tmp_path_factory.mktemp("known")
    path, specs = write_known(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_REPORT_FIGURES", "1")  # the forest plot, reliability diagram and curves are checked below
        report = build_report(load_suite(path), specs, root / "results", root / "reports", path)
    return root, report


def test_delta_intervals_cover_seed_and_test_set_noise(known):
    root, _ = known
    delta = pd.read_csv(root / "reports" / "syn" / "delta.csv")
    top1 = delta[delta["metric"] == "top1"].set_index("split")
    test = top1.loc["test"]
    assert test["mean"] == pytest.approx(0.10) and test["ci_method"] == "crossed"
    assert test["t_ci_low"] == pytest.approx(test["t_ci_high"])  # the same +10 on every seed: a zero-width t-interval
    d = (np.arange(N) < 240).astype(float) - (np.arange(N) < 200)  # +1 on 40 of 400 images, every seed: only image noise
    ref = sps.ttest_1samp(d, 0.0)
    assert (test["ci_low"], test["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert test["significant"] and test["p_value"] == pytest.approx(ref.pvalue)
    # identical predictions on CIFAR-10.1: Δ 0, a zero-width interval, not significant, no p, no MDE
    v6 = top1.loc["cifar10.1-v6"]
    assert v6["mean"] == 0 and v6["ci_low"] == v6["ci_high"] == 0 and not v6["significant"] and math.isnan(v6["p_value"])
    assert math.isnan(v6["mde"])
    # the OOD average = (mean(c/fog/1, c/fog/2) + v6) / 2: per image 1/4 · d(c/fog/1) (+1 on 20 of 400); CIFAR-10-C shares the
    # test images (declared by the dataset), so its splits form one image group
    ood = top1.loc["ood_avg"]
    fog = (np.arange(N) < 200).astype(float) - (np.arange(N) < 180)
    assert ood["mean"] == pytest.approx(0.0125) and ood["ci_method"] == "crossed"
    assert (ood["ci_low"], ood["ci_high"]) == pytest.approx(tuple(sps.ttest_1samp(fog / 4, 0.0).confidence_interval(0.95)))
    # transfer has no per-image predictions: the seed-level t-interval, and why
    knn = top1.loc["transfer_avg/knn"]
    assert knn["ci_method"] == "t" and "not in predictions.npz" in knn["ci_note"]
    assert knn["ci_high"] - knn["mean"] == pytest.approx(T975_2 * statistics.stdev([0.04, 0.02, 0.04]) / math.sqrt(3))
    assert knn["p_value"] == pytest.approx(sps.ttest_1samp([0.04, 0.02, 0.04], 0.0).pvalue)


def test_verdict_box_has_families_each_holm_corrected_and_a_headline(known):
    root, report = known
    out = root / "reports" / "syn"
    v = pd.read_csv(out / "verdict.csv")
    assert list(v["family"]) == ["ID", "OOD", "OOD", "OOD", "transfer", "transfer", "calibration", "calibration", "calibration", "calibration"]
    assert list(v["quantity"]) == ["ID (test)", "cifar10.1-v6", "cifar10-C (mean)", "OOD average", "transfer average · kNN",
                                   "transfer average · SR", "NLL · ID", "NLL · OOD average", "ECE · ID", "ECE · OOD average"]
    assert list(v["mean"][:6]) == pytest.approx([10.0, 0.0, 2.5, 1.25, 10 / 3, 10 / 3])
    # transfer: p = 0.0377 (t, df 2) twice; Holm within the family of 2: 0.0377 > 0.05 / 2 → † but no ‡
    assert list(v["significant"][:6]) == [True, False, True, True, True, True]
    assert list(v["family_significant"][:6]) == [True, False, True, True, False, False]
    # ECE: the same −9.5 on every seed, a zero-width interval: never †, and no MDE
    assert not v["significant"].iloc[8] and math.isnan(v["mde"].iloc[8])
    md = report.markdown
    assert md.index("## Verdict") < md.index("### In-distribution top-1 accuracy")
    assert "- In distribution: GRPO-RM better (ID (test) +10.00 [" in md
    assert "- Transfer (frozen backbone): no difference shown after Holm within the family (2 uncorrected †)" in md
    assert "No primary endpoint is declared" in md and "each Holm-corrected within itself" in md
    assert "| ID | cifar10 (random init) | ID (test) | +10.00 [+7.05, +12.95] †‡ |" in md
    assert "## Verdict" in report.console and "Holm" in report.console
    page = (out / "report.html").read_text()
    assert 'id="verdict"' in page and page.index('id="verdict"') < page.index('id="runs"') and "GRPO-RM better" in page
    id_md = (out / "table_id.md").read_text()
    assert "+10.00 ± 2.95 †" in id_md and "seeds × test images crossed" in id_md and "ID, OOD or transfer family" in id_md


def test_a_declared_primary_endpoint_is_tested_alone_at_alpha(tmp_path):
    """With `primary: {split: ood_avg}` the OOD average leaves the OOD family and is tested alone
    (no Holm over anything else), and the headline opens with it."""
    root = tmp_path / "p"
    path, specs = write_known(root)
    text = path.read_text() + "primary: {split: ood_avg, metric: top1, treatment: grpo_rm, control: sft}\n"
    path.write_text(text)
    report = build_report(load_suite(path), specs, root / "results", root / "reports", path)
    v = pd.read_csv(root / "reports" / "syn" / "verdict.csv")
    assert v["family"].iloc[0] == "primary" and "OOD average" not in list(v.loc[v["family"] == "OOD", "quantity"])
    assert v["mean"].iloc[0] == pytest.approx(1.25) and v["family_significant"].iloc[0]
    assert "- Primary endpoint: GRPO-RM better (OOD average, top-1 accuracy +1.25 [" in report.markdown
    assert "tested alone at α = 0.05" in report.markdown


def test_missing_or_stale_predictions_keep_the_seed_level_interval_and_say_so(tmp_path):
    path, specs = write_suite(tmp_path)  # results written before predictions.npz existed
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    delta = pd.read_csv(tmp_path / "reports" / "syn" / "delta.csv")
    assert set(delta["ci_method"]) == {"t"} and np.allclose(delta["ci_low"], delta["t_ci_low"], equal_nan=True)
    assert "no predictions.npz (6 of 6 runs)" in report.markdown
    assert "seeds × test images crossed" not in (tmp_path / "reports" / "syn" / "table_id.md").read_text()

    root = tmp_path / "stale"
    path, specs = write_known(root, corrupt={("grpo_rm", 1)})
    long = with_averages(long_table(specs, root / "results"))
    from bench.report import _prediction_paths
    from bench.report.stats import load_predictions

    predictions, problems = load_predictions(_prediction_paths(specs, root / "results", long))
    delta = with_intervals(paired_delta(long), long, predictions, problems).set_index(["split", "metric"])
    assert delta.at[("test", "top1"), "ci_method"] == "t" and "disagrees with result.json on test" in delta.at[("test", "top1"), "ci_note"]
    assert delta.at[("c/fog/1", "top1"), "ci_method"] == "crossed"


@pytest.mark.figures  # drawn by the module fixture `known`
def test_forest_plot_has_every_delta_per_evaluation_set(known):
    from bench.report import _prediction_paths
    from bench.report.stats import load_predictions
    from bench.report.verdict import forest_frame

    root, report = known
    out = root / "reports" / "syn"
    assert out / "forest.png" in report.files and out / "forest.pdf" in report.files and (out / "forest.png").stat().st_size > 1000
    specs = expand(load_suite(root / "syn.yaml"), root / "syn.yaml")
    long = with_averages(long_table(specs, root / "results"))
    predictions, problems = load_predictions(_prediction_paths(specs, root / "results", long))
    frame = forest_frame(with_intervals(paired_delta(long), long, predictions, problems), long)
    assert list(frame["evaluation"]) == ["test (ID)", "cifar10.1-v6", "cifar10-C (mean)", "OOD average", "transfer average · kNN",
                                         "transfer average · SR"]
    assert list(frame["kind"]) == ["ID", "OOD set", "OOD set", "OOD average", "transfer", "transfer"]
    assert list(frame["mean"]) == pytest.approx([10.0, 0.0, 2.5, 1.25, 10 / 3, 10 / 3])
    assert list(frame["significant"]) == [True, False, True, True, True, True]


@pytest.mark.figures  # drawn by the module fixture `known`
def test_calibration_table_and_reliability_diagram(known):
    root, report = known
    out = root / "reports" / "syn"
    table = pd.read_csv(out / "table_calibration.csv")
    assert list(table["metric"]) == ["NLL", "NLL", "ECE (%)", "ECE (%)", "Brier", "Brier"]
    assert list(table["evaluation"]) == ["test", "OOD average (shift sets)"] * 3
    # by hand: NLL SFT 1.00, 1.02, 1.04 and GRPO-RM 0.90, 0.91, 0.92 (every split); ECE 32.5% vs 23%; Brier 0.60-0.62 vs 0.50-0.52
    assert list(table["sft_mean"]) == pytest.approx([1.02, 1.02, 32.5, 32.5, 0.61, 0.61])
    assert list(table["grpo_rm_mean"]) == pytest.approx([0.91, 0.91, 23.0, 23.0, 0.51, 0.51])
    assert table["sft_ci_high"].iloc[0] - 1.02 == pytest.approx(T975_2 * 0.02 / math.sqrt(3))
    assert list(table["best"]) == ["grpo_rm"] * 6  # lower is better
    md = (out / "table_calibration.md").read_text()
    assert "| cifar10 (random init) | NLL | test | 1.02 ± 0.05 | **0.91 ± 0.02** | −0.11 ± 0.02 † |" in md
    assert "| cifar10 (random init) | ECE (%) | test | 32.50 ± 0.00 | **23.00 ± 0.00** | −9.50 ± 0.00 |" in md  # zero width: no †
    long = pd.read_csv(out / "results_long.csv")
    assert {"ece", "brier", "nll"} <= set(long["metric"])  # they flow into the long table
    assert "### Calibration" in report.markdown
    # reliability: bins pooled over seeds as sums
    results = [json.loads(p.read_text()) for p in (root / "results").rglob("result.json")]
    bins = calibration_bins(results)
    sft = bins[(bins["split"] == "test") & bins["run_id"].isin({r["run_id"] for r in results if r["method"] == "sft"})]
    pooled = sft.groupby("bin")[["count", "confidence_sum", "correct_sum"]].sum()
    assert pooled.loc[10].tolist() == [600, 420, 270]
    assert pooled_ece(pooled["count"], pooled["confidence_sum"], pooled["correct_sum"]) == pytest.approx(0.325)
    assert out / "reliability.png" in report.files and (out / "reliability.png").stat().st_size > 1000


@pytest.mark.figures  # drawn by the module fixture `known`
def test_curves_draw_exactly_the_quantities_that_vary(known):
    from bench.report.aggregate import training_log
    from bench.report.plots import CURVE_PANELS, curve_panels

    root, report = known
    specs = expand(load_suite(root / "syn.yaml"), root / "syn.yaml")
    log = training_log(specs, root / "results")
    panels, dropped = curve_panels(log)
    assert [c for c, _ in panels] == [c for c, _ in CURVE_PANELS if c in VARYING_CURVES]
    assert {c for c, _ in panels} == set(VARYING_CURVES) and not {"loss", "adv_std", "adv_max"} & {c for c, _ in panels}
    titles = dict(CURVE_PANELS)
    assert dropped == [f"{titles['margin']} (at 0.5)", f"{titles['clip_fraction']} (at 0)"] and set(CONSTANT_CURVES) <= set(titles)
    assert "Training curves: not drawn, constant over training in every run: top-1 − top-2 logit margin (at 0.5)" in report.markdown
    assert (root / "reports" / "syn" / "curves.png").stat().st_size > 1000


def test_wall_time_per_method(known):
    root, report = known
    table = pd.read_csv(root / "reports" / "syn" / "table_wall_time.csv")
    assert list(table["config"]) == ["SFT", "GRPO-RM"] and list(table["runs"]) == [3, 3]
    assert list(table["mean_s"]) == pytest.approx([11.0, 31.0]) and list(table["total_s"]) == pytest.approx([33.0, 93.0])
    assert "| GRPO-RM | 3 | 31.0 s | 93.0 s | — | — | — | — |" in report.markdown  # no cost block: the rest unknown


def test_no_ablation_with_one_config_per_method(known):
    root, report = known
    assert not (root / "reports" / "syn" / "table_ablation.csv").exists() and "ablation" not in {p.stem for p in report.files}


# ---- ablation --------------------------------------------------------------------------------

ABLATION = [  # (method, params, Δ test images, Δ OOD images) against the plain SFT, of 400
    ("sft", {}, 0, 0),
    ("sft", {"label_smoothing": 0.1}, 4, 2),
    ("grpo_rm", {}, 8, 4),
    ("grpo_rm", {"mu": 2}, 16, 8),
    ("grpo_rm", {"adv_norm": "none"}, -4, -2),
    ("linear_margin", {}, 12, 6),
]


def write_ablation(root):
    root.mkdir(parents=True, exist_ok=True)
    specs = []
    for i, (method, params, d_test, d_ood) in enumerate(ABLATION):
        matrix = f"  method: [{method}]\n" + "".join(f"  method.params.{k}: [{v}]\n" for k, v in params.items())
        path = write(root, SUITE.replace("  method: [sft, grpo_rm]\n", matrix), f"abl{i}.yaml")
        for spec in expand(load_suite(path), path):
            correct = {"test": np.arange(N) < 200 + d_test, "cifar10.1-v6": np.arange(N) < 180 + d_ood}
            metrics = {s: {"top1": float(c.mean()), "n": N, "shift": s != "test", "protocol": "shift" if s != "test" else "id"}
                       for s, c in correct.items()}
            write_run(root / "results", spec, metrics, predictions=correct, wall_time_s=10.0 * (i + 1))
            specs.append(spec)
    return path, specs


def test_config_labels_name_what_differs_from_the_defaults():
    assert config_label("grpo_rm", {"epsilon": 0.2, "mu": 2, "adv_norm": "group_std"}) == "GRPO-RM μ=2"
    assert config_label("grpo_rm", {"epsilon": 0.2, "mu": 1, "adv_norm": "none"}) == "GRPO-RM adv_norm=none"
    assert config_label("linear_margin", {"scale": "grpo"}) == "linear margin"
    assert config_label("sft", {"label_smoothing": 0.1}) == "SFT label_smoothing=0.1"


@pytest.mark.figures
def test_ablation_ranks_every_config_against_the_plain_sft(tmp_path):
    path, specs = write_ablation(tmp_path)
    report = build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    out = tmp_path / "reports" / "syn"
    table = pd.read_csv(out / "table_ablation.csv")
    assert list(table["config"]) == ["GRPO-RM μ=2", "linear margin", "GRPO-RM", "SFT label_smoothing=0.1", "GRPO-RM adv_norm=none"]
    assert list(table["rank"]) == [1, 2, 3, 4, 5] and list(table["n"]) == [3] * 5
    assert list(table["id_mean"]) == pytest.approx([4.0, 3.0, 2.0, 1.0, -1.0])
    assert list(table["ood_mean"]) == pytest.approx([2.0, 1.5, 1.0, 0.5, -0.5])
    assert set(table["id_ci_method"]) == {"crossed"} and table["id_significant"].iloc[0] and table["id_ci_low"].iloc[0] > 0
    md = report.markdown
    assert "### Ablation: each config's Δ against the plain SFT" in md and "| cifar10 (random init) | 1 | GRPO-RM μ=2 | +4.00 ± " in md
    assert out / "ablation.png" in report.files and (out / "ablation.png").stat().st_size > 1000
    # the verdict compares each GRPO-RM config with the plain SFT, not with SFT label_smoothing=0.1
    v = pd.read_csv(out / "verdict.csv")
    assert (v["quantity"] == "ID (test)").sum() == 3 and v["control_variant"].nunique() == 1
    assert sorted(v.loc[v["quantity"] == "ID (test)", "mean"]) == pytest.approx([-1.0, 2.0, 4.0])
    wall = pd.read_csv(out / "table_wall_time.csv").set_index("config")["mean_s"]
    assert wall["SFT"] == 10.0 and wall["SFT label_smoothing=0.1"] == 20.0 and wall["linear margin"] == 60.0


@pytest.mark.skipif(__import__("shutil").which("pdflatex") is None, reason="needs pdflatex (Debian's texlive-latex-recommended)")
def test_new_latex_tables_compile(known, tmp_path):
    import subprocess

    from test_report_latex import PDFLATEX, WRAPPER

    root, _ = known
    out = root / "reports" / "syn"
    path, specs = write_ablation(tmp_path / "abl")
    build_report(load_suite(path), specs, tmp_path / "abl" / "results", tmp_path / "abl" / "reports", path)
    tables = [out / "table_calibration.tex", out / "table_wall_time.tex", out / "table_id.tex", tmp_path / "abl" / "reports" / "syn" / "table_ablation.tex"]
    for i, table in enumerate(tables):
        doc = tmp_path / f"doc{i}.tex"
        doc.write_text(WRAPPER % table)
        run = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, f"{table.name}:\n{run.stdout[-3000:]}"


def test_a_family_of_mixed_units_states_its_detectable_effect_in_its_first_metrics_unit():
    """Calibration holds NLL (nats) and ECE (points): the MDE it states is the NLL rows' largest,
    in nats, never an ECE MDE of 190 points called nats."""
    from bench.report.verdict import family_sentence

    rows = pd.DataFrame({
        "quantity": ["NLL · ID", "NLL · OOD average", "ECE · ID"], "metric": ["nll", "nll", "ece"],
        "mean": [0.001, 0.002, 1.4], "ci_low": [-0.01, -0.01, -8.8], "ci_high": [0.01, 0.01, 11.6],
        "mde": [0.01, 0.0068, 190.0], "significant": [False] * 3, "family_significant": [False] * 3, "p_value": [0.6, 0.56, 0.33], "n": [2] * 3,
    })
    sentence = family_sentence("calibration", rows, "grpo_rm")
    assert "could detect ≥ 0.01 nats at 80 % power" in sentence and "190" not in sentence.split("could detect")[1]
