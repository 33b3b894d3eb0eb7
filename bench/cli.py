"""The ``bench`` command: parses arguments, delegates, prints. No logic of its own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from bench.report import Report, build_report
from bench.runner import describe, run_local
from bench.suite import SuiteError, expand, load_suite


def _specs(args: argparse.Namespace):
    suite = load_suite(args.suite)
    return suite, expand(suite, args.suite, args.override)


def _print_report(report: Report, console: Console) -> None:
    console.print(report.markdown, markup=False, soft_wrap=True)
    for path in report.files:
        console.print(f"wrote {path}", markup=False)


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    suite, specs = _specs(args)
    console.print(f"{args.suite}: ok — suite {suite.name!r}, {len(specs)} runs")
    for spec in specs:
        console.print(f"  {describe(spec)}")
    return 0


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    suite, specs = _specs(args)
    console.print(f"suite {suite.name!r}: {len(specs)} runs → {args.results / suite.name}")
    outcomes = run_local(specs, args.results, force=args.force, console=console)
    failed = [o for o in outcomes if o.state == "failed"]
    _print_report(build_report(suite.name, specs, args.results, args.reports), console)
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed[/red]; rerun the same command to retry them")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    suite, specs = _specs(args)
    _print_report(build_report(suite.name, specs, args.results, args.reports), console)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="GRPO-RM vs SFT benchmark harness")
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, help_text in (
        ("run", cmd_run, "run a suite (skips finished runs, resumes interrupted ones), then report"),
        ("report", cmd_report, "aggregate a suite's finished runs into tables and plots"),
        ("validate", cmd_validate, "check a suite file and list its runs without running anything"),
    ):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("suite", type=Path, help="suite YAML file")
        s.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="e.g. train.lr=1e-4 (repeatable)")
        s.add_argument("--results", type=Path, default=Path("results"), help="result store root (default: results/)")
        s.add_argument("--reports", type=Path, default=Path("reports"), help="report output root (default: reports/)")
        if name == "run":
            s.add_argument("--force", action="store_true", help="rerun runs that are already done")
        s.set_defaults(fn=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console()
    try:
        return args.fn(args, console)
    except SuiteError as exc:
        console.print(str(exc), markup=False, style="red")
        return 2


if __name__ == "__main__":
    sys.exit(main())
