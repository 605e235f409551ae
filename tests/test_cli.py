"""vm-export: exit codes, one-line errors without tracebacks, and end-to-end runs on the built-in
digits model and on a checkpoint file (outputs checked independently with ONNX Runtime)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporter import cli
from exporter.verify import parity


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_exit_codes_and_outputs():
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    text = proc.stdout
    for code in (cli.EXIT_OK, cli.EXIT_BAD_ARGS, cli.EXIT_CHECKPOINT, cli.EXIT_EXPORT, cli.EXIT_PARITY):
        assert f"\n  {code}  " in text
    for flag in ("--vmeanba-layers", "--vmeanba-form", "--quartermap-stride", "--precision", "--trt-onnx", "--calib"):
        assert flag in text
    assert ".trt.onnx" in text and "polygraphy run" in text


@pytest.mark.parametrize("argv,needle", [
    (["--vmeanba-layers", "bogus"], "unknown layer 'bogus'"),
    (["--resolution", "0x5"], "--resolution"),
    (["--resolution", "abc"], "--resolution"),
    (["--precision", "fp8"], "fp8"),
    (["--arch", "no_such_model"], "unknown --arch"),
    (["--max-drop", "0.1"], "--max-drop only applies"),
    (["--quartermap", "k=2"], "QuarterMap has no calibrated selection"),
    (["--quartermap", "--quartermap-stride", "2", "--quartermap-keep", "3"], "keep <= stride"),
    (["--batch", "0"], "--batch"),
    (["-o", "model.txt"], "--output must end with .onnx"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--calib", "/no/such/dir", "--vmeanba-layers", "k=2"], "calibration data"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, tmp_path, argv, needle):
    code, out, err = _run(capsys, *argv, "--quiet", *([] if "-o" in argv else ["-o", str(tmp_path / "m.onnx")]))
    assert code == cli.EXIT_BAD_ARGS
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vm-export: error:") and needle in lines[0]
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.fixtures
def test_checkpoint_errors_exit_3(capsys, tmp_path, fixtures_dir):
    code, _, err = _run(capsys, "--checkpoint", str(tmp_path / "missing.pth"), "--quiet")
    assert code == cli.EXIT_CHECKPOINT and "no such file" in err
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    code, _, err = _run(capsys, "--checkpoint", str(garbage), "--quiet", "-o", str(tmp_path / "g.onnx"))
    assert code == cli.EXIT_CHECKPOINT and err.startswith("vm-export: error: checkpoint error") and "Traceback" not in err
    # a real checkpoint that does not fit the requested architecture
    data = torch.load(fixtures_dir / "vmamba_v05noz_r1_ds1.pt", weights_only=True)
    ck = tmp_path / "small.pth"
    torch.save({"model": data["state_dict"]}, ck)
    code, _, err = _run(capsys, "--checkpoint", str(ck), "--arch", "vmamba_tiny_s1l8", "--quiet", "-o", str(tmp_path / "w.onnx"))
    assert code == cli.EXIT_CHECKPOINT and "does not fit" in err
    assert not list(tmp_path.glob("*.onnx"))


def test_digits_model_end_to_end(capsys, tmp_path):
    out = tmp_path / "digits.onnx"
    report_path = tmp_path / "report.json"
    code, stdout, err = _run(
        capsys, "--vmeanba-layers", "1", "--vmeanba-form", "literal", "--vmeanba-variant", "per-direction",
        "--quartermap", "stage:2", "--quartermap-stride", "3", "--quartermap-keep", "2", "--resolution", "29x35",
        "--verify", "--latency-runs", "2", "--trt-onnx", "--report", str(report_path), "-o", str(out), "--quiet",
    )
    assert code == cli.EXIT_OK, err
    assert "vm-export summary" in stdout and "PASS" in stdout
    for suffix in (".onnx", ".trt.onnx", ".inputs.json", ".golden.json"):
        assert (tmp_path / f"digits{suffix}").exists()
    report = json.loads(report_path.read_text())
    assert report["layers"]["layers.1.blocks.0"].startswith("VMeanbaScan literal (variant=1")
    assert all("QuarterMap" in report["layers"][n] for n in report["layers"] if n.startswith("layers.2."))
    assert report["export"]["custom_nodes"]["VMeanbaScan"] == 1
    assert report["export"]["custom_nodes"]["QuarterMapDown"] == 4
    assert report["parity"]["passed"] and report["parity"]["max_abs_error"] <= parity.TOLERANCES["fp32"].atol
    assert report["latency"]["pytorch"]["median_ms"] > 0 and report["latency"]["onnxrt"]["median_ms"] > 0
    # independent check: rebuild the same compression with the API and run the file in stock ORT
    from exporter.compress import apply_quartermap, apply_vmeanba
    from exporter.samples_data import load_digits_model

    model = apply_quartermap(apply_vmeanba(load_digits_model("vmamba"), "1", variant="per-direction", folded=False),
                             "stage:2", stride=3, keep=2)
    x = torch.randn(2, 3, 32, 40)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], model(x).numpy(), atol=1e-4, rtol=0)
    assert not [f for f in onnx.load(str(tmp_path / "digits.trt.onnx")).functions]


def test_auto_selection_with_calibration_and_fp16(capsys, tmp_path):
    report_path = tmp_path / "r.json"
    code, _, err = _run(capsys, "--vmeanba-layers", "k=2", "--calib", "digits", "--calib-limit", "60", "--precision", "fp16",
                        "--verify", "--latency-runs", "0", "--report", str(report_path), "-o", str(tmp_path / "a.onnx"),
                        "--quiet")
    assert code == cli.EXIT_OK, err
    report = json.loads(report_path.read_text())
    chosen = report["selection"]["layers"]
    assert len(chosen) == 2 and all(report["layers"][n].startswith("VMeanba folded") for n in chosen)
    assert report["export"]["precision"] == "fp16" and report["parity"]["passed"]
    assert report["parity"]["atol"] == parity.TOLERANCES["fp16"].atol


@pytest.mark.fixtures
def test_checkpoint_export_reproduces_official_logits(capsys, tmp_path, fixtures_dir):
    data = torch.load(fixtures_dir / "vmamba_v0_ds16.pt", weights_only=True)
    ck = tmp_path / "v0.pth"
    torch.save({"model": data["state_dict"]}, ck)  # the usual {"model": state_dict} container
    out = tmp_path / "v0.onnx"
    code, stdout, err = _run(capsys, "--checkpoint", str(ck), "--resolution", "64x96", "--verify", "--latency-runs", "0",
                             "-o", str(out), "--quiet")
    assert code == cli.EXIT_OK, err
    assert "PASS" in stdout
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for case in data["cases"]:  # square and non-square inputs: the official implementation's logits
        got = sess.run(None, {"x": case["input"].numpy()})[0]
        np.testing.assert_allclose(got, case["output"].numpy(), atol=parity.TOLERANCES["fp32"].atol, rtol=0)


def test_parity_failure_exits_5(capsys, tmp_path, monkeypatch):
    # negative tolerances make every element fail Polygraphy's check: the exit path must say so
    monkeypatch.setitem(parity.TOLERANCES, "fp32", parity.Tolerance(atol=-1.0, rtol=-1.0))
    code, stdout, err = _run(capsys, "--verify", "--latency-runs", "0", "-o", str(tmp_path / "p.onnx"), "--quiet")
    assert code == cli.EXIT_PARITY
    assert "FAIL" in stdout and "parity failed" in err and "Traceback" not in err
    assert (tmp_path / "p.onnx").exists()  # the file is kept for inspection


def test_export_failure_exits_4(capsys, tmp_path, monkeypatch):
    from exporter.export import onnx_export

    def broken(*args, **kwargs):
        raise onnx_export.ExportError("torch.onnx.export failed: simulated")

    monkeypatch.setattr(onnx_export, "export_onnx", broken)
    code, _, err = _run(capsys, "-o", str(tmp_path / "e.onnx"), "--quiet")
    assert code == cli.EXIT_EXPORT and "simulated" in err and "Traceback" not in err
