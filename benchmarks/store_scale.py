"""Bookkeeping at cluster scale (issue 24): `bench report`, `status`, `validate` and `run --dry-run`
on synthetic stores of N finished runs, each number printed beside its target.

    python benchmarks/store_scale.py                          # N = 100, 1,000, 5,000 + the 100,000-run suite
    python benchmarks/store_scale.py --sizes 100,1000 --suite-only 0
    python benchmarks/store_scale.py --root /scratch/scale    # keep the stores there and reuse them next time

The stores are written through the project's own record API (bench/synthetic_store.py: config,
status, metrics log, saved evaluation units, predictions, checkpoint, result.json, each with its
digest), so every command reads them as it reads a real store: a realistic ablation grid of 4
datasets with shift splits × SFT and 9 GRPO-RM (ε, μ) configs × learning rates (× weight decays)
× 5 seeds, 400 images per split. Writing 5,000 runs takes a few minutes; --root keeps them.

Each measurement is one whole `bench` process (Python start-up included, as a user sees it):
wall seconds and the peak resident memory of that process (GNU time), the minimum over
--repeat runs. Measured:

- report, cold: `bench report` with figures, on a cache of its own that is empty (nothing
  verified or estimated before: the first report of a finished suite);
- report + 1 run: the suite's last run finishes after a report of the others, then `bench report`
  again (verification ledger, remembered estimates and unchanged figures reused);
- status, cold / warm: `bench status` first on an empty cache, then again;
- validate and `run --dry-run --executor slurm` of the 100,000-run suite (no store).

Targets are for an idle 2-core machine, figures on (issue 24): report of 1,000 runs ≤ 30 s and
≤ 1 GB, of 5,000 ≤ 3 min; growth exponent (log-log slope of the cold report between 1,000 and
5,000 runs) ≤ 1.1; report after one more run in a 1,000-run store ≤ 5 s; status at 5,000 runs
≤ 3 s (warm: every later call; the first call after runs finish verifies each once, printed
too); validate and --dry-run at 100,000 runs ≤ 10 s and ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.synthetic_store import suite_text, write_store  # noqa: E402

GB = 1024.0  # MiB


def timed(command: list[str], env: dict[str, str], repeat: int = 1, before=None) -> tuple[float, float, int]:
    """(min wall s, peak RSS MiB of that run, exit code) of ``command`` as a whole process; ``before``
    runs ahead of each repeat (e.g. emptying a cache)."""
    best = (math.inf, math.nan, 0)
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], cwd=REPO, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        lines = done.stderr.strip().splitlines()
        rss = float(lines[-1]) / 1024 if lines and lines[-1].strip().isdigit() else math.nan
        if done.returncode not in (0, 1):
            print(f"  !! {' '.join(command[3:])} exited {done.returncode}: {done.stderr.strip()[-400:]}", file=sys.stderr)
        if elapsed < best[0]:
            best = (elapsed, rss, done.returncode)
    return best


def store(root: Path, n: int, workers: int) -> tuple[Path, Path]:
    """(suite file, results folder) of an n-run store under ``root``, written unless complete already."""
    folder = root / f"scale{n}"
    suite, results = folder / f"scale{n}.yaml", folder / "results"
    marker = folder / ".complete"
    if marker.is_file() and suite.is_file():
        return suite, results
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    suite.write_text(suite_text(n))
    seconds = write_store(suite, results, workers=workers)
    print(f"  (wrote {n:,} finished runs in {seconds:.0f} s: {folder})", flush=True)
    marker.write_text("")
    return suite, results


def last_result(suite: Path, results: Path) -> Path:
    """result.json of the suite's last run: moved aside, the run is unfinished; moved back, it has
    just finished (its file is new to every cache, as a run that just ended)."""
    from bench.store import RunDir
    from bench.suite import expand, load_suite

    spec = expand(load_suite(suite), suite, max_runs=10**7)[-1]
    return RunDir.of(results, spec.suite, spec.run_id).result_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,5000", help="store sizes (runs), comma-separated; multiples of 40")
    ap.add_argument("--suite-only", type=int, default=100_000, help="runs of the suite that validate / --dry-run expand (0: skip)")
    ap.add_argument("--incremental", type=int, default=1000, help="store size of the report after one more run (0: skip)")
    ap.add_argument("--root", type=Path, default=None, help="where the stores live (kept and reused); default: a temporary folder")
    ap.add_argument("--workers", type=int, default=2, help="processes writing a store")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement (the minimum is printed)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    tmp = None if args.root else tempfile.TemporaryDirectory(prefix="store-scale-")
    root = Path(args.root or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    cache = root / "cache"
    env = {**os.environ, "BENCH_CACHE": str(cache), "BENCH_REPORT_FIGURES": "1", "PYTHONPATH": str(REPO)}
    bench = [sys.executable, "-m", "bench.cli"]

    def fresh_cache() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    rows: list[tuple[str, float, float, float, float]] = []  # (what, seconds, target s, MiB, target MiB)
    report_s: dict[int, float] = {}
    print(f"store-scale benchmark: sizes {sizes}, suite-only {args.suite_only}; whole processes, min of {args.repeat}; "
          f"targets for an idle 2-core machine, figures on", flush=True)
    for n in sizes:
        suite, results = store(root, n, args.workers)
        reports = root / f"scale{n}" / "reports"
        common = [str(suite), "--results", str(results), "--reports", str(reports)]
        s, mb, _ = timed([*bench, "report", *common], env, args.repeat, before=fresh_cache)
        report_s[n] = s
        rows.append((f"report, cold ({n:,} runs)", s, {1000: 30.0, 5000: 180.0}.get(n, math.nan), mb, GB if n == 1000 else math.nan))
        s, mb, _ = timed([*bench, "status", str(suite), "--results", str(results)], env, 1, before=fresh_cache)
        rows.append((f"status, cold ({n:,} runs)", s, math.nan, mb, math.nan))
        s, mb, _ = timed([*bench, "status", str(suite), "--results", str(results)], env, args.repeat)
        rows.append((f"status, warm ({n:,} runs)", s, 3.0 if n == 5000 else math.nan, mb, math.nan))
        s, mb, _ = timed([*bench, "validate", str(suite)], env, args.repeat)
        rows.append((f"validate ({n:,} runs)", s, math.nan, mb, math.nan))
    if args.incremental:
        n = args.incremental
        suite, results = store(root, n, args.workers)
        reports = root / f"scale{n}" / "reports"
        common = [str(suite), "--results", str(results), "--reports", str(reports)]
        last = last_result(suite, results)
        held = last.with_name("result.json.held")
        best = (math.inf, math.nan)
        for _ in range(args.repeat):
            os.replace(last, held)
            try:
                timed([*bench, "report", *common], env)  # the report of the other n − 1 runs: what a report remembers
            finally:
                os.replace(held, last)
            s, mb, _ = timed([*bench, "report", *common], env)
            best = min(best, (s, mb))
        rows.append((f"report + 1 run ({n:,}-run store)", best[0], 5.0, best[1], math.nan))
    if args.suite_only:
        n = args.suite_only
        folder = root / f"suite{n}"
        folder.mkdir(exist_ok=True)
        suite = folder / f"scale{n}.yaml"
        suite.write_text(suite_text(n))
        empty = folder / "results"
        empty.mkdir(exist_ok=True)
        s, mb, _ = timed([*bench, "validate", str(suite), "--max-runs", str(n)], env, args.repeat)
        rows.append((f"validate ({n:,}-run suite)", s, 10.0, mb, 300.0))
        s, mb, _ = timed([*bench, "run", str(suite), "--dry-run", "--executor", "slurm", "--max-runs", str(n), "--results", str(empty)], env, args.repeat)
        rows.append((f"run --dry-run --executor slurm ({n:,}-run suite)", s, 10.0, mb, 300.0))
    print(f"\n{'measurement':<52} {'seconds':>8} {'target':>7} {'peak MiB':>9} {'target':>7}  verdict")
    for what, s, ts, mb, tm in rows:
        ok = (math.isnan(ts) or s <= ts) and (math.isnan(tm) or mb <= tm)
        verdict = "—" if math.isnan(ts) and math.isnan(tm) else "met" if ok else "NOT met"
        print(f"{what:<52} {s:>8.2f} {'' if math.isnan(ts) else f'{ts:.0f}':>7} {mb:>9.0f} {'' if math.isnan(tm) else f'{tm:.0f}':>7}  {verdict}")
    if 1000 in report_s and 5000 in report_s:
        slope = math.log(report_s[5000] / report_s[1000]) / math.log(5)
        print(f"{'growth exponent of the cold report, 1,000 → 5,000 runs':<52} {slope:>8.2f} {1.1:>7.1f} {'':>9} {'':>7}  "
              f"{'met' if slope <= 1.1 else 'NOT met'}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
