"""Export benchmark: export time, node counts and ONNX Runtime vs PyTorch eager CPU latency.

    python benchmarks/bench_export.py                       # VMamba-T s1l8 at 224, fp32 + fp16 + compressed
    python benchmarks/bench_export.py --archs vmamba_tiny_s1l8 vanilla_vmamba_tiny medmamba_t --runs 10
    python benchmarks/bench_export.py --features-only --resolution 512 --parity-shape 512 1024   # backbones
    python benchmarks/bench_export.py --features-only --resolution 512x1024 --batch 16 --parity-batch 2 \
        --parity-shape 640 480 --variants plain --precisions fp32 --runs 0
    python benchmarks/bench_export.py --features-only --resolution 512 --variants plain compressed --runs 0 \
        --engine --engine-shapes 1x3x512x512,1x3x512x512,16x3x1024x1024 [--engine-plugins LIB]

Random weights (timings and node counts do not depend on the values; parity is checked anyway).
Variants: plain; vmeanba (folded VMeanba on the first 4 stage-2 blocks); quartermap (QuarterMap
every:3, the authors' default); compressed (both).
Parity: ONNX Runtime CPU against PyTorch (Polygraphy, exporter.verify.check_parity) at
--parity-batch x --parity-shape (default: the export's example shape), so a shape other than the
export's exercises the dynamic batch / height / width.
Latency: PyTorch eager (float32 model) and ONNX Runtime CPU timed in alternation, median of --runs
runs after --warmup untimed ones, at the example shape, all of this machine's CPU threads; the load
average is printed because other processes on a shared machine slow both. --runs 0 skips it.
--engine: also build a serialized TensorRT engine of each export with exporter.engine.build_engine
(TensorRT-RTX builds on the CPU; nothing is executed): from the .onnx (custom ops inlined from their
function bodies), or with --engine-plugins LIB from the .trt.onnx with our plugin library; shape
profile --engine-shapes (vm-export's syntax; default: vm-export's default profile).
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


STAGE2_VMEANBA = 4  # folded VMeanba on the first 4 stage-2 blocks (bench_e2e's vmeanba-k4)
VARIANTS = ("plain", "vmeanba", "quartermap", "compressed")


def compressed_variant(model, variant: str = "compressed"):
    """vmeanba: folded VMeanba on the first 4 stage-2 blocks; quartermap: QuarterMap every:3 (the
    authors' default); compressed: both; plain: the model as it is."""
    if variant in ("vmeanba", "compressed"):
        model = apply_vmeanba(model, [n for n in model.ssm_layers() if n.startswith("layers.2.")][:STAGE2_VMEANBA])
    if variant in ("quartermap", "compressed"):
        model = apply_quartermap(model, "every:3")
    return model


def parse_resolution(text: str) -> tuple[int, int]:
    """``512`` -> (512, 512), ``512x1024`` -> (512, 1024) (H x W)."""
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) not in (1, 2) or min(dims, default=0) < 1:
        raise argparse.ArgumentTypeError(f"bad resolution {text!r}: write S or HxW, e.g. 512 or 512x1024")
    return dims * 2 if len(dims) == 1 else dims


def engine_row(onnx_path: Path, trt_path: Path | None, example_shape: tuple, shapes: str | None,
               plugins: str | None, tmp: Path) -> dict:
    """Build a serialized engine of the export (nothing is executed): the build outcome and figures."""
    from exporter.engine import EngineError, build_engine
    from exporter.pipeline import default_engine_profile, parse_engine_shapes

    profile = parse_engine_shapes(shapes) if shapes else default_engine_profile(example_shape)
    source = trt_path if plugins else onnx_path
    t0 = time.perf_counter()
    try:
        r = build_engine(source, tmp / "bench.engine", profiles=[profile], plugin_library=plugins)
    except EngineError as exc:
        return {"engine_outcome": f"failed (exit {exc.exit_code}): {str(exc)[:300]}",
                "engine_wall_s": round(time.perf_counter() - t0, 1)}
    (tmp / "bench.engine").unlink()
    return {"engine_outcome": "built (not executed)", "engine_builder": f"{r.builder} {r.builder_version}",
            "engine_source": "trt.onnx + plugin library" if plugins else "onnx (function bodies)",
            "engine_profile": f"{'x'.join(map(str, profile.min))},{'x'.join(map(str, profile.opt))},"
                              f"{'x'.join(map(str, profile.max))}",
            "engine_layers": r.num_layers, "engine_plugin_nodes": r.plugin_nodes,
            "engine_parse_s": round(r.parse_seconds, 1), "engine_build_s": round(r.build_seconds, 1),
            "engine_mb": round(r.engine_bytes / 2**20, 1), "engine_warnings": len(r.warnings),
            "engine_errors": len(r.errors), "engine_checked_warnings": r.checked_warning_counts,
            "engine_output_shapes": {k: list(v) for k, v in r.output_shapes.items()}}


def bench(arch: str, variant: str, precision: str, resolution, runs: int, warmup: int, tmp: Path,
          features_only: bool = False, parity_shape: tuple | None = None, batch: int = 1,
          parity_batch: int | None = None, engine: bool = False, engine_shapes: str | None = None,
          engine_plugins: str | None = None) -> dict:
    resolution = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    torch.manual_seed(0)
    model = compressed_variant(create_model(arch, features_only=features_only).eval(), variant)
    path = tmp / f"{arch}_{variant}_{precision}.onnx"
    t0 = time.perf_counter()
    result = export_onnx(model, path, precision=precision, batch=batch, resolution=resolution,
                         trt_onnx=bool(engine and engine_plugins))
    wall = time.perf_counter() - t0
    proto = onnx.load(str(path))
    shape = (batch, 3, *resolution)
    # parity at another shape than the export's when asked (dynamic batch / height / width)
    par_shape = (parity_batch or batch, 3, *(parity_shape or resolution))
    par = check_parity(model, path, precision=precision, input_shape=par_shape, iterations=1)
    row = dict(
        arch=arch + (" (features)" if features_only else ""), variant=variant, precision=precision,
        resolution="x".join(map(str, resolution)), batch=batch, parity_shape="x".join(map(str, par_shape)),
        export_s=round(result.export_seconds, 1), export_wall_s=round(wall, 1),
        nodes=result.node_count, nodes_inlined=count_nodes(proto, inline_functions=True),
        custom=result.custom_nodes, file_mb=round(path.stat().st_size / 2**20, 1),
        dynamic=",".join(result.dynamic_axes.values()), outputs=[o.name for o in proto.graph.output],
        parity_max_abs=par.max_abs_error, parity_pass=par.passed,
    )
    if runs > 0:
        dtype = np.float16 if precision == "fp16" else np.float32
        pt_lat, ort_lat = latency_side_by_side(model, path, shape, warmup=warmup, runs=runs, onnx_dtype=dtype)
        row.update(pytorch_ms=round(pt_lat.median_ms, 1), onnxrt_ms=round(ort_lat.median_ms, 1),
                   pytorch_min_ms=round(pt_lat.min_ms, 1), onnxrt_min_ms=round(ort_lat.min_ms, 1))
    if engine:
        row.update(engine_row(path, result.trt_onnx_path, shape, engine_shapes, engine_plugins, tmp))
    path.unlink()
    if result.trt_onnx_path:
        result.trt_onnx_path.unlink()
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["vmamba_tiny_s1l8"])
    p.add_argument("--variants", nargs="+", default=["plain", "compressed"], choices=VARIANTS)
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], choices=["fp32", "fp16"])
    p.add_argument("--resolution", type=parse_resolution, default=(224, 224), help="S or HxW (default 224)")
    p.add_argument("--batch", type=int, default=1, help="the export's example batch (default 1)")
    p.add_argument("--parity-batch", type=int, default=None, help="batch of the parity input (default --batch)")
    p.add_argument("--engine", action="store_true", help="also build a TensorRT(-RTX) engine of each export")
    p.add_argument("--engine-shapes", default=None, metavar="MIN,OPT,MAX", help="shape profile (vm-export syntax)")
    p.add_argument("--engine-plugins", default=None, metavar="LIB",
                   help="build from the .trt.onnx with this plugin library (libvmamba_trt_plugins.so)")
    p.add_argument("--runs", type=int, default=10, help="timed latency runs (0: no latency)")
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
                    if variant != "plain" and precision == "fp16":
                        continue  # one compressed row (fp32) is enough to show the effect
                    row = bench(arch, variant, precision, args.resolution, args.runs, args.warmup, Path(tmp),
                                args.features_only, tuple(args.parity_shape) if args.parity_shape else None,
                                args.batch, args.parity_batch, args.engine, args.engine_shapes, args.engine_plugins)
                    row.update(date_utc=time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                               load_avg_1m=round(os.getloadavg()[0], 1))
                    rows.append(row)
                    print(f"  done {arch} {variant} {precision}: export {row['export_s']} s", file=sys.stderr, flush=True)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"ONNX export, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                    f"torch {torch.__version__}, batch {args.batch} at {args.resolution[0]}x{args.resolution[1]}, "
                    f"median of {args.runs} after {args.warmup} warm-up")
    cols = ["arch", "variant", "precision", "resolution", "batch", "export_s", "nodes", "nodes_inlined", "custom",
            "file_mb", "dynamic", "parity_shape", "parity_max_abs"]
    if args.runs > 0:
        cols += ["pytorch_ms", "onnxrt_ms", "pytorch_min_ms", "onnxrt_min_ms"]
    if args.engine:
        cols += ["engine_outcome", "engine_layers", "engine_build_s", "engine_mb"]
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[f"{r[c]:.2e}" if c == "parity_max_abs" else
                    (", ".join(f"{k}:{v}" for k, v in r[c].items()) if c == "custom" else str(r.get(c, "-")))
                    for c in cols])
    Console(width=200).print(t)
    print(f"load average during the run (1/5/15 min): {os.getloadavg()}")
    if args.json:  # temp file beside it, then a rename
        tmp_json = Path(args.json).with_name(Path(args.json).name + ".tmp")
        tmp_json.write_text(json.dumps(rows, indent=2))
        os.replace(tmp_json, args.json)
    engines_ok = all(r["engine_outcome"].startswith("built") for r in rows) if args.engine else True
    return 0 if all(r["parity_pass"] for r in rows) and engines_ok else 1


if __name__ == "__main__":
    sys.exit(main())
