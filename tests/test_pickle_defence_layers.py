"""Each layer of the checkpoint loader's pickle defence, broken on its own while the other must hold.

The defence (exporter/checkpoint.py docstring): (1) the unpickler: ``torch.load(weights_only=True)``,
retried once with only harmless config names (argparse.Namespace, yacs CfgNode, numpy scalars)
mapped onto inert stand-ins; (2) a static scan that lists every global a pickle names without
unpickling it. The payloads here put a harmless config object BEFORE the malicious call, so the
unpickler's first refusal names only the harmless global and the decision to retry rests on the
static scan; the malicious call then sits exactly where a broken layer would let it through.

- static scan intact, retry broken (simulated: any load after the first is unrestricted): the file
  must be refused before that retry, naming the malicious global;
- static scan broken (torch's ``get_unsafe_globals_in_checkpoint`` and ``pickletools.genops`` made to
  see nothing), unpickler intact: the retry is reached and must refuse the malicious global itself;
- and at no point, for malicious or legitimate files, is torch.load called without weights_only.
"""
from __future__ import annotations

import argparse
import os
import pickletools

import numpy as np
import pytest
import torch

from exporter.checkpoint import CheckpointError, read_checkpoint
from malicious_payloads import EvalsPython, RunsShellCommand

REAL_TORCH_LOAD = torch.load


PAYLOADS = {
    # the harmless global comes first in pickle order (dicts pickle in insertion order)
    "namespace_then_os_system": (lambda m: {"args": argparse.Namespace(lr=0.1),
                                            "model": {"w": torch.ones(2), "evil": RunsShellCommand(m)}}, "system"),
    "numpy_scalar_then_eval": (lambda m: {"best": np.float64(0.5), "model": {"w": torch.ones(2)},
                                          "config": EvalsPython(m)}, "eval"),
}


def _write(tmp_path, payload: str, zip_format: bool):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint.pth"  # the name must not contain the needle
    make, needle = PAYLOADS[payload]
    torch.save(make(marker), path, _use_new_zipfile_serialization=zip_format)
    assert not marker.exists()
    return path, marker, needle


class LoadSpy:
    """Wraps torch.load: records weights_only of every call; ``unrestricted_after`` makes every call
    after that many behave like a loader whose allowlist is broken (full unpickling)."""

    def __init__(self, unrestricted_after: int | None = None):
        self.calls: list = []
        self.unrestricted_after = unrestricted_after

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs.get("weights_only"))
        if self.unrestricted_after is not None and len(self.calls) > self.unrestricted_after:
            kwargs["weights_only"] = False
        return REAL_TORCH_LOAD(*args, **kwargs)


formats = pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
payloads = pytest.mark.parametrize("payload", list(PAYLOADS))


@formats
@payloads
def test_static_scan_alone_refuses_before_a_broken_retry(tmp_path, monkeypatch, payload, zip_format):
    path, marker, needle = _write(tmp_path, payload, zip_format)
    spy = LoadSpy(unrestricted_after=1)
    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(CheckpointError, match=rf"(?s)global [\w.]*{needle}\b.*not trusted"):
        read_checkpoint(path)
    assert not marker.exists(), "the checkpoint's code ran: the retry was reached although the file names " \
                                "an untrusted global"
    assert len(spy.calls) <= 1


@pytest.fixture
def static_scan_off(monkeypatch):
    """Blind the static scan: torch's checkpoint scanner and the stdlib opcode reader see nothing."""
    monkeypatch.setattr(torch.serialization, "get_unsafe_globals_in_checkpoint", lambda *a, **k: [])
    monkeypatch.setattr(pickletools, "genops", lambda *a, **k: iter(()))


@formats
@payloads
def test_unpickler_alone_refuses_when_the_static_scan_sees_nothing(tmp_path, monkeypatch, static_scan_off,
                                                                    payload, zip_format):
    path, marker, needle = _write(tmp_path, payload, zip_format)
    spy = LoadSpy()
    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(CheckpointError, match=rf"(?s)global [\w.]*{needle}\b.*not trusted"):
        read_checkpoint(path)
    assert not marker.exists(), "the checkpoint's code ran in the retry with config stand-ins"
    assert len(spy.calls) >= 2, ("precondition: with the static scan blinded, loading must reach the retry with "
                                 "stand-ins; it did not, so the scan no longer goes through torch's scanner / "
                                 "pickletools.genops: update static_scan_off")
    assert all(w is True for w in spy.calls), f"torch.load called with weights_only={spy.calls}"


@formats
def test_legitimate_config_container_loads_with_weights_only_every_time(tmp_path, monkeypatch, zip_format):
    path = tmp_path / "ckpt.pth"
    weights = {"w": torch.arange(4.0)}
    torch.save({"model": weights, "args": argparse.Namespace(lr=0.1), "max_accuracy": np.float64(83.5)}, path,
               _use_new_zipfile_serialization=zip_format)
    spy = LoadSpy()
    monkeypatch.setattr(torch, "load", spy)
    state = read_checkpoint(path)
    assert torch.equal(state["w"], weights["w"])
    assert spy.calls and all(w is True for w in spy.calls), f"torch.load called with weights_only={spy.calls}"
