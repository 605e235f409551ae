"""Fast PyTorch runtime for (compressed) VMamba and MedMamba models on a CUDA GPU.

The models call the project's custom ops (``torch.ops.vmamba.*``); ``plugins.kernels`` registers
the CUDA kernels for them. ``prepare_runtime`` turns a model into a callable for fixed-shape GPU
inference::

    run = prepare_runtime(model, dtype=torch.float16, batch_size=1, image_size=224, mode="graph")
    logits = run(images)          # images: (1, 3, 224, 224), any device / dtype

Modes
- ``"eager"``: plain PyTorch calls (one launch per op, any input shape).
- ``"graph"`` (default): the eager forward is warmed up on a side stream, then captured once in a
  CUDA graph with a static input buffer; each call copies the input in and replays the graph.
  Removes the launch overhead that dominates small batches. Input shape is fixed.
- ``"compile"``: ``torch.compile`` (Inductor, default mode; the custom ops are opaque nodes
  thanks to their ``register_fake``), then captured in a CUDA graph as above. About 20 s of
  compilation per model, dtype and shape; +11% (fp32) / +16% (fp16) throughput on VMamba-T at
  batch 128 on an H100 (it fuses the LayerNorms, layout copies and element-wise ops), so it is
  the mode to use for throughput. Numbers and profile: docs/BENCHMARKS.md.

What ``prepare_runtime`` changes (on a copy unless ``inplace=True``); every rewrite computes the
same function, checked by tests/test_runtime_gpu.py against the CPU float32 model:
- dtype: float16 casts the model with ``.half()`` but keeps ``A_logs``, ``Ds`` and
  ``dt_projs_bias`` in float32 (the kernels take them as float32; SS2D's ``.float()`` then costs
  nothing). Pure float16, not autocast: LayerNorm and BatchNorm still reduce in float32 inside
  their kernels, but their outputs are float16.
- ``channels_last`` (default on for the channel-first v2 VMamba line and MedMamba's convs): the
  4-D activations live in NHWC memory, so LayerNorm2d's permutes are free views and the 1x1
  ``Linear2d`` becomes one cuBLAS GEMM (``fast_linear``); only the scan's input and output are
  converted (the kernels read and write dense NCHW).
- ``cudnn_benchmark``: None leaves ``torch.backends.cudnn.benchmark`` as it is; True/False sets it
  (process-wide). With fixed shapes, autotuning costs seconds once at warm-up.
- TF32: off by default (``tf32=False`` sets ``torch.backends.cuda.matmul.allow_tf32`` and
  ``torch.backends.cudnn.allow_tf32`` to False, process-wide). ``tf32=True`` lets float32 GEMMs and
  convolutions use TF32 tensor cores: faster, but results then differ from float32 by ~1e-3
  relative (10-bit mantissa products); parity bounds of 1e-4 no longer hold. ``tf32=None`` leaves
  both flags as the process has them (e.g. PyTorch's defaults: cuDNN TF32 on, matmul TF32 off).
- Feature backbones (``features_only=True``) return a list of stage maps; the runtime's output is
  then that list (of static buffers in graph modes, cloned unless ``clone_output=False``).

Without the CUDA kernels the custom ops fall back to the float32 reference in
``plugins/reference.py`` (correct, but orders of magnitude slower, and not capturable in a graph
in every case): ``prepare_runtime`` refuses with a clear error unless ``allow_reference=True``.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from exporter.models.layers import Linear2d
from exporter.models.ss2d import SS2D, cast_model  # noqa: F401  (cast_model: part of this module's API)
from plugins.contract import FLOAT32_SCAN_INPUTS

CUSTOM_OPS = ("ss2d_scan", "vmeanba_scan", "quartermap_down", "quartermap_up")
MODES = ("eager", "graph", "compile")
# parameters the kernels always read as float32 (the op contract's float32 scan inputs)
FLOAT32_SSM_PARAMS = FLOAT32_SCAN_INPUTS


# --------------------------------------------------------------------------- kernel availability
def kernel_status() -> tuple[bool, str]:
    """(available, reason): whether every custom op has a CUDA kernel registered."""
    if not torch.cuda.is_available():
        return False, "CUDA is not available (torch.cuda.is_available() is False)"
    try:
        import plugins.kernels  # noqa: F401  registers the CUDA implementations when the library loads
    except Exception as exc:  # the module itself may be missing or fail to load the .so
        return False, f"plugins.kernels could not be imported: {type(exc).__name__}: {exc}"
    import plugins.ops  # noqa: F401  defines the ops
    missing = [op for op in CUSTOM_OPS
               if not torch._C._dispatch_has_kernel_for_dispatch_key(f"vmamba::{op}", "CUDA")]
    if missing:
        _, library = plugins.kernels.kernels_available()  # why the library did (not) load: the real reason
        return False, (f"no CUDA kernel registered for vmamba::{', vmamba::'.join(missing)}; build the kernel "
                       f"library (cmake -S . -B build && cmake --build build) so plugins.kernels can load it "
                       f"({library})")
    return True, "CUDA kernels registered for " + ", ".join(f"vmamba::{op}" for op in CUSTOM_OPS)



# --------------------------------------------------------------------------- equivalent rewrites
class FastLinear2d(Linear2d):
    """Linear2d computed as a GEMM instead of a 1x1 convolution (same weight, same result up to
    summation order): NHWC (channels_last) input -> F.linear on the free NHWC view; dense NCHW input
    -> one batched GEMM weight @ x[b] (weight broadcast, no copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)
        if x.dim() == 4 and x.is_contiguous():
            B, C, H, W = x.shape
            w = self.weight.expand(B, -1, -1)
            x2 = x.view(B, C, H * W)
            if self.bias is None:
                y = torch.bmm(w, x2)
            else:
                y = torch.baddbmm(self.bias.view(1, -1, 1).expand(B, -1, H * W), w, x2)
            return y.view(B, -1, H, W)
        return super().forward(x)


class RuntimeSS2D(SS2D):
    """SS2D whose scan input is made dense NCHW first (what the kernels read). The folded VMeanba
    core is a per-channel scale and keeps the incoming memory format."""

    def core(self, x: torch.Tensor) -> torch.Tensor:
        folded_only = self.vmeanba is not None and self.vmeanba.folded and self.quartermap is None
        return super().core(x if folded_only else x.contiguous())


def _swap_class(model: nn.Module, old: type, new: type) -> int:
    """Re-class every module of exactly type ``old`` as ``new`` (a subclass with the same state)."""
    n = 0
    for m in model.modules():
        if type(m) is old:
            m.__class__ = new
            n += 1
    return n


def set_tf32(enabled: bool) -> None:
    """Process-wide TF32 switch for float32 GEMMs (cuBLAS) and convolutions (cuDNN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch prefers fp32_precision; the flags still work
        torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
        torch.backends.cudnn.allow_tf32 = bool(enabled)


def default_channels_last(model: nn.Module) -> bool:
    """NHWC pays where the model keeps 4-D activations between layers: the channel-first v2 VMamba
    line (LayerNorm2d, Linear2d) and MedMamba's conv branch. The v0 line is channel-last already."""
    return bool(getattr(model, "channel_first", False)) or getattr(model, "family", "") == "medmamba"


# --------------------------------------------------------------------------- runtime
@dataclasses.dataclass
class RuntimeConfig:
    device: str
    dtype: torch.dtype
    batch_size: int
    image_size: tuple[int, int]
    in_chans: int
    mode: str
    channels_last: bool
    fast_linear: bool
    tf32: bool
    kernels: bool


class Runtime:
    """``runtime(x) -> logits`` on the prepared model. In graph modes the input must have the
    prepared shape; the result is a fresh tensor unless ``clone_output=False`` (then it is the
    graph's static output buffer, overwritten by the next call)."""

    def __init__(self, model: nn.Module, forward: Callable, config: RuntimeConfig, warmup: int,
                 clone_output: bool = True):
        self.model = model
        self.config = config
        self.clone_output = clone_output
        self._forward = forward
        self.graph: torch.cuda.CUDAGraph | None = None
        fmt = torch.channels_last if config.channels_last else torch.contiguous_format
        shape = (config.batch_size, config.in_chans, *config.image_size)
        gen = torch.Generator(device=config.device).manual_seed(0)
        # random (not zero) warm-up data: zeros can take different kernel paths
        self.static_input = torch.randn(shape, device=config.device, dtype=config.dtype,
                                        generator=gen).contiguous(memory_format=fmt)
        self.static_output: torch.Tensor | None = None
        if config.mode in ("graph", "compile"):
            self._capture(warmup)
        else:
            with torch.inference_mode():
                for _ in range(warmup):
                    forward(self.static_input)
            torch.cuda.synchronize(config.device)

    def _capture(self, warmup: int) -> None:
        side = torch.cuda.Stream(device=self.config.device)
        side.wait_stream(torch.cuda.current_stream(self.config.device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(max(1, warmup)):  # cuDNN/cuBLAS heuristics, Inductor compilation, lazy init
                self._forward(self.static_input)
        torch.cuda.current_stream(self.config.device).wait_stream(side)
        torch.cuda.synchronize(self.config.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.static_output = self._forward(self.static_input)
        torch.cuda.synchronize(self.config.device)

    def replay(self) -> torch.Tensor:
        """Run once on whatever ``static_input`` holds (graph modes); returns the static output."""
        if self.graph is None:
            with torch.inference_mode():
                self.static_output = self._forward(self.static_input)
        else:
            self.graph.replay()
        return self.static_output

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
            x = x.to(device=self.config.device, dtype=self.config.dtype).contiguous(memory_format=fmt)
            return self._forward(x)
        if tuple(x.shape) != tuple(self.static_input.shape):
            raise ValueError(f"this runtime was captured for input shape {tuple(self.static_input.shape)}, "
                             f"got {tuple(x.shape)}; prepare another runtime (or use mode='eager')")
        self.static_input.copy_(x)  # converts device, dtype and memory format
        self.graph.replay()
        if not self.clone_output:
            return self.static_output
        if isinstance(self.static_output, (list, tuple)):  # a feature backbone's stage maps
            return [t.clone() for t in self.static_output]
        return self.static_output.clone()

    def release(self) -> None:
        """Free the graph and its memory pool."""
        self.graph = None
        self.static_output = None
        self.static_input = None


def prepare_runtime(
    model: nn.Module,
    device: str = "cuda",
    dtype: torch.dtype = torch.float16,
    batch_size: int = 1,
    image_size: int | tuple[int, int] = 224,
    mode: str = "graph",
    channels_last: bool | None = None,
    fast_linear: bool = True,
    tf32: bool | None = False,
    cudnn_benchmark: bool | None = None,
    allow_reference: bool = False,
    inplace: bool = False,
    warmup: int = 3,
    clone_output: bool = True,
) -> Runtime:
    """Move ``model`` (a VMamba or MedMamba, compressed or not) to the GPU in ``dtype`` and return a
    callable for inputs of shape (batch_size, in_chans, *image_size). See the module docstring."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"dtype must be torch.float32 or torch.float16 (what the kernels support), got {dtype}")
    if not str(device).startswith("cuda"):
        raise ValueError(f"prepare_runtime is the GPU path; got device {device!r} (run the model directly on CPU)")
    ok, reason = kernel_status()
    if not ok:
        if not torch.cuda.is_available() or not allow_reference:
            raise RuntimeError(f"the fast runtime needs the project's CUDA kernels: {reason}. Pass "
                               "allow_reference=True to run the float32 reference ops on the GPU instead (slow).")
        warnings.warn(f"running the reference ops on the GPU (slow, for checking only): {reason}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if tf32 is not None:
        set_tf32(tf32)
    if cudnn_benchmark is not None:  # process-wide: autotune cuDNN convolutions per input shape
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    if channels_last is None:
        channels_last = default_channels_last(model)
    _swap_class(model, SS2D, RuntimeSS2D)
    if fast_linear:
        _swap_class(model, Linear2d, FastLinear2d)
    else:  # a model prepared before (inplace=True) may carry the rewrite already
        _swap_class(model, FastLinear2d, Linear2d)
    cast_model(model, dtype)
    model.to(device)
    # 4-D (conv) weights in the chosen layout; activations follow the input's layout
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    in_chans = _in_chans(model)
    forward = torch.compile(model, dynamic=False) if mode == "compile" else model
    cfg = RuntimeConfig(str(device), dtype, int(batch_size), hw, in_chans, mode, bool(channels_last),
                        bool(fast_linear), bool(torch.backends.cuda.matmul.allow_tf32), ok)
    return Runtime(model, forward, cfg, warmup=warmup, clone_output=clone_output)


def time_replays(rt, iters: int, warm: int = 2) -> list[float]:
    """Milliseconds of ``iters`` replays of ``rt`` (a Runtime, or anything with ``replay()`` such as a
    CUDA graph), each between two CUDA events on the current stream, after ``warm`` untimed ones.
    The one replay timer of the project: the benchmarks and the planner's cost model use it."""
    for _ in range(warm):
        rt.replay()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        rt.replay()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in events]


def _in_chans(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError("cannot infer the input channels: the model has no Conv2d")
