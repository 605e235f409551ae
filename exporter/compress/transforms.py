"""VMeanba and QuarterMap as model transforms: each returns a NEW model (a deep copy) whose chosen
SS2D blocks are configured (``SS2D.configure``); the input model is never modified.

Semantics: docs (shared) METHODS.md sections 1-3; the SS2D module applies them in ``core``.
"""
from __future__ import annotations

import copy

import torch.nn as nn

from exporter.compress.layer_specs import AutoLayers, parse_layer_spec
from exporter.models.ss2d import QuarterMapSpec, VMeanbaSpec
from plugins.contract import QUARTERMAP_DOWN, VMEANBA_VARIANTS


def _resolve(model: nn.Module, layers, method: str):
    resolved = parse_layer_spec(layers, model, method=method)
    return resolved


def apply_vmeanba(model: nn.Module, layers, variant: str = "all-rows", folded: bool | None = None, *,
                  calibration=None, **select_kwargs) -> nn.Module:
    """A copy of ``model`` with VMeanba on ``layers`` (any spec :func:`parse_layer_spec` accepts).

    variant: "all-rows" (the authors' semantics, default), "per-direction" or "pre-discretisation".
    folded: None folds where exact (out_norm is a channel LayerNorm) and runs the literal reduced
    scan elsewhere; True folds everywhere (ValueError naming the block if one cannot be folded);
    False runs the literal reduced scan (plugins.ops.vmeanba_scan) everywhere.
    For ``auto`` / ``k=N`` pass ``calibration`` (and optionally select_vmeanba_layers' keyword
    arguments). To keep the selection result, call :func:`select_vmeanba_layers` yourself and
    pass its ``layers`` here.
    QuarterMap settings already on a block are kept (both may act on one block).
    """
    if variant not in VMEANBA_VARIANTS:
        raise ValueError(f"unknown VMeanba variant {variant!r}; choose one of {list(VMEANBA_VARIANTS)}")
    if folded not in (None, True, False):
        raise ValueError(f"folded must be None, True or False, got {folded!r}")
    resolved = _resolve(model, layers, "vmeanba")
    selection = None
    if isinstance(resolved, AutoLayers):
        if calibration is None:
            raise ValueError(f"layer spec {resolved} chooses layers on calibration data: pass calibration=... "
                             "(see exporter.compress.load_calibration) or give explicit layers")
        from exporter.compress.selection import select_vmeanba_layers

        selection = select_vmeanba_layers(model, calibration, k=resolved.k, variant=variant, **select_kwargs)
        resolved = list(selection.layers)
    elif select_kwargs or calibration is not None:
        unexpected = sorted(select_kwargs) + (["calibration"] if calibration is not None else [])
        raise ValueError(f"{', '.join(unexpected)} only apply to the 'auto' / 'k=N' layer specs")
    new = copy.deepcopy(model)
    blocks = new.ssm_layers()
    for name in resolved:
        ss2d = blocks[name]
        fold = ss2d.out_norm_is_channel_layernorm if folded is None else folded
        try:
            ss2d.configure(vmeanba=VMeanbaSpec(variant=variant, folded=fold))
        except ValueError as exc:
            raise ValueError(f"VMeanba on {name}: {exc}") from exc
    return new


def apply_quartermap(model: nn.Module, layers="every:3", stride: int = QUARTERMAP_DOWN.default("stride"),
                     keep: int = QUARTERMAP_DOWN.default("keep")) -> nn.Module:
    """A copy of ``model`` with QuarterMap on ``layers``: each block scans only the rows/columns
    i with i % stride < keep (default: the top-left pixel of every 2x2 block) and restores the
    full map by nearest-neighbour upsampling before out_norm. ``auto`` means ``every:3``, the
    authors' default block choice. VMeanba settings already on a block are kept.
    keep == stride keeps every row and column, so it is refused (it would only add no-op nodes)."""
    spec = QuarterMapSpec(stride=stride, keep=keep)  # validates stride/keep against the contract
    if keep == stride:
        raise ValueError(f"QuarterMap with keep == stride ({keep}) keeps every row and column and changes nothing; "
                         "use keep < stride (e.g. stride 2, keep 1)")
    resolved = _resolve(model, layers, "quartermap")
    new = copy.deepcopy(model)
    blocks = new.ssm_layers()
    for name in resolved:
        blocks[name].configure(quartermap=spec)
    return new


def describe_compression(model: nn.Module) -> dict:
    """Which blocks carry which method: {"vmeanba": {name: {variant, folded}}, "quartermap": {name: {stride, keep}}}."""
    out: dict = {"vmeanba": {}, "quartermap": {}}
    for name, ss2d in model.ssm_layers().items():
        if ss2d.vmeanba is not None:
            out["vmeanba"][name] = {"variant": ss2d.vmeanba.variant, "folded": ss2d.vmeanba.folded}
        if ss2d.quartermap is not None:
            out["quartermap"][name] = {"stride": ss2d.quartermap.stride, "keep": ss2d.quartermap.keep}
    return out
