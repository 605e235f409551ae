"""ONNX export of feature backbones: four named outputs feat0..feat3, dynamic batch / height / width,
and ONNX Runtime (stock, CPU, no plugin) matching PyTorch at shapes other than the export shape,
for a compressed backbone (VMeanba + QuarterMap) of the v2 line and an uncompressed v0 backbone.

Small configurations (the golden fixtures of tests/test_backbone.py, dims 8..64) keep CPU time low.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from exporter.compress import apply_quartermap, apply_vmeanba
from exporter.export import export_onnx
from exporter.models.vmamba import VMambaBackbone
from exporter.verify.parity import check_parity
from plugins.contract import MODEL_TOLERANCES

DATA = Path(__file__).resolve().parent / "data"
FEATURES = ["feat0", "feat1", "feat2", "feat3"]


@pytest.fixture(scope="module")
def golden():
    return torch.load(DATA / "backbone_golden.pt", weights_only=True)


def _backbone(golden, name) -> VMambaBackbone:
    fixture = golden["fixtures"][name]
    model = VMambaBackbone(**fixture["config"]).eval()
    model.load_state_dict(fixture["state_dict"], strict=True)
    return model


def _ort_maps(path, x: torch.Tensor) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"x": x.numpy()})))


def _check_graph(path):
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == FEATURES
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    for out in model.graph.output:  # batch, and sizes derived from height / width: nothing fixed
        shape = out.type.tensor_type.shape.dim
        assert shape[0].dim_param == "batch" and "height" in shape[2].dim_param and "width" in shape[3].dim_param
    return model


@pytest.fixture(scope="module")
def compressed_export(golden, tmp_path_factory):
    model = apply_quartermap(apply_vmeanba(_backbone(golden, "backbone_v05noz_ln2d"),
                                           "layers.2.blocks.0,layers.3.blocks.0"), "layers.0.blocks.0")
    path = tmp_path_factory.mktemp("bb") / "backbone.onnx"
    result = export_onnx(model, path, resolution=(64, 64))
    return model, path, result


def test_compressed_backbone_exports_four_dynamic_outputs(compressed_export):
    model, path, result = compressed_export
    assert not result.notes  # height/width stayed dynamic
    assert result.dynamic_axes == {0: "batch", 2: "height", 3: "width"}
    assert result.custom_nodes == {"QuarterMapDown": 1, "QuarterMapUp": 1, "SS2DScan": 3}
    _check_graph(path)


def test_compressed_backbone_matches_pytorch_in_ort_at_another_shape(compressed_export):
    """Exported at 1x3x64x64, run at 2x3x96x128."""
    model, path, _ = compressed_export
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = model(x)
    maps = _ort_maps(path, x)
    tol = MODEL_TOLERANCES["fp32"]
    for name, ref in zip(FEATURES, reference):
        assert maps[name].shape == tuple(ref.shape)
        np.testing.assert_allclose(maps[name], ref.numpy(), atol=tol.atol, rtol=tol.rtol, err_msg=name)


def test_backbone_parity_through_polygraphy(compressed_export, tmp_path):
    model, path, _ = compressed_export
    report = check_parity(model, path, input_shape=(1, 3, 96, 128), iterations=1, save_dir=tmp_path)
    assert report.passed and report.max_abs_error <= MODEL_TOLERANCES["fp32"].atol
    from polygraphy.comparator import RunResults

    golden_outputs = RunResults.load(report.golden_json)[0][1][0]
    assert sorted(golden_outputs.keys()) == FEATURES


def test_v0_backbone_export_at_odd_stage_sizes(golden, tmp_path):
    """v0 line (channel-last, PatchMerging pads odd sizes): exported at 64x64, run at 112x80 (stage 2
    is 7x5) against the official feature maps of the golden data."""
    model = _backbone(golden, "backbone_v0_ln")
    path = tmp_path / "v0.onnx"
    result = export_onnx(model, path, resolution=(64, 64))
    assert not result.notes
    _check_graph(path)
    x, official = golden["inputs"][1], golden["fixtures"]["backbone_v0_ln"]["outputs"][1]
    maps = _ort_maps(path, x)
    for name, ref in zip(FEATURES, official):
        assert np.abs(maps[name] - ref.numpy()).max() <= 1e-4, name
