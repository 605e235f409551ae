"""The planner's cuda path (marker gpu; skipped with the reason where the project's GPU runtime is not
usable): the cuda cost model through prepare_runtime and CUDA-graph timing, its cache key, the
calibration passes on the GPU against the CPU, and a whole plan on the digits model."""
from __future__ import annotations

import math

import pytest
import torch

from exporter.compress import cost_model as cm
from exporter.compress import load_calibration, planner
from exporter.compress.selection import CalibratedEvaluator
from exporter.runtime import kernel_status
from exporter.samples_data import load_digits_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_runtime():
    ok, reason = kernel_status()
    if not ok:
        pytest.skip(f"the project's GPU runtime is not usable here: {reason}")
    return reason


def test_cuda_cost_model_is_measured_keyed_and_cached(gpu_runtime, tmp_path):
    model = load_digits_model("vmamba")
    timer = cm.make_timer("gpu", batch=8, precision="fp16", resolution=(32, 32), iters=5, warmup=1)
    cost = cm.measure_cost_model(model, timer, cache_dir=tmp_path)
    assert timer.calls == 4 * len(set(cost.measured_as.values()))
    assert cost.key["backend"] == "cuda" and cost.key["device"] == torch.cuda.get_device_name()
    assert cost.key["precision"] == "fp16" and cost.key["kernels"].startswith("kernels ")
    assert cost.baseline_ms > 0 and all(math.isfinite(v) for r in cost.option_ms.values() for v in r.values())
    again = cm.make_timer("gpu", batch=8, precision="fp16", resolution=(32, 32), iters=5, warmup=1)
    assert cm.measure_cost_model(model, again, cache_dir=tmp_path).from_cache and again.calls == 0
    other = cm.make_timer("gpu", batch=8, precision="fp32", resolution=(32, 32), iters=5, warmup=1)
    assert not cm.measure_cost_model(model, other, cache_dir=tmp_path).from_cache  # another precision


def test_gpu_calibration_passes_match_the_cpu(gpu_runtime):
    model = load_digits_model("medmamba")
    cal = load_calibration("digits:calibration", model.family, limit=128)
    on_gpu, on_cpu = (CalibratedEvaluator(model, cal, "accuracy", device=d) for d in ("cuda", "cpu"))
    assert abs(on_gpu.baseline - on_cpu.baseline) <= 1 / len(cal) + 1e-12
    torch.testing.assert_close(on_gpu.reference, on_cpu.reference, atol=1e-3, rtol=1e-3)


def test_cuda_plan_on_digits_respects_the_budget(gpu_runtime, tmp_path):
    model = load_digits_model("vmamba")
    result = planner.plan_compression(model, "digits", 0.01, backend="gpu", batch=64, precision="fp16", iters=10,
                                      cache_dir=tmp_path)
    assert result.backend == "cuda" and result.joint_drop <= 0.01
    assert result.measured_speedup is not None and result.measured_speedup > 0
    assert any("finalists timed" in s for s in result.steps)
