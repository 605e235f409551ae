"""Train the two small digits models shipped in exporter/assets (a few minutes on 2 CPU cores).

    python samples/train_digits.py                 # both families
    python samples/train_digits.py --family vmamba --epochs 12

Data: scikit-learn's bundled digits (1797 8x8 images, 10 classes), split by
``exporter.samples_data`` (stratified, seed 0): 60% train, 20% calibration, 20% test. The 8x8
images go through the same preprocessing as calibration image files (``load_calibration``) at
resolution 32. Training uses the differentiable reference path of plugins.ops (autograd is on),
so no kernel library is needed. Everything is seeded; the script writes
``exporter/assets/digits_{family}.safetensors`` and ``digits_{family}.json`` (config, split seed,
training settings, accuracy on each held-out split).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.samples_data import ASSETS_DIR, DIGITS_RESOLUTION, SPLIT_SEED, build_digits_model, digits_dataset  # noqa: E402

CONFIGS = {
    # v2 line (forward_type v05_noz, d_state 1, ln2d, patch-embed v2, downsample v3), 8 SS2D layers
    "vmamba": dict(depths=[1, 2, 4, 1], dims=16, num_classes=10, drop_path_rate=0.0, ssm_d_state=1, ssm_ratio=1.0,
                   ssm_dt_rank="auto", ssm_conv=3, ssm_conv_bias=False, forward_type="v05_noz", mlp_ratio=2.0,
                   downsample_version="v3", patchembed_version="v2", norm_layer="ln2d"),
    # MedMamba VSSM (SS_Conv_SSM blocks, z-gated SS2D), 8 SS2D layers
    "medmamba": dict(depths=[1, 2, 4, 1], dims=[16, 32, 64, 128], num_classes=10, d_state=4, drop_path_rate=0.0),
}
TRAIN_SEED = 0


def scan_reliant_init(model: torch.nn.Module, x_proj_scale: float = 8.0, dt_max: float = 0.5, ds: float = 0.1) -> None:
    """Re-initialise every SS2D so that the small model actually routes information through its scans.

    With the official initialisation (in_proj std 0.02, x_proj +-D^-0.5, dt <= 0.1, Ds = 1) the scan
    term B*u*C is cubic in small activations: in a 16-channel model trained for a few minutes it stays
    ~1e-5 of the skip term Ds*u, the scan is effectively unused and VMeanba changes nothing, so a
    layer-selection demo would be trivial. Larger in_proj / x_proj weights, longer dt and a small
    skip weight make the scans carry signal (ImageNet-trained VMamba models get there by training).
    """
    with torch.no_grad():
        for ss2d in model.ssm_layers().values():
            ss2d.reset_ssm_parameters(dt_min=1e-3, dt_max=dt_max)
            ss2d.in_proj.reset_parameters()  # nn.Linear's default (fan-in uniform) instead of std 0.02
            ss2d.x_proj_weight.mul_(x_proj_scale)
            ss2d.Ds.fill_(ds)


def accuracy(model, images, labels, batch_size=256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            correct += (model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
    return correct / len(images)


def random_shift(images: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to max_shift pixels (the digits have an empty border, so rolling is safe)."""
    out = torch.empty_like(images)
    shifts = torch.randint(-max_shift, max_shift + 1, (len(images), 2), generator=gen)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        out[i] = images[i].roll((dy, dx), dims=(1, 2))
    return out


def train(family: str, epochs: int, batch_size: int, lr: float) -> dict:
    torch.manual_seed(TRAIN_SEED)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    x_train, y_train = digits_dataset("train", family=family)
    model = build_digits_model(family, CONFIGS[family])
    scan_reliant_init(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * -(-len(x_train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        total = 0.0
        for i in range(0, len(x_train), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(random_shift(x_train[idx], gen)), y_train[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"[{family}] epoch {epoch + 1}/{epochs} loss {total / len(x_train):.4f} ({time.time() - start:.0f}s)",
              flush=True)
    model.eval()
    acc = {split: accuracy(model, *digits_dataset(split, family=family)) for split in ("train", "calibration", "test")}
    return {"model": model, "accuracy": acc, "seconds": time.time() - start}


def save(family: str, result: dict, epochs: int, batch_size: int, lr: float) -> None:
    from safetensors.torch import save_file

    ASSETS_DIR.mkdir(parents=True, exist_ok=True)
    weights = f"digits_{family}.safetensors"
    state = {k: v.detach().contiguous() for k, v in result["model"].state_dict().items()}
    save_file(state, str(ASSETS_DIR / weights))
    info = {
        "family": family,
        "config": CONFIGS[family],
        "weights": weights,
        "resolution": DIGITS_RESOLUTION,
        "num_ssm_layers": len(result["model"].ssm_layers()),
        "data": "sklearn.datasets.load_digits (8x8, 10 classes), stratified split 60/20/20 train/calibration/test",
        "split_seed": SPLIT_SEED,
        "train_seed": TRAIN_SEED,
        "training": {"epochs": epochs, "batch_size": batch_size, "optimizer": "AdamW", "max_lr": lr,
                     "weight_decay": 0.05, "schedule": "one-cycle", "augmentation": "random shift +-2 px",
                     "label_smoothing": 0.05,
                     "init": "scan_reliant_init (x_proj x8, dt_max 0.5, Ds 0.1, in_proj fan-in uniform)", "cpu_seconds": round(result["seconds"], 1)},
        "accuracy": {k: round(v, 4) for k, v in result["accuracy"].items()},
        "command": f"python samples/train_digits.py --family {family} --epochs {epochs}",
    }
    (ASSETS_DIR / f"digits_{family}.json").write_text(json.dumps(info, indent=2) + "\n")
    size = (ASSETS_DIR / weights).stat().st_size
    print(f"[{family}] wrote {weights} ({size / 1e6:.2f} MB), accuracy {info['accuracy']}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is robust on a shared machine; 2 is faster on an idle one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # the long-decay scan products underflow; denormals slow CPUs badly
    for family in (CONFIGS if args.family == "all" else [args.family]):
        result = train(family, args.epochs, args.batch_size, args.lr)
        save(family, result, args.epochs, args.batch_size, args.lr)


if __name__ == "__main__":
    main()
