"""SS2D, the 2-D selective-scan module shared by VMamba (v0 and v2 lines) and MedMamba.

Parameter names and shapes are the official ones, so official checkpoints load key for key.
The scan core goes through ``plugins.ops`` (one custom op per contract op), and this module is
where the two compression methods plug in: ``configure(vmeanba=..., quartermap=...)``.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn

from exporter.models.layers import LayerNorm2d, Linear2d, SpatialSoftmax
from plugins import ops
from plugins.contract import FLOAT32_SCAN_INPUTS, QUARTERMAP_DOWN, VMEANBA_VARIANTS

K_DIRECTIONS = 4
OUT_NORMS = ("layernorm", "none", "sigmoid", "softmax")


@dataclasses.dataclass(frozen=True)
class VMeanbaSpec:
    """VMeanba on one block. ``folded`` uses the exact simplification of METHODS.md section 1
    (only valid where out_norm is a channel LayerNorm); otherwise the literal reduced scan runs."""

    variant: str = "all-rows"
    folded: bool = True

    def __post_init__(self):
        if self.variant not in VMEANBA_VARIANTS:
            raise ValueError(f"unknown VMeanba variant {self.variant!r}; choose one of {list(VMEANBA_VARIANTS)}")


@dataclasses.dataclass(frozen=True)
class QuarterMapSpec:
    """QuarterMap on one block: scan only rows/columns i with i % stride < keep (limits: the
    QuarterMapDown contract)."""

    stride: int = QUARTERMAP_DOWN.default("stride")
    keep: int = QUARTERMAP_DOWN.default("keep")

    def __post_init__(self):
        QUARTERMAP_DOWN.check(stride=self.stride, keep=self.keep)


_UNCHANGED = object()


class SS2D(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank="auto",
        act_layer=nn.SiLU,
        d_conv: int = 3,
        conv_bias: bool = True,
        bias: bool = False,
        channel_first: bool = False,
        gate: str | None = "act",  # None: no z branch; "act": y * act(z); "linear": y * z
        out_norm: str = "layernorm",
        out_act: bool = False,
    ):
        super().__init__()
        if gate not in (None, "act", "linear"):
            raise ValueError(f"gate must be None, 'act' or 'linear', got {gate!r}")
        if out_norm not in OUT_NORMS:
            raise ValueError(f"out_norm must be one of {OUT_NORMS}, got {out_norm!r}")
        self.d_model = int(d_model)
        self.d_state = int(d_state)
        self.d_inner = int(ssm_ratio * d_model)
        self.dt_rank = int(math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank)
        self.channel_first = channel_first
        self.gate = gate
        Linear = Linear2d if channel_first else nn.Linear
        D, N, R = self.d_inner, self.d_state, self.dt_rank

        self.in_proj = Linear(self.d_model, D * (2 if gate else 1), bias=bias)
        self.act = act_layer()
        self.conv2d = nn.Conv2d(D, D, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=D, bias=conv_bias) if d_conv > 1 else None
        self.x_proj_weight = nn.Parameter(torch.empty(K_DIRECTIONS, R + 2 * N, D))
        self.dt_projs_weight = nn.Parameter(torch.empty(K_DIRECTIONS, D, R))
        self.dt_projs_bias = nn.Parameter(torch.empty(K_DIRECTIONS, D))
        self.A_logs = nn.Parameter(torch.empty(K_DIRECTIONS * D, N))
        self.Ds = nn.Parameter(torch.empty(K_DIRECTIONS * D))
        if out_norm == "layernorm":
            self.out_norm = LayerNorm2d(D) if channel_first else nn.LayerNorm(D)
        elif out_norm == "none":
            self.out_norm = nn.Identity()
        elif out_norm == "sigmoid":
            self.out_norm = nn.Sigmoid()
        else:
            self.out_norm = SpatialSoftmax(channel_first)
        self.out_act = nn.GELU() if out_act else nn.Identity()
        self.out_proj = Linear(D, self.d_model, bias=bias)
        self._vmeanba: VMeanbaSpec | None = None
        self._quartermap: QuarterMapSpec | None = None
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        """Mamba's initialisation: dt log-uniform in [dt_min, dt_max] (bias = softplus^-1(dt)),
        A = 1..N per row, D = 1."""
        D, N, R = self.d_inner, self.d_state, self.dt_rank
        bound = D ** -0.5
        self.x_proj_weight.uniform_(-bound, bound)
        self.dt_projs_weight.uniform_(-(R ** -0.5), R ** -0.5)
        dt = torch.exp(torch.rand(K_DIRECTIONS, D) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_logs.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(K_DIRECTIONS * D, 1))
        self.Ds.fill_(1.0)

    # ------------------------------------------------------------------ compression hooks
    @property
    def vmeanba(self) -> VMeanbaSpec | None:
        return self._vmeanba

    @property
    def quartermap(self) -> QuarterMapSpec | None:
        return self._quartermap

    @property
    def out_norm_is_channel_layernorm(self) -> bool:
        return isinstance(self.out_norm, nn.LayerNorm)

    def configure(self, vmeanba=_UNCHANGED, quartermap=_UNCHANGED) -> "SS2D":
        """Set (or clear with None) VMeanba and QuarterMap on this block; omitted ones stay."""
        if vmeanba is not _UNCHANGED:
            if vmeanba is not None:
                if not isinstance(vmeanba, VMeanbaSpec):
                    raise TypeError(f"vmeanba must be a VMeanbaSpec or None, got {type(vmeanba).__name__}")
                if vmeanba.folded and not self.out_norm_is_channel_layernorm:
                    raise ValueError(
                        f"cannot fold VMeanba: out_norm is {type(self.out_norm).__name__}, not a channel LayerNorm, "
                        "so the reduced scan does not cancel; use the literal form (folded=False)"
                    )
            self._vmeanba = vmeanba
        if quartermap is not _UNCHANGED:
            if quartermap is not None and not isinstance(quartermap, QuarterMapSpec):
                raise TypeError(f"quartermap must be a QuarterMapSpec or None, got {type(quartermap).__name__}")
            self._quartermap = quartermap
        return self

    def extra_repr(self) -> str:
        parts = [f"d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, gate={self.gate}"]
        if self._vmeanba:
            parts.append(f"vmeanba={self._vmeanba.variant}{'/folded' if self._vmeanba.folded else '/literal'}")
        if self._quartermap:
            parts.append(f"quartermap=stride{self._quartermap.stride}/keep{self._quartermap.keep}")
        return ", ".join(parts)

    # ------------------------------------------------------------------ forward
    def core(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) activated conv output -> merged scan output (B, D, H, W), before out_norm."""
        full = x
        if self._quartermap is not None:
            x = ops.quartermap_down(x, self._quartermap.stride, self._quartermap.keep)
        if self._vmeanba is not None and self._vmeanba.folded:
            # exact: out_norm (a channel LayerNorm) cancels the channel-constant reduced-scan term
            d_sum = self.Ds.float().view(K_DIRECTIONS, -1).sum(0).to(x.dtype)
            y = x * d_sum[None, :, None, None]
        else:
            params = (
                x, self.x_proj_weight.to(x.dtype), self.dt_projs_weight.to(x.dtype),
                self.dt_projs_bias.float(), self.A_logs.float(), self.Ds.float(),
            )
            if self._vmeanba is None:
                y = ops.ss2d_scan(*params)
            else:
                y = ops.vmeanba_scan(*params, variant=VMEANBA_VARIANTS[self._vmeanba.variant])
        if self._quartermap is not None:
            y = ops.quartermap_up(y, full)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(x)
        z = None
        if self.gate:
            x, z = x.chunk(2, dim=1 if self.channel_first else -1)
            if self.gate == "act":
                z = self.act(z)
        if not self.channel_first:
            x = x.permute(0, 3, 1, 2)
        if self.conv2d is not None:
            x = self.conv2d(x)
        x = self.act(x)
        y = self.core(x)
        if not self.channel_first:
            y = y.permute(0, 2, 3, 1)
        y = self.out_act(self.out_norm(y))
        if z is not None:
            y = y * z
        return self.out_proj(y)


def cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model.to(dtype)`` in place, except the SS2D parameters the op contract keeps float32
    whatever the activation type (``FLOAT32_SCAN_INPUTS``: dt_projs_bias, A_logs, Ds)."""
    # keep the float32 values themselves: converting back after the cast would hand the scan
    # float16-rounded A_logs / Ds / dt_projs_bias (a relative error of up to 4.9e-4)
    keep = [(getattr(m, name), getattr(m, name).data.float().clone())
            for m in model.modules() if isinstance(m, SS2D) for name in FLOAT32_SCAN_INPUTS]
    model.to(dtype)
    if dtype != torch.float32:
        for param, data in keep:
            param.data = data
    return model
