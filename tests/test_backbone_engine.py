"""TensorRT-RTX engines of feature backbones, built on the CPU (docs/BACKBONES.md): a small compressed
v2-line backbone (VMeanba + QuarterMap) exported with dynamic batch / height / width, then

- ``trt_rtx`` (CI): built from the .onnx, the custom ops inlined from their function bodies, with a
  shape profile over batch, height and width: 0 parser errors, 0 warnings of the checked kinds, four
  outputs feat0..feat3 whose batch and spatial dims stay dynamic, the file written whole;
- ``trt`` + ``trt_rtx`` (needs the TensorRT headers for the plugin library; CI has none): built from
  the .trt.onnx with our plugin library, every custom node a plugin layer serialized into the plan.

Builds run in a child process (tests/test_trt_rtx.build_in_child), so an abort inside TensorRT fails
one test. Nothing is executed: there is no GPU here, and the TensorRT-RTX runtime refuses sm_90.
"""
from __future__ import annotations

import onnx
import pytest
import torch

from exporter.compress import apply_quartermap, apply_vmeanba
from exporter.engine import CHECKED_WARNINGS, PLUGIN_DOMAIN
from exporter.export import export_onnx
from exporter.models.vmamba import VMambaBackbone
from test_trt_rtx import build_in_child, plugin_library, rtx  # noqa: F401  (fixtures)

FEATURES = ["feat0", "feat1", "feat2", "feat3"]
# small v2-line backbone (ln2d out norms, d_state 1), every stage present: fast to export and build
SMALL = dict(depths=[1, 1, 2, 1], dims=8, ssm_d_state=1, ssm_ratio=1.0, forward_type="v05_noz",
             norm_layer="ln2d", downsample_version="v3", patchembed_version="v2", mlp_ratio=0.0)
PROFILE = "x:1x3x64x64,2x3x64x96,4x3x128x128"


@pytest.fixture(scope="module")
def compressed_export(tmp_path_factory):
    """VMeanba (literal reduced scan, so a VMeanbaScan node is there) on layers.2.blocks.0 and
    QuarterMap on layers.2.blocks.1 (which keeps its SS2DScan on the reduced map), exported at 64x64
    with dynamic batch/H/W (+ the .trt.onnx)."""
    torch.manual_seed(0)
    model = VMambaBackbone(out_indices=(0, 1, 2, 3), **SMALL).eval()
    model = apply_quartermap(apply_vmeanba(model, ["layers.2.blocks.0"], folded=False), ["layers.2.blocks.1"])
    path = tmp_path_factory.mktemp("backbone_engine") / "bb.onnx"
    result = export_onnx(model, path, resolution=(64, 64), trt_onnx=True)
    assert set(result.dynamic_axes.values()) == {"batch", "height", "width"}
    return path, result.trt_onnx_path


def _custom_nodes(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        if n.domain == PLUGIN_DOMAIN:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def _check_feature_outputs(shapes: dict) -> None:
    assert list(shapes) == FEATURES
    for name, shape in shapes.items():
        assert len(shape) == 4 and shape[0] == -1, (name, shape)  # dynamic batch
        assert shape[2] == -1 and shape[3] == -1, (name, shape)  # dynamic height / width
    assert [s[1] for s in shapes.values()] == [8, 16, 32, 64]  # channels per stage (dims 8, doubling)


@pytest.mark.trt_rtx
def test_backbone_engine_from_the_function_bodies(rtx, compressed_export, tmp_path):
    onnx_path, _ = compressed_export
    custom = _custom_nodes(onnx_path)
    assert custom == {"SS2DScan": 4, "VMeanbaScan": 1, "QuarterMapDown": 1, "QuarterMapUp": 1}
    engine = tmp_path / "bb.engine"
    r = build_in_child(onnx_path, engine, profile=PROFILE)
    assert r["errors_text"] == [] and r["checked_warnings"] == {k: 0 for k in CHECKED_WARNINGS}, r["checked_texts"]
    assert r["builder"] == "tensorrt_rtx" and r["plugin_library"] is None and r["plugin_nodes"] == sum(custom.values())
    assert r["num_layers"] > len(onnx.load(str(onnx_path), load_external_data=False).graph.node)  # bodies inlined
    assert r["profiles"] == [{"input": "x", "min": [1, 3, 64, 64], "opt": [2, 3, 64, 96], "max": [4, 3, 128, 128]}]
    _check_feature_outputs(r["output_shapes"])
    assert engine.stat().st_size == r["engine_bytes"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bb.engine"]  # no temp file left beside it


@pytest.mark.trt
@pytest.mark.trt_rtx
def test_backbone_engine_with_the_plugin_library(plugin_library, compressed_export, tmp_path):
    _, trt_path = compressed_export
    custom = _custom_nodes(trt_path)
    assert set(custom) == {"SS2DScan", "VMeanbaScan", "QuarterMapDown", "QuarterMapUp"}
    assert not onnx.load(str(trt_path), load_external_data=False).functions  # bodies stripped
    engine = tmp_path / "bb.engine"
    r = build_in_child(trt_path, engine, profile=PROFILE, plugin_library=plugin_library)
    assert r["errors_text"] == [] and r["checked_warnings"] == {k: 0 for k in CHECKED_WARNINGS}, r["checked_texts"]
    assert r["plugin_library"] == str(plugin_library) and r["plugin_nodes"] == sum(custom.values())
    _check_feature_outputs(r["output_shapes"])  # the plugins' getOutputShapes kept H and W symbolic
    data = engine.read_bytes()
    assert len(data) == r["engine_bytes"] > 0
    for kind in custom:  # every plugin kind serialized into the plan (getFieldsToSerialize)
        assert kind.encode() in data, kind
