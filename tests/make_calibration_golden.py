"""Write tests/data/calibration_golden.npz: textured test images and the tensors each family's
official evaluation transform makes of them (run once; the file is committed).

    PYTHONPATH=. python tests/make_calibration_golden.py

Written from the transforms' definitions, not from exporter/compress/calibration.py:
- VMamba (official build_transform at test time = torchvision Resize(int(256 / 224 * R),
  bicubic) + CenterCrop(R) + Normalize(ImageNet mean/std)): the shorter side becomes S =
  int(256 / 224 * R), the longer int(S * long / short); the crop starts at int(round((size - R) / 2))
  on each axis (torchvision's CenterCrop); mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
- MedMamba (official predict.py: Resize((R, R)), torchvision's default bilinear, Normalize(0.5, 0.5)).
- Resampling: PIL's resize (what torchvision runs on PIL images). As an independent check of the
  geometry and the filters, every resize is recomputed here with a PIL-free float64 separable
  convolution (PIL's antialiased kernels: Keys bicubic a = -0.5, triangle; support scaled by the
  downscale factor; pixel centres at i + 0.5); the two must agree within 2/255 (PIL rounds to 8 bits
  after each pass), and the file is refused otherwise.
The images mix noise, gradients, stripes and edges, with aspect ratios and sizes chosen so that
the crop offsets hit round-half cases (1.5 -> 2, 8.5 -> 8) and both down- and upscaling occur.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "data" / "calibration_golden.npz"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# name -> (width, height, mode); resolution R for all of them, plus the digits-like one at 32
IMAGES = {
    "landscape_61x40": (61, 40, "RGB"),
    "portrait_37x53": (37, 53, "RGB"),
    "upscale_18x15": (18, 15, "RGB"),
    "square_50x50": (50, 50, "RGB"),
    "grey_45x30": (45, 30, "L"),
}
RESOLUTION = 24
DIGIT = ("digit_8x8", 8, 8, "L")
DIGIT_RESOLUTION = 32


def textured(width: int, height: int, mode: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for c in range(3 if mode == "RGB" else 1):
        noise = rng.uniform(0, 255, (height, width))
        gradient = 255 * (x / max(width - 1, 1) if c % 2 == 0 else y / max(height - 1, 1))
        stripes = 127.5 * (1 + np.sin(x * (0.9 + 0.4 * c) + y * (0.3 + 0.5 * c)))
        edge = np.where((x - width / 2) * (c + 1) + (y - height / 3) > 0, 230.0, 20.0)
        mix = rng.dirichlet(np.ones(4))
        channels.append(mix[0] * noise + mix[1] * gradient + mix[2] * stripes + mix[3] * edge)
    img = np.clip(np.round(np.stack(channels, -1)), 0, 255).astype(np.uint8)
    return img if mode == "RGB" else img[..., 0]


# --------------------------------------------------------------------------- PIL-free resampling
def _bicubic(t: float, a: float = -0.5) -> float:
    t = abs(t)
    if t < 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return (((t - 5) * t + 8) * t - 4) * a
    return 0.0


def _triangle(t: float) -> float:
    t = abs(t)
    return 1.0 - t if t < 1 else 0.0


FILTERS = {"bicubic": (_bicubic, 2.0), "bilinear": (_triangle, 1.0)}


def _weights(n_in: int, n_out: int, kind: str) -> np.ndarray:
    """(n_out, n_in) interpolation matrix, antialiased when downscaling."""
    kernel, support = FILTERS[kind]
    scale = n_in / n_out
    widen = max(scale, 1.0)
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support * widen + 0.5), 0)
        hi = min(int(centre + support * widen + 0.5), n_in)
        taps = np.array([kernel((j - centre + 0.5) / widen) for j in range(lo, hi)])
        w[i, lo:hi] = taps / taps.sum()
    return w


def float_resize(rgb: np.ndarray, size: tuple[int, int], kind: str) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) float64 in 0..255; horizontal pass, then vertical, clipped to
    0..255 after each as an 8-bit image is (no rounding)."""
    w_out, h_out = size
    h_in, w_in = rgb.shape[:2]
    img = rgb.astype(np.float64)
    if w_out != w_in:
        img = np.clip(np.einsum("ow,hwc->hoc", _weights(w_in, w_out, kind), img), 0, 255)
    if h_out != h_in:
        img = np.clip(np.einsum("oh,hwc->owc", _weights(h_in, h_out, kind), img), 0, 255)
    return img


# --------------------------------------------------------------------------- the two transforms
def vmamba_geometry(width: int, height: int, resolution: int):
    short = int(256 / 224 * resolution)
    new = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    left = int(round((new[0] - resolution) / 2.0))
    top = int(round((new[1] - resolution) / 2.0))
    return new, (left, top)


def transform(image: np.ndarray, family: str, resolution: int, kind: str | None = None):
    """Golden tensor (3, R, R) float64 through PIL, and the PIL-free float version of it."""
    rgb = np.stack([image] * 3, -1) if image.ndim == 2 else image
    pil = Image.fromarray(rgb, "RGB")
    if family == "vmamba":
        kind = kind or "bicubic"
        size, (left, top) = vmamba_geometry(pil.width, pil.height, resolution)
        (mean, std) = IMAGENET
    else:
        kind = kind or "bilinear"
        size, (left, top) = (resolution, resolution), (0, 0)
        (mean, std) = HALF
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[kind]
    resized = np.asarray(pil.resize(size, resample), dtype=np.float64)
    floated = float_resize(rgb, size, kind)
    crop = (slice(top, top + resolution), slice(left, left + resolution))
    out = []
    for img in (resized[crop], floated[crop]):
        assert img.shape == (resolution, resolution, 3)
        out.append(((img / 255.0 - np.array(mean)) / np.array(std)).transpose(2, 0, 1))
    return out[0], out[1]


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    cases = [(name, w, h, mode, RESOLUTION) for name, (w, h, mode) in IMAGES.items()]
    cases.append((DIGIT[0], DIGIT[1], DIGIT[2], DIGIT[3], DIGIT_RESOLUTION))
    for seed, (name, w, h, mode, resolution) in enumerate(cases):
        image = textured(w, h, mode, seed)
        arrays[f"image/{name}"] = image
        for family in ("vmamba", "medmamba"):
            golden, independent = transform(image, family, resolution)
            std = np.array(IMAGENET[1] if family == "vmamba" else HALF[1])[:, None, None]
            lsb = np.max(np.abs(golden - independent) * std) * 255  # in 8-bit steps
            other = transform(image, family, resolution, "bilinear" if family == "vmamba" else "bicubic")[0]
            print(f"{name:16s} {family:8s} R={resolution}: PIL vs PIL-free {lsb:.2f}/255, "
                  f"other filter differs by {np.max(np.abs(golden - other)):.3f}")
            if lsb > 2.0:
                raise SystemExit(f"{name} {family}: PIL and the PIL-free resize disagree by {lsb:.2f}/255")
            arrays[f"{family}/{name}/r{resolution}"] = golden.astype(np.float32)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(arrays)} arrays)")


if __name__ == "__main__":
    main()
