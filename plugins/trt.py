"""Find and load the vmamba.trt TensorRT plugin libraries from Python.

Two builds of one source (docs/PLUGINS.md):
- ``libvmamba_trt_plugins.so`` exports getCreators/setLoggerFinder: load it into a registry with
  ``IPluginRegistry.load_library`` (what :func:`load_plugin_library` does);
- ``libvmamba_trt_plugins_static_reg.so`` registers itself when dlopen'ed (Polygraphy ``--plugins``,
  trtexec ``--staticPlugins``, ONNX Runtime ``trt_extra_plugin_lib_paths``); it needs libnvinfer to be
  loaded first, which ``import tensorrt`` does.
Never load both into one process: the second registration of the same creators fails.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DYNAMIC_LIBRARY = "libvmamba_trt_plugins.so"
STATIC_REG_LIBRARY = "libvmamba_trt_plugins_static_reg.so"


def find_plugin_library(self_registering: bool = False) -> Path:
    """Path of the built library: $VMAMBA_TRT_PLUGIN_LIB (a file) or the first match under
    $VMAMBA_TRT_PLUGIN_DIR, then under <repo>/build. Raises FileNotFoundError with what to do."""
    name = STATIC_REG_LIBRARY if self_registering else DYNAMIC_LIBRARY
    explicit = os.environ.get("VMAMBA_TRT_PLUGIN_LIB")
    if explicit and Path(explicit).name == name and Path(explicit).is_file():
        return Path(explicit)
    roots = [Path(p) for p in (os.environ.get("VMAMBA_TRT_PLUGIN_DIR"),) if p] + [REPO / "build"]
    for root in roots:
        hits = sorted(root.rglob(name), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
        if hits:
            return hits[0]
    raise FileNotFoundError(
        f"{name} not found (looked in {', '.join(map(str, roots))}). Build it: "
        "trt_plugins_cpp/tools/get_trt_headers.sh && cmake -S . -B build -DTensorRT_ROOT=third_party/TensorRT "
        "&& cmake --build build -j --target vmamba_trt_plugins vmamba_trt_plugins_static_reg")


def load_plugin_library(path: str | os.PathLike | None = None, registry=None):
    """Register the plugins with TensorRT and return the library handle.

    With ``tensorrt`` importable: ``registry.load_library(path)`` (default: the global registry) for
    the getCreators build, or a global ``ctypes`` load for the self-registering build.
    Returns whatever the registry returns (a handle) or the ``ctypes.CDLL``.
    """
    lib = Path(path) if path is not None else find_plugin_library()
    if lib.name == STATIC_REG_LIBRARY or "static_reg" in lib.name:
        import tensorrt  # noqa: F401  (loads libnvinfer, which defines getPluginRegistry)

        _make_nvinfer_global()
        return ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    import tensorrt as trt

    registry = registry if registry is not None else trt.get_plugin_registry()
    handle = registry.load_library(str(lib))
    if handle is None:
        raise RuntimeError(f"IPluginRegistry.load_library({lib}) failed (already loaded, or a missing symbol)")
    return handle


def _make_nvinfer_global() -> None:
    """A self-registering library built from headers alone leaves getPluginRegistry undefined; it
    resolves only against a libnvinfer in the *global* symbol scope. Python loads extension modules
    (and so tensorrt's libnvinfer) RTLD_LOCAL; opening the already loaded library again with
    RTLD_GLOBAL promotes it (glibc). Harmless when the plugin library links libnvinfer itself."""
    for name in ("libnvinfer.so.11", "libnvinfer.so", "libnvinfer_lean.so.11"):
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
            return
        except OSError:
            continue
