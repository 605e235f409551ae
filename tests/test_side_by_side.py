"""The CPU-testable parts of the side-by-side benchmark (benchmarks/official.py and
benchmarks/bench_side_by_side.py): the CUDA 13 source patches, the scratch copy, the generated
forward-only build files, option parsing, stage shapes, tables and verdicts.

The official code itself is not part of this repository. The last tests use a checkout when one is
there (``$VMAMBA_OFFICIAL`` or ``<repo>/third_party/VMamba``, see benchmarks/official.py) and skip
otherwise: the official SS2D core, run on CPU, against this project's float32 reference op.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_side_by_side as sbs  # noqa: E402
import official  # noqa: E402

# ----------------------------------------------------------------------------- source patches
# Written for these tests (not the official file): the shapes of code the patch must handle.
REVERSE_SCAN_LIKE = """#pragma once
#include <cub/config.cuh>
#include "uninitialized_copy.cuh"

template <typename T>
struct WarpThing {
    unsigned lane;
    __device__ WarpThing() : lane(cub::LaneId()) {}
    __device__ void sync() { cub::CTA_SYNC(); }
    __device__ void sync2() { cub::CTA_SYNC (); }
};
"""


def test_reverse_scan_patch_replaces_both_helpers_and_defines_lane_id_before_use():
    text, n = official.patch_reverse_scan(REVERSE_SCAN_LIKE)
    assert n == 3
    assert "cub::LaneId" not in text and "cub::CTA_SYNC" not in text
    assert text.count("__syncthreads()") == 2
    assert "%%laneid" in text
    helper, use = text.index("vmd_lane_id() {"), text.index("lane(vmd_lane_id())")
    last_include = text.rindex("#include")
    assert last_include < helper < use
    again, n_again = official.patch_reverse_scan(text)  # a patched copy is left as it is
    assert n_again == 0 and again == text


def test_reverse_scan_patch_refuses_a_file_it_cannot_place_the_helper_in():
    with pytest.raises(official.OfficialCodeError, match="#include"):
        official.patch_reverse_scan("__device__ int f() { return cub::LaneId(); }\n")


SETUP_LIKE = """import torch
from wheel.bdist_wheel import bdist_wheel as _bdist_wheel
cmdclass = {"bdist_wheel": _bdist_wheel}
"""


def test_setup_py_patch_falls_back_when_wheel_has_no_bdist_wheel(monkeypatch):
    text, n = official.patch_setup_py(SETUP_LIKE)
    assert n == 1
    wheel_without_command = type(sys)("wheel")
    monkeypatch.setitem(sys.modules, "wheel", wheel_without_command)
    monkeypatch.setitem(sys.modules, "wheel.bdist_wheel", None)  # import of it raises ImportError
    namespace: dict = {}
    exec(compile(text, "setup.py", "exec"), namespace)
    assert isinstance(namespace["_bdist_wheel"], type)
    assert namespace["cmdclass"]["bdist_wheel"] is namespace["_bdist_wheel"]
    assert official.patch_setup_py("import torch\n") == ("import torch\n", 0)


# ----------------------------------------------------------------------------- scratch copy
def _fake_checkout(root: Path) -> Path:
    for rel in official.OFFICIAL_FILES:
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder.txt").write_text(f"{rel}\n")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(SETUP_LIKE if rel.endswith("setup.py") else f"# {rel}\n")
    for rel in (official.REVERSE_SCAN, official.OFLEX_BINDING, f"{official.SCAN_SRC}/cusoflex/{official.OFLEX_FWD_HEADER}"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(REVERSE_SCAN_LIKE if rel == official.REVERSE_SCAN else f"// {rel}\n")
    return root


def test_prepare_copy_patches_only_the_copy_and_rewrites_nothing_unchanged(tmp_path):
    checkout = _fake_checkout(tmp_path / "VMamba")
    src = official.prepare_copy(checkout, tmp_path / "work")
    assert "cub::LaneId" in (checkout / official.REVERSE_SCAN).read_text()  # the checkout is untouched
    patched = (src / official.REVERSE_SCAN).read_text()
    assert "cub::LaneId" not in patched and "vmd_lane_id" in patched
    assert "setuptools.command.bdist_wheel" in (src / official.KERNEL_DIR / "setup.py").read_text()
    stamp = (src / official.REVERSE_SCAN).stat().st_mtime_ns
    official.prepare_copy(checkout, tmp_path / "work")  # second run: same bytes, file not rewritten
    assert (src / official.REVERSE_SCAN).stat().st_mtime_ns == stamp
    assert not list((tmp_path / "work").rglob("*.tmp"))


def test_incomplete_checkout_is_refused_with_the_missing_file_named(tmp_path):
    checkout = _fake_checkout(tmp_path / "VMamba")
    (checkout / official.MODELS_DIR / "csms6s.py").unlink()
    with pytest.raises(official.OfficialCodeError, match="csms6s.py"):
        official.prepare_copy(checkout, tmp_path / "work")
    with pytest.raises(official.OfficialCodeError, match="not found"):
        official.check_checkout(tmp_path / "nowhere")


def test_prepare_command_copies_the_needed_files_and_exits_2_on_a_bad_path(tmp_path, capsys):
    checkout = _fake_checkout(tmp_path / "VMamba")
    (checkout / "classification" / "train.py").write_text("not needed\n")
    dest = tmp_path / "third_party" / "VMamba"
    assert official.main(["prepare", "--official", str(checkout), "--dest", str(dest)]) == 0
    assert (dest / official.REVERSE_SCAN).read_text() == REVERSE_SCAN_LIKE  # copied as is, unpatched
    assert not (dest / "classification" / "train.py").exists()
    assert official.checkout_fingerprint(dest) == official.checkout_fingerprint(checkout)
    assert official.main(["prepare", "--official", str(tmp_path / "nowhere"), "--dest", str(dest)]) == 2
    assert "not found" in capsys.readouterr().err


def test_forward_build_files_cover_every_instantiation_the_binding_refers_to(tmp_path):
    paths = official.forward_sources(tmp_path)
    built = [p for p in paths if p.suffix == ".cu"]
    assert len(built) == 2 and all(official.OFLEX_FWD_HEADER in p.read_text() for p in built)
    text = "".join(p.read_text() for p in built)
    assert "selective_scan_fwd_cuda<1, float, float, float>" in text
    assert "selective_scan_fwd_cuda<1, at::Half, float, float>" in text
    stubs = (tmp_path / "oflex_not_built.cpp").read_text()
    # the binding dispatches float / Half / BFloat16 inputs, each with input-typed or float outputs
    forward = {("float", "float"), ("at::Half", "float"), ("at::BFloat16", "float"), ("at::Half", "at::Half"),
               ("at::BFloat16", "at::BFloat16")}
    assert set(official.FORWARD_BUILT) | set(official.FORWARD_STUBBED) == forward
    assert not set(official.FORWARD_BUILT) & set(official.FORWARD_STUBBED)
    assert set(official.BACKWARD_STUBBED) == forward
    for i, o in official.FORWARD_STUBBED:
        assert f"template <> void selective_scan_fwd_cuda<1, {i}, float, {o}>" in stubs
    for i, o in official.BACKWARD_STUBBED:
        assert f"template <> void selective_scan_bwd_cuda<1, {i}, float, {o}>" in stubs
    assert stubs.count("TORCH_CHECK(false") == len(official.FORWARD_STUBBED) + len(official.BACKWARD_STUBBED)


# ----------------------------------------------------------------------------- options and shapes
def test_options_defaults_and_bad_values():
    args = sbs.parse_args([])
    assert args.batch == [128, 1] and args.only is None and args.iters >= 20
    assert args.precisions == ["fp32-tf32off", "fp32-default", "fp16"]
    args = sbs.parse_args(["--only", "kernels", "--batch", "4", "--models", "vmamba_tiny_s1l8", "--budget-s", "60"])
    assert (args.only, args.batch, args.models, args.budget_s) == ("kernels", [4], ["vmamba_tiny_s1l8"], 60.0)
    for bad in (["--only", "speed"], ["--models", "no_such_model"], ["--batch", "0"], ["--iters", "0"],
                ["--precisions", "bf16"], ["--budget-s", "0"]):
        with pytest.raises(SystemExit) as exc:
            sbs.parse_args(bad)
        assert exc.value.code == 2, bad


def test_precision_flags_set_and_restore_tf32():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with sbs.precision_flags(sbs.PRECISIONS["fp32-tf32off"]):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    with sbs.precision_flags(sbs.PRECISIONS["fp32-default"]):
        assert torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == saved


def test_stage_shapes_of_the_issue_models():
    shapes = sbs.stage_shapes(["vmamba_tiny_s1l8", "vmamba_small_s1l20", "vmamba_base_s1l20",
                               "vanilla_vmamba_tiny", "medmamba_t"])
    by_model = {}
    for s in shapes:
        by_model.setdefault(s["models"][0], []).append(s)
    t = by_model["vmamba_tiny_s1l8"]
    assert [s["models"] for s in t] == [["vmamba_tiny_s1l8", "vmamba_small_s1l20"]] * 4  # S has T's shapes
    assert [(s["D"], s["H"], s["R"], s["N"]) for s in t] == [(96, 56, 6, 1), (192, 28, 12, 1), (384, 14, 24, 1),
                                                             (768, 7, 48, 1)]
    assert [(s["D"], s["R"]) for s in by_model["vmamba_base_s1l20"]] == [(128, 8), (256, 16), (512, 32), (1024, 64)]
    v0 = by_model["vanilla_vmamba_tiny"]  # d_inner = 2 x d_model, dt_rank from d_model
    assert [(s["D"], s["H"], s["R"], s["N"]) for s in v0] == [(192, 56, 6, 16), (384, 28, 12, 16),
                                                              (768, 14, 24, 16), (1536, 7, 48, 16)]
    med = by_model["medmamba_t"]  # SS2D on half the channels, expanded 2x: D = dims, R = ceil(dims / 32)
    assert [(s["D"], s["H"], s["R"], s["N"]) for s in med] == [(96, 56, 3, 16), (192, 28, 6, 16),
                                                               (384, 14, 12, 16), (768, 7, 24, 16)]
    assert len(shapes) == 16
    assert sbs.e2e_models(["vmamba_tiny_s1l8", "vanilla_vmamba_tiny", "medmamba_t"]) == ["vmamba_tiny_s1l8"]


# ----------------------------------------------------------------------------- tables and verdicts
def _kernel_row(batch, precision, official_ms, ours_ms, floor_ms, **extra):
    return {"shapes": "T-s1l8/S-s1l20", "models": ["vmamba_tiny_s1l8"], "stage": 3, "D": 768, "H": 7, "W": 7,
            "R": 48, "N": 1, "batch": batch, "precision": precision, "official_ms": official_ms,
            "oflex_ms": official_ms and official_ms / 2, "ours_ms": ours_ms, "floor_ms": floor_ms, **extra}


def test_kernel_table_and_verdicts():
    rows = [_kernel_row(128, "fp16", 3.0, 0.5, 0.1, max_rel_err=2e-4),   # 6x faster, 5x floor -> MISSED
            _kernel_row(128, "fp16", 3.0, 0.3, 0.1, max_rel_err=2e-4),   # 10x faster, 3x floor -> MET
            _kernel_row(128, "fp32-default", 1.5, 0.6, 0.2),
            _kernel_row(128, "fp32-tf32off", 2.0, 0.5, 0.2),              # vs default official: 3.0x -> MET
            _kernel_row(1, "fp16", 0.05, 0.0199, 0.001),
            _kernel_row(1, "fp32-tf32off", 0.05, 0.021, 0.001),
            {**_kernel_row(1, "fp32-default", None, None, None), "skipped": "time budget"}]
    table = sbs.kernel_markdown(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == 16 for line in table)
    assert "| 6.00x | 5.0x | 2.0e-04 |" in table[2]
    assert "(skipped)" in table[-1] and "| - |" in table[-1]
    verdicts = sbs.kernel_verdicts(rows)
    assert len(verdicts) == 5
    assert "6.00x faster" in verdicts[0] and verdicts[0].endswith("MISSED")
    assert "10.00x faster" in verdicts[1] and verdicts[1].endswith("MET")
    assert "3.00x faster than the official core at PyTorch defaults" in verdicts[2] and verdicts[2].endswith("MET")
    assert verdicts[3].endswith("MET") and verdicts[4].endswith("MISSED")  # 0.0199 / 0.021 ms vs 0.02 ms


def test_other_ops_table_and_verdicts():
    rows = [_kernel_row(128, "fp16", 3.0, 0.5, 0.1, vmeanba_ms=0.6, qm_down_ms=0.02, qm_down_copy_frac=0.44,
                        qm_up_ms=0.03, qm_up_copy_frac=0.85),
            _kernel_row(1, "fp16", 0.05, 0.02, 0.001, vmeanba_ms=0.01),      # batch 1: table only, no verdict
            _kernel_row(128, "fp32-tf32off", None, 0.5, 0.2)]                 # no other-op columns: left out
    table = sbs.other_ops_markdown(rows).splitlines()
    assert len(table) == 4 and all(line.count("|") == 12 for line in table)
    assert "| 0.5000 | 0.6000 | 1.20x | 0.0200 | 44% | 0.0300 | 85% |" in table[2]
    verdicts = [v for v in sbs.kernel_verdicts(rows) if "VMeanba" in v or "QuarterMap" in v]
    assert len(verdicts) == 3
    assert "VMeanbaScan 0.6000 ms vs SS2DScan 0.5000 ms" in verdicts[0] and verdicts[0].endswith("MISSED")
    assert "down 44%" in verdicts[1] and verdicts[1].endswith("MISSED")
    assert "up 85%" in verdicts[2] and verdicts[2].endswith("MET")


def _e2e(side, config, precision, batch, ms):
    return {"model": "vmamba_tiny_s1l8", "side": side, "config": config, "precision": precision, "batch": batch,
            "median_ms": ms, "img_per_s": batch * 1000.0 / ms}


def test_e2e_table_and_verdicts():
    rows = [_e2e("official", "baseline", "fp32-tf32off", 128, 128 / 0.875),
            _e2e("official", "baseline", "fp32-default", 128, 128 / 1.447),
            _e2e("official", "baseline", "fp16", 128, 128 / 3.108),
            _e2e("ours", "baseline", "fp32-tf32off", 128, 128 / 2.1705),      # 1.5x default official
            _e2e("ours", "baseline", "fp32-default", 128, 128 / 2.894),       # 2.0x default official
            _e2e("ours", "baseline", "fp16", 128, 128 / 4.0),                 # 1.29x AMP
            _e2e("ours", "vmeanba-k4+qm-k3", "fp16", 128, 128 / 5.2),         # 1.3x own baseline
            _e2e("ours", "baseline", "fp16", 1, 1.6),
            {"model": "vmamba_tiny_s1l8", "side": "official", "precision": "fp16", "batch": 1,
             "skipped": "time budget"}]
    table = sbs.e2e_markdown(rows, 128)
    assert "| vmamba_tiny_s1l8 | 875 | 1447 | 3108 | 2170 | 2894 | 4000 | - | 5200 | 1.50x | 2.00x | 1.29x | 1.30x |" in table
    latency = sbs.e2e_markdown(rows, 1)
    assert "| vmamba_tiny_s1l8 | - | - | - | - | - | 1.60 | - | - |" in latency
    verdicts = sbs.e2e_verdicts(rows)
    assert any("fp16" in v and "1.29x official fp16" in v and v.endswith("MISSED") for v in verdicts)
    assert any("fp32-tf32off" in v and "1.50x official fp32-default" in v and v.endswith("MET") for v in verdicts)
    assert any("1.30x own baseline" in v and v.endswith("MET") for v in verdicts)
    assert any("b1 fp16 ours 1.600 ms" in v and v.endswith("MISSED") for v in verdicts)


def test_results_are_written_whole(tmp_path):
    results = {"environment": {"device": "test device", "date_utc": "2026-12-01 00:00 UTC"},
               "kernels": [_kernel_row(128, "fp16", 3.0, 0.5, 0.1)],
               "e2e": [_e2e("ours", "baseline", "fp16", 128, 30.0)], "e2e_checks": []}
    sbs.write_results(tmp_path / "out", results)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["side_by_side.json", "side_by_side.md"]
    md = (tmp_path / "out" / "side_by_side.md").read_text()
    assert "test device" in md and "## SS2D core per stage shape" in md and "## End to end" in md
    import json
    assert json.loads((tmp_path / "out" / "side_by_side.json").read_text())["kernels"][0]["ours_ms"] == 0.5


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_kernel_plot_is_written_whole_and_only_from_measured_rows(tmp_path):
    rows = [_kernel_row(128, "fp16", 3.0, 0.5, 0.1), _kernel_row(128, "fp32-default", 1.5, 0.6, 0.2),
            _kernel_row(1, "fp16", 0.05, 0.02, 0.001),
            {**_kernel_row(1, "fp32-default", None, None, None), "skipped": "time budget"}]
    results = {"environment": {"device": "test device", "date_utc": "2026-12-01 00:00 UTC"}, "kernels": rows}
    path = sbs.write_plot(tmp_path, results)
    assert path == tmp_path / sbs.KERNEL_PLOT
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == [sbs.KERNEL_PLOT]  # no temporary file left
    # nothing measured on both sides: no plot, nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sbs.write_plot(empty, {"environment": {}, "kernels": [rows[-1]]}) is None
    assert list(empty.iterdir()) == []


def test_replot_renders_a_saved_run_without_a_gpu(tmp_path, monkeypatch):
    results = {"environment": {"device": "test device", "date_utc": "2026-12-01 00:00 UTC"},
               "kernels": [_kernel_row(128, "fp16", 3.0, 0.5, 0.1)],
               "e2e": [_e2e("ours", "baseline", "fp16", 128, 30.0)], "e2e_checks": []}
    sbs.write_results(tmp_path / "run", results)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # --replot must not need one
    rc = sbs.main(["--replot", str(tmp_path / "run" / "side_by_side.json"), "--out", str(tmp_path / "again")])
    assert rc == 0
    assert (tmp_path / "again" / "side_by_side.md").read_text() == (tmp_path / "run" / "side_by_side.md").read_text()
    assert (tmp_path / "again" / sbs.KERNEL_PLOT).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"], ids=["missing", "not-json", "not-a-run"])
def test_replot_refuses_a_bad_file_with_exit_2_and_writes_nothing(tmp_path, capsys, content):
    src = tmp_path / "side_by_side.json"
    if content is not None:
        src.write_text(content)
    rc = sbs.main(["--replot", str(src), "--out", str(tmp_path / "out")])
    assert rc == sbs.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(src) in err and "side_by_side.json" in err
    assert not (tmp_path / "out").exists()


def test_max_rel_err():
    ref = torch.tensor([1.0, -4.0, 2.0])
    assert sbs.max_rel_err(ref + torch.tensor([0.0, 0.0, 0.04]), ref) == pytest.approx(0.01)
    assert math.isnan(sbs.max_rel_err(torch.tensor([float("nan"), 0.0, 0.0]), ref))


# ----------------------------------------------------------------------------- with an official checkout
def _official_checkout() -> Path | None:
    path = Path(os.environ.get("VMAMBA_OFFICIAL") or official.DEFAULT_CHECKOUT)
    return path if (path / official.MODELS_DIR / "vmamba.py").is_file() else None


needs_checkout = pytest.mark.skipif(
    _official_checkout() is None or any(importlib.util.find_spec(m) is None for m in ("triton", "einops")),
    reason=f"no official VMamba checkout at $VMAMBA_OFFICIAL or {official.DEFAULT_CHECKOUT} "
           "(python benchmarks/official.py prepare --official CLONE), or triton/einops not installed")


@pytest.fixture(scope="module")
def official_code(tmp_path_factory):
    return official.OfficialCode(_official_checkout(), tmp_path_factory.mktemp("official"), with_extension=False)


@needs_checkout
@pytest.mark.parametrize("D,R,N,H,W", [(8, 2, 1, 5, 6), (12, 3, 4, 4, 3)])
def test_official_core_matches_this_projects_reference_op(official_code, monkeypatch, D, R, N, H, W):
    """The wrapper's official core (out_norm = Identity) and its scan operands, on CPU through the
    official code's PyTorch fallbacks, against plugins/reference.py with the same weights."""
    from plugins import reference as ref

    # the official cross-scan enters torch.cuda.device(x.device), which rejects CPU tensors
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    torch.manual_seed(0)
    core = official_code.core(D, R, N, device="cpu")
    x = torch.randn(2, D, H, W)
    with torch.no_grad():
        got = core(x)
        want = ref.ss2d_scan(x, *core.weights())
        u, delta, A, B, C, Ds, bias = core.scan_inputs(x)
    assert got.shape == x.shape
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert u.shape == delta.shape == (2, 4 * D, H * W) and B.shape == C.shape == (2, 4, N, H * W)
    merged = ref.cross_merge(ref.selective_scan(u, delta, A, B, C, Ds, bias).view(2, 4, D, H * W), H, W)
    assert (merged - got).abs().max() <= 1e-5 * want.abs().max()


@needs_checkout
@pytest.mark.slow
def test_official_factory_weights_load_into_this_projects_model(official_code):
    from exporter.models import create_model

    theirs = official_code.model("vmamba_tiny_s1l8", device="cpu")
    ours = create_model("vmamba_tiny_s1l8")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    with pytest.raises(official.OfficialCodeError, match="no factory"):
        official_code.model("vmamba_huge")


def test_bench_e2e_compares_with_the_official_code_only_when_measured_in_the_same_run():
    import bench_e2e

    ours = [{"model": "vmamba_tiny_s1l8", "config": "baseline", "dtype": d, "batch": 128, "img_per_s": v,
             "median_ms": 128000 / v} for d, v in (("fp32", 1400.0), ("fp16", 2200.0))]
    alone = bench_e2e.summary_rows(ours, 128)
    assert alone[0]["fp16_official"] is None and alone[0]["fp16_vs_official"] is None
    assert all("official not measured" in t for t in bench_e2e.targets(ours, 128) if "b128" in t)
    official_rows = [{**r, "img_per_s": r["img_per_s"] / 2, "median_ms": r["median_ms"] * 2} for r in ours]
    both = bench_e2e.summary_rows(ours, 128, official_rows)
    assert both[0]["fp16_official"] == 1100.0 and both[0]["fp16_vs_official"] == pytest.approx(2.0)
    assert [t.endswith("MET") for t in bench_e2e.targets(ours, 128, official_rows) if "b128" in t] == [True, True]
