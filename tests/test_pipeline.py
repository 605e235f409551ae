"""The pipeline end to end (the README's main command), its report files, terminal output without a
TTY, and the pieces it is built from: pretrained configs, the contract's limits, family loading."""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import torch

from exporter import cli, pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def quiet_tmp(tmp_path, monkeypatch):
    """cwd = tmp_path, umask 022, a private $TMPDIR that must stay free of our files."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    yield tmp_path
    os.umask(old)


def _ours_in(folder: Path) -> list:
    """What is in $TMPDIR except torch's compile cache folder and the session file that importing
    onnxruntime writes there ($TMPDIR/.ses): neither is an output of ours."""
    return [p for p in folder.rglob("*") if "torchinductor_" not in str(p) and p.name != ".ses"]


@pytest.mark.slow
def test_readme_main_command_writes_report_summary_and_plots(quiet_tmp, capsys, monkeypatch):
    """vm-export --vmeanba-layers auto --max-drop 0.01 --quartermap -o out/model.onnx --verify --report
    out/report.json (calibration limited and one thread to keep CI short). Every rename happens
    beside its destination (an os.replace across folders would be a cross-device link elsewhere)."""
    long_dir = "out/" + "a_long_folder_name_that_a_terminal_table_would_truncate_" * 2
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        renames.append((str(src), str(dst)))
        if Path(dst).resolve().parent not in (Path(src).resolve().parent, Path(src).resolve().parent.parent):
            raise OSError(18, "Invalid cross-device link", str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    code = cli.main(["--vmeanba-layers", "auto", "--max-drop", "0.01", "--quartermap", "-o", f"{long_dir}/model.onnx",
                     "--verify", "--report", f"{long_dir}/report.json", "--calib-limit", "60", "--threads", "1",
                     "--latency-runs", "2"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_OK, err
    out_dir = quiet_tmp / long_dir
    # no TTY: whole lines, full paths, no escape codes, no carriage returns
    assert "\x1b" not in out + err and "\r" not in out + err
    assert str(Path(long_dir) / "model.onnx") in out
    names = {p.name for p in out_dir.iterdir()}
    assert names == {"model.onnx", "model.inputs.json", "model.golden.json", "report.json", "report.md",
                     "report.vmeanba_impact.png", "report.vmeanba_metric_vs_k.png"}
    for p in out_dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p  # report.json too (was 0600)
    report = json.loads((out_dir / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert report["selection"]["max_drop"] == 0.01 and report["parity"]["passed"]
    assert report["selection"]["joint_drop"] <= 0.01 + 1e-12
    md = (out_dir / "report.md").read_text()
    assert "## VMeanba selection" in md and "PASS" in md and report["selection"]["layers"][0] in md
    for png in ("report.vmeanba_impact.png", "report.vmeanba_metric_vs_k.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = [(Path(s).resolve(), Path(d).resolve()) for s, d in renames]
    assert resolved and all(d.parent in (s.parent, s.parent.parent) for s, d in resolved)
    assert any(Path(s).parent.name.startswith(".vm-export-staging-") for s, _ in renames)
    assert not _ours_in(quiet_tmp / "tmpdir")


@pytest.mark.slow
def test_synthetic_warning_once_and_pipeline_returns_dataclasses(quiet_tmp, capsys):
    result = pipeline.run(pipeline.Options(vmeanba_layers="k=1", calib="synthetic:8", output="o/m.onnx",
                                           dynamic=False, threads=1))
    assert isinstance(result.source, pipeline.Source) and isinstance(result.compression, pipeline.Compression)
    assert result.export.onnx_path == Path("o/m.onnx") and result.verification is None
    assert result.compression.selection.synthetic and len(result.compression.selection.layers) == 1
    assert not hasattr(result.compression.model, "vmeanba_selection")
    assert sum("SYNTHETIC NOISE" in w for w in result.warnings) == 1
    code = cli.main(["--vmeanba-layers", "k=1", "--calib", "synthetic:8", "-o", "o/m.onnx", "--static", "--threads",
                     "1", "--quiet"])
    _, err = capsys.readouterr()
    assert code == 0 and err.count("SYNTHETIC NOISE") == 1, err


def test_report_json_is_standard_json():
    safe = pipeline._json_safe({"parity": {"max_abs_error": float("inf"), "mean": float("nan"), "ok": 1.5}})
    assert json.loads(json.dumps(safe, allow_nan=False)) == {"parity": {"max_abs_error": None, "mean": None, "ok": 1.5}}


def test_loaded_machine_latency_warning():
    from exporter.verify.parity import LatencyReport, machine_load_warning

    calm = LatencyReport("pytorch-eager", [1, 3, 32, 32], 2, 10, 5.0, 4.8, 5.5, 1, cpu_share=0.97)
    starved = LatencyReport("pytorch-eager", [1, 3, 32, 32], 2, 10, 2993.0, 40.0, 3100.0, 1, cpu_share=0.02)
    assert machine_load_warning(calm, load_average=0.5, cpus=2) is None
    assert "load average 7.0 on 2 cores" in machine_load_warning(calm, load_average=7.0, cpus=2)
    text = machine_load_warning(starved, load_average=0.5, cpus=2)
    assert "had the CPU for 2%" in text and "spread" in text and "--threads 1" in text


# --------------------------------------------------------------------------- pretrained configs
def test_digits_models_are_registered_with_their_input_size_and_weights():
    from exporter.models import MODEL_CONFIGS
    from exporter.models.registry import load_pretrained
    from exporter.samples_data import DIGITS_RESOLUTION, digits_model_info

    for family in ("vmamba", "medmamba"):
        cfg = MODEL_CONFIGS[f"digits_{family}"]
        assert cfg.family == family and cfg.default_cfg.resolution == DIGITS_RESOLUTION
        assert cfg.kwargs == digits_model_info(family)["config"] and cfg.default_cfg.weights.exists()
        model = load_pretrained(f"digits_{family}")
        assert not hasattr(model, "digits_info") and not hasattr(model, "arch_name") and not model.training


def test_pretrained_cfg_gives_the_official_transforms():
    from exporter.models import MODEL_CONFIGS
    from exporter.preprocess import preprocessing_for

    vm = preprocessing_for(MODEL_CONFIGS["vmamba_tiny_s1l8"].default_cfg)
    assert (vm.resolution, vm.mode, vm.resize_size, vm.interpolation) == (224, "resize-crop", 256, "bicubic")
    assert vm.mean == (0.485, 0.456, 0.406)
    med = preprocessing_for(MODEL_CONFIGS["medmamba_t"].default_cfg)
    assert (med.resolution, med.mode, med.interpolation, med.mean, med.std) == \
        (224, "resize", "bilinear", (0.5,) * 3, (0.5,) * 3)
    for res in range(8, 400):  # int(256 / 224 * res), the official formula, at every size
        assert preprocessing_for(MODEL_CONFIGS["vmamba_tiny_s1l8"].default_cfg, res).resize_size == int(256 / 224 * res)


def test_samples_data_and_calibration_do_not_import_each_other():
    samples = (REPO / "exporter" / "samples_data.py").read_text()
    assert "exporter.compress" not in samples  # calibration -> samples_data only: no cycle


# --------------------------------------------------------------------------- contract limits
def test_quartermap_limits_come_from_the_contract():
    from exporter.models.ss2d import QuarterMapSpec
    from plugins.contract import QUARTERMAP_DOWN

    spec = QuarterMapSpec()
    assert (spec.stride, spec.keep) == (QUARTERMAP_DOWN.default("stride"), QUARTERMAP_DOWN.default("keep"))
    for stride, keep, ok in [(2, 1, True), (64, 64, True), (2, 3, False), (65, 1, False), (3, 0, False)]:
        constraint_ok = all(c.holds({"stride": stride, "keep": keep}) for c in QUARTERMAP_DOWN.constraints)
        assert constraint_ok == ok
        if ok:
            QuarterMapSpec(stride, keep)
        else:
            with pytest.raises(ValueError):
                QuarterMapSpec(stride, keep)


def test_contract_matches_the_kernel_header():
    """The float32 scan inputs and the d_state limit the YAML states are the ones vmamba_kernels.h documents."""
    from plugins.contract import FLOAT32_SCAN_INPUTS, MAX_D_STATE, SS2D_SCAN

    header = (REPO / "trt_plugins_cpp" / "kernels" / "vmamba_kernels.h").read_text()
    documented = re.findall(r"^\s*\*\s*(\w+)\s*:\s*\([^)]*\)\s*float32", header, flags=re.M)
    assert tuple(documented) == FLOAT32_SCAN_INPUTS
    assert f"d_state 1..{MAX_D_STATE}" in header
    assert SS2D_SCAN.dims["N"]["min"] == 1


def test_generated_header_carries_relations_and_variant_names():
    from plugins import contract

    text = contract.emit_cpp_header()
    assert "kKEEP_LE_STRIDE = true;  // 1 <= keep <= stride <= 64" in text
    for name, value in contract.VMEANBA_VARIANTS.items():
        assert f"kVARIANT_{name.replace('-', '_').upper()} = {value};" in text
    assert f"kDim_N_MAX = {contract.MAX_D_STATE};" in text


def test_one_float32_parameter_list_for_export_and_runtime():
    from exporter.export import onnx_export
    from exporter.models.ss2d import cast_model
    from exporter.runtime import FLOAT32_SSM_PARAMS, cast_model as runtime_cast
    from plugins.contract import FLOAT32_SCAN_INPUTS

    assert onnx_export.FP32_SCAN_PARAMS is FLOAT32_SCAN_INPUTS and FLOAT32_SSM_PARAMS is FLOAT32_SCAN_INPUTS
    assert runtime_cast is cast_model


# --------------------------------------------------------------------------- family loading
def test_checkpoint_filter_runs_once(tmp_path, monkeypatch):
    from exporter.models import VMamba, vmamba
    from exporter.models.loader import load_checkpoint_model

    torch.manual_seed(0)
    model = VMamba(depths=[1, 1], dims=8, num_classes=3, ssm_d_state=1, ssm_ratio=1.0, forward_type="v05_noz",
                   mlp_ratio=2.0, downsample_version="v3", patchembed_version="v2", norm_layer="ln2d").eval()
    torch.save(model.state_dict(), tmp_path / "m.pth")
    calls = []
    real = vmamba.checkpoint_filter_fn
    monkeypatch.setattr(vmamba, "checkpoint_filter_fn", lambda sd: calls.append(1) or real(sd))
    loaded = load_checkpoint_model(tmp_path / "m.pth")
    assert len(calls) == 1 and loaded.arch == "custom" and loaded.default_cfg == VMamba.default_cfg
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_d_state_beyond_the_plugin_limit_is_a_warning():
    from exporter.models import VMamba
    from plugins.contract import MAX_D_STATE

    def small(d_state):
        return VMamba(depths=[1, 1], dims=8, num_classes=3, ssm_d_state=d_state, ssm_ratio=1.0,
                      forward_type="v05_noz", mlp_ratio=2.0, downsample_version="v3", patchembed_version="v2",
                      norm_layer="ln2d")

    assert pipeline.plugin_limit_warnings(small(MAX_D_STATE)) == []
    (warning,) = pipeline.plugin_limit_warnings(small(MAX_D_STATE + 1))
    assert f"d_state = {MAX_D_STATE + 1} is outside 1..{MAX_D_STATE}" in warning and "ONNX Runtime" in warning


def _header_structs(header: str) -> dict[str, list[tuple[str, str]]]:
    """{struct name: [(field, C type or "pointer")]} of the ``typedef struct {...} name;`` blocks."""
    structs = {}
    for body, name in re.findall(r"typedef struct \{(.*?)\}\s*(\w+);", header, flags=re.S):
        fields = []
        for decl in filter(None, (" ".join(d.split()) for d in body.split(";"))):
            ctype, stars, names = re.fullmatch(r"(?:const )?(\w+)\s*(\**)\s*(.*)", decl).groups()
            fields += [(n.strip(), "pointer" if stars else ctype) for n in names.split(",")]
        structs[name] = fields
    return structs


def test_ctypes_structs_and_contract_match_the_kernel_header_layout():
    """plugins/kernels.py's ctypes structs are field for field the C structs of vmamba_kernels.h, and the
    scan struct's input pointers are the contract's inputs in order, float32 exactly where the contract says."""
    import ctypes

    from plugins import kernels
    from plugins.contract import FLOAT32_SCAN_INPUTS, SS2D_SCAN

    header = (REPO / "trt_plugins_cpp" / "kernels" / "vmamba_kernels.h").read_text()
    structs = _header_structs(header)
    c_types = {"int32_t": ctypes.c_int32, "vmk_dtype_t": ctypes.c_int, "pointer": ctypes.c_void_p}
    for cls, c_name in ((kernels.Ss2dArgs, "vmk_ss2d_args_t"), (kernels.QuarterMapDownArgs, "vmk_quartermap_down_args_t"),
                        (kernels.QuarterMapUpArgs, "vmk_quartermap_up_args_t")):
        assert [(n, c_types[t]) for n, t in structs[c_name]] == list(cls._fields_), c_name
    pointers = [n for n, t in structs["vmk_ss2d_args_t"] if t == "pointer" and n != "y"]
    assert pointers == [t.name for t in SS2D_SCAN.inputs]
    float_ptrs = tuple(n for n in pointers if re.search(rf"const float\* {n};", header))
    assert float_ptrs == FLOAT32_SCAN_INPUTS  # the header's float* fields are the contract's float32 inputs
