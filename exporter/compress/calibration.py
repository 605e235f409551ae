"""Calibration data for layer selection: load images or tensors and preprocess them the way each
family's official evaluation does.

Sources accepted by :func:`load_calibration`:

- an ImageFolder directory (one sub-folder per class; labels follow the sorted folder names, so
  top-1 accuracy can be measured),
- a directory of images without labels (only label-free metrics are then available),
- a ``.npy`` / ``.npz`` file holding either preprocessed float tensors ``(N, 3, H, W)`` (used as
  they are) or raw ``uint8`` images ``(N, H, W, 3)`` / ``(N, H, W)`` (preprocessed like image files);
  an ``.npz`` may carry integer labels under the key ``labels``,
- ``"digits"`` / ``"digits:<split>"``: the bundled scikit-learn digits (see ``exporter.samples_data``),
- ``"synthetic"`` / ``"synthetic:<N>"``: Gaussian noise. Allowed for smoke runs only: scores
  measured on noise say nothing about accuracy, and a loud warning says so.

Preprocessing: the model's pretrained config (``cfg``, see :mod:`exporter.preprocess`), or the
family's official evaluation transform; ``resolution``, ``mean`` and ``std`` override it.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from exporter.models.registry import PretrainedCfg
from exporter.preprocess import (Preprocessing, family_default_cfg, family_preprocessing,  # noqa: F401  (API)
                                 preprocess_image, preprocessing_for)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
@dataclasses.dataclass
class CalibrationSet:
    """Preprocessed calibration inputs. ``labels`` is None where the source has none."""

    images: torch.Tensor  # (N, 3, H, W) float32
    labels: torch.Tensor | None
    source: str
    preprocessing: str
    synthetic: bool = False
    class_names: list[str] | None = None

    def __post_init__(self):
        if self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"calibration images must be (N, 3, H, W), got {tuple(self.images.shape)}")
        if self.images.shape[0] == 0:
            raise ValueError(f"calibration source {self.source!r} holds no samples")
        if not torch.isfinite(self.images).all():
            bad = (~torch.isfinite(self.images)).flatten(1).any(1).nonzero().flatten()
            raise ValueError(
                f"calibration source {self.source!r} contains NaN or infinite values in {len(bad)} of "
                f"{self.images.shape[0]} samples (first: index {bad[0].item()}); clean the data first"
            )
        if self.labels is not None:
            self.labels = torch.as_tensor(self.labels).long().flatten()
            if self.labels.shape[0] != self.images.shape[0]:
                raise ValueError(f"{self.labels.shape[0]} labels for {self.images.shape[0]} calibration images")
            if (self.labels < 0).any():
                raise ValueError("calibration labels must be non-negative class indices")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def subset(self, n: int) -> "CalibrationSet":
        """The first n samples (sources are ordered deterministically)."""
        return dataclasses.replace(self, images=self.images[:n],
                                   labels=None if self.labels is None else self.labels[:n])

    def describe(self) -> str:
        kind = "synthetic noise" if self.synthetic else ("labelled" if self.has_labels else "unlabelled")
        return f"{len(self)} {kind} samples from {self.source} ({self.preprocessing})"


SYNTHETIC_WARNING = (
    "CALIBRATION ON SYNTHETIC NOISE: layer scores and the chosen layers are MEANINGLESS for real accuracy. "
    "Pass real images (an ImageFolder, an image directory or a .npy/.npz file) for a real selection."
)


def load_calibration(source, family: str = "vmamba", *, resolution: int | None = None,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     limit: int | None = None, seed: int = 0, cfg: PretrainedCfg | None = None) -> CalibrationSet:
    """Load calibration data from ``source`` (see the module docstring for the accepted forms).

    ``limit`` keeps the first ``limit`` samples; ImageFolder classes are interleaved first so a
    limited set still covers every class. ``seed`` only affects synthetic inputs. ``cfg``: the
    model's pretrained config (its transform is used instead of the family's).
    """
    if isinstance(source, CalibrationSet):
        return source.subset(limit) if limit else source
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    cfg = cfg or family_default_cfg(family)
    pre = preprocessing_for(cfg, resolution, mean, std)
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return _from_array(source, None, "array", pre, limit)
    text = str(source)
    if text == "synthetic" or text.startswith("synthetic:"):
        count = int(text.split(":", 1)[1]) if ":" in text else 32
        return synthetic_calibration(count if limit is None else min(count, limit), pre, seed)
    if text == "digits" or text.startswith("digits:"):
        from exporter.samples_data import DIGITS_RESOLUTION, digits_dataset

        split = text.split(":", 1)[1] if ":" in text else "calibration"
        pre = preprocessing_for(cfg, resolution or DIGITS_RESOLUTION, mean, std)
        images, labels = digits_dataset(split, pre=pre)
        cal = CalibrationSet(images, labels, f"digits:{split}", pre.describe())
        return cal.subset(limit) if limit else cal
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"calibration source {text!r} does not exist (expected an image directory, a "
                                ".npy/.npz file, 'digits[:split]' or 'synthetic[:N]')")
    if path.is_dir():
        return _from_directory(path, pre, limit)
    if path.suffix == ".npy":
        return _from_array(np.load(path, allow_pickle=False), None, str(path), pre, limit)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            image_keys = [k for k in keys if k != "labels"]
            if not image_keys:
                raise ValueError(f"{path} has no image array (keys: {keys})")
            key = next((k for k in ("images", "x", "inputs", "data") if k in image_keys), image_keys[0])
            labels = data["labels"] if "labels" in keys else None
            return _from_array(data[key], labels, str(path), pre, limit)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        cal = CalibrationSet(preprocess_image(_open(path), pre)[None], None, str(path), pre.describe())
        return cal
    raise ValueError(f"unsupported calibration file {path.name!r}: use a directory of images, .npy or .npz")


def synthetic_calibration(count: int, pre: Preprocessing, seed: int = 0) -> CalibrationSet:
    warnings.warn(SYNTHETIC_WARNING, stacklevel=3)  # once; the CLI prints warnings as one line each
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, pre.resolution, pre.resolution, generator=gen)
    return CalibrationSet(images, None, f"synthetic:{count}", "N(0, 1) noise", synthetic=True)


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as exc:
        raise ValueError(f"cannot read image {path} ({exc}); replace or remove that file") from exc


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _from_directory(path: Path, pre: Preprocessing, limit: int | None) -> CalibrationSet:
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = [(d.name, _images_in(d)) for d in class_dirs]
    per_class = [(name, files) for name, files in per_class if files]
    if per_class:  # ImageFolder: labels from the sorted class-folder names (torchvision's rule)
        class_names = [d.name for d in class_dirs]
        index = {name: i for i, name in enumerate(class_names)}
        # interleave classes so that the first `limit` samples cover every class
        ordered, depth = [], max(len(files) for _, files in per_class)
        for i in range(depth):
            ordered.extend((f[i], index[name]) for name, f in per_class if i < len(f))
        if limit:
            ordered = ordered[:limit]
        images = torch.stack([preprocess_image(_open(p), pre) for p, _ in ordered])
        labels = torch.tensor([label for _, label in ordered])
        return CalibrationSet(images, labels, str(path), pre.describe(), class_names=class_names)
    files = _images_in(path)
    if not files:
        others = sorted({p.suffix.lower() or p.name for p in path.rglob("*") if p.is_file()})
        found = (f"holds no image files (it has only {', '.join(others[:8])} files)" if others
                 else "is empty")
        raise ValueError(
            f"calibration directory {path} {found}: put images ({', '.join(IMAGE_EXTENSIONS)}) directly "
            "inside it, or one sub-folder of images per class (ImageFolder layout)"
        )
    if limit:
        files = files[:limit]
    images = torch.stack([preprocess_image(_open(p), pre) for p in files])
    return CalibrationSet(images, None, str(path), pre.describe())


def _from_array(array: np.ndarray, labels, source: str, pre: Preprocessing, limit: int | None) -> CalibrationSet:
    if limit:
        array = array[:limit]
        labels = None if labels is None else labels[:limit]
    if array.size == 0:
        raise ValueError(f"calibration source {source!r} holds no samples")
    if np.issubdtype(array.dtype, np.floating):
        if array.ndim != 4 or array.shape[1] != 3:
            raise ValueError(f"float calibration tensors must be preprocessed (N, 3, H, W); {source!r} has shape "
                             f"{array.shape} (raw images must be uint8 (N, H, W, 3) or (N, H, W))")
        images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        desc = "float tensors used as given"
    elif array.dtype == np.uint8:
        if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] in (1, 3))):
            raise ValueError(f"uint8 calibration images must be (N, H, W, 3) or (N, H, W); {source!r} has shape "
                             f"{array.shape}")
        if array.ndim == 4 and array.shape[-1] == 1:
            array = array[..., 0]
        images = torch.stack([preprocess_image(Image.fromarray(a), pre) for a in array])
        desc = pre.describe()
    else:
        raise ValueError(f"calibration array {source!r} has dtype {array.dtype}: use float32 (N, 3, H, W) or "
                         "uint8 (N, H, W, 3)")
    return CalibrationSet(images, None if labels is None else torch.as_tensor(np.asarray(labels)), source, desc)
