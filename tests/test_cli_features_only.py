"""vm-export on feature backbones: a segmentation checkpoint gives its backbone by itself, --features-only
asks for it, and the exported file has the four per-stage outputs feat0..feat3 (docs/BACKBONES.md)."""
from __future__ import annotations

import json

import onnx
import pytest
import torch

from exporter.cli import main
from exporter.models.vmamba import VMambaBackbone

# A small v2-line backbone (ln2d out norms): fast on 2 CPU cores, every stage present.
SMALL = dict(depths=[1, 1, 1, 1], dims=8, ssm_d_state=1, ssm_ratio=1.0, forward_type="v05_noz",
             norm_layer="ln2d", downsample_version="v3", patchembed_version="v2", mlp_ratio=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _upernet_checkpoint(path):
    torch.manual_seed(0)
    backbone = VMambaBackbone(out_indices=(0, 1, 2, 3), **SMALL).eval()
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.randn(150, 512, 1, 1)
    torch.save({"meta": {"mmseg_version": "1.2.2"}, "state_dict": state}, path)


def test_segmentation_checkpoint_exports_four_feature_outputs(tmp_path, capsys):
    ckpt, out = tmp_path / "upernet.pth", tmp_path / "bb.onnx"
    _upernet_checkpoint(ckpt)
    rc = main(["--checkpoint", str(ckpt), "--resolution", "64", "--quartermap", "--verify", "--iterations", "1",
               "--latency-runs", "0", "-o", str(out), "--report", str(tmp_path / "r.json"), "--threads", "1"])
    assert rc == 0, capsys.readouterr()
    model = onnx.load(str(out), load_external_data=False)
    assert [o.name for o in model.graph.output] == ["feat0", "feat1", "feat2", "feat3"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["parity"]["passed"] is True
    assert report["checkpoint"]["ignored"] == {"decode_head": 1}  # what was left out is named
    assert any("decode_head" in n for n in report["checkpoint"]["notes"])
    assert "decode_head" in capsys.readouterr().out  # and shown in the summary


def test_features_only_with_num_classes_is_a_usage_error(tmp_path, capsys):
    ckpt, out = tmp_path / "upernet.pth", tmp_path / "bb.onnx"
    _upernet_checkpoint(ckpt)
    rc = main(["--checkpoint", str(ckpt), "--features-only", "--num-classes", "3", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--num-classes" in err and "--features-only" in err
    assert not out.exists()


def test_features_only_refuses_the_bundled_classifier_sample(tmp_path, capsys):
    out = tmp_path / "bb.onnx"
    rc = main(["--features-only", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--features-only" in err and "released --arch" in err
    assert not out.exists()
