"""plugins/reference.py against loop-level implementations of METHODS.md written here.

The loops index every pixel, direction and state explicitly (no cross_scan/cross_merge, no
chunked scan), so they are an independent statement of the semantics. float64 loops vs the
float32 reference: bounds of 1e-5 relative cover float32 rounding over a few hundred steps.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from plugins import reference as ref

torch.manual_seed(0)


def _direction_order(H, W):
    """For each direction k, the pixel (i, j) visited at sequence position l."""
    row = [(l // W, l % W) for l in range(H * W)]
    col = [(l % H, l // H) for l in range(H * W)]
    return [row, col, row[::-1], col[::-1]]


def _random_params(D, N, R, scale=1.0):
    return dict(
        x_proj_weight=torch.randn(4, R + 2 * N, D) * 0.3 * scale,
        dt_projs_weight=torch.randn(4, D, R) * 0.5,
        dt_projs_bias=torch.randn(4, D) * 0.5 - 1.0,
        A_logs=torch.log(torch.rand(4 * D, N) * 4 + 0.5),
        Ds=torch.randn(4 * D),
    )


def _loop_discretised(x, p):
    """Per (k, d, l): delta, u, and per (k, l): B, C — all from explicit loops, float64."""
    Bsz, D, H, W = x.shape
    R = p["dt_projs_weight"].shape[-1]
    N = p["A_logs"].shape[1]
    x = x.double()
    xpw, dtw = p["x_proj_weight"].double(), p["dt_projs_weight"].double()
    order = _direction_order(H, W)
    L = H * W
    u = torch.zeros(Bsz, 4, D, L, dtype=torch.float64)
    for k in range(4):
        for l, (i, j) in enumerate(order[k]):
            u[:, k, :, l] = x[:, :, i, j]
    dbl = torch.einsum("bkdl,kcd->bkcl", u, xpw)
    dt_low, Bm, Cm = dbl[:, :, :R], dbl[:, :, R:R + N], dbl[:, :, R + N:]
    dt = torch.einsum("bkrl,kdr->bkdl", dt_low, dtw) + p["dt_projs_bias"].double()[None, :, :, None]
    delta = F.softplus(dt)
    A = -torch.exp(p["A_logs"].double()).view(4, D, N)
    return u, delta, A, Bm, Cm, order


def _loop_merge(ys, H, W, order):
    """Sum each direction's outputs back onto the pixel it came from."""
    Bsz, _, D, L = ys.shape
    out = torch.zeros(Bsz, D, H, W, dtype=ys.dtype)
    for k in range(4):
        for l, (i, j) in enumerate(order[k]):
            out[:, :, i, j] += ys[:, k, :, l]
    return out


def loop_ss2d(x, p):
    Bsz, D, H, W = x.shape
    u, delta, A, Bm, Cm, order = _loop_discretised(x, p)
    Ds = p["Ds"].double().view(4, D)
    N = A.shape[-1]
    ys = torch.zeros_like(u)
    for k in range(4):
        h = torch.zeros(Bsz, D, N, dtype=torch.float64)
        for l in range(H * W):
            h = torch.exp(delta[:, k, :, l, None] * A[k]) * h + delta[:, k, :, l, None] * Bm[:, k, None, :, l] * u[:, k, :, l, None]
            ys[:, k, :, l] = (h * Cm[:, k, None, :, l]).sum(-1) + Ds[k] * u[:, k, :, l]
    return _loop_merge(ys, H, W, order)


def loop_vmeanba(x, p, variant):
    Bsz, D, H, W = x.shape
    L = H * W
    u, delta, A, Bm, Cm, order = _loop_discretised(x, p)
    Ds = p["Ds"].double().view(4, D)
    N = A.shape[-1]
    ys = torch.zeros_like(u)
    for b in range(Bsz):
        groups = [list(range(4))] if variant in (0, 2) else [[k] for k in range(4)]
        for ks in groups:
            h = torch.zeros(N, dtype=torch.float64)
            for l in range(L):
                if variant == 2:
                    dm = sum(delta[b, k, d, l] for k in ks for d in range(D)) / (len(ks) * D)
                    um = sum(u[b, k, d, l] for k in ks for d in range(D)) / (len(ks) * D)
                    Am = A.mean((0, 1))
                    a_l = torch.exp(dm * Am)
                    bu_l = dm * um * sum(Bm[b, k, :, l] for k in ks) / len(ks)
                else:
                    rows = [(k, d) for k in ks for d in range(D)]
                    a_l = sum(torch.exp(delta[b, k, d, l] * A[k, d]) for k, d in rows) / len(rows)
                    bu_l = sum(delta[b, k, d, l] * Bm[b, k, :, l] * u[b, k, d, l] for k, d in rows) / len(rows)
                c_l = sum(Cm[b, k, :, l] for k in ks) / len(ks)
                h = a_l * h + bu_l
                y_m = (c_l * h).sum()
                for k in ks:
                    ys[b, k, :, l] = y_m + Ds[k] * u[b, k, :, l]
    return _loop_merge(ys, H, W, order)


def _rel(out, expected):
    return ((out.double() - expected).norm() / expected.norm()).item()


@pytest.fixture(params=["materialised", "two-pass"])
def scan_form(request, monkeypatch):
    """Run a test with both forms of scan_readout (small problems keep local states)."""
    if request.param == "two-pass":
        monkeypatch.setattr(ref, "_MATERIALISE_LIMIT", 0)
    return request.param


@pytest.mark.parametrize("L", [1, 2, 5, 49, 50, 197])
def test_linear_recurrence_matches_sequential(L, scan_form):
    a, b = torch.rand(3, 2, L), torch.randn(3, 2, L)
    h, expected = torch.zeros(3, 2), []
    for l in range(L):
        h = a[..., l] * h + b[..., l]
        expected.append(h)
    assert torch.allclose(ref.linear_recurrence(a, b), torch.stack(expected, -1), atol=1e-5, rtol=1e-5)


def test_selective_scan_matches_plain_sequential_scan(scan_form):
    """The chunked scan vs the textbook per-step recurrence, at v0 sizes with an odd length."""
    b, G, Dg, N, L = 2, 4, 3, 16, 67
    u, dt = torch.randn(b, G * Dg, L), torch.randn(b, G * Dg, L)
    A = -torch.rand(G * Dg, N) * 5
    Bm, Cm, D, bias = torch.randn(b, G, N, L), torch.randn(b, G, N, L), torch.randn(G * Dg), torch.randn(G * Dg)
    out = ref.selective_scan(u, dt, A, Bm, Cm, D, bias)
    delta = F.softplus(dt.double() + bias.double()[:, None])
    expected = torch.zeros(b, G * Dg, L, dtype=torch.float64)
    for r in range(G * Dg):
        g = r // Dg
        h = torch.zeros(b, N, dtype=torch.float64)
        for l in range(L):
            h = torch.exp(delta[:, r, l, None] * A[r].double()) * h + delta[:, r, l, None] * Bm[:, g, :, l].double() * u[:, r, l, None].double()
            expected[:, r, l] = (h * Cm[:, g, :, l].double()).sum(-1) + D[r] * u[:, r, l]
    assert _rel(out, expected) < 1e-5


@pytest.mark.parametrize("shape,N", [((1, 3, 4, 5), 1), ((2, 2, 3, 3), 4), ((1, 2, 5, 2), 16)])
def test_ss2d_scan_matches_loop_semantics(shape, N):
    x = torch.randn(shape)
    p = _random_params(shape[1], N, R=2)
    assert _rel(ref.ss2d_scan(x, **p), loop_ss2d(x, p)) < 1e-5


@pytest.mark.parametrize("variant", [0, 1, 2])
@pytest.mark.parametrize("shape,N", [((1, 3, 3, 4), 1), ((2, 2, 3, 2), 4)])
def test_vmeanba_scan_matches_loop_semantics(variant, shape, N):
    x = torch.randn(shape)
    p = _random_params(shape[1], N, R=2)
    assert _rel(ref.vmeanba_scan(x, **p, variant=variant), loop_vmeanba(x, p, variant)) < 1e-5


def test_long_sequences_stay_finite():
    """L = 3136 with strong decay: an exp(cumsum) formulation would underflow to NaN here."""
    x = torch.randn(1, 4, 56, 56) * 3
    p = _random_params(4, 1, R=1)
    p["dt_projs_bias"] = torch.full((4, 4), 3.0)
    p["A_logs"] = torch.full((16, 1), 3.0)
    assert torch.isfinite(ref.ss2d_scan(x, **p)).all()


@pytest.mark.parametrize("H,W,stride,keep", [(7, 7, 2, 1), (8, 6, 2, 1), (5, 9, 2, 1), (9, 7, 3, 2), (1, 4, 2, 1)])
def test_quartermap_down_and_up_match_loops(H, W, stride, keep):
    x = torch.randn(2, 3, H, W)
    rows = [i for i in range(H) if i % stride < keep]
    cols = [j for j in range(W) if j % stride < keep]
    down = ref.quartermap_down(x, stride, keep)
    assert down.shape[-2:] == (ref.kept_size(H, stride, keep), ref.kept_size(W, stride, keep)) == (len(rows), len(cols))
    for a, i in enumerate(rows):
        for c, j in enumerate(cols):
            assert torch.equal(down[:, :, a, c], x[:, :, i, j])
    up = ref.quartermap_up(down, x)
    Hs, Ws = len(rows), len(cols)
    for i in range(H):
        for j in range(W):
            assert torch.equal(up[:, :, i, j], down[:, :, math.floor(i * Hs / H), math.floor(j * Ws / W)])


def test_quartermap_stride2_restores_each_kept_pixel_into_its_block():
    """METHODS.md: for stride 2, each kept pixel fills its own 2x2 block, odd sizes included (7 -> 4 -> 7)."""
    x = torch.randn(1, 1, 7, 7)
    up = ref.quartermap_up(ref.quartermap_down(x), x)
    for i in range(7):
        for j in range(7):
            assert up[0, 0, i, j] == x[0, 0, 2 * (i // 2), 2 * (j // 2)]


def test_float16_inputs_give_float16_outputs_close_to_float32():
    x = torch.randn(1, 4, 5, 6)
    p = _random_params(4, 1, R=1)
    y32 = ref.ss2d_scan(x, **p)
    p16 = dict(p, x_proj_weight=p["x_proj_weight"].half(), dt_projs_weight=p["dt_projs_weight"].half())
    y16 = ref.ss2d_scan(x.half(), **p16)
    assert y16.dtype == torch.float16
    assert _rel(y16.float(), y32.double()) < 5e-3  # fp16 input/weight rounding (2^-11) through a short scan
