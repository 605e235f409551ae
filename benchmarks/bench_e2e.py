"""End-to-end GPU speed of the fast PyTorch runtime (exporter/runtime.py), uncompressed and with
VMeanba / QuarterMap; with ``--official PATH`` also the official VMamba models, measured in the same
run (benchmarks/official.py builds them; benchmarks/bench_side_by_side.py has the full side-by-side).

    python benchmarks/bench_e2e.py [--out DIR] [--quick] [--explore] [--profile] [--official PATH]

- Weights are random (seeded): speed does not depend on their values.
- 224x224, batch 128 throughput (img/s) and batch 1 latency (ms), float32 (TF32 off) and float16.
- Every measurement replays a CUDA graph of the eager forward (prepare_runtime mode "graph");
  warm-up before capture, then the median of --iters timed replays (batch 128) or --latency-iters
  (batch 1), each timed with CUDA events.
- Compression configurations (fixed lists, the ones ANCHORS.md measured on the official code):
    vmeanba-k2/k4/k8   VMeanba (folded, exact here) on layers.2.blocks.0 .. K-1
    vmeanba-k4-early   VMeanba on layers.0.blocks.0-1 + layers.1.blocks.0-1
    qm-k3              QuarterMap (stride 2, keep 1) on every 3rd block counted globally from 1,
                       stage 0 excluded (the authors' strategy, layer spec "every:3")
    vmeanba-k4+qm-k3   both (a block in both lists gets both)
- --explore: VMamba-T runtime variants (memory layout, Linear2d as GEMM, TF32, torch.compile, eager).
- --profile: torch.profiler top CUDA kernels of VMamba-T, batch 128, float16, eager.
- --official PATH: the official baseline of each vmamba_* model (its factory, eager, no_grad, oflex;
  fp32 at PyTorch's defaults, fp16 = autocast) in the same run; without it no official number is
  printed (none is hard-coded).
Writes e2e_results.json, e2e_throughput.png (and explore/profile files) to --out.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.models import create_model  # noqa: E402
from exporter.models.ss2d import QuarterMapSpec, VMeanbaSpec  # noqa: E402
from exporter.runtime import kernel_status, prepare_runtime, time_replays  # noqa: E402,F401  (time_replays: bench_side_by_side imports it from here)

VMAMBA_MODELS = ["vmamba_tiny_s1l8", "vmamba_small_s1l20", "vmamba_base_s1l20", "vmamba_base_s2l15"]
MEDMAMBA_MODELS = ["medmamba_t", "medmamba_s", "medmamba_b"]
STAGE2_FIRST = lambda k: [f"layers.2.blocks.{j}" for j in range(k)]  # noqa: E731
EARLY4 = ["layers.0.blocks.0", "layers.0.blocks.1", "layers.1.blocks.0", "layers.1.blocks.1"]
# name -> (VMeanba layers, QuarterMap layer spec or None)
CONFIGS = {
    "baseline": ([], None),
    "vmeanba-k2": (STAGE2_FIRST(2), None),
    "vmeanba-k4": (STAGE2_FIRST(4), None),
    "vmeanba-k8": (STAGE2_FIRST(8), None),
    "vmeanba-k4-early": (EARLY4, None),
    "qm-k3": ([], "every:3"),
    "vmeanba-k4+qm-k3": (STAGE2_FIRST(4), "every:3"),
}
MEDMAMBA_CONFIGS = ["baseline", "vmeanba-k4+qm-k3"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# runtime variants measured for VMamba-T only (--variants): appended to the configuration name
VARIANT_SUFFIXES = ("", "+compile", "+tf32")


def split_variant(config: str) -> tuple[str, str]:
    for suffix in VARIANT_SUFFIXES[1:]:
        if config.endswith(suffix):
            return config[: -len(suffix)], suffix
    return config, ""


def log(*args) -> None:
    print(*args, flush=True)


# --------------------------------------------------------------------------- model set-up
def quartermap_layers(model, spec: str) -> list[str]:
    try:
        from exporter.compress import parse_layer_spec
    except ImportError:  # compression package not importable: same rule, written out
        k = int(spec.split(":")[1])
        names = list(model.ssm_layers())
        return [n for i, n in enumerate(names, 1) if i % k == 0 and not n.startswith("layers.0.")]
    return parse_layer_spec(spec, model, method="quartermap")


def configure(model, config: str) -> dict:
    """Clear every block, then set this configuration's VMeanba (folded) and QuarterMap layers."""
    vmeanba, qm_spec = CONFIGS[config]
    blocks = model.ssm_layers()
    qm = quartermap_layers(model, qm_spec) if qm_spec else []
    for ss2d in blocks.values():
        ss2d.configure(vmeanba=None, quartermap=None)
    for name in vmeanba:
        blocks[name].configure(vmeanba=VMeanbaSpec(variant="all-rows", folded=True))
    for name in qm:
        blocks[name].configure(quartermap=QuarterMapSpec(stride=2, keep=1))
    return {"vmeanba": list(vmeanba), "quartermap": qm}


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    with torch.device("cuda"):  # initialise on the GPU (much faster for the base models)
        return create_model(name).eval()


def release(rt) -> None:
    if rt is not None:
        rt.release()
    gc.collect()
    torch.cuda.empty_cache()


# --------------------------------------------------------------------------- timing
def measure(model, dtype, batch: int, iters: int, image_size: int, **runtime_kwargs) -> dict:
    rt = None
    try:
        t0 = time.perf_counter()
        rt = prepare_runtime(model, dtype=dtype, batch_size=batch, image_size=image_size, inplace=True,
                             clone_output=False, **runtime_kwargs)
        setup_s = time.perf_counter() - t0
        ms = time_replays(rt, iters)
        out = rt.static_output  # a tensor, or a feature backbone's list of stage maps
        finite = all(bool(torch.isfinite(o).all()) for o in (out if isinstance(out, (list, tuple)) else [out]))
        med = statistics.median(ms)
        q = statistics.quantiles(ms, n=10) if len(ms) >= 2 else [med] * 9
        return {"batch": batch, "median_ms": med, "p10_ms": q[0], "p90_ms": q[-1], "img_per_s": batch * 1000.0 / med,
                "iters": iters, "setup_s": setup_s, "finite": finite,
                "layout": "channels_last" if rt.config.channels_last else "nchw", "mode": rt.config.mode,
                "fast_linear": rt.config.fast_linear, "tf32": rt.config.tf32}
    finally:
        release(rt)


# --------------------------------------------------------------------------- main grid
def run_grid(args, save=None) -> list[dict]:
    """Every model x configuration x dtype x batch; ``save(results)`` after each model and dtype
    (a run stopped by a time limit keeps what it measured)."""
    results = []
    models = [m for m in args.models if m in VMAMBA_MODELS or m in MEDMAMBA_MODELS]
    for name in models:
        configs = MEDMAMBA_CONFIGS if name in MEDMAMBA_MODELS or name in args.short_models else list(CONFIGS)
        if args.configs:
            configs = [c for c in configs if c in args.configs]
        for dname in args.dtypes:
            model = build(name)
            for config in configs:
                layers = configure(model, config)
                for batch in args.batch_sizes:
                    iters = args.iters if batch > 1 else args.latency_iters
                    row = {"model": name, "config": config, "dtype": dname, **layers}
                    try:
                        row.update(measure(model, DTYPES[dname], batch, iters, args.image_size))
                    except Exception as exc:  # keep going: one failing configuration must not hide the rest
                        row.update({"batch": batch, "error": f"{type(exc).__name__}: {exc}"})
                        traceback.print_exc()
                    results.append(row)
                    if "error" in row:
                        log(f"{name:20s} {config:18s} {dname} b{batch:<4d} ERROR {row['error']}")
                    else:
                        log(f"{name:20s} {config:18s} {dname} b{batch:<4d} {row['median_ms']:9.3f} ms "
                            f"{row['img_per_s']:9.1f} img/s  (setup {row['setup_s']:.1f}s){'' if row['finite'] else '  NON-FINITE'}")
            del model
            release(None)
            if save is not None:
                save(results)
    return results


_LOG_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(fp32|fp16) b(\d+)\s+([\d.]+) ms\s+([\d.]+) img/s")


def results_from_log(path: Path) -> list[dict]:
    """Rebuild result rows from a bench_e2e log (for a run cut off before it wrote its JSON)."""
    rows = []
    for line in path.read_text().splitlines():
        m = _LOG_LINE.match(line)
        if m and m.group(1) in VMAMBA_MODELS + MEDMAMBA_MODELS:
            model, config, dname, batch, ms, ips = m.groups()
            rows.append({"model": model, "config": config, "dtype": dname, "batch": int(batch),
                         "median_ms": float(ms), "img_per_s": float(ips), "source": f"log {path.name}"})
    return rows


def lookup(results, model, config, dtype, batch):
    for r in results:
        if (r["model"], r["config"], r["dtype"], r["batch"]) == (model, config, dtype, batch) and "error" not in r:
            return r
    return None


def summary_rows(results, batch_large: int, official=()) -> list[dict]:
    """One row per (model, configuration); ``official``: rows measured on the official code in this run
    (``measure_official``), compared with the uncompressed configurations only."""
    rows = []
    seen = []
    for r in results:
        key = (r["model"], r["config"])
        if key not in seen:
            seen.append(key)
    for model, config in seen:
        row = {"model": model, "config": config}
        for d in ("fp32", "fp16"):
            big = lookup(results, model, config, d, batch_large)
            one = lookup(results, model, config, d, 1)
            plain, suffix = split_variant(config)
            base = lookup(results, model, "baseline" + suffix, d, batch_large)
            row[f"{d}_img_s"] = big["img_per_s"] if big else None
            row[f"{d}_b1_ms"] = one["median_ms"] if one else None
            row[f"{d}_vs_own"] = big["img_per_s"] / base["img_per_s"] if big and base else None
            off = lookup(official, model, "baseline", d, batch_large) if plain == "baseline" else None
            row[f"{d}_official"] = off["img_per_s"] if off else None
            row[f"{d}_vs_official"] = big["img_per_s"] / off["img_per_s"] if big and off else None
        off_b1 = lookup(official, model, "baseline", "fp32", 1) if config.startswith("baseline") else None
        row["official_b1_ms"] = off_b1["median_ms"] if off_b1 else None
        rows.append(row)
    return rows


def fmt(v, spec, suffix=""):
    return "-" if v is None else format(v, spec) + suffix


def markdown_table(rows, batch_large: int) -> str:
    head = (f"| model | configuration | fp32 b{batch_large} img/s | fp16 b{batch_large} img/s | fp32 b1 ms | fp16 b1 ms "
            f"| vs own baseline fp32 / fp16 | official (same run) fp32 default / AMP img/s | vs official fp32 / fp16 |")
    lines = [head, "| " + " | ".join(["---"] * 9) + " |"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['config']} | {fmt(r['fp32_img_s'], '.0f')} | {fmt(r['fp16_img_s'], '.0f')} "
            f"| {fmt(r['fp32_b1_ms'], '.2f')} | {fmt(r['fp16_b1_ms'], '.2f')} "
            f"| {fmt(r['fp32_vs_own'], '.2f', 'x')} / {fmt(r['fp16_vs_own'], '.2f', 'x')} "
            f"| {fmt(r['fp32_official'], '.0f')} / {fmt(r['fp16_official'], '.0f')} "
            f"| {fmt(r['fp32_vs_official'], '.2f', 'x')} / {fmt(r['fp16_vs_official'], '.2f', 'x')} |")
    return "\n".join(lines)


def targets(results, batch_large: int, official=()) -> list[str]:
    """The issue's end-to-end targets; the ones relative to the official code only where it was
    measured in this run (``official`` rows; fp32 = PyTorch defaults, fp16 = AMP)."""
    out = []
    t = "vmamba_tiny_s1l8"
    for suffix in VARIANT_SUFFIXES:
        for d in ("fp32", "fp16"):
            r = lookup(results, t, "baseline" + suffix, d, batch_large)
            off = lookup(official, t, "baseline", d, batch_large)
            if r and off:
                ratio = r["img_per_s"] / off["img_per_s"]
                out.append(f"VMamba-T{suffix} b{batch_large} {d}: {r['img_per_s']:.0f} img/s = {ratio:.2f}x official "
                           f"{off['img_per_s']:.0f} (same run; target >= 1.5x): {'MET' if ratio >= 1.5 else 'MISSED'}")
            elif r:
                out.append(f"VMamba-T{suffix} b{batch_large} {d}: {r['img_per_s']:.0f} img/s (official not measured: "
                           f"pass --official PATH)")
        for d in ("fp32", "fp16"):
            r = lookup(results, t, "baseline" + suffix, d, 1)
            if r:
                out.append(f"VMamba-T{suffix} b1 {d} latency: {r['median_ms']:.3f} ms (target <= 1.5 ms): "
                           f"{'MET' if r['median_ms'] <= 1.5 else 'MISSED'}")
    for model in VMAMBA_MODELS + MEDMAMBA_MODELS:
        for d in ("fp32", "fp16"):
            for suffix in VARIANT_SUFFIXES:
                base = lookup(results, model, "baseline" + suffix, d, batch_large)
                both = lookup(results, model, "vmeanba-k4+qm-k3" + suffix, d, batch_large)
                if base and both:
                    s = both["img_per_s"] / base["img_per_s"]
                    out.append(f"{model}{suffix} {d}: VMeanba K=4 + QuarterMap k=3 = {s:.2f}x own baseline "
                               f"(target >= 1.3x): {'MET' if s >= 1.3 else 'MISSED'}")
    return out


def plot(rows, path: Path, batch_large: int, device: str | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model'].replace('vmamba_', 'VM-').replace('medmamba_', 'Med-')}\n{r['config']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(10, 0.55 * len(rows)), 6))
    w = 0.38
    fp32 = [r["fp32_img_s"] or 0 for r in rows]
    fp16 = [r["fp16_img_s"] or 0 for r in rows]
    ax.bar([i - w / 2 for i in x], fp32, w, label="ours fp32 (TF32 off)", color="#4C72B0")
    ax.bar([i + w / 2 for i in x], fp16, w, label="ours fp16", color="#DD8452")
    first = True
    for i, r in enumerate(rows):
        for d, dx, c in (("fp32", -w / 2, "#1b2a49"), ("fp16", w / 2, "#7a3b12")):
            off = r[f"{d}_official"]
            if off:
                ax.plot([i + dx - w / 2, i + dx + w / 2], [off, off], color=c, lw=2.5,
                        label=("official VMamba (same run), fp32 defaults / AMP" if first else None))
                first = False
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel(f"images / s (batch {batch_large}, 224x224)")
    device = device or torch.cuda.get_device_name()
    ax.set_title(f"End-to-end throughput, {device} (bars: this project; dark ticks: official)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- explore / profile
def explore(args) -> list[dict]:
    """VMamba-T baseline under runtime variants, to choose the defaults with evidence."""
    name = "vmamba_tiny_s1l8"
    variants = [
        ("as-is NCHW, Linear2d=conv1x1", dict(channels_last=False, fast_linear=False)),
        ("NCHW, Linear2d=bmm", dict(channels_last=False, fast_linear=True)),
        ("channels_last, Linear2d=conv1x1", dict(channels_last=True, fast_linear=False)),
        ("channels_last, Linear2d=GEMM (default)", dict(channels_last=True, fast_linear=True)),
    ]
    rows = []
    model = build(name)

    def one(label, dname, batch, iters, **kw):
        row = {"variant": label, "dtype": dname, "batch": batch}
        try:
            row.update(measure(model, DTYPES[dname], batch, iters, args.image_size, **kw))
            log(f"explore {label:45s} {dname} b{batch:<4d} {row['median_ms']:9.3f} ms {row['img_per_s']:9.1f} img/s "
                f"setup {row['setup_s']:.1f}s")
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(f"explore {label:45s} {dname} b{batch:<4d} ERROR {row['error'][:300]}")
        rows.append(row)

    for label, kw in variants:
        for dname in ("fp32", "fp16"):
            one(label, dname, 128, args.iters, **kw)
        one(label, "fp16", 1, args.latency_iters, **kw)
    one("default + TF32", "fp32", 128, args.iters, tf32=True)
    one("default + cudnn.benchmark", "fp16", 128, args.iters, cudnn_benchmark=True)
    one("default + cudnn.benchmark", "fp32", 128, args.iters, cudnn_benchmark=True)
    torch.backends.cudnn.benchmark = False
    one("default, eager (no graph)", "fp16", 128, args.iters, mode="eager")
    one("default, eager (no graph)", "fp16", 1, args.latency_iters, mode="eager")
    one("default, eager (no graph)", "fp32", 1, args.latency_iters, mode="eager")
    if args.compile:
        torch._dynamo.reset()
        one("torch.compile + graph", "fp16", 128, args.iters, mode="compile")
        one("torch.compile + graph", "fp16", 1, args.latency_iters, mode="compile")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    del model
    release(None)
    return rows


_CATEGORIES = [
    ("project: ss2d_scan_kernel", r"ss2d_scan_kernel"),
    ("project: xdbl_proj_kernel", r"xdbl_proj_kernel"),
    ("project: VMeanba / QuarterMap kernels", r"vmeanba_|quartermap_kernel"),
    ("GEMM", r"gemm|xmma|cutlass|sm90_|ampere_|turing_|volta_|cublas|s1688|s16816|h16816|wgmma"),
    ("depthwise / conv", r"conv|depthwise|dgrad|implicit|winograd|fprop"),
    ("LayerNorm", r"layer_norm|layernorm|LayerNorm"),
    ("layout copy / transpose", r"copy|nchwToNhwc|nhwcToNchw|transpose|permute|contiguous"),
    ("elementwise / activation", r"elementwise|vectorized|unrolled|gelu|silu|add|mul"),
    ("reduction / pooling", r"reduce|pool|mean|softmax"),
]


def profile(args, out_dir: Path) -> None:
    """Per-kernel GPU time of eager forwards (the same kernels the graph replays), by category."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    name = "vmamba_tiny_s1l8"
    model = build(name)
    text = []
    default = dict(channels_last=True, fast_linear=True)
    cases = [
        ("fp16", 128, "default runtime (channels_last, Linear2d as GEMM)", default),
        ("fp16", 128, "model as written (NCHW, Linear2d as conv1x1)", dict(channels_last=False, fast_linear=False)),
        ("fp32", 128, "default runtime, TF32 off", default),
        ("fp16", 1, "default runtime", default),
    ]
    for dname, batch, label, kw in cases:
        rt = prepare_runtime(model, dtype=DTYPES[dname], batch_size=batch, image_size=args.image_size, mode="eager",
                             inplace=True, **kw)
        x = rt.static_input
        reps = 3
        with torch.inference_mode():
            for _ in range(2):
                rt(x)
            torch.cuda.synchronize()
            with tprofile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(reps):
                    rt(x)
                torch.cuda.synchronize()
        totals: dict[str, float] = {}
        kernels = []
        for evt in prof.key_averages():
            t = getattr(evt, "self_device_time_total", None)
            if t is None:
                t = getattr(evt, "self_cuda_time_total", 0.0)
            if t and t > 0:
                kernels.append((t / reps, evt.count // reps, evt.key))
        kernels.sort(reverse=True)
        total = sum(k[0] for k in kernels)
        for t, _, key in kernels:
            cat = next((c for c, pat in _CATEGORIES if re.search(pat, key, re.I)), "other")
            totals[cat] = totals.get(cat, 0.0) + t
        text.append(f"== VMamba-T (s1l8) batch {batch} {dname}, eager, {label}: {total / 1000:.2f} ms of GPU "
                    f"(kernel) time per forward, {sum(k[1] for k in kernels)} launches")
        for cat, t in sorted(totals.items(), key=lambda kv: -kv[1]):
            text.append(f"  {cat:40s} {t / 1000:8.3f} ms  {100 * t / total:5.1f}%")
        text.append("  top kernels (ms per forward, launches per forward, name):")
        for t, n, key in kernels[:16]:
            text.append(f"  {t / 1000:8.3f} ms {n:5d}x  {key[:140]}")
        release(rt)
    del model
    release(None)
    report = "\n".join(text)
    log(report)
    (out_dir / "e2e_profile.txt").write_text(report + "\n")


def run_variants(args) -> list[dict]:
    """torch.compile and TF32 rows for VMamba-T (config names get a '+compile' / '+tf32' suffix)."""
    rows = []
    name = "vmamba_tiny_s1l8"
    plan = [("+compile", d, dict(mode="compile")) for d in ("fp32", "fp16")] + [("+tf32", "fp32", dict(tf32=True))]
    for suffix, dname, kw in plan:
        model = build(name)
        for config in ("baseline", "vmeanba-k4+qm-k3"):
            layers = configure(model, config)
            for batch in args.variant_batch_sizes or args.batch_sizes:
                iters = args.iters if batch > 1 else args.latency_iters
                row = {"model": name, "config": config + suffix, "dtype": dname, **layers}
                try:
                    torch._dynamo.reset()
                    row.update(measure(model, DTYPES[dname], batch, iters, args.image_size, **kw))
                    log(f"{name:20s} {config + suffix:26s} {dname} b{batch:<4d} {row['median_ms']:9.3f} ms "
                        f"{row['img_per_s']:9.1f} img/s  (setup {row['setup_s']:.1f}s)")
                except Exception as exc:
                    row.update({"batch": batch, "error": f"{type(exc).__name__}: {exc}"})
                    log(f"{name:20s} {config + suffix:26s} {dname} b{batch:<4d} ERROR {row['error'][:300]}")
                rows.append(row)
        del model
        release(None)
    set_tf32_off()
    return rows


def set_tf32_off() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def kernel_source_fingerprint() -> str:
    import hashlib

    kernels = Path(__file__).resolve().parents[1] / "trt_plugins_cpp" / "kernels"
    digest = hashlib.sha256()
    for src in sorted(kernels.glob("*.cu*")):
        digest.update(src.read_bytes())
    return digest.hexdigest()[:12]


def write_outputs(payload: dict, results: list[dict], out_dir: Path, large: int, device: str | None = None,
                  official=()) -> None:
    rows = summary_rows(results, large, official)
    payload.update({"results": results, "official": list(official), "summary": rows,
                    "targets": targets(results, large, official)})
    table = markdown_table(rows, large)
    (out_dir / "e2e_results.json").write_text(json.dumps(payload, indent=1))
    (out_dir / "e2e_table.md").write_text(table + "\n\n" + "\n".join(payload["targets"]) + "\n")
    try:
        plot(rows, out_dir / "e2e_throughput.png", large, device)
    except Exception:
        traceback.print_exc()
    log("\n" + table + "\n")
    for line in payload["targets"]:
        log(line)


def measure_official(args) -> list[dict]:
    """The official baseline of each vmamba_* model in --models, this run, this GPU (fp32 at PyTorch's
    defaults, fp16 = autocast), as rows shaped like ``run_grid``'s."""
    import bench_side_by_side as sbs
    import official as official_code

    code = official_code.OfficialCode(args.official, args.official_work_dir)
    rows = []
    for name in sbs.e2e_models(args.models):
        torch.manual_seed(0)
        model = code.model(name)
        for dname, prec in (("fp32", sbs.PRECISIONS["fp32-default"]), ("fp16", sbs.PRECISIONS["fp16"])):
            if dname not in args.dtypes:
                continue
            for batch in args.batch_sizes:
                iters = args.iters if batch > 1 else args.latency_iters
                try:
                    row = sbs.official_e2e_row(model, name, prec, batch, iters, 2, args.image_size)
                except Exception as exc:
                    row = {"model": name, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:300]}
                row.update({"config": "baseline", "dtype": dname})
                rows.append(row)
                log(f"official {name:20s} {dname} ({prec.name}) b{batch:<4d} " +
                    (f"{row['median_ms']:9.3f} ms {row['img_per_s']:9.1f} img/s" if "error" not in row else row["error"]))
        del model
        release(None)
    set_tf32_off()
    return rows


# --------------------------------------------------------------------------- entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "out/e2e"))
    ap.add_argument("--models", nargs="+", default=VMAMBA_MODELS + MEDMAMBA_MODELS)
    ap.add_argument("--configs", nargs="+", default=None, help="subset of " + ", ".join(CONFIGS))
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "fp16"], choices=list(DTYPES))
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[128, 1])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=10, help="timed replays at batch > 1 (median)")
    ap.add_argument("--latency-iters", type=int, default=50, help="timed replays at batch 1 (median)")
    ap.add_argument("--quick", action="store_true", help="VMamba-T baseline and K4+QM3 only")
    ap.add_argument("--explore", action="store_true")
    ap.add_argument("--compile", action="store_true", help="with --explore: also try torch.compile")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-grid", action="store_true")
    ap.add_argument("--device-name", default=None, help="with --from-log: the GPU named in the plot title")
    ap.add_argument("--from-log", default=None, help="no GPU work: rebuild JSON, table and plot from a bench_e2e log")
    ap.add_argument("--variants", action="store_true", help="with the grid: VMamba-T rows with torch.compile and TF32")
    ap.add_argument("--variant-batch-sizes", nargs="+", type=int, default=None, help="batch sizes of --variants rows")
    ap.add_argument("--official", default=None,
                    help="official VMamba checkout: measure its baseline models in this run (benchmarks/official.py)")
    ap.add_argument("--official-work-dir", default=str(Path(__file__).resolve().parents[1] / "build" / "official-oflex"))
    ap.add_argument("--short-models", nargs="+", default=[],
                    help="models measured only uncompressed and with VMeanba K=4 + QuarterMap k=3")
    args = ap.parse_args()
    if args.quick:
        args.models, args.configs = ["vmamba_tiny_s1l8"], ["baseline", "vmeanba-k4+qm-k3"]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.from_log:
        results = results_from_log(Path(args.from_log))
        write_outputs({"environment": {"source": args.from_log}}, results, out_dir, max(args.batch_sizes),
                      device=args.device_name)
        return
    ok, reason = kernel_status()
    if not ok:
        sys.exit(f"bench_e2e: the project's CUDA kernels are not usable, nothing to measure: {reason}")
    env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "command": " ".join(["python"] + sys.argv),
           "weights": "random (seeded); speed does not depend on weight values", "kernels": reason,
           "kernel_source_sha256": kernel_source_fingerprint()}
    log(json.dumps(env, indent=1))
    large = max(args.batch_sizes)
    payload = {"environment": env}
    if args.profile:
        try:
            profile(args, out_dir)
        except Exception:
            traceback.print_exc()
    official = []
    if args.official and not args.no_grid:
        official = measure_official(args)  # first: a failing official build ends the run before the long grid
        payload["official"] = official
    if not args.no_grid:
        def save(partial):
            (out_dir / "e2e_results.json").write_text(json.dumps({**payload, "results": partial, "partial": True}, indent=1))

        results = run_grid(args, save)
        save(results)
        if args.variants:
            results += run_variants(args)
        write_outputs(payload, results, out_dir, large, official=official)
    # last: its torch.compile runs are the slowest and least predictable part
    if args.explore:
        payload["explore"] = explore(args)
        (out_dir / "e2e_explore.json").write_text(json.dumps(payload["explore"], indent=1))
        for r in payload["explore"]:
            log(f"{r['variant']:45s} {r['dtype']} b{r['batch']:<4d} "
                + (f"{r['median_ms']:9.3f} ms {r['img_per_s']:9.1f} img/s" if "error" not in r else r["error"][:200]))
    if args.no_grid:
        (out_dir / "e2e_results.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
