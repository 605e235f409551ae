"""Every ONNX consumer takes our exports as written, silently.

- ``onnx.reference.ReferenceEvaluator`` (onnx's own executable spec) runs the exports unmodified
  (the function bodies' Scan loops run over axis 0, the only axis it implements) and agrees with
  ONNX Runtime and PyTorch at two resolutions.
- No value_info annotation freezes a dimension that follows from the dynamic height/width: the
  oracle is ONNX shape inference of the same graph with the input fixed at another size. ONNX
  Runtime then prints no "Shape mismatch attempting to re-use buffer" at that size.
- TensorRT-RTX (``trt_rtx``, wheels in the test extra; skips without them) parses and builds every
  export kind with a dynamic shape profile on the CPU: 0 parser errors, and 0 warnings of the two
  kinds it printed on older exports (duplicate node names, Reshape 0-placeholders).

Exports are made once per session; the builds run in child processes (exporter.engine).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from exporter import create_model
from exporter.compress import apply_quartermap, apply_vmeanba
from exporter.engine import CHECKED_WARNINGS
from exporter.export.onnx_export import export_onnx
from exporter.samples_data import load_digits_model
from exporter.verify import parity

REPO = Path(__file__).resolve().parents[1]
from test_trt_rtx import _rtx_skip_reason, build_in_child

FP32_ATOL = parity.TOLERANCES["fp32"].atol


def _compress(model, vmeanba_layers, quartermap="every:3"):
    return apply_quartermap(apply_vmeanba(model, vmeanba_layers, folded=False), quartermap)


# kind -> (model factory, export resolution, precision). "compressed": QuarterMap every:3 and literal
# VMeanba (the VMeanbaScan custom op) on the given blocks.
EXPORT_KINDS = {
    "digits_vmamba": (lambda: _compress(load_digits_model("vmamba"), ["layers.1.blocks.0"]), 32, "fp32"),
    "digits_medmamba": (lambda: _compress(load_digits_model("medmamba"), ["layers.1.blocks.0"]), 32, "fp32"),
    "digits_vmamba_fp16": (lambda: _compress(load_digits_model("vmamba"), ["layers.1.blocks.0"]), 32, "fp16"),
    "vmamba_t_s1l8": (lambda: create_model("vmamba_tiny_s1l8"), 224, "fp32"),
    "vmamba_t_s1l8_compressed": (
        lambda: _compress(create_model("vmamba_tiny_s1l8"), ["layers.2.blocks.0", "layers.2.blocks.1"]), 224, "fp32"),
    "medmamba_t": (lambda: create_model("medmamba_t", num_classes=10), 224, "fp32"),
    "medmamba_t_compressed": (
        lambda: _compress(create_model("medmamba_t", num_classes=10), ["layers.2.blocks.0", "layers.2.blocks.1"]),
        224, "fp32"),
}


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """kind -> (model in eval mode, export result); each kind exported at most once per session."""
    cache: dict[str, tuple] = {}
    folder = tmp_path_factory.mktemp("consumers")

    def get(kind: str):
        if kind not in cache:
            factory, res, precision = EXPORT_KINDS[kind]
            torch.manual_seed(0)
            model = factory().eval()
            cache[kind] = model, export_onnx(model, folder / f"{kind}.onnx", resolution=(res, res), precision=precision)
        return cache[kind]

    return get


def _images(hw: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, hw, hw)).astype(np.float32)


# ==================================================================================== reference evaluator
@pytest.mark.parametrize("kind", ["digits_vmamba", "digits_medmamba"])
def test_reference_evaluator_runs_the_export_as_written(exported, kind):
    model, result = exported(kind)
    proto = onnx.load(str(result.onnx_path))
    assert {f.name for f in proto.functions} >= {"SS2DScan", "QuarterMapDown", "QuarterMapUp", "VMeanbaScan"}
    evaluator = ReferenceEvaluator(proto)
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    for hw in (32, 48):
        x = _images(hw)
        ref = evaluator.run(None, {"x": x})[0]
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ref, expected, atol=FP32_ATOL, rtol=0)
        np.testing.assert_allclose(ref, session.run(None, {"x": x})[0], atol=FP32_ATOL, rtol=0)


# ==================================================================================== value_info
def _static_inference(proto: onnx.ModelProto, shape: tuple[int, ...]) -> dict[str, list]:
    probe = copy.deepcopy(proto)
    del probe.graph.value_info[:]
    for d, v in zip(probe.graph.input[0].type.tensor_type.shape.dim, shape):
        d.Clear()
        d.dim_value = v
    inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    return {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
            for vi in inferred.graph.value_info}


def test_no_value_info_freezes_a_dynamic_dimension(exported, capfd):
    """The 32x32 digits export makes the stage-3 map 1x1 in the example; the file must not say 1x1."""
    _, result = exported("digits_vmamba")
    proto = onnx.load(str(result.onnx_path))
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3], f"height/width not dynamic: {dims}"
    at64 = _static_inference(proto, (2, 3, 64, 64))
    checked, frozen = 0, []
    for vi in proto.graph.value_info:
        ref = at64.get(vi.name)
        if ref is None:
            continue
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                checked += 1
                if ref[i] != d.dim_value:
                    frozen.append((vi.name, i, d.dim_value, ref[i]))
    assert checked > 100 and not frozen, f"value_info dims that are not constant at 64x64: {frozen[:10]}"
    capfd.readouterr()
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    session.run(None, {"x": _images(64)})
    assert "Shape mismatch" not in capfd.readouterr().err


# ==================================================================================== TensorRT-RTX tier
@pytest.fixture(scope="session")
def rtx_tier():
    reason = _rtx_skip_reason()
    if reason:
        pytest.skip(reason)


def _profile_for(result) -> str:
    """Dynamic batch 1..8 always; height/width 32..64 as well for the small digits exports
    (full-size builds keep 224x224: a dynamic H/W range doubles their CPU build time, ~14 s -> ~30 s)."""
    _, _, h, w = result.input_shape
    if h < 224 and 2 in result.dynamic_axes and 3 in result.dynamic_axes:
        return f"x:1x3x{h}x{w},2x3x{h}x{w},8x3x{2 * h}x{2 * w}"
    return f"x:1x3x{h}x{w},2x3x{h}x{w},8x3x{h}x{w}"


@pytest.mark.trt_rtx
@pytest.mark.slow
@pytest.mark.parametrize("kind", list(EXPORT_KINDS))
def test_tensorrt_rtx_parses_and_builds_the_export(rtx_tier, exported, kind, tmp_path):
    model, result = exported(kind)
    r = build_in_child(result.onnx_path, None, profile=_profile_for(result))
    print(f"\n[TensorRT-RTX {r['builder_version']}] {kind} ({result.precision}): {r['num_layers']} layers, "
          f"engine {r['engine_bytes'] / 1e6:.1f} MB, parse {r['parse_seconds']:.2f} s, build {r['build_seconds']:.1f} s, "
          f"warnings {r['warnings']} (checked: {r['checked_warnings']}), profile {r['profiles'][0]}")
    assert r["errors_text"] == []
    assert r["checked_warnings"] == {k: 0 for k in CHECKED_WARNINGS}, r["checked_texts"]
    assert r["precision"] == result.precision
    (out_shape,) = r["output_shapes"].values()
    assert out_shape == [-1, onnx.load(str(result.onnx_path)).graph.output[0].type.tensor_type.shape.dim[1].dim_value]
    assert r["engine_bytes"] > 1_000_000 and r["num_layers"] > 100


@pytest.mark.trt_rtx
def test_tensorrt_rtx_parser_sees_no_reshape_placeholders_in_the_bodies(rtx_tier, exported):
    """The raw parser on the .onnx as written (bodies inlined by TensorRT itself): no Reshape whose
    0 TensorRT must guess. The duplicate-name warnings it does print there come from its naming of
    shared FunctionProto nodes (docs/EXPORT.md); exporter.engine avoids them by inlining first."""
    _, result = exported("digits_vmamba")
    script = (
        "import sys, exporter.engine as E\n"
        "trt = E.import_builder('tensorrt_rtx').module\n"
        "log = E._make_logger(trt, False)\n"
        "net = trt.Builder(log).create_network(0)\n"
        "p = trt.OnnxParser(net, log)\n"
        "ok = p.parse_from_file(sys.argv[1])\n"
        "print('RAW', ok, p.num_errors, sum(E.ZERO_PLACEHOLDER_WARNING in w for w in log.warnings),"
        " sum(E.DUPLICATE_NODE_WARNING in w for w in log.warnings))\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(result.onnx_path)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=600)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RAW ")]
    assert r.returncode == 0 and line, r.stdout[-2000:] + r.stderr[-2000:]
    _, ok, n_errors, n_placeholder, n_duplicate = line[0].split()
    print(f"\nraw parse of {result.onnx_path.name}: duplicate-name warnings {n_duplicate} (shared bodies)")
    assert ok == "True" and n_errors == "0" and n_placeholder == "0"
