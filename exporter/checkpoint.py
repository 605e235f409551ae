"""Safe checkpoint reading, architecture inference from keys and shapes, and ``load_model``.

Security: a checkpoint is never unpickled with plain ``pickle``. ``torch.load(weights_only=True)``
runs first; if it refuses only harmless configuration containers (a yacs ``CfgNode``, an
``argparse.Namespace``, numpy scalars, as official training scripts store next to the weights),
it runs again with exactly those names allowlisted, mapped onto inert stand-ins. Any other global
(``os.system``, ``builtins.eval``, a pickled ``nn.Module``, ...) is refused with
:class:`CheckpointError` naming it, so nothing the file asks for is ever imported or called.
"""
from __future__ import annotations

import _compat_pickle
import dataclasses
import logging
import math
import os
import pickle
import pickletools
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

logger = logging.getLogger("exporter")

# keys of a training container that hold the weights, in order of preference ("model" before the EMA copy:
# the official VMamba / Swin-style scripts evaluate and release "model")
CONTAINER_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")
# wrappers that prefix every key: DataParallel/DDP, detection/segmentation wrappers, torch.compile
WRAPPER_PREFIXES = ("module.", "backbone.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, is not trusted, or does not fit the requested model."""


# --------------------------------------------------------------------------- harmless stand-ins
class ConfigNode(dict):
    """What a pickled ``yacs.config.CfgNode`` becomes: a plain nested dict with attribute access for reading."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class ConfigNamespace:
    """What a pickled ``argparse.Namespace`` becomes: an inert attribute bag."""

    def __repr__(self) -> str:
        return f"ConfigNamespace({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _harmless_globals() -> dict[str, Any]:
    """Pickle global name -> inert object put in its place. Nothing here can run code from the file.

    yacs ``CfgNode`` is a dict subclass pickled as NEWOBJ + SETITEMS + BUILD(attribute dict); the
    weights-only unpickler only accepts SETITEMS into an exact dict/OrderedDict, so the name is mapped
    to ``OrderedDict`` (which also takes BUILD's attributes) and converted to :class:`ConfigNode` after.
    """
    names: dict[str, Any] = {"yacs.config.CfgNode": OrderedDict, "argparse.Namespace": ConfigNamespace}
    try:  # numpy scalars (e.g. a best-accuracy value); numpy is optional
        import numpy as np

        try:
            from numpy._core.multiarray import scalar as np_scalar
        except ImportError:  # numpy 1.x
            from numpy.core.multiarray import scalar as np_scalar
        names.update({"numpy._core.multiarray.scalar": np_scalar, "numpy.core.multiarray.scalar": np_scalar,
                      "numpy.dtype": np.dtype})
        for code in "?bhilqBHILQefdgFDG":
            dtype_cls = type(np.dtype(code))
            names[f"{dtype_cls.__module__}.{dtype_cls.__name__}"] = dtype_cls
    except ImportError:
        pass
    return names


_GLOBAL_IN_ERROR = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


def _refused_globals(error: Exception) -> list[str]:
    return list(dict.fromkeys(_GLOBAL_IN_ERROR.findall(str(error))))


def _to_config_node(obj: Any) -> Any:
    if type(obj) is OrderedDict and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        return ConfigNode((k, _to_config_node(v)) for k, v in obj.items())
    return obj


# --------------------------------------------------------------------------- reading
@dataclasses.dataclass
class CheckpointContents:
    path: str
    state_dict: dict[str, torch.Tensor]
    container_key: str | None  # which entry of the container held the weights; None: the file is the state dict
    file_format: str  # "torch-zip" | "torch-legacy" | "safetensors"
    stripped_prefix: str = ""
    config: Any = None  # the container's "config" entry, if any (yacs nodes as ConfigNode)


def _is_safetensors(path: str) -> bool:
    if path.endswith(".safetensors"):
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < header_len < os.path.getsize(path)


def _torch_load(path: str) -> Any:
    """torch.load(weights_only=True); if it refuses only harmless config globals, once more with those allowed."""
    harmless = _harmless_globals()
    # all stand-ins at once: numpy's dtype classes, for one, are needed but never named in the refusal
    attempts = ([], [(obj, name) for name, obj in harmless.items()])
    for attempt, allowed in enumerate(attempts):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            refused = _refused_globals(exc)
            static = _static_unsafe_globals(path)
            if not refused and not static:
                raise CheckpointError(
                    f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)}); check the file is a complete "
                    "torch.save / safetensors file (re-download it if it was cut short)"
                ) from None
            untrusted = [name for name in static or refused if name not in harmless]
            if untrusted or attempt == len(attempts) - 1:
                names = ", ".join(untrusted or refused) or _first_line(exc)
                raise CheckpointError(
                    f"refusing to load {path}: it references the Python global {names}, which unpickling would "
                    "import and call (arbitrary code execution), so the file is not trusted and nothing was run; use "
                    "a checkpoint that holds only tensors (a state_dict, or .safetensors) - only if you trust its "
                    "origin, re-save its state_dict with torch.save(sd, 'clean.pth')"
                ) from None
            logger.debug("%s: retrying with harmless config stand-ins for %s", path, refused)
    raise AssertionError("unreachable")


def _pickle_globals(stream, found: list[str]) -> None:
    """Append the globals one pickle names (GLOBAL, STACK_GLOBAL) to ``found``, by disassembling it:
    nothing is imported or called. STACK_GLOBAL's two names are the strings pushed or memo-fetched before it."""
    strings: list[str] = []
    memo: dict[int, str | None] = {}
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name == "GLOBAL":  # protocol 2 writes Python 2 names (__builtin__.eval): map them as unpickling does
            module, _, attr = arg.partition(" ")
            module, attr = _compat_pickle.NAME_MAPPING.get(
                (module, attr), (_compat_pickle.IMPORT_MAPPING.get(module, module), attr))
            found.append(f"{module}.{attr}")
        elif name == "STACK_GLOBAL" and len(strings) >= 2:
            found.append(f"{strings[-2]}.{strings[-1]}")
        elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"):
            strings.append(arg)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            memo[len(memo) if name == "MEMOIZE" else arg] = strings[-1] if strings else None
        elif name in ("BINGET", "LONG_BINGET", "GET") and isinstance(memo.get(arg), str):
            strings.append(memo[arg])


def _static_unsafe_globals(path: str) -> list[str]:
    """Full names of the globals a checkpoint needs beyond torch's weights-only allowlist, read without
    unpickling (the unpickler's message stops at the first and shortens ``builtins.eval`` to ``eval``)."""
    if zipfile.is_zipfile(path):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # an opcode torch's scanner does not know: the unpickler's message is used instead
            return []
    names: list[str] = []
    with open(path, "rb") as f:  # legacy torch.save: magic, protocol, sys info, object pickles; or one plain pickle
        for _ in range(4):
            try:
                _pickle_globals(f, names)
            except Exception:  # end of the pickles, or bytes that are not one
                break
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except ImportError:
        allowed = set()
    return list(dict.fromkeys(n for n in names if n not in allowed))


def _first_line(exc: BaseException) -> str:
    message = str(exc)
    if "WeightsUnpickler error:" in message:  # torch's weights-only message: keep its actual reason
        message = message.split("WeightsUnpickler error:", 1)[1]
    text = message.strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _select_state_dict(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], str | None]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a state dict or a {{'model': state_dict}} container; "
            "save model.state_dict() instead"
        )
    for key in CONTAINER_KEYS:
        value = obj.get(key)
        if _tensor_mapping(value):
            return dict(value), key
        if isinstance(value, Mapping):  # e.g. {"model_ema": {"module": state_dict}}
            for inner in CONTAINER_KEYS:
                if _tensor_mapping(value.get(inner)):
                    return dict(value[inner]), f"{key}.{inner}"
    if _tensor_mapping(obj):
        return dict(obj), None
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if tensors and len(tensors) >= len(obj) - 1:  # a state dict with one stray entry (e.g. a version number)
        logger.warning("%s: ignoring non-tensor entries %s", path, [k for k in obj if k not in tensors])
        return tensors, None
    raise CheckpointError(
        f"{path}: no weights found: expected a state dict or a container with one of {list(CONTAINER_KEYS)}, "
        f"got top-level keys {list(obj)[:8]}"
    )


def _strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    stripped = ""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state_dict and all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                stripped += prefix
                changed = True
    return state_dict, stripped


def open_checkpoint(path: str | os.PathLike) -> CheckpointContents:
    """Read a checkpoint safely; see :func:`read_checkpoint`. Also says where the weights were found."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file; check the checkpoint path")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory; pass the checkpoint file inside it")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: file is empty (0 bytes); re-download or re-save the checkpoint")

    config = None
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: unreadable safetensors file ({_first_line(exc)}); it is truncated or corrupt, re-download it"
            ) from None
        file_format = "safetensors"
    else:
        file_format = "torch-zip" if zipfile.is_zipfile(path) else "torch-legacy"
        try:
            obj = _torch_load(path)
        except CheckpointError:
            raise
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile,
                UnicodeDecodeError, AttributeError, TypeError, IndexError) as exc:
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)}); check the file is a complete "
                "torch.save / safetensors file (re-download it if it was cut short)"
            ) from None
        if isinstance(obj, Mapping) and "config" in obj:
            config = _to_config_node(obj["config"])

    state_dict, container_key = _select_state_dict(obj, path)
    state_dict, stripped = _strip_wrapper_prefixes(state_dict)
    logger.info("%s: %d tensors from %s%s", path, len(state_dict),
                f"container key {container_key!r}" if container_key else "a plain state dict",
                f", stripped prefix {stripped!r}" if stripped else "")
    return CheckpointContents(path, state_dict, container_key, file_format, stripped, config)


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint as ``{name: tensor}`` (on CPU), without executing anything from the file.

    Accepts official training containers ``{"model": ..., "model_ema": ..., "optimizer": ..., "config":
    yacs CfgNode, ...}`` (the ``"model"`` entry is preferred, then ``state_dict``, ``model_ema``,
    ``module``), plain state dicts, ``module.`` / ``backbone.`` / ``_orig_mod.`` prefixed keys,
    ``.safetensors``, and torch zip or legacy (non-zip) files. The entry used is logged on logger
    ``exporter``; :func:`open_checkpoint` returns it. Raises :class:`CheckpointError`.
    """
    return open_checkpoint(path).state_dict


# --------------------------------------------------------------------------- architecture inference
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

    def build(self) -> nn.Module:
        from exporter.models.registry import MODEL_CONFIGS

        if self.matched_config:
            return MODEL_CONFIGS[self.matched_config].build(self.num_classes)
        cls = _model_class(self.family)
        model = cls(**self.kwargs)
        model.arch_name = "custom"
        return model

    def describe(self) -> str:
        return (f"{self.name} ({self.family} {self.line}): depths={self.depths}, dims={self.dims}, "
                f"d_state={self.d_state}, ssm_ratio={self.ssm_ratio:g}, "
                f"forward_type={self.forward_type}, num_classes={self.num_classes})")


def _model_class(family: str) -> type:
    from exporter.models import MedMamba, VMamba

    return {"vmamba": VMamba, "medmamba": MedMamba}[family]


def _stage_block_counts(keys) -> list[int]:
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


def _compact_dims(dims: list[int]) -> int | list[int]:
    """The official configs write dims as one int when they double every stage."""
    return dims[0] if all(d == dims[0] * 2 ** i for i, d in enumerate(dims)) else list(dims)


def is_medmamba_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(".conv33conv33conv11." in k for k in state_dict)


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> ArchGuess:
    """Work out family, line and every constructor argument from key names and tensor shapes only.

    Legacy VMamba v0 names are accepted (mapped with ``checkpoint_filter_fn`` first). Settings that
    have no parameters cannot be seen in a checkpoint; the released value is assumed and recorded in
    ``notes`` (e.g. channel-first ``ln2d`` vs ``ln``: identical parameters and identical arithmetic).
    """
    if not state_dict:
        raise CheckpointError("empty state dict: nothing to infer an architecture from")
    if is_medmamba_state_dict(state_dict):
        guess = _infer_medmamba(state_dict)
    else:
        from exporter.models.vmamba import checkpoint_filter_fn

        guess = _infer_vmamba(checkpoint_filter_fn(dict(state_dict)))
    guess.matched_config = _match_released_config(guess)
    if guess.matched_config:
        from exporter.models.registry import MODEL_CONFIGS

        guess.kwargs = {**MODEL_CONFIGS[guess.matched_config].kwargs, "num_classes": guess.num_classes}
    return guess


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    t = sd.get(key)
    return tuple(t.shape) if t is not None else None


def _require(sd, key: str, what: str) -> tuple[int, ...]:
    shape = _shape(sd, key)
    if shape is None:
        raise CheckpointError(
            f"cannot infer the architecture: no {key!r} ({what}); is this a VMamba/MedMamba checkpoint?")
    return shape


def _ssm_params(sd, prefix: str, d_model: int) -> dict:
    """d_inner, d_state, dt_rank, conv and gate of one SS2D from its parameter shapes."""
    d_inner, d_state = _require(sd, prefix + "A_logs", "SS2D A_logs")
    d_inner //= 4
    dt_rank = _require(sd, prefix + "dt_projs_weight", "SS2D dt_projs_weight")[2]
    in_out = _require(sd, prefix + "in_proj.weight", "SS2D in_proj")[0]
    conv = _shape(sd, prefix + "conv2d.weight")
    return dict(
        d_inner=d_inner, d_state=d_state, dt_rank=dt_rank, ratio=d_inner / d_model, gate=in_out == 2 * d_inner,
        conv=conv[-1] if conv else 1, conv_bias=prefix + "conv2d.bias" in sd, out_norm=prefix + "out_norm.weight" in sd,
        in_bias=prefix + "in_proj.bias" in sd,
    )


def _common_value(values: list, what: str, notes: list[str]):
    distinct = list(dict.fromkeys(values))
    if len(distinct) > 1:
        notes.append(f"{what} differs between blocks ({distinct}); the models use one value for all, the first is used")
    return distinct[0]


def _infer_vmamba(sd: dict[str, torch.Tensor]) -> ArchGuess:
    notes: list[str] = []
    depths = _stage_block_counts(sd)
    if not depths:
        raise CheckpointError(
            "cannot infer the architecture: no 'layers.N.' keys; is this a VMamba/MedMamba checkpoint?")
    if "pos_embed" in sd:
        notes.append("pos_embed found: posembed models are not supported")

    pe0 = _require(sd, "patch_embed.0.weight", "patch-embedding convolution")
    in_chans = pe0[1]
    if "patch_embed.5.weight" in sd:
        patchembed_version, patch_size = "v2", 2 * (pe0[-1] - 1)
        dim0 = _shape(sd, "patch_embed.5.weight")[0]
        patch_norm = "patch_embed.7.weight" in sd
    else:
        patchembed_version, patch_size, dim0 = "v1", pe0[-1], pe0[0]
        patch_norm = "patch_embed.2.weight" in sd

    dims = []
    for i in range(len(depths)):
        norm = _shape(sd, f"layers.{i}.blocks.0.norm.weight") or _shape(sd, f"layers.{i}.blocks.0.norm2.weight")
        if norm is not None:
            dims.append(norm[0])
        elif i == 0:
            dims.append(dim0)
        else:
            dims.append(dims[-1] * 2)
            notes.append(f"stage {i} has no blocks; its width is assumed to double")

    if _shape(sd, "layers.0.downsample.reduction.weight"):
        downsample_version = "v1"
    elif _shape(sd, "layers.0.downsample.1.weight"):
        downsample_version = "v2" if _shape(sd, "layers.0.downsample.1.weight")[-1] == 2 else "v3"
    else:
        downsample_version = "none"

    batchnorm = any(k.endswith("running_mean") for k in sd if k.startswith(("layers.", "patch_embed.")))
    ssm = [
        _ssm_params(sd, f"layers.{i}.blocks.{j}.op.", dims[i])
        for i, depth in enumerate(depths) for j in range(depth) if f"layers.{i}.blocks.{j}.op.A_logs" in sd
    ]
    mlp_ratios = [
        _shape(sd, f"layers.{i}.blocks.{j}.mlp.fc1.weight")[0] / dims[i]
        for i, depth in enumerate(depths) for j in range(depth) if f"layers.{i}.blocks.{j}.mlp.fc1.weight" in sd
    ]
    mlp_ratio = float(_common_value(mlp_ratios, "mlp_ratio", notes)) if mlp_ratios else 0.0
    if ssm:
        d_state = _common_value([s["d_state"] for s in ssm], "d_state", notes)
        ssm_ratio = float(_common_value([s["ratio"] for s in ssm], "ssm_ratio", notes))
        gate = _common_value([s["gate"] for s in ssm], "z gate", notes)
        ssm_conv = _common_value([s["conv"] for s in ssm], "ssm_conv", notes)
        ssm_conv_bias = _common_value([s["conv_bias"] for s in ssm], "ssm_conv_bias", notes)
        out_norm = _common_value([s["out_norm"] for s in ssm], "out_norm", notes)
        if any(s["in_bias"] for s in ssm):
            notes.append("SS2D in_proj has a bias: no released VMamba has one; the model will not load it")
        auto = all(
            s["dt_rank"] == math.ceil(dims[i] / 16)
            for s, i in zip(ssm, [i for i, d in enumerate(depths) for j in range(d)
                                  if f"layers.{i}.blocks.{j}.op.A_logs" in sd])
        )
        dt_rank = "auto" if auto else _common_value([s["dt_rank"] for s in ssm], "dt_rank", notes)
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

    head = _shape(sd, "classifier.head.weight")
    if head is None:
        raise CheckpointError("cannot infer the architecture: no classifier.head.weight (VMamba classifier head)")
    num_classes = head[0]
    kwargs = dict(
        patch_size=patch_size, in_chans=in_chans, num_classes=num_classes, depths=depths, dims=_compact_dims(dims),
        ssm_d_state=d_state, ssm_ratio=ssm_ratio, ssm_dt_rank=dt_rank, ssm_conv=ssm_conv, ssm_conv_bias=ssm_conv_bias,
        forward_type=forward_type, mlp_ratio=mlp_ratio, patch_norm=patch_norm, norm_layer=norm_layer,
        downsample_version=downsample_version, patchembed_version=patchembed_version, drop_path_rate=0.0,
    )
    return ArchGuess("vmamba", line, depths, dims, d_state, ssm_ratio, dt_rank, num_classes, forward_type, norm_layer,
                     downsample_version, patchembed_version, mlp_ratio, ssm_conv, ssm_conv_bias, patch_size, in_chans,
                     patch_norm, kwargs, notes=notes)


def _infer_medmamba(sd: Mapping[str, torch.Tensor]) -> ArchGuess:
    notes: list[str] = []
    depths = _stage_block_counts(sd)
    proj = _require(sd, "patch_embed.proj.weight", "MedMamba patch embedding")
    dims = []
    for i in range(len(depths)):
        half = _shape(sd, f"layers.{i}.blocks.0.ln_1.weight")
        dims.append(2 * half[0] if half else (proj[0] if i == 0 else 2 * dims[-1]))
    ssm = [_ssm_params(sd, f"layers.{i}.blocks.{j}.self_attention.", dims[i] // 2)
           for i, depth in enumerate(depths) for j in range(depth)]
    d_state = _common_value([s["d_state"] for s in ssm], "d_state", notes) if ssm else 16
    for s in ssm:
        if s["ratio"] != 2.0 or not s["gate"] or s["conv"] != 3:
            notes.append("SS2D differs from MedMamba's fixed expand=2 / z gate / 3x3 conv; the model will not load it")
            break
    head = _shape(sd, "head.weight")
    num_classes = head[0] if head else 0
    kwargs = dict(patch_size=proj[-1], in_chans=proj[1], num_classes=num_classes, depths=depths, dims=list(dims),
                  d_state=d_state, patch_norm="patch_embed.norm.weight" in sd, drop_path_rate=0.0)
    return ArchGuess("medmamba", "medmamba", depths, dims, d_state, 2.0, "auto", num_classes, None, "ln", None, None,
                     0.0, 3, True, proj[-1], proj[1], "patch_embed.norm.weight" in sd, kwargs, notes=notes)


def _structure(family: str, kwargs: Mapping) -> tuple:
    """Everything about a configuration that changes parameters or arithmetic (not num_classes, drop path)."""
    depths = list(kwargs.get("depths", ()))
    dims = kwargs.get("dims")
    dims = [int(dims * 2 ** i) for i in range(len(depths))] if isinstance(dims, int) else list(dims)
    if family == "medmamba":
        return (family, depths, dims, kwargs.get("d_state", 16), kwargs.get("patch_size", 4), kwargs.get("in_chans", 3),
                kwargs.get("patch_norm", True))
    from exporter.models.vmamba import parse_forward_type

    ft = parse_forward_type(kwargs.get("forward_type", "v2"))
    v0 = ft["line"] == "v0"
    dt_rank = kwargs.get("ssm_dt_rank", "auto")
    norm = kwargs.get("norm_layer", "LN").lower()
    return (
        family, depths, dims, kwargs.get("ssm_d_state", 16), float(kwargs.get("ssm_ratio", 2.0)),
        [math.ceil(d / 16) if dt_rank == "auto" else int(dt_rank) for d in dims],
        3 if v0 else kwargs.get("ssm_conv", 3), True if v0 else kwargs.get("ssm_conv_bias", True),
        ft["gate"], ft["out_norm"], ft["out_act"], float(kwargs.get("mlp_ratio", 4.0)),
        kwargs.get("downsample_version", "v2"), kwargs.get("patchembed_version", "v1"),
        "layernorm" if norm in ("ln", "ln2d") else norm,  # same parameters, same arithmetic
        kwargs.get("patch_size", 4), kwargs.get("in_chans", 3), kwargs.get("patch_norm", True),
        kwargs.get("post_norm", False),
    )


def _match_released_config(guess: ArchGuess) -> str | None:
    from exporter.models.registry import MODEL_CONFIGS

    wanted = _structure(guess.family, guess.kwargs)
    for name, cfg in MODEL_CONFIGS.items():
        if cfg.family == guess.family and _structure(cfg.family, cfg.kwargs) == wanted:
            return name
    return None


# --------------------------------------------------------------------------- loading
def state_dict_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[list, list, list]:
    """(missing keys, unexpected keys, [(key, checkpoint shape, model shape)]) of a strict load."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [(k, tuple(state_dict[k].shape), expected[k]) for k in expected
             if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    return missing, unexpected, wrong


def _few(items: list, n: int = 4) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def _fit_hint(state_dict: Mapping[str, torch.Tensor], num_classes: int | None = None) -> str:
    try:
        guess = infer_architecture(state_dict)
    except (CheckpointError, KeyError, IndexError, TypeError, ValueError, NotImplementedError) as exc:
        return f"its architecture could not be inferred ({exc})"
    if num_classes is not None and num_classes != guess.num_classes:
        return (f"the checkpoint's head has {guess.num_classes} classes, not num_classes={num_classes}: "
                "omit num_classes (a strict load cannot replace the head)")
    if guess.matched_config:
        return (f"the checkpoint fits the released config {guess.matched_config!r} "
                f"with num_classes={guess.num_classes}: "
                f"pass arch={guess.matched_config!r} (or arch=None)")
    return f"no released config fits; it looks like {guess.describe()}: pass arch=None to build that"


def load_model(path: str | os.PathLike, arch: str | None = None, num_classes: int | None = None) -> nn.Module:
    """Build the model a checkpoint describes and load its weights strictly; returns it in eval mode.

    ``arch=None`` infers the architecture from keys and shapes (:func:`infer_architecture`) and uses
    the matching released config, or a custom one; ``arch="vmamba_tiny_s1l8"`` etc. builds that
    config (``num_classes`` defaults to the checkpoint's head). The result carries
    ``model.checkpoint_info`` = {path, container_key, arch, kwargs, ...}.
    """
    from exporter.models.registry import MODEL_CONFIGS
    from exporter.models.vmamba import checkpoint_filter_fn

    contents = open_checkpoint(path)
    state_dict = contents.state_dict
    medmamba = is_medmamba_state_dict(state_dict)
    if arch is not None and arch not in MODEL_CONFIGS:
        raise CheckpointError(
            f"{contents.path}: unknown arch {arch!r}; choose one of {', '.join(MODEL_CONFIGS)} or None")
    if not medmamba:  # legacy VMamba v0 names; MedMamba's official names (ln_1, self_attention) stay as they are
        state_dict = checkpoint_filter_fn(state_dict)

    if arch is None:
        guess = infer_architecture(state_dict)
        for note in guess.notes:
            logger.info("%s: %s", contents.path, note)
        if num_classes is not None and num_classes != guess.num_classes:
            guess.num_classes = num_classes
            guess.kwargs["num_classes"] = num_classes
        arch_name, kwargs = guess.name, dict(guess.kwargs)
        try:
            model = guess.build()
        except (ValueError, NotImplementedError, TypeError) as exc:
            raise CheckpointError(
                f"{contents.path}: inferred architecture {guess.describe()} cannot be built: {exc}") from None
        logger.info("%s: %s architecture %s", contents.path,
                    "released" if guess.matched_config else "built custom", guess.describe())
    else:
        if num_classes is None:
            head = state_dict.get("classifier.head.weight", state_dict.get("head.weight"))
            num_classes = head.shape[0] if head is not None else None
        model = MODEL_CONFIGS[arch].build(num_classes)
        arch_name, kwargs = arch, dict(model.config)
        logger.info("%s: building requested config %s (num_classes=%s)", contents.path, arch, model.num_classes)

    missing, unexpected, wrong = state_dict_mismatch(model, state_dict)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_few(unexpected)}")
        if wrong:
            shapes = [f"{k} checkpoint {c} vs model {m}" for k, c, m in wrong]
            parts.append(f"{len(wrong)} wrong-shape: {_few(shapes)}")
        raise CheckpointError(
            f"{contents.path}: checkpoint does not fit {arch_name}: {'; '.join(parts)}; "
            f"{_fit_hint(state_dict, num_classes)}")
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    model.checkpoint_info = dict(path=contents.path, container_key=contents.container_key, arch=arch_name,
                                 kwargs=kwargs, file_format=contents.file_format,
                                 stripped_prefix=contents.stripped_prefix)
    return model


__all__ = ["CheckpointError", "CheckpointContents", "ArchGuess", "ConfigNode", "ConfigNamespace", "open_checkpoint",
           "read_checkpoint", "infer_architecture", "load_model", "state_dict_mismatch"]
