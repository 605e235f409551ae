"""vm-export --plan: conflicts with explicit layer specs (exit 2, one line, nothing written), an
end-to-end planned export on the CPU cost model whose ONNX file is checked in ONNX Runtime against
the plan applied with the public transforms, and the fallback to the plain selection."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from exporter import cli
from exporter import pipeline
from exporter.compress import apply_quartermap, apply_vmeanba
from exporter.compress.cost_model import make_timer, measure_cost_model
from exporter.samples_data import load_digits_model


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,needle", [
    (["--plan", "fastest", "--vmeanba-layers", "k=2"], "cannot be combined with --vmeanba-layers k=2"),
    (["--plan", "fastest", "--quartermap"], "cannot be combined with --quartermap every:3"),
    (["--plan", "fastest", "--vmeanba-layers", "all", "--quartermap", "stage:2"], "drop them or drop --plan"),
    (["--plan-cost", "cpu"], "--plan-cost does nothing without --plan"),
    (["--plan-cache", "/tmp/x"], "--plan-cache does nothing without --plan"),
    (["--plan", "fastest", "--plan-batch", "0"], "--plan-batch must be >= 1"),
    (["--plan-evaluations", "10"], "--plan-evaluations does nothing without --plan"),
    (["--plan", "fastest", "--plan-evaluations", "-1"], "--plan-evaluations must be >= 0"),
    (["--plan", "slowest"], "invalid choice: 'slowest'"),
    (["--plan", "fastest", "--max-drop", "2"], "--max-drop 2 would allow"),
])
def test_plan_conflicts_exit_2_with_one_line(capsys, tmp_path, argv, needle):
    code, _, err = _run(capsys, *argv, "--quiet", "-o", str(tmp_path / "m.onnx"))
    assert code == cli.EXIT_BAD_ARGS
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vm-export: error:") and needle in lines[0], err
    assert not list(tmp_path.iterdir())


def test_help_documents_the_plan_options():
    text = cli.build_parser().format_help()
    for flag in ("--plan ", "--plan-cost", "--plan-cache", "--plan-batch", "--plan-evaluations", "vm-export --plan fastest --max-drop 0.005"):
        assert flag in text


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_planned_export_end_to_end_on_the_cpu_cost_model(capsys, tmp_path, one_thread):
    report_path, onnx_path = tmp_path / "r.json", tmp_path / "fast.onnx"
    # a quick cost model in the cache (one timed run per configuration): vm-export must find and use it
    timer = make_timer("cpu-torch", batch=2, precision="fp32", resolution=(32, 32), iters=1, warmup=0)
    measure_cost_model(load_digits_model("vmamba"), timer, cache_dir=tmp_path / "cache", rounds=1)
    code, out, err = _run(capsys, "--plan", "fastest", "--max-drop", "0.01", "--plan-cost", "cpu", "--plan-batch", "2",
                          "--plan-cache", str(tmp_path / "cache"), "--calib", "digits", "--calib-limit", "60",
                          "--threads", "1", "--report", str(report_path), "-o", str(onnx_path), "--quiet")
    assert code == cli.EXIT_OK, err
    report = json.loads(report_path.read_text())
    plan = report["plan"]
    assert plan["cost"]["key"]["backend"] == "cpu-torch" and plan["joint_drop"] <= 0.01
    assert report["compression"]["plan"] == "fastest" and report["compression"]["plan_fallback"] is None
    assert plan["cost_from_cache"] and plan["measured_speedup"] > 0
    # every block is exported as the plan says
    for name, option in plan["plan"].items():
        form = report["layers"][name]
        assert form.startswith("VMeanba") == (option in ("vmeanba", "both")), (name, option, form)
        assert ("QuarterMap" in form) == (option in ("quartermap", "both")), (name, option, form)
    md = (tmp_path / "r.md").read_text()
    assert "## Compression plan (--plan)" in md and "predicted" in md
    png = tmp_path / "r.plan_pareto.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "compression plan" in out
    # the file computes the plan applied with the public transforms
    model = load_digits_model("vmamba")
    vm = [n for n, o in plan["plan"].items() if o in ("vmeanba", "both")]
    qm = [n for n, o in plan["plan"].items() if o in ("quartermap", "both")]
    reference = apply_vmeanba(model, vm)
    reference = apply_quartermap(reference, qm) if qm else reference
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], reference(x).numpy(), atol=1e-4, rtol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here: the gpu cost model does not fall back")
def test_plan_without_a_gpu_cost_model_falls_back_with_a_warning(tmp_path, one_thread):
    """The pipeline's compress step (what vm-export runs before the export) with --plan-cost gpu on a
    machine without CUDA: the plain selection at the same budget, the reason recorded and warned."""
    o = pipeline.Options(plan="fastest", plan_cost="gpu", calib="digits", calib_limit=60, threads=1,
                         report=str(tmp_path / "r.json"))
    pipeline.check_options(o)
    source = pipeline.load_source(o)
    with pytest.warns(UserWarning, match="planner: no cost model: .*CUDA is not available"):
        comp = pipeline.compress(o, source)
    assert comp.plan is None and comp.selection.max_drop == 0.01
    assert "fell back to the plain VMeanba selection" in comp.plan_fallback
    assert comp.plots == ("impact", "curve")
    assert all(comp.layer_forms[n].startswith("VMeanba") for n in comp.selection.layers)
    assert "plan_pareto" in pipeline.plan_outputs(o, source.arch).plots


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here: the study would run on it")
def test_planner_study_refuses_cuda_without_a_gpu(tmp_path):
    """benchmarks/planner_study.py --device cuda fails loudly (exit 2, the reason) instead of timing the CPU."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "planner_study.py"
    proc = subprocess.run([sys.executable, str(script), "--device", "cuda", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "GPU runtime is not usable" in proc.stderr and "CUDA is not available" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_planner_study_table_shows_the_official_reference():
    """With --official, the full-size section gains the official model's time from the same run and
    our speed-up over it (uncompressed and with the best option on every block)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import planner_study

    study = {"digits": {}, "seconds": 1.0, "environment": {"command": "c", "date_utc": "d", "device": "dev",
                                                          "runtime": "r"},
             "full_size": [{"model": "vmamba_tiny_s1l8", "cost": {"baseline_ms": 20.0}, "stages": {},
                            "checks": [], "official_ms": {"fp16": 40.0},
                            "ours_ms": {"uncompressed": 20.0, "best option on every block": 16.0}}]}
    text = planner_study.markdown(study)
    assert "| vmamba_tiny_s1l8 | fp16 | 40.00 | 20.00 | 2.00x faster | 16.00 | 2.50x faster |" in text
    study["full_size"][0].pop("official_ms")
    assert "official models in the same process" not in planner_study.markdown(study)


def test_planner_study_verdict_compares_at_the_same_or_lower_drop():
    """"faster at same or lower drop": a plan that is faster only by spending more of the budget is judged
    by the planner's answer at the paper's drop, not counted as a win."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import planner_study

    row = {"same_plan": False, "plan_cal_drop": 0.0028, "paper_cal_drop": 0.0028, "plan_faster": True,
           "paper_measured": 1.07}
    assert planner_study.verdict(row) == "yes"
    assert planner_study.verdict({**row, "plan_faster": False}) == "no"
    assert planner_study.verdict({**row, "same_plan": True}) == "same plan"
    at = {"same_plan": False, "options": "vmeanba 4", "cal_drop": 0.0028, "test_drop": 0.0056, "predicted": 1.08,
          "measured": 1.06}
    larger = {**row, "plan_cal_drop": 0.0195, "at_paper_drop": at}
    assert planner_study.verdict(larger).startswith("no (the plan's drop is larger")
    assert planner_study.verdict({**larger, "at_paper_drop": {**at, "measured": 1.09}}).startswith("yes (")
    assert planner_study.verdict({**larger, "at_paper_drop": {**at, "same_plan": True}}).startswith("same plan (")
