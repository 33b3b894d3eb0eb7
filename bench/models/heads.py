"""Linear heads: on ViT tokens (DINOv2's protocols), on pooled features, on feature maps."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ClsMeanPatchLinearHead(nn.Module):
    """DINOv2's linear protocol: a linear layer on [CLS token, mean of patch tokens]."""

    def __init__(self, embed_dim: int, num_classes: int, num_prefix_tokens: int) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens  # CLS (+ registers) precede the patch tokens
        self.linear = nn.Linear(2 * embed_dim, num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)  # as DINOv2's linear eval
        nn.init.zeros_(self.linear.bias)
        self.fp32 = False  # logits in float32 even under autocast (see full_precision_head)

    def forward(self, tokens: Tensor) -> Tensor:
        cls = tokens[:, 0]
        patches = tokens[:, self.num_prefix_tokens :].mean(dim=1)
        features = torch.cat([cls, patches], dim=-1)
        if self.fp32:
            with torch.autocast(features.device.type, enabled=False):
                return self.linear(features.float())
        return self.linear(features)


class LinearHead(nn.Module):
    """A linear layer on pooled features (a conv net's own global pooling): the same protocol as
    :class:`ClsMeanPatchLinearHead` (initialisation, float32 option) where there are no tokens."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)
        self.fp32 = False

    def forward(self, features: Tensor) -> Tensor:
        if self.fp32:
            with torch.autocast(features.device.type, enabled=False):
                return self.linear(features.float())
        return self.linear(features)


class LinearSegHead(nn.Module):
    """DINOv2's linear segmentation protocol: BatchNorm + 1×1 conv over patch-token feature maps.

    ``in_maps`` (N, D, h, w) maps — the last layer's patch tokens, or the last 4 layers
    concatenated on the channel axis (the "+ms"-free multi-layer option) — give (N, C, h, w)
    logits at the patch grid; :meth:`forward` upsamples them bilinearly to ``size`` (the label
    size), as the protocol scores predictions at full resolution.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

        self.fp32 = False  # logits in float32 even under autocast (see full_precision_head)

    def forward(self, maps: list[Tensor], size: tuple[int, int]) -> Tensor:
        x = torch.cat(maps, dim=1) if len(maps) > 1 else maps[0]
        if self.fp32:
            with torch.autocast(x.device.type, enabled=False):
                logits = self.conv(self.bn(x.float()))
        else:
            logits = self.conv(self.bn(x))
        return nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, over all ranks.

    What :class:`torch.nn.SyncBatchNorm` computes, on any backend: torch 2.11's SyncBatchNorm
    raises ``ValueError`` for CPU input in training ("expected input tensor to be on GPU …"), so a
    gloo run on CPU could not use it; one implementation for both backends also means the code the
    CPU tests check is the code GPU runs run. Each rank's per-channel count, sum and centred sum of
    squares (computed in the input's precision, stably, then in float64) are all-reduced with
    autograd (:func:`torch.distributed.nn.functional.all_reduce`: its backward all-reduces the
    gradients), so the forward normalises with the global batch's mean and biased variance and the
    backward is the global batch's; the running statistics take the global unbiased variance, so
    they are equal on every rank. In eval mode, or without a process group of more than one rank,
    this is BatchNorm2d (same parameters and buffers: checkpoints load either way).
    """

    def forward(self, input: Tensor) -> Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        dims = (0, 2, 3)
        count = input.new_tensor(float(input.numel() // max(1, input.shape[1])), dtype=torch.float64)
        local_sum = input.sum(dims)
        local_mean = local_sum / count.clamp_min(1).to(input.dtype)
        centred = (input - local_mean[None, :, None, None]).pow(2).sum(dims)
        # [count, Σx, Σ(x − x̄_r)² + n_r·x̄_r²] per rank: summed, they give N, Σx and Σx² globally
        stats = torch.cat([count.reshape(1), local_sum.double(), centred.double() + count * local_mean.double() ** 2])
        stats = all_reduce(stats)
        n = stats[0].detach()  # a count: no gradient
        if float(n) < 2:
            raise ValueError(f"batch statistics need more than one value per channel over all ranks, got {int(n)}")
        c = input.shape[1]
        mean = stats[1 : 1 + c] / n
        var = (stats[1 + c :] / n - mean**2).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_((var * n / (n - 1)).to(self.running_var.dtype), alpha=momentum)
        scale = (var + self.eps).rsqrt().to(input.dtype)
        out = (input - mean.to(input.dtype)[None, :, None, None]) * scale[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a :class:`SyncBatchNorm2d` holding the same
    parameters and buffers (what ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does); for
    runs of several processes, before DistributedDataParallel wraps the model."""
    if type(module) is nn.BatchNorm2d:
        like = next(iter(module.state_dict().values()), torch.empty(0))
        sync = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, device=like.device)
        sync.load_state_dict(module.state_dict())
        sync.train(module.training)
        for p_new, p_old in zip(sync.parameters(), module.parameters()):
            p_new.requires_grad_(p_old.requires_grad)
        return sync
    for name, child in module.named_children():
        setattr(module, name, sync_batchnorm(child))
    return module


def full_precision_head(model: nn.Module) -> None:
    """Compute the head in float32 under bf16 autocast. GRPO-RM with μ > 1 divides the current
    policy by the rollout one: a bf16 head adds ~0.4 % noise to ρ, a visible share of ε = 0.2, so
    ratios that should be 1 would clip at random. The backbone stays in bf16."""
    for module in model.modules():
        if isinstance(module, (ClsMeanPatchLinearHead, LinearHead, LinearSegHead)):
            module.fp32 = True
