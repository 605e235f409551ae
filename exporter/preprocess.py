"""The evaluation transform of a model's pretrained config: one image -> a normalised tensor.

Read from :class:`exporter.models.registry.PretrainedCfg` (timm's ``default_cfg``):

- VMamba (official ``build_transform`` at test time): resize the shorter side to
  ``int(resolution / crop_pct)`` (crop_pct 224/256) with bicubic interpolation, centre-crop
  ``resolution``, ImageNet mean/std.
- MedMamba (official ``predict.py``/``train.py``): resize to ``resolution x resolution``
  (bilinear, torchvision's default), mean = std = 0.5.

PIL + torch only (no torchvision). Used by calibration and by the bundled digits data alike.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from exporter.models.registry import PretrainedCfg


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How one image becomes a (3, resolution, resolution) float tensor."""

    resolution: int
    mode: str  # "resize-crop" (shorter side to resize_size, centre crop) or "resize" (to resolution x resolution)
    resize_size: int
    interpolation: str  # "bicubic" | "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def describe(self) -> str:
        if self.mode == "resize-crop":
            geo = f"resize {self.resize_size} {self.interpolation}, centre crop {self.resolution}"
        else:
            geo = f"resize {self.resolution}x{self.resolution} {self.interpolation}"
        return f"{geo}, mean {self.mean}, std {self.std}"


def preprocessing_for(cfg: PretrainedCfg, resolution: int | None = None, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None) -> Preprocessing:
    """The transform ``cfg`` describes, at ``resolution`` (default: the config's) with optional overrides."""
    res = int(cfg.resolution if resolution is None else resolution)
    if res < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if cfg.crop_pct < 1:
        pre = Preprocessing(res, "resize-crop", int(res / cfg.crop_pct + 1e-9), cfg.interpolation, cfg.mean, cfg.std)
    else:
        pre = Preprocessing(res, "resize", res, cfg.interpolation, cfg.mean, cfg.std)
    if mean is not None:
        pre = dataclasses.replace(pre, mean=_triple(mean, "mean"))
    if std is not None:
        pre = dataclasses.replace(pre, std=_triple(std, "std"))
    if any(s <= 0 for s in pre.std):
        raise ValueError(f"std must be positive, got {pre.std}")
    return pre


def family_default_cfg(family: str) -> PretrainedCfg:
    from exporter.models import MedMamba, VMamba

    classes = {"vmamba": VMamba, "medmamba": MedMamba}
    if family not in classes:
        raise ValueError(f"unknown model family {family!r}; expected 'vmamba' or 'medmamba'")
    return classes[family].default_cfg


def family_preprocessing(family: str, resolution: int | None = None, mean: Sequence[float] | None = None,
                         std: Sequence[float] | None = None) -> Preprocessing:
    """The official evaluation transform of a family, with optional overrides."""
    return preprocessing_for(family_default_cfg(family), resolution, mean, std)


def _triple(values, what: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"{what} needs 1 or 3 values, got {values}")
    return values  # type: ignore[return-value]


_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def preprocess_image(image: Image.Image, pre: Preprocessing) -> torch.Tensor:
    """One PIL image -> normalised (3, R, R) float32 tensor."""
    image = image.convert("RGB")
    resample = _PIL_FILTERS[pre.interpolation]
    if pre.mode == "resize":
        image = image.resize((pre.resolution, pre.resolution), resample)
    else:
        w, h = image.size
        short = pre.resize_size
        # torchvision's Resize(int): the shorter side becomes `short`, the longer keeps the aspect ratio
        new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        image = image.resize((new_w, new_h), resample)
        left = int(round((new_w - pre.resolution) / 2.0))
        top = int(round((new_h - pre.resolution) / 2.0))
        image = image.crop((left, top, left + pre.resolution, top + pre.resolution))
    array = np.asarray(image, dtype=np.float32) / 255.0  # (R, R, 3)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    return (tensor - mean) / std
