"""The report answers first (issue 23, item 6): verdict box, then the forest plot, then the tables;
long notes fold away in <details>; accuracy in % in every figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from bench.report import build_report, plots
from bench.suite import load_suite
from report_fixtures import write_suite


def test_html_has_the_forest_figure_before_the_first_table_and_folds_the_notes(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_REPORT_FIGURES", "1")
    path, specs = write_suite(tmp_path)
    build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    page = next((tmp_path / "reports").rglob("report.html")).read_text()
    forest, verdict = page.index('id="fig-forest"'), page.index('id="verdict"')
    first_table = page.index('<h2 id="tables">')
    assert verdict < forest < first_table
    assert page.count('id="fig-forest"') == 1  # moved up, not drawn twice
    if 'id="variants"' in page:  # the long method notes, folded
        assert page.index('<details id="variants-notes">') < page.index('id="variants"') < page.index("</details>", page.index('id="variants"'))
    if 'id="tuning"' in page:
        assert '<details id="tuning-notes">' in page


def _drawn(monkeypatch) -> list:
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, stem: figures.append(fig) or [stem])
    return figures


def test_reliability_axes_are_in_percent(tmp_path, monkeypatch):
    figures = _drawn(monkeypatch)
    bins = pd.DataFrame({"model": "m", "arm": "sft", "method": "sft", "random_init": False, "bin": [0, 5, 9], "count": [2, 3, 5],
                         "confidence_sum": [0.1, 1.6, 4.8], "correct_sum": [0, 2, 5]})
    plots.reliability(bins, tmp_path / "rel", "t")
    ax = figures[0].axes[0]
    assert ax.get_ylabel() == "accuracy (%)" and ax.get_ylim() == (0.0, 100.0) and ax.get_xlim() == (0.0, 100.0)
    heights = sorted(round(bar.get_height(), 6) for bar in ax.patches)
    assert heights == [0.0, round(200 / 3, 6), 100.0]


def test_curves_batch_accuracy_is_in_percent(tmp_path, monkeypatch):
    figures = _drawn(monkeypatch)
    log = pd.DataFrame({"run_id": "r", "model": "m", "arm": "sft", "method": "sft", "random_init": False, "seed": 0, "step": [1, 2, 3], "accuracy": [0.25, 0.5, 0.75]})
    plots.curves(log, tmp_path / "curves", "t", False)
    ax = figures[0].axes[0]
    assert "batch accuracy (%)" in ax.get_title()
    assert list(ax.lines[0].get_ydata()) == [25.0, 50.0, 75.0]
