"""Time the CUDA kernels (libvmamba_kernels.so via plugins/kernels.py) on VMamba stage shapes.

Assumes the library is built (benchmarks/run_device_kernels.sh builds, tests and then runs this).
CUDA events around each call, median of --iters after --warmup; inputs rotate among enough copies
to exceed the L2 cache. "min bytes" = x read once + y written once (weights are negligible);
GB/s = min bytes / time, compared with a device-to-device copy measured in the same run.
"vs official" = the official oflex selective-scan kernel's time (ANCHORS.md, fp32, same shape, the
scan alone without its cross-scan/merge/dt materialisation) divided by this kernel's time.

    python benchmarks/bench_kernels.py [--quick] [--json out.json] [--md out.md]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugins import kernels  # noqa: E402

# ANCHORS.md: official oflex scan, fp32, K=4, d_state 1, VMamba-T s1l8 shapes, H100.
OFFICIAL_MS = {(128, 0): 1.198, (128, 1): 0.619, (128, 2): 0.346, (128, 3): 0.322,
               (1, 0): 0.045, (1, 1): 0.045, (1, 2): 0.045, (1, 3): 0.045}
SIDES = [56, 28, 14, 7]
MODELS = {  # name: (dims of stage 0, ssm_ratio, d_state); dt_rank = ceil(dims / 16)
    "T-s1l8": (96, 1, 1),
    "B-s1l20": (128, 1, 1),
    "T-v0": (96, 2, 16),
}


def time_ms(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(start, end):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(start, end))


def copy_bandwidth() -> float:
    n = 1 << 28  # 1 GiB of float32
    a = torch.empty(n, device="cuda").uniform_()
    b = torch.empty_like(a)
    ms = time_ms(lambda: b.copy_(a), 20, 5)
    del a, b
    return 2 * n * 4 / ms / 1e6  # GB/s, bytes read + written


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


def rotating(fn, xs):
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % len(xs)
        fn(xs[state["i"]])
    return call


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="stage 0 of T-s1l8 only")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args()
    ok, reason = kernels.kernels_available()
    if not ok:
        print(f"bench_kernels: kernels unavailable: {reason}")
        return 1
    dev = torch.cuda.get_device_name()
    bw = copy_bandwidth()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []

    def record(op, model, stage, B, D, H, W, N, R, dtype, ms, min_bytes):
        gbs = min_bytes / ms / 1e6
        official = OFFICIAL_MS.get((B, stage)) if (model == "T-s1l8" and dtype == torch.float32 and op == "ss2d") else None
        rows.append(dict(op=op, model=model, stage=stage, batch=B, D=D, H=H, W=W, d_state=N, dt_rank=R,
                         dtype=str(dtype).replace("torch.", ""), ms=ms, min_bytes=min_bytes, gbs=gbs,
                         copy_frac=gbs / bw, official_ms=official,
                         vs_official=(official / ms) if official else None))

    stages = [0] if args.quick else [0, 1, 2, 3]
    models = ["T-s1l8"] if args.quick else list(MODELS)
    for model in models:
        dims, ratio, N = MODELS[model]
        for stage in stages:
            d_model = dims << stage
            D, R, H = d_model * ratio, math.ceil(d_model / 16), SIDES[stage]
            W = H
            for B in (1, 128):
                for dtype in ((torch.float32, torch.float16) if model == "T-s1l8" else (torch.float32,)):
                    esize = torch.finfo(dtype).bits // 8
                    x_bytes = B * D * H * W * esize
                    copies = max(1, min(4, math.ceil(2 * l2 / x_bytes)))
                    xs, params = scan_inputs(B, D, H, W, N, R, dtype, copies)
                    ms = time_ms(rotating(lambda x: kernels.ss2d_scan(x, *params), xs), args.iters, args.warmup)
                    record("ss2d", model, stage, B, D, H, W, N, R, dtype, ms, 2 * x_bytes)
                    if N == 1 or B == 1 or stage > 0:
                        ms = time_ms(rotating(lambda x: kernels.vmeanba_scan(x, *params, variant=0), xs),
                                     args.iters, args.warmup)
                        record("vmeanba0", model, stage, B, D, H, W, N, R, dtype, ms, 2 * x_bytes)
                    if model == "T-s1l8":
                        down_bytes = x_bytes // 4 + x_bytes // 4  # kept pixels read + written
                        small = [kernels.quartermap_down(x) for x in xs]
                        ms = time_ms(rotating(lambda x: kernels.quartermap_down(x), xs), args.iters, args.warmup)
                        record("qm_down", model, stage, B, D, H, W, N, R, dtype, ms, down_bytes)
                        ms = time_ms(rotating(lambda s: kernels.quartermap_up(s, xs[0]), small), args.iters,
                                     args.warmup)
                        record("qm_up", model, stage, B, D, H, W, N, R, dtype, ms, x_bytes + x_bytes // 4)
                    del xs, params
                    torch.cuda.empty_cache()

    # channels-per-block sweep of the SS2D scan at the target shape (VMK_SCAN_CHANNELS caps it)
    import os
    sweep = []
    xs, params = scan_inputs(128, 96, 56, 56, 1, 6, torch.float32, 2)
    for cap in (1, 2, 4, 8):
        os.environ["VMK_SCAN_CHANNELS"] = str(cap)
        sweep.append((cap, time_ms(rotating(lambda x: kernels.ss2d_scan(x, *params), xs), args.iters, args.warmup)))
    os.environ.pop("VMK_SCAN_CHANNELS", None)
    del xs, params

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Device: {dev}; torch {torch.__version__}; {date}; D2D copy {bw:.0f} GB/s (read+write); "
             f"median of {args.iters} after {args.warmup} warm-up; command: python benchmarks/bench_kernels.py",
             "", "| op | model | stage | batch | D | HxW | N | R | dtype | time ms | min bytes MB | GB/s | % copy | official ms | speed-up vs official |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        off = f"{r['official_ms']:.3f}" if r["official_ms"] else "-"
        vs = f"{r['vs_official']:.1f}x" if r["vs_official"] else "-"
        lines.append(f"| {r['op']} | {r['model']} | {r['stage']} | {r['batch']} | {r['D']} | {r['H']}x{r['W']} | "
                     f"{r['d_state']} | {r['dt_rank']} | {r['dtype']} | {r['ms']:.4f} | {r['min_bytes'] / 1e6:.1f} | "
                     f"{r['gbs']:.0f} | {100 * r['copy_frac']:.0f}% | {off} | {vs} |")
    lines += ["", "SS2D scan channels per block (T-s1l8 stage 0, batch 128, fp32): " +
              ", ".join(f"G<={cap}: {ms:.3f} ms" for cap, ms in sweep)]
    table = "\n".join(lines)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=dev, date=date, copy_gbs=bw, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
