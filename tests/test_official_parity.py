"""Official-checkpoint compatibility: the golden fixtures produced by the official VMamba / MedMamba
code (see <fixtures>/README.md) load strictly and reproduce the official logits, and the released
configurations create exactly the official key names and shapes.

Tolerance: 1e-4 max abs on float32 logits (the README's bound). Both sides compute in float32 with a
sequential scan; only summation order differs, which moves logits of this size by ~1e-7..1e-6.
"""
from __future__ import annotations

import json

import pytest
import torch

from exporter.models.loader import infer_architecture, load_checkpoint_model
from exporter.models import MODEL_CONFIGS, MedMamba, VMamba, create_model

pytestmark = pytest.mark.fixtures

FLOAT32_LOGIT_TOL = 1e-4
FIXTURES = ["vmamba_v05noz_r1_ds1", "vmamba_v05noz_r2_ds1", "vmamba_v0_ds16", "medmamba_small_cfg"]
# released checkpoint / config names of the manifest -> registry names
MANIFEST_TO_REGISTRY = {
    "vssm1_tiny_0230s": "vmamba_tiny_s1l8",
    "vssm1_small_0229": "vmamba_small_s2l15",
    "vssm1_base_0229": "vmamba_base_s2l15",
    "vssm1_small_0229s": "vmamba_small_s1l20",
    "vssm1_base_0229s": "vmamba_base_s1l20",
    "vssm_tiny_v0": "vanilla_vmamba_tiny",
    "medmamba_t": "medmamba_t",
    "medmamba_s": "medmamba_s",
    "medmamba_b": "medmamba_b",
}


def _load_fixture(fixtures_dir, name):
    return torch.load(fixtures_dir / f"{name}.pt", weights_only=True)


def _max_abs_errors(model, cases):
    with torch.no_grad():
        return [(model(c["input"]) - c["output"]).abs().max().item() for c in cases]


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_loads_strict_and_reproduces_official_logits(fixtures_dir, name):
    fixture = _load_fixture(fixtures_dir, name)
    model_cls = {"vmamba": VMamba, "medmamba": MedMamba}[fixture["family"]]
    model = model_cls(**fixture["config"]).eval()
    model.load_state_dict(fixture["state_dict"], strict=True)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in fixture["state_dict"].items()}
    errors = _max_abs_errors(model, fixture["cases"])
    assert len(errors) == 2  # one square and one non-square input
    assert max(errors) <= FLOAT32_LOGIT_TOL, f"{name}: max abs logit error {errors}"


@pytest.mark.parametrize("name", FIXTURES)
def test_load_model_infers_fixture_architecture(fixtures_dir, name):
    """load_model on the fixture file itself (container key 'state_dict'), no arch given."""
    fixture = _load_fixture(fixtures_dir, name)
    loaded = load_checkpoint_model(fixtures_dir / f"{name}.pt")
    model, info = loaded.model, loaded.info
    assert info["container_key"] == "state_dict"
    assert info["arch"] == "custom"  # depths [1,1,2,1] / dims 32 is no released config
    assert model.family == fixture["family"] and not model.training
    config = fixture["config"]
    for key in ("depths", "dims", "num_classes", "ssm_d_state", "ssm_ratio", "forward_type", "mlp_ratio",
                "downsample_version", "patchembed_version", "norm_layer", "ssm_conv", "ssm_conv_bias", "d_state"):
        if key in config:
            assert info["kwargs"][key] == config[key], key
    assert max(_max_abs_errors(model, fixture["cases"])) <= FLOAT32_LOGIT_TOL


def test_legacy_v0_container_loads_with_inference(fixtures_dir):
    """Official-style container: {'model': legacy v0 names, 'config': yacs CfgNode, optimizer, epoch...}."""
    reference = _load_fixture(fixtures_dir, "vmamba_v0_ds16")
    loaded = load_checkpoint_model(fixtures_dir / "vmamba_v0_ds16_legacy_checkpoint.pth")
    model = loaded.model
    assert loaded.info["container_key"] == "model"
    assert loaded.info["kwargs"]["forward_type"] == "v0"
    for key, value in model.state_dict().items():  # the legacy names mapped onto the same tensors
        assert torch.equal(value, reference["state_dict"][key]), key
    assert max(_max_abs_errors(model, reference["cases"])) <= FLOAT32_LOGIT_TOL


@pytest.fixture(scope="module")
def manifest(fixtures_dir):
    return json.loads((fixtures_dir / "official_key_manifest.json").read_text())


def test_manifest_names_map_to_matching_registry_configs(manifest):
    """The name mapping is checked against the manifest's own constructor arguments."""
    assert set(manifest) == set(MANIFEST_TO_REGISTRY)
    for official, registry_name in MANIFEST_TO_REGISTRY.items():
        kwargs = MODEL_CONFIGS[registry_name].kwargs
        for key, value in manifest[official]["config"].items():
            assert kwargs[key] == value, f"{registry_name}.{key}: registry {kwargs[key]!r} vs official {value!r}"


def _num_classes(keys: dict) -> int:
    return (keys.get("classifier.head.weight") or keys["head.weight"])[0]


@pytest.mark.slow
@pytest.mark.parametrize("official", list(MANIFEST_TO_REGISTRY))
def test_released_config_creates_official_keys_and_shapes(manifest, official):
    keys = manifest[official]["keys"]
    model = create_model(MANIFEST_TO_REGISTRY[official], num_classes=_num_classes(keys))
    created = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(keys) - set(created))
    extra = sorted(set(created) - set(keys))
    wrong = [(k, created[k], keys[k]) for k in keys if k in created and created[k] != keys[k]]
    assert not missing and not extra and not wrong, (missing[:5], extra[:5], wrong[:5])


def _legacy_v0_name(key: str) -> str:
    """The pre-rename VMamba v0 naming (what vssm_tiny_v0-era checkpoints use), written independently."""
    for new, old in (("patch_embed.0.", "patch_embed.proj."), ("patch_embed.2.", "patch_embed.norm."),
                     ("classifier.norm.", "norm."), ("classifier.head.", "head.")):
        if key.startswith(new):
            return old + key[len(new):]
    parts = key.split(".")
    if parts[0] == "layers" and parts[2] == "blocks":
        parts[4] = {"norm": "ln_1", "op": "self_attention"}.get(parts[4], parts[4])
    return ".".join(parts)


@pytest.mark.parametrize("official", list(MANIFEST_TO_REGISTRY))
def test_infer_architecture_names_the_released_config(manifest, official):
    """Shapes alone (meta tensors, no data) identify the released config and its class count."""
    keys = manifest[official]["keys"]
    state_dict = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    guess = infer_architecture(state_dict)
    assert guess.matched_config == MANIFEST_TO_REGISTRY[official]
    assert guess.num_classes == _num_classes(keys)
    assert guess.kwargs["num_classes"] == _num_classes(keys)
    if official == "vssm_tiny_v0":
        legacy = {_legacy_v0_name(k): v for k, v in state_dict.items()}
        assert "layers.0.blocks.0.self_attention.A_logs" in legacy and "head.weight" in legacy
        assert infer_architecture(legacy).matched_config == "vanilla_vmamba_tiny"
