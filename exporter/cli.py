"""vm-export: compress (VMeanba, QuarterMap), export to ONNX with custom ops, verify with Polygraphy.

    vm-export --arch vmamba_tiny_s1l8 --checkpoint ck.pth --vmeanba-layers auto --quartermap \\
              --calib DIR -o model.onnx --verify --trt-onnx --report report.json

This module only parses, calls :mod:`exporter.pipeline`, maps its errors to exit codes and prints.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback

from exporter.pipeline import (  # noqa: F401  (the exit codes are part of this module's interface)
    EXIT_BAD_ARGS, EXIT_CHECKPOINT, EXIT_CODES, EXIT_EXPORT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_OUTPUT,
    ENGINE_BUILDERS, EXIT_ENGINE, EXIT_NO_BUILDER, EXIT_PARITY, OPSET_RANGE, PipelineError, UsageError, engine_summary,
)

EPILOG = """\
model source:
  no --checkpoint and no --arch   the bundled digits model digits_vmamba (trained, 32x32, 10 classes)
  --arch digits_medmamba          the bundled digits MedMamba
  --checkpoint ck.pth [--arch A]  an official checkpoint (architecture inferred from its keys, or A)
  --arch A (no checkpoint)        registry model A with RANDOM weights (export plumbing only)

layer specs (--vmeanba-layers, --quartermap):
  none | all | auto | k=4 | layers.2.blocks.0,layers.2.blocks.3 | 0,3,5 (global, from 0) |
  stage:2 | stage:1-2 | every:3 (QuarterMap's strategy; `--quartermap` alone = every:3)

speed-aware plan (docs/COMPRESSION.md, "The speed-aware planner"):
  vm-export --plan fastest --max-drop 0.005 [--plan-cost gpu --plan-batch 128 --precision fp16]
  per block none / VMeanba / QuarterMap / both, from a cost model measured on the target (cached in
  --plan-cache) and single-block drops on --calib; the joint drop is measured and backed off
  until it holds, then a measured search (--plan-evaluations N, default 256) looks for faster
  plans. --report R.json adds the plan to R.json / R.md and writes R.plan_pareto.png.

outputs (all staged beside their destination and moved in at the end: a failed run writes nothing):
  OUT.onnx        custom nodes WITH standard-op function bodies: runs in ONNX Runtime anywhere
                  (no plugin); TensorRT >= 10.15 uses the plugins (nodes carry plugin_namespace)
  OUT.trt.onnx    (--trt-onnx) bodies stripped: TensorRT only; a missing plugin fails loudly
  OUT.inputs.json / OUT.golden.json  (--verify) Polygraphy inputs and PyTorch golden outputs:
                  polygraphy run OUT.trt.onnx --trt --plugins LIB --load-inputs OUT.inputs.json \\
                      --load-outputs OUT.golden.json --atol A --rtol R
  R.json, R.md, R.vmeanba_*.png  (--report R.json) JSON report, Markdown summary, selection plots
  ENGINE          (--engine ENGINE) serialized TensorRT engine, built with the installed builder:
                  TensorRT (tensorrt) or TensorRT-RTX (pip install tensorrt-rtx-cu13-libs==1.7.1.116
                  tensorrt-rtx-cu13-bindings==1.7.1.116; builds on a CPU-only machine). It is built
                  from OUT.trt.onnx with the plugin library when one is given (--engine-plugins) or,
                  with --trt-onnx, found (VMAMBA_TRT_PLUGIN_LIB / VMAMBA_TRT_PLUGIN_DIR / build/);
                  else from OUT.onnx, whose function bodies become TensorRT layers. TensorRT-RTX
                  engines do not run on compute capability 9.0 (H100/H200): --verify says when an
                  engine could not be executed, and the report's engine section records it.

exit codes:
""" + "".join(f"  {code:<3d} {text}\n" for code, text in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, no usage dump
        raise UsageError(f"{message} (see vm-export --help)")


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.01, got {text!r}") from None


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(text: str) -> int:
    """A byte count: 1073741824, 512M, 2G (binary units; a trailing B or iB is allowed)."""
    low = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = low[-1:] if low[-1:] in _SIZE_UNITS else ""
    try:
        value = float(low[: len(low) - len(unit)]) * _SIZE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 2G, 512M or 1073741824, got {text!r}") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"expected a positive size such as 2G, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    from plugins.contract import QUARTERMAP_DOWN, VMEANBA_VARIANTS

    stride, keep = QUARTERMAP_DOWN.attribute("stride"), QUARTERMAP_DOWN.attribute("keep")
    p = _Parser(prog="vm-export", description=__doc__.splitlines()[0], epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--arch", help="registry name (see --list-models); default: digits_vmamba")
    m.add_argument("--checkpoint", help="checkpoint file (.pth/.pt/.safetensors); read safely, never executed")
    m.add_argument("--num-classes", type=int, help="classifier size, >= 1 (default: from the checkpoint / config)")
    m.add_argument("--features-only", action="store_true",
                   help="export the feature backbone (outputs feat0..feat3, the per-stage maps with their out norms, "
                        "as the official Backbone_VSSM gives them to UperNet / Mask R-CNN) instead of the "
                        "classifier; implied by a segmentation / detection checkpoint; layer selection then "
                        "scores label-free feature agreement")
    m.add_argument("--list-models", action="store_true", help="list registered architectures and exit")
    c = p.add_argument_group("compression")
    c.add_argument("--vmeanba-layers", default="none", metavar="SPEC", help="layers for VMeanba (default: none)")
    c.add_argument("--vmeanba-variant", choices=list(VMEANBA_VARIANTS),
                   help="VMeanba semantics: all-rows (the authors', default), per-direction (one mean per scan "
                        "direction), pre-discretisation (mean of the inputs before discretising)")
    c.add_argument("--vmeanba-form", choices=["auto", "folded", "literal"],
                   help="folded: exact elementwise form (needs a channel-LayerNorm out_norm); literal: the reduced "
                        "scan (VMeanbaScan node); auto: folded where exact (default)")
    c.add_argument("--max-drop", type=_fraction, metavar="FRACTION",
                   help="accuracy budget for --vmeanba-layers auto or k=N, a fraction in [0, 1): 0.01 = 1 point")
    c.add_argument("--quartermap", nargs="?", const="every:3", default=None, metavar="SPEC",
                   help="layers for QuarterMap (flag alone: every:3, the authors' default)")
    c.add_argument("--quartermap-stride", type=int, metavar="S",
                   help=f"QuarterMap keeps rows/columns i with i %% S < K; {stride.min} <= K < S <= {stride.max} "
                        f"(default S={stride.default})")
    c.add_argument("--quartermap-keep", type=int, metavar="K",
                   help=f"rows/columns kept of every S (default K={keep.default}: the top-left pixel of each 2x2)")
    c.add_argument("--plan", choices=["fastest"], default=None,
                   help="speed-aware planner: choose none / VMeanba / QuarterMap / both per block for the fastest "
                        "model whose measured calibration drop stays within --max-drop (default 0.01); conflicts "
                        "with --vmeanba-layers / --quartermap (exit 2)")
    c.add_argument("--plan-cost", default="auto", choices=["auto", "gpu", "cpu", "cuda", "cpu-torch", "cpu-ort"],
                   help="where the per-block cost model is measured: gpu (= cuda: the project's GPU runtime, CUDA "
                        "graphs), cpu (= cpu-torch: PyTorch eager), cpu-ort (ONNX Runtime CPU); auto: gpu when the "
                        "CUDA kernels work, else cpu. No cost model (e.g. gpu without a GPU): the plain "
                        "--vmeanba-layers auto selection with a warning")
    c.add_argument("--plan-cache", metavar="DIR",
                   help="cost-model cache folder (default $VM_DEPLOY_CACHE or ~/.cache/vm-deploy, sub-folder "
                        "cost_models); an entry that does not match is ignored with a warning")
    c.add_argument("--plan-batch", type=int, metavar="N",
                   help="deployment batch the cost model is measured at (default: --batch); precision: --precision")
    c.add_argument("--plan-evaluations", type=int, metavar="N",
                   help="most plans the planner's search measures on --calib after its first choice: the exact "
                        "search over every plan predicted faster when they fit, else measured two-block swaps "
                        "(default 256; 0 turns the search off)")
    c.add_argument("--calib", metavar="SRC", help="calibration data for auto/k=N: image dir, .npy/.npz, digits[:split], "
                                                  "synthetic[:N] (default for the digits models: digits)")
    c.add_argument("--calib-limit", type=int, metavar="N", help="use at most N calibration samples")
    e = p.add_argument_group("export")
    e.add_argument("-o", "--output", help="output .onnx path (default: <arch>.onnx)")
    e.add_argument("--precision", default="fp32", choices=["fp32", "fp16"],
                   help="ONNX tensor types: fp32, or fp16 with the scan parameters kept float32 (default fp32)")
    e.add_argument("--batch", type=int, default=1, help="example batch size (the batch axis is dynamic anyway)")
    e.add_argument("--resolution", help="H or HxW (default: the model's pretrained input size)")
    dyn = e.add_mutually_exclusive_group()
    dyn.add_argument("--dynamic", dest="dynamic", action="store_true", default=True,
                     help="dynamic batch, height and width (default)")
    dyn.add_argument("--static", dest="dynamic", action="store_false", help="fixed input shape")
    e.add_argument("--opset", type=int, default=18,
                   help=f"ONNX opset, {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (default 18)")
    e.add_argument("--trt-onnx", action="store_true", help="also write OUT.trt.onnx (function bodies stripped)")
    g = p.add_argument_group("TensorRT engine (exporter/engine.py)")
    g.add_argument("--engine", metavar="PATH",
                   help="also build a serialized TensorRT engine at PATH (e.g. out/model.engine) with the "
                        "installed builder; exit 7 when none is installed")
    g.add_argument("--engine-shapes", metavar="MIN,OPT,MAX",
                   help="shape profile of the input, three BxCxHxW shapes (or one: fixed), e.g. "
                        "1x3x224x224,8x3x224x224,32x3x224x224 (default for a dynamic export: batch 1, the "
                        "example --batch, max(8, --batch), at the example resolution)")
    g.add_argument("--engine-builder", choices=list(ENGINE_BUILDERS), default="auto",
                   help="tensorrt (full TensorRT, needs a GPU to build) or tensorrt_rtx (TensorRT-RTX, builds "
                        "on the CPU); auto: the first one installed, in that order (default)")
    g.add_argument("--engine-workspace", type=_size, metavar="SIZE",
                   help="builder workspace memory limit, bytes or with a K/M/G suffix, e.g. 2G (default: the "
                        "builder's)")
    g.add_argument("--engine-plugins", metavar="LIB",
                   help="plugin library libvmamba_trt_plugins.so (docs/PLUGINS.md): the engine is built from "
                        "OUT.trt.onnx with --trt-onnx, else from OUT.onnx, with our plugins as its custom layers")
    v = p.add_argument_group("verification and report")
    v.add_argument("--verify", action="store_true", help="Polygraphy parity vs PyTorch + ORT/PyTorch latency")
    v.add_argument("--iterations", type=int, default=2, help="parity inputs (default 2)")
    v.add_argument("--latency-runs", type=int, default=10, help="timed runs per runtime with --verify (0: skip)")
    v.add_argument("--report", metavar="R.json", help="write a JSON report, a Markdown summary R.md and the "
                                                      "selection plots beside it")
    v.add_argument("--threads", type=int, help="torch / ONNX Runtime CPU threads (default: all cores; 1 is often "
                                               "faster on a loaded machine)")
    v.add_argument("--seed", type=int, default=0, help="seed for random weights, synthetic data and parity inputs")
    v.add_argument("--quiet", action="store_true", help="no progress display, summary only")
    v.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def parse_resolution(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(s) for s in parts]
    except ValueError:
        raise UsageError(f"--resolution must be H or HxW with integers, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise UsageError(f"--resolution must be H or HxW with positive integers, got {text!r}")
    return values[0], values[1]


def options_from_args(args):
    import dataclasses

    from exporter.pipeline import Options

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options) if hasattr(args, f.name)}
    values["resolution"] = parse_resolution(args.resolution)
    return Options(**values)


# --------------------------------------------------------------------------- printing
class Terminal:
    """Progress and summary on a terminal (rich); plain lines, no escape codes, no wrapping otherwise."""

    def __init__(self, quiet: bool):
        from rich.console import Console as RichConsole

        self.err = RichConsole(stderr=True, quiet=quiet)
        self.out = RichConsole()
        self.quiet = quiet
        self.interactive = self.err.is_terminal and not quiet

    @contextlib.contextmanager
    def step(self, text: str):
        t0 = time.perf_counter()
        if not self.interactive:
            yield
            if not self.quiet:
                print(f"done {text} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=self.err, transient=True) as prog:
            prog.add_task(text, total=None)
            yield
        self.err.print(f"[green]done[/] {text} ({time.perf_counter() - t0:.1f} s)")

    def summary(self, rows: list[tuple[str, str]], layers: dict[str, str]) -> None:
        if not self.out.is_terminal:  # a pipe or a file: whole lines, no table borders, no escape codes
            print("SS2D layers")
            for name, form in layers.items():
                print(f"  {name}: {form}")
            print("vm-export summary")
            for item, value in rows:
                print(f"  {item}: {value}")
            return
        from rich.table import Table

        t = Table(title="SS2D layers")
        t.add_column("layer")
        t.add_column("exported as")
        for name, form in layers.items():
            t.add_row(name, form)
        self.out.print(t)
        s = Table(title="vm-export summary", show_header=False)
        s.add_column("item", style="bold")
        s.add_column("value", overflow="fold")
        for item, value in rows:
            s.add_row(item, value)
        self.out.print(s)


def summary_rows(report: dict) -> list[tuple[str, str]]:
    ex = report["export"]
    rows = [("model", report["model"]), ("precision / opset", f"{ex['precision']} / {ex['opset']}"),
            ("input", f"example {tuple(ex['input_shape'])}; dynamic: "
                      f"{', '.join(ex['dynamic_axes'].values()) or 'none (static)'}"),
            ("ONNX nodes (top level)", f"{ex['node_count']}  custom: {ex['custom_nodes'] or 'none'}"),
            ("export time", f"{ex['export_seconds']:.1f} s")]
    rows += [("note", note) for note in ex.get("notes", [])]
    rows += [("checkpoint", note) for note in (report.get("checkpoint") or {}).get("notes", [])]
    sel = report.get("selection")
    if sel:
        rows.append(("VMeanba selection", f"{sel['metric']}: baseline {sel['baseline']:.4f}, joint {sel['joint']:.4f} "
                                          f"(drop {sel['joint_drop']:+.4f}) on {sel['calibration']}"))
    if report.get("plan"):
        from exporter.compress.planner import PlanResult
        from exporter.compress.report import plan_summary

        rows.append(("compression plan", plan_summary(PlanResult(**report["plan"]))))
    elif report["compression"].get("plan_fallback"):
        rows.append(("compression plan", report["compression"]["plan_fallback"]))
    par = report.get("parity")
    if par:
        rows.append(("parity ORT vs PyTorch", f"{'PASS' if par['passed'] else 'FAIL'} max abs {par['max_abs_error']}, "
                                              f"max rel {par['max_rel_error']} (atol {par['atol']:g}, rtol "
                                              f"{par['rtol']:g}, {par['iterations']} inputs)"))
    lat = report.get("latency")
    if lat:
        rows.append(("latency (median)", f"PyTorch eager {lat['pytorch']['median_ms']:.2f} ms, ONNX Runtime CPU "
                                         f"{lat['onnxrt']['median_ms']:.2f} ms  (input {lat['pytorch']['input_shape']}, "
                                         f"{lat['pytorch']['runs']} runs after {lat['pytorch']['warmup']} warm-up)"))
    if report.get("engine"):
        rows += engine_summary(report["engine"])
    rows += list(report["files"].items())
    return rows


def list_models() -> None:
    from exporter.models import MODEL_CONFIGS

    for name, cfg in MODEL_CONFIGS.items():
        source = "bundled" if cfg.default_cfg.weights is not None else cfg.family
        print(f"{name:24s} {source:9s} {cfg.description}")


def _error_text(exc: BaseException) -> str:
    from exporter.pipeline import strip_ansi

    return strip_ansi(str(exc)).strip()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.list_models:
            list_models()
            return EXIT_OK
        from exporter import pipeline

        console = Terminal(args.quiet)
        options = options_from_args(args)
        options.progress = console.interactive
        result = pipeline.run(options, step=console.step)
    except PipelineError as exc:
        if debug:
            traceback.print_exception(exc)
        label = f"{exc.label}: " if exc.label else ""
        print(f"vm-export: error: {label}{_error_text(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exception(exc)
        print("vm-export: error: interrupted: stopped by Ctrl-C; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001  (one line unless --debug)
        if debug:
            traceback.print_exception(exc)
        first = _error_text(exc).splitlines()
        print(f"vm-export: error: internal error: {type(exc).__name__}: {first[0] if first else ''}; rerun with --debug "
              "for the traceback and report it", file=sys.stderr)
        return EXIT_INTERNAL
    for text in result.warnings:
        print(f"vm-export: warning: {' '.join(text.split())}", file=sys.stderr)
    console.summary(summary_rows(result.report), result.report["layers"])
    if result.exit_code == EXIT_PARITY:
        par = result.report["parity"]
        print(f"vm-export: error: parity failed: max abs error {par['max_abs_error']} exceeds atol {par['atol']:g} / "
              f"rtol {par['rtol']:g}; the files are kept for inspection (compare them with polygraphy run)",
              file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
