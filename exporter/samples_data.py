"""The bundled digits sample: scikit-learn's 8x8 digits as images, and two small trained models.

``samples/train_digits.py`` trains a small VMamba (v2 line) and a small MedMamba on the digits and
writes their weights to ``exporter/assets/digits_{family}.safetensors`` with a JSON beside them
(model config, split seed, accuracy). They give the CLI a built-in default and the tests a real
model whose accuracy can actually drop, so layer selection can be checked end to end.

Splits (fixed, stratified, seed ``SPLIT_SEED``): 60% ``train`` (1078 images), 20% ``calibration``
(359) and 20% ``test`` (360); ``heldout`` is calibration + test (everything not trained on).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from exporter.models.registry import ASSETS_DIR, bundled_info, load_pretrained  # noqa: F401  (ASSETS_DIR: API)
from exporter.preprocess import Preprocessing, family_preprocessing, preprocess_image

SPLIT_SEED = 0
DIGITS_RESOLUTION = 32
SPLITS = ("train", "calibration", "test", "heldout", "all")
FAMILIES = ("vmamba", "medmamba")


@lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    idx = np.arange(len(labels))
    train, rest = train_test_split(idx, test_size=0.4, random_state=SPLIT_SEED, stratify=labels)
    calibration, test = train_test_split(rest, test_size=0.5, random_state=SPLIT_SEED, stratify=labels[rest])
    return {"train": np.sort(train), "calibration": np.sort(calibration), "test": np.sort(test),
            "heldout": np.sort(rest), "all": idx}


def digits_images(split: str = "heldout") -> tuple[np.ndarray, np.ndarray]:
    """Raw digits of one split as uint8 (N, 8, 8) grey images (0..16 scaled to 0..255) and labels."""
    from sklearn.datasets import load_digits

    if split not in SPLITS:
        raise ValueError(f"unknown digits split {split!r}; choose one of {SPLITS}")
    digits = load_digits()
    idx = _split_indices()[split]
    images = np.round(digits.images[idx] * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target[idx].astype(np.int64)


def digits_dataset(split: str = "heldout", family: str = "vmamba", resolution: int | None = None,
                   mean=None, std=None, *, pre: Preprocessing | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A digits split preprocessed exactly as ``load_calibration`` preprocesses image files for
    ``family`` at the digits models' resolution (32), or with ``pre``: ((N, 3, R, R) float32, (N,) int64)."""
    from PIL import Image

    pre = pre or family_preprocessing(family, resolution or DIGITS_RESOLUTION, mean, std)
    images, labels = digits_images(split)
    tensors = torch.stack([preprocess_image(Image.fromarray(im), pre) for im in images])
    return tensors, torch.from_numpy(labels)


def digits_model_info(family: str = "vmamba") -> dict:
    """The JSON written by samples/train_digits.py (config, split seed, accuracies)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown digits model family {family!r}; choose one of {FAMILIES}")
    return bundled_info(f"digits_{family}")


def build_digits_model(family: str = "vmamba", config: dict | None = None) -> torch.nn.Module:
    """An untrained digits model (the architecture the sample trains)."""
    from exporter.models import MedMamba, VMamba

    cls = {"vmamba": VMamba, "medmamba": MedMamba}[family]
    return cls(**(config if config is not None else digits_model_info(family)["config"]))


def load_digits_model(family: str = "vmamba") -> torch.nn.Module:
    """The trained digits model of ``family`` in eval mode (the registered ``digits_<family>`` with its
    bundled weights)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown digits model family {family!r}; choose one of {FAMILIES}")
    return load_pretrained(f"digits_{family}")
