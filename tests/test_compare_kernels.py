"""benchmarks/compare_kernels.py (CPU): two builds' bench_kernels.py JSON, matched row by row, and its
refusals of bad input; and the argument checks of the two device scripts around it."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare_kernels as ck  # noqa: E402


def _bench(path: Path, device: str, times: dict) -> str:
    """A bench_kernels.py --json file with one row per (op, stage) -> ms."""
    rows = [{"op": op, "model": "T-s1l8", "stage": stage, "batch": 128, "dtype": "float16", "ms": ms, "D": 96}
            for (op, stage), ms in times.items()]
    path.write_text(json.dumps({"device": device, "date": "2026-12-01 00:00 UTC", "copy_gbs": 4000.0, "rows": rows,
                                "knob_sweep": []}))
    return str(path)


def test_rows_are_matched_and_each_side_takes_its_minimum(tmp_path, capsys):
    a1 = _bench(tmp_path / "a1.json", "H200", {("ss2d", 0): 1.0, ("ss2d", 1): 0.50, ("vmeanba0", 0): 0.8})
    a2 = _bench(tmp_path / "a2.json", "H200", {("ss2d", 0): 0.9, ("ss2d", 1): 0.55, ("vmeanba0", 0): 0.8})
    b1 = _bench(tmp_path / "b1.json", "H200", {("ss2d", 0): 0.45, ("ss2d", 1): 0.50, ("qm_up", 3): 0.1})
    md = tmp_path / "cmp.md"
    assert ck.main(["--a", a1, a2, "--b", b1, "--md", str(md)]) == 0
    out = capsys.readouterr().out
    assert md.read_text() == out
    lines = out.splitlines()
    # stage 0: min(1.0, 0.9) / 0.45 = 2.0, flagged; stage 1: 0.50 / 0.50 = 1.0, not flagged
    assert "| ss2d | T-s1l8 | 0 | 128 | float16 | 0.9000 | 0.4500 | 2.000 | B faster |" in lines
    assert "| ss2d | T-s1l8 | 1 | 128 | float16 | 0.5000 | 0.5000 | 1.000 |  |" in lines
    assert f"ss2d {math.sqrt(2.0):.3f} over 2 rows" in out  # geometric mean of 2.0 and 1.0
    assert "2 row(s) measured on one side only, left out." in out
    assert "official code is not timed" in out


@pytest.mark.parametrize("case", ["missing", "not-json", "not-bench", "other-device", "nothing-in-common"])
def test_bad_input_exits_2_with_the_reason_and_writes_nothing(tmp_path, capsys, case):
    a = _bench(tmp_path / "a.json", "H200", {("ss2d", 0): 1.0})
    b = _bench(tmp_path / "b.json", "H200", {("ss2d", 0): 0.5})
    if case == "missing":
        b = str(tmp_path / "absent.json")
    elif case == "not-json":
        Path(b).write_text("{oops")
    elif case == "not-bench":
        Path(b).write_text(json.dumps({"rows": 3}))
    elif case == "other-device":
        b = _bench(tmp_path / "b.json", "H100", {("ss2d", 0): 0.5})
    else:
        b = _bench(tmp_path / "b.json", "H200", {("ss2d", 3): 0.5})
    md = tmp_path / "cmp.md"
    assert ck.main(["--a", a, "--b", b, "--md", str(md)]) == ck.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("compare_kernels: ")
    expected = {"missing": "absent.json", "not-json": "bench_kernels.py --json", "not-bench": "not bench_kernels.py",
                "other-device": "H100", "nothing-in-common": "no (op, model"}[case]
    assert expected in err
    assert not md.exists()


@pytest.mark.parametrize("script,needs", [("run_device_ab.sh", "LIB_A"), ("build_kernels_at.sh", None)])
def test_device_scripts_refuse_missing_arguments_with_exit_2(script, needs, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    if needs:
        assert needs in proc.stderr and "build_kernels_at.sh" in proc.stderr
        assert not (tmp_path / "out").exists()  # nothing written before the check
    else:
        assert "REV" in proc.stdout
    bad = subprocess.run(["bash", str(ROOT / "benchmarks" / "build_kernels_at.sh"), "no-such-revision-xyz"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown revision" in bad.stderr
