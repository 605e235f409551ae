"""``load_model``: build the model a checkpoint describes and load its weights strictly.

The file is read by :mod:`exporter.checkpoint` (safe unpickling, containers); the family files
say what the weights mean: ``owns_state_dict``, ``checkpoint_filter_fn`` (legacy names, applied
once here) and ``infer_config`` (the architecture from keys and shapes).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Mapping

import torch
import torch.nn as nn

from exporter.checkpoint import CheckpointContents, CheckpointError, open_checkpoint
from exporter.models import medmamba, vmamba
from exporter.models.arch_inference import ArchGuess
from exporter.models.registry import MODEL_CONFIGS, PretrainedCfg

logger = logging.getLogger("exporter")
FAMILIES = (medmamba, vmamba)  # MedMamba first: its keys are unambiguous


def family_module(state_dict: Mapping[str, torch.Tensor]):
    for module in FAMILIES:
        if module.owns_state_dict(state_dict):
            return module
    raise CheckpointError("cannot infer the architecture: no 'layers.N.' / 'patch_embed.' keys; is this a "
                          "VMamba/MedMamba checkpoint?")


# --------------------------------------------------------------------------- released-config matching
_LAYOUT_ALIASES = {"Linear2d": "Linear", "LayerNorm2d": "LayerNorm"}  # same parameters, same arithmetic
_LAYOUT_ONLY = ("Permute", "Identity", "Sequential", "ModuleList")


def structure_signature(model: nn.Module) -> tuple:
    """What decides parameters and arithmetic: every parameter/buffer shape, every computing module's
    kind (channel-first and channel-last forms counted alike) and the SS2D/block flags without
    parameters. num_classes and drop-path rates are part of the shapes / not part of it."""
    shapes = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
    kinds = []
    for name, m in model.named_modules():
        kind = type(m).__name__
        if kind in _LAYOUT_ONLY:
            continue
        flags = tuple(getattr(m, f) for f in ("gate", "post_norm", "channel_first") if f in vars(m)
                      and f != "channel_first")
        kinds.append((name, _LAYOUT_ALIASES.get(kind, kind), flags))
    return shapes, tuple(kinds)


def _meta_signature(family: str, kwargs: dict) -> tuple:
    from exporter.models.arch_inference import model_class

    with torch.device("meta"):
        return structure_signature(model_class(family)(**kwargs))


@functools.lru_cache(maxsize=None)
def _released_signature(name: str, num_classes: int) -> tuple:
    cfg = MODEL_CONFIGS[name]
    return _meta_signature(cfg.family, {**cfg.kwargs, "num_classes": num_classes})


def match_released_config(guess: ArchGuess) -> str | None:
    """The registered (released, not bundled) configuration that builds exactly this architecture."""
    try:
        wanted = _meta_signature(guess.family, guess.kwargs)
    except (ValueError, TypeError, NotImplementedError, KeyError):
        return None
    for name, cfg in MODEL_CONFIGS.items():
        if cfg.family == guess.family and cfg.default_cfg.weights is None \
                and _released_signature(name, guess.num_classes) == wanted:
            return name
    return None


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> ArchGuess:
    """Family, line and every constructor argument from key names and tensor shapes only (the
    family's ``infer_config``), and the released config with this architecture, if any."""
    if not state_dict:
        raise CheckpointError("empty state dict: nothing to infer an architecture from")
    family = family_module(state_dict)
    return _infer_filtered(family, family.checkpoint_filter_fn(dict(state_dict)))


def _infer_filtered(family, state_dict: Mapping[str, torch.Tensor]) -> ArchGuess:
    guess = family.infer_config(state_dict)
    guess.matched_config = match_released_config(guess)
    if guess.matched_config:
        guess.kwargs = {**MODEL_CONFIGS[guess.matched_config].kwargs, "num_classes": guess.num_classes}
    return guess


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


def _fit_hint(family, state_dict: Mapping[str, torch.Tensor], num_classes: int | None = None) -> str:
    try:
        guess = _infer_filtered(family, state_dict)
    except (CheckpointError, KeyError, IndexError, TypeError, ValueError, NotImplementedError) as exc:
        return f"its architecture could not be inferred ({exc})"
    if num_classes is not None and num_classes != guess.num_classes:
        return (f"the checkpoint's head has {guess.num_classes} classes, not {num_classes}: drop --num-classes "
                "(num_classes=None in Python; a strict load cannot replace the head)")
    if guess.matched_config:
        return (f"the checkpoint fits the released config {guess.matched_config} with {guess.num_classes} classes: "
                f"pass --arch {guess.matched_config}, or omit --arch to infer it (arch= in Python)")
    return (f"no released config fits; it looks like {guess.describe()}: omit --arch (arch=None in Python) to "
            "build that architecture")


def _non_finite(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]


@dataclasses.dataclass
class LoadedCheckpoint:
    model: nn.Module
    arch: str  # the registry name built, or "custom" for an inferred architecture
    kwargs: dict  # constructor keyword arguments
    default_cfg: PretrainedCfg  # the matched config's, or the family's
    contents: CheckpointContents  # path, container key, file format, stripped prefix
    notes: list[str]

    @property
    def info(self) -> dict:
        c = self.contents
        return dict(path=c.path, container_key=c.container_key, arch=self.arch, kwargs=self.kwargs,
                    file_format=c.file_format, stripped_prefix=c.stripped_prefix)


def load_checkpoint_model(path: str | os.PathLike, arch: str | None = None,
                          num_classes: int | None = None) -> LoadedCheckpoint:
    """:func:`load_model` that also returns what was loaded from where (see :class:`LoadedCheckpoint`)."""
    contents = open_checkpoint(path)
    if arch is not None and arch not in MODEL_CONFIGS:
        raise CheckpointError(f"{contents.path}: unknown arch {arch!r}; choose one of {', '.join(MODEL_CONFIGS)}, "
                              "or omit it to infer the architecture")
    family = family_module(contents.state_dict)
    state_dict = family.checkpoint_filter_fn(dict(contents.state_dict))  # the one place the filter runs
    bad = _non_finite(state_dict)
    if bad:
        raise CheckpointError(f"{contents.path}: {len(bad)} tensor(s) hold NaN or Inf values ({_few(bad)}); the "
                              "checkpoint is corrupt or from a diverged run: use another checkpoint")
    notes: list[str] = []
    if arch is None:
        guess = _infer_filtered(family, state_dict)
        notes = list(guess.notes)
        for note in notes:
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
            f"{_fit_hint(family, state_dict, num_classes)}")
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    cfg = MODEL_CONFIGS[arch_name].default_cfg if arch_name in MODEL_CONFIGS else type(model).default_cfg
    return LoadedCheckpoint(model, arch_name, kwargs, cfg, contents, notes)


def load_model(path: str | os.PathLike, arch: str | None = None, num_classes: int | None = None) -> nn.Module:
    """Build the model a checkpoint describes and load its weights strictly; returns it in eval mode.

    ``arch=None`` infers the architecture from keys and shapes (:func:`infer_architecture`) and uses
    the matching released config, or a custom one; ``arch="vmamba_tiny_s1l8"`` etc. builds that
    config (``num_classes`` defaults to the checkpoint's head). Weights holding NaN or Inf are
    refused. :func:`load_checkpoint_model` also says which config, container and file were used.
    """
    return load_checkpoint_model(path, arch, num_classes).model


__all__ = ["load_model", "load_checkpoint_model", "LoadedCheckpoint", "infer_architecture", "state_dict_mismatch",
           "match_released_config", "structure_signature", "ArchGuess"]
