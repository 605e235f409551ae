"""The TensorRT plugins on a GPU: trt_plugins_cpp/tests/run_device_plugins.sh builds the kernels,
the plugin library and enqueue_harness, makes golden data from plugins/reference.py
(tests/make_plugin_golden.py) and runs the IPluginV3 call sequence (build phase, deserialized +
attached, CUDA graph replay) plus compute-sanitizer memcheck/racecheck. No TensorRT library is
needed, only its headers. Skips with the reason where there is no CUDA GPU, nvcc or headers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.trt, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "trt_plugins_cpp/tests/run_device_plugins.sh"


def _skip_reason() -> str | None:
    if shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode:
        return "no CUDA GPU (nvidia-smi -L failed)"
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        return "nvcc not found"
    root = Path(os.environ.get("TensorRT_ROOT", REPO / "third_party/TensorRT"))
    if not (root / "include/NvInferRuntime.h").is_file():
        return f"TensorRT headers not under {root}/include (trt_plugins_cpp/tools/get_trt_headers.sh)"
    if not (REPO / "trt_plugins_cpp/kernels/CMakeLists.txt").is_file():
        return "the kernel library (trt_plugins_cpp/kernels) has no CMakeLists.txt yet"
    return None


def test_plugins_enqueue_harness_on_gpu(tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, OUT=str(tmp_path))
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=1800)
    summary = (tmp_path / "device_summary.txt").read_text() if (tmp_path / "device_summary.txt").exists() else ""
    print(summary)
    assert r.returncode == 0, f"run_device_plugins.sh exited {r.returncode}:\n{summary}\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    report = json.loads((tmp_path / "harness.json").read_text())
    assert report["failures"] == 0 and report["checks"] > 0
    ops = {g["op"] for g in report["groups"]}
    assert ops == {"SS2DScan", "VMeanbaScan", "QuarterMapDown", "QuarterMapUp"}
    assert {g["dtype"] for g in report["groups"]} == {"float32", "float16"}
    assert all(g["worst_err_over_tol"] <= 1.0 for g in report["groups"])
