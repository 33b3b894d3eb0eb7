"""GPU-hour estimates for suites/backbones.yaml, from one measured step time scaled by FLOPs.

Measured (docs/measurements.md, "Train-step time"): DINOv2 ViT-S/14, 224 px, batch 128, bf16,
full fine-tuning on one H100: ~3,000 images/s (0.042 s/step SFT, 0.044 GRPO-RM). Everything else
here is an estimate: each backbone's training rate is that rate × (ViT-S/14 FLOPs / its FLOPs),
FLOPs counted by torch's FlopCounterMode on the meta device (no weights, no GPU); conv nets are
given ViT-S/14's measured rate instead (their FLOPs are lower, but depthwise and BatchNorm-heavy
convolutions run further below peak, so FLOP scaling would flatter them); a forward-only
evaluation image costs a third of a training image. Data loading is not modelled: small models
may be bound by the CPUs that decode and resize (see the docs). Re-measure on a GPU with
``benchmarks/step_time.py --backbone NAME --img-size 224 --batch 128``.

    python benchmarks/gpu_hours.py
"""

from __future__ import annotations

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.models import backbone_entry
from bench.models.families import FAMILIES

MEASURED = ("dinov2_vits14", 3000.0)  # backbone, training images/s (H100, batch 128, bf16)
IMG = 224
TRAIN_IMAGES = 45_000 * 10  # CIFAR-10 train minus the 10% held out, 10 epochs
EVAL_IMAGES = 10_000 + 75 * 10_000 + 2_000 + 7_200  # test, CIFAR-10-C, CIFAR-10.1 v6, STL-10 (9 classes)
TUNING_RUNS, FINAL_RUNS = 6, 6  # per backbone: 3 lrs × 2 methods × 1 tuning seed; 2 methods × 3 seeds
BACKBONES = ["dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "timm:vit_base_patch16_224.mae",
             "timm:vit_base_patch16_clip_224.openai", "timm:convnext_tiny.fb_in1k", "timm:resnet50.tv_in1k"]


def forward_gflops(name: str) -> float:
    entry = backbone_entry(name)
    kwargs = dict(num_classes=0, **FAMILIES.get(entry.family).create_kwargs(IMG), **entry.arch_overrides)
    with torch.device("meta"):
        model = timm.create_model(entry.model_name or entry.timm_arch, pretrained=False, **kwargs)
        with FlopCounterMode(display=False) as counter:
            model.forward_features(torch.zeros(1, 3, IMG, IMG))
    return counter.get_total_flops() / 1e9


def main() -> None:
    base = forward_gflops(MEASURED[0])
    total = 0.0
    print(f"| backbone | GFLOPs/image (fwd, {IMG} px) | train img/s (est.) | GPU-h per final run | GPU-h, 12 runs |")
    print("|---|---:|---:|---:|---:|")
    for name in BACKBONES:
        gflops = forward_gflops(name)
        conv = backbone_entry(name).family in ("convnext", "resnet")
        rate = MEASURED[1] if conv else MEASURED[1] * base / gflops
        final = (TRAIN_IMAGES / rate + EVAL_IMAGES / (3 * rate)) / 3600
        runs = TUNING_RUNS * TRAIN_IMAGES / rate / 3600 + FINAL_RUNS * final
        total += runs
        print(f"| {name} | {gflops:.1f} | {rate:,.0f} | {final:.2f} | {runs:.1f} |")
    print(f"| all ({len(BACKBONES)} backbones, {len(BACKBONES) * (TUNING_RUNS + FINAL_RUNS)} runs) | | | | {total:.1f} |")


if __name__ == "__main__":
    main()
