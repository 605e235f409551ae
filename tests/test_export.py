"""Exported models (plain and compressed) run in a plain ONNX Runtime session — no custom-op
library registered — and match the PyTorch model; Polygraphy comparison path; atomic writes.

Tolerances: float32 logits within 1e-4 absolute (exporter.verify.parity.TOLERANCES["fp32"];
measured ~1e-6: same float32 arithmetic in another order). float16 export against the float32
PyTorch model within TOLERANCES["fp16"] (3e-2; measured ~1e-3), see docs/EXPORT.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporter.compress import apply_quartermap, apply_vmeanba
from exporter.export import onnx_export as E
from exporter.models import MedMamba, VMamba
from exporter.verify import parity
from plugins.contract import DOMAIN, OPS

FP32_ATOL = parity.TOLERANCES["fp32"].atol
FIXTURE_NAMES = ["vmamba_v05noz_r1_ds1", "vmamba_v05noz_r2_ds1", "vmamba_v0_ds16", "medmamba_small_cfg"]


def _fixture_model(fixtures_dir: Path, name: str):
    path = fixtures_dir / f"{name}.pt"
    if not path.exists():
        pytest.skip(f"fixture {path} absent")
    data = torch.load(path, weights_only=True)
    cls = VMamba if data["family"] == "vmamba" else MedMamba
    model = cls(**data["config"])
    model.load_state_dict(data["state_dict"], strict=True)
    return model.eval(), data


def _compressed(model):
    """Every form at once: literal VMeanba, QuarterMap (with VMeanba on one of its blocks too),
    folded VMeanba, and untouched SS2D blocks."""
    names = list(model.ssm_layers())
    m = apply_vmeanba(model, [names[1]], folded=False, variant="per-direction")
    m = apply_quartermap(m, [names[2], names[3]])
    m = apply_vmeanba(m, [names[3]], folded=False)
    return apply_vmeanba(m, [names[4]], folded=True)


def _plain_session(path) -> ort.InferenceSession:
    """Stock ORT: no custom-op library, no registered domains."""
    return ort.InferenceSession(str(path), ort.SessionOptions(), providers=["CPUExecutionProvider"])


def _torch(model, x):
    with torch.no_grad():
        return model(x).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, fixtures_dir):
    """Export each fixture model once, plain and compressed (module cache: exports take seconds)."""
    cache = {}
    out = tmp_path_factory.mktemp("export")

    def get(name: str, compressed: bool):
        key = (name, compressed)
        if key not in cache:
            model, data = _fixture_model(fixtures_dir, name)
            if compressed:
                model = _compressed(model)
            result = E.export_onnx(model, out / f"{name}_{int(compressed)}.onnx", resolution=(64, 64), trt_onnx=True)
            cache[key] = (model, data, result)
        return cache[key]

    return get


@pytest.mark.fixtures
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_models_run_in_stock_ort_and_match_pytorch(exported, name, compressed):
    model, data, result = exported(name, compressed)
    sess = _plain_session(result.onnx_path)
    # the fixtures' own inputs (square and non-square) + an odd size (15x19 after the stem, so
    # QuarterMap sees odd maps: 15 -> 8 -> 15) + another batch size
    inputs = [c["input"] for c in data["cases"]] + [torch.randn(1, 3, 60, 76), torch.randn(3, 3, 32, 48)]
    for x in inputs:
        got = sess.run(None, {E.INPUT_NAME: x.numpy()})[0]
        np.testing.assert_allclose(got, _torch(model, x), rtol=0, atol=FP32_ATOL)
    if not compressed:  # and the official implementation's outputs
        for case in data["cases"]:
            got = sess.run(None, {E.INPUT_NAME: case["input"].numpy()})[0]
            np.testing.assert_allclose(got, case["output"].numpy(), rtol=0, atol=FP32_ATOL)
    expected_custom = {"SS2DScan": 5} if not compressed else {"SS2DScan": 2, "VMeanbaScan": 2, "QuarterMapDown": 2,
                                                              "QuarterMapUp": 2}
    assert result.custom_nodes == expected_custom  # the folded layer has no custom node


@pytest.mark.fixtures
def test_exported_file_structure(exported):
    _, _, result = exported("vmamba_v05noz_r1_ds1", True)
    model = onnx.load(str(result.onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert any(i.domain == DOMAIN for i in model.opset_import)
    assert next(i.version for i in model.opset_import if i.domain == "") >= 18
    used = {n.op_type for n in model.graph.node if n.domain == DOMAIN}
    assert {(f.domain, f.name) for f in model.functions} == {(DOMAIN, op) for op in used}
    for node in model.graph.node:
        if node.domain == DOMAIN:
            attrs = {a.name: helper_value(a) for a in node.attribute}
            assert attrs["plugin_version"] == OPS[node.op_type].version and attrs["plugin_namespace"] == ""
            assert set(OPS[node.op_type].attribute_names) <= set(attrs)
            assert node.name.startswith("layers.") and node.name.endswith(node.op_type)
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"] or dims[0::2] == ["batch", "height"]
    # the TensorRT file: same graph, no bodies
    trt = onnx.load(str(result.trt_onnx_path))
    assert not [f for f in trt.functions if f.domain == DOMAIN]
    assert [n.op_type for n in trt.graph.node] == [n.op_type for n in model.graph.node]
    with pytest.raises(Exception, match="not a registered function/op|No Op registered|vmamba"):
        _plain_session(result.trt_onnx_path)


def helper_value(attr):
    return onnx.helper.get_attribute_value(attr).decode() if attr.type == onnx.AttributeProto.STRING else \
        onnx.helper.get_attribute_value(attr)


@pytest.mark.fixtures
def test_float16_export_keeps_scan_params_float32(tmp_path, fixtures_dir):
    model, data = _fixture_model(fixtures_dir, "vmamba_v05noz_r1_ds1")
    model = apply_quartermap(model, "stage:2")
    result = E.export_onnx(model, tmp_path / "m16.onnx", precision="fp16", resolution=(64, 64))
    proto = onnx.load(str(result.onnx_path))
    init = {i.name: i.data_type for i in proto.graph.initializer}
    scan_params = {k: v for k, v in init.items() if k.rsplit(".", 1)[-1] in E.FP32_SCAN_PARAMS}
    assert scan_params and set(scan_params.values()) == {onnx.TensorProto.FLOAT}
    assert init[next(k for k in init if k.endswith("x_proj_weight"))] == onnx.TensorProto.FLOAT16
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    # the caller's model is untouched (export converts a copy)
    assert next(model.parameters()).dtype == torch.float32
    sess = _plain_session(result.onnx_path)
    tol = parity.TOLERANCES["fp16"]
    for case in data["cases"]:
        x16 = case["input"].half()
        got = sess.run(None, {E.INPUT_NAME: x16.numpy()})[0]
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float32), _torch(model, x16.float()), rtol=tol.rtol, atol=tol.atol)


@pytest.mark.fixtures
def test_polygraphy_parity_path(exported, tmp_path):
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    model, _, result = exported("vmamba_v05noz_r1_ds1", True)
    report = parity.check_parity(model, result.onnx_path, input_shape=(2, 3, 48, 40), iterations=2, save_dir=tmp_path)
    assert report.passed and report.max_abs_error <= FP32_ATOL
    # the saved files are what `polygraphy run --load-inputs/--load-outputs` reads
    feeds = load_json(report.inputs_json)
    assert isinstance(feeds, list) and len(feeds) == 2 and feeds[0][E.INPUT_NAME].shape == (2, 3, 48, 40)
    golden = RunResults.load(report.golden_json)
    (runner, iterations), = golden.items()
    assert runner == "pytorch"
    for feed, it in zip(feeds, iterations):
        np.testing.assert_allclose(it[E.OUTPUT_NAME], _torch(model, torch.from_numpy(feed[E.INPUT_NAME])), atol=1e-6)
    # a wrong model must fail the same comparison: compare the compressed export with the plain model
    plain, _, _ = exported("vmamba_v05noz_r1_ds1", False)
    bad = parity.check_parity(plain, result.onnx_path, input_shape=(1, 3, 48, 40), iterations=1)
    assert not bad.passed and bad.max_abs_error > FP32_ATOL


def _tiny_model():
    torch.manual_seed(0)
    return VMamba(depths=[1, 1, 1, 1], dims=8, num_classes=3, ssm_d_state=1, ssm_ratio=1.0, forward_type="v05_noz",
                  mlp_ratio=0.0, downsample_version="v3", patchembed_version="v2", norm_layer="ln2d").eval()


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(E.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        E.export_onnx(_tiny_model(), target, resolution=(32, 32), trt_onnx=True)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary


def test_failed_checks_keep_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous export")

    def failing_check(*args, **kwargs):
        raise onnx.checker.ValidationError("simulated checker failure")

    monkeypatch.setattr(E.onnx.checker, "check_model", failing_check)
    with pytest.raises(E.ExportError, match="simulated checker failure"):
        E.export_onnx(_tiny_model(), target, resolution=(32, 32))
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_static_export_and_folded_layers_have_no_custom_nodes(tmp_path):
    model = apply_vmeanba(_tiny_model(), "all", folded=True)
    result = E.export_onnx(model, tmp_path / "s.onnx", resolution=(40, 32), dynamic=False, batch=2)
    assert result.custom_nodes == {} and result.dynamic_axes == {}
    proto = onnx.load(str(result.onnx_path))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 40, 32]
    assert all(form.startswith("VMeanba folded") for form in E.layer_forms(model).values())
    x = torch.randn(2, 3, 40, 32)
    got = _plain_session(result.onnx_path).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, _torch(model, x), rtol=0, atol=FP32_ATOL)
    umask = os.umask(0)
    os.umask(umask)
    assert (result.onnx_path.stat().st_mode & 0o777) == (0o666 & ~umask)  # not mkstemp's 0600


@pytest.mark.slow
def test_vmamba_tiny_s1l8_node_count_and_parity(tmp_path):
    """The full VMamba-T s1l8 at 224 (random weights): < 2,000 nodes, parity within 1e-4."""
    from exporter.models import create_model

    torch.manual_seed(0)
    model = create_model("vmamba_tiny_s1l8").eval()
    result = E.export_onnx(model, tmp_path / "t.onnx")
    assert result.node_count < 2000
    assert result.custom_nodes == {"SS2DScan": 14}
    assert result.dynamic_axes == {0: "batch", 2: "height", 3: "width"}
    x = torch.randn(1, 3, 224, 224)
    got = _plain_session(result.onnx_path).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, _torch(model, x), rtol=0, atol=FP32_ATOL)


def test_dynamic_height_width_falls_back_to_static_with_a_note(tmp_path, monkeypatch):
    """If the exporter cannot keep H/W dynamic, the export still succeeds with dynamic batch only
    and says so (simulated: the real models all export with dynamic H/W)."""
    real = E._torch_export

    def no_dynamic_hw(model, example, dynamic_axes, opset, verbose):
        if 2 in dynamic_axes:
            raise RuntimeError("Constraints violated (height)! simulated")
        return real(model, example, dynamic_axes, opset, verbose)

    monkeypatch.setattr(E, "_torch_export", no_dynamic_hw)
    result = E.export_onnx(_tiny_model(), tmp_path / "f.onnx", resolution=(32, 48))
    assert result.dynamic_axes == {0: "batch"}
    assert len(result.notes) == 1 and "fell back to static 32x48" in result.notes[0] and "simulated" in result.notes[0]
    dims = onnx.load(str(result.onnx_path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[2:]] == [32, 48]
