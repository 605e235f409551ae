"""Feature backbones at segmentation sizes: the official ``Backbone_VSSM`` and this project's
``prepare_runtime`` on ``create_model(name, features_only=True)``, side by side in one process.

    python benchmarks/bench_backbone.py --official third_party/VMamba [--models vmamba_tiny_s1l8 ...]
        [--sizes 512 1024] [--batch 16 1] [--precisions fp16 fp32-tf32off fp32-default]
        [--configs baseline vmeanba-k4+qm-k3] [--iters 10] [--latency-iters 30] [--budget-s 240] [--out DIR]
    python benchmarks/bench_backbone.py --device cpu --dry-run     # the plumbing on a CPU, tiny shapes

``benchmarks/run_device_backbone.sh`` builds this project's kernel library and the official oflex
extension, then runs this on the GPU machine.

- Official: ``Backbone_VSSM(out_indices=(0, 1, 2, 3), **MODEL_CONFIGS[name].kwargs)`` from the
  checkout (benchmarks/official.py copies, patches and imports it; its oflex extension is built for
  the GPU), random weights (seeded), eager, ``torch.no_grad()``; fp16 = ``torch.autocast`` (AMP).
  The same eager timing as bench_side_by_side.py's end-to-end table: the median of the calls, each
  between two CUDA events.
- Ours: ``create_model(name, features_only=True)`` with the official weights loaded strictly,
  ``prepare_runtime(mode="graph")`` (bench_e2e.measure: one CUDA graph, the median of timed
  replays), uncompressed (``baseline``) and with VMeanba K=4 (layers.2.blocks.0-3, folded) +
  QuarterMap every:3 (``vmeanba-k4+qm-k3``; bench_e2e.CONFIGS); fp16 = the model in float16.
- Precisions (bench_side_by_side.PRECISIONS): ``fp32-tf32off`` (cuDNN and matmul TF32 off, both
  sides), ``fp32-default`` (PyTorch's defaults, both sides: cuDNN TF32 on, matmul TF32 off), ``fp16``.
- Feature parity, in the same run, before any timing: ours against the official maps at float32
  (TF32 off) on ``--parity-shape`` (default 1x3x512x512): max abs, max abs / max |official| and
  cosine per feature map. On a CPU (``--device cpu``) the official code runs its pure-PyTorch scan
  and cross-scan (official.use_torch_cross_scan) and ours its float32 reference ops.
- ``--budget-s``: a measurement that would not finish inside the budget (estimated from the slowest
  measurement so far of the same model, size and batch) is not started; it shows as
  "skipped (budget)" in the table and the JSON, and the run still writes both and exits 0.
- ``--dry-run``: tiny defaults for checking the plumbing (64x64, batch 1 and 2, 2 timed calls,
  VMamba-T, fp32 TF32 off), marked in the output as not a measurement. On a CPU the timings are
  plain ``time.perf_counter`` medians of eager calls and say nothing about the GPU.
- Without an official checkout (or with ``--no-official``) the official column is left out
  ("not run") on a CPU; on a GPU a missing checkout is an error (exit 2) unless ``--no-official``.

Writes backbone.json and backbone.md to ``--out`` after every measurement group (temp file beside
each, then a rename), prints the Markdown at the end.

Exit codes: 0 done; 2 bad arguments or no usable official checkout; 3 the official extension did not
build or import; 4 no CUDA device or this project's kernels are unavailable (GPU runs).
"""
from __future__ import annotations

import argparse
import datetime
import json
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

import bench_e2e  # noqa: E402  (benchmarks/bench_e2e.py: compression configurations, graph-replay measurement)
import bench_side_by_side as sbs  # noqa: E402  (precisions, TF32 flags, eager CUDA-event timer, budget)
import official as official_code  # noqa: E402  (benchmarks/official.py)
from exporter.models import MODEL_CONFIGS, create_model  # noqa: E402

DEFAULT_MODELS = ["vmamba_tiny_s1l8", "vmamba_small_s1l20"]
DEFAULT_SIZES = ["512", "1024"]
DEFAULT_PRECISIONS = ["fp16", "fp32-tf32off", "fp32-default"]  # most wanted first: the budget cuts the tail
CONFIGS = list(sbs.E2E_CONFIGS)  # baseline, vmeanba-k4+qm-k3
CONFIG_LABELS = {"baseline": "ours", "vmeanba-k4+qm-k3": "ours K4+QM3"}
DRY_RUN = dict(sizes=["64"], batch=[1, 2], iters=2, latency_iters=2, warmup=1, models=["vmamba_tiny_s1l8"],
               precisions=["fp32-tf32off"], parity_shape=[1, 64, 64])
SKIPPED_BUDGET = "budget"
RESERVE_S = 10.0  # a first measurement of a (model, size, batch) starts only with this much budget left
EXIT_BAD_INPUT, EXIT_OFFICIAL_BUILD, EXIT_NO_KERNELS = sbs.EXIT_BAD_INPUT, sbs.EXIT_OFFICIAL_BUILD, sbs.EXIT_NO_KERNELS
JSON_NAME, MD_NAME = "backbone.json", "backbone.md"


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- arguments
def parse_size(text: str) -> tuple[int, int]:
    """``512`` -> (512, 512); ``512x1024`` -> (512, 1024) (H x W)."""
    parts = text.lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 32:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: write S or HxW with H, W >= 32, e.g. 512 or 512x1024")
    return dims


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", default=os.environ.get("VMAMBA_OFFICIAL", str(official_code.DEFAULT_CHECKOUT)),
                    help="official VMamba checkout (default $VMAMBA_OFFICIAL or third_party/VMamba)")
    ap.add_argument("--no-official", action="store_true", help="measure this project's side only")
    ap.add_argument("--work-dir", default=str(official_code.DEFAULT_WORK_DIR),
                    help="where the patched copy and the oflex build live (default build/official-oflex)")
    ap.add_argument("--oflex-build", choices=("forward", "setup"), default="forward",
                    help="forward: forward kernels for fp32/fp16 only (fast); setup: the official setup.py")
    ap.add_argument("--arch", default="9.0", help="TORCH_CUDA_ARCH_LIST for the oflex build (default 9.0)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny defaults (64x64, batch 1 2, 2 timed calls, VMamba-T, fp32): a plumbing check")
    ap.add_argument("--models", nargs="+", default=None, help=f"default {' '.join(DEFAULT_MODELS)}")
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=None,
                    help=f"input sizes, S or HxW (default {' '.join(DEFAULT_SIZES)})")
    ap.add_argument("--batch", nargs="+", type=int, default=None, help="batch sizes (default 16 1)")
    ap.add_argument("--precisions", nargs="+", default=None, choices=list(sbs.PRECISIONS),
                    help=f"default {' '.join(DEFAULT_PRECISIONS)}")
    ap.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS, help="our configurations")
    ap.add_argument("--iters", type=int, default=None, help="timed calls per measurement at batch > 1 (default 10)")
    ap.add_argument("--latency-iters", type=int, default=None, help="timed calls per measurement at batch 1 (default 30)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 3)")
    ap.add_argument("--parity-shape", type=int, nargs=3, metavar=("B", "H", "W"), default=None,
                    help="input of the feature parity check (default 1 512 512)")
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="wall-clock budget from start; measurements that would end later are skipped (default 240)")
    ap.add_argument("--out", default=os.environ.get("OUT", "out/backbone"))
    args = ap.parse_args(argv)
    defaults = dict(sizes=[parse_size(s) for s in DEFAULT_SIZES], batch=[16, 1], iters=10, latency_iters=30,
                    warmup=3, models=list(DEFAULT_MODELS), precisions=list(DEFAULT_PRECISIONS),
                    parity_shape=[1, 512, 512])
    if args.dry_run:
        defaults.update(DRY_RUN, sizes=[parse_size(s) for s in DRY_RUN["sizes"]])
    if args.device == "cpu":
        defaults["precisions"] = ["fp32-tf32off"]  # the CPU has neither fp16 kernels nor TF32
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = [m for m in args.models if m not in MODEL_CONFIGS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODEL_CONFIGS)}")
    not_v2 = [m for m in args.models if m not in sbs.e2e_models([m])]
    if not_v2:
        ap.error(f"{', '.join(not_v2)}: only the vmamba_* (v2) line has an official oflex Backbone_VSSM to compare "
                 "with (the official v0 line needs mamba_ssm's kernels; MedMamba has no official backbone)")
    if any(b < 1 for b in args.batch):
        ap.error("--batch sizes must be >= 1")
    for name in ("iters", "latency_iters"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.budget_s <= 0:
        ap.error("--warmup must be >= 0 and --budget-s > 0")
    if min(args.parity_shape) < 1 or min(args.parity_shape[1:]) < 32:
        ap.error("--parity-shape: B >= 1 and H, W >= 32")
    if args.device == "cpu" and "fp16" in args.precisions:
        ap.error("fp16 needs --device cuda (on a CPU use fp32-tf32off)")
    return args


# --------------------------------------------------------------------------- the two sides
class Budget(sbs.Budget):
    """sbs.Budget plus an estimate: the slowest measurement so far of each (model, size, batch)."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.slowest: dict[tuple, float] = {}

    def allows(self, key: tuple) -> bool:
        return self.left() >= max(RESERVE_S, 1.2 * self.slowest.get(key, 0.0))

    def record(self, key: tuple, seconds: float) -> None:
        self.slowest[key] = max(seconds, self.slowest.get(key, 0.0))


def cpu_ms(call, iters: int, warmup: int) -> float:
    """Median ms of ``iters`` eager calls on the CPU (time.perf_counter)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def official_row(model, prec: sbs.Precision, batch: int, hw: tuple[int, int], iters: int, warmup: int,
                 device: str) -> dict:
    """The official backbone, eager, no_grad (fp16: autocast), on a random batch."""
    x = torch.randn(batch, 3, *hw, device=device)
    with sbs.precision_flags(prec), torch.no_grad():
        def step():
            with sbs._autocast(prec, graph_safe=False):
                return model(x)
        maps = step()
        finite = all(bool(torch.isfinite(m).all()) for m in maps)
        ms = sbs.eager_ms(step, iters, warmup) if device == "cuda" else cpu_ms(step, iters, warmup)
    return {"median_ms": ms, "img_per_s": batch * 1000.0 / ms, "iters": iters, "finite": finite}


def ours_model(name: str, state: dict | None, device: str):
    """Our feature backbone with the official weights (strict); random weights without them."""
    torch.manual_seed(0)
    with torch.device(device):
        model = create_model(name, features_only=True).eval()
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model


def ours_row(model, prec: sbs.Precision, batch: int, hw: tuple[int, int], iters: int, warmup: int,
             device: str) -> dict:
    """prepare_runtime(mode="graph") timed by bench_e2e.measure on the GPU (the flags of ``prec``
    in force while the graph is captured and replayed); eager float32 calls on the CPU."""
    if device == "cuda":
        with sbs.precision_flags(prec):
            m = bench_e2e.measure(model, prec.dtype, batch, iters, hw, tf32=None, warmup=max(1, warmup))
        return {k: m[k] for k in ("median_ms", "img_per_s", "iters", "finite", "setup_s")}
    x = torch.randn(batch, 3, *hw)
    with torch.no_grad():
        maps = model(x)
        finite = all(bool(torch.isfinite(m).all()) for m in maps)
        ms = cpu_ms(lambda: model(x), iters, warmup)
    return {"median_ms": ms, "img_per_s": batch * 1000.0 / ms, "iters": iters, "finite": finite}


def feature_parity(official_model, ours, shape: tuple[int, int, int], device: str) -> list[dict]:
    """Ours vs the official maps at float32, TF32 off, on one random input: per feature map."""
    prec = sbs.PRECISIONS["fp32-tf32off"]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape[0], 3, shape[1], shape[2], generator=gen).to(device)
    with sbs.precision_flags(prec), torch.no_grad():
        ref = official_model(x)
        if device == "cuda":
            from exporter.runtime import prepare_runtime

            rt = prepare_runtime(ours, dtype=torch.float32, batch_size=shape[0], image_size=shape[1:], mode="eager",
                                 tf32=False, warmup=0)
            try:
                got = rt(x)
            finally:
                rt.release()
        else:
            got = ours(x)
    out = []
    for i, (g, r) in enumerate(zip(got, ref)):
        g, r = g.float().flatten(), r.float().flatten()
        out.append({"map": f"feat{i}", "shape": list(ref[i].shape), "max_abs": float((g - r).abs().max()),
                    "max_rel": sbs.max_rel_err(g, r),
                    "cosine": float(torch.nn.functional.cosine_similarity(g.double(), r.double(), dim=0))})
    return out


# --------------------------------------------------------------------------- the grid
def size_label(hw) -> str:
    return f"{hw[0]}x{hw[1]}"


def run_grid(args, code, results: dict, budget: Budget, save) -> None:
    """Every model x size x batch x precision: the official row, then ours in each configuration
    (a comparison is complete before the next one starts, so a budget cut leaves whole rows)."""
    precisions = [sbs.PRECISIONS[p] for p in args.precisions]
    for name in args.models:
        official_model, state = None, None
        if code is not None:
            if budget.left() < RESERVE_S:
                log(f"{name}: official backbone not built (budget)")
            else:
                torch.manual_seed(0)
                official_model = code.backbone(MODEL_CONFIGS[name].kwargs, device=args.device)
                state = official_model.state_dict()
        if official_model is not None and budget.left() >= RESERVE_S:
            try:
                parity = feature_parity(official_model, ours_model(name, state, args.device), tuple(args.parity_shape),
                                        args.device)
                results["parity"].append({"model": name, "shape": list(args.parity_shape), "maps": parity})
                log(f"parity {name} 1x3x{args.parity_shape[1]}x{args.parity_shape[2]} fp32 (TF32 off): " + "; ".join(
                    f"{p['map']} max abs {p['max_abs']:.2e} cos {p['cosine']:.7f}" for p in parity))
            except Exception as exc:
                results["parity"].append({"model": name, "shape": list(args.parity_shape),
                                          "error": f"{type(exc).__name__}: {exc}"[:500]})
                traceback.print_exc()
            save()
        for hw in args.sizes:
            for batch in args.batch:
                key = (name, hw, batch)
                iters = args.iters if batch > 1 else args.latency_iters
                for prec in precisions:
                    sides = ([("official", "baseline")] if code is not None else []) + [("ours", c) for c in args.configs]
                    for side, config in sides:
                        row = {"model": name, "size": size_label(hw), "batch": batch, "precision": prec.name,
                               "side": side, "config": config}
                        results["rows"].append(row)
                        if side == "official" and official_model is None:
                            row["skipped"] = SKIPPED_BUDGET
                        elif not budget.allows(key):
                            row["skipped"] = SKIPPED_BUDGET
                        else:
                            t0 = time.monotonic()
                            try:
                                if side == "official":
                                    row.update(official_row(official_model, prec, batch, hw, iters, args.warmup,
                                                            args.device))
                                else:
                                    model = ours_model(name, state, args.device)
                                    row["vmeanba_quartermap"] = bench_e2e.configure(model, config)
                                    row.update(ours_row(model, prec, batch, hw, iters, args.warmup, args.device))
                                    del model
                            except Exception as exc:  # one failing measurement must not hide the others
                                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
                                traceback.print_exc()
                            row["wall_s"] = time.monotonic() - t0
                            budget.record(key, row["wall_s"])
                            if args.device == "cuda":
                                torch.cuda.empty_cache()
                        log(f"{name:18s} {size_label(hw):9s} b{batch:<3d} {prec.name:12s} "
                            f"{CONFIG_LABELS[config] if side == 'ours' else 'official':12s} {progress(row)}"
                            f"  ({budget.left():.0f} s left)")
                    save()
        del official_model, state
        if args.device == "cuda":
            torch.cuda.empty_cache()


def progress(row: dict) -> str:
    if "error" in row:
        return "ERROR " + row["error"][:200]
    if "skipped" in row:
        return f"skipped ({row['skipped']})"
    return f"{row['median_ms']:10.3f} ms {row['img_per_s']:9.1f} img/s" + ("" if row.get("finite", True) else " NON-FINITE")


# --------------------------------------------------------------------------- tables
def _find(rows, **key):
    for r in rows:
        if all(r.get(k) == v for k, v in key.items()):
            return r
    return None


def cell(row: dict | None, key: str, spec: str) -> str:
    if row is None:
        return "not run"
    if "skipped" in row:
        return f"skipped ({row['skipped']})"
    if "error" in row:
        return "error"
    return sbs.fmt(row.get(key), spec)


def speedup(a: dict | None, b: dict | None) -> str:
    """How many times faster ``a`` is than ``b`` (b's ms over a's ms)."""
    ok = all(r is not None and "median_ms" in r for r in (a, b))
    return sbs.fmt(b["median_ms"] / a["median_ms"] if ok else None, ".2f", "x")


def grid_markdown(rows: list[dict], model: str) -> str:
    head = ["size", "batch", "precision", "official ms", "official img/s", "ours ms", "ours img/s",
            "ours vs official", "ours K4+QM3 ms", "ours K4+QM3 img/s", "K4+QM3 vs official", "K4+QM3 vs ours"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * len(head)) + " |"]
    mine = [r for r in rows if r["model"] == model]
    for size, batch, prec in dict.fromkeys((r["size"], r["batch"], r["precision"]) for r in mine):
        key = dict(model=model, size=size, batch=batch, precision=prec)
        off = _find(mine, side="official", **key)
        base = _find(mine, side="ours", config="baseline", **key)
        both = _find(mine, side="ours", config="vmeanba-k4+qm-k3", **key)
        lines.append("| " + " | ".join([
            size, str(batch), prec, cell(off, "median_ms", ".3f"), cell(off, "img_per_s", ".1f"),
            cell(base, "median_ms", ".3f"), cell(base, "img_per_s", ".1f"), speedup(base, off),
            cell(both, "median_ms", ".3f"), cell(both, "img_per_s", ".1f"), speedup(both, off),
            speedup(both, base)]) + " |")
    return "\n".join(lines)


def parity_markdown(parity: list[dict]) -> str:
    lines = ["| model | input | map | shape | max abs | max abs / max abs official | cosine |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in parity:
        shape = "x".join(map(str, [p["shape"][0], 3, *p["shape"][1:]]))
        if "error" in p:
            lines.append(f"| {p['model']} | {shape} | - | - | error: {p['error'][:120]} | - | - |")
            continue
        for m in p["maps"]:
            lines.append(f"| {p['model']} | {shape} | {m['map']} | {'x'.join(map(str, m['shape']))} "
                         f"| {m['max_abs']:.2e} | {m['max_rel']:.2e} | {m['cosine']:.7f} |")
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    env = results["environment"]
    parts = []
    if env.get("dry_run") or env.get("device_kind") == "cpu":
        parts += ["**Dry run / CPU: a plumbing check, not a measurement.**", ""]
    parts.append(f"Backbones side by side, {env.get('device', '?')}; {env.get('date_utc', '?')}; torch "
                 f"{env.get('torch', '?')} (CUDA {env.get('cuda', '-')}); official code "
                 f"{env.get('official_fingerprint', 'not run')}; command: {env.get('command', '?')}")
    parts += ["", "Official: Backbone_VSSM eager + no_grad (fp16: autocast), median of CUDA-event-timed calls. "
              "Ours: prepare_runtime graph (fp16: the model in float16), median of timed replays. "
              "K4+QM3: VMeanba K=4 (layers.2.blocks.0-3, folded) + QuarterMap every:3. "
              "fp32-tf32off: TF32 off both sides; fp32-default: PyTorch defaults both sides "
              "(cuDNN TF32 on, matmul TF32 off). \"x vs y\": how many times faster x is (y ms / x ms)."]
    if results.get("parity"):
        parts += ["", "## Feature parity, ours vs official (float32, TF32 off, same weights)", "",
                  parity_markdown(results["parity"])]
    for model in dict.fromkeys(r["model"] for r in results.get("rows", [])):
        parts += ["", f"## {model}", "", grid_markdown(results["rows"], model)]
    skipped = [r for r in results.get("rows", []) if "skipped" in r]
    if skipped:
        parts += ["", f"{len(skipped)} measurement(s) skipped (budget: --budget-s {env.get('budget_s')})."]
    return "\n".join(parts) + "\n"


def write_results(out_dir: Path, results: dict) -> None:
    """backbone.json and backbone.md, each through a temp file beside it and a rename."""
    out_dir.mkdir(parents=True, exist_ok=True)
    official_code.write_if_changed(out_dir / JSON_NAME, json.dumps(results, indent=1, default=str).encode())
    official_code.write_if_changed(out_dir / MD_NAME, render_markdown(results).encode())


# --------------------------------------------------------------------------- entry
def load_official(args):
    """OfficialCode (GPU: with the oflex extension; CPU: without, pure-PyTorch cross-scan), or None
    where it is not asked for or, on a CPU, not there; raises OfficialCodeError / OfficialBuildError."""
    if args.no_official:
        return None
    if args.device == "cpu":
        try:
            official_code.check_checkout(args.official)
        except official_code.OfficialCodeError as exc:
            log(f"official code path skipped (CPU run): {exc}")
            return None
        code = official_code.OfficialCode(args.official, args.work_dir, with_extension=False)
        official_code.use_torch_cross_scan(code.models)
        return code
    return official_code.OfficialCode(args.official, args.work_dir, args.oflex_build, args.arch)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("bench_backbone: no CUDA device (torch.cuda.is_available() is False); --device cpu --dry-run "
                  "checks the plumbing on a CPU", file=sys.stderr)
            return EXIT_NO_KERNELS
        from exporter.runtime import kernel_status

        ok, reason = kernel_status()
        if not ok:
            print(f"bench_backbone: this project's CUDA kernels are unavailable: {reason}", file=sys.stderr)
            return EXIT_NO_KERNELS
        torch.backends.cudnn.benchmark = False
    else:
        reason = "CPU: float32 reference ops (plugins/reference.py)"
    try:
        code = load_official(args)
    except official_code.OfficialCodeError as exc:
        print(f"bench_backbone: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except official_code.OfficialBuildError as exc:
        print(f"bench_backbone: {exc}", file=sys.stderr)
        return EXIT_OFFICIAL_BUILD
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    results = {"environment": {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_name, "device_kind": args.device, "dry_run": args.dry_run, "torch": torch.__version__,
        "cuda": torch.version.cuda, "python": platform.python_version(),
        "command": " ".join(["python"] + sys.argv[:1] + (argv if argv is not None else sys.argv[1:])),
        "official_checkout": str(code.checkout) if code else None,
        "official_fingerprint": code.fingerprint if code else None,
        "oflex_build": (code.build if code.oflex is not None else "none (CPU)") if code else None,
        "official_setup_s": code.setup_s if code else None, "kernels": reason, "budget_s": args.budget_s,
        "sizes": [size_label(s) for s in args.sizes], "batch": args.batch, "iters": args.iters,
        "latency_iters": args.latency_iters, "precisions": {p: sbs.PRECISIONS[p].label for p in args.precisions},
    }, "parity": [], "rows": []}
    out_dir = Path(args.out)
    log(json.dumps(results["environment"], indent=1))

    def save():
        write_results(out_dir, results)

    run_grid(args, code, results, budget, save)
    save()
    log("\n" + render_markdown(results))
    log(f"wrote {out_dir / JSON_NAME} and {out_dir / MD_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
