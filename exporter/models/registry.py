"""Named model configurations (the official registry names), their pretrained configs, ``create_model``.

Each family file declares its released configurations with ``@register_model(ModelClass)`` on a
function that returns the official constructor keyword arguments; the docstring is the
description shown by ``vm-export --list-models``. Each configuration also has a
:class:`PretrainedCfg` (timm's ``default_cfg``): the input size and the evaluation transform its
weights expect. Calibration, the CLI and export all read the resolution and preprocessing there.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import torch.nn as nn


@dataclasses.dataclass(frozen=True)
class PretrainedCfg:
    """What a configuration's weights expect at evaluation (timm's ``default_cfg``).

    crop_pct < 1: resize the shorter side to ``int(size / crop_pct)`` and centre-crop ``size``
    (VMamba's official test transform, 224/256); crop_pct == 1: resize to ``size x size``."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 224 / 256
    weights: Path | None = None  # bundled weights (safetensors), if any

    @property
    def resolution(self) -> int:
        return self.input_size[-1]

    def with_resolution(self, resolution: int | None) -> "PretrainedCfg":
        if resolution is None:
            return self
        return dataclasses.replace(self, input_size=(self.input_size[0], int(resolution), int(resolution)))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    family: str
    model_cls: type
    kwargs: dict
    description: str
    default_cfg: PretrainedCfg

    def build(self, num_classes: int | None = None, features_only: bool = False, **overrides) -> nn.Module:
        """The model; ``features_only=True``: the family's feature backbone (``model_cls.features_cls``,
        no classifier, ``out_indices`` / ``out_norms`` among ``overrides``)."""
        kwargs = {**self.kwargs, **overrides}
        if num_classes is not None:
            kwargs["num_classes"] = int(num_classes)
        if features_only:
            return self.model_cls.features_cls(**kwargs)
        if "out_indices" in overrides or "out_norms" in overrides:
            raise TypeError("out_indices / out_norms belong to feature backbones: pass features_only=True")
        return self.model_cls(**kwargs)


MODEL_CONFIGS: dict[str, ModelConfig] = {}
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"


def bundled_info(name: str) -> dict:
    """The JSON written beside a bundled model's weights (samples/train_digits.py): config, accuracy, ..."""
    path = ASSETS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python samples/train_digits.py` to create it")
    return json.loads(path.read_text())


def register_model(model_cls: type, **cfg_overrides) -> Callable[[Callable[[], dict]], Callable[..., nn.Module]]:
    """Register a named configuration; the decorated function becomes its factory. ``cfg_overrides``
    change fields of the family's :class:`PretrainedCfg` (``model_cls.default_cfg``)."""

    def decorator(config_fn: Callable[[], dict]) -> Callable[..., nn.Module]:
        name = config_fn.__name__
        if name in MODEL_CONFIGS:
            raise ValueError(f"model {name!r} is registered twice")
        default_cfg = dataclasses.replace(model_cls.default_cfg, **cfg_overrides)
        try:
            kwargs = dict(config_fn())
        except FileNotFoundError:  # a bundled model whose assets are not there (yet): not registered
            return config_fn
        cfg = ModelConfig(name, model_cls.family, model_cls, kwargs, (config_fn.__doc__ or "").strip(), default_cfg)
        MODEL_CONFIGS[name] = cfg

        def factory(num_classes: int | None = None, **overrides) -> nn.Module:
            return cfg.build(num_classes, **overrides)

        factory.__name__ = name
        factory.__doc__ = cfg.description
        return factory

    return decorator


def list_models(family: str | None = None) -> list[str]:
    return [n for n, c in MODEL_CONFIGS.items() if family is None or c.family == family]


def get_model_config(name: str) -> ModelConfig:
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(MODEL_CONFIGS)}") from None


def load_pretrained(name: str) -> nn.Module:
    """A registered model with its bundled weights (``default_cfg.weights``), in eval mode."""
    from safetensors.torch import load_file

    cfg = get_model_config(name)
    if cfg.default_cfg.weights is None:
        raise ValueError(f"model {name!r} has no bundled weights; load a checkpoint with load_model(path)")
    model = cfg.build()
    model.load_state_dict(load_file(str(cfg.default_cfg.weights)), strict=True)
    return model.eval()


def create_model(name: str, num_classes: int | None = None, features_only: bool = False, **overrides) -> nn.Module:
    """Build a registered model with fresh weights: ``create_model("vmamba_tiny_s1l8", num_classes=10)``.

    timm style ``create_model(name, features_only=True, out_indices=(0, 1, 2, 3))``: the feature
    backbone of that configuration (the official ``Backbone_VSSM``): ``model(x)`` is the list of
    per-stage maps (B, C_i, H_i, W_i) with the per-stage out norms ``outnorm{i}``, no classifier."""
    return get_model_config(name).build(num_classes, features_only=features_only, **overrides)
