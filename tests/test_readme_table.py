"""The README's demo table is generated from a report folder and checked digit for digit."""

from __future__ import annotations

import pandas as pd

from bench.readme_table import BEGIN, END, main, render
from bench.report import build_report
from bench.suite import load_suite
from test_report_verdict import write_known


def test_the_table_is_rendered_from_the_report_and_any_changed_digit_fails_the_check(tmp_path, capsys):
    root = tmp_path / "k"
    path, specs = write_known(root)
    path.write_text(path.read_text() + "primary: {split: ood_avg}\nexpected:\n  - {quantity: delta, split: ood_avg, value: 4.26, tolerance: 1.5, across: mean}\n")
    build_report(load_suite(path), specs, root / "results", root / "reports", path)
    report = root / "reports" / "syn"
    block = render(report)
    delta = pd.read_csv(report / "delta.csv").set_index(["split", "metric"])
    test = delta.loc[("test", "top1")]
    # the ID row: SFT 50.00, GRPO-RM 60.00 (no spread over seeds), Δ +10.00 with the crossed interval
    assert f"| test (ID) | 50.00 ± 0.00 | 60.00 ± 0.00 | +10.00 [+{100 * test['ci_low']:.2f}, +{100 * test['ci_high']:.2f}] † |" in block
    assert "Claim +4.26 ± 1.50 (OOD average): **smaller than claimed**" in block
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nold\n{END}\n\nrest\n")
    assert main([str(report), str(readme), "--check"]) == 1  # the old table differs
    assert main([str(report), str(readme), "--write"]) == 0 and readme.read_text().endswith("\n\nrest\n")
    assert main([str(report), str(readme), "--check"]) == 0
    summary = pd.read_csv(report / "summary.csv")
    summary.loc[(summary["split"] == "test") & (summary["metric"] == "top1") & (summary["method"] == "sft"), "mean"] += 0.0001
    summary.to_csv(report / "summary.csv", index=False)  # one digit of the shown 50.00 moves to 50.01
    capsys.readouterr()
    assert main([str(report), str(readme), "--check"]) == 1
    assert "50.01" in capsys.readouterr().out
