"""Any timm backbone (``timm:<model>``): family adapters checked against timm's own forward, weights
files in timm's format through timm's loader, normalisation from the model's config, validation,
and DINOv2, a timm ViT and a ResNet through the harness end to end (classification and
segmentation). Random init, 28–32 px images: seconds on a CPU."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from bench.cli import main
from bench.config import RunConfig
from bench.data.base import IMAGENET_MEAN, IMAGENET_STD
from bench.models import SplitClassifier, backbone_entry, create_backbone
from bench.models import backbones as backbones_module
from bench.models.backbones import model_normalization
from test_suite import write

# (name, image side): a patch-16 ViT, a patch-14 Eva (rotary positions), a ResNet and a ConvNeXt
FAMILY_CASES = [("timm:vit_tiny_patch16_224", 32), ("timm:eva02_tiny_patch14_224", 28), ("timm:resnet18", 32), ("timm:convnext_atto", 32)]


@pytest.mark.parametrize("name,size", FAMILY_CASES, ids=[n for n, _ in FAMILY_CASES])
def test_each_family_matches_timms_own_forward_and_splits_where_it_says(name, size):
    torch.manual_seed(0)
    loaded = create_backbone(name, "random", img_size=size)
    assert loaded.init == "random init"
    net = loaded.model
    model = SplitClassifier(net, num_classes=5, trainable_blocks=1)
    x = torch.randn(3, 3, size, size)
    model.eval()
    with torch.no_grad():
        final = model.final_tokens(x)
        assert torch.allclose(final, net.forward_features(x), atol=1e-5)  # stem + units + final norm = timm's forward_features
        glob, pooled = model.probe_features(final)
        if loaded.family in ("vit", "eva"):  # DINOv2's linear protocol: [CLS, mean patch token]
            reference = torch.cat([final[:, 0], final[:, net.num_prefix_tokens :].mean(1)], -1)
            assert torch.equal(glob, final[:, 0])
        else:  # conv nets: timm's own global pooling (ConvNeXt: + its head LayerNorm)
            reference = net.forward_head(net.forward_features(x), pre_logits=True)
            assert torch.equal(glob, pooled)
        assert torch.allclose(pooled, reference, atol=1e-5)
        logits = model(x)
        assert torch.allclose(logits, model.head.linear(reference), atol=1e-5)
        assert model.prefix_numel(size) == model.embed(x)[0].numel()
    # the frozen prefix: stem and all units but the last; the last unit and the head train
    units = model.family.units(net)
    assert all(not p.requires_grad for u in units[:-1] for p in u.parameters())
    assert all(p.requires_grad for p in units[-1].parameters()) and model.head.linear.weight.requires_grad
    assert all(not p.requires_grad for m in model.family.stem_modules(net) for p in m.parameters())
    model.train()
    running = {n: b.clone() for n, b in net.named_buffers() if "running_mean" in n}
    with torch.no_grad():
        assert torch.allclose(model.from_embedded(model.embed(x)), model(x), atol=1e-5)  # the cached prefix continues exactly
    for n, before in running.items():  # frozen BatchNorm keeps its statistics; trained stages update theirs
        assert torch.equal(dict(net.named_buffers())[n], before) == (not n.startswith(("layer4", "stages.3"))), n
    probe = SplitClassifier(net, num_classes=5, trainable_blocks=0)
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {"head.linear.weight", "head.linear.bias"}


@pytest.mark.parametrize("arch,suffix", [("vit_tiny_patch16_224", ".pth"), ("convnext_atto", ".safetensors")])
def test_a_weights_file_in_timms_format_loads_through_timms_loader(tmp_path, arch, suffix):
    """A state dict as timm's hub holds it (classifier included, ViT positions for 224 px) loads
    into the backbone: classifier dropped, positions resampled to the run's size by timm's filter."""
    torch.manual_seed(1)
    source = timm.create_model(arch, pretrained=False, **({"dynamic_img_size": True} if "vit" in arch else {})).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = create_backbone(f"timm:{arch}", "pretrained", path, img_size=32)
    assert loaded.init == f"pretrained: weights{suffix}" and loaded.checkpoint == str(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model.eval().forward_features(x), source.forward_features(x), atol=1e-4)
        fresh = create_backbone(f"timm:{arch}", "random", img_size=32).model.eval()
        assert not torch.allclose(fresh.forward_features(x), source.forward_features(x), atol=1e-2)


def test_normalisation_constants_come_from_the_models_config():
    """CLIP's mean/std are not ImageNet's; timm's own data config (an independent reader) agrees."""
    with torch.device("meta"):
        clip = timm.create_model("vit_base_patch16_clip_224.openai", pretrained=False, num_classes=0)
        resnet = timm.create_model("resnet18", pretrained=False, num_classes=0)
    mean, std = model_normalization(clip)
    reference = timm.data.resolve_data_config({}, model=clip)
    assert (mean, std) == (tuple(reference["mean"]), tuple(reference["std"]))
    assert mean != IMAGENET_MEAN and std != IMAGENET_STD
    assert model_normalization(resnet) == (IMAGENET_MEAN, IMAGENET_STD)
    assert create_backbone("dinov2_tiny", "random", img_size=28).mean == IMAGENET_MEAN  # DINOv2: ImageNet's, as before


def test_registered_dinov2_entries_agree_with_their_timm_models():
    """Registered names skip timm when a suite is validated; their patch size and depth are the models'."""
    for name in ("dinov2_vits14", "dinov2_vitb14_reg4", "dinov2_vitl14", "dinov2_tiny"):
        entry = backbone_entry(name)
        with torch.device("meta"):
            model = timm.create_model(entry.timm_arch, pretrained=False, num_classes=0, **entry.arch_overrides)
        assert entry.size_multiple == model.patch_embed.patch_size[0] and entry.depth == len(model.blocks), name


def test_timm_entries_are_read_once_per_name_and_give_the_models_defaults(monkeypatch):
    backbones_module._timm_entry.cache_clear()
    built = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: built.append(a[0]) or real(*a, **k))
    configs = [RunConfig(method={"name": "sft"}, seed=s, backbone={"name": "timm:vit_small_patch14_dinov2.lvd142m", "weights": "random"})
               for s in range(20)]
    assert built == ["vit_small_patch14_dinov2.lvd142m"]  # one meta build for 20 runs
    assert configs[0].backbone.img_size == 518  # its pretrained config's input size, not 224
    entry = backbone_entry("timm:resnet18")
    assert (entry.family, entry.depth, entry.unit, entry.size_multiple, entry.most_seg_layers) == ("resnet", 4, "stages", 32, 1)


E2E = """
name: three-families
evaluations: [id]
defaults:
  model: {trainable_blocks: 1}
  data: {num_workers: 0, eval_splits: [test], params: {img_size: 32, train_size: 8, eval_size: 8}}
  train: {epochs: 1, batch_size: 8}
  seg: {crop: 32, scale: [32, 32], ratio_range: [0.75, 1.5], test_scale: [32, 32], slide_stride: 16}
matrix:
  data.name: [fmnist_composites, fmnist_composites_seg]
  backbone:
    - {name: dinov2_tiny, weights: random, img_size: 28}
    - {name: "timm:vit_tiny_patch16_224", weights: random, img_size: 32}
    - {name: "timm:resnet18", weights: random, img_size: 32}
  method: [sft, grpo_rm]
"""


def test_dinov2_a_timm_vit_and_a_resnet_classify_and_segment_through_the_harness(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    suite = write(tmp_path, E2E)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--reports", str(tmp_path / "reports")]) == 0
    runs = [json.loads(p.read_text()) for p in (results / "three-families").glob("*/result.json")]
    assert len(runs) == 12
    seen = {(r["backbone"]["name"], r["dataset"], r["method"]) for r in runs}
    assert len(seen) == 12
    for r in runs:
        assert r["backbone"]["init"] == "random init" and r["backbone"]["random_init"]
        test = r["metrics"]["test"]
        assert test["n"] == 8 and r["protocol"]["steps"] == 1
        if r["dataset"] == "fmnist_composites":
            assert 0.0 <= test["top1"] <= 1.0 and r["protocol"]["frozen_prefix_cached"]  # the prefix cache serves every family
        else:
            assert 0.0 <= test["mIoU"] <= 1.0 and len(test["per_class_iou"]) == 11
    family = {r["backbone"]["name"]: r["backbone"]["family"] for r in runs}
    assert family == {"dinov2_tiny": "vit", "timm:vit_tiny_patch16_224": "vit", "timm:resnet18": "resnet"}
    mean = {r["backbone"]["name"]: tuple(r["protocol"]["normalize"]["mean"]) for r in runs}
    assert mean["timm:vit_tiny_patch16_224"] == (0.5, 0.5, 0.5) and mean["timm:resnet18"] == mean["dinov2_tiny"] == IMAGENET_MEAN
    table = (tmp_path / "reports" / "three-families" / "table_id.md").read_text()
    assert "resnet18 (timm)" in table and "vit_tiny_patch16_224 (timm)" in table and "random init" in table
