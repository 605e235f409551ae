"""``load_model``: build the model a checkpoint describes and load its weights strictly.

The file is read by :mod:`exporter.checkpoint` (safe unpickling, containers); the family files
say what the weights mean: ``owns_state_dict``, ``checkpoint_filter_fn`` (legacy names, applied
once here) and ``infer_config`` (the architecture from keys and shapes).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import re
from collections.abc import Mapping

import torch
import torch.nn as nn

from exporter.checkpoint import CheckpointContents, CheckpointError, open_checkpoint
from exporter.models import medmamba, vmamba
from exporter.models.arch_inference import ArchGuess, stage_block_counts
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


def _meta_signature(family: str, kwargs: dict, features: tuple | None = None) -> tuple:
    """``features``: None for the classifier, else (out_indices, out_norms) of the feature backbone."""
    from exporter.models.arch_inference import model_class

    cls = model_class(family)
    with torch.device("meta"):
        if features is None:
            return structure_signature(cls(**kwargs))
        return structure_signature(cls.features_cls(**kwargs, out_indices=features[0], out_norms=features[1]))


@functools.lru_cache(maxsize=None)
def _released_signature(name: str, num_classes: int, features: tuple | None = None) -> tuple:
    cfg = MODEL_CONFIGS[name]
    return _meta_signature(cfg.family, {**cfg.kwargs, "num_classes": num_classes}, features)


def match_released_config(guess: ArchGuess, features: dict | None = None) -> str | None:
    """The registered (released, not bundled) configuration that builds exactly this architecture
    (``features``: ``{"out_indices", "out_norms"}`` of a feature backbone; None: the classifier)."""
    key = None if features is None else (tuple(features["out_indices"]), bool(features["out_norms"]))
    try:
        wanted = _meta_signature(guess.family, guess.kwargs, key)
    except (ValueError, TypeError, NotImplementedError, KeyError):
        return None
    for name, cfg in MODEL_CONFIGS.items():
        if cfg.family == guess.family and cfg.default_cfg.weights is None \
                and _released_signature(name, guess.num_classes, key) == wanted:
            return name
    return None


def infer_architecture(state_dict: Mapping[str, torch.Tensor], features_only: bool = False) -> ArchGuess:
    """Family, line and every constructor argument from key names and tensor shapes only (the
    family's ``infer_config``), and the released config with this architecture, if any.
    ``features_only``: the weights are a backbone's (``backbone.`` keys of a segmentation /
    detection checkpoint, or a classifier whose head is ignored); the head is not required."""
    if not state_dict:
        raise CheckpointError("empty state dict: nothing to infer an architecture from")
    if features_only:
        state_dict, _ = split_backbone(state_dict)
    family = family_module(state_dict)
    state_dict = family.checkpoint_filter_fn(dict(state_dict))
    if not features_only:
        return _infer_filtered(family, state_dict)
    state_dict, features, _, _ = _backbone_weights(family, state_dict, None, None)
    return _infer_filtered(family, state_dict, features)


def _infer_filtered(family, state_dict: Mapping[str, torch.Tensor], features: dict | None = None) -> ArchGuess:
    guess = family.infer_config(state_dict, require_head=features is None)
    guess.matched_config = match_released_config(guess, features)
    if guess.matched_config:
        guess.kwargs = {**MODEL_CONFIGS[guess.matched_config].kwargs, "num_classes": guess.num_classes}
    return guess


# --------------------------------------------------------------------------- feature backbones
BACKBONE_PREFIX = "backbone."
_OUT_NORM_KEY = re.compile(r"outnorm(\d+)\.")
_CLASSIFIER_PREFIXES = ("classifier.", "head.")  # VMamba (after checkpoint_filter_fn), MedMamba


def split_backbone(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, int]]:
    """The ``backbone.*`` weights of an mmsegmentation / mmdetection model (UperNet: ``decode_head``,
    ``auxiliary_head``; Mask R-CNN: ``neck``, ``rpn_head``, ``roi_head``), without the prefix, and
    {top-level name of every other key: tensor count}. A state dict without ``backbone.`` keys is
    returned as it is (open_checkpoint already strips a prefix that every key has)."""
    if not any(k.startswith(BACKBONE_PREFIX) for k in state_dict):
        return dict(state_dict), {}
    backbone = {k[len(BACKBONE_PREFIX):]: v for k, v in state_dict.items() if k.startswith(BACKBONE_PREFIX)}
    ignored = collections.Counter(k.split(".", 1)[0] for k in state_dict if not k.startswith(BACKBONE_PREFIX))
    return backbone, dict(ignored)


def out_norm_indices(state_dict: Mapping[str, torch.Tensor]) -> list[int]:
    """The stages whose ``outnorm{i}`` weights a backbone state dict holds."""
    return sorted({int(m.group(1)) for k in state_dict for m in [_OUT_NORM_KEY.match(k)] if m})


def is_backbone_checkpoint(state_dict: Mapping[str, torch.Tensor], ignored: Mapping[str, int]) -> bool:
    return bool(ignored) or bool(out_norm_indices(state_dict))


def _backbone_weights(family, state_dict: dict, out_indices, out_norms):
    """(weights a feature backbone loads, {"out_indices", "out_norms"}, {ignored name: count}, notes)."""
    ignored: dict[str, int] = {}
    notes: list[str] = []
    head = [k for k in state_dict if k.startswith(_CLASSIFIER_PREFIXES)]
    if head:
        ignored["classifier"] = len(head)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    present = out_norm_indices(state_dict)
    num_stages = len(stage_block_counts(state_dict))
    if out_norms is None:
        out_norms = bool(present)
    if out_indices is None:
        out_indices = present if (out_norms and present) else list(range(num_stages))
    out_indices = sorted({int(i) for i in out_indices})
    if out_norms and present:
        absent = [i for i in out_indices if i not in present]
        if absent:
            raise CheckpointError(
                f"out_indices {out_indices} asks for stage(s) {absent} but the checkpoint has out norms for stages "
                f"{present} only: choose out_indices among {present}, or out_norms=False for the maps without norms")
    unused = [k for k in state_dict if (m := _OUT_NORM_KEY.match(k)) and (not out_norms or int(m.group(1))
                                                                       not in out_indices)]
    if unused:
        ignored["outnorm (stages not in out_indices)" if out_norms else "outnorm (out_norms=False)"] = len(unused)
        unused = set(unused)
        state_dict = {k: v for k, v in state_dict.items() if k not in unused}
    if out_norms and not present:
        notes.append(f"the checkpoint has no out norms (a classification checkpoint): outnorm{{{','.join(map(str, out_indices))}}} "
                     "keep their initialisation (weight 1, bias 0), i.e. plain per-stage LayerNorms")
    return state_dict, {"out_indices": out_indices, "out_norms": bool(out_norms)}, ignored, notes


def describe_ignored(ignored: Mapping[str, int]) -> str:
    return ", ".join(f"{name} ({n} tensors)" for name, n in ignored.items())


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


def _fit_hint(family, state_dict: Mapping[str, torch.Tensor], num_classes: int | None = None,
              features: dict | None = None) -> str:
    try:
        guess = _infer_filtered(family, state_dict, features)
    except (CheckpointError, KeyError, IndexError, TypeError, ValueError, NotImplementedError) as exc:
        return f"its architecture could not be inferred ({exc})"
    if features is None and num_classes is not None and num_classes != guess.num_classes:
        return (f"the checkpoint's head has {guess.num_classes} classes, not {num_classes}: drop --num-classes "
                "(num_classes=None in Python; a strict load cannot replace the head)")
    what = "backbone of the released config" if features is not None else "released config"
    classes = "" if features is not None else f" with {guess.num_classes} classes"
    if guess.matched_config:
        return (f"the checkpoint fits the {what} {guess.matched_config}{classes}: "
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
    ignored: dict = dataclasses.field(default_factory=dict)  # weights not loaded: {name: tensor count} (heads)
    features: dict | None = None  # {"out_indices", "out_norms"} of a feature backbone; None: the classifier

    @property
    def info(self) -> dict:
        c = self.contents
        return dict(path=c.path, container_key=c.container_key, arch=self.arch, kwargs=self.kwargs,
                    file_format=c.file_format, stripped_prefix=c.stripped_prefix, ignored=dict(self.ignored),
                    features=self.features)


def load_checkpoint_model(path: str | os.PathLike, arch: str | None = None, num_classes: int | None = None, *,
                          features_only: bool | None = False, out_indices=None,
                          out_norms: bool | None = None) -> LoadedCheckpoint:
    """:func:`load_model` that also returns what was loaded from where (see :class:`LoadedCheckpoint`).

    ``features_only=None`` decides from the file: a segmentation / detection container (backbone
    weights beside heads) gives the feature backbone, anything else the classifier (vm-export's
    behaviour). The default False refuses a dense-prediction container with a hint instead."""
    contents = open_checkpoint(path)
    if arch is not None and arch not in MODEL_CONFIGS:
        raise CheckpointError(f"{contents.path}: unknown arch {arch!r}; choose one of {', '.join(MODEL_CONFIGS)}, "
                              "or omit it to infer the architecture")
    state_dict, ignored = split_backbone(contents.state_dict)
    if features_only is None:
        features_only = is_backbone_checkpoint(state_dict, ignored)
    if not features_only and is_backbone_checkpoint(state_dict, ignored):
        heads = f" next to the heads {describe_ignored(ignored)}" if ignored else ""
        raise CheckpointError(
            f"{contents.path}: a segmentation / detection checkpoint (backbone weights{heads}): load its backbone "
            "with features_only=True (vm-export --features-only); the heads are not part of this project's models")
    if features_only and num_classes is not None:
        raise CheckpointError(f"{contents.path}: num_classes={num_classes} has no meaning for a feature backbone "
                              "(no classifier): drop --num-classes")
    if not features_only and (out_indices is not None or out_norms is not None):
        raise CheckpointError(f"{contents.path}: out_indices / out_norms belong to feature backbones: pass "
                              "features_only=True (--features-only)")
    family = family_module(state_dict)
    state_dict = family.checkpoint_filter_fn(state_dict)  # the one place the filter runs
    bad = _non_finite(state_dict)
    if bad:
        raise CheckpointError(f"{contents.path}: {len(bad)} tensor(s) hold NaN or Inf values ({_few(bad)}); the "
                              "checkpoint is corrupt or from a diverged run: use another checkpoint")
    notes: list[str] = []
    features = None
    if features_only:
        try:
            state_dict, features, more_ignored, notes = _backbone_weights(family, state_dict, out_indices, out_norms)
        except CheckpointError as exc:
            raise CheckpointError(f"{contents.path}: {exc}") from None
        ignored.update(more_ignored)
        if ignored:
            notes.insert(0, f"ignored {sum(ignored.values())} tensors that are not the backbone's: "
                            f"{describe_ignored(ignored)}")
    if arch is None:
        guess = _infer_filtered(family, state_dict, features)
        notes = notes + list(guess.notes)
        if features is None and num_classes is not None and num_classes != guess.num_classes:
            guess.num_classes = num_classes
            guess.kwargs["num_classes"] = num_classes
        arch_name, kwargs = guess.name, dict(guess.kwargs)
        try:
            model = guess.build(features)
        except (ValueError, NotImplementedError, TypeError) as exc:
            raise CheckpointError(
                f"{contents.path}: inferred architecture {guess.describe()} cannot be built: {exc}") from None
        logger.info("%s: %s architecture %s%s", contents.path,
                    "released" if guess.matched_config else "built custom", guess.describe(),
                    f", feature backbone {features}" if features else "")
    else:
        if features is not None:
            model = MODEL_CONFIGS[arch].build(features_only=True, **features)
        else:
            if num_classes is None:
                head = state_dict.get("classifier.head.weight", state_dict.get("head.weight"))
                num_classes = head.shape[0] if head is not None else None
            model = MODEL_CONFIGS[arch].build(num_classes)
        arch_name, kwargs = arch, dict(model.config)
        logger.info("%s: building requested config %s (%s)", contents.path, arch,
                    f"feature backbone {features}" if features else f"num_classes={model.num_classes}")
    for note in notes:
        logger.info("%s: %s", contents.path, note)

    if features is not None and features["out_norms"] and not out_norm_indices(state_dict):
        # asked for out norms the checkpoint does not have: they keep the model's initialisation
        state_dict = {**state_dict, **{k: v for k, v in model.state_dict().items() if _OUT_NORM_KEY.match(k)}}
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
        what = f"the backbone of {arch_name}" if features is not None else arch_name
        raise CheckpointError(
            f"{contents.path}: checkpoint does not fit {what}: {'; '.join(parts)}; "
            f"{_fit_hint(family, state_dict, num_classes, features)}")
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    cfg = MODEL_CONFIGS[arch_name].default_cfg if arch_name in MODEL_CONFIGS else type(model).default_cfg
    return LoadedCheckpoint(model, arch_name, kwargs, cfg, contents, notes, ignored, features)


def load_model(path: str | os.PathLike, arch: str | None = None, num_classes: int | None = None, *,
               features_only: bool = False, out_indices=None, out_norms: bool | None = None) -> nn.Module:
    """Build the model a checkpoint describes and load its weights strictly; returns it in eval mode.

    ``arch=None`` infers the architecture from keys and shapes (:func:`infer_architecture`) and uses
    the matching released config, or a custom one; ``arch="vmamba_tiny_s1l8"`` etc. builds that
    config (``num_classes`` defaults to the checkpoint's head). Weights holding NaN or Inf are
    refused. :func:`load_checkpoint_model` also says which config, container and file were used.

    ``features_only=True``: the feature backbone (``create_model(..., features_only=True)``). From an
    mmsegmentation / mmdetection checkpoint (``{"meta": ..., "state_dict": {"backbone.*", "decode_head.*",
    ...}}``) it takes the ``backbone.`` weights and ignores the heads (named in the log and in
    :attr:`LoadedCheckpoint.notes` / ``ignored``); out norms and ``out_indices`` follow the checkpoint's
    ``outnorm{i}`` weights. From a classification checkpoint it takes everything but the classifier,
    without out norms unless ``out_norms=True`` (they then start as plain LayerNorms).
    """
    return load_checkpoint_model(path, arch, num_classes, features_only=features_only, out_indices=out_indices,
                                 out_norms=out_norms).model


__all__ = ["load_model", "load_checkpoint_model", "LoadedCheckpoint", "infer_architecture", "state_dict_mismatch",
           "match_released_config", "structure_signature", "ArchGuess", "split_backbone", "out_norm_indices"]
