"""Reading an architecture off a state dict: the shared helpers the family files' ``infer_config`` use.

Only key names and tensor shapes are read; nothing is built or run.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import torch
import torch.nn as nn

from exporter.checkpoint import CheckpointError


@dataclasses.dataclass
class ArchGuess:
    family: str  # "vmamba" | "medmamba"
    line: str  # "v0" | "v2" | "medmamba"
    depths: list[int]
    dims: list[int]
    d_state: int
    ssm_ratio: float
    dt_rank: int | str  # "auto" when every stage uses ceil(dim / 16)
    num_classes: int
    forward_type: str | None
    norm_layer: str
    downsample_version: str | None
    patchembed_version: str | None
    mlp_ratio: float
    ssm_conv: int
    ssm_conv_bias: bool
    patch_size: int
    in_chans: int
    patch_norm: bool
    kwargs: dict  # constructor keyword arguments that rebuild this architecture
    matched_config: str | None = None  # the released MODEL_CONFIGS name with this architecture, if any
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.matched_config or "custom"

    def build(self, features: dict | None = None) -> nn.Module:
        """The classifier, or with ``features`` ({"out_indices", "out_norms"}) the feature backbone."""
        from exporter.models.registry import MODEL_CONFIGS

        if self.matched_config:
            if features is not None:
                return MODEL_CONFIGS[self.matched_config].build(features_only=True, **features)
            return MODEL_CONFIGS[self.matched_config].build(self.num_classes)
        cls = model_class(self.family)
        return cls.features_cls(**self.kwargs, **features) if features is not None else cls(**self.kwargs)

    def describe(self) -> str:
        return (f"{self.name} ({self.family} {self.line}): depths={self.depths}, dims={self.dims}, "
                f"d_state={self.d_state}, ssm_ratio={self.ssm_ratio:g}, "
                f"forward_type={self.forward_type}, num_classes={self.num_classes}")


def model_class(family: str) -> type:
    from exporter.models import MedMamba, VMamba

    return {"vmamba": VMamba, "medmamba": MedMamba}[family]


def stage_block_counts(keys) -> list[int]:
    blocks: dict[int, int] = {}
    stages: set[int] = set()
    for key in keys:
        m = re.match(r"layers\.(\d+)\.(?:blocks\.(\d+)\.)?", key)
        if m:
            stages.add(int(m.group(1)))
            if m.group(2) is not None:
                blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    if not stages:
        return []
    return [blocks.get(i, 0) for i in range(max(stages) + 1)]


def compact_dims(dims: list[int]) -> int | list[int]:
    """The official configs write dims as one int when they double every stage."""
    return dims[0] if all(d == dims[0] * 2 ** i for i, d in enumerate(dims)) else list(dims)


def shape_of(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    t = sd.get(key)
    return tuple(t.shape) if t is not None else None


def require_shape(sd, key: str, what: str) -> tuple[int, ...]:
    shape = shape_of(sd, key)
    if shape is None:
        raise CheckpointError(
            f"cannot infer the architecture: no {key!r} ({what}); is this a VMamba/MedMamba checkpoint?")
    return shape


def common_value(values: list, what: str, notes: list[str]):
    distinct = list(dict.fromkeys(values))
    if len(distinct) > 1:
        notes.append(f"{what} differs between blocks ({distinct}); the models use one value for all, the first is used")
    return distinct[0]




def ss2d_params(sd, prefix: str, d_model: int) -> dict:
    """d_inner, d_state, dt_rank, conv and gate of one SS2D from its parameter shapes."""
    d_inner, d_state = require_shape(sd, prefix + "A_logs", "SS2D A_logs")
    d_inner //= 4
    dt_rank = require_shape(sd, prefix + "dt_projs_weight", "SS2D dt_projs_weight")[2]
    in_out = require_shape(sd, prefix + "in_proj.weight", "SS2D in_proj")[0]
    conv = shape_of(sd, prefix + "conv2d.weight")
    return dict(
        d_inner=d_inner, d_state=d_state, dt_rank=dt_rank, ratio=d_inner / d_model, gate=in_out == 2 * d_inner,
        conv=conv[-1] if conv else 1, conv_bias=prefix + "conv2d.bias" in sd, out_norm=prefix + "out_norm.weight" in sd,
        in_bias=prefix + "in_proj.bias" in sd,
    )
