"""Export a (compressed) VMamba / MedMamba model to ONNX with the custom ops of the contract.

One export writes up to two files (docs/EXPORT.md):
- ``<name>.onnx``: custom nodes ``vmamba.trt::*`` WITH their function bodies (standard ops). Runs in
  stock ONNX Runtime anywhere (no plugin); TensorRT >= 10.15 uses the plugin because every node
  carries ``plugin_namespace`` (and falls back to the body silently if the plugin is missing).
- ``<name>.trt.onnx`` (optional): the same graph with the bodies stripped, for TensorRT only, so a
  missing plugin fails loudly at parse time instead of silently importing the body.

Both are written atomically (temporary file + ``os.replace``): a failure leaves no partial file.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import os
import re
import time
import warnings
from pathlib import Path

import onnx
import torch

from exporter.files import atomic_write_bytes
from exporter.models.ss2d import cast_model
from exporter.export.functions import attach_functions, strip_functions, used_custom_ops
from plugins.contract import DOMAIN, FLOAT32_SCAN_INPUTS, VMEANBA_VARIANTS

DEFAULT_OPSET = 18
INPUT_NAME = "x"
OUTPUT_NAME = "logits"
# The scan's float32-always inputs, from the contract (dt_projs_bias, A_logs, Ds for every T).
FP32_SCAN_PARAMS = FLOAT32_SCAN_INPUTS
PRECISIONS = ("fp32", "fp16")


class ExportError(RuntimeError):
    """The model could not be exported or the exported file failed its checks."""


@dataclasses.dataclass
class ExportResult:
    onnx_path: Path
    trt_onnx_path: Path | None
    precision: str
    opset: int
    input_shape: tuple  # the example shape used for tracing
    dynamic_axes: dict  # axis index -> name, for the input
    node_count: int  # top-level graph nodes (custom nodes counted once)
    custom_nodes: dict  # op type -> count
    export_seconds: float
    notes: list

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["onnx_path"] = str(self.onnx_path)
        d["trt_onnx_path"] = str(self.trt_onnx_path) if self.trt_onnx_path else None
        d["dynamic_axes"] = {str(k): v for k, v in self.dynamic_axes.items()}
        return d


# --------------------------------------------------------------------------- helpers
def layer_forms(model: torch.nn.Module) -> dict[str, str]:
    """How every SS2D layer is exported: which custom node (or plain ops) it becomes."""
    forms = {}
    for name, ss2d in model.ssm_layers().items():
        vm, qm = ss2d.vmeanba, ss2d.quartermap
        if vm is None:
            form = "SS2DScan"
        elif vm.folded:
            form = f"VMeanba folded ({vm.variant}): elementwise Dsum*x"
        else:
            form = f"VMeanbaScan literal (variant={VMEANBA_VARIANTS[vm.variant]} {vm.variant})"
        if qm is not None:
            form += f" + QuarterMapDown/Up (stride={qm.stride}, keep={qm.keep})"
        forms[name] = form
    return forms


def prepare_for_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """An eval-mode copy in the export precision. fp16: everything half except the scan's
    A_logs, Ds and dt_projs_bias, which the contract keeps float32 (TensorRT 11 takes precision
    from the ONNX types, so the types in the file are the engine's types)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model = copy.deepcopy(model).eval()
    return cast_model(model, torch.float16 if precision == "fp16" else torch.float32)


def _rename_dims(model: onnx.ModelProto, names: dict[int, str]) -> None:
    """Give the exporter's symbolic dims (s0, s53, ...) of the input readable names everywhere."""
    inp = model.graph.input[0].type.tensor_type.shape.dim
    mapping = {inp[i].dim_param: new for i, new in names.items() if inp[i].dim_param}
    if not mapping:
        return
    # also inside derived sizes such as a feature map's "((s53 - 1)//4) + 1"
    symbol = re.compile(r"\b(" + "|".join(re.escape(k) for k in mapping) + r")\b")
    infos = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    for vi in infos:
        if vi.type.HasField("tensor_type"):
            for d in vi.type.tensor_type.shape.dim:
                if d.dim_param:
                    d.dim_param = symbol.sub(lambda m: mapping[m.group(1)], d.dim_param)


def _name_custom_nodes(model: onnx.ModelProto) -> None:
    """Name each custom node after its module, e.g. ``layers.0.blocks.0.op/SS2DScan``: TensorRT
    uses the node name as the plugin instance name, so logs and profiles then say which layer."""
    seen: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes", "")
        parts = [s.strip(" '") for s in scopes.strip("[]").split(",") if s.strip(" '")]
        module = parts[-2] if len(parts) >= 2 else "graph"
        name = f"{module}/{node.op_type}"
        seen[name] = seen.get(name, 0) + 1
        node.name = name if seen[name] == 1 else f"{name}_{seen[name] - 1}"


def unfreeze_value_info(model: onnx.ModelProto) -> int:
    """Clear every value_info dimension the exporter fixed although it follows from a dynamic
    input dimension. torch.export specialises sizes that are 1 in the example (a 32x32 input
    makes VMamba's stage-3 map 1x1), so its annotations can say 1 where the file declares a
    dynamic height/width; ONNX Runtime then plans buffers from the wrong sizes ("Shape mismatch
    attempting to re-use buffer") at other resolutions. The reference here is ONNX's own shape
    inference from the declared (symbolic) input: a dimension it cannot prove constant keeps its
    inferred symbol (or none). In place; returns how many dimensions were cleared."""
    probe = copy.deepcopy(model)
    del probe.graph.value_info[:]
    inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(probe, data_prop=True).graph.value_info}
    cleared = 0
    for vi in model.graph.value_info:
        ref = inferred.get(vi.name)
        if ref is None or not vi.type.HasField("tensor_type") or not ref.type.tensor_type.HasField("shape"):
            continue
        dims, ref_dims = vi.type.tensor_type.shape.dim, ref.type.tensor_type.shape.dim
        if len(dims) != len(ref_dims):
            continue
        for d, r in zip(dims, ref_dims):
            if d.HasField("dim_value") and not (r.HasField("dim_value") and r.dim_value == d.dim_value):
                d.Clear()
                if r.HasField("dim_param"):
                    d.dim_param = r.dim_param
                cleared += 1
    return cleared


def atomic_save(model: onnx.ModelProto, path: Path) -> None:
    """Serialise to a temporary file beside ``path`` and move it into place (no partial file)."""
    atomic_write_bytes(Path(path), model.SerializeToString())


def trt_onnx_path_for(path: Path) -> Path:
    path = Path(path)
    stem = path.name[:-5] if path.name.endswith(".onnx") else path.name
    return path.with_name(stem + ".trt.onnx")


@contextlib.contextmanager
def _quiet_exporter(verbose: bool):
    """The dynamo exporter prints progress and warnings (torchvision absent...); keep them out
    of the CLI's output unless asked."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def output_names_of(model: torch.nn.Module) -> list[str]:
    """The graph outputs: ``logits`` for a classifier; ``feat0``..``feat3`` (one per out index) for a
    feature backbone (``create_model(..., features_only=True)``), whose forward returns a list of maps."""
    return list(getattr(model, "output_names", [OUTPUT_NAME]))


def _torch_export(model, example, dynamic_axes, opset, verbose):
    dims = torch.export.Dim
    shapes = {INPUT_NAME: {i: dims.DYNAMIC for i in dynamic_axes}} if dynamic_axes else None
    with _quiet_exporter(verbose), torch.no_grad():
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, dynamic_shapes=shapes,
            input_names=[INPUT_NAME], output_names=output_names_of(model), optimize=True, verbose=verbose,
        )
    return program.model_proto


def _input_dims_are_dynamic(model: onnx.ModelProto, axes) -> bool:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return all(not dims[i].HasField("dim_value") for i in axes)


# --------------------------------------------------------------------------- export
def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    *,
    precision: str = "fp32",
    batch: int = 1,
    resolution: tuple[int, int] | None = None,
    dynamic: bool = True,
    opset: int = DEFAULT_OPSET,
    trt_onnx: bool = False,
    verbose: bool = False,
) -> ExportResult:
    """Export ``model`` to ``path`` (and ``<stem>.trt.onnx`` when ``trt_onnx``).

    resolution: the example (H, W); default: the model family's pretrained input size (``default_cfg``).
    A feature backbone (``features_only``) exports with one output per stage map, ``feat0``..``feat3``
    (B, C_i, H_i, W_i), whose batch and spatial sizes follow the input's.
    dynamic: batch, height and width dynamic. If the exporter cannot keep height/width dynamic
    for this model, the export falls back to a static resolution (dynamic batch only) and says so
    in ``ExportResult.notes``.
    """
    if opset < 18:
        raise ValueError(f"opset must be >= 18, got {opset}")
    path = Path(path)
    H, W = resolution or type(model).default_cfg.input_size[1:]
    prepared = prepare_for_precision(model, precision)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    example = torch.randn(batch, 3, H, W, dtype=dtype)
    notes: list[str] = []
    names = {0: "batch", 2: "height", 3: "width"}
    t0 = time.perf_counter()
    try:
        if dynamic:
            try:
                proto = _torch_export(prepared, example, (0, 2, 3), opset, verbose)
                if not _input_dims_are_dynamic(proto, (2, 3)):
                    raise ExportError("height/width were specialised to the example size")
            except Exception as exc:  # noqa: BLE001  (any exporter failure -> static H/W retry)
                notes.append(
                    f"dynamic height/width not exportable for this model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                    f"fell back to static {H}x{W} with dynamic batch"
                )
                names = {0: "batch"}
                proto = _torch_export(prepared, example, (0,), opset, verbose)
        else:
            names = {}
            proto = _torch_export(prepared, example, (), opset, verbose)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    _rename_dims(proto, names)
    _name_custom_nodes(proto)
    attach_functions(proto)
    if names:
        unfreeze_value_info(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ExportError(f"exported model failed the ONNX checks: {exc}") from exc
    export_seconds = time.perf_counter() - t0

    trt_path = trt_onnx_path_for(path) if trt_onnx else None
    trt_proto = None
    if trt_path is not None:
        trt_proto = strip_functions(copy.deepcopy(proto))
        # bodies stripped: the checker cannot infer custom-node shapes any more, so check structure only
        onnx.checker.check_model(trt_proto, full_check=False)
    atomic_save(proto, path)
    if trt_proto is not None:
        try:
            atomic_save(trt_proto, trt_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
    custom = {}
    for n in proto.graph.node:
        if n.domain == DOMAIN:
            custom[n.op_type] = custom.get(n.op_type, 0) + 1
    return ExportResult(
        onnx_path=path, trt_onnx_path=trt_path, precision=precision, opset=opset, input_shape=(batch, 3, H, W),
        dynamic_axes=names, node_count=len(proto.graph.node), custom_nodes=dict(sorted(custom.items())),
        export_seconds=export_seconds, notes=notes,
    )


def count_nodes(model: onnx.ModelProto, inline_functions: bool = False) -> int:
    """Top-level node count, or (inline_functions) the count after expanding the custom ops."""
    if not inline_functions:
        return len(model.graph.node)
    from onnx import inliner

    return len(inliner.inline_local_functions(model).graph.node)


__all__ = [
    "ExportError", "ExportResult", "export_onnx", "layer_forms", "prepare_for_precision", "atomic_save",
    "trt_onnx_path_for", "count_nodes", "used_custom_ops", "INPUT_NAME", "OUTPUT_NAME", "PRECISIONS",
    "output_names_of",
]
