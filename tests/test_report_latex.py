"""The LaTeX tables compile: every table_*.tex and expected.tex of a report, wrapped in a minimal
article with booktabs, goes through pdflatex without an error (escaping, booktabs rules, symbols)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from bench.report import build_report
from bench.suite import load_suite
from report_fixtures import SUITE, write_suite

PDFLATEX = shutil.which("pdflatex")
pytestmark = pytest.mark.skipif(PDFLATEX is None, reason="needs pdflatex (make test installs Debian's texlive-latex-recommended)")
WRAPPER = "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,landscape]{geometry}\n\\begin{document}\n\\input{%s}\n\\end{document}\n"


def test_every_latex_table_of_a_report_compiles(tmp_path):
    text = SUITE + "expected:\n  - {quantity: delta, split: ood_avg, value: 4.26, tolerance: 1.5, source: 'arXiv 2511.15256 (claim_1 & 50% of #2)'}\n"
    path, specs = write_suite(tmp_path, fail={("sft", 1)}, text=text)
    build_report(load_suite(path), specs, tmp_path / "results", tmp_path / "reports", path)
    tables = sorted((tmp_path / "reports" / "syn").glob("*.tex"))
    assert {t.name for t in tables} == {"table_id.tex", "table_ood.tex", "table_ood_splits.tex", "table_calibration.tex", "table_wall_time.tex",
                                        "expected.tex"}
    for table in tables:
        doc = tmp_path / f"doc_{table.stem}.tex"
        doc.write_text(WRAPPER % table)
        run = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"{table.name}:\n{run.stdout[-3000:]}"
        assert doc.with_suffix(".pdf").stat().st_size > 1000
