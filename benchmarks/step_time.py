"""Train-step time and peak memory of GRPO-RM vs SFT on the same backbone and batch (any registered or timm: name).

GRPO-RM at μ = 1 needs no extra forward pass (π_old is the detached first-pass policy), so its
step should cost about what an SFT step costs; this measures that. Weights are randomly
initialised because only the cost is measured. On CUDA it uses bf16 autocast (as training does)
and reports peak allocated memory; on CPU it reports time only.

    python benchmarks/step_time.py                      # CPU-sized defaults
    python benchmarks/step_time.py --img-size 224 --batch 64 128 256 --backbone dinov2_vits14   # GPU
    python benchmarks/step_time.py --img-size 224 --batch 128 --backbone timm:convnext_tiny.fb_in1k   # the estimates in docs/suites.md
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from bench.methods import build_method
from bench.models import SplitViTClassifier, create_backbone


def measure(method_name: str, backbone: str, img_size: int, batch: int, steps: int, device: torch.device, mu: int) -> dict[str, float]:
    torch.manual_seed(0)
    vit = create_backbone(backbone, weights="random", img_size=img_size).model
    model = SplitViTClassifier(vit, num_classes=1000).to(device).train()
    params = {"mu": mu} if method_name == "grpo_rm" else {}
    method = build_method(method_name, params)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            logits = model(x)
        rollout = method.rollout(logits, y, None)
        for p in range(method.passes):
            if p:
                with autocast:
                    logits = model(x)
            loss = method.loss(logits, y, rollout).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for _ in range(2):  # warm-up: allocator, kernels, autotuning
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return {"s_per_step": elapsed, "img_per_s": batch / elapsed, "peak_mib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="dinov2_vits14")
    ap.add_argument("--img-size", type=int, default=56)
    ap.add_argument("--batch", type=int, nargs="+", default=[16])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--mu", type=int, default=1, help="GRPO-RM passes per batch")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# train step, {args.backbone} (random init: cost only), {args.img_size} px, {name}, GRPO-RM μ={args.mu}")
    print(f"| batch | SFT s/step | GRPO-RM s/step | time ratio | SFT img/s | SFT peak MiB | GRPO-RM peak MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.batch:
        sft = measure("sft", args.backbone, args.img_size, batch, args.steps, device, args.mu)
        grpo = measure("grpo_rm", args.backbone, args.img_size, batch, args.steps, device, args.mu)
        print(
            f"| {batch} | {sft['s_per_step']:.4f} | {grpo['s_per_step']:.4f} | {grpo['s_per_step'] / sft['s_per_step']:.3f} "
            f"| {sft['img_per_s']:.1f} | {sft['peak_mib']:.0f} | {grpo['peak_mib']:.0f} | {grpo['peak_mib'] / sft['peak_mib']:.3f} |"
        )


if __name__ == "__main__":
    main()
