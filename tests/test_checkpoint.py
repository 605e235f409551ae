"""Checkpoint reading: untrusted pickles are refused without running anything, every supported
container / format / prefix yields the same tensors, broken files give CheckpointError, architecture
inference rebuilds non-standard models exactly, and strict-load mismatches name the keys."""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import exporter
from exporter.checkpoint import CheckpointError, ConfigNode, open_checkpoint, read_checkpoint
from exporter.models.loader import infer_architecture, load_checkpoint_model, load_model
from exporter.models import MedMamba, VMamba
from malicious_payloads import EvalsPython, RunsShellCommand

# small non-standard architectures (fast on CPU); each exercises settings the released ones do not
SMALL_VMAMBA = {
    "v2_line": dict(depths=[1, 2, 1], dims=24, num_classes=5, ssm_d_state=2, ssm_ratio=1.5, ssm_dt_rank="auto",
                    ssm_conv=3, ssm_conv_bias=False, forward_type="v05_noz", mlp_ratio=2.0,
                    downsample_version="v3", patchembed_version="v2", norm_layer="ln2d"),
    "v0_line": dict(depths=[2, 1], dims=[16, 40], num_classes=3, ssm_d_state=4, ssm_ratio=2.0, forward_type="v0",
                    mlp_ratio=0.0, downsample_version="v1", patchembed_version="v1", norm_layer="ln"),
    "gated_explicit_rank": dict(depths=[1, 1], dims=[32, 48], num_classes=4, ssm_d_state=3, ssm_ratio=1.0,
                                ssm_dt_rank=5, ssm_conv=5, ssm_conv_bias=True, forward_type="v05", mlp_ratio=1.0,
                                downsample_version="v2", patchembed_version="v2", norm_layer="ln2d", patch_size=2,
                                in_chans=1),
    "no_out_norm_batchnorm": dict(depths=[1, 1], dims=16, num_classes=2, ssm_d_state=1, ssm_ratio=2.0,
                                  forward_type="v05_noz_onnone", mlp_ratio=4.0, downsample_version="v3",
                                  patchembed_version="v2", norm_layer="bn"),
}
SMALL_MEDMAMBA = dict(depths=[1, 2], dims=[16, 32], num_classes=6, d_state=4)


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every float tensor off its initial value so that a wrong mapping cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def small_vmamba():
    return _perturbed(VMamba(**SMALL_VMAMBA["v2_line"]))


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- untrusted pickles


def _payloads(marker):
    weights = {"patch_embed.0.weight": torch.ones(2, 3, 4, 4)}
    return {
        "bare_os_system": RunsShellCommand(marker),
        "nested_in_model_container": {"model": {**weights, "evil": RunsShellCommand(marker)}, "epoch": 3},
        "builtins_eval_beside_weights": {"model": weights, "config": EvalsPython(marker)},
    }


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", ["bare_os_system", "nested_in_model_container", "builtins_eval_beside_weights"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, zip_format):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save(_payloads(marker)[payload], path, _use_new_zipfile_serialization=zip_format)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "not trusted" in message and str(path) in message
    assert ("system" if payload != "builtins_eval_beside_weights" else "builtins.eval") in message
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists(), "the checkpoint's code ran"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_file_is_refused(tmp_path, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": EvalsPython(marker)}}, protocol=protocol))
    with pytest.raises(CheckpointError, match=r"global builtins\.eval.*not trusted"):
        read_checkpoint(path)
    assert not marker.exists()


def test_pickled_module_is_refused_naming_its_class(tmp_path, small_vmamba):
    path = tmp_path / "whole_model.pth"
    torch.save(small_vmamba, path)
    with pytest.raises(CheckpointError, match=r"exporter\.models\.vmamba\.VMamba.*not trusted"):
        read_checkpoint(path)


@pytest.fixture
def fake_yacs(monkeypatch):
    """A stand-in ``yacs.config`` module, only while the test pickles: it reproduces how yacs' CfgNode
    (a dict subclass with bookkeeping attributes) pickles. It is removed before loading."""
    module = types.ModuleType("yacs.config")

    class CfgNode(dict):
        def __init__(self, init_dict=None):
            super().__init__(init_dict or {})
            self.__dict__["__immutable__"] = False
            self.__dict__["__deprecated_keys__"] = set()
            self.__dict__["__renamed_keys__"] = {}
            self.__dict__["__new_allowed__"] = False

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    module.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", types.ModuleType("yacs"))
    monkeypatch.setitem(sys.modules, "yacs.config", module)
    return CfgNode


def test_official_container_with_config_objects(tmp_path, fake_yacs, small_vmamba, caplog):
    weights = small_vmamba.state_dict()
    config = fake_yacs({"MODEL": fake_yacs({"TYPE": "vssm", "NAME": "vssm_small"}),
                        "TRAIN": fake_yacs({"EPOCHS": 300})})
    container = {"model": weights, "model_ema": {k: v + 1 for k, v in weights.items()}, "optimizer": {"state": {}},
                 "epoch": 7, "max_accuracy": np.float64(83.5), "args": argparse.Namespace(lr=1e-3, amp=True),
                 "config": config}
    path = tmp_path / "ckpt_epoch_7.pth"
    torch.save(container, path)
    sys.modules.pop("yacs.config")  # loading must not need yacs
    with caplog.at_level(logging.INFO, logger="exporter"):
        contents = open_checkpoint(path)
    assert contents.container_key == "model"
    assert _same_tensors(contents.state_dict, weights)  # "model", not the EMA copy
    assert isinstance(contents.config, ConfigNode) and contents.config.MODEL.NAME == "vssm_small"
    assert contents.config["TRAIN"]["EPOCHS"] == 300
    assert "container key 'model'" in caplog.text


def test_config_container_cannot_smuggle_a_call(tmp_path, fake_yacs):
    marker = tmp_path / "marker"
    path = tmp_path / "evil_cfg.pth"
    torch.save({"model": {"w": torch.ones(1)}, "config": fake_yacs({"X": RunsShellCommand(marker)})}, path)
    sys.modules.pop("yacs.config")
    with pytest.raises(CheckpointError, match="system"):
        read_checkpoint(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- containers, formats, prefixes
@pytest.mark.parametrize("key", ["model", "state_dict", "model_ema", "module"])
def test_container_keys(tmp_path, small_vmamba, key):
    weights = small_vmamba.state_dict()
    path = tmp_path / "c.pth"
    torch.save({key: weights, "epoch": 1}, path)
    contents = open_checkpoint(path)
    assert contents.container_key == key and _same_tensors(contents.state_dict, weights)


def test_model_is_preferred_over_state_dict_and_ema(tmp_path):
    path = tmp_path / "c.pth"
    torch.save({"model_ema": {"w": torch.zeros(2)}, "state_dict": {"w": torch.full((2,), 2.0)},
                "model": {"w": torch.ones(2)}}, path)
    assert torch.equal(read_checkpoint(path)["w"], torch.ones(2))


@pytest.mark.parametrize("prefix", ["module.", "backbone.", "module.backbone.", "_orig_mod."])
def test_wrapper_prefixes_are_stripped(tmp_path, small_vmamba, prefix):
    weights = small_vmamba.state_dict()
    path = tmp_path / "p.pth"
    torch.save({"state_dict": {prefix + k: v for k, v in weights.items()}}, path)
    contents = open_checkpoint(path)
    assert contents.stripped_prefix == prefix and _same_tensors(contents.state_dict, weights)
    model = load_model(path)
    assert _same_tensors(model.state_dict(), weights)


def test_prefix_on_some_keys_only_is_kept(tmp_path):
    path = tmp_path / "p.pth"
    torch.save({"module.a": torch.ones(1), "b": torch.ones(1)}, path)
    assert set(read_checkpoint(path)) == {"module.a", "b"}


def test_safetensors_round_trip(tmp_path, small_vmamba):
    weights = small_vmamba.state_dict()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    contents = open_checkpoint(path)
    assert contents.file_format == "safetensors" and _same_tensors(contents.state_dict, weights)
    model = load_model(path)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(model(x), small_vmamba(x))


def test_legacy_non_zip_torch_file(tmp_path, small_vmamba):
    path = tmp_path / "legacy.pth"
    torch.save({"model": small_vmamba.state_dict()}, path, _use_new_zipfile_serialization=False)
    contents = open_checkpoint(path)
    assert contents.file_format == "torch-legacy"
    assert _same_tensors(contents.state_dict, small_vmamba.state_dict())


def test_half_precision_checkpoint_loads_into_float32(tmp_path, small_vmamba):
    path = tmp_path / "fp16.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in small_vmamba.state_dict().items()}, path)
    model = load_model(path)
    for key, value in model.state_dict().items():
        assert value.dtype == small_vmamba.state_dict()[key].dtype
        assert torch.equal(value, small_vmamba.state_dict()[key].half().to(value.dtype))


def test_package_exports_load_model(tmp_path, small_vmamba):
    path = tmp_path / "m.pth"
    torch.save(small_vmamba.state_dict(), path)
    model = exporter.load_model(path)
    assert load_checkpoint_model(path).info["container_key"] is None and not model.training
    assert not hasattr(model, "checkpoint_info")  # results are returned, never stored on the model


# --------------------------------------------------------------------------- broken files
def _torch_file(tmp_path):
    path = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.randn(64, 64)}}, path)
    return path


BROKEN = {
    "truncated_zip": lambda p: _torch_file(p).read_bytes()[: len(_torch_file(p).read_bytes()) // 2],
    "random_bytes": lambda p: np.random.default_rng(0).bytes(4096),
    "empty": lambda p: b"",
    "text": lambda p: b"this is not a checkpoint\n",
    "truncated_safetensors": None,
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_files_give_checkpoint_error(tmp_path, kind):
    if kind == "truncated_safetensors":
        full = tmp_path / "full.safetensors"
        save_file({"w": torch.randn(64, 64)}, str(full))
        data, name = full.read_bytes()[:-100], "cut.safetensors"
    else:
        data, name = BROKEN[kind](tmp_path), f"{kind}.pth"
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="directory"):
        read_checkpoint(tmp_path)


def test_container_without_weights(tmp_path):
    path = tmp_path / "no_weights.pth"
    torch.save({"epoch": 3, "optimizer": {"state": {}}}, path)
    with pytest.raises(CheckpointError, match="no weights found"):
        read_checkpoint(path)


# --------------------------------------------------------------------------- architecture inference
def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("case", list(SMALL_VMAMBA))
def test_inference_rebuilds_nonstandard_vmamba(tmp_path, case):
    config = SMALL_VMAMBA[case]
    original = _perturbed(VMamba(**config))
    guess = infer_architecture(original.state_dict())
    assert guess.family == "vmamba" and guess.matched_config is None and guess.name == "custom"
    assert guess.line == ("v0" if config["forward_type"] == "v0" else "v2")
    assert guess.depths == config["depths"] and guess.num_classes == config["num_classes"]
    assert guess.d_state == config["ssm_d_state"] and guess.ssm_ratio == config["ssm_ratio"]
    for key in ("forward_type", "downsample_version", "patchembed_version", "mlp_ratio", "norm_layer", "dims",
                "ssm_dt_rank", "ssm_conv", "ssm_conv_bias", "patch_size", "in_chans"):
        if key in config:
            assert guess.kwargs[key] == config[key], key
    rebuilt = guess.build()
    assert _shapes(rebuilt) == _shapes(original)

    path = tmp_path / f"{case}.pth"
    torch.save({"model": original.state_dict()}, path)
    model = load_model(path)
    x = torch.randn(2, config.get("in_chans", 3), 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def test_inference_rebuilds_nonstandard_medmamba(tmp_path, caplog):
    original = _perturbed(MedMamba(**SMALL_MEDMAMBA))
    guess = infer_architecture(original.state_dict())
    assert (guess.family, guess.line, guess.depths, guess.dims, guess.d_state, guess.num_classes) == \
        ("medmamba", "medmamba", [1, 2], [16, 32], 4, 6)
    path = tmp_path / "med.pth"
    torch.save(original.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="exporter"):
        loaded = load_checkpoint_model(path)
    model = loaded.model
    assert "built custom architecture custom (medmamba medmamba): depths=[1, 2]" in caplog.text
    info = loaded.info
    assert (info["path"], info["container_key"], info["arch"]) == (str(path), None, "custom")
    assert info["kwargs"]["dims"] == [16, 32] and info["kwargs"]["d_state"] == 4
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def test_non_model_state_dict_is_a_clear_error():
    with pytest.raises(CheckpointError, match="layers"):
        infer_architecture({"fc.weight": torch.ones(2, 2)})


# --------------------------------------------------------------------------- mismatches
def test_missing_key_is_listed(tmp_path, small_vmamba):
    weights = dict(small_vmamba.state_dict())
    del weights["layers.1.blocks.1.op.Ds"]
    path = tmp_path / "m.pth"
    torch.save(weights, path)
    with pytest.raises(CheckpointError, match=r"1 missing: layers\.1\.blocks\.1\.op\.Ds"):
        load_model(path)


def test_unexpected_and_wrong_shape_keys_are_listed(tmp_path, small_vmamba):
    weights = dict(small_vmamba.state_dict())
    weights["layers.0.blocks.0.op.extra"] = torch.ones(1)
    path = tmp_path / "m.pth"
    torch.save(weights, path)
    with pytest.raises(CheckpointError, match=r"1 unexpected: layers\.0\.blocks\.0\.op\.extra"):
        load_model(path)
    torch.save(dict(small_vmamba.state_dict()), path)
    with pytest.raises(CheckpointError,
                       match=r"2 wrong-shape: classifier\.head\.weight checkpoint \(5, 96\) vs model \(9, 96\), "
                       r"classifier\.head\.bias checkpoint \(5,\) vs model \(9,\).*head has 5 classes"):
        load_model(path, num_classes=9)


@pytest.mark.slow
def test_wrong_arch_names_the_config_that_fits(tmp_path):
    from exporter.models import create_model

    weights = create_model("vmamba_tiny_s1l8", num_classes=10).state_dict()
    path = tmp_path / "tiny.pth"
    torch.save({"model": weights}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, arch="vmamba_small_s1l20")
    message = str(info.value)
    assert "missing: layers.2.blocks.8." in message and "(+" in message  # 12 blocks x keys, first few shown
    assert "released config vmamba_tiny_s1l8 with 10 classes: pass --arch vmamba_tiny_s1l8" in message
    loaded = load_checkpoint_model(path)
    assert loaded.arch == "vmamba_tiny_s1l8" and loaded.model.num_classes == 10


def test_unknown_arch_name(tmp_path, small_vmamba):
    path = tmp_path / "m.pth"
    torch.save(small_vmamba.state_dict(), path)
    with pytest.raises(CheckpointError, match="unknown arch 'vmamba_huge'"):
        load_model(path, arch="vmamba_huge")


def test_other_family_arch_names_what_the_checkpoint_is(tmp_path):
    path = tmp_path / "med.pth"
    torch.save(MedMamba(**SMALL_MEDMAMBA).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"does not fit vmamba_tiny_s2l5: \d+ missing: .*"
                                              r"it looks like custom \(medmamba medmamba\): depths=\[1, 2\]"):
        load_model(path, arch="vmamba_tiny_s2l5")
