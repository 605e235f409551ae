"""Feature backbones (segmentation / detection): parity with the official ``Backbone_VSSM``, loading
mmsegmentation / mmdetection containers, compression and label-free layer selection on backbones.

Golden data: tests/data/backbone_golden.pt and tests/data/backbone_key_manifest.json, made by
tests/make_backbone_golden.py from the official code (its docstring says how). Tolerance: 1e-4 max
abs per float32 feature map, as for the classification logits (tests/test_official_parity.py).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from exporter.checkpoint import CheckpointError
from exporter.compress import apply_quartermap, apply_vmeanba, select_vmeanba_layers
from exporter.compress.calibration import CalibrationSet
from exporter.compress.report import write_selection_report
from exporter.models import MODEL_CONFIGS, MedMamba, VMamba, create_model
from exporter.models.loader import infer_architecture, load_checkpoint_model, load_model
from exporter.models.medmamba import MedMambaBackbone
from exporter.models.vmamba import VMambaBackbone

DATA = Path(__file__).resolve().parent / "data"
FEATURE_MAP_TOL = 1e-4
FIXTURES = ["backbone_v05noz_ln2d", "backbone_v0_ln"]
# mmsegmentation UperNet and mmdetection Mask R-CNN heads next to "backbone." (one tensor each suffices)
UPERNET_HEADS = {"decode_head.conv_seg.weight": (150, 512, 1, 1), "decode_head.conv_seg.bias": (150,),
                 "auxiliary_head.conv_seg.weight": (150, 256, 1, 1)}
MASK_RCNN_HEADS = {"neck.lateral_convs.0.conv.weight": (256, 96, 1, 1), "rpn_head.rpn_cls.weight": (3, 256, 1, 1),
                   "roi_head.bbox_head.fc_cls.weight": (81, 1024)}


@pytest.fixture(scope="module")
def golden():
    return torch.load(DATA / "backbone_golden.pt", weights_only=True)


@pytest.fixture(scope="module")
def manifest():
    return json.loads((DATA / "backbone_key_manifest.json").read_text())


def _max_abs(maps, reference) -> list[float]:
    assert len(maps) == len(reference) == 4
    for a, b in zip(maps, reference):
        assert a.shape == b.shape
    return [(a - b).abs().max().item() for a, b in zip(maps, reference)]


def _golden_backbone(golden, name) -> VMambaBackbone:
    fixture = golden["fixtures"][name]
    model = VMambaBackbone(out_indices=(0, 1, 2, 3), **fixture["config"]).eval()
    model.load_state_dict(fixture["state_dict"], strict=True)
    return model


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _container(backbone_state: dict, heads: dict) -> dict:
    """What mmsegmentation / mmdetection save: meta, and the whole model's state dict."""
    state = {f"backbone.{k}": v for k, v in backbone_state.items()}
    state.update({k: torch.randn(shape) for k, shape in heads.items()})
    return {"meta": {"mmseg_version": "1.2.2", "dataset_meta": {"classes": ("wall", "building")}, "iter": 160000},
            "state_dict": state}


# --------------------------------------------------------------------------- parity with the official code
@pytest.mark.parametrize("name", FIXTURES)
def test_backbone_reproduces_official_feature_maps(golden, name):
    """Square (64x64, batch 2) and non-square with odd stage sizes (112x80: stage 2 is 7x5)."""
    model = _golden_backbone(golden, name)
    inputs, outputs = golden["inputs"], golden["fixtures"][name]["outputs"]
    assert [tuple(x.shape[-2:]) for x in inputs] == [(64, 64), (112, 80)]
    with torch.no_grad():
        errors = [_max_abs(model(x), maps) for x, maps in zip(inputs, outputs)]
    assert max(max(e) for e in errors) <= FEATURE_MAP_TOL, f"{name}: max abs per map {errors}"


@pytest.mark.parametrize("name", FIXTURES)
def test_backbone_out_norm_kind_follows_norm_layer(golden, name):
    model = _golden_backbone(golden, name)
    expected = "LayerNorm2d" if golden["fixtures"][name]["config"]["norm_layer"] == "ln2d" else "LayerNorm"
    assert [type(getattr(model, f"outnorm{i}")).__name__ for i in range(4)] == [expected] * 4
    assert not hasattr(model, "classifier") and model.output_names == ["feat0", "feat1", "feat2", "feat3"]


@pytest.mark.parametrize("name", sorted(json.loads((DATA / "backbone_key_manifest.json").read_text())))
def test_features_model_creates_official_backbone_keys(manifest, name):
    """Every registered VMamba config, full size: the keys and shapes of the official Backbone_VSSM."""
    with torch.device("meta"):
        model = create_model(name, features_only=True, out_indices=(0, 1, 2, 3))
    created = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert created == manifest[name]["keys"]


@pytest.mark.parametrize("name", ["vmamba_tiny_s1l8", "vanilla_vmamba_tiny", "vmamba_base_s2l15"])
def test_infer_architecture_names_the_released_backbone(manifest, name):
    """Shapes alone (meta tensors) of a released backbone with UperNet heads identify its config."""
    keys = {f"backbone.{k}": torch.empty(s, device="meta") for k, s in manifest[name]["keys"].items()}
    keys.update({k: torch.empty(s, device="meta") for k, s in UPERNET_HEADS.items()})
    guess = infer_architecture(keys, features_only=True)
    assert guess.matched_config == name and guess.num_classes == 0


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_every_registered_config_has_a_features_model(name):
    """Shapes on the meta device (no data): one channels-first map per stage, strides 4..32."""
    with torch.device("meta"):
        model = create_model(name, features_only=True).eval()
        with torch.no_grad():
            maps = model(torch.empty(2, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(2, d, 16 // 2 ** i, 24 // 2 ** i) for i, d in enumerate(model.dims)]
    assert model.num_classes == 0 and sum(p.numel() for n, p in model.named_parameters() if "head" in n) == 0


def test_out_indices_subset_returns_those_stages_in_order():
    full = _perturbed(create_model("digits_vmamba", features_only=True))
    part = create_model("digits_vmamba", features_only=True, out_indices=(3, 1)).eval()
    state = {k: v for k, v in full.state_dict().items() if not k.startswith(("outnorm0.", "outnorm2."))}
    part.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = full(x), part(x)
    assert part.output_names == ["feat1", "feat3"]
    assert torch.equal(b[0], a[1]) and torch.equal(b[1], a[3])
    with pytest.raises(ValueError, match="out_indices"):
        create_model("digits_vmamba", features_only=True, out_indices=(4,))


@pytest.mark.parametrize("family", ["vmamba", "medmamba"])
def test_backbone_without_out_norms_is_the_classifier_trunk(family):
    """Independent reference: the classifier's own forward_features is the last stage's map."""
    name = {"vmamba": "digits_vmamba", "medmamba": "digits_medmamba"}[family]
    classifier = _perturbed(create_model(name))
    backbone = create_model(name, features_only=True, out_norms=False).eval()
    backbone.load_state_dict({k: v for k, v in classifier.state_dict().items()
                              if not k.startswith(("classifier.", "head."))}, strict=True)
    with_norms = create_model(name, features_only=True).eval()
    with_norms.load_state_dict({**backbone.state_dict(), **{k: v for k, v in _perturbed(
        create_model(name, features_only=True), seed=3).state_dict().items() if k.startswith("outnorm")}})
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        last = classifier.forward_features(x)
        maps, normed = backbone(x), with_norms(x)
    if family == "medmamba" or not classifier.channel_first:
        last = last.permute(0, 3, 1, 2)
    assert torch.equal(maps[3], last)
    norm = with_norms.outnorm3
    expected = F.layer_norm(last.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(normed[3], expected.permute(0, 3, 1, 2), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- loading checkpoints
@pytest.mark.parametrize("heads", [UPERNET_HEADS, MASK_RCNN_HEADS], ids=["upernet", "mask-rcnn"])
def test_load_dense_prediction_container(tmp_path, golden, heads, caplog):
    source = _golden_backbone(golden, "backbone_v05noz_ln2d")
    path = tmp_path / "upernet.pth"
    torch.save(_container(source.state_dict(), heads), path)
    with caplog.at_level(logging.INFO, logger="exporter"):
        loaded = load_checkpoint_model(path, features_only=True)
    heads_by_name = {}
    for key in heads:
        heads_by_name[key.split(".")[0]] = heads_by_name.get(key.split(".")[0], 0) + 1
    assert loaded.ignored == heads_by_name
    for head in heads_by_name:  # named in the notes and the log
        assert head in loaded.notes[0] and head in caplog.text
    assert loaded.features == {"out_indices": [0, 1, 2, 3], "out_norms": True}
    assert loaded.info["container_key"] == "state_dict" and not loaded.model.training
    x = golden["inputs"][1]
    with torch.no_grad():
        errors = _max_abs(loaded.model(x), golden["fixtures"]["backbone_v05noz_ln2d"]["outputs"][1])
    assert max(errors) <= FEATURE_MAP_TOL
    assert isinstance(load_model(path, features_only=True), VMambaBackbone)


def test_dense_container_of_a_released_config_is_named(tmp_path):
    source = _perturbed(create_model("digits_vmamba", features_only=True))
    path = tmp_path / "seg.pth"
    torch.save(_container(source.state_dict(), UPERNET_HEADS), path)
    loaded = load_checkpoint_model(path, features_only=True)
    assert loaded.arch == "custom"  # a bundled config is never inferred (only released ones are)
    requested = load_checkpoint_model(path, arch="digits_vmamba", features_only=True)
    for key, value in source.state_dict().items():
        assert torch.equal(requested.model.state_dict()[key], value), key


def test_dense_container_without_features_only_is_refused(tmp_path, golden):
    path = tmp_path / "upernet.pth"
    torch.save(_container(_golden_backbone(golden, "backbone_v0_ln").state_dict(), UPERNET_HEADS), path)
    with pytest.raises(CheckpointError, match=r"segmentation / detection checkpoint.*decode_head.*features_only=True"):
        load_model(path)


def test_backbone_mismatch_is_refused_with_a_hint(tmp_path, golden):
    source = _perturbed(create_model("digits_vmamba", features_only=True))
    state = source.state_dict()
    state["layers.1.blocks.0.op.in_proj.weight"] = torch.randn(7, 32)
    path = tmp_path / "bad.pth"
    torch.save(_container(state, UPERNET_HEADS), path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, arch="digits_vmamba", features_only=True)
    message = str(err.value)
    assert "does not fit the backbone of digits_vmamba" in message
    expected = tuple(source.state_dict()["layers.1.blocks.0.op.in_proj.weight"].shape)
    assert f"wrong-shape: layers.1.blocks.0.op.in_proj.weight checkpoint (7, 32) vs model {expected}" in message
    other = tmp_path / "other.pth"  # another architecture altogether: the hint describes what it is
    torch.save(_container(_golden_backbone(golden, "backbone_v0_ln").state_dict(), MASK_RCNN_HEADS), other)
    with pytest.raises(CheckpointError, match=r"does not fit the backbone of digits_vmamba: .*missing.*"
                                              r"no released config fits; it looks like custom \(vmamba v0\): "
                                              r"depths=\[1, 1, 2, 1\], dims=\[8, 16, 32, 64\]"):
        load_model(other, arch="digits_vmamba", features_only=True)


def test_out_indices_without_their_out_norms_are_refused(tmp_path):
    source = _perturbed(create_model("digits_vmamba", features_only=True, out_indices=(1, 2, 3)))
    path = tmp_path / "seg.pth"
    torch.save(_container(source.state_dict(), UPERNET_HEADS), path)
    assert load_checkpoint_model(path, features_only=True).features["out_indices"] == [1, 2, 3]
    with pytest.raises(CheckpointError, match=r"stage\(s\) \[0\].*out norms for stages \[1, 2, 3\]"):
        load_model(path, features_only=True, out_indices=(0, 1, 2, 3))


@pytest.mark.parametrize("name", ["digits_vmamba", "digits_medmamba"])
def test_classification_checkpoint_gives_its_backbone(tmp_path, name):
    classifier = _perturbed(create_model(name))
    path = tmp_path / "cls.pth"
    torch.save({"model": classifier.state_dict(), "epoch": 300}, path)
    loaded = load_checkpoint_model(path, features_only=True)
    assert loaded.features["out_norms"] is False and "classifier" in loaded.ignored
    assert not any(k.startswith("outnorm") for k in loaded.model.state_dict())
    asked = load_checkpoint_model(path, features_only=True, out_norms=True)
    assert asked.features["out_norms"] is True and "no out norms" in " ".join(asked.notes)
    assert torch.equal(asked.model.outnorm2.weight, torch.ones_like(asked.model.outnorm2.weight))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        last = classifier.forward_features(x)
        maps = loaded.model(x)
    if isinstance(classifier, MedMamba) or not classifier.channel_first:
        last = last.permute(0, 3, 1, 2)
    assert torch.equal(maps[-1], last)
    with pytest.raises(CheckpointError, match="num_classes"):
        load_model(path, features_only=True, num_classes=10)


def test_dense_container_with_code_is_refused_and_nothing_runs(tmp_path, golden):
    from tests.malicious_payloads import RunsShellCommand

    marker = tmp_path / "pwned"
    container = _container(_golden_backbone(golden, "backbone_v0_ln").state_dict(), UPERNET_HEADS)
    container["meta"]["hook"] = RunsShellCommand(marker)
    path = tmp_path / "evil.pth"
    torch.save(container, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model(path, features_only=True)
    assert not marker.exists()


def test_medmamba_backbone_loads_from_a_container(tmp_path):
    source = _perturbed(create_model("digits_medmamba", features_only=True))
    path = tmp_path / "med.pth"
    torch.save(_container(source.state_dict(), UPERNET_HEADS), path)
    model = load_model(path, features_only=True)
    assert isinstance(model, MedMambaBackbone)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), source(x)))


# --------------------------------------------------------------------------- compression
def test_compression_applies_to_backbones_unchanged(golden):
    """VMeanba + QuarterMap on the backbone give the compressed classifier's trunk (same weights)."""
    backbone = _golden_backbone(golden, "backbone_v0_ln")
    config = golden["fixtures"]["backbone_v0_ln"]["config"]
    classifier = VMamba(**{**config, "num_classes": 3}).eval()
    classifier.load_state_dict({**{k: v for k, v in backbone.state_dict().items() if not k.startswith("outnorm")},
                                **{k: v for k, v in classifier.state_dict().items() if k.startswith("classifier.")}})
    assert list(backbone.ssm_layers()) == list(classifier.ssm_layers())  # layer specs name the same blocks

    def compress(m):
        return apply_quartermap(apply_vmeanba(m, "layers.2.blocks.0,layers.3.blocks.0"), "layers.0.blocks.0")

    small_backbone, small_classifier = compress(backbone), compress(classifier)
    bare = VMambaBackbone(out_norms=False, **config).eval()
    bare.load_state_dict({k: v for k, v in backbone.state_dict().items() if not k.startswith("outnorm")})
    small_bare = compress(bare)
    x = golden["inputs"][0]
    with torch.no_grad():
        maps, plain_maps = small_backbone(x), backbone(x)
        assert torch.equal(small_bare(x)[3], small_classifier.forward_features(x).permute(0, 3, 1, 2))
    assert (maps[0] - plain_maps[0]).abs().max() > 1e-3  # QuarterMap on stage 0 changes its map
    assert (maps[3] - plain_maps[3]).abs().max() > 1e-3


def _cal(n=4, size=32, seed=0) -> CalibrationSet:
    gen = torch.Generator().manual_seed(seed)
    return CalibrationSet(torch.randn(n, 3, size, size, generator=gen), None, "test noise", "none", synthetic=True)


@pytest.mark.parametrize("metric", ["feature-cosine", "feature-relerr"])
def test_feature_metric_selection_on_a_backbone(tmp_path, golden, metric):
    backbone = _golden_backbone(golden, "backbone_v05noz_ln2d")
    cal = _cal()
    result = select_vmeanba_layers(backbone, cal, max_drop=0.05, metric=metric, progress=False,
                                   curve=metric == "feature-cosine")
    assert result.metric == metric and result.higher_is_better == (metric == "feature-cosine")
    assert result.baseline == pytest.approx(1.0 if metric == "feature-cosine" else 0.0, abs=1e-12)
    assert result.joint_drop <= 0.05 + 1e-12
    # one layer's score, recomputed here from the maps
    layer = result.order[-1]
    compressed = apply_vmeanba(backbone, [layer])
    with torch.no_grad():
        ref, out = backbone(cal.images), compressed(cal.images)
    per_stage = []
    for a, b in zip(out, ref):
        a, b = a.flatten(1).double(), b.flatten(1).double()
        if metric == "feature-cosine":
            per_stage.append(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())
        else:
            per_stage.append(((a - b).norm(dim=1) / b.norm(dim=1)).mean())
    assert result.layer_scores[layer] == pytest.approx(torch.stack(per_stage).mean().item(), rel=1e-6, abs=1e-9)
    assert result.impacts[layer] > 0
    paths = write_selection_report(result, tmp_path, print_table=False)
    assert json.loads(Path(paths["json"]).read_text())["metric"] == metric
    assert Path(paths["impact_png"]).stat().st_size > 0


def test_backbone_selection_defaults_to_feature_cosine_and_refuses_class_metrics(golden):
    backbone = _golden_backbone(golden, "backbone_v0_ln")
    result = select_vmeanba_layers(backbone, _cal(n=2), k=1, progress=False, curve=False,
                                   candidates="layers.2.blocks.0,layers.3.blocks.0")
    assert result.metric == "feature-cosine" and len(result.layers) == 1
    with pytest.raises(ValueError, match="feature backbone"):
        select_vmeanba_layers(backbone, _cal(n=2), k=1, metric="agreement", progress=False)


def test_mmengine_checkpoint_with_its_training_log_loads(tmp_path, golden, monkeypatch):
    """mmseg / mmdet 1.x (mmengine) save a "message_hub" whose HistoryBuffers hold numpy arrays: they
    unpickle as inert stand-ins; the real class is never imported or called (its __setstate__ would
    write a marker)."""
    import sys
    import types

    import numpy as np

    marker = tmp_path / "history_buffer_ran"

    class HistoryBuffer:
        def __init__(self):
            self._log_history, self._count_history, self.max_length = np.array([0.5, 0.25]), np.array([1, 1]), 10

        def __setstate__(self, state):
            marker.write_text("ran")
            self.__dict__.update(state)

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = "mmengine.logging.history_buffer", "HistoryBuffer"
    stub = types.ModuleType("mmengine.logging.history_buffer")
    stub.HistoryBuffer = HistoryBuffer
    for name in ("mmengine", "mmengine.logging"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "mmengine.logging.history_buffer", stub)
    container = _container(_golden_backbone(golden, "backbone_v0_ln").state_dict(), UPERNET_HEADS)
    container["message_hub"] = {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"iter": 160000}}
    path = tmp_path / "mmengine.pth"
    torch.save(container, path)
    loaded = load_checkpoint_model(path, features_only=True)
    assert not marker.exists() and loaded.info["container_key"] == "state_dict"
    assert set(loaded.ignored) == {"decode_head", "auxiliary_head"}
