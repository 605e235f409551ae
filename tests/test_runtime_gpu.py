"""The fast GPU runtime (exporter/runtime.py) against the CPU float32 model.

GPU tests (marker gpu) run prepare_runtime(...) in CUDA-graph mode with the project's kernels and
compare the logits with the unmodified model on the CPU in float32 (the reference ops), by
relative error ||out - ref|| / ||ref||:
- float32, TF32 off: the GPU computes the same float32 arithmetic in another order (cuBLAS GEMMs,
  the kernels' scan order) -> ~1e-6 per op; through up to 14 blocks with LayerNorms the logits
  stay near 1e-5. Bound 1e-4.
- float16: activations and weights are rounded to float16 (unit roundoff 4.9e-4) at every layer
  output; the scan itself runs in float32. Some 50-100 roundings along the residual stream add
  up like a random walk to a few 1e-3. Bound 1e-2.
The CPU tests check the runtime's model rewrites (GEMM Linear2d, channels_last, float32 SSM
parameters) and its refusal without kernels; they need no GPU.
"""
from __future__ import annotations

import copy

import pytest
import torch

from exporter.models import create_model
from exporter.models.layers import Linear2d
from exporter.models.ss2d import SS2D, QuarterMapSpec, VMeanbaSpec
from exporter.runtime import (FLOAT32_SSM_PARAMS, FastLinear2d, RuntimeSS2D, _swap_class, cast_model,
                              kernel_status, prepare_runtime)

FP32_BOUND = 1e-4
FP16_BOUND = 1e-2
# fixture-sized versions of each released line (the official fixtures use depths [1,1,2,1], dims 32)
SMALL = {
    "v2 r1 ds1": ("vmamba_tiny_s1l8", dict(depths=[1, 1, 2, 1], dims=32)),
    "v2 r2 ds1": ("vmamba_small_s2l15", dict(depths=[1, 1, 2, 1], dims=32)),
    "v0 ds16": ("vanilla_vmamba_tiny", dict(depths=[1, 1, 2, 1], dims=32)),
    "medmamba ds16": ("medmamba_t", dict(depths=[1, 1, 2, 1], dims=[32, 64, 128, 256])),
}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert torch.isfinite(out).all(), "non-finite output"
    return float((out - ref).norm() / ref.norm())


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every parameter and buffer off its initial value (LayerNorm weights not 1, biases not 0,
    BatchNorm statistics not trivial) so that no path is tested on a degenerate value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            elif name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
    return model


def compress_mixed(model: torch.nn.Module, literal: bool) -> torch.nn.Module:
    """Every kind of block at once: QuarterMap, folded (or literal) VMeanba, both, and plain."""
    blocks = list(model.ssm_layers().values())
    blocks[1].configure(quartermap=QuarterMapSpec(stride=2, keep=1))
    blocks[2].configure(vmeanba=VMeanbaSpec(folded=not literal))
    blocks[3].configure(vmeanba=VMeanbaSpec(folded=not literal), quartermap=QuarterMapSpec(stride=2, keep=1))
    return model


# --------------------------------------------------------------------------- CPU: the rewrites
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_linear2d_equals_conv1x1(bias, channels_last):
    torch.manual_seed(0)
    lin = Linear2d(24, 40, bias=bias)
    if bias:
        torch.nn.init.normal_(lin.bias)
    fast = copy.deepcopy(lin)
    fast.__class__ = FastLinear2d
    x = torch.randn(3, 24, 7, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref = torch.nn.functional.conv2d(x.contiguous(), lin.weight[:, :, None, None], lin.bias)
    out = fast(x)
    assert out.shape == ref.shape
    assert rel_err(out, ref) < 1e-6
    # neither layout (nor a strided view) is rejected
    assert rel_err(fast(x[:, :, :, 1:]), ref[:, :, :, 1:]) < 1e-6


@pytest.mark.parametrize("case", list(SMALL))
def test_runtime_rewrites_keep_the_function_cpu(case):
    """RuntimeSS2D + FastLinear2d + channels_last weights/input = the model as written (CPU)."""
    name, kw = SMALL[case]
    torch.manual_seed(1)
    model = compress_mixed(perturb(create_model(name, num_classes=10, **kw).eval(), 1), literal=False)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        ref = model(x)
        fast = copy.deepcopy(model)
        assert _swap_class(fast, SS2D, RuntimeSS2D) == len(model.ssm_layers())
        _swap_class(fast, Linear2d, FastLinear2d)
        fast.to(memory_format=torch.channels_last)
        out = fast(x.contiguous(memory_format=torch.channels_last))
    assert rel_err(out, ref) < 1e-5


def test_cast_model_keeps_ssm_parameters_float32():
    model = cast_model(create_model("vmamba_tiny_s1l8", num_classes=10, depths=[1, 1, 1, 1], dims=16), torch.float16)
    for ss2d in model.ssm_layers().values():
        for pname in FLOAT32_SSM_PARAMS:
            assert getattr(ss2d, pname).dtype == torch.float32, pname
        assert ss2d.x_proj_weight.dtype == torch.float16
        assert ss2d.in_proj.weight.dtype == torch.float16


def test_prepare_runtime_refuses_without_kernels():
    ok, reason = kernel_status()
    if ok:
        pytest.skip("kernels are available here: nothing to refuse")
    model = create_model("vmamba_tiny_s1l8", num_classes=10, depths=[1, 1, 1, 1], dims=16)
    with pytest.raises(RuntimeError, match="kernels|CUDA"):
        prepare_runtime(model, dtype=torch.float32, batch_size=1, image_size=32)
    with pytest.raises(ValueError, match="mode"):
        prepare_runtime(model, mode="fast")


# --------------------------------------------------------------------------- GPU: parity of the fast path
def _require_kernels():
    ok, reason = kernel_status()
    if not ok:
        pytest.skip(f"fast runtime unavailable: {reason}")


def _check(model, dtype, batch, hw, seed, bound, mode="graph"):
    """Two different inputs through one captured graph, each against the CPU float32 model."""
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(batch, 3, *hw, generator=gen) for _ in range(2)]
    with torch.no_grad():
        refs = [model(x) for x in xs]
    rt = prepare_runtime(model, dtype=dtype, batch_size=batch, image_size=hw, mode=mode)
    outs = [rt(x) for x in xs]  # the first output must survive the second replay (clone_output)
    errs = [rel_err(o.float(), r) for o, r in zip(outs, refs)]
    assert outs[0].dtype == dtype and outs[0].shape == refs[0].shape
    assert all(e < bound for e in errs), f"relative errors {errs} above {bound}"
    # the two inputs differ, so must the outputs (a stale static buffer would repeat the first)
    assert rel_err(outs[1].float(), refs[0]) > 10 * bound
    rt.release()
    return errs


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("compression", ["none", "folded", "literal"])
@pytest.mark.parametrize("case", list(SMALL))
def test_small_models_graph_mode(case, compression, dtype):
    _require_kernels()
    name, kw = SMALL[case]
    torch.manual_seed(2)
    model = perturb(create_model(name, num_classes=10, **kw).eval(), 2)
    if compression != "none":
        compress_mixed(model, literal=compression == "literal")
    _check(model, dtype, batch=2, hw=(64, 48), seed=3, bound=FP32_BOUND if dtype == torch.float32 else FP16_BOUND)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("compression", ["none", "vmeanba-k4+qm-k3"])
def test_vmamba_tiny_224_graph_mode(compression, dtype):
    _require_kernels()
    torch.manual_seed(4)
    model = create_model("vmamba_tiny_s1l8").eval()
    if compression != "none":
        blocks = model.ssm_layers()
        for j in range(4):
            blocks[f"layers.2.blocks.{j}"].configure(vmeanba=VMeanbaSpec(folded=True))
        for name in ("layers.1.blocks.0", "layers.2.blocks.1", "layers.2.blocks.4", "layers.2.blocks.7"):
            blocks[name].configure(quartermap=QuarterMapSpec())
    _check(model, dtype, batch=2, hw=(224, 224), seed=5, bound=FP32_BOUND if dtype == torch.float32 else FP16_BOUND)


@pytest.mark.gpu
def test_eager_mode_matches_and_accepts_other_shapes():
    _require_kernels()
    name, kw = SMALL["v2 r1 ds1"]
    torch.manual_seed(6)
    model = perturb(create_model(name, num_classes=10, **kw).eval(), 6)
    rt = prepare_runtime(model, dtype=torch.float32, batch_size=2, image_size=64, mode="eager")
    x = torch.randn(3, 3, 40, 56)  # eager mode is not tied to the prepared shape
    with torch.no_grad():
        ref = model(x)
    assert rel_err(rt(x), ref) < FP32_BOUND
    graph = prepare_runtime(model, dtype=torch.float32, batch_size=2, image_size=64, mode="graph")
    with pytest.raises(ValueError, match="captured for input shape"):
        graph(x)


@pytest.mark.gpu
def test_compile_mode_matches():
    """torch.compile (Inductor) treats the custom ops as opaque nodes (their register_fake gives the
    shapes); the compiled, graph-captured forward must compute the same function."""
    _require_kernels()
    name, kw = SMALL["v2 r1 ds1"]
    torch.manual_seed(7)
    model = compress_mixed(perturb(create_model(name, num_classes=10, **kw).eval(), 7), literal=False)
    torch._dynamo.reset()
    _check(model, torch.float32, batch=2, hw=(64, 48), seed=8, bound=FP32_BOUND, mode="compile")
