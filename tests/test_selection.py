"""Calibration loading and VMeanba layer selection.

Selection is checked on the bundled digits model (exporter/assets, trained by
samples/train_digits.py), where VMeanba really costs accuracy: the chosen layers, applied again
through apply_vmeanba and scored here with a plain accuracy count, must stay within the requested
budget; impacts are re-measured independently; the K mode must take the K smallest impacts.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from exporter.compress import (SelectionResult, apply_vmeanba, family_preprocessing, load_calibration,
                               select_vmeanba_layers, write_selection_report)
from exporter.samples_data import ASSETS_DIR, digits_dataset, digits_model_info, load_digits_model

FAMILIES = ("vmamba", "medmamba")


pytestmark = pytest.mark.usefixtures("digits_cpu_settings")


# --------------------------------------------------------------------------- calibration
def _save(path, colour, size=(40, 30)):
    Image.new("RGB", size, colour).save(path)


def test_imagefolder_gives_labels_from_sorted_class_folders(tmp_path):
    for cls, colour in (("cat", (255, 0, 0)), ("ant", (0, 255, 0))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            _save(tmp_path / cls / f"{i}.png", colour)
    cal = load_calibration(tmp_path, "vmamba", resolution=16)
    assert cal.images.shape == (6, 3, 16, 16) and cal.class_names == ["ant", "cat"]
    # label 0 = "ant" (green), label 1 = "cat" (red); classes interleaved
    assert cal.labels.tolist() == [0, 1, 0, 1, 0, 1]
    red = (1.0 - 0.485) / 0.229
    assert torch.allclose(cal.images[1, 0], torch.full((16, 16), red), atol=1e-5)
    assert load_calibration(tmp_path, "vmamba", resolution=16, limit=2).labels.tolist() == [0, 1]


def test_vmamba_centre_crop_and_medmamba_full_resize(tmp_path):
    """A 64x48 image: white 32x24 centre on black. VMamba (resize shorter side to 256/224*R, centre
    crop R) sees only white at R=16 near the centre; MedMamba (resize R x R) keeps the black border."""
    image = Image.new("L", (64, 48), 0)
    image.paste(255, (16, 12, 48, 36))
    image.save(tmp_path / "a.png")
    vm = load_calibration(tmp_path, "vmamba", resolution=16)
    med = load_calibration(tmp_path, "medmamba", resolution=16)
    assert vm.labels is None and vm.images.shape == med.images.shape == (1, 3, 16, 16)
    white_vm = (1 - 0.485) / 0.229
    assert torch.allclose(vm.images[0, 0, 6:10, 6:10], torch.full((4, 4), white_vm), atol=1e-3)
    assert torch.allclose(med.images[0, :, 0, 0], torch.full((3,), -1.0), atol=1e-3)  # black, mean=std=0.5
    assert torch.allclose(med.images[0, :, 8, 8], torch.full((3,), 1.0), atol=1e-3)


def test_preprocessing_overrides():
    pre = family_preprocessing("medmamba", resolution=64, mean=0.2, std=[0.1, 0.2, 0.3])
    assert pre.resolution == 64 and pre.mean == (0.2, 0.2, 0.2) and pre.std == (0.1, 0.2, 0.3)
    assert family_preprocessing("vmamba").resize_size == 256
    with pytest.raises(ValueError, match="family"):
        family_preprocessing("resnet")


def test_numpy_sources(tmp_path):
    floats = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", floats)
    cal = load_calibration(tmp_path / "x.npy", "vmamba")
    assert torch.equal(cal.images, torch.from_numpy(floats)) and cal.labels is None
    raw = np.random.default_rng(1).integers(0, 256, (4, 20, 24, 3), dtype=np.uint8)
    np.savez(tmp_path / "raw.npz", images=raw, labels=np.array([3, 1, 2, 0]))
    cal = load_calibration(tmp_path / "raw.npz", "medmamba", resolution=12)
    assert cal.images.shape == (4, 3, 12, 12) and cal.labels.tolist() == [3, 1, 2, 0]


def test_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        load_calibration(tmp_path, "vmamba")
    (tmp_path / "class_a").mkdir()  # class folders without images: still empty
    with pytest.raises(ValueError, match="empty"):
        load_calibration(tmp_path, "vmamba")


def test_nan_inputs_are_a_clear_error(tmp_path):
    x = np.zeros((4, 3, 8, 8), np.float32)
    x[2, 1, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 of 4 samples \(first: index 2\)"):
        load_calibration(tmp_path / "nan.npy", "vmamba")


def test_missing_and_malformed_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_calibration(tmp_path / "nope", "vmamba")
    np.save(tmp_path / "bad.npy", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        load_calibration(tmp_path / "bad.npy", "vmamba")


def test_synthetic_calibration_warns_loudly():
    with pytest.warns(UserWarning, match="MEANINGLESS"):
        cal = load_calibration("synthetic:6", "vmamba", resolution=32)
    assert cal.synthetic and cal.images.shape == (6, 3, 32, 32) and cal.labels is None


# --------------------------------------------------------------------------- selection on the digits models
def _accuracy(model, images, labels) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).sum().item() / len(labels)


@pytest.fixture(scope="module", params=FAMILIES)
def digits(request):
    family = request.param
    if not (ASSETS_DIR / f"digits_{family}.safetensors").exists():
        pytest.skip(f"digits {family} weights missing: run python samples/train_digits.py")
    return family, load_digits_model(family)


def test_digits_model_reproduces_its_recorded_accuracy(digits):
    family, model = digits
    info = digits_model_info(family)
    for split in ("calibration", "test"):
        images, labels = digits_dataset(split, family)
        assert abs(_accuracy(model, images, labels) - info["accuracy"][split]) < 1e-3
    assert info["accuracy"]["test"] > 0.9


def test_budgeted_selection_stays_within_budget_on_held_out_data(digits, tmp_path):
    family, model = digits
    images, labels = digits_dataset("calibration", family)
    base = _accuracy(model, images, labels)
    drop_all = base - _accuracy(apply_vmeanba(model, "all"), images, labels)
    assert drop_all > 0  # VMeanba on every layer costs accuracy on these models
    # half of that: all layers together break the budget, so the budget constrains the choice
    budget = drop_all / 2
    result = select_vmeanba_layers(model, "digits:calibration", max_drop=budget, progress=False)
    assert result.metric == "accuracy" and result.layers
    joint = _accuracy(apply_vmeanba(model, result.layers), images, labels)
    assert abs(result.baseline - base) < 1e-9 and abs(result.joint - joint) < 1e-9
    assert base - joint <= budget + 1e-9
    assert len(result.layers) < len(model.ssm_layers())
    # impacts re-measured independently for two layers
    for name in (result.order[0], result.order[-1]):
        alone = _accuracy(apply_vmeanba(model, [name]), images, labels)
        assert abs(result.impacts[name] - (base - alone)) < 1e-9
    # report files exist and read back
    paths = write_selection_report(result, tmp_path, print_table=False)
    again = SelectionResult.from_json((tmp_path / "selection.json").read_text())
    assert again.layers == result.layers and again.impacts == result.impacts
    for key in ("impact_png", "curve_png"):
        with Image.open(paths[key]) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_k_mode_takes_the_k_smallest_impacts_and_is_deterministic(digits):
    family, model = digits
    cal = load_calibration("digits:calibration", family, limit=120)
    a = select_vmeanba_layers(model, cal, k=3, progress=False, curve=False)
    b = select_vmeanba_layers(model, cal, k=3, progress=False, curve=False)
    assert a.layers == b.layers and a.impacts == b.impacts
    names = list(model.ssm_layers())
    ranked = sorted(names, key=lambda n: (a.impacts[n], names.index(n)))
    assert sorted(a.layers) == sorted(ranked[:3])
    assert a.max_drop is None and a.curve == []


def test_label_free_metrics(digits):
    family, model = digits
    images, _ = digits_dataset("calibration", family)
    cal = load_calibration(images[:80].numpy(), family)
    assert cal.labels is None
    agree = select_vmeanba_layers(model, cal, k=2, progress=False)
    assert agree.metric == "agreement" and agree.baseline == 1.0
    kl = select_vmeanba_layers(model, cal, k=2, metric="kl", progress=False)
    assert kl.metric == "kl" and kl.baseline == 0.0 and not kl.higher_is_better
    # KL is a divergence: non-negative, and zero only for the layer-free model
    assert all(v >= 0 for v in kl.impacts.values()) and kl.curve[-1]["drop"] > 0
    with torch.no_grad():
        ref = torch.log_softmax(model(cal.images).double(), 1)
        new = torch.log_softmax(apply_vmeanba(model, kl.layers)(cal.images).double(), 1)
    assert abs((ref.exp() * (ref - new)).sum(1).mean().item() - kl.joint) < 1e-9
    with pytest.raises(ValueError, match="needs labels"):
        select_vmeanba_layers(model, cal, k=2, metric="accuracy", progress=False)


def test_selection_argument_errors(digits):
    family, model = digits
    cal = load_calibration("digits:calibration", family, limit=16)
    with pytest.raises(ValueError, match="k must be in"):
        select_vmeanba_layers(model, cal, k=99, progress=False)
    with pytest.raises(ValueError, match="max_drop"):
        select_vmeanba_layers(model, cal, max_drop=5.0, progress=False)
    with pytest.raises(ValueError, match="unknown metric"):
        select_vmeanba_layers(model, cal, k=1, metric="f1", progress=False)


def test_auto_spec_runs_selection_inside_apply_vmeanba(digits):
    family, model = digits
    cal = load_calibration("digits:calibration", family, limit=64)
    new = apply_vmeanba(model, "k=2", calibration=cal, progress=False, curve=False)
    chosen = [n for n, s in new.ssm_layers().items() if s.vmeanba is not None]
    selection = select_vmeanba_layers(model, cal, k=2, progress=False, curve=False)
    assert chosen == selection.layers and len(chosen) == 2
    assert all(s.vmeanba is None for s in model.ssm_layers().values())
    assert not hasattr(new, "vmeanba_selection")  # results are returned, never stored on the model


def test_synthetic_calibration_is_flagged_in_the_result(digits, tmp_path):
    family, model = digits
    with pytest.warns(UserWarning, match="MEANINGLESS"):
        cal = load_calibration("synthetic:8", family, resolution=32)
    result = select_vmeanba_layers(model, cal, k=1, max_drop=0.5, progress=False, curve=False)
    assert result.synthetic and result.metric == "agreement" and len(result.layers) <= 1
    write_selection_report(result, tmp_path, print_table=False)
    assert json.loads((tmp_path / "selection.json").read_text())["synthetic"] is True
