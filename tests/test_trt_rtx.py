"""Real TensorRT-family builds on the CPU: TensorRT-RTX 1.7 parses and builds our exports.

TensorRT-RTX's builder and ONNX parser (PyPI: tensorrt-rtx-cu13-libs, tensorrt-rtx-cu13-bindings,
both in the ``test`` extra) run without a GPU: CPU-only ahead-of-time build is its default. Every
build here goes through ``exporter.engine.build_engine`` in a child process, so that an abort
inside TensorRT fails one test with its output instead of killing the test session.

- ``trt_rtx`` tests (CI): the exports with function bodies (no plugin library) parse with 0 errors
  and 0 warnings of the two kinds the parser printed on older exports (duplicate node names,
  Reshape 0-placeholders), and build with a dynamic shape profile.
- ``trt`` tests (need the TensorRT C++ headers for the plugin library; CI has none): our IPluginV3
  plugins inside the TensorRT-RTX parser and builder; the abort that used to stop them and why.

No engine is executed: the RTX runtime needs a supported GPU (it refuses sm_90) and CI has none.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from exporter.engine import CHECKED_WARNINGS, PLUGIN_DOMAIN, RTX_UNVERSIONED_NAME

REPO = Path(__file__).resolve().parents[1]
PLUGIN_KINDS = ("SS2DScan", "VMeanbaScan", "QuarterMapDown", "QuarterMapUp")


def _rtx_skip_reason() -> str | None:
    for mod in ("tensorrt_rtx_libs", "tensorrt_rtx_bindings"):
        if importlib.util.find_spec(mod) is None:
            return (f"TensorRT-RTX not installed ({mod} missing): pip install tensorrt-rtx-cu13-libs==1.7.1.116 "
                    "tensorrt-rtx-cu13-bindings==1.7.1.116 (part of the test extra)")
    return None


@pytest.fixture(scope="session")
def rtx() -> None:
    reason = _rtx_skip_reason()
    if reason:
        pytest.skip(reason)


def build_in_child(onnx_path: Path, engine_path: Path | None, profile: str | None = None,
                   plugin_library: Path | None = None, timeout: int = 600) -> dict:
    """exporter.engine.build_engine in a child process; returns EngineBuildResult.as_dict() plus
    the checked warnings' texts. Fails the test (with the child's output) on any error or abort."""
    script = (
        "import json, sys\n"
        "from exporter.engine import ShapeProfile, build_engine\n"
        "a = json.loads(sys.argv[1])\n"
        "r = build_engine(a['onnx'], a['engine'], profiles=[ShapeProfile.parse(a['profile'])] if a['profile'] else [],"
        " plugin_library=a['plugin'])\n"
        "d = r.as_dict(); d['errors_text'] = r.errors\n"
        "d['checked_texts'] = [w for w in r.warnings if any(s in w for s in " + repr(tuple(CHECKED_WARNINGS.values())) + ")][:5]\n"
        "print('RESULT ' + json.dumps(d))\n"
    )
    args = {"onnx": str(onnx_path), "engine": str(engine_path) if engine_path else None, "profile": profile,
            "plugin": str(plugin_library) if plugin_library else None}
    env = dict(os.environ, PYTHONPATH=str(REPO), VMAMBA_TRT_PLUGINS_QUIET="1")
    r = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True,
                       env=env, timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, (f"build of {onnx_path.name} exited {r.returncode}:\n"
                                         f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ==================================================================================== plugins (trt)
@pytest.fixture(scope="module")
def plugin_library(rtx) -> Path:
    from test_trt_registry import _find, _trt_include_dir, build_plugin_targets

    prebuilt = os.environ.get("VMAMBA_TRT_PLUGIN_BUILD_DIR")
    build = Path(prebuilt) if prebuilt else REPO / "build/trt_registry_test"
    if not prebuilt:
        include = _trt_include_dir()
        if include is None:
            pytest.skip("TensorRT headers not found: run trt_plugins_cpp/tools/get_trt_headers.sh or set TensorRT_ROOT")
        build_plugin_targets(build, include, ["vmamba_trt_plugins"])
    lib = _find(build, "libvmamba_trt_plugins.so")
    assert lib is not None, f"libvmamba_trt_plugins.so not built in {build}"
    return lib


def _one_node_model(path: Path) -> Path:
    """QuarterMapDown (stride 2, keep 1) on a 1x8x6x6 input, as the exporter writes it in a .trt.onnx."""
    node = helper.make_node("QuarterMapDown", ["x"], ["y"], domain=PLUGIN_DOMAIN, name="qmd", stride=2, keep=1,
                            plugin_version="1", plugin_namespace="")
    graph = helper.make_graph([node], "one_plugin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(PLUGIN_DOMAIN, 1)]),
              str(path))
    return path


@pytest.mark.trt
def test_rtx_wheel_parser_aborts_without_the_unversioned_library_name(plugin_library, tmp_path):
    """The cause of the abort, reproduced without exporter.engine's fix: after creating an IPluginV3
    the RTX parser dlopen()s "libtensorrt_rtx.so" (getPrivateApi_INTERNAL); the wheel has only
    libtensorrt_rtx.so.1, the failed load throws inside a noexcept function: std::terminate."""
    libs = Path(importlib.util.find_spec("tensorrt_rtx_libs").submodule_search_locations[0])
    if (libs / RTX_UNVERSIONED_NAME).exists():
        pytest.skip(f"this TensorRT-RTX wheel ships {RTX_UNVERSIONED_NAME}: the abort cannot happen")
    model = _one_node_model(tmp_path / "qmd.trt.onnx")
    script = ("import sys, tensorrt_rtx_bindings as trt\n"
              "log = trt.Logger(trt.Logger.WARNING)\n"
              "assert trt.get_plugin_registry().load_library(sys.argv[1]) is not None\n"
              "net = trt.Builder(log).create_network(0)\n"
              "print('parsed', trt.OnnxParser(net, log).parse_from_file(sys.argv[2]), flush=True)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    r = subprocess.run([sys.executable, "-c", script, str(plugin_library), str(model)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == -6 and "terminate called" in r.stderr and "parsed" not in r.stdout, (
        f"expected the abort (SIGABRT) that exporter.engine works around; exit {r.returncode}\n{r.stdout}\n{r.stderr}")


@pytest.mark.trt
def test_one_plugin_node_parses_and_builds(plugin_library, tmp_path):
    model = _one_node_model(tmp_path / "qmd.trt.onnx")
    r = build_in_child(model, tmp_path / "qmd.engine", plugin_library=plugin_library)
    assert r["errors_text"] == []
    assert r["num_layers"] == 1 and r["plugin_nodes"] == 1
    # getOutputShapes through TensorRT's real IExprBuilder: keep 1 of every 2 rows/columns of 6
    assert r["output_shapes"] == {"y": [1, 8, 3, 3]}
    engine = (tmp_path / "qmd.engine").read_bytes()
    assert len(engine) == r["engine_bytes"] > 0
    # getFieldsToSerialize went into the engine: plugin type and attribute names are in the plan
    for token in (b"QuarterMapDown", b"stride", b"keep"):
        assert token in engine


@pytest.fixture(scope="module")
def all_plugins_trt_onnx(tmp_path_factory) -> Path:
    """The digits VMamba with literal VMeanba on one block and QuarterMap every:3: all four kinds."""
    from exporter.compress import apply_quartermap, apply_vmeanba
    from exporter.export.onnx_export import export_onnx
    from exporter.samples_data import load_digits_model

    model = apply_quartermap(apply_vmeanba(load_digits_model("vmamba"), ["layers.1.blocks.0"], folded=False), "every:3")
    out = tmp_path_factory.mktemp("plugins") / "digits_all.onnx"
    result = export_onnx(model, out, resolution=(32, 32), trt_onnx=True)
    assert set(result.custom_nodes) == set(PLUGIN_KINDS), result.custom_nodes
    return result.trt_onnx_path


@pytest.mark.trt
def test_all_four_plugin_kinds_parse_and_build_with_a_dynamic_profile(plugin_library, all_plugins_trt_onnx, tmp_path):
    model = onnx.load(str(all_plugins_trt_onnx))
    kinds = {n.op_type for n in model.graph.node if n.domain == PLUGIN_DOMAIN}
    assert kinds == set(PLUGIN_KINDS) and not model.functions
    r = build_in_child(all_plugins_trt_onnx, tmp_path / "digits_all.engine", profile="x:1x3x32x32,4x3x32x32,8x3x64x64",
                       plugin_library=plugin_library)
    assert r["errors_text"] == [] and r["checked_warnings"] == {k: 0 for k in CHECKED_WARNINGS}
    assert r["plugin_nodes"] == sum(n.domain == PLUGIN_DOMAIN for n in model.graph.node)
    assert r["output_shapes"] == {model.graph.output[0].name: [-1, 10]}
    engine = (tmp_path / "digits_all.engine").read_bytes()
    for kind in PLUGIN_KINDS:  # each plugin's type went into the plan (getFieldsToSerialize)
        assert kind.encode() in engine, kind
