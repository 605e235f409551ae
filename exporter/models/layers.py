"""Small building blocks shared by the VMamba and MedMamba model files."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Linear2d(nn.Linear):
    """A Linear over the channel axis of a (B, C, H, W) map (a 1x1 convolution).

    Keeps nn.Linear's (out, in) weight so the official channel-first checkpoints load as they are.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class SpatialSoftmax(nn.Module):
    """Softmax over all pixels of each channel (VMamba's `_onsoftmax` out_norm ablation)."""

    def __init__(self, channel_first: bool):
        super().__init__()
        self.channel_first = channel_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_first:
            B, C, H, W = x.shape
            return x.reshape(B, C, H * W).softmax(-1).view(B, C, H, W)
        B, H, W, C = x.shape
        return x.reshape(B, H * W, C).softmax(1).view(B, H, W, C)


def drop_path_rates(max_rate: float, n: int) -> list[float]:
    """Stochastic-depth rates rising linearly to ``max_rate`` (plain floats: works on the meta device)."""
    return [max_rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


class DropPath(nn.Module):
    """Stochastic depth; identity in eval mode."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU, channel_first: bool = False):
        super().__init__()
        Linear = Linear2d if channel_first else nn.Linear
        self.fc1 = Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def check_out_indices(out_indices, num_stages: int) -> tuple[int, ...]:
    """Stage indices of a feature backbone, in stage order (the order the maps are returned in)."""
    indices = tuple(sorted({int(i) for i in out_indices}))
    if not indices or indices[0] < 0 or indices[-1] >= num_stages:
        raise ValueError(f"out_indices={tuple(out_indices)} must name one or more of the {num_stages} stages "
                         f"(0..{num_stages - 1})")
    return indices


class FeatureBackbone:
    """What the family feature backbones (timm's ``features_only``) share: the stages in
    ``out_indices``, their ``outnorm{i}`` modules, and the output names ``feat{i}``. The family
    class removes its head first, then calls :meth:`_setup_features`."""

    features_only = True

    def _setup_features(self, out_indices, out_norms: bool, norm_cls) -> None:
        self.out_indices = check_out_indices(out_indices, len(self.layers))
        self.out_norms = bool(out_norms)
        self.num_classes = 0
        if self.out_norms:
            for i in self.out_indices:
                self.add_module(f"outnorm{i}", norm_cls(self.dims[i]))

    @property
    def output_names(self) -> list[str]:
        return [f"feat{i}" for i in self.out_indices]
