"""Safe checkpoint reading: unpickling that never executes code, and training containers.

What the weights mean (legacy key names, architecture inference) is family knowledge: see
``exporter.models.vmamba`` / ``exporter.models.medmamba`` (``checkpoint_filter_fn``,
``infer_config``) and ``exporter.models.loader.load_model``.

Security: a checkpoint is never unpickled with plain ``pickle``. ``torch.load(weights_only=True)``
runs first; if it refuses only harmless configuration containers (a yacs ``CfgNode``, an
``argparse.Namespace``, numpy scalars, as official training scripts store next to the weights),
it runs again with exactly those names allowlisted, mapped onto inert stand-ins (also mmengine's
``HistoryBuffer`` and numpy arrays, which mmsegmentation / mmdetection 1.x checkpoints carry in their
``message_hub`` training log). Any other global
(``os.system``, ``builtins.eval``, a pickled ``nn.Module``, ...) is refused with
:class:`CheckpointError` naming it, so nothing the file asks for is ever imported or called.
"""
from __future__ import annotations

import _compat_pickle
import dataclasses
import logging
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
    names: dict[str, Any] = {"yacs.config.CfgNode": OrderedDict, "argparse.Namespace": ConfigNamespace,
                             # mmengine (mmseg / mmdet 1.x) checkpoints: the training log in "message_hub"
                             "mmengine.logging.history_buffer.HistoryBuffer": ConfigNamespace}
    try:  # numpy scalars (e.g. a best-accuracy value); numpy is optional
        import numpy as np

        try:
            from numpy._core.multiarray import scalar as np_scalar
        except ImportError:  # numpy 1.x
            from numpy.core.multiarray import scalar as np_scalar
        try:
            from numpy._core.multiarray import _reconstruct as np_reconstruct
        except ImportError:  # numpy 1.x
            from numpy.core.multiarray import _reconstruct as np_reconstruct
        # numpy arrays (mmengine's HistoryBuffer holds two): _reconstruct makes an empty array of an
        # allowlisted type; its data is then set from bytes (an object array's items go through this
        # same restricted unpickler)
        names.update({"numpy._core.multiarray.scalar": np_scalar, "numpy.core.multiarray.scalar": np_scalar,
                      "numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray,
                      "numpy._core.multiarray._reconstruct": np_reconstruct,
                      "numpy.core.multiarray._reconstruct": np_reconstruct})
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


__all__ = ["CheckpointError", "CheckpointContents", "ConfigNode", "ConfigNamespace", "open_checkpoint",
           "read_checkpoint"]
