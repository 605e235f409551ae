"""The scan's softplus pass-through (METHODS.md section 0, step 3: "delta = softplus(dt + dt_bias[r])
(softplus passes values above 20 through)") checked where it is observable: pre-activations between
10 and 20 and far above 20, in the PyTorch ops (the path every model takes) and in the ONNX function
bodies (the path every exported file takes), against a float64 loop written here.

Observability: softplus(p) - p = log1p(exp(-p)) is 4.5e-5 at p = 10, 6.1e-6 at p = 12, 2e-9 at 20.
A pass-through threshold moved to 10 therefore shifts delta by up to 4.5e-5 (relative 4.5e-6) for
pre-activations just above 10; below ~12 that is more than float32 resolves. The inputs below make
every row's output an explicit function of delta (one or two scan steps, tiny decay, no skip term),
so the float32 ops agree with float64 to about 1e-7 relative (measured <= 2e-7), and 1e-6 relative
separates the two. Thresholds between ~13 and 20 change delta by less than float32 resolves and
cannot be told apart from 20 (they are harmless). A missing pass-through (softplus computed as
log(1 + exp(p)) everywhere) overflows to inf at p ~ 89 in float32: one row sits at p = 95.
"""
from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from plugins import ops

REL_TOL = 1e-6
K = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _params(D: int, N: int, R: int, layout: str, seed: int = 0) -> dict:
    """Pre-activations (dt_projs_bias; the dt projection is tiny, so pre-activation ~ bias):
    "mixed": half the channels just above 10 in every direction, the others spread over (11.5, 20)
    plus 20.4, 27 and 95; "near_ten": every row in (10, 11) (VMeanba averages over all rows, so
    only there does a threshold of 10 move its output clearly). Decays close to 1 so every step
    counts; Ds = 0 so nothing dilutes the scan term."""
    gen = torch.Generator().manual_seed(seed)
    low = D // 2 if layout == "mixed" else D  # channels 0..low-1: every direction just above 10
    near_ten = torch.linspace(10.02, 11.0, K * low).view(K, low)
    bias = near_ten
    if low < D:
        high = torch.cat([torch.linspace(11.5, 19.9, K * (D - low) - 3), torch.tensor([20.4, 27.0, 95.0])])
        high = high[torch.randperm(high.numel(), generator=gen)].view(K, D - low)
        bias = torch.cat([near_ten, high], 1)
    return dict(
        x_proj_weight=torch.rand(K, R + 2 * N, D, generator=gen) * 0.5 + 0.25,  # B, C > 0: no cancellation
        dt_projs_weight=torch.rand(K, D, R, generator=gen) * 1e-3,
        dt_projs_bias=bias.float(),
        A_logs=torch.log(torch.rand(K * D, N, generator=gen) * 1e-3 + 1e-4),  # A ~ -1e-4..-1.1e-3
        Ds=torch.zeros(K * D),
    )


def _orders(H: int, W: int):
    """Pixel visited at step l for the four directions (METHODS.md section 0, step 1)."""
    row = [(l // W, l % W) for l in range(H * W)]
    col = [(l % H, l // H) for l in range(H * W)]
    return [row, col, row[::-1], col[::-1]]


def _softplus64(p: float) -> float:
    return p if p > 20.0 else math.log1p(math.exp(p))


def _discretised(x, p):
    """Per direction k and pixel step l, float64: u[d], delta[d], B[n], C[n], A[d, n]."""
    x = x.double()[0]
    D, H, W = x.shape
    R = p["dt_projs_weight"].shape[2]
    N = p["A_logs"].shape[1]
    wx, wdt = p["x_proj_weight"].double(), p["dt_projs_weight"].double()
    bias = p["dt_projs_bias"].double()
    A = -torch.exp(p["A_logs"].double()).view(K, D, N)
    out = []
    for k, order in enumerate(_orders(H, W)):
        steps = []
        for i, j in order:
            u = x[:, i, j]
            proj = wx[k] @ u
            pre = wdt[k] @ proj[:R] + bias[k]
            delta = torch.tensor([_softplus64(float(v)) for v in pre], dtype=torch.float64)
            steps.append((u, delta, proj[R:R + N], proj[R + N:]))
        out.append((steps, A[k]))
    return out


def _merge(per_dir, H, W):
    D = per_dir[0][0].shape[0]
    y = torch.zeros(D, H, W, dtype=torch.float64)
    for k, order in enumerate(_orders(H, W)):
        for l, (i, j) in enumerate(order):
            y[:, i, j] += per_dir[k][l]
    return y[None]


def loop_ss2d_scan(x, p):
    """SS2DScan in float64, one row r = (k, d) at a time (Ds = 0 here)."""
    H, W = x.shape[-2:]
    per_dir = []
    for steps, A in _discretised(x, p):
        h = torch.zeros_like(A)
        ys = []
        for u, delta, Bl, Cl in steps:
            h = torch.exp(delta[:, None] * A) * h + (delta * u)[:, None] * Bl[None, :]
            ys.append(h @ Cl)
        per_dir.append(ys)
    return _merge(per_dir, H, W)


def loop_vmeanba_scan(x, p):
    """VMeanbaScan variant 0 (the authors' all-rows mean, METHODS.md section 1) in float64 (Ds = 0)."""
    H, W = x.shape[-2:]
    disc = _discretised(x, p)
    L = H * W
    h = None
    y_m = []
    for l in range(L):
        abar = torch.cat([torch.exp(steps[l][1][:, None] * A) for steps, A in disc]).mean(0)
        bu = torch.cat([(steps[l][1] * steps[l][0])[:, None] * steps[l][2][None, :] for steps, _ in disc]).mean(0)
        c = torch.stack([steps[l][3] for steps, _ in disc]).mean(0)
        h = bu if h is None else abar * h + bu
        y_m.append(float(h @ c))
    D = x.shape[1]
    per_dir = [[torch.full((D,), y_m[l], dtype=torch.float64) for l in range(L)] for _ in range(K)]
    return _merge(per_dir, H, W)


def _max_rel(got: np.ndarray, expected: torch.Tensor) -> float:
    e = expected.numpy()
    assert np.isfinite(got).all(), "non-finite output: the pass-through above 20 is missing"
    return float(np.max(np.abs(got.astype(np.float64) - e) / np.abs(e)))


# (D, H, W): one pixel (delta enters linearly), two steps along a row
SHAPES = [(6, 1, 1), (5, 1, 2)]


LAYOUTS = ("mixed", "near_ten")


def _inputs(D, H, W, layout, N=2, R=1):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, D, H, W, generator=gen) + 0.5
    return x, _params(D, N, R, layout)


def _as_threshold_ten(p: dict) -> dict:
    """Parameters whose exact softplus equals what a pass-through threshold of 10 would give for p
    (delta = pre-activation above 10): the bias lowered by log1p(exp(-bias)) where it is above 10."""
    b = p["dt_projs_bias"].double()
    return dict(p, dt_projs_bias=torch.where(b > 10, b - torch.log1p(torch.exp(-b)), b).float())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_inputs_really_probe_the_threshold(shape):
    """The pre-activations sit where the threshold matters, and a threshold of 10 would move the
    outputs by more than twice REL_TOL (SS2DScan on "mixed", VMeanbaScan on "near_ten"; float64 loop)."""
    x, p = _inputs(*shape, "mixed")
    pre = p["dt_projs_bias"].flatten()
    assert ((pre > 10) & (pre < 11.5)).sum() >= 8 and (pre > 20).sum() == 3 and pre.max() > 89
    assert _max_rel(loop_ss2d_scan(x, _as_threshold_ten(p)).numpy(), loop_ss2d_scan(x, p)) > 2 * REL_TOL
    x, p = _inputs(*shape, "near_ten")
    assert _max_rel(loop_vmeanba_scan(x, _as_threshold_ten(p)).numpy(), loop_vmeanba_scan(x, p)) > 2 * REL_TOL


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_torch_ops_softplus_passes_through_only_above_20(shape, layout):
    x, p = _inputs(*shape, layout)
    with torch.no_grad():
        ss2d = ops.ss2d_scan(x, **p).numpy()
        vmeanba = ops.vmeanba_scan(x, **p, variant=0).numpy()
    assert _max_rel(ss2d, loop_ss2d_scan(x, p)) < REL_TOL
    assert _max_rel(vmeanba, loop_vmeanba_scan(x, p)) < REL_TOL


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_onnx_bodies_softplus_passes_through_only_above_20(shape, layout):
    from exporter.export.functions import standalone_model

    x, p = _inputs(*shape, layout)
    feeds = {"x": x.numpy(), **{k: v.numpy() for k, v in p.items()}}
    for op, reference, attrs in (("SS2DScan", loop_ss2d_scan, {}), ("VMeanbaScan", loop_vmeanba_scan, {"variant": 0})):
        sess = ort.InferenceSession(standalone_model(op, **attrs).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        got = sess.run(None, feeds)[0]
        assert _max_rel(got, reference(x, p)) < REL_TOL, op
