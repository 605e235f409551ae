"""MedMamba (YubiaoYue/MedMamba, ``VSSM`` with ``SS_Conv_SSM`` blocks) in export-friendly PyTorch.

Each block splits the channels in two halves: a conv branch (BN-conv3-BN-ReLU-conv3-BN-ReLU-conv1-ReLU)
and an SS2D branch (LayerNorm, SS2D with SiLU z gate), concatenates them, shuffles the channels
(2 groups) and adds the input. Parameter names are the official ones (ln_1, self_attention,
conv33conv33conv11).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn as nn

from exporter.models.arch_inference import ArchGuess, common_value, require_shape, shape_of, ss2d_params, stage_block_counts
from exporter.models.layers import DropPath, FeatureBackbone, drop_path_rates
from exporter.models.registry import ASSETS_DIR, PretrainedCfg, bundled_info, register_model
from exporter.models.ss2d import SS2D


class PatchEmbed2D(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm_layer=None):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x


class PatchMerging2D(nn.Module):
    """MedMamba's merging: odd sizes are cropped to H // 2, W // 2 (not padded as in VMamba)."""

    def __init__(self, dim: int, norm_layer=nn.LayerNorm):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[1], x.shape[2]
        h, w = H // 2, W // 2
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        x = torch.cat([p[:, :h, :w] for p in parts], -1)
        return self.reduction(self.norm(x))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    B, H, W, C = x.shape
    return x.view(B, H, W, groups, C // groups).transpose(3, 4).reshape(B, H, W, C)


class SSConvSSM(nn.Module):
    def __init__(self, hidden_dim: int, drop_path: float, norm_layer, d_state: int):
        super().__init__()
        half = hidden_dim // 2
        self.ln_1 = norm_layer(half)
        self.self_attention = SS2D(d_model=half, d_state=d_state, ssm_ratio=2.0, d_conv=3, conv_bias=True,
                                   bias=False, gate="act")
        self.drop_path = DropPath(drop_path)
        self.conv33conv33conv11 = nn.Sequential(
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(half),
            nn.ReLU(),
            nn.Conv2d(half, half, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(half),
            nn.ReLU(),
            nn.Conv2d(half, half, kernel_size=1, stride=1),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x.chunk(2, dim=-1)
        right = self.drop_path(self.self_attention(self.ln_1(right)))
        left = self.conv33conv33conv11(left.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return channel_shuffle(torch.cat((left, right), dim=-1), groups=2) + x


class MedMambaStage(nn.Module):
    def __init__(self, dim: int, depth: int, drop_path: list[float], norm_layer, d_state: int, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(SSConvSSM(dim, drop_path[i], norm_layer, d_state) for i in range(depth))
        self.downsample = PatchMerging2D(dim, norm_layer) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class MedMamba(nn.Module):
    """The official MedMamba ``VSSM``; accepts its constructor keyword arguments."""

    family = "medmamba"
    line = "medmamba"
    # the official predict.py / train.py transform: resize to size x size (bilinear), mean = std = 0.5
    default_cfg = PretrainedCfg(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0)

    def __init__(
        self,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths=(2, 2, 4, 2),
        dims=(96, 192, 384, 768),
        d_state: int | None = 16,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer=nn.LayerNorm,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        **unused,  # depths_decoder, dims_decoder: accepted for config compatibility, unused by the classifier
    ):
        super().__init__()
        self.config = {k: v for k, v in locals().items() if k not in ("self", "unused", "__class__", "norm_layer")}
        self.num_classes = num_classes
        if isinstance(dims, int):
            dims = [int(dims * 2**i) for i in range(len(depths))]
        self.dims = list(dims)
        self.num_features = dims[-1]
        if d_state is None:
            d_state = math.ceil(dims[0] / 6)
        self.patch_embed = PatchEmbed2D(patch_size, in_chans, dims[0], norm_layer if patch_norm else None)
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList(
            MedMambaStage(dims[i], depths[i], dpr[sum(depths[:i]): sum(depths[: i + 1])], norm_layer, d_state,
                          downsample=i < len(depths) - 1)
            for i in range(len(depths))
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def ssm_layers(self) -> "OrderedDict[str, SS2D]":
        return OrderedDict(
            (f"layers.{i}.blocks.{j}", blk.self_attention)
            for i, stage in enumerate(self.layers)
            for j, blk in enumerate(stage.blocks)
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).permute(0, 3, 1, 2)
        return self.head(torch.flatten(self.avgpool(x), 1))


class MedMambaBackbone(FeatureBackbone, MedMamba):
    """MedMamba as a feature backbone, built like VMamba's official ``Backbone_VSSM`` (MedMamba's own
    repository has none): no head, ``forward`` returns the map after the blocks of each stage in
    ``out_indices`` (before that stage's merging), normalised by ``outnorm{i}`` (LayerNorm, MedMamba's
    norm layer), channels-first (B, C_i, H_i, W_i). ``out_norms=False``: no ``outnorm{i}``."""

    def __init__(self, out_indices=(0, 1, 2, 3), out_norms: bool = True, **kwargs):
        super().__init__(**kwargs)
        del self.head, self.avgpool
        self._setup_features(out_indices, out_norms, nn.LayerNorm)
        self.config.update(out_indices=self.out_indices, out_norms=self.out_norms)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            for blk in stage.blocks:
                x = blk(x)
            if i in self.out_indices:
                out = getattr(self, f"outnorm{i}")(x) if self.out_norms else x
                outs.append(out.permute(0, 3, 1, 2).contiguous())
            if i == self.out_indices[-1]:
                break
            if stage.downsample is not None:
                x = stage.downsample(x)
        return outs


MedMamba.features_cls = MedMambaBackbone


def owns_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is MedMamba's (its blocks' conv branch has no VMamba counterpart)."""
    return any(".conv33conv33conv11." in k for k in state_dict)


def checkpoint_filter_fn(state_dict: dict) -> dict:
    """MedMamba's official key names are this module tree's names: nothing to map."""
    return state_dict


def infer_config(state_dict: Mapping[str, torch.Tensor], require_head: bool = True) -> ArchGuess:
    """Every constructor argument of a MedMamba checkpoint, from key names and tensor shapes only
    (``state_dict`` after :func:`checkpoint_filter_fn`). Without ``head.weight`` num_classes is 0
    (MedMamba's own convention for a headless model), whatever ``require_head`` says."""
    sd = state_dict
    notes: list[str] = []
    depths = stage_block_counts(sd)
    proj = require_shape(sd, "patch_embed.proj.weight", "MedMamba patch embedding")
    dims = []
    for i in range(len(depths)):
        half = shape_of(sd, f"layers.{i}.blocks.0.ln_1.weight")
        dims.append(2 * half[0] if half else (proj[0] if i == 0 else 2 * dims[-1]))
    ssm = [ss2d_params(sd, f"layers.{i}.blocks.{j}.self_attention.", dims[i] // 2)
           for i, depth in enumerate(depths) for j in range(depth)]
    d_state = common_value([s["d_state"] for s in ssm], "d_state", notes) if ssm else 16
    for s in ssm:
        if s["ratio"] != 2.0 or not s["gate"] or s["conv"] != 3:
            notes.append("SS2D differs from MedMamba's fixed expand=2 / z gate / 3x3 conv; the model will not load it")
            break
    head = shape_of(sd, "head.weight")
    num_classes = head[0] if head else 0
    kwargs = dict(patch_size=proj[-1], in_chans=proj[1], num_classes=num_classes, depths=depths, dims=list(dims),
                  d_state=d_state, patch_norm="patch_embed.norm.weight" in sd, drop_path_rate=0.0)
    return ArchGuess("medmamba", "medmamba", depths, dims, d_state, 2.0, "auto", num_classes, None, "ln", None, None,
                     0.0, 3, True, proj[-1], proj[1], "patch_embed.norm.weight" in sd, kwargs, notes=notes)


_MEDMAMBA = dict(patch_size=4, in_chans=3, num_classes=1000, d_state=16)


@register_model(MedMamba)
def medmamba_t():
    """MedMamba-T: [2,2,4,2], dims 96..768, d_state 16 (set num_classes for your dataset)."""
    return dict(_MEDMAMBA, depths=[2, 2, 4, 2], dims=[96, 192, 384, 768])


@register_model(MedMamba)
def medmamba_s():
    """MedMamba-S: [2,2,8,2], dims 96..768, d_state 16."""
    return dict(_MEDMAMBA, depths=[2, 2, 8, 2], dims=[96, 192, 384, 768])


@register_model(MedMamba)
def medmamba_b():
    """MedMamba-B: [2,2,12,2], dims 128..1024, d_state 16."""
    return dict(_MEDMAMBA, depths=[2, 2, 12, 2], dims=[128, 256, 512, 1024])


@register_model(MedMamba, input_size=(3, 32, 32), weights=ASSETS_DIR / "digits_medmamba.safetensors")
def digits_medmamba():
    """Bundled digits sample: small MedMamba, 32x32, 10 classes, TRAINED weights (samples/train_digits.py)."""
    return bundled_info("digits_medmamba")["config"]
