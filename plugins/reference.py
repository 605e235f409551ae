"""PyTorch reference for every custom op in the contract: the definition the ONNX function bodies,
the CUDA kernels and the TensorRT plugins are all tested against.

All arithmetic runs in float32 whatever the input dtype; outputs are cast back to the input's
dtype. Everything here is differentiable (no in-place updates), so the same code trains the
sample models. Shapes follow ``plugins/contract/*.yaml``: x is (B, D, H, W), K = 4 directions,
row r = k * D + d.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from plugins.contract import QUARTERMAP_DOWN

K = 4
# Bound on the elements of one (b, rows, N, L) scan tensor; larger problems are cut along rows so
# that a batch of v0 (d_state 16) images at 224x224 does not need gigabytes at once.
_MAX_SCAN_ELEMENTS = 1 << 25
# Below this many elements per scan the local states are kept (fewer Python steps); above it the
# two-pass form avoids materialising h.
_MATERIALISE_LIMIT = 1 << 22


# --------------------------------------------------------------------------- linear recurrence
def _chunking(L: int) -> tuple[int, int, int]:
    """Chunk length T ~ sqrt(L), number of chunks and padding: the Python loops then run about
    2 * sqrt(L) times instead of L (56 + 56 for L = 3136)."""
    T = max(1, math.isqrt(max(L - 1, 0)) + 1)
    n_chunks = -(-L // T)
    return T, n_chunks, n_chunks * T - L


def _carry_across_chunks(ends_decay: torch.Tensor, ends_local: torch.Tensor) -> torch.Tensor:
    """State entering each chunk, from each chunk's total decay and zero-start end state."""
    carry = torch.zeros_like(ends_local[0])
    carries = [carry]
    for k in range(ends_local.shape[0] - 1):
        carry = torch.addcmul(ends_local[k], ends_decay[k], carry)
        carries.append(carry)
    return torch.stack(carries, 0)


def scan_readout(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Time-major scan with a fused readout: h_t = a_t * h_{t-1} + b_t (h_{-1} = 0) and
    y_t = sum_n c_t[..., n] * h_t[..., n].

    a, b: (L, *S, N); c broadcastable to (L, *S, N). Returns y: (L, *S).
    Exact: no division and no logarithm, only the products and sums of the sequential scan.
    The sequence is cut into ~sqrt(L) chunks of ~sqrt(L) steps; every chunk runs from a zero state
    (all chunks at once), a short loop over chunks gives each chunk's true incoming state, and
    h = local + cumprod(a) * incoming. Large problems instead re-run each chunk from its incoming
    state and read y out on the way, so h (B x rows x N x L) is never materialised.
    """
    L = a.shape[0]
    T, n_chunks, pad = _chunking(L)
    if pad:
        a = torch.cat([a, a.new_ones((pad,) + a.shape[1:])])
        b = torch.cat([b, b.new_zeros((pad,) + b.shape[1:])])
        c = torch.cat([c, c.new_zeros((pad,) + c.shape[1:])])
    a = a.reshape((n_chunks, T) + a.shape[1:])
    b = b.reshape((n_chunks, T) + b.shape[1:])
    c = c.reshape((n_chunks, T) + c.shape[1:])
    if a.numel() <= _MATERIALISE_LIMIT:
        # small problem: keep every local state (one loop fewer; Python overhead dominates here)
        h = b[:, 0]
        local = [h]
        for t in range(1, T):
            h = torch.addcmul(b[:, t], a[:, t], h)
            local.append(h)
        local = torch.stack(local, 1)
        decay = torch.cumprod(a, dim=1)
        carry_in = _carry_across_chunks(decay[:, -1], local[:, -1])
        h_all = torch.addcmul(local, decay, carry_in.unsqueeze(1))
        y = (h_all * c).sum(-1)
        y = y.reshape((n_chunks * T,) + y.shape[2:])
        return y[:L] if pad else y
    if n_chunks > 1:
        h = b[:, 0]
        for t in range(1, T):
            h = torch.addcmul(b[:, t], a[:, t], h)
        h = _carry_across_chunks(a.prod(dim=1), h)
    else:
        h = torch.zeros_like(b[:, 0])
    ys = []
    for t in range(T):
        h = torch.addcmul(b[:, t], a[:, t], h)
        ys.append((h * c[:, t]).sum(-1))
    y = torch.stack(ys, 1)
    y = y.reshape((n_chunks * T,) + y.shape[2:])
    return y[:L] if pad else y


def linear_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h[l] = a[l] * h[l-1] + b[l] along the last axis (h itself, for tests and small problems)."""
    L = a.shape[-1]
    ones = torch.ones((L,) + (1,) * a.dim(), dtype=a.dtype, device=a.device)
    y = scan_readout(a.movedim(-1, 0).unsqueeze(-1), b.movedim(-1, 0).unsqueeze(-1), ones)
    return y.movedim(0, -1)


def selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True) -> torch.Tensor:
    """Selective scan with grouped B/C (VMamba's layout).

    u, delta: (b, G*D, L); A: (G*D, N); B, C: (b, G, N, L); D, delta_bias: (G*D,).
    Returns y (b, G*D, L) float32 with y_l = <C_l, h_l> + D * u_l,
    h_l = exp(delta_l * A) * h_{l-1} + delta_l * B_l * u_l.
    """
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    b, rows, L = u.shape
    G, N = B.shape[1], A.shape[1]
    per_group = rows // G
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)  # torch passes x > 20 through, as the official kernels do
    # time-major: every scan step then reads one contiguous slab
    delta_t = delta.permute(2, 0, 1)  # (L, b, rows)
    du_t = (delta * u).permute(2, 0, 1)
    B_t, C_t = B.permute(3, 0, 1, 2), C.permute(3, 0, 1, 2)  # (L, b, G, N)
    out = []
    step = max(1, min(per_group, _MAX_SCAN_ELEMENTS // max(1, b * N * L)))
    for g in range(G):
        for d0 in range(0, per_group, step):
            r0, r1 = g * per_group + d0, g * per_group + min(per_group, d0 + step)
            a = torch.exp(delta_t[:, :, r0:r1, None] * A[r0:r1])  # (L, b, r, N)
            bu = du_t[:, :, r0:r1, None] * B_t[:, :, g, None, :]
            out.append(scan_readout(a, bu, C_t[:, :, g, None, :]))  # (L, b, r)
    y = torch.cat(out, 2).permute(1, 2, 0)
    if D is not None:
        y = y + D.float()[:, None] * u
    return y


# --------------------------------------------------------------------------- cross scan / merge
def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, L): row-major, column-major, and both reversed."""
    row = x.flatten(2)
    col = x.transpose(2, 3).flatten(2)
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], 1)


def cross_merge(ys: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, 4, D, L) -> (B, D, H, W): undo each direction's order and sum."""
    Bsz, _, D, _ = ys.shape
    row = ys[:, 0] + ys[:, 2].flip(-1)
    col = ys[:, 1] + ys[:, 3].flip(-1)
    return row.view(Bsz, D, H, W) + col.view(Bsz, D, W, H).transpose(2, 3)


def _projections(x, x_proj_weight, dt_projs_weight):
    """Cross-scanned inputs and per-direction projections, float32."""
    R = dt_projs_weight.shape[-1]
    N = (x_proj_weight.shape[1] - R) // 2
    xs = cross_scan(x.float())  # (B, 4, D, L)
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, x_proj_weight.float())
    dt_low, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dt_low, dt_projs_weight.float())
    return xs, dts, Bs, Cs


# --------------------------------------------------------------------------- the four ops
def ss2d_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds) -> torch.Tensor:
    """Contract op SS2DScan: the full SS2D core, (B, D, H, W) -> (B, D, H, W)."""
    Bsz, D, H, W = x.shape
    L = H * W
    xs, dts, Bs, Cs = _projections(x, x_proj_weight, dt_projs_weight)
    ys = selective_scan(
        xs.reshape(Bsz, K * D, L), dts.reshape(Bsz, K * D, L), -torch.exp(A_logs.float()),
        Bs, Cs, Ds, dt_projs_bias.reshape(-1), delta_softplus=True,
    )
    return cross_merge(ys.view(Bsz, K, D, L), H, W).to(x.dtype)


def vmeanba_reduced_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, variant: int = 0):
    """The reduced scan alone: (B, G, L) outputs, G = 1 (variants 0, 2) or 4 (variant 1), in
    each direction's own sequence order."""
    Bsz, D, H, W = x.shape
    L = H * W
    N = A_logs.shape[1]
    xs, dts, Bs, Cs = _projections(x, x_proj_weight, dt_projs_weight)
    delta = F.softplus(dts + dt_projs_bias.float().view(1, K, D, 1))  # (B, 4, D, L)
    A = -torch.exp(A_logs.float()).view(K, D, N)
    if variant in (0, 1):
        # discretise at full width, then average exp(delta*A) and delta*B*u
        abar = torch.exp(delta[:, :, :, None, :] * A[None, :, :, :, None])  # (B, 4, D, N, L)
        du = (delta * xs).mean(2)  # (B, 4, L): mean over channels of delta*u
        if variant == 0:
            a_m = abar.mean((1, 2))[:, None]  # (B, 1, N, L)
            bu_m = (Bs * du[:, :, None, :]).mean(1, keepdim=True)  # mean over rows = mean_k B_k * mean_d du
            c_m = Cs.mean(1, keepdim=True)
        else:
            a_m = abar.mean(2)  # (B, 4, N, L)
            bu_m = Bs * du[:, :, None, :]
            c_m = Cs
    elif variant == 2:
        # average the continuous quantities first, then discretise once
        delta_m = delta.mean((1, 2))  # (B, L)
        u_m = xs.mean((1, 2))
        A_m = A.mean((0, 1))  # (N,)
        a_m = torch.exp(delta_m[:, None, :] * A_m[:, None])[:, None]  # (B, 1, N, L)
        bu_m = (delta_m * u_m)[:, None, None, :] * Bs.mean(1, keepdim=True)
        c_m = Cs.mean(1, keepdim=True)
    else:
        raise ValueError(f"VMeanba variant must be 0, 1 or 2, got {variant}")
    # (B, G, N, L) -> time-major (L, B, G, N)
    y = scan_readout(a_m.permute(3, 0, 1, 2), bu_m.permute(3, 0, 1, 2), c_m.permute(3, 0, 1, 2))
    return y.permute(1, 2, 0), xs  # (B, G, L)


def vmeanba_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, variant: int = 0):
    """Contract op VMeanbaScan: reduced scan, broadcast to every row, plus the per-channel skip
    term, then cross-merge. (B, D, H, W) -> (B, D, H, W)."""
    Bsz, D, H, W = x.shape
    L = H * W
    y_m, xs = vmeanba_reduced_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, variant)
    ys = y_m[:, :, None, :].expand(Bsz, K, D, L) + Ds.float().view(1, K, D, 1) * xs
    return cross_merge(ys, H, W).to(x.dtype)


_QM_STRIDE, _QM_KEEP = QUARTERMAP_DOWN.default("stride"), QUARTERMAP_DOWN.default("keep")


def kept_size(size: int, stride: int = _QM_STRIDE, keep: int = _QM_KEEP) -> int:
    """How many of ``size`` rows QuarterMap keeps: the first ``keep`` of every ``stride``."""
    return (size // stride) * keep + min(size % stride, keep)


def quartermap_down(x: torch.Tensor, stride: int = _QM_STRIDE, keep: int = _QM_KEEP) -> torch.Tensor:
    """Contract op QuarterMapDown: keep rows/cols i with i % stride < keep."""
    QUARTERMAP_DOWN.check(stride=stride, keep=keep)
    Bsz, C, H, W = x.shape
    Hp, Wp = -(-H // stride) * stride, -(-W // stride) * stride
    xp = F.pad(x, (0, Wp - W, 0, Hp - H))
    xp = xp.view(Bsz, C, Hp // stride, stride, Wp // stride, stride)[:, :, :, :keep, :, :keep]
    xp = xp.reshape(Bsz, C, (Hp // stride) * keep, (Wp // stride) * keep)
    return xp[:, :, : kept_size(H, stride, keep), : kept_size(W, stride, keep)]


def quartermap_up(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Contract op QuarterMapUp: out[i, j] = y[(i * Hs) // H, (j * Ws) // W], size of ``like``."""
    H, W = like.shape[-2:]
    Hs, Ws = y.shape[-2:]
    rows = torch.arange(H, device=y.device) * Hs // H
    cols = torch.arange(W, device=y.device) * Ws // W
    return y.index_select(2, rows).index_select(3, cols)
