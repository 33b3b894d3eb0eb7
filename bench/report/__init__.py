"""Reports built from a suite's results: long CSV, seed summary, Markdown table, bar plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.io import atomic_write_text
from bench.report.aggregate import long_table, paired_delta, seed_summary, with_ood_average, with_transfer_average
from bench.report.expected import compare, expected_markdown
from bench.report.plots import accuracy_bars
from bench.report.tables import comparison_markdown
from bench.suite import Expectation, RunSpec


@dataclass(frozen=True)
class Report:
    markdown: str
    files: list[Path]
    missing: list[RunSpec]


def build_report(suite_name: str, specs: list[RunSpec], results_root: Path, reports_root: Path, expected: list[Expectation] = ()) -> Report:
    long, missing = long_table(specs, results_root)
    out = Path(reports_root) / suite_name
    if long.empty:
        return Report(f"# {suite_name}\n\nNo finished runs yet ({len(missing)} missing).\n", [], missing)
    long = with_transfer_average(with_ood_average(long))
    # the headline metric: top-1 for classification suites, mIoU for segmentation-only suites
    metric = "top1" if (long["metric"] == "top1").any() else "mIoU"
    summary = seed_summary(long, metric)
    delta = paired_delta(long, metric=metric)
    inits = sorted(set(long["init"]))
    title = f"{suite_name}: SFT vs GRPO-RM"
    markdown = comparison_markdown(long, summary, delta, title, metric)
    comparison = compare(list(expected), summary, delta)
    markdown += "\n" + expected_markdown(comparison) if not comparison.empty else ""
    if missing:
        markdown += "\nMissing or unfinished runs (not in the table):\n" + "".join(
            f"- {s.config.method.name} seed={s.config.seed} (run {s.run_id})\n" for s in missing
        )
    files = [out / "results_long.csv", out / "summary.csv", out / "delta.csv", out / "table.md", out / "accuracy.png"]
    atomic_write_text(files[0], long.to_csv(index=False))
    atomic_write_text(files[1], summary.to_csv(index=False))
    atomic_write_text(files[2], delta.to_csv(index=False))
    atomic_write_text(files[3], markdown)
    plot_title = f"{title} — {', '.join(sorted(set(long['backbone'])))} ({'; '.join(inits)})"
    accuracy_bars(long, summary, files[4], plot_title, metric)
    if not comparison.empty:
        files.append(out / "expected.csv")
        atomic_write_text(files[-1], comparison.to_csv(index=False))
    return Report(markdown, files, missing)
