"""vm-export: compress (VMeanba, QuarterMap), export to ONNX with custom ops, verify with Polygraphy.

    vm-export --arch vmamba_tiny_s1l8 --checkpoint ck.pth --vmeanba-layers auto --quartermap \\
              --calib DIR -o model.onnx --verify --trt-onnx --report report.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_ARGS = 2
EXIT_CHECKPOINT = 3
EXIT_EXPORT = 4
EXIT_PARITY = 5

DIGITS_ARCHS = {"digits_vmamba": "vmamba", "digits_medmamba": "medmamba"}

EPILOG = f"""\
model source:
  no --checkpoint and no --arch   the built-in digits sample model (trained VMamba, 32x32, 10 classes)
  --arch digits_medmamba          the built-in digits MedMamba
  --checkpoint ck.pth [--arch A]  an official checkpoint (architecture inferred from its keys, or A)
  --arch A (no checkpoint)        registry model A with RANDOM weights (export plumbing only)

layer specs (--vmeanba-layers, --quartermap):
  none | all | auto | k=4 | layers.2.blocks.0,layers.2.blocks.3 | 0,3,5 (global, from 0) |
  stage:2 | stage:1-2 | every:3 (QuarterMap's strategy; `--quartermap` alone = every:3)

outputs:
  OUT.onnx        custom nodes WITH standard-op function bodies: runs in ONNX Runtime anywhere
                  (no plugin); TensorRT >= 10.15 uses the plugins (nodes carry plugin_namespace)
  OUT.trt.onnx    (--trt-onnx) bodies stripped: TensorRT only; a missing plugin fails loudly
  OUT.inputs.json / OUT.golden.json  (--verify) Polygraphy inputs and PyTorch golden outputs:
                  polygraphy run OUT.trt.onnx --trt --plugins LIB --load-inputs OUT.inputs.json \\
                      --load-outputs OUT.golden.json --atol A --rtol R

exit codes:
  {EXIT_OK}  success
  {EXIT_INTERNAL}  unexpected internal error
  {EXIT_BAD_ARGS}  bad arguments or input (layer spec, resolution, calibration data, ...)
  {EXIT_CHECKPOINT}  checkpoint could not be read or does not fit the architecture
  {EXIT_EXPORT}  ONNX export or its checks failed
  {EXIT_PARITY}  parity check (--verify) failed: ONNX Runtime differs from PyTorch beyond tolerance
"""


class UsageError(Exception):
    """Bad arguments or input: exit 2 with one line on stderr."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, no usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vm-export", description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = p.add_argument_group("model")
    m.add_argument("--arch", help="registry name (see --list-models) or digits_vmamba / digits_medmamba")
    m.add_argument("--checkpoint", help="checkpoint file (.pth/.pt/.safetensors); read safely, never executed")
    m.add_argument("--num-classes", type=int, help="classifier size (default: from the checkpoint / config)")
    m.add_argument("--list-models", action="store_true", help="list registered architectures and exit")
    c = p.add_argument_group("compression")
    c.add_argument("--vmeanba-layers", default="none", metavar="SPEC", help="layers for VMeanba (default: none)")
    c.add_argument("--vmeanba-variant", default="all-rows", choices=["all-rows", "per-direction", "pre-discretisation"])
    c.add_argument("--vmeanba-form", default="auto", choices=["auto", "folded", "literal"],
                   help="folded: exact elementwise form (needs a channel-LayerNorm out_norm); literal: the reduced "
                        "scan (VMeanbaScan node); auto: folded where exact (default)")
    c.add_argument("--max-drop", type=float, help="accuracy budget for --vmeanba-layers auto (fraction, 0.01 = 1 point)")
    c.add_argument("--quartermap", nargs="?", const="every:3", default=None, metavar="SPEC",
                   help="layers for QuarterMap (flag alone: every:3, the authors' default)")
    c.add_argument("--quartermap-stride", type=int, default=2)
    c.add_argument("--quartermap-keep", type=int, default=1)
    c.add_argument("--calib", metavar="SRC", help="calibration data for auto/k=N: image dir, .npy/.npz, digits[:split], "
                                                  "synthetic[:N] (default for the digits models: digits)")
    c.add_argument("--calib-limit", type=int, help="use at most N calibration samples")
    e = p.add_argument_group("export")
    e.add_argument("-o", "--output", help="output .onnx path (default: <arch>.onnx)")
    e.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    e.add_argument("--batch", type=int, default=1, help="example batch size (the batch axis is dynamic anyway)")
    e.add_argument("--resolution", help="H or HxW (default: the model's native resolution)")
    dyn = e.add_mutually_exclusive_group()
    dyn.add_argument("--dynamic", dest="dynamic", action="store_true", default=True,
                     help="dynamic batch, height and width (default)")
    dyn.add_argument("--static", dest="dynamic", action="store_false", help="fixed input shape")
    e.add_argument("--opset", type=int, default=18)
    e.add_argument("--trt-onnx", action="store_true", help="also write OUT.trt.onnx (function bodies stripped)")
    v = p.add_argument_group("verification and report")
    v.add_argument("--verify", action="store_true", help="Polygraphy parity vs PyTorch + ORT/PyTorch latency")
    v.add_argument("--iterations", type=int, default=2, help="parity inputs (default 2)")
    v.add_argument("--latency-runs", type=int, default=10, help="timed runs per runtime with --verify (0: skip)")
    v.add_argument("--report", help="write a JSON report here")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--quiet", action="store_true", help="no progress display, summary only")
    v.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def parse_resolution(text: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if text is None:
        return default
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


# --------------------------------------------------------------------------- steps
class _Steps:
    """A rich progress display: one spinner line per long step, with elapsed time."""

    def __init__(self, quiet: bool):
        from rich.console import Console

        self.console = Console(stderr=True, quiet=quiet)
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, text: str):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        t0 = time.perf_counter()
        if self.quiet:
            yield
            return
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=self.console, transient=True) as prog:
            prog.add_task(text, total=None)
            yield
        self.console.print(f"[green]done[/] {text} ({time.perf_counter() - t0:.1f} s)")


def load_source_model(args):
    """(model, description, native resolution, calibration default)."""
    import torch

    from exporter.models import MODEL_CONFIGS

    arch = args.arch
    if args.checkpoint:
        from exporter.checkpoint import CheckpointError, load_model

        if arch in DIGITS_ARCHS:
            raise UsageError(f"--arch {arch} is a built-in model; it takes no --checkpoint")
        if not Path(args.checkpoint).exists():
            raise CheckpointFailure(f"checkpoint {args.checkpoint!r} does not exist")
        try:
            model = load_model(args.checkpoint, arch=arch, num_classes=args.num_classes)
        except CheckpointError as exc:
            raise CheckpointFailure(str(exc)) from exc
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointFailure(f"{args.checkpoint}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        name = getattr(model, "checkpoint_info", {}).get("arch") or arch or "model"
        return model, f"{name} from {args.checkpoint}", 224, None, name
    if arch is None or arch in DIGITS_ARCHS:
        family = DIGITS_ARCHS.get(arch or "digits_vmamba")
        if args.num_classes is not None:
            raise UsageError("--num-classes does not apply to the built-in digits model (10 classes)")
        try:
            from exporter.samples_data import load_digits_model

            model = load_digits_model(family)
            res = int(model.digits_info.get("resolution", 32))
            return model, f"built-in digits sample model ({family}, trained)", res, "digits", f"digits_{family}"
        except (ImportError, FileNotFoundError) as exc:
            # the digits assets are missing: a clearly labelled random-weight small model instead
            from exporter.models import VMamba

            torch.manual_seed(0)
            model = VMamba(depths=[1, 1, 2, 1], dims=16, num_classes=10, ssm_d_state=1, ssm_ratio=1.0,
                           forward_type="v05_noz", mlp_ratio=2.0, downsample_version="v3",
                           patchembed_version="v2", norm_layer="ln2d").eval()
            return model, f"RANDOM-WEIGHT small VMamba (digits sample unavailable: {exc})", 32, "synthetic", "random_small"
    if arch not in MODEL_CONFIGS:
        raise UsageError(f"unknown --arch {arch!r}; see --list-models")
    torch.manual_seed(args.seed)
    model = MODEL_CONFIGS[arch].build(args.num_classes).eval()
    return model, f"{arch} with RANDOM weights (no --checkpoint)", 224, None, arch


class CheckpointFailure(Exception):
    pass


class ExportFailure(Exception):
    pass


def compress(args, model, calib_default, calib_resolution: int, steps: _Steps):
    """Apply VMeanba then QuarterMap; returns (model, selection or None, calibration note)."""
    from exporter.compress import AutoLayers, apply_quartermap, apply_vmeanba, load_calibration, parse_layer_spec

    folded = {"auto": None, "folded": True, "literal": False}[args.vmeanba_form]
    try:
        vm_spec = parse_layer_spec(args.vmeanba_layers, model, method="vmeanba")
        qm_spec = parse_layer_spec(args.quartermap, model, method="quartermap") if args.quartermap else []
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.max_drop is not None and not isinstance(vm_spec, AutoLayers):
        raise UsageError("--max-drop only applies to --vmeanba-layers auto or k=N")
    selection = None
    calib_note = None
    if isinstance(vm_spec, AutoLayers):
        source = args.calib or calib_default
        if source is None:
            raise UsageError(f"--vmeanba-layers {args.vmeanba_layers} chooses layers on calibration data: pass --calib "
                             "DIR|file.npz|synthetic")
        with steps.step(f"loading calibration data ({source})"):
            try:
                cal = load_calibration(source, getattr(model, "family", "vmamba"), resolution=calib_resolution,
                                       limit=args.calib_limit, seed=args.seed)
            except (OSError, ValueError) as exc:
                raise UsageError(f"calibration data: {exc}") from None
        calib_note = cal.describe() if hasattr(cal, "describe") else str(cal.source)
        kwargs = {"max_drop": args.max_drop} if args.max_drop is not None else {}
        with steps.step(f"selecting VMeanba layers ({vm_spec}) on {len(cal)} samples"):
            try:
                model = apply_vmeanba(model, vm_spec, variant=args.vmeanba_variant, folded=folded, calibration=cal,
                                      progress=not steps.quiet, **kwargs)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        selection = getattr(model, "vmeanba_selection", None)
    elif vm_spec:
        try:
            model = apply_vmeanba(model, vm_spec, variant=args.vmeanba_variant, folded=folded)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if qm_spec:
        try:
            model = apply_quartermap(model, qm_spec, stride=args.quartermap_stride, keep=args.quartermap_keep)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return model, selection, calib_note


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def print_summary(report: dict, console) -> None:
    from rich.table import Table

    t = Table(title="SS2D layers", show_lines=False)
    t.add_column("layer")
    t.add_column("exported as")
    for name, form in report["layers"].items():
        t.add_row(name, form)
    console.print(t)
    s = Table(title="vm-export summary", show_header=False)
    s.add_column("item", style="bold")
    s.add_column("value")
    ex = report["export"]
    s.add_row("model", report["model"])
    s.add_row("precision / opset", f"{ex['precision']} / {ex['opset']}")
    dynamic = ", ".join(ex["dynamic_axes"].values()) or "none (static)"
    s.add_row("input", f"example {tuple(ex['input_shape'])}; dynamic: {dynamic}")
    s.add_row("ONNX nodes (top level)", f"{ex['node_count']}  custom: {ex['custom_nodes'] or 'none'}")
    s.add_row("export time", f"{ex['export_seconds']:.1f} s")
    for note in ex.get("notes", []):
        s.add_row("note", note)
    if report.get("selection"):
        sel = report["selection"]
        s.add_row("VMeanba selection", f"{sel['metric']}: baseline {sel['baseline']:.4f}, joint {sel['joint']:.4f} "
                                       f"(drop {sel['joint_drop']:+.4f}) on {sel['calibration']}")
    par = report.get("parity")
    if par:
        verdict = "[green]PASS[/]" if par["passed"] else "[red]FAIL[/]"
        s.add_row("parity ORT vs PyTorch", f"{verdict} max abs {par['max_abs_error']:.3g}, max rel {par['max_rel_error']:.3g} "
                                            f"(atol {par['atol']:g}, rtol {par['rtol']:g}, {par['iterations']} inputs)")
    lat = report.get("latency")
    if lat:
        s.add_row("latency (median)", f"PyTorch eager {lat['pytorch']['median_ms']:.2f} ms, ONNX Runtime CPU "
                                      f"{lat['onnxrt']['median_ms']:.2f} ms  (input {lat['pytorch']['input_shape']}, "
                                      f"{lat['pytorch']['runs']} runs after {lat['pytorch']['warmup']} warm-up)")
    for label, path in report["files"].items():
        s.add_row(label, path)
    console.print(s)


def run(args) -> int:
    from rich.console import Console

    from exporter.export.onnx_export import ExportError, export_onnx, layer_forms

    steps = _Steps(args.quiet)
    if args.list_models:
        from exporter.models import MODEL_CONFIGS

        for name, cfg in MODEL_CONFIGS.items():
            print(f"{name:24s} {cfg.family:9s} {cfg.description}")
        for name in DIGITS_ARCHS:
            print(f"{name:24s} {'built-in':9s} trained digits sample model (no checkpoint needed)")
        return EXIT_OK
    for flag, value in (("--batch", args.batch), ("--iterations", args.iterations)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if args.latency_runs < 0:
        raise UsageError(f"--latency-runs must be >= 0, got {args.latency_runs}")
    if args.opset < 18:
        raise UsageError(f"--opset must be >= 18, got {args.opset}")
    if args.output is not None and not args.output.endswith(".onnx"):
        raise UsageError(f"--output must end with .onnx, got {args.output!r}")

    with steps.step("loading model"):
        model, description, native_res, calib_default, arch_label = load_source_model(args)
    resolution = parse_resolution(args.resolution, (native_res, native_res))
    output = Path(args.output or f"{arch_label}.onnx")
    model, selection, calib_note = compress(args, model, calib_default, native_res, steps)
    forms = layer_forms(model)

    with steps.step(f"exporting {output} ({args.precision}, {'dynamic' if args.dynamic else 'static'})"):
        try:
            result = export_onnx(model, output, precision=args.precision, batch=args.batch, resolution=resolution,
                                 dynamic=args.dynamic, opset=args.opset, trt_onnx=args.trt_onnx)
        except (ExportError, ValueError, RuntimeError) as exc:
            raise ExportFailure(str(exc).splitlines()[0]) from exc
    files = {"onnx (ORT anywhere; TRT with plugins)": str(result.onnx_path)}
    if result.trt_onnx_path:
        files["trt.onnx (TensorRT + plugins only)"] = str(result.trt_onnx_path)
    report = {
        "model": description, "arch": arch_label, "layers": forms,
        "compression": {"vmeanba_layers": args.vmeanba_layers, "vmeanba_variant": args.vmeanba_variant,
                        "vmeanba_form": args.vmeanba_form, "quartermap": args.quartermap,
                        "quartermap_stride": args.quartermap_stride, "quartermap_keep": args.quartermap_keep,
                        "calibration": calib_note},
        "selection": selection.to_dict() if selection is not None else None,
        "export": result.as_dict(), "files": files, "parity": None, "latency": None,
    }
    exit_code = EXIT_OK
    if args.verify:
        import numpy as np

        from exporter.verify.parity import check_parity, latency_side_by_side

        shape = (args.batch, 3, *resolution)
        stem = output.name[:-5]
        with steps.step("parity: PyTorch golden vs ONNX Runtime through Polygraphy"):
            with tempfile.TemporaryDirectory() as tmp:
                parity = check_parity(model, result.onnx_path, precision=args.precision, input_shape=shape,
                                      iterations=args.iterations, seed=args.seed, save_dir=tmp)
                inputs_json = output.with_name(f"{stem}.inputs.json")
                golden_json = output.with_name(f"{stem}.golden.json")
                os.replace(parity.inputs_json, inputs_json)
                os.replace(parity.golden_json, golden_json)
                parity.inputs_json, parity.golden_json, parity.onnxrt_json = str(inputs_json), str(golden_json), None
        files["polygraphy inputs"] = str(inputs_json)
        files["polygraphy golden outputs"] = str(golden_json)
        report["parity"] = parity.as_dict()
        if "height" in result.dynamic_axes.values():
            # the file claims dynamic H/W: check it at another, non-square size and batch too
            other = (args.batch + 1, 3, resolution[0], max(8, resolution[1] * 3 // 4))
            with steps.step(f"parity at a second input shape {other}"):
                extra = check_parity(model, result.onnx_path, precision=args.precision, input_shape=other,
                                     iterations=1, seed=args.seed + 1)
            report["parity_other_shape"] = extra.as_dict()
            parity.passed = parity.passed and extra.passed
            parity.max_abs_error = max(parity.max_abs_error, extra.max_abs_error)
            parity.max_rel_error = max(parity.max_rel_error, extra.max_rel_error)
            parity.input_shapes = parity.input_shapes + extra.input_shapes
            parity.iterations += extra.iterations
            report["parity"] = parity.as_dict()
        if not parity.passed:
            exit_code = EXIT_PARITY
        if args.latency_runs:
            with steps.step(f"latency: {args.latency_runs} runs each, PyTorch eager and ONNX Runtime"):
                pt, ort_lat = latency_side_by_side(model, result.onnx_path, shape, runs=args.latency_runs,
                                                   onnx_dtype=np.float16 if args.precision == "fp16" else np.float32)
            report["latency"] = {"pytorch": pt.as_dict(), "onnxrt": ort_lat.as_dict(),
                                 "note": "PyTorch eager runs the float32 model"}
    if args.report:
        report_path = Path(args.report)
        files["report"] = str(report_path)
        _atomic_write_text(report_path, json.dumps(report, indent=2, default=str))
    print_summary(report, Console())
    if exit_code == EXIT_PARITY:
        print(f"vm-export: error: parity failed: max abs error {report['parity']['max_abs_error']:.3g} exceeds "
              f"atol {report['parity']['atol']:g} / rtol {report['parity']['rtol']:g}", file=sys.stderr)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = parser.parse_args(argv)
        return run(args)
    except UsageError as exc:
        code, msg = EXIT_BAD_ARGS, str(exc)
    except CheckpointFailure as exc:
        code, msg = EXIT_CHECKPOINT, f"checkpoint error: {exc}"
    except ExportFailure as exc:
        code, msg = EXIT_EXPORT, f"export failed: {exc}"
    except KeyboardInterrupt:
        code, msg = 130, "interrupted"
    except Exception as exc:  # noqa: BLE001  (one line unless --debug)
        if debug:
            raise
        code, msg = EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if debug and code != 130:
        import traceback

        traceback.print_exc()
    print(f"vm-export: error: {msg}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
