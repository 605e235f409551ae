"""The vm-export pipeline: load source -> compress -> export -> engine -> verify, each a function
returning a dataclass; :func:`run` chains them with staged outputs.

    from exporter.pipeline import Options, run
    result = run(Options(vmeanba_layers="auto", max_drop=0.01, quartermap="every:3", output="out/m.onnx",
                         verify=True, report="out/report.json"))
    result = run(Options(plan="fastest", max_drop=0.005, output="out/fast.onnx"))  # both methods, speed-aware

Failures raise a :class:`PipelineError` subclass whose ``exit_code`` is the CLI's; its message
names the problem and the fix. Nothing is written in place until every step has succeeded: all
outputs are staged beside their destination (:mod:`exporter.files`) and moved in at the end, so a
failed or interrupted run leaves files that existed before byte-identical and no temp file.
A parity failure is a result (``Verification.passed``), not an error: its files are kept.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import warnings
from pathlib import Path
from typing import Any, Callable, ContextManager

from exporter.engine import EXIT_ENGINE, EXIT_NO_BUILDER

# --------------------------------------------------------------------------- exit codes and errors
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_ARGS = 2
EXIT_CHECKPOINT = 3
EXIT_EXPORT = 4
EXIT_PARITY = 5
EXIT_OUTPUT = 6
# EXIT_NO_BUILDER = 7, EXIT_ENGINE = 8: defined by exporter.engine (the library raises them), listed here
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "unexpected internal error (rerun with --debug and report it)",
    EXIT_BAD_ARGS: "bad arguments or input (layer spec, value out of range, colliding output paths, calibration data)",
    EXIT_CHECKPOINT: "checkpoint could not be read, holds NaN/Inf weights, or does not fit the architecture",
    EXIT_EXPORT: "ONNX export or its checks failed",
    EXIT_PARITY: "parity check (--verify) failed: ONNX Runtime differs from PyTorch beyond tolerance (files kept)",
    EXIT_OUTPUT: "an output cannot be written (read-only, a directory, no such folder, disk full); nothing written",
    EXIT_NO_BUILDER: "--engine: no TensorRT builder is installed (tensorrt or TensorRT-RTX); nothing written",
    EXIT_ENGINE: "--engine: the TensorRT parser or builder failed (or the plugin library did not load); nothing written",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); nothing written",
}


class PipelineError(Exception):
    """A failure with a documented exit code; ``label`` prefixes its message ("" for plain usage errors)."""

    exit_code = EXIT_INTERNAL
    label = ""


def _failure(name: str, exit_code: int, label: str, doc: str) -> type:
    return type(name, (PipelineError,), {"exit_code": exit_code, "label": label, "__doc__": doc,
                                         "__module__": __name__})


UsageError = _failure("UsageError", EXIT_BAD_ARGS, "", "Bad arguments or input.")
CheckpointFailure = _failure("CheckpointFailure", EXIT_CHECKPOINT, "checkpoint error", "The checkpoint is unusable.")
ExportFailure = _failure("ExportFailure", EXIT_EXPORT, "export failed", "ONNX export or its checks failed.")
OutputFailure = _failure("OutputFailure", EXIT_OUTPUT, "cannot write output", "An output cannot be written.")
Interrupted = _failure("Interrupted", EXIT_INTERRUPTED, "interrupted", "Ctrl-C: nothing was written.")
NoBuilderFailure = _failure("NoBuilderFailure", EXIT_NO_BUILDER, "no engine builder", "No TensorRT builder is installed.")
EngineFailure = _failure("EngineFailure", EXIT_ENGINE, "engine build failed", "The TensorRT parser or builder failed.")


# --------------------------------------------------------------------------- options
DEFAULT_SOURCE = "digits_vmamba"  # no --checkpoint and no --arch: the bundled trained digits model
# opsets torch.onnx (onnxscript 0.7) exports and ORT runs: 18..25 checked on the digits model, 2026-12-01,
# 2-core CPU dev machine (26 fails: "No Op registered for Gelu with domain_version of 18")
OPSET_RANGE = (18, 25)


@dataclasses.dataclass
class Options:
    """Everything a run needs; field names are the CLI's option names. None: the option was not given."""

    arch: str | None = None
    checkpoint: str | None = None
    num_classes: int | None = None
    features_only: bool = False  # a feature backbone (feat0..feat3); implied by a dense-prediction checkpoint
    vmeanba_layers: str = "none"
    vmeanba_variant: str | None = None
    vmeanba_form: str | None = None
    max_drop: float | None = None
    quartermap: str | None = None
    quartermap_stride: int | None = None
    quartermap_keep: int | None = None
    calib: str | None = None
    calib_limit: int | None = None
    plan: str | None = None  # "fastest": the speed-aware planner chooses VMeanba / QuarterMap per block
    plan_cost: str = "auto"  # cost model backend: auto | gpu | cpu (= cuda | cpu-torch), or cpu-ort
    plan_cache: str | None = None  # cost-model cache folder (default ~/.cache/vm-deploy/cost_models)
    plan_batch: int | None = None  # batch the cost model is measured at (default: --batch)
    plan_evaluations: int | None = None  # most plans the planner's search measures (default planner.SEARCH_EVALUATIONS)
    output: str | None = None
    precision: str = "fp32"
    batch: int = 1
    resolution: tuple[int, int] | None = None
    dynamic: bool = True
    opset: int = 18
    trt_onnx: bool = False
    verify: bool = False
    iterations: int = 2
    latency_runs: int = 10
    report: str | None = None
    seed: int = 0
    threads: int | None = None
    progress: bool = False
    engine: str | None = None  # serialized TensorRT engine to build (exporter.engine), see build_engine_step
    engine_shapes: str | None = None  # "MIN,OPT,MAX" input shapes (AxBxCxD each) or one shape; None: derived
    engine_builder: str = "auto"  # "auto" (first installed), "tensorrt" or "tensorrt_rtx"
    engine_workspace: int | None = None  # builder workspace limit in bytes; None: the builder's default
    engine_plugins: str | None = None  # plugin library (libvmamba_trt_plugins.so); None: see plugin_library_for


def check_options(o: Options) -> None:
    """Value checks that need no model: each names the option, the bad value and what is valid."""
    for flag, value in (("--batch", o.batch), ("--iterations", o.iterations)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    for flag, value in (("--latency-runs", o.latency_runs),):
        if value < 0:
            raise UsageError(f"{flag} must be >= 0 (0 skips the timing), got {value}")
    if o.num_classes is not None and o.num_classes < 1:
        raise UsageError(f"--num-classes must be a positive number of classes, got {o.num_classes}")
    if o.features_only and o.num_classes is not None:
        raise UsageError("--num-classes has no meaning with --features-only (a backbone has no classifier): "
                         "drop one of them")
    if o.threads is not None and o.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {o.threads}")
    if o.calib_limit is not None and o.calib_limit < 1:
        raise UsageError(f"--calib-limit must be a positive number of samples, got {o.calib_limit}")
    lo, hi = OPSET_RANGE
    if not lo <= o.opset <= hi:
        raise UsageError(f"--opset {o.opset} is not supported: use an opset from {lo} to {hi} (default 18)")
    if o.max_drop is not None:
        if not math.isfinite(o.max_drop) or o.max_drop < 0:
            raise UsageError(f"--max-drop must be a finite fraction >= 0 (0.01 = 1 point of top-1), got {o.max_drop}")
        if o.max_drop >= 1:
            raise UsageError(f"--max-drop {o.max_drop:g} would allow a {100 * o.max_drop:g}% drop: it is a fraction, "
                             "so one point is --max-drop 0.01")
    if o.output is not None and not o.output.endswith(".onnx"):
        raise UsageError(f"--output must end with .onnx, got {o.output!r}")
    check_plan_options(o)
    auto = _is_auto(o.vmeanba_layers) or o.plan is not None
    if o.max_drop is not None and not auto:
        raise UsageError("--max-drop only applies to --vmeanba-layers auto or k=N or --plan; add one of them or drop "
                         "--max-drop")
    for flag, value in (("--calib", o.calib), ("--calib-limit", o.calib_limit)):
        if value is not None and not auto:
            raise UsageError(f"{flag} only applies to --vmeanba-layers auto or k=N or --plan (layers chosen on "
                             f"calibration data); add one of them or drop {flag}")
    if o.vmeanba_layers.strip().lower() == "none" and o.plan is None:
        for flag, value in (("--vmeanba-variant", o.vmeanba_variant), ("--vmeanba-form", o.vmeanba_form)):
            if value is not None:
                raise UsageError(f"{flag} does nothing without --vmeanba-layers; add --vmeanba-layers SPEC or drop it")
    if o.quartermap is None and o.plan is None:
        for flag, value in (("--quartermap-stride", o.quartermap_stride), ("--quartermap-keep", o.quartermap_keep)):
            if value is not None:
                raise UsageError(f"{flag} does nothing without --quartermap; add --quartermap [SPEC] or drop it")
    check_engine_options(o)
    if o.checkpoint is None and o.num_classes is not None:
        from exporter.models import MODEL_CONFIGS

        name = o.arch or DEFAULT_SOURCE
        cfg = MODEL_CONFIGS.get(name)
        if cfg is not None and cfg.default_cfg.weights is not None:
            raise UsageError(f"--num-classes does not apply to the bundled {name} (trained with "
                             f"{cfg.kwargs.get('num_classes')} classes); drop --num-classes")


def check_plan_options(o: Options) -> None:
    """--plan chooses the layers of both methods itself: explicit layer specs conflict with it (exit 2)."""
    from exporter.compress.cost_model import BACKEND_CHOICES
    from exporter.compress.planner import PLAN_GOALS

    if o.plan is None:
        for flag, value in (("--plan-cost", None if o.plan_cost == "auto" else o.plan_cost),
                            ("--plan-cache", o.plan_cache), ("--plan-batch", o.plan_batch),
                            ("--plan-evaluations", o.plan_evaluations)):
            if value is not None:
                raise UsageError(f"{flag} does nothing without --plan; add --plan fastest or drop {flag}")
        return
    if o.plan not in PLAN_GOALS:
        raise UsageError(f"--plan {o.plan!r}: choose one of {', '.join(PLAN_GOALS)}")
    if o.plan_cost not in BACKEND_CHOICES:
        raise UsageError(f"--plan-cost {o.plan_cost!r}: choose one of {', '.join(BACKEND_CHOICES)}")
    if o.plan_batch is not None and o.plan_batch < 1:
        raise UsageError(f"--plan-batch must be >= 1, got {o.plan_batch}")
    if o.plan_evaluations is not None and o.plan_evaluations < 0:
        raise UsageError(f"--plan-evaluations must be >= 0 (0 turns the search off), got {o.plan_evaluations}")
    given = [f"{flag} {value}" for flag, value in (("--vmeanba-layers", o.vmeanba_layers), ("--quartermap", o.quartermap))
             if value is not None and value.strip().lower() != "none"]
    if given:
        raise UsageError(f"--plan {o.plan} chooses the VMeanba and QuarterMap layers itself, so it cannot be combined "
                         f"with {' and '.join(given)}; drop {'them' if len(given) > 1 else 'it'} or drop --plan")


ENGINE_BUILDERS = ("auto", "tensorrt", "tensorrt_rtx")


def parse_engine_shapes(text: str) -> "Any":
    """``--engine-shapes MIN,OPT,MAX`` (or one shape: min = opt = max), each ``BxCxHxW``, as an
    exporter.engine.ShapeProfile for the export's input (UsageError naming the fix otherwise)."""
    from exporter.engine import EngineError, ShapeProfile
    from exporter.verify.parity import INPUT_NAME

    example = "1x3x224x224,8x3x224x224,32x3x224x224"
    if ":" in text:
        raise UsageError(f"--engine-shapes {text!r}: give the shapes only (the export has one input), e.g. {example}")
    try:
        profile = ShapeProfile.parse(f"{INPUT_NAME}:{text}")
    except EngineError as exc:
        raise UsageError(f"--engine-shapes {text!r}: {str(exc).split(': ', 1)[-1]}") from exc
    if len(profile.min) != 4:
        raise UsageError(f"--engine-shapes {text!r}: each shape needs 4 dims BxCxHxW (batch, channels, height, "
                         f"width), e.g. {example}")
    return profile


def check_engine_options(o: Options) -> None:
    given = {"--engine-shapes": o.engine_shapes, "--engine-workspace": o.engine_workspace,
             "--engine-plugins": o.engine_plugins,
             "--engine-builder": None if o.engine_builder == "auto" else o.engine_builder}
    if o.engine is None:
        for flag, value in given.items():
            if value is not None:
                raise UsageError(f"{flag} does nothing without --engine; add --engine PATH or drop {flag}")
        return
    if o.engine_builder not in ENGINE_BUILDERS:
        raise UsageError(f"--engine-builder {o.engine_builder!r}: choose one of {', '.join(ENGINE_BUILDERS)}")
    if o.engine_workspace is not None and o.engine_workspace < 1:
        raise UsageError(f"--engine-workspace must be a positive size such as 1G or 512M, got {o.engine_workspace}")
    if o.engine_shapes is not None:
        if not o.dynamic:
            raise UsageError("--engine-shapes needs a dynamic export (a --static export has one fixed shape); drop "
                             "--static or --engine-shapes")
        parse_engine_shapes(o.engine_shapes)
    if o.engine_plugins is not None and not Path(o.engine_plugins).is_file():
        raise UsageError(f"--engine-plugins {o.engine_plugins}: no such file; build libvmamba_trt_plugins.so "
                         "(docs/PLUGINS.md) and pass its path")


# --------------------------------------------------------------------------- outputs
@dataclasses.dataclass
class OutputPlan:
    """Every path a run will write, decided (and checked) before any work."""

    onnx: Path
    trt_onnx: Path | None = None
    inputs_json: Path | None = None
    golden_json: Path | None = None
    report_json: Path | None = None
    report_md: Path | None = None
    plots: dict[str, Path] = dataclasses.field(default_factory=dict)
    engine: Path | None = None

    def labelled(self) -> dict[str, Path]:
        items = {"-o/--output": self.onnx, "the --trt-onnx file": self.trt_onnx,
                 "the --verify inputs file": self.inputs_json, "the --verify golden file": self.golden_json,
                 "--report": self.report_json, "the --report Markdown summary": self.report_md,
                 "--engine": self.engine}
        items.update({f"the --report plot {name}": path for name, path in self.plots.items()})
        return {k: v for k, v in items.items() if v is not None}

    def files(self, plots=()) -> dict[str, str]:
        """What the summary and the report list: a short label per written file (``plots``: the names
        of the plots written)."""
        items = {"onnx (ORT anywhere; TRT with plugins)": self.onnx, "trt.onnx (TensorRT + plugins only)": self.trt_onnx,
                 "polygraphy inputs": self.inputs_json, "polygraphy golden outputs": self.golden_json,
                 "report": self.report_json, "report summary": self.report_md,
                 "engine (serialized TensorRT engine)": self.engine}
        items.update({f"plot: {'compression plan' if name == 'plan_pareto' else 'VMeanba'} {name}": path
                      for name, path in self.plots.items() if name in plots})
        return {k: str(v) for k, v in items.items() if v is not None}


def plan_outputs(o: Options, arch_label: str) -> OutputPlan:
    from exporter.export.onnx_export import trt_onnx_path_for

    onnx_path = Path(o.output or f"{arch_label}.onnx")
    stem = onnx_path.name[: -len(".onnx")]
    plan = OutputPlan(onnx=onnx_path, trt_onnx=trt_onnx_path_for(onnx_path) if o.trt_onnx else None,
                      engine=Path(o.engine) if o.engine else None)
    if o.verify:
        plan.inputs_json = onnx_path.with_name(f"{stem}.inputs.json")
        plan.golden_json = onnx_path.with_name(f"{stem}.golden.json")
    if o.report:
        report = Path(o.report)
        base = report.name[:-5] if report.name.endswith(".json") else report.name
        plan.report_json = report
        plan.report_md = report.with_name(f"{base}.md")
        if _is_auto(o.vmeanba_layers) or o.plan:  # --plan falls back to the selection without a cost model
            plan.plots = {"impact": report.with_name(f"{base}.vmeanba_impact.png"),
                          "curve": report.with_name(f"{base}.vmeanba_metric_vs_k.png")}
        if o.plan:
            plan.plots["plan_pareto"] = report.with_name(f"{base}.plan_pareto.png")
    return plan


def check_outputs(plan: OutputPlan, o: Options, needed_bytes: int = 0) -> None:
    """Collisions (exit 2) and what can be known about writability and space up front (exit 6)."""
    from exporter.files import OutputPathError, check_free_space, check_writable, refuse_collisions

    inputs = {}
    if o.checkpoint:
        inputs["--checkpoint file"] = Path(o.checkpoint)
    if o.calib and Path(o.calib).is_file():
        inputs["--calib file"] = Path(o.calib)
    if o.engine_plugins:
        inputs["--engine-plugins library"] = Path(o.engine_plugins)
    try:
        refuse_collisions(plan.labelled(), inputs)
    except OutputPathError as exc:
        raise UsageError(str(exc)) from exc
    try:
        for label, path in plan.labelled().items():
            check_writable(path, label)
        if needed_bytes:
            check_free_space(list(plan.labelled().values()), needed_bytes)
    except OutputPathError as exc:
        raise OutputFailure(str(exc)) from exc


def estimated_output_bytes(model, o: Options) -> int:
    """A lower bound on what the ONNX files need (weights at the export precision) plus headroom."""
    n = sum(p.numel() for p in model.parameters())
    per_file = n * (2 if o.precision == "fp16" else 4)
    engine = (per_file + (64 << 20)) if o.engine else 0  # an engine holds the weights plus kernels (~30 MB on digits)
    return int(per_file * (2 if o.trt_onnx else 1) * 1.1) + engine + (1 << 20)


# --------------------------------------------------------------------------- step 1: source
@dataclasses.dataclass
class Source:
    model: Any
    arch: str  # registry name, or "custom" for an inferred architecture without a released config
    family: str
    description: str
    default_cfg: Any  # exporter.models.registry.PretrainedCfg: input size and evaluation transform
    calib_default: str | None  # calibration source used when --calib is not given (bundled models)
    checkpoint: Any = None  # exporter.models.loader.LoadedCheckpoint for a checkpoint source


def load_source(o: Options) -> Source:
    from exporter.models import MODEL_CONFIGS

    if o.checkpoint:
        from exporter.checkpoint import CheckpointError
        from exporter.models.loader import load_checkpoint_model

        cfg = MODEL_CONFIGS.get(o.arch) if o.arch else None
        if cfg is not None and cfg.default_cfg.weights is not None:
            raise UsageError(f"--arch {o.arch} is a bundled model with its own weights; it takes no --checkpoint "
                             "(pass a released --arch such as vmamba_tiny_s1l8, or omit --arch)")
        try:
            # features_only=None: a segmentation / detection checkpoint gives its backbone by itself
            loaded = load_checkpoint_model(o.checkpoint, arch=o.arch, num_classes=o.num_classes,
                                           features_only=True if o.features_only else None)
        except CheckpointError as exc:
            raise CheckpointFailure(str(exc)) from exc
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointFailure(f"{o.checkpoint}: {type(exc).__name__}: {exc}; check the file is a "
                                    "complete checkpoint") from exc
        return Source(loaded.model, loaded.arch, loaded.model.family, f"{loaded.arch} from {o.checkpoint}",
                      loaded.default_cfg, None, loaded)
    name = o.arch or DEFAULT_SOURCE
    if name not in MODEL_CONFIGS:
        raise UsageError(f"unknown --arch {name!r}; see --list-models for the registered names")
    cfg = MODEL_CONFIGS[name]
    if o.features_only and cfg.default_cfg.weights is not None:
        raise UsageError(f"--features-only needs a released --arch (e.g. vmamba_tiny_s1l8, random weights) or a "
                         f"--checkpoint; the bundled {name} is a classifier sample")
    if o.features_only:
        import torch

        torch.manual_seed(o.seed)
        model = cfg.build(features_only=True).eval()
        return Source(model, name, cfg.family, f"{name} feature backbone with RANDOM weights (no --checkpoint)",
                      cfg.default_cfg, None)
    if cfg.default_cfg.weights is not None:
        from exporter.models.registry import load_pretrained

        model = load_pretrained(name)
        return Source(model, name, cfg.family, f"{name} (bundled, trained weights)", cfg.default_cfg, "digits")
    import torch

    torch.manual_seed(o.seed)
    model = cfg.build(o.num_classes).eval()
    return Source(model, name, cfg.family, f"{name} with RANDOM weights (no --checkpoint)", cfg.default_cfg, None)


# --------------------------------------------------------------------------- step 2: compress
@dataclasses.dataclass
class Compression:
    model: Any
    layer_forms: dict[str, str]  # SS2D layer -> how it is exported
    selection: Any = None  # exporter.compress.SelectionResult for auto / k=N (and --plan without a cost model)
    calibration: str | None = None  # describes the calibration data used
    plan: Any = None  # exporter.compress.planner.PlanResult for --plan
    plan_fallback: str | None = None  # why --plan fell back to the plain selection (no cost model)

    @property
    def plots(self) -> tuple[str, ...]:
        """The report plots this compression has data for (OutputPlan.plots names)."""
        return (("plan_pareto",) if self.plan is not None else ()) + \
            (("impact", "curve") if self.selection is not None else ())


def _is_auto(spec: str) -> bool:
    low = spec.strip().lower()
    return low == "auto" or low.startswith("k=")


def compress(o: Options, source: Source) -> Compression:
    """VMeanba (explicit, or chosen on calibration data), then QuarterMap."""
    from exporter.compress import AutoLayers, apply_quartermap, apply_vmeanba, parse_layer_spec
    from exporter.compress.selection import select_vmeanba_layers
    from exporter.export.onnx_export import layer_forms
    from plugins.contract import QUARTERMAP_DOWN

    model = source.model
    folded = {None: None, "auto": None, "folded": True, "literal": False}[o.vmeanba_form]
    variant = o.vmeanba_variant or "all-rows"
    try:
        vm_spec = parse_layer_spec(o.vmeanba_layers, model, method="vmeanba")
        qm_spec = parse_layer_spec(o.quartermap, model, method="quartermap") if o.quartermap else []
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    for flag, spec, given in (("--vmeanba-layers", vm_spec, o.vmeanba_layers), ("--quartermap", qm_spec, o.quartermap)):
        if given and given.strip().lower() != "none" and spec == []:
            n = len(model.ssm_layers())
            raise UsageError(f"{flag} {given} selects no layer of this model ({n} SS2D layers); choose a spec that "
                             "names at least one (e.g. every:3, stage:2, all) or drop the option")
    selection = calib_note = None
    if o.plan is not None:
        return plan_step(o, source, folded, variant)
    if isinstance(vm_spec, AutoLayers):
        cal = _calibration(o, source, f"--vmeanba-layers {o.vmeanba_layers}")
        calib_note = cal.describe()
        try:
            selection = select_vmeanba_layers(model, cal, k=vm_spec.k, max_drop=o.max_drop, variant=variant,
                                              folded=folded, progress=o.progress, threads=o.threads)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        selection = dataclasses.replace(selection, model=source.arch)
        vm_layers = selection.layers
    else:
        vm_layers = vm_spec
    try:
        if vm_layers:
            model = apply_vmeanba(model, vm_layers, variant=variant, folded=folded)
        if qm_spec:
            stride = QUARTERMAP_DOWN.default("stride") if o.quartermap_stride is None else o.quartermap_stride
            keep = QUARTERMAP_DOWN.default("keep") if o.quartermap_keep is None else o.quartermap_keep
            model = apply_quartermap(model, qm_spec, stride=stride, keep=keep)
    except ValueError as exc:
        raise UsageError(f"{exc} (--quartermap-stride / --quartermap-keep)" if qm_spec and "QuarterMap" in str(exc)
                         else str(exc)) from exc
    return Compression(model, layer_forms(model), selection, calib_note)


def _calibration(o: Options, source: Source, flag: str):
    from exporter.compress import load_calibration

    source_name = o.calib or source.calib_default
    if source_name is None:
        raise UsageError(f"{flag} chooses layers on calibration data: pass --calib DIR|file.npz|synthetic")
    try:
        return load_calibration(source_name, source.family, limit=o.calib_limit, seed=o.seed, cfg=source.default_cfg)
    except (OSError, ValueError) as exc:
        raise UsageError(f"calibration data: {exc}") from exc


def plan_step(o: Options, source: Source, folded, variant: str) -> Compression:
    """--plan: the speed-aware planner (exporter.compress.planner) on the cost model of --plan-cost at
    --plan-batch (default --batch), --precision and the export resolution; without a cost model, the
    plain VMeanba selection with the same budget (the reason is printed as a warning)."""
    from exporter.compress import apply_quartermap, apply_vmeanba
    from exporter.compress.planner import plan_or_select
    from exporter.export.onnx_export import layer_forms
    from plugins.contract import QUARTERMAP_DOWN

    cal = _calibration(o, source, f"--plan {o.plan}")
    stride = QUARTERMAP_DOWN.default("stride") if o.quartermap_stride is None else o.quartermap_stride
    keep = QUARTERMAP_DOWN.default("keep") if o.quartermap_keep is None else o.quartermap_keep
    if keep == stride:
        raise UsageError(f"QuarterMap with keep == stride ({keep}) changes nothing; use --quartermap-keep < "
                         "--quartermap-stride (e.g. 2 and 1)")
    try:
        plan, selection, reason = plan_or_select(
            source.model, cal, o.max_drop, goal=o.plan, backend=o.plan_cost, batch=o.plan_batch or o.batch,
            precision=o.precision, resolution=o.resolution or (source.default_cfg.resolution,) * 2,
            cache_dir=o.plan_cache, variant=variant, folded=folded, stride=stride, keep=keep, progress=o.progress,
            threads=o.threads,
            **({} if o.plan_evaluations is None else {"search_evaluations": o.plan_evaluations}))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if plan is not None:
        plan = dataclasses.replace(plan, model=source.arch)
        vm_layers, qm_layers = plan.vmeanba_layers, plan.quartermap_layers
    else:
        selection = dataclasses.replace(selection, model=source.arch)
        vm_layers, qm_layers = selection.layers, []
    model = source.model
    try:
        if vm_layers:
            model = apply_vmeanba(model, vm_layers, variant=variant, folded=folded)
        if qm_layers:
            model = apply_quartermap(model, qm_layers, stride=stride, keep=keep)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return Compression(model, layer_forms(model), selection, cal.describe(), plan, reason)


def plugin_limit_warnings(model) -> list[str]:
    """What the exported file will not do with the TensorRT plugins (the contract's dim limits):
    the function bodies still run in ONNX Runtime, so this is a warning, not an error."""
    from plugins.contract import SS2D_SCAN

    for name, ss2d in model.ssm_layers().items():
        try:
            SS2D_SCAN.check_dim("N", ss2d.d_state)
        except ValueError as exc:
            return [f"{name}: {exc}: the .onnx runs in ONNX Runtime (function bodies) but not with the TensorRT "
                    "plugins"]
    return []


# --------------------------------------------------------------------------- step 3: export
_ANSI = None


def strip_ansi(text: str) -> str:
    import re

    global _ANSI
    _ANSI = _ANSI or re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
    return _ANSI.sub("", text)


def export(o: Options, model, resolution: tuple[int, int], onnx_path: Path):
    """ONNX export (``exporter.export.export_onnx``) to ``onnx_path``; returns its ExportResult."""
    from exporter.export import onnx_export

    try:
        return onnx_export.export_onnx(model, onnx_path, precision=o.precision, batch=o.batch, resolution=resolution,
                                       dynamic=o.dynamic, opset=o.opset, trt_onnx=o.trt_onnx)
    except OSError:
        raise
    except (onnx_export.ExportError, ValueError, RuntimeError) as exc:
        raise ExportFailure(strip_ansi(str(exc)).strip()) from exc


# --------------------------------------------------------------------------- step 4: verify
@dataclasses.dataclass
class Verification:
    passed: bool
    parity: Any  # exporter.verify.parity.ParityReport over every checked input shape
    per_shape: list  # one ParityReport per input shape
    latency: dict | None = None  # {"pytorch", "onnxrt", "note", "warning"}


def verify(o: Options, model, onnx_path: Path, resolution: tuple[int, int], plan: OutputPlan,
           staged: Callable[[Path], Path], dynamic_hw: bool, engine: "EngineStep | None" = None) -> Verification:
    """Parity through Polygraphy at the example shape (and, for a dynamic file, at a second non-square
    shape), then optional latency. With an ``engine`` this GPU can run (``engine.runtime.can_run``),
    a TensorRT runner joins the first comparison; ``engine.executed`` / ``engine.note`` say what happened."""
    from exporter.verify.parity import check_parity, latency_side_by_side, machine_load_warning, merge_reports

    shape = (o.batch, 3, *resolution)
    runners = engine_runners(engine, shape) if engine is not None else ()

    def first_check(extra):
        return check_parity(model, onnx_path, precision=o.precision, input_shape=shape, iterations=o.iterations,
                            seed=o.seed, inputs_json=staged(plan.inputs_json), golden_json=staged(plan.golden_json),
                            extra_runners=extra)

    try:
        reports = [first_check(runners)]
        if runners:
            engine.executed = True
            engine.note = (f"executed with {engine.result.builder} on this GPU in the --verify comparison "
                           f"(input {shape})")
    except Exception as exc:  # noqa: BLE001 - the engine runner failed: say so, check ONNX Runtime alone
        if not runners:
            raise
        engine.note = f"the engine could not be executed here ({type(exc).__name__}: {exc}); parity covers ONNX Runtime only"
        reports = [first_check(())]
    if dynamic_hw:  # the file claims dynamic H/W: check it at another, non-square size and batch too
        other = (o.batch + 1, 3, resolution[0], max(8, resolution[1] * 3 // 4))
        reports.append(check_parity(model, onnx_path, precision=o.precision, input_shape=other, iterations=1,
                                    seed=o.seed + 1))
    merged = merge_reports(reports)
    merged.inputs_json, merged.golden_json = str(plan.inputs_json), str(plan.golden_json)
    latency = None
    if o.latency_runs:
        pt, ort_lat = latency_side_by_side(model, onnx_path, shape, runs=o.latency_runs, precision=o.precision,
                                           threads=o.threads)
        warning = machine_load_warning(pt, ort_lat)
        latency = {"pytorch": pt.as_dict(), "onnxrt": ort_lat.as_dict(), "note": "PyTorch eager runs the float32 model",
                   "warning": warning}
    return Verification(merged.passed, merged, reports, latency)


# --------------------------------------------------------------------------- step 5: engine
@dataclasses.dataclass
class EngineStep:
    """A serialized TensorRT engine built from the export (``--engine``), and whether it was executed."""

    result: Any  # exporter.engine.EngineBuildResult (path: where the engine was written)
    onnx_path: Path  # the file the engine was built from (the .onnx, or the .trt.onnx with plugins)
    runtime: Any  # exporter.engine.RuntimeSupport: can this machine's GPU execute it, in plain words
    executed: bool = False
    note: str = ""  # what happened with execution (set by verify), or why it did not run
    notes: list[str] = dataclasses.field(default_factory=list)  # how it was built, for the warnings and report

    def as_dict(self) -> dict:
        d = self.result.as_dict()
        why_not = self.note or (self.runtime.reason if not self.runtime.can_run
                                else "not asked: --verify runs it in the parity check")
        d.update(source_onnx=str(self.onnx_path), errors=len(self.result.errors), notes=list(self.notes),
                 executed=self.executed,
                 executed_text=f"yes ({self.note})" if self.executed else f"no ({why_not})")
        return d


def plugin_library_for(o: Options) -> Path | None:
    """The plugin library for the engine: --engine-plugins; with --trt-onnx, the one
    plugins.trt.find_plugin_library finds (VMAMBA_TRT_PLUGIN_LIB, VMAMBA_TRT_PLUGIN_DIR, build/);
    None: the engine is built from the .onnx function bodies."""
    if o.engine_plugins:
        return Path(o.engine_plugins)
    if not o.trt_onnx:
        return None
    from plugins.trt import find_plugin_library

    try:
        return find_plugin_library()
    except FileNotFoundError:
        return None


def default_engine_profile(input_shape: tuple[int, ...]) -> Any:
    """Batch 1 .. max(8, B) with the export's example batch B as the optimum, at the example H x W
    (a range of H/W roughly doubles a full-size build, docs/EXPORT.md section 7)."""
    from exporter.engine import ShapeProfile
    from exporter.verify.parity import INPUT_NAME

    b, *rest = input_shape
    return ShapeProfile(INPUT_NAME, (1, *rest), (b, *rest), (max(8, b), *rest))


def build_engine_step(o: Options, onnx_path: Path, engine_path: Path | None, input_shape: tuple[int, ...],
                      dynamic: bool, trt_onnx_path: Path | None = None, shown_as: dict | None = None) -> EngineStep:
    """Build the engine of ``o.engine`` from ``onnx_path`` (or ``trt_onnx_path`` when a plugin library
    is used, :func:`plugin_library_for`) into ``engine_path`` with exporter.engine.build_engine.

    ``dynamic``: the export has dynamic axes, so a shape profile is needed (``o.engine_shapes`` or
    :func:`default_engine_profile`). ``shown_as`` maps staged paths to the final ones for messages.
    Raises UsageError, NoBuilderFailure (EXIT_NO_BUILDER) or EngineFailure (EXIT_ENGINE)."""
    from exporter import engine as E

    def shown(text: str) -> str:
        for staged_path, final in (shown_as or {}).items():
            text = text.replace(str(staged_path), str(final))
        return text

    plugins = plugin_library_for(o)
    source = trt_onnx_path if plugins is not None and trt_onnx_path is not None else onnx_path
    notes = []
    if o.trt_onnx and plugins is None:
        notes.append("no plugin library was found (VMAMBA_TRT_PLUGIN_LIB, VMAMBA_TRT_PLUGIN_DIR, build/), so the "
                     "engine was built from the .onnx function bodies, not the .trt.onnx; pass --engine-plugins "
                     "LIB to build it with the plugins")
    profiles = []
    if dynamic:
        profile = parse_engine_shapes(o.engine_shapes) if o.engine_shapes else default_engine_profile(input_shape)
        if profile.min[1:2] != tuple(input_shape[1:2]) or len({profile.min[1], profile.opt[1], profile.max[1]}) > 1:
            raise UsageError(f"--engine-shapes {o.engine_shapes}: the model takes {input_shape[1]} input channels, so "
                             f"every shape needs C = {input_shape[1]} (BxCxHxW)")
        profiles = [profile]
    try:
        result = E.build_engine(source, engine_path, profiles=profiles, plugin_library=plugins,
                                builder=None if o.engine_builder == "auto" else o.engine_builder,
                                workspace_bytes=o.engine_workspace)
    except E.NoBuilderError as exc:
        raise NoBuilderFailure(shown(str(exc))) from exc
    except E.EngineError as exc:
        raise EngineFailure(shown(str(exc))) from exc
    return EngineStep(result, Path(shown(str(source))), E.runtime_support(result.builder), notes=notes)


def engine_runners(engine: EngineStep, input_shape: tuple[int, ...]) -> tuple:
    """Polygraphy's TrtRunner for the engine where this machine can execute it, else () with
    ``engine.note`` saying why in plain words. (The runner is constructed in tests but has never been
    activated: no machine of this project has a GPU that runs these engines.)"""
    if not engine.runtime.can_run:
        engine.note = engine.runtime.reason
        return ()
    outside = [p for p in engine.result.profiles
               if not all(a <= s <= c for a, s, c in zip(p.min, input_shape, p.max))]
    if outside:
        engine.note = (f"the --verify input {input_shape} is outside the engine's shape profile "
                       f"{outside[0].min}..{outside[0].max}, so the engine was not executed")
        return ()
    import polygraphy.config

    # Polygraphy's TensorRT backend imports tensorrt, or tensorrt_rtx when this is set before its first import
    polygraphy.config.USE_TENSORRT_RTX = engine.result.builder == "tensorrt_rtx"
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return (TrtRunner(EngineFromBytes(Path(engine.result.path).read_bytes()), name=engine.result.builder),)


# --------------------------------------------------------------------------- report
def _json_safe(value):
    """Standard JSON only: non-finite floats become null (json.dumps would write NaN / Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def build_report(o: Options, source: Source, comp: Compression, exported, ver: Verification | None,
                 plan: OutputPlan, files: dict[str, str], engine: EngineStep | None = None) -> dict:
    report = {
        "model": source.description, "arch": source.arch, "layers": comp.layer_forms,
        "compression": {"vmeanba_layers": o.vmeanba_layers, "vmeanba_variant": o.vmeanba_variant,
                        "vmeanba_form": o.vmeanba_form, "quartermap": o.quartermap,
                        "quartermap_stride": o.quartermap_stride, "quartermap_keep": o.quartermap_keep,
                        "calibration": comp.calibration, "plan": o.plan, "plan_cost": o.plan_cost if o.plan else None,
                        "plan_fallback": comp.plan_fallback},
        "selection": comp.selection.to_dict() if comp.selection is not None else None,
        "plan": comp.plan.to_dict() if comp.plan is not None else None,
        "export": exported.as_dict(), "files": files, "parity": None, "parity_per_shape": None, "latency": None,
        "engine": engine.as_dict() if engine is not None else None,
        # what the loader decided and left out (e.g. the heads of a segmentation checkpoint)
        "checkpoint": ({"notes": list(source.checkpoint.notes), "ignored": dict(source.checkpoint.ignored),
                        "features": source.checkpoint.features} if source.checkpoint is not None else None),
    }
    report["export"]["onnx_path"] = str(plan.onnx)
    report["export"]["trt_onnx_path"] = str(plan.trt_onnx) if plan.trt_onnx else None
    if ver is not None:
        report["parity"] = ver.parity.as_dict()
        report["parity_per_shape"] = [r.as_dict() for r in ver.per_shape]
        report["latency"] = ver.latency
    return _json_safe(report)


def _section(title: str, *paragraphs: str) -> list[str]:
    body = []
    for p in paragraphs:
        body += ["", p]
    return ["", f"## {title}", *body]


def report_markdown(report: dict) -> str:
    ex = report["export"]
    lines = [f"# vm-export report: {report['arch']}", "", f"- model: {report['model']}",
             f"- precision / opset: {ex['precision']} / {ex['opset']}",
             f"- example input {tuple(ex['input_shape'])}, dynamic axes: "
             f"{', '.join(ex['dynamic_axes'].values()) or 'none (static)'}",
             f"- ONNX nodes (top level): {ex['node_count']}; custom: {ex['custom_nodes'] or 'none'}",
             f"- export time: {ex['export_seconds']:.1f} s"]
    lines += [f"- note: {n}" for n in ex.get("notes", [])]
    lines += [f"- checkpoint: {n}" for n in (report.get("checkpoint") or {}).get("notes", [])]
    sel = report.get("selection")
    if sel:
        lines += ["", "## VMeanba selection", "",
                  f"{sel['metric']} on {sel['calibration']}: baseline {sel['baseline']:.4f}, with the chosen "
                  f"{len(sel['layers'])} layer(s) {sel['joint']:.4f} (drop {sel['joint_drop']:+.4f}, budget "
                  f"{sel['max_drop']}).", "", "| layer | impact alone | chosen |", "|---|---|---|"]
        lines += [f"| {n} | {sel['impacts'][n]:+.4f} | {'yes' if n in sel['layers'] else ''} |" for n in sel["order"]]
        if sel.get("synthetic"):
            lines += ["", "**Calibration was synthetic noise: the selection says nothing about accuracy.**"]
    plan = report.get("plan")
    if plan:
        from exporter.compress.planner import PlanResult
        from exporter.compress.report import plan_markdown

        lines += ["", "## Compression plan (--plan)", "", *plan_markdown(PlanResult(**plan))]
    elif report["compression"].get("plan_fallback"):
        lines += ["", "## Compression plan (--plan)", "", report['compression']['plan_fallback'] + "."]
    lines += ["", "## Layers", "", "| layer | exported as |", "|---|---|"]
    lines += [f"| {name} | {form} |" for name, form in report["layers"].items()]
    par, lat = report.get("parity"), report.get("latency")
    if par:
        verdict = "PASS" if par["passed"] else "FAIL"
        lines += _section("Parity (ONNX Runtime vs PyTorch, Polygraphy)",
                          f"{verdict}: max abs {par['max_abs_error']}, max rel {par['max_rel_error']} (atol "
                          f"{par['atol']:g}, rtol {par['rtol']:g}) over {par['iterations']} inputs of shapes "
                          f"{par['input_shapes']}")
    if lat:
        pt = lat["pytorch"]
        lines += _section("Latency (median, CPU)",
                          f"PyTorch eager {pt['median_ms']:.2f} ms, ONNX Runtime {lat['onnxrt']['median_ms']:.2f} ms "
                          f"(input {pt['input_shape']}, {pt['runs']} runs, {pt['threads']} threads)",
                          *([f"**Warning:** {lat['warning']}"] if lat.get("warning") else []))
    eng = report.get("engine")
    if eng:
        lines += ["", "## Engine", "", *[f"- {item}: {value}" for item, value in engine_summary(eng)]]
    lines += ["", "## Files", ""] + [f"- {label}: `{path}`" for label, path in report["files"].items()]
    return "\n".join(lines) + "\n"


def engine_summary(eng: dict) -> list[tuple[str, str]]:
    """The report's engine section as (item, text) rows: the Markdown summary and the CLI print them."""
    profiles = "; ".join(f"{p['input']} min {'x'.join(map(str, p['min']))} opt {'x'.join(map(str, p['opt']))} "
                         f"max {'x'.join(map(str, p['max']))}" for p in eng["profiles"]) or "none (static shapes)"
    counts = ", ".join(f"{kind} {n}" for kind, n in eng["checked_warnings"].items())
    return [("engine builder", f"{eng['builder']} {eng['builder_version']}"),
            ("engine built from", f"{eng['source_onnx']} (plugin library: {eng['plugin_library'] or 'none, function bodies'}"
                                  f"; plugin nodes: {eng['plugin_nodes']})"),
            ("engine", f"{eng['num_layers']} layers, {eng['engine_bytes'] / 1e6:.1f} MB, parse {eng['parse_seconds']:.1f} s, "
                       f"build {eng['build_seconds']:.1f} s"),
            ("engine profile", profiles),
            ("engine warnings", f"{eng['warnings']} in all ({counts}); errors: {eng['errors']}"),
            ("engine executed", eng["executed_text"])] + [("engine note", n) for n in eng.get("notes", [])]


def write_report(report: dict, comp: Compression, plan: OutputPlan, staged: Callable[[Path], Path]) -> None:
    from exporter.compress.report import plot_plan_pareto, plot_selection

    staged(plan.report_json).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    staged(plan.report_md).write_text(report_markdown(report))
    if comp.selection is not None and "impact" in plan.plots:
        plot_selection(comp.selection, staged(plan.plots["impact"]), staged(plan.plots["curve"]))
    if comp.plan is not None and "plan_pareto" in plan.plots:
        plot_plan_pareto(comp.plan, staged(plan.plots["plan_pareto"]))


# --------------------------------------------------------------------------- the whole run
@dataclasses.dataclass
class Result:
    source: Source
    compression: Compression
    export: Any  # exporter.export.onnx_export.ExportResult (paths are the final ones)
    verification: Verification | None
    plan: OutputPlan
    report: dict
    warnings: list[str]
    engine: EngineStep | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_PARITY if self.verification is not None and not self.verification.passed else EXIT_OK


class _InterruptWatch:
    """Remembers a Ctrl-C even when a library catches the KeyboardInterrupt and raises its own error
    (torch.export does): any failure after a SIGINT is reported as an interrupt."""

    def __init__(self) -> None:
        self.seen = False
        self._previous = None

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: no handler, plain KeyboardInterrupt handling only
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def run(o: Options, step: Callable[[str], ContextManager] | None = None) -> Result:
    """Load, compress, export, verify, report; outputs staged and moved into place at the end.

    ``step(text)`` is a context manager around each long step (the CLI's progress display)."""
    from exporter.files import Staging, describe_os_error

    step = step or (lambda text: contextlib.nullcontext())
    check_options(o)
    staging = Staging()

    @contextlib.contextmanager
    def writing():
        try:
            yield
        except OSError as exc:
            raise OutputFailure(describe_os_error(exc) + "; nothing was written") from exc

    import torch

    previous_threads = torch.get_num_threads()
    with _InterruptWatch() as watch, warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("default")
        try:
            if o.threads is not None:
                torch.set_num_threads(o.threads)
            if o.output is not None:  # the paths do not depend on the model: refuse bad ones before loading
                check_outputs(plan_outputs(o, "model"), o)
            if o.engine is not None:  # no builder: say so before any work
                from exporter.engine import NoBuilderError, import_builder

                try:
                    import_builder(None if o.engine_builder == "auto" else o.engine_builder)
                except NoBuilderError as exc:
                    raise NoBuilderFailure(f"{exc}; nothing was written") from exc
            with step("loading model"):
                source = load_source(o)
            plan = plan_outputs(o, source.arch)
            check_outputs(plan, o, estimated_output_bytes(source.model, o))
            resolution = o.resolution or (source.default_cfg.resolution,) * 2
            with step("planning (cost model, impacts) and compressing" if o.plan else
                      "compressing" if o.vmeanba_layers != "none" or o.quartermap else "preparing"):
                comp = compress(o, source)
            with writing():
                staged_onnx = staging.path_for(plan.onnx)
                if plan.trt_onnx is not None:
                    staging.path_for(plan.trt_onnx)  # export_onnx writes it beside the staged .onnx
                with step(f"exporting {plan.onnx} ({o.precision}, {'dynamic' if o.dynamic else 'static'})"):
                    exported = export(o, comp.model, resolution, staged_onnx)
                eng = None
                if plan.engine is not None:
                    staged_engine = staging.path_for(plan.engine)
                    staged_trt = staging.path_for(plan.trt_onnx) if plan.trt_onnx is not None else None
                    with step(f"building the TensorRT engine {plan.engine}"):
                        eng = build_engine_step(o, staged_onnx, staged_engine, tuple(exported.input_shape),
                                                bool(exported.dynamic_axes), staged_trt,
                                                shown_as={k: v for k, v in ((staged_onnx, plan.onnx),
                                                                            (staged_trt, plan.trt_onnx),
                                                                            (staged_engine, plan.engine)) if k})
                ver = None
                if o.verify:
                    with step("parity (Polygraphy: PyTorch vs ONNX Runtime) and latency"):
                        ver = verify(o, comp.model, staged_onnx, resolution, plan, staging.path_for,
                                     "height" in exported.dynamic_axes.values(), eng)
                if eng is not None:
                    eng.result = dataclasses.replace(eng.result, path=plan.engine)
                files = plan.files(plots=comp.plots)
                final_export = dataclasses.replace(exported, onnx_path=plan.onnx, trt_onnx_path=plan.trt_onnx)
                report = build_report(o, source, comp, final_export, ver, plan, files, eng)
                if plan.report_json is not None:
                    write_report(report, comp, plan, staging.path_for)
                staging.commit()
        except BaseException as exc:
            staging.discard()
            torch.set_num_threads(previous_threads)
            if watch.seen or isinstance(exc, KeyboardInterrupt):
                raise Interrupted("stopped by Ctrl-C; nothing was written (outputs that existed are unchanged)") \
                    from exc
            raise
    torch.set_num_threads(previous_threads)
    package = str(Path(__file__).resolve().parent)
    caught = list(dict.fromkeys(str(r.message) for r in records if str(r.filename).startswith(package)))
    caught += plugin_limit_warnings(comp.model)
    if ver is not None and ver.latency and ver.latency.get("warning"):
        caught.append(ver.latency["warning"])
    caught += eng.notes if eng is not None else []
    if eng is not None and o.verify and not eng.executed:
        caught.append(f"--verify: the engine {plan.engine} was not executed: {eng.note}; parity covers ONNX Runtime "
                      "only")
    return Result(source, comp, final_export, ver, plan, report, caught, eng)


__all__ = ["Options", "OutputPlan", "Source", "Compression", "Verification", "Result", "run", "check_options",
           "plan_outputs", "check_outputs", "load_source", "compress", "export", "verify", "build_report",
           "report_markdown", "PipelineError", "UsageError", "CheckpointFailure", "ExportFailure", "OutputFailure",
           "Interrupted", "EXIT_CODES", "EngineStep", "build_engine_step", "plugin_library_for",
           "default_engine_profile", "parse_engine_shapes", "engine_summary", "NoBuilderFailure", "EngineFailure"]
