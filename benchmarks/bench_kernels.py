"""Time the CUDA kernels (libvmamba_kernels.so via plugins/kernels.py) on VMamba stage shapes.

Assumes the library is built (benchmarks/run_device_kernels.sh builds, tests and then runs this).
Timing: each measurement is a CUDA graph of --reps calls over rotating input copies (together
larger than the L2 cache), replayed --iters times after a warm-up; the table gives the median
replay time divided by --reps (CUDA events). "floor" = x read once + y written once at the
device-to-device copy rate measured in the same run. Comparisons with the official VMamba code
come only from the same process: benchmarks/bench_side_by_side.py.

    python benchmarks/bench_kernels.py [--quick] [--json out.json] [--md out.md]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_side_by_side import copy_bandwidth_gbs, graph_replay_ms  # noqa: E402  (one timer, one copy ceiling)
from plugins import kernels  # noqa: E402

SIDES = [56, 28, 14, 7]
MODELS = {  # name: (dims of stage 0, ssm_ratio, d_state); dt_rank = ceil(dims / 16)
    "T-s1l8": (96, 1, 1),      # also VMamba-S s1l20 (same stage widths)
    "B-s1l20": (128, 1, 1),
    "T-v0": (96, 2, 16),       # VMamba-T v0 (d_inner = 2 x dims, d_state 16)
    "Med-T": (48, 2, 16),      # MedMamba-T (dims 48: D = 96 at stage 0, dt_rank 3)
}
OPS = ("ss2d", "vmeanba", "quartermap")


def scan_inputs(B, D, H, W, N, R, dtype, copies):
    xs = [torch.randn(B, D, H, W, device="cuda").to(dtype) for _ in range(copies)]
    params = (
        (torch.randn(4, R + 2 * N, D, device="cuda") / math.sqrt(D)).to(dtype),
        (torch.randn(4, D, R, device="cuda") / math.sqrt(R)).to(dtype),
        torch.randn(4, D, device="cuda") * 0.5 - 2.0,
        torch.log(torch.rand(4 * D, N, device="cuda") * 4 + 0.5),
        torch.randn(4 * D, device="cuda"),
    )
    return xs, params


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="T-s1l8 shapes only")
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), help="shape families (default: all; --quick: T-s1l8)")
    ap.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="ops to time (default: all)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the decomposition-knob sweep of the SS2D op")
    ap.add_argument("--iters", type=int, default=20, help="graph replays timed (median)")
    ap.add_argument("--reps", type=int, default=8, help="calls captured per graph")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--md", help="write the table as Markdown here")
    args = ap.parse_args()
    ok, reason = kernels.kernels_available()
    if not ok:
        print(f"bench_kernels: kernels unavailable: {reason}")
        return 1
    dev = torch.cuda.get_device_name()
    bw = copy_bandwidth_gbs()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []

    def record(op, model, stage, B, D, H, W, N, R, dtype, ms, min_bytes):
        gbs = min_bytes / ms / 1e6
        floor = min_bytes / bw / 1e6
        rows.append(dict(op=op, model=model, stage=stage, batch=B, D=D, H=H, W=W, d_state=N, dt_rank=R,
                         dtype=str(dtype).replace("torch.", ""), ms=ms, min_bytes=min_bytes, gbs=gbs,
                         copy_frac=gbs / bw, floor_ms=floor, x_floor=ms / floor))

    stages = [0, 1, 2, 3]
    models = args.models or (["T-s1l8"] if args.quick else list(MODELS))
    for model in models:
        dims, ratio, N = MODELS[model]
        for stage in stages:
            d_model = dims << stage
            D, R, H = d_model * ratio, math.ceil(d_model / 16), SIDES[stage]
            W = H
            for B in (1, 128):
                for dtype in (torch.float32, torch.float16):
                    esize = torch.finfo(dtype).bits // 8
                    x_bytes = B * D * H * W * esize
                    copies = max(1, min(4, math.ceil(2 * l2 / x_bytes)))
                    xs, params = scan_inputs(B, D, H, W, N, R, dtype, copies)
                    if "ss2d" in args.ops:
                        ms = graph_replay_ms(lambda x: kernels.ss2d_scan(x, *params), [(x,) for x in xs], args.iters,
                                             args.reps)
                        record("ss2d", model, stage, B, D, H, W, N, R, dtype, ms, 2 * x_bytes)
                    if "vmeanba" in args.ops:
                        ms = graph_replay_ms(lambda x: kernels.vmeanba_scan(x, *params, variant=0), [(x,) for x in xs],
                                           args.iters, args.reps)
                        record("vmeanba0", model, stage, B, D, H, W, N, R, dtype, ms, 2 * x_bytes)
                    if "quartermap" in args.ops and model == "T-s1l8":
                        down_bytes = x_bytes // 4 + x_bytes // 4  # kept pixels read + written
                        small = [kernels.quartermap_down(x) for x in xs]
                        ms = graph_replay_ms(lambda x: kernels.quartermap_down(x), [(x,) for x in xs], args.iters, args.reps)
                        record("qm_down", model, stage, B, D, H, W, N, R, dtype, ms, down_bytes)
                        ms = graph_replay_ms(lambda s: kernels.quartermap_up(s, xs[0]), [(t,) for t in small], args.iters,
                                           args.reps)
                        record("qm_up", model, stage, B, D, H, W, N, R, dtype, ms, x_bytes + x_bytes // 4)
                    del xs, params
                    torch.cuda.empty_cache()

    # decomposition sweeps of the SS2D op (launcher knobs; "auto" = the launcher's own choice):
    # VMK_SCAN_SLOTS forces the scan's chunk slots, VMK_PREP_TILE the float16 prep variant, VMK_SCAN_DT=simt
    # the CUDA-core dt, VMK_SCAN_SEGMENTS the segment count of the chunked scan (batches up to 4)
    knobs = {"VMK_SCAN_SLOTS": ("auto", "1", "2", "4", "8", "16"), "VMK_PREP_TILE": ("auto", "simt", "large", "small", "flat"),
             "VMK_SCAN_DT": ("auto", "simt"), "VMK_SCAN_SEGMENTS": ("auto", "1", "2", "4", "8", "16")}
    sweep = []
    for B, stage in () if args.no_sweep else ((128, 0), (128, 1), (128, 2), (128, 3), (1, 0), (1, 1), (1, 2), (1, 3)):
        D, H = 96 << stage, SIDES[stage]
        xs, params = scan_inputs(B, D, H, H, 1, math.ceil(D / 16), torch.float16, 2)
        for var, values in knobs.items():
            for value in values:
                if value == "auto":
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
                ms = graph_replay_ms(lambda x: kernels.ss2d_scan(x, *params), [(x,) for x in xs], args.iters, args.reps)
                sweep.append((B, stage, var, value, ms))
            os.environ.pop(var, None)
        del xs, params

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Device: {dev}; torch {torch.__version__}; {date}; D2D copy {bw:.0f} GB/s (read+write); "
             f"CUDA graph of {args.reps} calls, median of {args.iters} replays; "
             "command: python benchmarks/bench_kernels.py",
             "", "| op | model | stage | batch | D | HxW | N | R | dtype | time ms | min bytes MB | GB/s | % copy | x floor |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['model']} | {r['stage']} | {r['batch']} | {r['D']} | {r['H']}x{r['W']} | "
                     f"{r['d_state']} | {r['dt_rank']} | {r['dtype']} | {r['ms']:.4f} | {r['min_bytes'] / 1e6:.1f} | "
                     f"{r['gbs']:.0f} | {100 * r['copy_frac']:.0f}% | {r['x_floor']:.1f} |")
    for var in knobs:
        lines += ["", f"SS2D {var} sweep (T-s1l8, fp16, ms per call): " +
                  "; ".join(f"b{B} s{st} {value}: {ms:.4f}" for B, st, v, value, ms in sweep if v == var)]
    table = "\n".join(lines)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=dev, date=date, copy_gbs=bw, rows=rows, knob_sweep=sweep), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
