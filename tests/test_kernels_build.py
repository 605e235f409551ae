"""CPU-side check that the CUDA kernel library compiles, links and exports the C ABI.

Builds trt_plugins_cpp/kernels on its own (sm_90 only, to keep it short) into a temporary folder
and reads the shared library's dynamic symbol table. Skipped when nvcc or cmake is absent.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "trt_plugins_cpp" / "kernels"
HEADER = KERNELS / "vmamba_kernels.h"

missing = [tool for tool in ("nvcc", "cmake", "nm") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} to build the kernels")


def _abi_functions():
    """Every function the header declares: the names a user of the ABI can link against."""
    text = HEADER.read_text()
    return sorted(set(re.findall(r"\b(vmk_[a-z0-9_]+)\s*\(", text)))


def test_header_declares_the_contract_entry_points():
    from plugins.contract import OPS  # the contract names each op's C entry point

    names = set(_abi_functions())
    for op in OPS.values():
        assert op.c_entry in names, f"{op.name}: {op.c_entry} missing from {HEADER.name}"


def test_library_builds_and_exports_the_abi(tmp_path):
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(KERNELS), "-B", str(build), "-DCMAKE_CUDA_ARCHITECTURES=90-real",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True, text=True)
    result = subprocess.run(["cmake", "--build", str(build), "-j2", "--target", "vmamba_kernels",
                             "vmamba_kernels_static"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    shared = build / "libvmamba_kernels.so"
    static = build / "libvmamba_kernels_static.a"
    assert shared.is_file() and static.is_file()
    exported = subprocess.run(["nm", "-D", "--defined-only", str(shared)], check=True, capture_output=True,
                              text=True).stdout
    exported = set(re.findall(r"\bT (vmk_\w+)", exported))
    assert set(_abi_functions()) <= exported, f"not exported: {set(_abi_functions()) - exported}"
