"""Shared pytest fixtures: where the golden data from the official implementations lives, and one
torch thread for suites of tiny tensors.

The golden fixtures sit next to the repository (``<repo>/../shared/fixtures/official``); set
``VM_FIXTURES`` to use another folder. Tests that need them take the ``fixtures_dir`` fixture and
carry ``@pytest.mark.fixtures``; they skip with the reason below when the folder is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def official_fixtures_dir() -> Path:
    return Path(os.environ.get("VM_FIXTURES") or REPO_ROOT.parent / "shared" / "fixtures" / "official")


def fixtures_skip_reason() -> str:
    return (f"golden fixtures not found at {official_fixtures_dir()} "
            "(set VM_FIXTURES to the folder holding the official *.pt fixtures)")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The folder with the official golden fixtures; skips the test when it is absent."""
    path = official_fixtures_dir()
    if not (path / "README.md").is_file() and not any(path.glob("*.pt")):
        pytest.skip(fixtures_skip_reason())
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread avoids OpenMP oversubscription on a loaded 2-core machine. Use it
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_cpu_settings(one_torch_thread):
    """The digits models' scans underflow into denormal floats, ~10x slower on CPU; flushing them
    changes values by < 1e-38 (select_vmeanba_layers does the same). Plus one thread. Use it with
    ``pytestmark = pytest.mark.usefixtures("digits_cpu_settings")``."""
    import torch

    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
