"""CUDA implementations of the four vmamba custom ops, from libvmamba_kernels.so through ctypes.

Importing this module registers ``torch.library`` CUDA kernels for ``vmamba::ss2d_scan``,
``vmamba::vmeanba_scan``, ``vmamba::quartermap_down`` and ``vmamba::quartermap_up`` when the
library can be loaded; otherwise nothing is registered and CUDA tensors keep using the reference.
It never fails to import (CPU machines, no library): ``kernels_available()`` says why not.

The library is found at ``$VMAMBA_KERNELS_LIB`` or else under ``<repo>/build*/**/libvmamba_kernels.so``
(``cmake -S . -B build && cmake --build build``). Every call runs on torch's current stream of the
input's device, with a workspace tensor from torch's allocator (so CUDA graph capture works).
"""
from __future__ import annotations

import ctypes
import os
import pathlib

import torch

from plugins import ops as _ops  # noqa: F401  (defines the torch.library ops registered below)
from plugins import reference as ref
from plugins.contract import MAX_D_STATE, QUARTERMAP_DOWN

_REPO = pathlib.Path(__file__).resolve().parents[1]
_LIB_NAME = "libvmamba_kernels.so"

VMK_FLOAT32, VMK_FLOAT16 = 0, 1
_STATUS = {0: "ok", 1: "invalid argument", 2: "unsupported shape or option", 3: "workspace too small",
           4: "CUDA launch failed"}


class Ss2dArgs(ctypes.Structure):
    """vmk_ss2d_args_t"""
    _fields_ = [
        ("batch", ctypes.c_int32), ("dim", ctypes.c_int32), ("height", ctypes.c_int32), ("width", ctypes.c_int32),
        ("d_state", ctypes.c_int32), ("dt_rank", ctypes.c_int32), ("dtype", ctypes.c_int),
        ("x", ctypes.c_void_p), ("x_proj_weight", ctypes.c_void_p), ("dt_projs_weight", ctypes.c_void_p),
        ("dt_projs_bias", ctypes.c_void_p), ("A_logs", ctypes.c_void_p), ("Ds", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
    ]


class QuarterMapDownArgs(ctypes.Structure):
    """vmk_quartermap_down_args_t"""
    _fields_ = [
        ("batch", ctypes.c_int32), ("channels", ctypes.c_int32), ("height", ctypes.c_int32), ("width", ctypes.c_int32),
        ("stride", ctypes.c_int32), ("keep", ctypes.c_int32), ("dtype", ctypes.c_int),
        ("x", ctypes.c_void_p), ("y", ctypes.c_void_p),
    ]


class QuarterMapUpArgs(ctypes.Structure):
    """vmk_quartermap_up_args_t"""
    _fields_ = [
        ("batch", ctypes.c_int32), ("channels", ctypes.c_int32), ("in_height", ctypes.c_int32),
        ("in_width", ctypes.c_int32), ("out_height", ctypes.c_int32), ("out_width", ctypes.c_int32),
        ("dtype", ctypes.c_int), ("x", ctypes.c_void_p), ("y", ctypes.c_void_p),
    ]


def find_library() -> tuple[pathlib.Path | None, str]:
    """Path of libvmamba_kernels.so, or None and why not."""
    env = os.environ.get("VMAMBA_KERNELS_LIB")
    if env:
        path = pathlib.Path(env)
        return (path, "") if path.is_file() else (None, f"VMAMBA_KERNELS_LIB={env} is not a file")
    found = sorted(p for d in _REPO.glob("build*") if d.is_dir() for p in d.rglob(_LIB_NAME))
    if found:
        return found[0], ""
    return None, (f"kernel library not built: no {_LIB_NAME} under {_REPO}/build*/ and VMAMBA_KERNELS_LIB unset "
                  f"(build it with: cmake -S {_REPO} -B {_REPO}/build && cmake --build {_REPO}/build -j)")


def _load() -> tuple[ctypes.CDLL | None, str]:
    path, reason = find_library()
    if path is None:
        return None, reason
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        return None, f"could not load {path}: {exc}"
    size_t, status, stream = ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p
    lib.vmk_ss2d_scan_workspace_size.argtypes = [ctypes.POINTER(Ss2dArgs)]
    lib.vmk_ss2d_scan_workspace_size.restype = size_t
    lib.vmk_ss2d_scan.argtypes = [ctypes.POINTER(Ss2dArgs), ctypes.c_void_p, size_t, stream]
    lib.vmk_ss2d_scan.restype = status
    lib.vmk_vmeanba_scan_workspace_size.argtypes = [ctypes.POINTER(Ss2dArgs), ctypes.c_int32]
    lib.vmk_vmeanba_scan_workspace_size.restype = size_t
    lib.vmk_vmeanba_scan.argtypes = [ctypes.POINTER(Ss2dArgs), ctypes.c_int32, ctypes.c_void_p, size_t, stream]
    lib.vmk_vmeanba_scan.restype = status
    lib.vmk_quartermap_down.argtypes = [ctypes.POINTER(QuarterMapDownArgs), stream]
    lib.vmk_quartermap_down.restype = status
    lib.vmk_quartermap_up.argtypes = [ctypes.POINTER(QuarterMapUpArgs), stream]
    lib.vmk_quartermap_up.restype = status
    lib.vmk_version.restype = ctypes.c_int32
    return lib, str(path)


try:
    _LIB, _LIB_INFO = _load()
except Exception as exc:  # importing must never fail
    _LIB, _LIB_INFO = None, f"could not load the kernel library: {exc!r}"


def kernels_available() -> tuple[bool, str]:
    """(True, library path) when the CUDA kernels can run here, else (False, reason)."""
    if _LIB is None:
        return False, _LIB_INFO
    if not torch.cuda.is_available():
        return False, f"{_LIB_INFO} loaded, but torch sees no CUDA device"
    return True, _LIB_INFO


def library_path() -> str | None:
    return _LIB_INFO if _LIB is not None else None


# --------------------------------------------------------------------------- calls into the library
def _dtype_code(t: torch.Tensor) -> int:
    if t.dtype == torch.float32:
        return VMK_FLOAT32
    if t.dtype == torch.float16:
        return VMK_FLOAT16
    raise TypeError(f"vmamba kernels take float32 or float16, got {t.dtype}")


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed: {_STATUS.get(status, status)}")


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def _scan_args(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out):
    """Contiguous operands in the contract's dtypes and the filled argument struct."""
    if _LIB is None:
        raise RuntimeError(_LIB_INFO)
    B, D, H, W = x.shape
    R = dt_projs_weight.shape[-1]
    N = A_logs.shape[1]
    if tuple(x_proj_weight.shape) != (4, R + 2 * N, D) or tuple(dt_projs_weight.shape) != (4, D, R) \
            or dt_projs_bias.numel() != 4 * D or tuple(A_logs.shape) != (4 * D, N) or Ds.numel() != 4 * D:
        raise ValueError("SS2D operand shapes do not match the contract (plugins/contract/SS2DScan_PluginConfig.yaml)")
    x = x.contiguous()
    keep = (x, x_proj_weight.to(x.dtype).contiguous(), dt_projs_weight.to(x.dtype).contiguous(),
            dt_projs_bias.float().contiguous(), A_logs.float().contiguous(), Ds.float().contiguous())
    if out is None:
        out = torch.empty_like(x)
    args = Ss2dArgs(B, D, H, W, N, R, _dtype_code(x), *(t.data_ptr() for t in keep), out.data_ptr())
    return args, keep, out


def ss2d_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out=None) -> torch.Tensor:
    """SS2DScan on CUDA tensors through the kernel library (``out``: optional preallocated output)."""
    args, keep, out = _scan_args(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out)
    ws = torch.empty(max(1, _LIB.vmk_ss2d_scan_workspace_size(ctypes.byref(args))), dtype=torch.uint8, device=x.device)
    with torch.cuda.device(x.device):
        _check(_LIB.vmk_ss2d_scan(ctypes.byref(args), ws.data_ptr(), ws.numel(), _stream(x)), "vmk_ss2d_scan")
    return out


def vmeanba_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, variant: int = 0,
                 out=None) -> torch.Tensor:
    """VMeanbaScan (literal reduced core) on CUDA tensors through the kernel library."""
    args, keep, out = _scan_args(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out)
    ws = torch.empty(max(1, _LIB.vmk_vmeanba_scan_workspace_size(ctypes.byref(args), int(variant))),
                     dtype=torch.uint8, device=x.device)
    with torch.cuda.device(x.device):
        _check(_LIB.vmk_vmeanba_scan(ctypes.byref(args), int(variant), ws.data_ptr(), ws.numel(), _stream(x)),
               "vmk_vmeanba_scan")
    return out


def quartermap_down(x, stride: int = QUARTERMAP_DOWN.default("stride"), keep: int = QUARTERMAP_DOWN.default("keep"),
                    out=None) -> torch.Tensor:
    if _LIB is None:
        raise RuntimeError(_LIB_INFO)
    x = x.contiguous()
    B, C, H, W = x.shape
    if out is None:
        out = x.new_empty((B, C, ref.kept_size(H, stride, keep), ref.kept_size(W, stride, keep)))
    args = QuarterMapDownArgs(B, C, H, W, int(stride), int(keep), _dtype_code(x), x.data_ptr(), out.data_ptr())
    with torch.cuda.device(x.device):
        _check(_LIB.vmk_quartermap_down(ctypes.byref(args), _stream(x)), "vmk_quartermap_down")
    return out


def quartermap_up(y, like, out=None) -> torch.Tensor:
    if _LIB is None:
        raise RuntimeError(_LIB_INFO)
    y = y.contiguous()
    B, C, Hs, Ws = y.shape
    H, W = like.shape[-2:]
    if out is None:
        out = y.new_empty((B, C, H, W))
    args = QuarterMapUpArgs(B, C, Hs, Ws, H, W, _dtype_code(y), y.data_ptr(), out.data_ptr())
    with torch.cuda.device(y.device):
        _check(_LIB.vmk_quartermap_up(ctypes.byref(args), _stream(y)), "vmk_quartermap_up")
    return out


# --------------------------------------------------------------------------- torch.library registration
_KERNEL_DTYPES = (torch.float32, torch.float16)


def _register() -> bool:
    if _LIB is None:
        return False

    @torch.library.register_kernel("vmamba::ss2d_scan", "cuda")
    def _(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds):
        if x.dtype not in _KERNEL_DTYPES or A_logs.shape[1] > MAX_D_STATE:
            return ref.ss2d_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)
        return ss2d_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)

    @torch.library.register_kernel("vmamba::vmeanba_scan", "cuda")
    def _(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, variant):
        if x.dtype not in _KERNEL_DTYPES or A_logs.shape[1] > MAX_D_STATE:
            return ref.vmeanba_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, variant)
        return vmeanba_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, variant)

    @torch.library.register_kernel("vmamba::quartermap_down", "cuda")
    def _(x, stride, keep):
        if x.dtype not in _KERNEL_DTYPES:
            return ref.quartermap_down(x, stride, keep).contiguous()
        return quartermap_down(x, stride, keep)

    @torch.library.register_kernel("vmamba::quartermap_up", "cuda")
    def _(y, like):
        if y.dtype not in _KERNEL_DTYPES:
            return ref.quartermap_up(y, like).contiguous()
        return quartermap_up(y, like)

    return True


try:
    REGISTERED = _register()
except Exception as exc:  # pragma: no cover - registration problems must not break imports
    REGISTERED = False
    _LIB, _LIB_INFO = None, f"could not register the CUDA kernels: {exc!r}"
