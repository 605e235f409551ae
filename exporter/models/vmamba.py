"""VMamba (MzeroMiko/VMamba, classification VSSM), both released lines, in export-friendly PyTorch.

- v0 line (``forward_type="v0"``): d_state 16, ssm_ratio 2, z gate, LayerNorm, patch-embed v1,
  PatchMerging downsample (v1), no MLP.
- v2 line (``forward_type="v05_noz"``): d_state 1, no gate, channel-first LayerNorm (``ln2d``),
  patch-embed v2, conv downsample v3, MLP.

The module tree and parameter names are the official ones; ``checkpoint_filter_fn`` maps the
legacy v0 names. Only the cross-2D scan (the released ``cross2d`` mode) is implemented.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from exporter.checkpoint import CheckpointError
from exporter.models.arch_inference import (ArchGuess, common_value, compact_dims, require_shape, shape_of,
                                            ss2d_params, stage_block_counts)
from exporter.models.layers import (DropPath, FeatureBackbone, LayerNorm2d, Linear2d, Mlp, Permute,
                                    drop_path_rates)
from exporter.models.registry import ASSETS_DIR, PretrainedCfg, bundled_info, register_model
from exporter.models.ss2d import SS2D

_NORM_LAYERS = {"ln": nn.LayerNorm, "ln2d": LayerNorm2d, "bn": nn.BatchNorm2d}
_ACT_LAYERS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
# forward types that compute the cross-2D SS2D of the v2 line (they differ only in CUDA backend)
_V2_FORWARD_TYPES = {"v01", "v02", "v03", "v04", "v05", "v2", "v3"}
_OUT_NORM_POSTFIXES = {"_onnone": "none", "_onsigmoid": "sigmoid", "_onsoftmax": "softmax"}
_FLAG_POSTFIXES = ("_no32", "_oact", "_nozact", "_noz")


def parse_forward_type(forward_type: str) -> dict:
    """Split an official forward_type such as ``v05_noz`` into line and SS2D options."""
    base, flags, out_norm = forward_type, set(), "layernorm"
    changed = True
    while changed:
        changed = False
        for postfix in _FLAG_POSTFIXES:
            if base.endswith(postfix):
                base, changed = base[: -len(postfix)], True
                flags.add(postfix)
        for postfix, kind in _OUT_NORM_POSTFIXES.items():
            if base.endswith(postfix):
                base, changed, out_norm = base[: -len(postfix)], True, kind
    if base in ("v0", "v0seq"):
        return {"line": "v0", "gate": "act", "out_norm": out_norm, "out_act": False}
    if base in _V2_FORWARD_TYPES:
        gate = None if "_noz" in flags else ("linear" if "_nozact" in flags else "act")
        return {"line": "v2", "gate": gate, "out_norm": out_norm, "out_act": "_oact" in flags}
    raise NotImplementedError(
        f"forward_type {forward_type!r} is not supported: only the cross-2D scan of the released checkpoints "
        f"(v0 and v01..v05/v2/v3 with _noz/_nozact/_oact/_no32/_onnone/_onsigmoid/_onsoftmax postfixes)"
    )


class PatchMerging2D(nn.Module):
    """Downsample v1: concatenate each 2x2 neighbourhood (zero-padding odd sizes), norm, reduce."""

    def __init__(self, dim: int, out_dim: int, norm_layer=nn.LayerNorm, channel_first: bool = False):
        super().__init__()
        self.channel_first = channel_first
        self.reduction = (Linear2d if channel_first else nn.Linear)(4 * dim, out_dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_first:
            H, W = x.shape[-2:]
            x = F.pad(x, (0, W % 2, 0, H % 2))
            x = torch.cat([x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]], 1)
        else:
            H, W = x.shape[-3:-1]
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x))


class VSSBlock(nn.Module):
    def __init__(self, hidden_dim: int, drop_path: float, norm_layer, channel_first: bool, ssm_kwargs: dict,
                 mlp_ratio: float, mlp_act_layer, post_norm: bool = False):
        super().__init__()
        self.ssm_branch = ssm_kwargs["ssm_ratio"] > 0
        self.mlp_branch = mlp_ratio > 0
        self.post_norm = post_norm
        if self.ssm_branch:
            self.norm = norm_layer(hidden_dim)
            self.op = SS2D(d_model=hidden_dim, channel_first=channel_first, **ssm_kwargs)
        self.drop_path = DropPath(drop_path)
        if self.mlp_branch:
            self.norm2 = norm_layer(hidden_dim)
            self.mlp = Mlp(hidden_dim, int(hidden_dim * mlp_ratio), mlp_act_layer, channel_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ssm_branch:
            x = x + self.drop_path(self.norm(self.op(x)) if self.post_norm else self.op(self.norm(x)))
        if self.mlp_branch:
            x = x + self.drop_path(self.norm2(self.mlp(x)) if self.post_norm else self.mlp(self.norm2(x)))
        return x


class VMamba(nn.Module):
    """The official ``VSSM`` classifier; accepts the official constructor keyword arguments."""

    family = "vmamba"
    # the official test transform: resize 256/224 * size (bicubic), centre crop, ImageNet mean/std
    default_cfg = PretrainedCfg()

    def __init__(
        self,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths=(2, 2, 9, 2),
        dims=(96, 192, 384, 768),
        ssm_d_state: int = 16,
        ssm_ratio: float = 2.0,
        ssm_dt_rank="auto",
        ssm_act_layer: str = "silu",
        ssm_conv: int = 3,
        ssm_conv_bias: bool = True,
        ssm_drop_rate: float = 0.0,
        ssm_init: str = "v0",
        forward_type: str = "v2",
        mlp_ratio: float = 4.0,
        mlp_act_layer: str = "gelu",
        mlp_drop_rate: float = 0.0,
        gmlp: bool = False,
        drop_path_rate: float = 0.1,
        patch_norm: bool = True,
        norm_layer: str = "LN",
        downsample_version: str = "v2",
        patchembed_version: str = "v1",
        use_checkpoint: bool = False,
        posembed: bool = False,
        imgsize: int = 224,
        post_norm: bool = False,
        **unused,
    ):
        super().__init__()
        if gmlp or posembed:
            raise NotImplementedError("gmlp and posembed are not used by any released checkpoint and are not supported")
        self.config = {k: v for k, v in locals().items() if k not in ("self", "unused", "__class__")}
        self.num_classes = num_classes
        ft = parse_forward_type(forward_type)
        self.line = ft["line"]
        self.channel_first = norm_layer.lower() in ("bn", "ln2d")
        if self.line == "v0" and self.channel_first:
            raise ValueError("the v0 line (forward_type 'v0') is channel-last: use norm_layer='ln'")
        if isinstance(dims, int):
            dims = [int(dims * 2**i) for i in range(len(depths))]
        self.dims = list(dims)
        self.num_features = dims[-1]
        norm = _NORM_LAYERS[norm_layer.lower()]
        cf = self.channel_first
        dpr = drop_path_rates(drop_path_rate, sum(depths))

        if self.line == "v0":  # SS2Dv0 fixes these regardless of the constructor arguments
            ssm_kwargs = dict(d_state=ssm_d_state, ssm_ratio=ssm_ratio, dt_rank=ssm_dt_rank, act_layer=nn.SiLU,
                              d_conv=3, conv_bias=True, gate="act", out_norm=ft["out_norm"])
        else:
            ssm_kwargs = dict(d_state=ssm_d_state, ssm_ratio=ssm_ratio, dt_rank=ssm_dt_rank,
                              act_layer=_ACT_LAYERS[ssm_act_layer.lower()], d_conv=ssm_conv, conv_bias=ssm_conv_bias,
                              gate=ft["gate"], out_norm=ft["out_norm"], out_act=ft["out_act"])

        self.patch_embed = self._patch_embed(patchembed_version, in_chans, dims[0], patch_size, patch_norm, norm, cf)
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            blocks = [
                VSSBlock(dims[i], dpr[sum(depths[:i]) + j], norm, cf, ssm_kwargs, mlp_ratio,
                         _ACT_LAYERS[mlp_act_layer.lower()], post_norm)
                for j in range(depth)
            ]
            last = i == len(depths) - 1
            downsample = nn.Identity() if last else self._downsample(downsample_version, dims[i], dims[i + 1], norm, cf)
            self.layers.append(nn.Sequential(OrderedDict(blocks=nn.Sequential(*blocks), downsample=downsample)))
        self.classifier = nn.Sequential(OrderedDict(
            norm=norm(self.num_features),
            permute=nn.Identity() if cf else Permute(0, 3, 1, 2),
            avgpool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1),
            head=nn.Linear(self.num_features, num_classes),
        ))
        self.apply(_init_weights)

    @staticmethod
    def _patch_embed(version, in_chans, dim, patch_size, patch_norm, norm, cf) -> nn.Sequential:
        to_last = nn.Identity() if cf else Permute(0, 2, 3, 1)
        if version == "v1":
            return nn.Sequential(
                nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, bias=True),
                to_last,
                norm(dim) if patch_norm else nn.Identity(),
            )
        if version == "v2":
            stride = patch_size // 2
            k = stride + 1
            plain = cf or not patch_norm
            return nn.Sequential(
                nn.Conv2d(in_chans, dim // 2, kernel_size=k, stride=stride, padding=1),
                nn.Identity() if plain else Permute(0, 2, 3, 1),
                norm(dim // 2) if patch_norm else nn.Identity(),
                nn.Identity() if plain else Permute(0, 3, 1, 2),
                nn.GELU(),
                nn.Conv2d(dim // 2, dim, kernel_size=k, stride=stride, padding=1),
                nn.Identity() if cf else Permute(0, 2, 3, 1),
                norm(dim) if patch_norm else nn.Identity(),
            )
        raise ValueError(f"unknown patchembed_version {version!r} (v1 or v2)")

    @staticmethod
    def _downsample(version, dim, out_dim, norm, cf) -> nn.Module:
        if version == "v1":
            return PatchMerging2D(dim, out_dim, norm, cf)
        if version in ("v2", "v3"):
            conv = (nn.Conv2d(dim, out_dim, kernel_size=2, stride=2) if version == "v2"
                    else nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1))
            return nn.Sequential(
                nn.Identity() if cf else Permute(0, 3, 1, 2),
                conv,
                nn.Identity() if cf else Permute(0, 2, 3, 1),
                norm(out_dim),
            )
        if version == "none":
            return nn.Identity()
        raise ValueError(f"unknown downsample_version {version!r} (v1, v2, v3 or none)")

    def ssm_layers(self) -> "OrderedDict[str, SS2D]":
        """The SS2D modules in forward order, named as VMeanba/QuarterMap layer specs name them."""
        return OrderedDict(
            (f"layers.{i}.blocks.{j}", blk.op)
            for i, layer in enumerate(self.layers)
            for j, blk in enumerate(layer.blocks)
            if blk.ssm_branch
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


class VMambaBackbone(FeatureBackbone, VMamba):
    """The official ``Backbone_VSSM`` (what the UperNet / Mask R-CNN configs wrap as ``MM_VSSM``): the
    VSSM without its classifier; ``forward`` returns the maps after the blocks of each stage in
    ``out_indices`` (before that stage's downsample), normalised by ``outnorm{i}`` (the config's
    norm layer: LayerNorm on the v0 line, LayerNorm2d on the v2 line), channels-first (B, C_i, H_i, W_i).

    ``out_norms=False`` leaves out the ``outnorm{i}`` modules: the backbone of a classification
    checkpoint, whose weights have none. Later stages than the last out index are kept (their
    weights are in the checkpoints) but not run."""

    def __init__(self, out_indices=(0, 1, 2, 3), out_norms: bool = True, **kwargs):
        super().__init__(**{**kwargs, "num_classes": 1})  # the classifier is built, then removed
        del self.classifier
        self._setup_features(out_indices, out_norms, _NORM_LAYERS[self.config["norm_layer"].lower()])
        self.config.update(num_classes=0, out_indices=self.out_indices, out_norms=self.out_norms)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            o = layer.blocks(x)
            if i in self.out_indices:
                out = getattr(self, f"outnorm{i}")(o) if self.out_norms else o
                outs.append((out if self.channel_first else out.permute(0, 3, 1, 2)).contiguous())
            if i == self.out_indices[-1]:
                break
            x = layer.downsample(o)
        return outs


VMamba.features_cls = VMambaBackbone


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


_LEGACY_PREFIXES = (("patch_embed.proj.", "patch_embed.0."), ("patch_embed.norm.", "patch_embed.2."),
                    ("norm.", "classifier.norm."), ("head.", "classifier.head."))


def checkpoint_filter_fn(state_dict: dict) -> dict:
    """Map legacy VMamba v0 key names onto this module tree (what the official
    ``VSSM._load_from_state_dict`` does): patch_embed.proj/norm, ln_1 -> norm,
    self_attention -> op, top-level norm/head -> classifier.norm/head."""
    out = {}
    for key, value in state_dict.items():
        for old, new in _LEGACY_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if key.startswith("layers."):
            key = key.replace(".ln_1.", ".norm.").replace(".self_attention.", ".op.")
        out[key] = value
    return out


def owns_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict looks like VMamba's (either line, legacy names included)."""
    return any(k.startswith(("layers.", "patch_embed.")) for k in state_dict)


def infer_config(state_dict: Mapping[str, torch.Tensor], require_head: bool = True) -> ArchGuess:
    """Every constructor argument of a VMamba checkpoint, from key names and tensor shapes only.
    ``state_dict`` has this module tree's names (after :func:`checkpoint_filter_fn`). Settings
    without parameters cannot be seen; the released value is assumed and recorded in ``notes``.
    ``require_head=False``: a backbone's weights (no classifier) give ``num_classes=0``."""
    sd = state_dict
    notes: list[str] = []
    depths = stage_block_counts(sd)
    if not depths:
        raise CheckpointError(
            "cannot infer the architecture: no 'layers.N.' keys; is this a VMamba/MedMamba checkpoint?")
    if "pos_embed" in sd:
        notes.append("pos_embed found: posembed models are not supported")

    pe0 = require_shape(sd, "patch_embed.0.weight", "patch-embedding convolution")
    in_chans = pe0[1]
    if "patch_embed.5.weight" in sd:
        patchembed_version, patch_size = "v2", 2 * (pe0[-1] - 1)
        dim0 = shape_of(sd, "patch_embed.5.weight")[0]
        patch_norm = "patch_embed.7.weight" in sd
    else:
        patchembed_version, patch_size, dim0 = "v1", pe0[-1], pe0[0]
        patch_norm = "patch_embed.2.weight" in sd

    dims = []
    for i in range(len(depths)):
        norm = shape_of(sd, f"layers.{i}.blocks.0.norm.weight") or shape_of(sd, f"layers.{i}.blocks.0.norm2.weight")
        if norm is not None:
            dims.append(norm[0])
        elif i == 0:
            dims.append(dim0)
        else:
            dims.append(dims[-1] * 2)
            notes.append(f"stage {i} has no blocks; its width is assumed to double")

    if shape_of(sd, "layers.0.downsample.reduction.weight"):
        downsample_version = "v1"
    elif shape_of(sd, "layers.0.downsample.1.weight"):
        downsample_version = "v2" if shape_of(sd, "layers.0.downsample.1.weight")[-1] == 2 else "v3"
    else:
        downsample_version = "none"

    batchnorm = any(k.endswith("running_mean") for k in sd if k.startswith(("layers.", "patch_embed.")))
    ssm = [
        ss2d_params(sd, f"layers.{i}.blocks.{j}.op.", dims[i])
        for i, depth in enumerate(depths) for j in range(depth) if f"layers.{i}.blocks.{j}.op.A_logs" in sd
    ]
    mlp_ratios = [
        shape_of(sd, f"layers.{i}.blocks.{j}.mlp.fc1.weight")[0] / dims[i]
        for i, depth in enumerate(depths) for j in range(depth) if f"layers.{i}.blocks.{j}.mlp.fc1.weight" in sd
    ]
    mlp_ratio = float(common_value(mlp_ratios, "mlp_ratio", notes)) if mlp_ratios else 0.0
    if ssm:
        d_state = common_value([s["d_state"] for s in ssm], "d_state", notes)
        ssm_ratio = float(common_value([s["ratio"] for s in ssm], "ssm_ratio", notes))
        gate = common_value([s["gate"] for s in ssm], "z gate", notes)
        ssm_conv = common_value([s["conv"] for s in ssm], "ssm_conv", notes)
        ssm_conv_bias = common_value([s["conv_bias"] for s in ssm], "ssm_conv_bias", notes)
        out_norm = common_value([s["out_norm"] for s in ssm], "out_norm", notes)
        if any(s["in_bias"] for s in ssm):
            notes.append("SS2D in_proj has a bias: no released VMamba has one; the model will not load it")
        auto = all(
            s["dt_rank"] == math.ceil(dims[i] / 16)
            for s, i in zip(ssm, [i for i, d in enumerate(depths) for j in range(d)
                                  if f"layers.{i}.blocks.{j}.op.A_logs" in sd])
        )
        dt_rank = "auto" if auto else common_value([s["dt_rank"] for s in ssm], "dt_rank", notes)
    else:
        d_state, ssm_ratio, gate, ssm_conv, ssm_conv_bias, out_norm, dt_rank = 1, 0.0, False, 3, False, True, "auto"

    v0_line = (gate and not batchnorm and patchembed_version == "v1" and downsample_version == "v1"
               and ssm_conv == 3 and ssm_conv_bias)
    if v0_line:
        line, forward_type, norm_layer = "v0", "v0", "ln"
    else:
        line = "v2"
        forward_type = "v05" if gate else "v05_noz"
        norm_layer = "bn" if batchnorm else "ln2d"  # ln would have the same parameters and the same arithmetic
    if not out_norm:
        forward_type += "_onnone"
        notes.append("SS2D has no out_norm parameters: 'none' assumed (sigmoid/softmax ablations look the same)")

    head = shape_of(sd, "classifier.head.weight")
    if head is None and require_head:
        raise CheckpointError("cannot infer the architecture: no classifier.head.weight (VMamba classifier head); "
                              "a backbone checkpoint (segmentation / detection) loads with features_only=True")
    num_classes = head[0] if head is not None else 0
    kwargs = dict(
        patch_size=patch_size, in_chans=in_chans, num_classes=num_classes, depths=depths, dims=compact_dims(dims),
        ssm_d_state=d_state, ssm_ratio=ssm_ratio, ssm_dt_rank=dt_rank, ssm_conv=ssm_conv, ssm_conv_bias=ssm_conv_bias,
        forward_type=forward_type, mlp_ratio=mlp_ratio, patch_norm=patch_norm, norm_layer=norm_layer,
        downsample_version=downsample_version, patchembed_version=patchembed_version, drop_path_rate=0.0,
    )
    return ArchGuess("vmamba", line, depths, dims, d_state, ssm_ratio, dt_rank, num_classes, forward_type, norm_layer,
                     downsample_version, patchembed_version, mlp_ratio, ssm_conv, ssm_conv_bias, patch_size, in_chans,
                     patch_norm, kwargs, notes=notes)


# --------------------------------------------------------------------------- released configs
_V0_LINE = dict(patch_size=4, in_chans=3, num_classes=1000, ssm_d_state=16, ssm_ratio=2.0, ssm_dt_rank="auto",
                ssm_act_layer="silu", ssm_conv=3, ssm_conv_bias=True, ssm_init="v0", forward_type="v0",
                mlp_ratio=0.0, mlp_act_layer="gelu", patch_norm=True, norm_layer="ln",
                downsample_version="v1", patchembed_version="v1")
_V2_LINE = dict(patch_size=4, in_chans=3, num_classes=1000, ssm_d_state=1, ssm_dt_rank="auto",
                ssm_act_layer="silu", ssm_conv=3, ssm_conv_bias=False, ssm_init="v0", forward_type="v05_noz",
                mlp_ratio=4.0, mlp_act_layer="gelu", patch_norm=True, norm_layer="ln2d",
                downsample_version="v3", patchembed_version="v2")


@register_model(VMamba)
def vanilla_vmamba_tiny():
    """VMamba-T v0 (vssm_tiny_v0): [2,2,9,2], dims 96, d_state 16."""
    return dict(_V0_LINE, depths=[2, 2, 9, 2], dims=96, drop_path_rate=0.2)


@register_model(VMamba)
def vanilla_vmamba_small():
    """VMamba-S v0: [2,2,27,2], dims 96, d_state 16."""
    return dict(_V0_LINE, depths=[2, 2, 27, 2], dims=96, drop_path_rate=0.3)


@register_model(VMamba)
def vanilla_vmamba_base():
    """VMamba-B v0: [2,2,27,2], dims 128, d_state 16."""
    return dict(_V0_LINE, depths=[2, 2, 27, 2], dims=128, drop_path_rate=0.6)


@register_model(VMamba)
def vmamba_tiny_s2l5():
    """VMamba-T v2 s2l5: [2,2,5,2], dims 96, ssm_ratio 2, d_state 1."""
    return dict(_V2_LINE, depths=[2, 2, 5, 2], dims=96, ssm_ratio=2.0, drop_path_rate=0.2)


@register_model(VMamba)
def vmamba_small_s2l15():
    """VMamba-S v2 s2l15 (vssm1_small_0229): [2,2,15,2], dims 96, ssm_ratio 2, d_state 1."""
    return dict(_V2_LINE, depths=[2, 2, 15, 2], dims=96, ssm_ratio=2.0, drop_path_rate=0.3)


@register_model(VMamba)
def vmamba_base_s2l15():
    """VMamba-B v2 s2l15 (vssm1_base_0229): [2,2,15,2], dims 128, ssm_ratio 2, d_state 1."""
    return dict(_V2_LINE, depths=[2, 2, 15, 2], dims=128, ssm_ratio=2.0, drop_path_rate=0.6)


@register_model(VMamba)
def vmamba_tiny_s1l8():
    """VMamba-T v2 s1l8 (vssm1_tiny_0230s): [2,2,8,2], dims 96, ssm_ratio 1, d_state 1."""
    return dict(_V2_LINE, depths=[2, 2, 8, 2], dims=96, ssm_ratio=1.0, drop_path_rate=0.2)


@register_model(VMamba)
def vmamba_small_s1l20():
    """VMamba-S v2 s1l20 (vssm1_small_0229s): [2,2,20,2], dims 96, ssm_ratio 1, d_state 1."""
    return dict(_V2_LINE, depths=[2, 2, 20, 2], dims=96, ssm_ratio=1.0, drop_path_rate=0.3)


@register_model(VMamba)
def vmamba_base_s1l20():
    """VMamba-B v2 s1l20 (vssm1_base_0229s): [2,2,20,2], dims 128, ssm_ratio 1, d_state 1."""
    return dict(_V2_LINE, depths=[2, 2, 20, 2], dims=128, ssm_ratio=1.0, drop_path_rate=0.5)


@register_model(VMamba, input_size=(3, 32, 32), weights=ASSETS_DIR / "digits_vmamba.safetensors")
def digits_vmamba():
    """Bundled digits sample: small VMamba v2 line, 32x32, 10 classes, TRAINED weights (samples/train_digits.py)."""
    return bundled_info("digits_vmamba")["config"]
