"""Make the golden data of tests/test_backbone.py from the official ``Backbone_VSSM`` (not run in CI).

Needs a checkout of the official VMamba code (github.com/MzeroMiko/VMamba; only
``classification/models`` and ``kernels/selective_scan`` are read, see benchmarks/official.py):

    PYTHONPATH=$PWD python tests/make_backbone_golden.py --official third_party/VMamba [--full-size-report FILE]

On a CPU the official code takes its pure-PyTorch paths: ``selective_scan_torch`` (no CUDA
extension) and the ``CrossScanF`` / ``CrossMergeF`` autograd functions. Its ``cross_scan_fn`` /
``cross_merge_fn`` open a ``torch.cuda.device`` context even for CPU tensors, which fails without
CUDA; this script replaces those two entry points, in the imported official module only, by calls
of the same official ``CrossScanF`` / ``CrossMergeF`` without that context. Nothing else of the
official arithmetic is touched and no official file is changed
(``benchmarks/official.py``'s ``use_torch_cross_scan``, also used by benchmarks/bench_backbone.py).

Writes
- ``tests/data/backbone_golden.pt`` (``torch.load(weights_only=True)``): for the v2 line (``v05_noz``,
  ``ln2d``) and the v0 line (``v0``, ``ln``), reduced depths [1, 1, 2, 1] and dims 8 (8..64: the file stays small), the official
  ``Backbone_VSSM(out_indices=(0, 1, 2, 3))`` state dict after its initialisation (seed 1234) with every
  parameter perturbed by 0.02 * N(0, 1), and its four feature maps (``outputs[case][stage]``) for the
  shared ``inputs``: a square and a non-square input with odd stage sizes (batch 2 at 64x64, batch 1 at 112x80: stage 2 is 7x5, so the downsample pads);
- ``tests/data/backbone_key_manifest.json``: for every registered VMamba configuration, every key and
  shape of the official ``Backbone_VSSM`` built with that configuration's constructor arguments.

``--full-size-report FILE`` also compares, at full size (the released T configurations of both lines),
the official backbone with this project's ``create_model(name, features_only=True)`` carrying the
same perturbed weights, and writes the max abs error per feature map as JSON (docs/BACKBONES.md).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

import official  # noqa: E402  (benchmarks/official.py: copy and import of the official models)

GOLDEN = REPO / "tests" / "data" / "backbone_golden.pt"
MANIFEST = REPO / "tests" / "data" / "backbone_key_manifest.json"
SEED = 1234
PERTURBATION = 0.02
INPUT_SIZES = ((2, 64, 64), (1, 112, 80))  # (batch, H, W)
SMALL = dict(depths=[1, 1, 2, 1], dims=8, patch_size=4, in_chans=3, num_classes=1000, ssm_dt_rank="auto",
             ssm_act_layer="silu", ssm_conv=3, ssm_drop_rate=0.0, ssm_init="v0", mlp_act_layer="gelu",
             mlp_drop_rate=0.0, gmlp=False, patch_norm=True, drop_path_rate=0.0, use_checkpoint=False,
             posembed=False, imgsize=224)
FIXTURES = {
    "backbone_v05noz_ln2d": dict(SMALL, ssm_d_state=1, ssm_ratio=1.0, ssm_conv_bias=False, forward_type="v05_noz",
                                 mlp_ratio=4.0, norm_layer="ln2d", downsample_version="v3", patchembed_version="v2"),
    "backbone_v0_ln": dict(SMALL, ssm_d_state=16, ssm_ratio=2.0, ssm_conv_bias=True, forward_type="v0",
                           mlp_ratio=0.0, norm_layer="ln", downsample_version="v1", patchembed_version="v1"),
}
FULL_SIZE = ("vmamba_tiny_s1l8", "vanilla_vmamba_tiny")


def import_official(checkout: str):
    src = official.prepare_copy(checkout, REPO / "build" / "official-cpu")
    return official.use_torch_cross_scan(official.import_models(src))


def perturbed_backbone(models, config: dict, seed: int = SEED):
    torch.manual_seed(seed)
    backbone = models.Backbone_VSSM(out_indices=(0, 1, 2, 3), **config).eval()
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(PERTURBATION * torch.randn_like(p))
    return backbone


def golden_inputs(seed: int = SEED) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1)
    return [torch.randn(batch, 3, H, W, generator=gen) for batch, H, W in INPUT_SIZES]


def feature_maps(backbone, inputs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    with torch.no_grad():
        return [[o.detach().clone() for o in backbone(x)] for x in inputs]


def key_manifest(models) -> dict:
    from exporter.models import MODEL_CONFIGS

    manifest = {}
    for name, cfg in MODEL_CONFIGS.items():
        if cfg.family != "vmamba" or cfg.default_cfg.weights is not None:
            continue
        backbone = models.Backbone_VSSM(out_indices=(0, 1, 2, 3), **cfg.kwargs)  # its init does not run on meta
        manifest[name] = {"config": cfg.kwargs,
                          "keys": {k: list(v.shape) for k, v in backbone.state_dict().items()}}
    return manifest


def full_size_report(models) -> dict:
    from exporter.models import MODEL_CONFIGS, create_model

    report = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": f"{platform.machine()} CPU, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}", "configs": {}}
    for name in FULL_SIZE:
        theirs = perturbed_backbone(models, {**MODEL_CONFIGS[name].kwargs, "drop_path_rate": 0.0})
        ours = create_model(name, features_only=True).eval()
        ours.load_state_dict(theirs.state_dict(), strict=True)
        errors = {}
        inputs = golden_inputs()
        for x, official_maps, our_maps in zip(inputs, feature_maps(theirs, inputs), feature_maps(ours, inputs)):
            errors["x".join(map(str, x.shape[-2:]))] = [(a - b).abs().max().item()
                                                        for a, b in zip(our_maps, official_maps)]
        report["configs"][name] = errors
        print(f"{name}: max abs per feature map {errors}", flush=True)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", default=str(official.DEFAULT_CHECKOUT), help="official VMamba checkout")
    ap.add_argument("--full-size-report", default=None, help="also write full-size parity numbers (JSON) here")
    args = ap.parse_args(argv)
    models = import_official(args.official)
    inputs = golden_inputs()
    golden = {"seed": SEED, "perturbation": PERTURBATION, "inputs": inputs, "fixtures": {}}
    for name, config in FIXTURES.items():
        backbone = perturbed_backbone(models, config)
        golden["fixtures"][name] = {"family": "vmamba", "config": config,
                                    "state_dict": {k: v.clone() for k, v in backbone.state_dict().items()},
                                    "outputs": feature_maps(backbone, inputs)}
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    tmp = GOLDEN.with_name(GOLDEN.name + ".tmp")
    torch.save(golden, tmp)
    tmp.replace(GOLDEN)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size / 1e3:.0f} kB)")
    manifest = key_manifest(models)
    tmp = MANIFEST.with_name(MANIFEST.name + ".tmp")
    tmp.write_text(json.dumps(manifest, separators=(",", ":")))
    tmp.replace(MANIFEST)
    print(f"wrote {MANIFEST} ({MANIFEST.stat().st_size / 1e3:.0f} kB, {len(manifest)} configurations)")
    if args.full_size_report:
        Path(args.full_size_report).write_text(json.dumps(full_size_report(models), indent=2))
        print(f"wrote {args.full_size_report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
