"""Named model configurations (the official registry names) and ``create_model``.

Each family file declares its released configurations with ``@register_model(ModelClass)`` on a
function that returns the official constructor keyword arguments; the docstring is the
description shown by ``vm-export --list-models``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch.nn as nn


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    family: str
    model_cls: type
    kwargs: dict
    description: str

    def build(self, num_classes: int | None = None, **overrides) -> nn.Module:
        kwargs = {**self.kwargs, **overrides}
        if num_classes is not None:
            kwargs["num_classes"] = int(num_classes)
        model = self.model_cls(**kwargs)
        model.arch_name = self.name
        return model


MODEL_CONFIGS: dict[str, ModelConfig] = {}


def register_model(model_cls: type) -> Callable[[Callable[[], dict]], Callable[..., nn.Module]]:
    """Register a named configuration; the decorated function becomes its factory."""

    def decorator(config_fn: Callable[[], dict]) -> Callable[..., nn.Module]:
        name = config_fn.__name__
        if name in MODEL_CONFIGS:
            raise ValueError(f"model {name!r} is registered twice")
        cfg = ModelConfig(name, model_cls.family, model_cls, dict(config_fn()), (config_fn.__doc__ or "").strip())
        MODEL_CONFIGS[name] = cfg

        def factory(num_classes: int | None = None, **overrides) -> nn.Module:
            return cfg.build(num_classes, **overrides)

        factory.__name__ = name
        factory.__doc__ = cfg.description
        return factory

    return decorator


def list_models(family: str | None = None) -> list[str]:
    return [n for n, c in MODEL_CONFIGS.items() if family is None or c.family == family]


def create_model(name: str, num_classes: int | None = None, **overrides) -> nn.Module:
    """Build a registered model with fresh weights: ``create_model("vmamba_tiny_s1l8", num_classes=10)``."""
    try:
        cfg = MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(MODEL_CONFIGS)}") from None
    return cfg.build(num_classes, **overrides)
