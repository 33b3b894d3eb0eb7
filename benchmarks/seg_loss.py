"""Peak memory and time of per-pixel GRPO-RM vs cross-entropy at segmentation scale.

Default shape = ADE20k training: batch 8 × 150 classes × 512 × 512 float32 logits (1.26 GB).
Each measurement runs in a fresh subprocess (so peak RSS is its own): the logits and labels are
allocated first, then one loss forward + backward is timed, three times. Peak memory is the
process's maximum RSS; "extra" is that peak minus the RSS once inputs exist. On CUDA it uses
``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/seg_loss.py                       # ADE20k size (needs ~8 GB RAM on CPU)
    python benchmarks/seg_loss.py --batch 2 --size 256  # smaller
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def one(method: str, batch: int, classes: int, size: int, device: str, repeats: int) -> dict:
    from bench.methods import build_method

    torch.manual_seed(0)
    dev = torch.device(device)
    logits = torch.randn(batch, classes, size, size, device=dev, requires_grad=True)
    labels = torch.randint(0, classes, (batch, size, size), device=dev)
    labels[:, :8] = 255  # some ignored pixels, as real masks have
    later = method.endswith("_pass2")
    m = build_method(method.removesuffix("_pass2"), {"ignore_index": 255, **({"mu": 2} if later else {})})
    base = torch.cuda.memory_allocated() / 2**20 if dev.type == "cuda" else rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times, first_times = [], []
    for _ in range(repeats):
        logits.grad = None
        rollout = m.rollout(logits, labels, None)
        first = timed(lambda: m.loss(logits, labels, rollout).loss.backward())
        if not later:
            times.append(first)
            continue
        # μ = 2: the second pass sees a new forward's logits (the model moved); the first pass's
        # logits are released as training releases them, π_old lives on in the stored reduction
        logits.grad = None
        with torch.no_grad():
            moved = logits + 0.05 * torch.randn_like(logits)
        moved.requires_grad_(True)
        rollout.old_logits = None
        times.append(timed(lambda: m.loss(moved, labels, rollout).loss.backward()))
        first_times.append(first)
        del moved, rollout
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "time_s": statistics.median(times), "first_pass_s": statistics.median(first_times) if first_times else None,
            "peak_mb": peak, "extra_mb": peak - base, "inputs_mb": base}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(one(a.child, a.batch, a.classes, a.size, a.device, a.repeats)))
        return
    rows: dict[str, dict] = {}
    for method in ("sft", "grpo_rm", "grpo_rm_pass2"):
        cmd = [sys.executable, __file__, "--child", method, *(f"--{k}={v}" for k, v in
               dict(batch=a.batch, classes=a.classes, size=a.size, device=a.device, repeats=a.repeats).items())]
        rows[method] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    shape = f"{a.batch}×{a.classes}×{a.size}² on {a.device}"
    print(f"per-pixel loss forward+backward, logits {shape} (median of {a.repeats})")
    labels = {"sft": "cross-entropy (SFT)", "grpo_rm": "GRPO-RM, μ=1 pass", "grpo_rm_pass2": "GRPO-RM, μ=2 2nd pass"}
    print(f"{'method':<24}{'time s':>9}{'peak MB':>10}{'extra MB':>10}{'time/CE':>9}{'peak/CE':>9}")
    ce = rows["sft"]
    for name, label in labels.items():
        r = rows[name]
        print(f"{label:<24}{r['time_s']:>9.2f}{r['peak_mb']:>10.0f}{r['extra_mb']:>10.0f}"
              f"{r['time_s'] / ce['time_s']:>8.2f}×{r['peak_mb'] / ce['peak_mb']:>8.2f}×")
    r = rows["grpo_rm_pass2"]
    print("target: GRPO-RM within 1.5× of cross-entropy in time and peak memory.")
    print(f"μ = 2: the first pass (which also stores advantages and p_old) takes {r['first_pass_s']:.2f} s; averaged over")
    print(f"the batch's two passes GRPO-RM costs {(r['first_pass_s'] + r['time_s']) / (2 * ce['time_s']):.2f}× cross-entropy per pass. Peak covers both passes.")


if __name__ == "__main__":
    main()
