"""Calibration preprocessing against golden tensors of textured images, all channels, per family.

tests/data/calibration_golden.npz was made once by tests/make_calibration_golden.py from the
transforms' definitions (torchvision's Resize/CenterCrop geometry, the official means and stds,
PIL's resampling cross-checked against a PIL-free float64 resize within 1/255), never from
exporter/compress/calibration.py. On these images the wrong filter (bilinear for VMamba, bicubic
for MedMamba) moves values by 0.09-0.32, a crop one pixel off or a wrong mean or std by far more;
the tolerance, 1e-5, only absorbs float32 rounding of the normalisation (one 8-bit step is 0.017).
The images go in as PNG files (a directory and a single file) and as a uint8 .npy array.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from exporter.compress import load_calibration

GOLDEN = Path(__file__).resolve().parent / "data" / "calibration_golden.npz"
ATOL = 1e-5
FAMILIES = ("vmamba", "medmamba")


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as data:
        arrays = {k: data[k] for k in data.files}
    images = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("image/")}
    tensors = {}
    for key, value in arrays.items():
        if not key.startswith("image/"):
            family, name, res = key.split("/")
            tensors[family, name] = (int(res[1:]), value)
    return images, tensors


def _png(folder: Path, name: str, image: np.ndarray) -> Path:
    path = folder / f"{name}.png"
    Image.fromarray(image, "L" if image.ndim == 2 else "RGB").save(path)
    return path


def _assert_matches(got: torch.Tensor, expected: np.ndarray, what: str):
    assert tuple(got.shape) == expected.shape, what
    err = np.abs(got.numpy().astype(np.float64) - expected)
    worst = np.unravel_index(err.argmax(), err.shape)
    assert err.max() <= ATOL, f"{what}: max error {err.max():.4g} at (channel, row, col) {worst}"


def test_golden_file_is_what_the_generator_describes(golden):
    images, tensors = golden
    assert len(images) == 6 and len(tensors) == 12
    assert {images[n].shape[:2] for n in images} >= {(40, 61), (53, 37), (15, 18), (8, 8)}
    for (family, name), (res, tensor) in tensors.items():
        assert tensor.shape == (3, res, res) and tensor.std(axis=(1, 2)).min() > 0.1  # textured, every channel


@pytest.mark.parametrize("family", FAMILIES)
def test_image_directory_matches_golden_all_channels(golden, tmp_path, family):
    images, tensors = golden
    by_res: dict[int, list[str]] = {}
    for name in images:
        by_res.setdefault(tensors[family, name][0], []).append(name)
    for res, names in by_res.items():
        folder = tmp_path / f"r{res}"
        folder.mkdir()
        for name in names:
            _png(folder, name, images[name])
        cal = load_calibration(folder, family, resolution=res)
        assert cal.labels is None and len(cal) == len(names)
        for i, name in enumerate(sorted(names)):  # files are read in sorted order
            _assert_matches(cal.images[i], tensors[family, name][1], f"{family} {name} R={res}")


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_and_uint8_array_match_golden(golden, tmp_path, family):
    images, tensors = golden
    for name in ("portrait_37x53", "digit_8x8"):
        res, expected = tensors[family, name]
        cal = load_calibration(_png(tmp_path, name, images[name]), family, resolution=res)
        _assert_matches(cal.images[0], expected, f"{family} {name} from a file")
        np.save(tmp_path / f"{name}.npy", images[name][None])
        cal = load_calibration(tmp_path / f"{name}.npy", family, resolution=res)
        _assert_matches(cal.images[0], expected, f"{family} {name} from a uint8 .npy")
