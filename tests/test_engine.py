"""exporter.engine: the builder choice, shape-profile options, atomic writes and the documented
errors. Builds use TensorRT-RTX on tiny graphs (skips without its wheels); the real exports are
built in tests/test_export_consumers.py and the plugin graphs in tests/test_trt_rtx.py."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from exporter import engine as E
from test_trt_rtx import _rtx_skip_reason

REPO = Path(__file__).resolve().parents[1]


def _relu_model(path: Path, dims=("batch", 3, "h", "w")) -> Path:
    """x -> Relu -> Reshape(B, -1) -> y: dynamic dims, and a Reshape so a bad profile can fail."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Constant", [], ["s"], value=helper.make_tensor("s_v", TensorProto.INT64, [2], [0, 12])),
             helper.make_node("Reshape", ["r", "s"], ["y"])]
    graph = helper.make_graph(nodes, "relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


# ------------------------------------------------------------------------------------ no builder needed
def test_shape_profile_parse():
    p = E.ShapeProfile.parse("x:1x3x224x224,8x3x224x224,32x3x256x256")
    assert (p.input, p.min, p.opt, p.max) == ("x", (1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 256, 256))
    assert E.ShapeProfile.parse("x:2x3x32x32").min == E.ShapeProfile.parse("x:2x3x32x32").max == (2, 3, 32, 32)
    for bad in ("1x3x224x224", "x:1x3,2x3", "x:1x3x2,aXb,1x3x2", "x:4x3x2,2x3x2,8x3x2", "x:0x3x2"):
        with pytest.raises(E.EngineError) as exc:
            E.ShapeProfile.parse(bad)
        assert exc.value.exit_code == E.EXIT_ENGINE


def test_missing_or_unreadable_onnx_is_an_engine_error(tmp_path):
    with pytest.raises(E.EngineError, match="not found: export it first"):
        E.build_engine(tmp_path / "nope.onnx", tmp_path / "nope.engine")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(E.EngineError, match="not a readable ONNX model"):
        E.build_engine(junk, tmp_path / "junk.engine")
    assert not (tmp_path / "nope.engine").exists() and not (tmp_path / "junk.engine").exists()


def test_dynamic_input_without_a_profile_names_the_input_and_the_fix(tmp_path):
    model = _relu_model(tmp_path / "relu.onnx")
    with pytest.raises(E.EngineError, match=r"input 'x' has dynamic dims \['batch', 3, 'h', 'w'\].*ShapeProfile.parse"):
        E.build_engine(model, tmp_path / "relu.engine")
    with pytest.raises(E.EngineError, match="'y', which is not an input"):
        E.build_engine(model, None, profiles=[E.ShapeProfile.parse("x:1x3x2x2"), E.ShapeProfile.parse("y:1x12")])


def test_unknown_builder_and_no_builder_errors():
    with pytest.raises(E.EngineError, match="unknown builder 'trt'"):
        E.import_builder("trt")
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("a 'tensorrt' module is installed here; the no-builder path cannot be shown with it")
    with pytest.raises(E.NoBuilderError) as exc:
        E.import_builder("tensorrt")
    assert exc.value.exit_code == E.EXIT_NO_BUILDER == 7
    assert "pip install tensorrt-rtx-cu13-libs==1.7.1.116" in str(exc.value)


def test_no_builder_at_all_in_a_clean_process(tmp_path):
    """With neither module importable (both hidden), build_engine raises NoBuilderError (exit code 7)."""
    model = _relu_model(tmp_path / "relu.onnx", dims=(1, 3, 2, 2))
    script = (
        "import sys\n"
        "class Hide:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if name.split('.')[0].startswith('tensorrt'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (hidden by the test)')\n"
        "sys.meta_path.insert(0, Hide)\n"
        "from exporter.engine import build_engine, NoBuilderError\n"
        "try:\n"
        "    build_engine(sys.argv[1], sys.argv[1] + '.engine')\n"
        "except NoBuilderError as e:\n"
        "    print('NOBUILDER', e.exit_code)\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(model)], capture_output=True, text=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert "NOBUILDER 7" in r.stdout, r.stdout + r.stderr
    assert not Path(str(model) + ".engine").exists()


# ------------------------------------------------------------------------------------ TensorRT-RTX builds
@pytest.fixture(scope="module")
def rtx():
    reason = _rtx_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.trt_rtx
def test_build_writes_the_engine_atomically_and_a_failed_build_keeps_the_previous_file(rtx, tmp_path):
    model = _relu_model(tmp_path / "relu.onnx")
    out = tmp_path / "relu.engine"
    script = (
        "import sys, json\n"
        "from exporter.engine import build_engine, ShapeProfile, EngineError\n"
        "r = build_engine(sys.argv[1], sys.argv[2], profiles=[ShapeProfile.parse('x:1x3x2x2,2x3x2x2,4x3x2x2')])\n"
        "print('OK', json.dumps(r.as_dict()))\n"
        "try:\n"  # 3x3x3 = 27 elements cannot be reshaped to (B, 12): the builder rejects the profile
        "    build_engine(sys.argv[1], sys.argv[2], profiles=[ShapeProfile.parse('x:1x3x3x3')])\n"
        "except EngineError as e:\n"
        "    print('FAILED', e.exit_code)\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(model), str(out)], capture_output=True, text=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    ok = [ln for ln in r.stdout.splitlines() if ln.startswith("OK ")]
    assert ok and "FAILED 8" in r.stdout, r.stdout + r.stderr
    import json

    result = json.loads(ok[0][3:])
    assert result["builder"] == "tensorrt_rtx" and result["output_shapes"] == {"y": [-1, 12]}
    assert result["profiles"] == [{"input": "x", "min": [1, 3, 2, 2], "opt": [2, 3, 2, 2], "max": [4, 3, 2, 2]}]
    assert out.stat().st_size == result["engine_bytes"] > 0  # the first engine survived the failed build
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relu.engine", "relu.onnx"]  # no temporary left


@pytest.mark.trt_rtx
def test_plugin_graph_without_a_plugin_library_is_refused_with_the_fix(rtx, tmp_path, monkeypatch):
    node = helper.make_node("QuarterMapDown", ["x"], ["y"], domain=E.PLUGIN_DOMAIN, stride=2, keep=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "qmd.trt.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                      helper.make_opsetid(E.PLUGIN_DOMAIN, 1)]), str(path))
    monkeypatch.setenv("VMAMBA_TRT_PLUGIN_DIR", str(tmp_path))
    monkeypatch.setattr("plugins.trt.REPO", tmp_path)  # so find_plugin_library finds nothing
    with pytest.raises(E.EngineError, match="1 plugin node.*without a function body.*required"):
        E.build_engine(path, tmp_path / "qmd.engine")
    assert not (tmp_path / "qmd.engine").exists()


def test_runtime_support_says_in_plain_words_where_an_engine_cannot_run():
    h200 = E.runtime_support("tensorrt_rtx", capability=(9, 0))
    assert not h200.can_run and "compute capability 9.0" in h200.reason and "not executed" in h200.reason
    for ok in ((8, 6), (8, 9), (12, 0), (13, 0)):
        assert E.runtime_support("tensorrt_rtx", capability=ok).can_run, ok
    assert E.runtime_support("tensorrt", capability=(9, 0)).can_run
    import torch

    if not torch.cuda.is_available():
        here = E.runtime_support("tensorrt_rtx")
        assert not here.can_run and "no CUDA GPU" in here.reason


@pytest.mark.trt_rtx
def test_without_the_metapackage_the_bindings_serve_as_tensorrt_rtx(rtx):
    """Polygraphy imports ``tensorrt_rtx``; with only the two wheels installed, import_builder makes
    that name the bindings (what the no-deps metapackage would re-export)."""
    script = (
        "import sys\n"
        "class Hide:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if name == 'tensorrt_rtx':\n"
        "            raise ModuleNotFoundError('No module named tensorrt_rtx (hidden by the test)')\n"
        "sys.meta_path.insert(0, Hide)\n"
        "from exporter.engine import import_builder\n"
        "b = import_builder('tensorrt_rtx')\n"
        "sys.meta_path.remove(Hide)\n"
        "import tensorrt_rtx, tensorrt_rtx_bindings\n"
        "print('ALIAS', b.module is tensorrt_rtx_bindings is tensorrt_rtx, b.plugin_import_safe)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert "ALIAS True True" in r.stdout, r.stdout + r.stderr
