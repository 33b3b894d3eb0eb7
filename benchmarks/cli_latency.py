"""How fast the CLI answers: `bench --help`, `bench status`, and `bench validate` / `--dry-run`
of a 10,000-run suite, each the median of several whole-process runs (Python start-up included,
as a user sees it), printed beside its target (issue 14; targets are for an idle 2-core machine).

    python benchmarks/cli_latency.py [--repeat 5]

The 10,000-run suite is written to a temporary folder: the demo's settings over 2 methods ×
100 seeds × 25 learning rates × 2 epoch counts. `bench status` is timed on suites/demo.yaml with
whatever results/ holds (the count is printed).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def big_suite(folder: Path) -> Path:
    suite = yaml.safe_load((REPO / "suites" / "demo.yaml").read_text())
    suite.pop("select", None)
    suite["name"] = "latency-10k"
    lrs = [round(1e-5 * 1.35**i, 8) for i in range(25)]
    suite["matrix"] = {"method": ["sft", "grpo_rm"], "seed": list(range(100)), "train.lr": lrs, "train.epochs": [1, 2]}
    path = folder / "latency-10k.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def timed(command: list[str], repeat: int) -> tuple[float, float, int]:
    """(median s, max RSS MiB of the last run, exit code) over ``repeat`` runs after one warm-up."""
    times, code, rss = [], 0, 0.0
    for i in range(repeat + 1):
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], cwd=REPO, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        code = done.returncode
        rss = float(done.stderr.strip().splitlines()[-1]) / 1024 if done.stderr.strip() else float("nan")
        if i:  # the first run warms the page cache
            times.append(elapsed)
    return statistics.median(times), rss, code


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    bench = [sys.executable, "-m", "bench.cli"]
    results = sum(1 for _ in (REPO / "results" / "demo").glob("*/result.json"))
    with tempfile.TemporaryDirectory() as tmp:
        big = str(big_suite(Path(tmp)))
        rows = [
            ("bench --help", [*bench, "--help"], 0.5),
            (f"bench status suites/demo.yaml ({results} results)", [*bench, "status", "suites/demo.yaml"], 1.5),
            ("bench validate <10,000 runs>", [*bench, "validate", big], 2.0),
            ("bench run <10,000 runs> --dry-run", [*bench, "run", big, "--dry-run", "--results", tmp], 2.0),
        ]
        print(f"CLI latency, median of {args.repeat} (after one warm-up), whole process; targets for an idle 2-core machine")
        print(f"{'command':<44} {'median s':>9} {'target s':>9} {'max RSS MiB':>12}  verdict")
        for name, command, target in rows:
            median, rss, code = timed(command, args.repeat)
            verdict = "FAILED (exit %d)" % code if code not in (0, 1) else ("ok" if median <= target else "over target")
            print(f"{name:<44} {median:>9.2f} {target:>9.2f} {rss:>12.0f}  {verdict}")


if __name__ == "__main__":
    main()
