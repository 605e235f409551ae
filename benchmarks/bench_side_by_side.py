"""The official VMamba code and this project, measured side by side in one process on one GPU.

    python benchmarks/bench_side_by_side.py --official third_party/VMamba [--only kernels|e2e]
        [--batch 128 1] [--models NAME ...] [--precisions fp32-tf32off fp32-default fp16]
        [--iters 30] [--budget-s 540] [--out DIR]
    python benchmarks/bench_side_by_side.py --replot out/side_by_side/side_by_side.json --out DIR

The official checkout is copied, patched for CUDA 13 and its oflex extension built by
``benchmarks/official.py`` (a second run on the same machine reuses the build).
``benchmarks/run_device_side_by_side.sh`` builds this project's kernel library too and runs this.

(a) Kernel table, per stage shape of the ``--models`` (224x224 input: 56/28/14/7; D, dt_rank and
    d_state read off this project's model of that name; equal shapes are measured once):
    - official core: ``forward_corev2`` of an official SS2D (v05: Triton cross-scan, x_proj/dt_proj
      as grouped conv1d, oflex scan, Triton cross-merge) with out_norm = Identity, i.e. from the
      depthwise conv/act output to the out_norm input; the same code at every shape, d_state 16 too;
    - oflex alone: the official selective-scan extension on the exact operands the core passes it;
    - ours: ``torch.ops.vmamba.ss2d_scan`` (plugins/kernels.py) on the same input and weights;
    - floor: x read once + y written once at the device-to-device copy rate measured in this run.
    Each is captured in one CUDA graph of ``reps`` calls over rotating input copies (enough copies to
    exceed the L2 cache; ``--reps`` calls at batch 1, where one call is near the launch latency) and
    timed with CUDA events: the median of ``--iters`` replays, divided by ``reps``.
    "max rel err" = max |ours - official| / max |official| on the same input.
(b) End-to-end table (224x224, random weights: the official model's, loaded into ours):
    - official: its factory, eager, ``torch.no_grad()``, oflex; fp16 = ``torch.autocast`` (AMP);
    - ours: ``exporter.runtime.prepare_runtime(model, mode="graph", dtype)`` (TF32 off in fp32),
      uncompressed and with VMeanba K=4 (layers.2.blocks.0-3, folded) + QuarterMap k=3.
    The median of ``--e2e-iters`` calls (``--latency-iters`` at batch 1), CUDA events.

Precisions: ``fp32-tf32off`` (cuDNN and matmul TF32 off), ``fp32-default`` (PyTorch's defaults:
cuDNN TF32 allowed, matmul TF32 off), ``fp16``.

Writes side_by_side.json and side_by_side.md to ``--out`` (after every section, so a run cut short
keeps what it measured), and at the end side_by_side_kernels.png: official / ours per stage shape, one
panel per batch, with the issue-10 targets drawn in. ``--budget-s``: rows that would start after the
budget is spent are listed as skipped; the run still writes its tables and exits 0.
``--replot side_by_side.json`` measures nothing and needs no GPU: it writes the Markdown and the plot
of a saved run into ``--out``.

Exit codes: 0 done; 2 bad arguments or no usable official checkout; 3 the official extension did not
build or import; 4 no CUDA device or this project's kernels are unavailable.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import official as official_code  # noqa: E402  (benchmarks/official.py)
from exporter.files import atomic_write_bytes  # noqa: E402
from exporter.models import MODEL_CONFIGS, create_model  # noqa: E402

KERNEL_MODELS = ["vmamba_tiny_s1l8", "vmamba_small_s1l20", "vmamba_base_s1l20", "vanilla_vmamba_tiny", "medmamba_t"]
E2E_CONFIGS = ("baseline", "vmeanba-k4+qm-k3")  # names of bench_e2e.CONFIGS
SHORT_NAMES = {"vmamba_tiny_s1l8": "T-s1l8", "vmamba_small_s1l20": "S-s1l20", "vmamba_base_s1l20": "B-s1l20",
               "vmamba_small_s2l15": "S-s2l15", "vmamba_base_s2l15": "B-s2l15", "vanilla_vmamba_tiny": "T-v0",
               "vanilla_vmamba_small": "S-v0", "vanilla_vmamba_base": "B-v0", "medmamba_t": "Med-T",
               "medmamba_s": "Med-S", "medmamba_b": "Med-B"}
EXIT_BAD_INPUT, EXIT_OFFICIAL_BUILD, EXIT_NO_KERNELS = 2, 3, 4


@dataclasses.dataclass(frozen=True)
class Precision:
    name: str
    dtype: torch.dtype
    cudnn_tf32: bool
    matmul_tf32: bool
    label: str


PRECISIONS = {p.name: p for p in (
    Precision("fp32-tf32off", torch.float32, False, False, "fp32, TF32 off"),
    Precision("fp32-default", torch.float32, True, False, "fp32, PyTorch defaults (cuDNN TF32 on, matmul TF32 off)"),
    Precision("fp16", torch.float16, True, False, "fp16 (official: autocast; ours: pure fp16)"),
)}


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", default=os.environ.get("VMAMBA_OFFICIAL", str(official_code.DEFAULT_CHECKOUT)),
                    help="official VMamba checkout (default $VMAMBA_OFFICIAL or third_party/VMamba)")
    ap.add_argument("--work-dir", default=str(official_code.DEFAULT_WORK_DIR),
                    help="where the patched copy and the oflex build live (default build/official-oflex)")
    ap.add_argument("--oflex-build", choices=("forward", "setup"), default="forward",
                    help="forward: forward kernels for fp32/fp16 only (fast); setup: the official setup.py")
    ap.add_argument("--arch", default="9.0", help="TORCH_CUDA_ARCH_LIST for the oflex build (default 9.0)")
    ap.add_argument("--only", choices=("kernels", "e2e"), default=None, help="one table only (default both)")
    ap.add_argument("--batch", nargs="+", type=int, default=[128, 1],
                    help="batch sizes of the kernel table and the end-to-end table (default 128 1)")
    ap.add_argument("--models", nargs="+", default=KERNEL_MODELS,
                    help="kernel table: the stage shapes of these models; e2e table: those with an official "
                         "oflex factory (vmamba_*)")
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS),
                    help="fp32-tf32off: TF32 off everywhere; fp32-default: PyTorch's defaults; fp16: official AMP, ours pure fp16 (default all three)")
    ap.add_argument("--iters", type=int, default=30, help="timed graph replays per kernel measurement (median)")
    ap.add_argument("--reps", type=int, default=8,
                    help="calls captured per CUDA graph at batch 1 (time per call = replay / reps); at larger "
                         "batches one call per rotating input copy")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls before each measurement (default 3)")
    ap.add_argument("--e2e-iters", type=int, default=20, help="timed calls per end-to-end measurement, batch > 1")
    ap.add_argument("--latency-iters", type=int, default=50, help="timed calls per end-to-end measurement, batch 1")
    ap.add_argument("--image-size", type=int, default=224,
                    help="input side of the end-to-end table; the kernel shapes follow from it (default 224)")
    ap.add_argument("--budget-s", type=float, default=540.0,
                    help="wall-clock budget from start; later rows are skipped (default 540)")
    ap.add_argument("--out", default=os.environ.get("OUT", "out/side_by_side"),
                    help="folder of side_by_side.json, .md and side_by_side_kernels.png (default $OUT or out/side_by_side)")
    ap.add_argument("--replot", metavar="JSON", default=None,
                    help="measure nothing: write side_by_side.md and side_by_side_kernels.png of this saved "
                         "side_by_side.json into --out (no GPU needed)")
    args = ap.parse_args(argv)
    unknown = [m for m in args.models if m not in MODEL_CONFIGS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODEL_CONFIGS)}")
    if any(b < 1 for b in args.batch):
        ap.error("--batch sizes must be >= 1")
    for name in ("iters", "reps", "e2e_iters", "latency_iters"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.budget_s <= 0:
        ap.error("--warmup must be >= 0 and --budget-s > 0")
    return args


# --------------------------------------------------------------------------- shapes
def stage_shapes(models: list[str], image_size: int = 224) -> list[dict]:
    """One row per distinct SS2D stage shape of ``models`` (first model named wins; the others are
    listed in ``models``): D (channels per direction), dt_rank R, d_state N and H = W."""
    shapes: dict[tuple, dict] = {}
    for name in models:
        with torch.device("meta"):
            model = create_model(name)
        seen_stages = set()
        for layer, ss2d in model.ssm_layers().items():
            stage = int(layer.split(".")[1])
            if stage in seen_stages:
                continue
            seen_stages.add(stage)
            _, _, D = ss2d.x_proj_weight.shape
            R = ss2d.dt_projs_weight.shape[-1]
            N = ss2d.A_logs.shape[1]
            side = image_size // 4 // (2 ** stage)
            key = (D, side, R, N)
            if key in shapes:
                shapes[key]["models"].append(name)
            else:
                shapes[key] = {"models": [name], "stage": stage, "D": D, "H": side, "W": side, "R": R, "N": N}
    return list(shapes.values())


def shape_label(shape: dict) -> str:
    return "/".join(SHORT_NAMES.get(m, m) for m in shape["models"])


# --------------------------------------------------------------------------- timing
class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


@contextlib.contextmanager
def precision_flags(prec: Precision):
    """Set cuDNN / matmul TF32 for this precision, restore afterwards."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = prec.cudnn_tf32
    torch.backends.cuda.matmul.allow_tf32 = prec.matmul_tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def graph_replay_ms(fn, inputs: list, iters: int, reps: int, warmup: int = 2) -> float:
    """Milliseconds per call: ``fn(*inputs[i])`` is warmed up on a side stream, then ``reps`` calls
    over the rotating ``inputs`` are captured in one CUDA graph; the median of ``iters`` replays (each
    between two CUDA events) divided by ``reps``."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(1, warmup)):
            for args in inputs:
                fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for q in range(reps):
            fn(*inputs[q % len(inputs)])
    from bench_e2e import time_replays  # the one replay timer (CUDA events around each replay)

    ms = statistics.median(time_replays(graph, iters, warm=2)) / reps
    del graph
    return ms


def eager_ms(call, iters: int, warmup: int) -> float:
    """Median ms of ``iters`` eager calls, each between two CUDA events (launch gaps included)."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        call()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy of 1 GiB, bytes read + written (GB/s)."""
    n = 1 << 28
    a = torch.empty(n, device="cuda").uniform_()
    b = torch.empty_like(a)
    ms = eager_ms(lambda: b.copy_(a), 20, 5)
    del a, b
    return 2 * n * 4 / ms / 1e6


def max_rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.float(), ref.float()
    if not (torch.isfinite(got).all() and torch.isfinite(ref).all()):
        return float("nan")
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _autocast(prec: Precision, graph_safe: bool):
    if prec.dtype != torch.float16:
        return contextlib.nullcontext()
    # the autocast weight cache must be off when the call is captured in a CUDA graph
    return torch.autocast("cuda", dtype=torch.float16, cache_enabled=not graph_safe)


# --------------------------------------------------------------------------- (a) kernels
def kernel_rows(code, shape: dict, batches, precisions, args, bw_gbs: float, budget: Budget) -> list[dict]:
    """Every batch x precision of one stage shape; one official SS2D (and its weights) for all."""
    D, H, W, R, N = shape["D"], shape["H"], shape["W"], shape["R"], shape["N"]
    core = code.core(D, R, N)
    weights = core.weights()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    for batch in batches:
        for prec in precisions:
            row = {"shapes": shape_label(shape), "models": shape["models"], "stage": shape["stage"], "D": D,
                   "H": H, "W": W, "R": R, "N": N, "batch": batch, "precision": prec.name}
            rows.append(row)
            if budget.left() < 5:
                row["skipped"] = "time budget"
                continue
            esize = torch.finfo(prec.dtype).bits // 8
            x_bytes = batch * D * H * W * esize
            row["floor_ms"] = 2 * x_bytes / bw_gbs / 1e6
            copies = max(1, min(4, math.ceil(2 * l2 / x_bytes)))
            ours_w = (weights[0].to(prec.dtype), weights[1].to(prec.dtype), weights[2].float(),
                      weights[3].float(), weights[4].float())
            with precision_flags(prec), torch.no_grad():
                xs = [torch.randn(batch, D, H, W, device="cuda").to(prec.dtype) for _ in range(copies)]
                inputs = [(x,) for x in xs]
                row["reps"] = reps = max(len(xs), args.reps if batch == 1 else 1)

                def official(x, graph_safe=True):
                    with _autocast(prec, graph_safe):
                        return core(x)

                def ours(x):
                    return torch.ops.vmamba.ss2d_scan(x, *ours_w)

                def scan_inputs():
                    with _autocast(prec, graph_safe=False):
                        return [core.scan_inputs(x) for x in xs]

                # each measurement on its own: one that fails must not hide the others
                attempt(row, "max_rel_err", lambda: max_rel_err(ours(xs[0]), official(xs[0], graph_safe=False)))
                attempt(row, "official_ms", lambda: graph_replay_ms(official, inputs, args.iters, reps, args.warmup))
                attempt(row, "oflex_ms", lambda: graph_replay_ms(code.scan, scan_inputs(), args.iters, reps,
                                                                 args.warmup))
                attempt(row, "ours_ms", lambda: graph_replay_ms(ours, inputs, args.iters, reps, args.warmup))
                # our other ops on the same inputs (no official counterpart): the literal VMeanba core and
                # QuarterMap down / up (stride 2, keep 1), as fractions of this run's copy rate
                attempt(row, "vmeanba_ms", lambda: graph_replay_ms(
                    lambda x: torch.ops.vmamba.vmeanba_scan(x, *ours_w, 0), inputs, args.iters, reps, args.warmup))
                small = [torch.ops.vmamba.quartermap_down(x, 2, 1) for x in xs]
                small_bytes = small[0].numel() * esize
                attempt(row, "qm_down_ms", lambda: graph_replay_ms(
                    lambda x: torch.ops.vmamba.quartermap_down(x, 2, 1), inputs, args.iters, reps, args.warmup))
                attempt(row, "qm_up_ms", lambda: graph_replay_ms(
                    lambda y: torch.ops.vmamba.quartermap_up(y, xs[0]), [(y,) for y in small], args.iters, reps,
                    args.warmup))
                if row.get("qm_down_ms"):  # kept elements read + written
                    row["qm_down_copy_frac"] = 2 * small_bytes / row["qm_down_ms"] / 1e6 / bw_gbs
                if row.get("qm_up_ms"):    # quarter map read + full map written
                    row["qm_up_copy_frac"] = (small_bytes + x_bytes) / row["qm_up_ms"] / 1e6 / bw_gbs
                del xs, inputs, small
            torch.cuda.empty_cache()
            log(f"kernels {row['shapes']:18s} stage {row['stage']} D={D:<4d} {H}x{W} R={R:<2d} N={N:<2d} "
                f"b{batch:<4d} {prec.name:12s} " + format_kernel_progress(row) + f"  ({budget.left():.0f} s left)")
    del core, weights
    torch.cuda.empty_cache()
    return rows


def attempt(row: dict, key: str, measure) -> None:
    """``row[key] = measure()``; an exception is kept in ``row["errors"][key]`` instead."""
    try:
        row[key] = measure()
    except Exception as exc:
        row.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"[:500]
        traceback.print_exc()


def format_kernel_progress(row: dict) -> str:
    if "skipped" in row:
        return "skipped (" + row["skipped"] + ")"
    text = (f"official {fmt(row.get('official_ms'), '.4f')} ms, oflex {fmt(row.get('oflex_ms'), '.4f')}, "
            f"ours {fmt(row.get('ours_ms'), '.4f')}, floor {fmt(row.get('floor_ms'), '.4f')}, "
            f"max rel err {fmt(row.get('max_rel_err'), '.1e')}")
    for key, err in (row.get("errors") or {}).items():
        text += f"; {key} ERROR {err[:200]}"
    return text


# --------------------------------------------------------------------------- (b) end to end
def e2e_models(models: list[str]) -> list[str]:
    """The models with an official oflex factory (the official v0 line needs mamba_ssm's kernels,
    MedMamba is another repository)."""
    return [m for m in models if m.startswith("vmamba_")]


def official_e2e_row(model, name: str, prec: Precision, batch: int, iters: int, warmup: int,
                     image_size: int) -> dict:
    """The official model, eager, no_grad, oflex (fp16: autocast), on a random batch."""
    row = {"model": name, "side": "official", "config": "baseline", "precision": prec.name, "batch": batch}
    x = torch.randn(batch, 3, image_size, image_size, device="cuda")
    with precision_flags(prec), torch.no_grad():
        def step():
            with _autocast(prec, graph_safe=False):
                return model(x)
        ms = eager_ms(step, iters, warmup)
    row.update({"median_ms": ms, "img_per_s": batch * 1000.0 / ms, "iters": iters})
    return row


def e2e_check(official_model, ours_model, prec: Precision, image_size: int) -> float:
    """max rel error of our logits against the official ones, same weights and input (batch 2)."""
    from exporter.runtime import prepare_runtime

    x = torch.randn(2, 3, image_size, image_size, device="cuda")
    with precision_flags(prec), torch.no_grad():
        with _autocast(prec, graph_safe=False):
            ref = official_model(x)
    rt = prepare_runtime(ours_model, dtype=prec.dtype, batch_size=2, image_size=image_size, mode="eager")
    try:
        got = rt(x)
        return max_rel_err(got, ref)
    finally:
        rt.release()


def e2e_section(code, args, budget: Budget, results: dict, save) -> None:
    import bench_e2e  # benchmarks/bench_e2e.py: our model set-up and graph-replay measurement

    precisions = [PRECISIONS[p] for p in args.precisions]
    ours_precisions = precisions  # ours at both fp32 settings too: cuDNN TF32 reaches our convolutions
    for name in e2e_models(args.models):
        if budget.left() < 30:
            results["e2e"].append({"model": name, "skipped": "time budget"})
            log(f"e2e {name}: skipped (time budget)")
            continue
        torch.manual_seed(0)
        official_model = code.model(name)
        state = official_model.state_dict()
        for batch in args.batch:
            iters = args.e2e_iters if batch > 1 else args.latency_iters
            for prec in precisions:
                if budget.left() < 15:
                    results["e2e"].append({"model": name, "side": "official", "precision": prec.name, "batch": batch,
                                           "skipped": "time budget"})
                    continue
                try:
                    row = official_e2e_row(official_model, name, prec, batch, iters, args.warmup, args.image_size)
                except Exception as exc:
                    row = {"model": name, "side": "official", "config": "baseline", "precision": prec.name,
                           "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:500]}
                    traceback.print_exc()
                results["e2e"].append(row)
                log(f"e2e official {name:20s} {prec.name:12s} b{batch:<4d} " + format_e2e_progress(row)
                    + f"  ({budget.left():.0f} s left)")
        for prec in ours_precisions:
            ours = bench_e2e.build(name)
            try:
                ours.load_state_dict(state, strict=True)
                weights = "official"
            except Exception as exc:  # speed does not depend on the values; only the check needs them
                weights = "random (official weights did not load: " + f"{type(exc).__name__}: {exc}"[:200] + ")"
                log(f"e2e {name}: {weights}")
            if weights == "official" and budget.left() > 30:
                try:
                    err = e2e_check(official_model, ours, prec, args.image_size)
                    results["e2e_checks"].append({"model": name, "precision": prec.name, "max_rel_err": err})
                    log(f"e2e check {name:20s} {prec.name:12s} logits max rel err vs official {err:.2e}")
                except Exception as exc:
                    log(f"e2e check {name} {prec.name} failed: {type(exc).__name__}: {exc}")
            # at PyTorch's fp32 defaults the baseline only: the compressed configs change no TF32 path
            for config in E2E_CONFIGS if prec.name != "fp32-default" else ("baseline",):
                bench_e2e.configure(ours, config)
                for batch in args.batch:
                    iters = args.e2e_iters if batch > 1 else args.latency_iters
                    row = {"model": name, "side": "ours", "config": config, "precision": prec.name, "batch": batch,
                           "weights": weights}
                    if budget.left() < 15:
                        row["skipped"] = "time budget"
                    else:
                        try:
                            with precision_flags(prec):
                                # tf32=None: the runtime keeps the flags precision_flags set
                                m = bench_e2e.measure(ours, prec.dtype, batch, iters, args.image_size, tf32=None)
                            row.update({"median_ms": m["median_ms"], "img_per_s": m["img_per_s"], "iters": iters,
                                        "finite": m["finite"]})
                        except Exception as exc:
                            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
                            traceback.print_exc()
                    results["e2e"].append(row)
                    log(f"e2e ours     {name:20s} {prec.name:12s} b{batch:<4d} {config:18s} "
                        + format_e2e_progress(row) + f"  ({budget.left():.0f} s left)")
            del ours
            bench_e2e.release(None)
        del official_model, state
        torch.cuda.empty_cache()
        save()


def format_e2e_progress(row: dict) -> str:
    if "error" in row:
        return "ERROR " + row["error"][:200]
    if "skipped" in row:
        return "skipped (" + row["skipped"] + ")"
    return f"{row['median_ms']:9.3f} ms {row['img_per_s']:9.1f} img/s"


# --------------------------------------------------------------------------- tables and verdicts
def fmt(value, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) + suffix


def _ratio(a, b):
    return a / b if a is not None and b else None


def kernel_markdown(rows: list[dict]) -> str:
    head = ("| shapes | stage | D | HxW | R | N | batch | precision | official core ms | oflex alone ms | ours ms "
            "| floor ms | official / ours | ours / floor | max rel err |")
    lines = [head, "| " + " | ".join(["---"] * 15) + " |"]
    for r in rows:
        note = ("failed: " + ", ".join(r["errors"])) if r.get("errors") else r.get("skipped") and "skipped"
        lines.append(
            f"| {r['shapes']} | {r['stage']} | {r['D']} | {r['H']}x{r['W']} | {r['R']} | {r['N']} | {r['batch']} "
            f"| {r['precision']} | {fmt(r.get('official_ms'), '.4f')} | {fmt(r.get('oflex_ms'), '.4f')} "
            f"| {fmt(r.get('ours_ms'), '.4f')} | {fmt(r.get('floor_ms'), '.4f')} "
            f"| {fmt(_ratio(r.get('official_ms'), r.get('ours_ms')), '.2f', 'x')} "
            f"| {fmt(_ratio(r.get('ours_ms'), r.get('floor_ms')), '.1f', 'x')} "
            f"| {fmt(r.get('max_rel_err'), '.1e')}{' (' + note + ')' if note else ''} |")
    return "\n".join(lines)


def other_ops_markdown(rows: list[dict]) -> str:
    """Our literal VMeanbaScan against our SS2DScan, and QuarterMap against the copy rate, same process."""
    lines = ["| shapes | stage | batch | precision | ours SS2DScan ms | ours VMeanbaScan ms | VMeanba / SS2D "
             "| QuarterMap down ms | down % of copy | QuarterMap up ms | up % of copy |",
             "| " + " | ".join(["---"] * 11) + " |"]
    for r in rows:
        if r.get("vmeanba_ms") is None and r.get("qm_down_ms") is None:
            continue
        pct = (lambda v: fmt(100 * v if v is not None else None, ".0f", "%"))
        lines.append(f"| {r['shapes']} | {r['stage']} | {r['batch']} | {r['precision']} | {fmt(r.get('ours_ms'), '.4f')} "
                     f"| {fmt(r.get('vmeanba_ms'), '.4f')} | {fmt(_ratio(r.get('vmeanba_ms'), r.get('ours_ms')), '.2f', 'x')} "
                     f"| {fmt(r.get('qm_down_ms'), '.4f')} | {pct(r.get('qm_down_copy_frac'))} "
                     f"| {fmt(r.get('qm_up_ms'), '.4f')} | {pct(r.get('qm_up_copy_frac'))} |")
    return "\n".join(lines)


def _find(rows, **key):
    for r in rows:
        if all(r.get(k) == v for k, v in key.items()) and "error" not in r and "skipped" not in r:
            return r
    return None


def kernel_verdicts(rows: list[dict]) -> list[str]:
    """The issue's SS2DScan targets against this run's rows (shapes without the rows needed are left out)."""
    out = []
    for r in rows:
        if r.get("ours_ms") is None or "skipped" in r:
            continue
        where = f"{r['shapes']} stage {r['stage']} b{r['batch']} {r['precision']}"
        if r["batch"] == 1:
            ok = r["ours_ms"] <= 0.02
            out.append(f"{where}: ours {r['ours_ms']:.4f} ms (target <= 0.02 ms): {'MET' if ok else 'MISSED'}")
        elif r["precision"] == "fp16" and r.get("official_ms"):
            speed = r["official_ms"] / r["ours_ms"]
            floor = r["ours_ms"] / r["floor_ms"]
            ok = speed >= 5 and floor <= 4
            out.append(f"{where}: {speed:.2f}x faster than official core (target >= 5x), {floor:.1f}x its bytes "
                       f"floor (target <= 4x): {'MET' if ok else 'MISSED'}")
        elif r["precision"] == "fp32-tf32off":
            default = _find(rows, shapes=r["shapes"], stage=r["stage"], batch=r["batch"], precision="fp32-default")
            if default and default.get("official_ms"):
                speed = default["official_ms"] / r["ours_ms"]
                out.append(f"{where}: {speed:.2f}x faster than the official core at PyTorch defaults "
                           f"(target >= 3x): {'MET' if speed >= 3 else 'MISSED'}")
        if r["batch"] > 1 and r.get("vmeanba_ms"):
            ok = r["vmeanba_ms"] <= r["ours_ms"]
            out.append(f"{where}: VMeanbaScan {r['vmeanba_ms']:.4f} ms vs SS2DScan {r['ours_ms']:.4f} ms "
                       f"(target: no slower): {'MET' if ok else 'MISSED'}")
        for op in ("down", "up"):
            frac = r.get(f"qm_{op}_copy_frac")
            if r["batch"] > 1 and frac is not None:
                out.append(f"{where}: QuarterMap {op} {100 * frac:.0f}% of copy (target >= 80%): "
                           f"{'MET' if frac >= 0.8 else 'MISSED'}")
    return out


def e2e_markdown(rows: list[dict], batch: int) -> str:
    """One table per batch size: img/s for batch > 1, ms for batch 1."""
    unit, key, spec = ("img/s", "img_per_s", ".0f") if batch > 1 else ("ms", "median_ms", ".2f")
    cols = [("official", "baseline", "fp32-tf32off"), ("official", "baseline", "fp32-default"),
            ("official", "baseline", "fp16"), ("ours", "baseline", "fp32-tf32off"), ("ours", "baseline", "fp32-default"),
            ("ours", "baseline", "fp16"),
            ("ours", "vmeanba-k4+qm-k3", "fp32-tf32off"), ("ours", "vmeanba-k4+qm-k3", "fp16")]
    names = {"official": "official", "ours": "ours"}
    head = [f"{names[s]}{' K4+QM3' if c != 'baseline' else ''} {p} {unit}" for s, c, p in cols]
    head += ["ours fp32 TF32 off / official fp32 default", "ours fp32 default / official fp32 default",
             "ours fp16 / official AMP", "ours K4+QM3 / own baseline fp16"]
    lines = [f"batch {batch}", "", "| model | " + " | ".join(head) + " |", "| " + " | ".join(["---"] * (len(head) + 1)) + " |"]
    models = list(dict.fromkeys(r["model"] for r in rows if r.get("batch") == batch))
    for model in models:
        cells = []
        got = {}
        for side, config, prec in cols:
            r = _find(rows, model=model, side=side, config=config, precision=prec, batch=batch)
            got[(side, config, prec)] = r
            cells.append(fmt(r[key] if r else None, spec))

        def speed(a, b):  # throughput ratio a over b (from ms: b_ms / a_ms)
            ra, rb = got[a], got[b]
            return rb["median_ms"] / ra["median_ms"] if ra and rb else None
        cells.append(fmt(speed(("ours", "baseline", "fp32-tf32off"), ("official", "baseline", "fp32-default")), ".2f", "x"))
        cells.append(fmt(speed(("ours", "baseline", "fp32-default"), ("official", "baseline", "fp32-default")), ".2f", "x"))
        cells.append(fmt(speed(("ours", "baseline", "fp16"), ("official", "baseline", "fp16")), ".2f", "x"))
        cells.append(fmt(speed(("ours", "vmeanba-k4+qm-k3", "fp16"), ("ours", "baseline", "fp16")), ".2f", "x"))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def e2e_verdicts(rows: list[dict]) -> list[str]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        big = sorted({r["batch"] for r in rows if r["model"] == model and r.get("batch", 1) > 1})
        for batch in big[-1:]:
            for ours_p, off_p in (("fp16", "fp16"), ("fp32-tf32off", "fp32-default")):
                o = _find(rows, model=model, side="ours", config="baseline", precision=ours_p, batch=batch)
                f = _find(rows, model=model, side="official", config="baseline", precision=off_p, batch=batch)
                if o and f:
                    s = o["img_per_s"] / f["img_per_s"]
                    out.append(f"{model} b{batch} ours {ours_p} {o['img_per_s']:.0f} img/s = {s:.2f}x official "
                               f"{off_p} {f['img_per_s']:.0f} img/s (target >= 1.5x): {'MET' if s >= 1.5 else 'MISSED'}")
            o = _find(rows, model=model, side="ours", config="vmeanba-k4+qm-k3", precision="fp16", batch=batch)
            b = _find(rows, model=model, side="ours", config="baseline", precision="fp16", batch=batch)
            if o and b:
                s = o["img_per_s"] / b["img_per_s"]
                out.append(f"{model} b{batch} fp16 VMeanba K=4 + QuarterMap k=3 = {s:.2f}x own baseline "
                           f"(target >= 1.3x): {'MET' if s >= 1.3 else 'MISSED'}")
        if model == "vmamba_tiny_s1l8":
            r = _find(rows, model=model, side="ours", config="baseline", precision="fp16", batch=1)
            if r:
                out.append(f"{model} b1 fp16 ours {r['median_ms']:.3f} ms (target <= 1.5 ms): "
                           f"{'MET' if r['median_ms'] <= 1.5 else 'MISSED'}")
    return out


def render_markdown(results: dict) -> str:
    env = results["environment"]
    parts = [f"Side by side, {env.get('device', '?')}; {env.get('date_utc', '?')}; torch {env.get('torch', '?')} "
             f"(CUDA {env.get('cuda', '?')}); official code {env.get('official_fingerprint', '?')} "
             f"(oflex build '{env.get('oflex_build', '?')}'); D2D copy {fmt(env.get('copy_gbs'), '.0f')} GB/s; "
             f"command: {env.get('command', '?')}"]
    if results.get("kernels"):
        parts += ["", "## SS2D core per stage shape (CUDA-graph replay, median, ms)", "",
                  kernel_markdown(results["kernels"]),
                  "", "## Our other ops on the same inputs (same process; no official counterpart)", "",
                  other_ops_markdown(results["kernels"])]
        verdicts = kernel_verdicts(results["kernels"])
        if verdicts:
            parts += ["", "Targets:", ""] + [f"- {v}" for v in verdicts]
    if results.get("e2e"):
        rows = [r for r in results["e2e"] if "batch" in r]
        parts += ["", "## End to end (official eager/AMP vs ours prepare_runtime graph, 224x224)"]
        for batch in sorted({r["batch"] for r in rows}, reverse=True):
            parts += ["", e2e_markdown(rows, batch)]
        checks = results.get("e2e_checks") or []
        if checks:
            parts += ["", "Logits, ours vs official (same weights, batch 2): " + "; ".join(
                f"{c['model']} {c['precision']} max rel err {fmt(c['max_rel_err'], '.1e')}" for c in checks)]
        verdicts = e2e_verdicts(rows)
        if verdicts:
            parts += ["", "Targets:", ""] + [f"- {v}" for v in verdicts]
    skipped = [r for r in (results.get("kernels") or []) + (results.get("e2e") or []) if "skipped" in r]
    if skipped:
        parts += ["", f"{len(skipped)} measurement(s) skipped by the time budget (--budget-s)."]
    return "\n".join(parts) + "\n"


def write_results(out_dir: Path, results: dict) -> None:
    """side_by_side.json and side_by_side.md, each through a temp file beside it and a rename."""
    for name, text in (("side_by_side.json", json.dumps(results, indent=1, default=str)),
                       ("side_by_side.md", render_markdown(results))):
        atomic_write_bytes(out_dir / name, text.encode())


KERNEL_PLOT = "side_by_side_kernels.png"


def plot_kernels(rows: list[dict], path: Path, title: str) -> bool:
    """official / ours for every measured (stage shape, batch, precision), one panel per batch and one
    bar per precision, log scale, with parity and the issue-10 targets at batch 128 (5x fp16, 3x fp32 at
    PyTorch's defaults) drawn in. Written through a temporary file beside `path`; False, and nothing
    written, when no row has both times."""
    rows = [r for r in rows if r.get("official_ms") and r.get("ours_ms")]
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    shapes = list(dict.fromkeys((r["shapes"], r["stage"]) for r in rows))
    batches = sorted({r["batch"] for r in rows}, reverse=True)
    precisions = [p for p in PRECISIONS if any(r["precision"] == p for r in rows)]
    colors = {"fp32-tf32off": "#4C72B0", "fp32-default": "#55A868", "fp16": "#DD8452"}
    width = 0.8 / len(precisions)
    fig, axes = plt.subplots(len(batches), 1, figsize=(max(10, 0.7 * len(shapes)), 4.2 * len(batches)),
                             squeeze=False)
    for ax, batch in zip(axes[:, 0], batches):
        for j, prec in enumerate(precisions):
            xs, ys = [], []
            for i, key in enumerate(shapes):
                r = _find(rows, shapes=key[0], stage=key[1], batch=batch, precision=prec)
                if r:
                    xs.append(i + (j - (len(precisions) - 1) / 2) * width)
                    ys.append(r["official_ms"] / r["ours_ms"])
            ax.bar(xs, ys, width, label=prec, color=colors.get(prec))
        ax.axhline(1.0, color="black", lw=1, label="parity")
        if batch == 128:
            ax.axhline(5.0, color="#DD8452", ls="--", lw=1, label="target: 5x in fp16")
            ax.axhline(3.0, color="#55A868", ls="--", lw=1, label="target: 3x in fp32 at PyTorch defaults")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_yticks([t for t in (0.5, 1, 2, 3, 5, 10, 20) if t <= 1.2 * max(r["official_ms"] / r["ours_ms"]
                                                                                for r in rows if r["batch"] == batch)])
        ax.set_ylabel(f"official / ours (batch {batch})")
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels([name.replace("/", "/\n") + f"\nstage {stage}" for name, stage in shapes], fontsize=7)
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2)
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())
    return True


def write_plot(out_dir: Path, results: dict) -> Path | None:
    """side_by_side_kernels.png of the run's kernel rows (None when there are none)."""
    env = results.get("environment", {})
    path = out_dir / KERNEL_PLOT
    title = (f"SS2D core, official / ours (CUDA-graph replay, median), {env.get('device', '?')}, "
             f"{env.get('date_utc', '?')}: same process, bench_side_by_side.py")
    return path if plot_kernels(results.get("kernels") or [], path, title) else None


def replot(json_path: str, out_dir: Path) -> int:
    try:
        results = json.loads(Path(json_path).read_text())
    except (OSError, ValueError) as exc:
        print(f"bench_side_by_side: cannot read --replot {json_path}: {exc}; give a side_by_side.json that this "
              "script wrote", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not isinstance(results, dict) or not isinstance(results.get("environment"), dict):
        print(f"bench_side_by_side: --replot {json_path} is not a side_by_side.json (no 'environment' object); "
              "give a file that this script wrote", file=sys.stderr)
        return EXIT_BAD_INPUT
    write_results(out_dir, results)
    plot = write_plot(out_dir, results)
    log(f"wrote {out_dir / 'side_by_side.md'}" + (f" and {plot}" if plot else " (no kernel rows to plot)"))
    return 0


# --------------------------------------------------------------------------- entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(args.replot, Path(args.out))
    budget = Budget(args.budget_s)
    if args.iters < 20:
        log(f"note: --iters {args.iters} < 20: medians of fewer than 20 replays are not for the record")
    if not torch.cuda.is_available():
        print("bench_side_by_side: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return EXIT_NO_KERNELS
    from exporter.runtime import kernel_status

    ok, reason = kernel_status()
    if not ok:
        print(f"bench_side_by_side: this project's CUDA kernels are unavailable: {reason}", file=sys.stderr)
        return EXIT_NO_KERNELS
    log(f"== official code from {args.official} (work dir {args.work_dir}, build {args.oflex_build})")
    try:
        code = official_code.OfficialCode(args.official, args.work_dir, args.oflex_build, args.arch)
    except official_code.OfficialCodeError as exc:
        print(f"bench_side_by_side: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except official_code.OfficialBuildError as exc:
        print(f"bench_side_by_side: {exc}", file=sys.stderr)
        return EXIT_OFFICIAL_BUILD
    torch.backends.cudnn.benchmark = False
    results = {"environment": {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "command": " ".join(["python"] + sys.argv),
        "official_checkout": str(code.checkout), "official_fingerprint": code.fingerprint,
        "oflex_build": code.build, "official_setup_s": code.setup_s, "kernels": reason,
        "precisions": {p: PRECISIONS[p].label for p in args.precisions},
    }, "kernels": [], "e2e": [], "e2e_checks": []}
    out_dir = Path(args.out)
    log(json.dumps(results["environment"], indent=1))

    def save():
        write_results(out_dir, results)

    if args.only in (None, "kernels"):
        bw = copy_bandwidth_gbs()
        results["environment"]["copy_gbs"] = bw
        log(f"== kernel table (D2D copy {bw:.0f} GB/s; {budget.left():.0f} s left)")
        precisions = [PRECISIONS[p] for p in args.precisions]
        for shape in stage_shapes(args.models, args.image_size):
            if budget.left() < 5:
                results["kernels"] += [{"shapes": shape_label(shape), "models": shape["models"], "stage": shape["stage"],
                                        "D": shape["D"], "H": shape["H"], "W": shape["W"], "R": shape["R"],
                                        "N": shape["N"], "batch": b, "precision": p.name, "skipped": "time budget"}
                                       for b in args.batch for p in precisions]
                continue
            try:
                results["kernels"] += kernel_rows(code, shape, args.batch, precisions, args, bw, budget)
            except Exception as exc:
                log(f"kernels {shape_label(shape)} stage {shape['stage']}: ERROR {type(exc).__name__}: {exc}")
                traceback.print_exc()
            save()
    if args.only in (None, "e2e"):
        log(f"== end-to-end table ({budget.left():.0f} s left)")
        e2e_section(code, args, budget, results, save)
    save()
    plot = write_plot(out_dir, results)
    log("\n" + render_markdown(results))
    log(f"wrote {out_dir / 'side_by_side.json'} and {out_dir / 'side_by_side.md'}" + (f" and {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
