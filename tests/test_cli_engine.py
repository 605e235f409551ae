"""vm-export --engine and its Python API (exporter.pipeline.build_engine_step): a serialized
TensorRT engine built in the pipeline, staged like every other output, with an engine section in
the report; bad engine options and a missing builder give documented exit codes and write nothing.

Real builds use TensorRT-RTX on the CPU (``trt_rtx``: skipped with the reason where its wheels are
absent) and run vm-export in a child process, so an abort inside TensorRT fails one test instead of
the session. The plugin-library build also needs the TensorRT headers (``trt``). No engine is
executed anywhere: there is no GPU here, and TensorRT-RTX refuses the H200 (sm_90).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from exporter import cli, pipeline
from exporter import engine as E
from test_cli_bad_input import _fail, _snapshot, work  # noqa: F401  (work is a fixture)
from test_trt_rtx import _rtx_skip_reason, plugin_library, rtx  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]


def _vm_export(cwd: Path, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), VMAMBA_TRT_PLUGINS_QUIET="1")
    return subprocess.run([sys.executable, "-m", "exporter.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def _no_leftovers(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if p.name.startswith((".vm-export-staging-", ".m.engine."))]
    assert not left, left


# ------------------------------------------------------------------------------------ no builder needed
def test_help_documents_the_engine_options_and_every_exit_code():
    text = cli.build_parser().format_help()
    for flag in ("--engine PATH", "--engine-shapes MIN,OPT,MAX", "--engine-builder", "--engine-workspace",
                 "--engine-plugins"):
        assert flag in text, flag
    codes = sorted(pipeline.EXIT_CODES)
    assert len(codes) == len(set(codes)) and E.EXIT_NO_BUILDER in codes and E.EXIT_ENGINE in codes
    assert pipeline.NoBuilderFailure.exit_code == E.NoBuilderError.exit_code == E.EXIT_NO_BUILDER == 7
    assert pipeline.EngineFailure.exit_code == E.EngineError.exit_code == E.EXIT_ENGINE == 8
    assert pipeline.OutputFailure.exit_code == pipeline.EXIT_OUTPUT == 6
    for code, meaning in pipeline.EXIT_CODES.items():
        assert f"\n  {code:<3d} {meaning}" in cli.EPILOG


def test_shape_options_and_the_default_profile():
    p = pipeline.parse_engine_shapes("1x3x224x224,8x3x224x224,32x3x256x256")
    assert (p.input, p.min, p.opt, p.max) == ("x", (1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 256, 256))
    fixed = pipeline.parse_engine_shapes("4x3x32x32")
    assert fixed.min == fixed.opt == fixed.max == (4, 3, 32, 32)
    d = pipeline.default_engine_profile((2, 3, 48, 40))
    assert (d.min, d.opt, d.max) == ((1, 3, 48, 40), (2, 3, 48, 40), (8, 3, 48, 40))
    assert pipeline.default_engine_profile((16, 3, 32, 32)).max == (16, 3, 32, 32)
    assert cli._size("2G") == 2 << 30 and cli._size("512MiB") == 512 << 20 and cli._size("4096") == 4096


def test_an_engine_that_cannot_run_here_is_not_executed_and_says_why():
    """verify's engine runners: none where runtime_support says no, or where the --verify input lies
    outside the profile; the note is what the report and the warning print."""
    profile = E.ShapeProfile.parse("x:1x3x32x32,2x3x32x32,8x3x32x32")
    result = E.EngineBuildResult(path=Path("m.engine"), builder="tensorrt_rtx", builder_version="1.7", num_layers=1,
                                 engine_bytes=1, parse_seconds=0, build_seconds=0, plugin_library=None,
                                 plugin_nodes=0, profiles=[profile], precision="fp32")
    h200 = pipeline.EngineStep(result, Path("m.onnx"), E.runtime_support("tensorrt_rtx", capability=(9, 0)))
    assert pipeline.engine_runners(h200, (1, 3, 32, 32)) == ()
    assert not h200.executed and h200.as_dict()["executed_text"].startswith("no (TensorRT-RTX cannot run engines on "
                                                                            "this GPU (compute capability 9.0")
    ada = pipeline.EngineStep(result, Path("m.onnx"), E.runtime_support("tensorrt_rtx", capability=(8, 9)))
    assert pipeline.engine_runners(ada, (1, 3, 64, 64)) == ()
    assert "outside the engine's shape profile" in ada.note and "not executed" in ada.as_dict()["executed_text"]


# ------------------------------------------------------------------------------------ bad input (in-process)
@pytest.mark.parametrize("argv,problem,fix", [
    (["--engine-shapes", "1x3x32"], "--engine-shapes '1x3x32'", "4 dims BxCxHxW"),
    (["--engine-shapes", "8x3x32x32,1x3x32x32,16x3x32x32"], "need 0 < min <= opt <= max", "min=(8, 3, 32, 32)"),
    (["--engine-shapes", "big"], "--engine-shapes 'big'", "MIN,OPT,MAX"),
    (["--engine-shapes", "x:1x3x32x32"], "shapes only", "1x3x224x224"),
    (["--engine-shapes", "1x3x32x32", "--static"], "needs a dynamic export", "drop --static"),
    (["--engine-workspace", "lots"], "--engine-workspace", "such as 2G"),
    (["--engine-plugins", "no/such/lib.so"], "no/such/lib.so: no such file", "docs/PLUGINS.md"),
])
def test_bad_engine_options_exit_2(work, capsys, argv, problem, fix):
    _fail(work, capsys, ["-o", "out/m.onnx", "--engine", "out/m.engine", *argv, "--quiet"], cli.EXIT_BAD_ARGS,
          problem, fix)


def test_engine_options_without_engine_are_refused(work, capsys):
    _fail(work, capsys, ["-o", "out/m.onnx", "--engine-shapes", "1x3x32x32", "--quiet"], cli.EXIT_BAD_ARGS,
          "--engine-shapes does nothing without --engine", "add --engine PATH")


def test_engine_on_the_onnx_output_is_refused(work, capsys):
    _fail(work, capsys, ["-o", "out/m.onnx", "--engine", "out/m.onnx", "--quiet"], cli.EXIT_BAD_ARGS,
          "the same file", "give each output its own path")


def test_read_only_engine_folder_exits_6(work, capsys):
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _fail(work, capsys, ["-o", "out/m.onnx", "--engine", "ro/m.engine", "--quiet"], cli.EXIT_OUTPUT,
              "--engine ro/m.engine: folder ro is not writable", "choose another folder")
    finally:
        ro.chmod(0o755)


def test_no_builder_exits_7_before_any_work_and_names_the_fix(work, capsys, monkeypatch):
    (work / "out/m.engine").write_bytes(b"OLD ENGINE")

    def no_builder(prefer=None):
        raise E.NoBuilderError("no TensorRT builder is installed (simulated by the test). Install TensorRT-RTX, "
                               "which builds on a CPU-only machine: pip install tensorrt-rtx-cu13-libs==1.7.1.116 "
                               "tensorrt-rtx-cu13-bindings==1.7.1.116")

    monkeypatch.setattr(E, "import_builder", no_builder)
    exported = []
    monkeypatch.setattr(pipeline, "export", lambda *a, **k: exported.append(a))
    _fail(work, capsys, ["-o", "out/m.onnx", "--engine", "out/m.engine", "--report", "out/r.json", "--quiet"],
          pipeline.EXIT_NO_BUILDER, "no engine builder: no TensorRT builder is installed",
          "pip install tensorrt-rtx-cu13-libs==1.7.1.116")
    assert exported == []  # refused before the export


@pytest.mark.parametrize("failure,code,problem,fix", [
    (E.EngineError, pipeline.EXIT_ENGINE, "engine build failed: the tensorrt_rtx builder failed on out/m.onnx",
     "simulated"),
    (KeyboardInterrupt, pipeline.EXIT_INTERRUPTED, "interrupted", "nothing was written"),
])
def test_a_failed_or_interrupted_engine_build_writes_nothing(work, capsys, monkeypatch, failure, code, problem, fix):
    """After the export (staged), the build half-writes the engine and fails (exit 8) or is stopped by
    Ctrl-C (130): every old output is byte-identical, nothing new, no temp file."""
    (work / "out/m.engine").write_bytes(b"OLD ENGINE")
    monkeypatch.setattr(E, "import_builder", lambda prefer=None: None)  # the up-front check passes
    calls = []

    def failing_build(onnx_path, engine_path, **kwargs):
        calls.append((Path(onnx_path), kwargs["profiles"]))
        assert Path(onnx_path).is_file() and Path(onnx_path).parent.name.startswith(".vm-export-staging-")
        assert Path(engine_path).parent == Path(onnx_path).parent  # staged beside the ONNX file
        Path(engine_path).write_bytes(b"HALF AN ENGINE")
        raise failure(f"the tensorrt_rtx builder failed on {onnx_path}: simulated by the test")

    monkeypatch.setattr(E, "build_engine", failing_build)
    message = _fail(work, capsys, ["-o", "out/m.onnx", "--engine", "out/m.engine", "--report", "out/r.json",
                                   "--quiet"], code, problem, fix)
    assert ".vm-export-staging-" not in message  # the staged path is shown as the final one
    [(_, profiles)] = calls
    assert [(p.min, p.opt, p.max) for p in profiles] == [((1, 3, 32, 32), (1, 3, 32, 32), (8, 3, 32, 32))]


# ------------------------------------------------------------------------------------ real builds (TensorRT-RTX)
@pytest.mark.trt_rtx
def test_vm_export_engine_on_the_digits_default(rtx, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/m.engine").write_bytes(b"OLD ENGINE")  # replaced at the end
    r = _vm_export(tmp_path, "-o", "out/m.onnx", "--engine", "out/m.engine", "--engine-shapes",
                   "1x3x32x32,2x3x32x32,4x3x32x32", "--engine-workspace", "256M", "--verify", "--latency-runs", "0",
                   "--report", "out/r.json", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    engine_file = tmp_path / "out/m.engine"
    report = json.loads((tmp_path / "out/r.json").read_text())
    eng = report["engine"]
    assert eng["builder"] in E.BUILDERS and eng["builder_version"]
    assert engine_file.stat().st_size == eng["engine_bytes"] > 1_000_000
    assert eng["errors"] == 0 and eng["checked_warnings"] == {k: 0 for k in E.CHECKED_WARNINGS}
    assert eng["profiles"] == [{"input": "x", "min": [1, 3, 32, 32], "opt": [2, 3, 32, 32], "max": [4, 3, 32, 32]}]
    assert eng["source_onnx"] == "out/m.onnx" and eng["plugin_library"] is None
    model = onnx.load(str(tmp_path / "out/m.onnx"))
    assert eng["plugin_nodes"] == sum(n.domain == E.PLUGIN_DOMAIN for n in model.graph.node) == 8
    assert eng["num_layers"] > len(model.graph.node)  # the function bodies became layers
    assert eng["output_shapes"] == {"logits": [-1, 10]}
    assert report["files"]["engine (serialized TensorRT engine)"] == "out/m.engine"
    assert report["parity"]["passed"]
    if not torch.cuda.is_available():
        assert eng["executed"] is False and eng["executed_text"] == ("no (no CUDA GPU is visible here, so the engine "
                                                                     "cannot be executed)")
        assert "vm-export: warning: --verify: the engine out/m.engine was not executed" in r.stderr
    md = (tmp_path / "out/r.md").read_text()
    assert "## Engine" in md and f"engine executed: {eng['executed_text']}" in md
    assert "engine executed:" in r.stdout  # the summary
    _no_leftovers(tmp_path)


@pytest.mark.trt_rtx
def test_where_the_gpu_could_run_it_verify_gets_polygraphys_trt_runner_on_the_rtx_module(rtx, tmp_path):
    """engine_runners with a runtime that says yes (pretended: no GPU here runs these engines): a
    Polygraphy TrtRunner whose TensorRT module is the TensorRT-RTX one. Constructed, never activated."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from exporter import engine as E, pipeline\n"
        "b = E.import_builder('tensorrt_rtx')\n"
        "p = Path(sys.argv[1]); p.write_bytes(b'engine bytes')\n"
        "prof = E.ShapeProfile.parse('x:1x3x32x32,2x3x32x32,8x3x32x32')\n"
        "r = E.EngineBuildResult(path=p, builder='tensorrt_rtx', builder_version=b.version, num_layers=1,"
        " engine_bytes=1, parse_seconds=0, build_seconds=0, plugin_library=None, plugin_nodes=0, profiles=[prof],"
        " precision='fp32')\n"
        "runners = pipeline.engine_runners(pipeline.EngineStep(r, p, E.RuntimeSupport(True, 'pretend')), (2, 3, 32, 32))\n"
        "import polygraphy.backend.trt.runner as m\n"
        "print('RUNNERS', [type(x).__name__ for x in runners], runners[0].name, m.trt.__name__,"
        " m.trt.Builder is b.module.Builder)\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m.engine")], capture_output=True, text=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert "RUNNERS ['TrtRunner'] tensorrt_rtx tensorrt_rtx True" in r.stdout, r.stdout + r.stderr


@pytest.mark.trt_rtx
def test_build_engine_step_is_the_python_api(rtx, tmp_path):
    """pipeline.build_engine_step on a small ONNX file (default profile from the example shape)."""
    from test_engine import _relu_model

    model = _relu_model(tmp_path / "relu.onnx")
    script = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from exporter.pipeline import Options, build_engine_step\n"
        "step = build_engine_step(Options(engine=sys.argv[2]), Path(sys.argv[1]), Path(sys.argv[2]), (2, 3, 2, 2),"
        " dynamic=True)\n"
        "print('STEP ' + json.dumps(step.as_dict()))\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(model), str(tmp_path / "relu.engine")], capture_output=True,
                       text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("STEP ")]
    assert lines, r.stdout + r.stderr
    step = json.loads(lines[0][5:])
    assert step["profiles"] == [{"input": "x", "min": [1, 3, 2, 2], "opt": [2, 3, 2, 2], "max": [8, 3, 2, 2]}]
    assert (tmp_path / "relu.engine").stat().st_size == step["engine_bytes"] > 0
    assert step["executed"] is False and step["output_shapes"] == {"y": [-1, 12]}


@pytest.mark.trt_rtx
def test_trt_onnx_without_a_plugin_library_builds_from_the_function_bodies_and_says_so(rtx, tmp_path):
    """--static --trt-onnx --engine with no plugin library to be found (plugins.trt.REPO pointed at an
    empty folder): the engine comes from the .onnx, with no shape profile, and a warning says why."""
    empty = tmp_path / "no_plugins"
    empty.mkdir()
    script = ("import sys\nfrom pathlib import Path\nimport plugins.trt\nplugins.trt.REPO = Path(sys.argv[1])\n"
              "from exporter.cli import main\nsys.exit(main(sys.argv[2:]))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMAMBA_TRT_PLUGIN")}
    env.update(PYTHONPATH=str(REPO), VMAMBA_TRT_PLUGIN_DIR=str(empty))
    r = subprocess.run([sys.executable, "-c", script, str(empty), "-o", "out/m.onnx", "--static", "--trt-onnx",
                        "--engine", "out/m.engine", "--report", "out/r.json", "--quiet"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    eng = json.loads((tmp_path / "out/r.json").read_text())["engine"]
    assert eng["source_onnx"] == "out/m.onnx" and eng["plugin_library"] is None and eng["profiles"] == []
    assert eng["output_shapes"] == {"logits": [1, 10]}  # static: the example batch
    assert eng["errors"] == 0 and eng["checked_warnings"] == {k: 0 for k in E.CHECKED_WARNINGS}
    assert (tmp_path / "out/m.engine").stat().st_size == eng["engine_bytes"] > 0
    assert len(eng["notes"]) == 1 and "built from the .onnx function bodies" in eng["notes"][0]
    assert "vm-export: warning: no plugin library was found" in r.stderr and "--engine-plugins LIB" in r.stderr
    assert "engine profile: none (static shapes)" in r.stdout
    _no_leftovers(tmp_path)


@pytest.mark.trt
@pytest.mark.trt_rtx
def test_vm_export_engine_from_the_trt_onnx_with_the_plugin_library(plugin_library, tmp_path):
    r = _vm_export(tmp_path, "-o", "out/m.onnx", "--trt-onnx", "--quartermap", "--engine", "out/m.engine",
                   "--engine-plugins", str(plugin_library), "--report", "out/r.json", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    eng = json.loads((tmp_path / "out/r.json").read_text())["engine"]
    trt_model = onnx.load(str(tmp_path / "out/m.trt.onnx"))
    kinds = {n.op_type for n in trt_model.graph.node if n.domain == E.PLUGIN_DOMAIN}
    assert kinds == {"SS2DScan", "QuarterMapDown", "QuarterMapUp"} and not trt_model.functions
    assert eng["source_onnx"] == "out/m.trt.onnx" and eng["plugin_library"] == str(plugin_library)
    assert eng["plugin_nodes"] == sum(n.domain == E.PLUGIN_DOMAIN for n in trt_model.graph.node)
    assert eng["errors"] == 0 and eng["checked_warnings"] == {k: 0 for k in E.CHECKED_WARNINGS}
    data = (tmp_path / "out/m.engine").read_bytes()
    assert len(data) == eng["engine_bytes"] > 0
    for kind in kinds:  # the plugins were serialized into the engine (getFieldsToSerialize)
        assert kind.encode() in data, kind
    _no_leftovers(tmp_path)
