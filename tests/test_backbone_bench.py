"""benchmarks/bench_backbone.py on the CPU: option handling, the budget, the tables and the JSON,
a CPU dry run end to end (ours always; the official Backbone_VSSM too where a checkout is there,
``$VMAMBA_OFFICIAL`` or ``<repo>/third_party/VMamba``, with its pure-PyTorch scan), and, on a GPU,
the runtime's list output for a feature backbone. No speed is asserted anywhere (benchmarks measure).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_backbone as bb  # noqa: E402
import official  # noqa: E402

FP32_PARITY = 1e-4  # max abs per float32 map, as in tests/test_backbone.py


def _checkout() -> Path | None:
    root = Path(os.environ.get("VMAMBA_OFFICIAL", official.DEFAULT_CHECKOUT))
    try:
        return official.check_checkout(root)
    except official.OfficialCodeError:
        return None


# ----------------------------------------------------------------------------- options
def test_defaults_are_the_issue_grid_and_dry_run_is_tiny():
    a = bb.parse_args([])
    assert a.models == ["vmamba_tiny_s1l8", "vmamba_small_s1l20"]
    assert a.sizes == [(512, 512), (1024, 1024)] and a.batch == [16, 1]
    assert a.precisions == ["fp16", "fp32-tf32off", "fp32-default"]
    assert a.configs == ["baseline", "vmeanba-k4+qm-k3"] and a.parity_shape == [1, 512, 512]
    assert a.device == "cuda" and a.budget_s == 240
    d = bb.parse_args(["--device", "cpu", "--dry-run"])
    assert d.sizes == [(64, 64)] and d.batch == [1, 2] and d.iters == d.latency_iters == 2
    assert d.models == ["vmamba_tiny_s1l8"] and d.precisions == ["fp32-tf32off"] and d.parity_shape == [1, 64, 64]
    # an explicit option wins over the dry-run default
    e = bb.parse_args(["--device", "cpu", "--dry-run", "--sizes", "96x128", "--batch", "3"])
    assert e.sizes == [(96, 128)] and e.batch == [3]


@pytest.mark.parametrize("argv,message", [
    (["--models", "nope"], "unknown model(s) nope"),
    (["--models", "vanilla_vmamba_tiny"], "only the vmamba_* (v2) line"),
    (["--models", "medmamba_t"], "MedMamba has no official backbone"),
    (["--sizes", "512x"], "bad size '512x'"),
    (["--sizes", "16"], "H, W >= 32"),
    (["--batch", "0"], "--batch sizes must be >= 1"),
    (["--iters", "0"], "--iters must be >= 1"),
    (["--budget-s", "0"], "--budget-s > 0"),
    (["--parity-shape", "1", "8", "8"], "--parity-shape"),
    (["--device", "cpu", "--precisions", "fp16"], "fp16 needs --device cuda"),
])
def test_bad_options_exit_2_and_say_why(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        bb.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_sizes_parse_square_and_h_by_w():
    assert bb.parse_size("640") == (640, 640)
    assert bb.parse_size("512x1024") == (512, 1024)
    assert bb.parse_size("512X1024") == (512, 1024)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: the no-CUDA exit cannot be shown")
def test_gpu_run_without_cuda_exits_4_and_names_the_cpu_dry_run(capsys, tmp_path):
    assert bb.main(["--no-official", "--out", str(tmp_path)]) == bb.EXIT_NO_KERNELS == 4
    assert "--device cpu --dry-run" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_bad_checkout_on_a_gpu_is_exit_2_on_a_cpu_a_note(tmp_path, capsys):
    args = bb.parse_args(["--device", "cpu", "--official", str(tmp_path / "missing")])
    assert bb.load_official(args) is None
    assert "official code path skipped (CPU run)" in capsys.readouterr().out
    args = bb.parse_args(["--official", str(tmp_path / "missing")])
    with pytest.raises(official.OfficialCodeError, match="not found"):
        bb.load_official(args)


# ----------------------------------------------------------------------------- budget
def test_budget_keeps_a_reserve_and_learns_from_the_slowest_measurement():
    key = ("m", (512, 512), 16)
    b = bb.Budget(100.0)
    assert b.allows(key)  # nothing measured yet: RESERVE_S is enough
    for seconds in (5.0, 70.0, 1.0):
        b.record(key, seconds)
    assert b.slowest[key] == 70.0  # the slowest one counts
    assert b.allows(key)  # 1.2 * 70 = 84 s <= ~100 s left
    tight = bb.Budget(80.0)
    tight.record(key, 70.0)
    assert not tight.allows(key)  # 84 s > 80 s left
    assert tight.allows(("m", (512, 512), 1))  # another batch: only the reserve
    assert not bb.Budget(bb.RESERVE_S - 1).allows(("other",))


# ----------------------------------------------------------------------------- tables and files
def _row(size, batch, prec, side, config, ms=None, **extra):
    r = {"model": "vmamba_tiny_s1l8", "size": size, "batch": batch, "precision": prec, "side": side,
         "config": config, **extra}
    if ms is not None:
        r.update(median_ms=ms, img_per_s=batch * 1000.0 / ms)
    return r


def test_grid_table_speedups_and_skipped_cells():
    rows = [
        _row("512x512", 16, "fp16", "official", "baseline", 40.0),
        _row("512x512", 16, "fp16", "ours", "baseline", 10.0),
        _row("512x512", 16, "fp16", "ours", "vmeanba-k4+qm-k3", 8.0),
        _row("1024x1024", 1, "fp32-default", "official", "baseline", error="RuntimeError: out of memory"),
        _row("1024x1024", 1, "fp32-default", "ours", "baseline", 20.0),
        _row("1024x1024", 1, "fp32-default", "ours", "vmeanba-k4+qm-k3", skipped=bb.SKIPPED_BUDGET),
    ]
    lines = bb.grid_markdown(rows, "vmamba_tiny_s1l8").splitlines()
    assert len(lines) == 4
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    # size, batch, precision, official ms, img/s, ours ms, img/s, ours vs official, K4 ms, img/s, K4 vs off, K4 vs ours
    assert cells == ["512x512", "16", "fp16", "40.000", "400.0", "10.000", "1600.0", "4.00x", "8.000", "2000.0",
                     "5.00x", "1.25x"]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[3:5] == ["error", "error"] and cells[5] == "20.000" and cells[7] == "-"
    assert cells[8] == cells[9] == "skipped (budget)" and cells[10] == cells[11] == "-"
    # ours only (no official side in the run): the official cells say so
    only = bb.grid_markdown([_row("64x64", 1, "fp32-tf32off", "ours", "baseline", 5.0)], "vmamba_tiny_s1l8")
    assert "| 64x64 | 1 | fp32-tf32off | not run | not run | 5.000 | 200.0 | - | not run |" in only


def test_markdown_and_json_are_written_whole_with_parity_and_the_skip_count(tmp_path):
    results = {"environment": {"device": "NVIDIA H200", "device_kind": "cuda", "dry_run": False, "budget_s": 240,
                               "date_utc": "2026-12-01 14:00 UTC", "torch": "2.13.0", "cuda": "13.0",
                               "official_fingerprint": "abc", "command": "python benchmarks/bench_backbone.py"},
               "parity": [{"model": "vmamba_tiny_s1l8", "shape": [1, 512, 512], "maps": [
                   {"map": "feat0", "shape": [1, 96, 128, 128], "max_abs": 1.5e-6, "max_rel": 2e-7, "cosine": 1.0}]},
                   {"model": "vmamba_small_s1l20", "shape": [1, 512, 512], "error": "RuntimeError: boom"}],
               "rows": [_row("512x512", 1, "fp16", "official", "baseline", skipped=bb.SKIPPED_BUDGET),
                        _row("512x512", 1, "fp16", "ours", "baseline", 2.0)]}
    bb.write_results(tmp_path / "o", results)
    assert json.loads((tmp_path / "o" / bb.JSON_NAME).read_text()) == results
    md = (tmp_path / "o" / bb.MD_NAME).read_text()
    assert "Dry run" not in md and "NVIDIA H200" in md
    assert "| vmamba_tiny_s1l8 | 1x3x512x512 | feat0 | 1x96x128x128 | 1.50e-06 | 2.00e-07 | 1.0000000 |" in md
    assert "error: RuntimeError: boom" in md
    assert "1 measurement(s) skipped (budget: --budget-s 240)." in md
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [bb.JSON_NAME, bb.MD_NAME]  # no temp files left


def test_a_budget_smaller_than_the_reserve_skips_every_row_and_still_writes(tmp_path):
    out = tmp_path / "o"
    assert bb.main(["--device", "cpu", "--dry-run", "--no-official", "--budget-s", "1", "--out", str(out)]) == 0
    res = json.loads((out / bb.JSON_NAME).read_text())
    assert [r["skipped"] for r in res["rows"]] == [bb.SKIPPED_BUDGET] * 4  # 2 batches x 2 configurations
    md = (out / bb.MD_NAME).read_text()
    assert md.startswith("**Dry run / CPU: a plumbing check, not a measurement.**")
    assert md.count("skipped (budget)") == 8 and "4 measurement(s) skipped" in md


# ----------------------------------------------------------------------------- CPU dry run
@pytest.mark.slow
def test_cpu_dry_run_end_to_end(tmp_path, one_torch_thread):
    """Ours always; the official Backbone_VSSM (pure-PyTorch scan) where a checkout is there: then the
    parity check must hold at the float32 bound and every official row must be measured."""
    out = tmp_path / "o"
    argv = ["--device", "cpu", "--dry-run", "--batch", "1", "--out", str(out), "--work-dir", str(tmp_path / "w")]
    have_official = _checkout() is not None
    if have_official:
        argv += ["--official", str(_checkout())]
    else:
        argv += ["--no-official"]
        print("official checkout not found: the official side of the dry run is not exercised")
    assert bb.main(argv) == 0
    res = json.loads((out / bb.JSON_NAME).read_text())
    sides = [(r["side"], r["config"]) for r in res["rows"]]
    expected = [("ours", "baseline"), ("ours", "vmeanba-k4+qm-k3")]
    assert sides == ([("official", "baseline")] if have_official else []) + expected
    for r in res["rows"]:
        assert r["median_ms"] > 0 and r["finite"] and "error" not in r and "skipped" not in r
    k4 = next(r for r in res["rows"] if r["config"] == "vmeanba-k4+qm-k3")
    assert k4["vmeanba_quartermap"]["vmeanba"] == [f"layers.2.blocks.{i}" for i in range(4)]
    assert k4["vmeanba_quartermap"]["quartermap"]  # every:3 picked some blocks
    if have_official:
        (p,) = res["parity"]
        assert [m["map"] for m in p["maps"]] == ["feat0", "feat1", "feat2", "feat3"]
        assert [m["shape"] for m in p["maps"]] == [[1, 96, 16, 16], [1, 192, 8, 8], [1, 384, 4, 4], [1, 768, 2, 2]]
        for m in p["maps"]:
            assert m["max_abs"] <= FP32_PARITY and m["cosine"] > 0.999999, m
        assert res["environment"]["oflex_build"] == "none (CPU)"
    else:
        assert res["parity"] == []


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_runtime_returns_the_feature_maps_of_a_backbone(tmp_path):
    """prepare_runtime on a feature backbone: graph mode gives a list of four maps (cloned), equal to
    the CPU float32 model within the runtime's float32 bound (tests/test_runtime_gpu.py)."""
    from exporter.models import create_model
    from exporter.runtime import kernel_status, prepare_runtime

    ok, reason = kernel_status()
    if not ok:
        pytest.skip(reason)
    torch.manual_seed(0)
    model = create_model("vmamba_tiny_s1l8", features_only=True, depths=[1, 1, 2, 1], dims=32).eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ref = model(x)
    rt = prepare_runtime(model, dtype=torch.float32, batch_size=2, image_size=(96, 128), mode="graph")
    got = rt(x)
    again = rt(x)
    assert isinstance(got, list) and len(got) == 4 and got[0].data_ptr() != again[0].data_ptr()
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        err = float((g.double().cpu() - r.double()).norm() / r.double().norm())
        assert err < 1e-4, err
    rt.release()


@pytest.mark.gpu
def test_runtime_tf32_none_keeps_the_process_flags():
    """tf32=None (bench_backbone / bench_side_by_side at PyTorch's fp32 defaults): the flags the
    caller set stay as they are; tf32=False still turns both off."""
    from exporter.models import create_model
    from exporter.runtime import kernel_status, prepare_runtime

    ok, reason = kernel_status()
    if not ok:
        pytest.skip(reason)
    model = create_model("vmamba_tiny_s1l8", features_only=True, depths=[1, 1, 2, 1], dims=32).eval()
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False  # PyTorch's defaults
        rt = prepare_runtime(model, dtype=torch.float32, batch_size=1, image_size=64, mode="eager", tf32=None)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, False)
        assert rt.config.tf32 is False  # matmul TF32, as in force
        rt.release()
        rt = prepare_runtime(model, dtype=torch.float32, batch_size=1, image_size=64, mode="eager", tf32=False)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
        rt.release()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# ----------------------------------------------------------------------------- bench_export's variants
def test_bench_export_variants_and_resolutions():
    """The four export variants of docs/BACKBONES.md on a small backbone with 6 stage-2 blocks."""
    import bench_export
    from exporter.models.vmamba import VMambaBackbone

    model = VMambaBackbone(depths=[1, 1, 6, 1], dims=8, ssm_d_state=1, ssm_ratio=1.0, forward_type="v05_noz",
                           norm_layer="ln2d", downsample_version="v3", patchembed_version="v2", mlp_ratio=0.0)
    names = list(model.ssm_layers())
    every3 = [n for i, n in enumerate(names, 1) if i % 3 == 0 and not n.startswith("layers.0.")]  # the authors' rule
    for variant, vmeanba, quartermap in (("plain", [], []), ("vmeanba", names[2:6], []),
                                         ("quartermap", [], every3), ("compressed", names[2:6], every3)):
        got = bench_export.compressed_variant(model, variant).ssm_layers()
        assert [n for n, m in got.items() if m.vmeanba is not None] == vmeanba, variant
        assert [n for n, m in got.items() if m.quartermap is not None] == quartermap, variant
    assert all(m.vmeanba is None and m.quartermap is None for m in model.ssm_layers().values())  # copies
    assert bench_export.parse_resolution("512x1024") == (512, 1024) and bench_export.parse_resolution("640") == (640, 640)
    for bad in ("0", "512x", "axb", "1x2x3"):
        with pytest.raises(Exception, match="bad resolution"):
            bench_export.parse_resolution(bad)
