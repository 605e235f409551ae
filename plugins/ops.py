"""The custom ops as PyTorch sees them.

Each contract op is a ``torch.library`` custom op (``torch.ops.vmamba.*``) whose default
implementation is the reference in ``plugins/reference.py`` (any device); ``plugins/kernels.py``
registers the CUDA kernels for CUDA tensors when the kernel library is available.

Models call the plain functions at the bottom of this file. They pick one of three paths:
- ONNX export: one custom node in domain ``vmamba.trt`` (contract name, version and attributes);
- autograd needed (training the sample models): the differentiable reference;
- otherwise: the custom op, so CUDA tensors reach the fast kernels.
"""
from __future__ import annotations

import torch

from plugins import reference as ref
from plugins.contract import QUARTERMAP_DOWN, QUARTERMAP_UP, SS2D_SCAN, VMEANBA_SCAN, OpContract

Tensor = torch.Tensor


# --------------------------------------------------------------------------- torch.library ops
@torch.library.custom_op("vmamba::ss2d_scan", mutates_args=())
def _ss2d_scan_op(x: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor, dt_projs_bias: Tensor,
                  A_logs: Tensor, Ds: Tensor) -> Tensor:
    return ref.ss2d_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)


@_ss2d_scan_op.register_fake
def _(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds):
    return torch.empty_like(x)


@torch.library.custom_op("vmamba::vmeanba_scan", mutates_args=())
def _vmeanba_scan_op(x: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor, dt_projs_bias: Tensor,
                     A_logs: Tensor, Ds: Tensor, variant: int) -> Tensor:
    return ref.vmeanba_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, variant)


@_vmeanba_scan_op.register_fake
def _(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, variant):
    return torch.empty_like(x)


@torch.library.custom_op("vmamba::quartermap_down", mutates_args=())
def _quartermap_down_op(x: Tensor, stride: int, keep: int) -> Tensor:
    return ref.quartermap_down(x, stride, keep).contiguous()


@_quartermap_down_op.register_fake
def _(x, stride, keep):
    B, C, H, W = x.shape
    return x.new_empty((B, C, ref.kept_size(H, stride, keep), ref.kept_size(W, stride, keep)))


@torch.library.custom_op("vmamba::quartermap_up", mutates_args=())
def _quartermap_up_op(y: Tensor, like: Tensor) -> Tensor:
    return ref.quartermap_up(y, like).contiguous()


@_quartermap_up_op.register_fake
def _(y, like):
    return y.new_empty((y.shape[0], y.shape[1], like.shape[2], like.shape[3]))


# --------------------------------------------------------------------------- dispatch
def _export_node(op: OpContract, inputs, shape, dtype, **attrs) -> Tensor:
    return torch.onnx.ops.symbolic(
        f"{op.domain}::{op.name}", tuple(inputs), attrs=op.node_attributes(**attrs),
        dtype=dtype, shape=tuple(shape), version=int(op.version),
    )


def _needs_autograd(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def ss2d_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds) -> Tensor:
    """The full SS2D core (contract op SS2DScan)."""
    args = (x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)
    if torch.onnx.is_in_onnx_export():
        return _export_node(SS2D_SCAN, args, x.shape, x.dtype)
    if _needs_autograd(*args):
        return ref.ss2d_scan(*args)
    return torch.ops.vmamba.ss2d_scan(*args)


def vmeanba_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, variant: int = 0) -> Tensor:
    """The literal VMeanba reduced core (contract op VMeanbaScan)."""
    args = (x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)
    if torch.onnx.is_in_onnx_export():
        return _export_node(VMEANBA_SCAN, args, x.shape, x.dtype, variant=int(variant))
    if _needs_autograd(*args):
        return ref.vmeanba_scan(*args, variant)
    return torch.ops.vmamba.vmeanba_scan(*args, int(variant))


def quartermap_down(x: Tensor, stride: int = QUARTERMAP_DOWN.default("stride"),
                    keep: int = QUARTERMAP_DOWN.default("keep")) -> Tensor:
    """Keep the first ``keep`` of every ``stride`` rows and columns (contract op QuarterMapDown)."""
    if torch.onnx.is_in_onnx_export():
        B, C, H, W = x.shape
        shape = (B, C, ref.kept_size(H, stride, keep), ref.kept_size(W, stride, keep))
        return _export_node(QUARTERMAP_DOWN, (x,), shape, x.dtype, stride=int(stride), keep=int(keep))
    if _needs_autograd(x):
        return ref.quartermap_down(x, stride, keep)
    return torch.ops.vmamba.quartermap_down(x, int(stride), int(keep))


def quartermap_up(y: Tensor, like: Tensor) -> Tensor:
    """Nearest-neighbour restore of ``y`` to the spatial size of ``like`` (contract op QuarterMapUp)."""
    if torch.onnx.is_in_onnx_export():
        shape = (y.shape[0], y.shape[1], like.shape[2], like.shape[3])
        return _export_node(QUARTERMAP_UP, (y, like), shape, y.dtype)
    if _needs_autograd(y):
        return ref.quartermap_up(y, like)
    return torch.ops.vmamba.quartermap_up(y, like)
