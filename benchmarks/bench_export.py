"""Export benchmark: export time, node counts and ONNX Runtime vs PyTorch eager CPU latency.

    python benchmarks/bench_export.py                       # VMamba-T s1l8 at 224, fp32 + fp16 + compressed
    python benchmarks/bench_export.py --archs vmamba_tiny_s1l8 vanilla_vmamba_tiny medmamba_t --runs 10
    python benchmarks/bench_export.py --features-only --resolution 512 --parity-shape 512 1024   # backbones

Random weights (timings and node counts do not depend on the values; parity is checked anyway).
Latency: PyTorch eager (float32 model) and ONNX Runtime CPU timed in alternation, median of --runs
runs after --warmup untimed ones, batch 1, all of this machine's CPU threads; the load average is
printed because other processes on a shared machine slow both.
Prints a table (and --json FILE writes the rows).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402

from exporter.compress import apply_quartermap, apply_vmeanba  # noqa: E402
from exporter.export.onnx_export import count_nodes, export_onnx  # noqa: E402
from exporter.models import create_model  # noqa: E402
from exporter.verify.parity import check_parity, latency_side_by_side  # noqa: E402


def compressed_variant(model):
    """QuarterMap every:3 (the authors' default) + folded VMeanba on the first 4 stage-2 blocks."""
    stage2 = [n for n in model.ssm_layers() if n.startswith("layers.2.")][:4]
    return apply_quartermap(apply_vmeanba(model, stage2), "every:3")


def bench(arch: str, variant: str, precision: str, resolution: int, runs: int, warmup: int, tmp: Path,
          features_only: bool = False, parity_shape: tuple | None = None) -> dict:
    torch.manual_seed(0)
    model = create_model(arch, features_only=features_only).eval()
    if variant == "compressed":
        model = compressed_variant(model)
    path = tmp / f"{arch}_{variant}_{precision}.onnx"
    t0 = time.perf_counter()
    result = export_onnx(model, path, precision=precision, resolution=(resolution, resolution))
    wall = time.perf_counter() - t0
    proto = onnx.load(str(path))
    shape = (1, 3, resolution, resolution)
    # parity at another shape than the export's when asked (dynamic height/width)
    par = check_parity(model, path, precision=precision, input_shape=(1, 3, *(parity_shape or shape[2:])),
                       iterations=1)
    dtype = np.float16 if precision == "fp16" else np.float32
    pt_lat, ort_lat = latency_side_by_side(model, path, shape, warmup=warmup, runs=runs, onnx_dtype=dtype)
    row = dict(
        arch=arch + (" (features)" if features_only else ""), variant=variant, precision=precision,
        resolution=resolution, parity_shape="x".join(map(str, parity_shape or shape[2:])),
        export_s=round(result.export_seconds, 1), export_wall_s=round(wall, 1),
        nodes=result.node_count, nodes_inlined=count_nodes(proto, inline_functions=True),
        custom=result.custom_nodes, file_mb=round(path.stat().st_size / 2**20, 1),
        dynamic=",".join(result.dynamic_axes.values()), parity_max_abs=par.max_abs_error, parity_pass=par.passed,
        pytorch_ms=round(pt_lat.median_ms, 1), onnxrt_ms=round(ort_lat.median_ms, 1),
        pytorch_min_ms=round(pt_lat.min_ms, 1), onnxrt_min_ms=round(ort_lat.min_ms, 1),
    )
    path.unlink()
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["vmamba_tiny_s1l8"])
    p.add_argument("--variants", nargs="+", default=["plain", "compressed"], choices=["plain", "compressed"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], choices=["fp32", "fp16"])
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--features-only", action="store_true", help="the feature backbones (outputs feat0..feat3)")
    p.add_argument("--parity-shape", type=int, nargs=2, metavar=("H", "W"),
                   help="run the parity check at this input size instead of the export's")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            for variant in args.variants:
                for precision in args.precisions:
                    if variant == "compressed" and precision == "fp16":
                        continue  # one compressed row (fp32) is enough to show the effect
                    row = bench(arch, variant, precision, args.resolution, args.runs, args.warmup, Path(tmp),
                                args.features_only, tuple(args.parity_shape) if args.parity_shape else None)
                    rows.append(row)
                    print(f"  done {arch} {variant} {precision}: export {row['export_s']} s", file=sys.stderr, flush=True)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"ONNX export, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                    f"torch {torch.__version__}, batch 1 at {args.resolution}x{args.resolution}, "
                    f"median of {args.runs} after {args.warmup} warm-up")
    cols = ["arch", "variant", "precision", "export_s", "nodes", "nodes_inlined", "custom", "file_mb", "dynamic",
            "parity_shape", "parity_max_abs", "pytorch_ms", "onnxrt_ms", "pytorch_min_ms", "onnxrt_min_ms"]
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[f"{r[c]:.2e}" if c == "parity_max_abs" else
                    (", ".join(f"{k}:{v}" for k, v in r[c].items()) if c == "custom" else str(r[c])) for c in cols])
    Console(width=200).print(t)
    print(f"load average during the run (1/5/15 min): {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if all(r["parity_pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
