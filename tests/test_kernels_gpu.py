"""The CUDA kernels (plugins/kernels.py -> libvmamba_kernels.so) against plugins/reference.py.

Reference: plugins/reference.py evaluated in float64 (inputs upcast; its internal ``.float()`` casts
are redirected to ``.double()`` for the call), so the bound measures the kernels' own error. The
float64 run is itself checked against the float32 reference on every case.

Tolerances, ||out - ref|| / ||ref||:
- float32: 5e-5. Float32 rounding is 6e-8 per operation; the projections sum D products and each
  scan output sums a geometrically decaying series, so errors grow to ~1e-6; the kernels use the
  hardware exp2 (2 ulp) and a different summation order (segmented scans, Ds summed once). Measured
  errors are printed; 5e-5 leaves margin while a wrong index or a missing direction gives >1e-2.
- float16: 1e-3 (inputs are float16, arithmetic float32, the output is rounded once to float16:
  2^-11 relative half-ulp, ~3e-4 RMS; everything else is the float32 error above).
Outputs are poisoned with NaN before each call, so an unwritten element fails the check.
"""
from __future__ import annotations

import contextlib
import math

import pytest
import torch

from plugins import kernels
from plugins import ops  # noqa: F401  (the torch.library ops)
from plugins import reference as ref

AVAILABLE, REASON = kernels.kernels_available()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not AVAILABLE, reason=f"CUDA kernels unavailable: {REASON}"),
]
if not AVAILABLE:
    print(f"tests/test_kernels_gpu.py skipped: {REASON}")

TOL = {torch.float32: 5e-5, torch.float16: 1e-3}
DEV = "cuda"


@contextlib.contextmanager
def float64_reference():
    """Run plugins/reference.py in float64: its ``.float()`` casts become ``.double()``."""
    original = torch.Tensor.float
    torch.Tensor.float = torch.Tensor.double
    try:
        yield
    finally:
        torch.Tensor.float = original


def rel_err(out: torch.Tensor, want: torch.Tensor) -> float:
    out, want = out.double(), want.double()
    assert torch.isfinite(out).all(), "non-finite output (an element was not written, or overflow)"
    return ((out - want).norm() / want.norm().clamp_min(1e-30)).item()


def make_inputs(B, D, H, W, N, R, dtype, seed, ds_scale=1.0):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).to(DEV)

    x = rnd(B, D, H, W).to(dtype)
    params = dict(
        x_proj_weight=rnd(4, R + 2 * N, D, scale=0.5 / math.sqrt(D)).to(dtype),
        dt_projs_weight=rnd(4, D, R, scale=1.0 / math.sqrt(R)).to(dtype),
        dt_projs_bias=rnd(4, D, scale=0.5, shift=-2.0),
        A_logs=torch.log(torch.rand(4 * D, N, generator=g) * 4 + 0.5).to(DEV),
        Ds=rnd(4 * D, scale=ds_scale),
    )
    return x, params


def reference64(fn, x, params, *extra):
    with float64_reference():
        return fn(x.double(), *(p.double() for p in params.values()), *extra)


# (B, D, H, W, d_state, dt_rank): odd and non-square maps, L not a multiple of any chunk,
# d_state 1 (v2), 16 (v0), and in between; batch up to 256 on small maps; up to 128x128.
SCAN_SHAPES = [
    (1, 8, 7, 9, 1, 3),
    (2, 16, 13, 11, 16, 6),
    (3, 5, 1, 17, 4, 2),
    (2, 6, 19, 1, 2, 11),
    (256, 4, 5, 3, 1, 6),
    (1, 24, 57, 31, 1, 6),
    (2, 10, 56, 56, 1, 6),
    (1, 3, 128, 128, 1, 4),
    (1, 4, 97, 128, 16, 12),
    (4, 40, 7, 7, 16, 24),
    (1, 20, 9, 10, 1, 40),
    (3, 12, 14, 14, 1, 24),  # register-tiled W_dt paths: dt_rank 17..32 and 33..64
    (2, 8, 7, 7, 1, 48),
    (1, 6, 9, 7, 1, 64),
    (1, 96, 56, 56, 1, 6),  # VMamba-T stage 0 at batch 1 (chunked, 16 slots) and stage 3 at batch 8
    (8, 768, 7, 7, 1, 48),
    (8, 1024, 7, 7, 1, 64),   # VMamba-B stage 3 at batch 8: unchunked, rank tile 64 (fragments in shared memory)
    (1, 192, 56, 56, 16, 6),  # v0 / MedMamba stage 0 at batch 1: chunked two-pass d_state 16
    (1, 768, 7, 7, 1, 48),    # small-tile projection (few blocks)
]


def _ids(shapes):
    return ["B{}_D{}_{}x{}_N{}_R{}".format(*s) for s in shapes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SCAN_SHAPES, ids=_ids(SCAN_SHAPES))
def test_ss2d_scan_matches_reference(shape, dtype):
    B, D, H, W, N, R = shape
    x, params = make_inputs(B, D, H, W, N, R, dtype, seed=hash(shape) % 10_000)
    want = reference64(ref.ss2d_scan, x, params)
    want32 = ref.ss2d_scan(x.float(), *(p.float() for p in params.values()))
    # same function: a broken float64 redirection would differ by O(1), not by float32 rounding
    assert rel_err(want32, want) < 1e-4, "float64 reference disagrees with the float32 reference"
    out = torch.full_like(x, float("nan"))
    kernels.ss2d_scan(x, *params.values(), out=out)
    err = rel_err(out, want)
    print(f"ss2d {shape} {dtype}: rel err {err:.2e}")
    assert err < TOL[dtype]
    # the registered CUDA kernel of the custom op is this kernel, bit for bit (deterministic)
    again = torch.ops.vmamba.ss2d_scan(x, *params.values())
    assert torch.equal(again, out)


def check_forced_decomposition(shape, dtype, knobs, seed, monkeypatch):
    """The SS2D op with the launcher's choices forced by environment knobs (VMK_*), against the
    float64 reference."""
    B, D, H, W, N, R = shape
    x, params = make_inputs(B, D, H, W, N, R, dtype, seed=seed)
    want = reference64(ref.ss2d_scan, x, params)
    for name, value in knobs.items():
        monkeypatch.setenv(name, str(value))
    out = torch.full_like(x, float("nan"))
    kernels.ss2d_scan(x, *params.values(), out=out)
    err = rel_err(out, want)
    print(f"ss2d {knobs} {shape} {dtype}: rel err {err:.2e}")
    assert err < TOL[dtype]


# Every decomposition the launcher can pick (VMK_SCAN_SLOTS forces it): unchunked, and 2..16 chunk
# slots per super-chunk (d_state 1; d_state 16 takes up to 8, a larger request falls back to auto),
# on shapes where the windows end mid-row/column and channels are not a multiple of 32 (dead lanes).
# Rank tiles 8 to 64, the dt on tensor cores (float16 operands for float16 I/O, 3xTF32 for float32):
# the unchunked float16 scan at tiles 32-64 keeps u in a rolling buffer and, at 48-64, the W_dt
# fragments in shared memory (scan_rolls, ScanDt).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("slots", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("shape", [(2, 40, 23, 29, 1, 6), (1, 33, 56, 56, 1, 12), (3, 8, 14, 14, 1, 40),
                                   (2, 40, 9, 13, 1, 64), (1, 40, 23, 29, 16, 6), (1, 24, 28, 28, 16, 24)],
                         ids=lambda s: "B{}_D{}_{}x{}_N{}_R{}".format(*s))
def test_ss2d_scan_every_slot_count(shape, slots, dtype, monkeypatch):
    check_forced_decomposition(shape, dtype, {"VMK_SCAN_SLOTS": slots}, 11 + slots, monkeypatch)


# The segmented chunked scan (batches up to 4): the sequence cut into 1..16 segments
# (VMK_SCAN_SEGMENTS), each but the last summarised by one launch and rescanned from its chained
# incoming state by the next; segment counts that do and do not divide the windows, d_state 1 and 16,
# dead lanes, both dtypes.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("segments", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("shape", [(1, 33, 56, 56, 1, 12), (2, 40, 23, 29, 16, 6), (4, 24, 28, 28, 1, 24),
                                   (1, 96, 31, 57, 16, 3)],
                         ids=lambda s: "B{}_D{}_{}x{}_N{}_R{}".format(*s))
def test_ss2d_scan_every_segment_count(shape, segments, dtype, monkeypatch):
    check_forced_decomposition(shape, dtype, {"VMK_SCAN_SEGMENTS": segments}, 31 + segments, monkeypatch)


# Every float16 decomposition: the prep variant (VMK_PREP_TILE: tensor-core tiles of 32/64 rows x 64
# pixels "large", 16 x 16 with the channel sum split between warps "small", the CUDA-core GEMM
# "simt") and the scan's dt (VMK_SCAN_DT: tensor cores where the rank tile allows "auto", CUDA cores
# "simt"). Shapes: D not a multiple of 8 or of the 16-channel step (scalar paths, zero padding), L
# not a multiple of 8 (unaligned pixel runs), x_dbl rows past 64 (several row tiles), D > 1024 (the
# small tiles stage the channel sum in more than one round).
@pytest.mark.parametrize("dt", ["auto", "simt"])
@pytest.mark.parametrize("variant", ["large", "small", "simt"])
@pytest.mark.parametrize("shape", [(2, 40, 23, 29, 1, 6), (3, 33, 14, 14, 1, 24), (2, 96, 16, 16, 1, 48),
                                   (1, 1040, 5, 7, 1, 6), (2, 24, 9, 8, 16, 12)],
                         ids=lambda s: "B{}_D{}_{}x{}_N{}_R{}".format(*s))
def test_ss2d_scan_every_fp16_decomposition(shape, variant, dt, monkeypatch):
    check_forced_decomposition(shape, torch.float16, {"VMK_PREP_TILE": variant, "VMK_SCAN_DT": dt}, 23, monkeypatch)


# dt_projs_bias shifts from make_inputs' -2 +- 0.5, per regime: (shift, A_logs shift, Ds scale)
SOFTPLUS_REGIMES = {
    "above_20": (23.0, -4.0, 1.0),  # dt ~ 21: softplus passes its input through; small A keeps exp(delta A) > 0
    "threshold": (-2.16, 0.0, 0.0),  # dt ~ -4.16 +- 0.5: both sides of the series / lg2 select (z = 2^-6)
    "small": (-5.0, 0.0, 0.0),  # dt ~ -7: delta ~ 1e-3, the low end of trained VMamba steps (series side)
    "tiny": (-16.0, 0.0, 0.0),  # dt ~ -18: delta ~ 1.5e-8, around 2^-24, where lg2(1 + z) had lost it all
}


@pytest.mark.parametrize("op", ["ss2d", "vmeanba"])
@pytest.mark.parametrize(
    "regime, dtype",
    [("above_20", torch.float32), ("above_20", torch.float16), ("threshold", torch.float32),
     ("small", torch.float32), ("tiny", torch.float32)],
    ids=["above_20-fp32", "above_20-fp16", "threshold-fp32", "small-fp32", "tiny-fp32"],
)
def test_softplus_across_its_range(op, regime, dtype):
    """softplus_f32 (common.cuh) across its range against the float64 reference: the pass-through above
    20, both sides of the select between the series (z = exp(-|dt|) < 2^-6) and ln2 lg2(1 + z), small
    steps, and dt ~ -18, where softplus ~ 1.5e-8 and log1p through lg2(1 + z) was as large as the result
    itself (v8-v9: 30-43% off). Ds = 0 below 20, so y is the scans alone and proportional to delta.
    float32 only there: such y underflow float16."""
    shift, a_shift, ds_scale = SOFTPLUS_REGIMES[regime]
    x, params = make_inputs(2, 24, 9, 11, 1, 6, dtype, seed=91, ds_scale=ds_scale)
    params["dt_projs_bias"] = params["dt_projs_bias"] + shift
    params["A_logs"] = params["A_logs"] + a_shift
    fn = ref.ss2d_scan if op == "ss2d" else ref.vmeanba_scan
    extra = () if op == "ss2d" else (0,)
    want = reference64(fn, x, params, *extra)
    out = torch.full_like(x, float("nan"))
    if op == "ss2d":
        kernels.ss2d_scan(x, *params.values(), out=out)
    else:
        kernels.vmeanba_scan(x, *params.values(), variant=0, out=out)
    err = rel_err(out, want)
    print(f"{op} softplus {regime} {dtype}: rel err {err:.2e}, |y| max {want.abs().max().item():.2e}")
    assert err < TOL[dtype]


def test_ss2d_scan_without_skip_term():
    """Ds = 0: the output is the scans alone, so a scan error cannot hide behind D * u."""
    x, params = make_inputs(2, 12, 23, 17, 1, 6, torch.float32, seed=7, ds_scale=0.0)
    want = reference64(ref.ss2d_scan, x, params)
    out = torch.full_like(x, float("nan"))
    kernels.ss2d_scan(x, *params.values(), out=out)
    err = rel_err(out, want)
    print(f"ss2d Ds=0: rel err {err:.2e}")
    assert err < TOL[torch.float32]



# The float16 flat prep (VMK_PREP_TILE=flat; 64-pixel tiles over the flat (image, pixel) order, all
# x_dbl rows of a tile in one block up to 320, VMK_PREP_FLAT_ROWS forces the rows per block). Shapes:
# tiles that span images (L does not divide 64, down to L = 15), batch 1 and > 1, L a multiple of 8
# (16-byte pixel runs), of 4 only (8-byte runs) and odd (2-byte loads), D not a multiple of 8 (scalar
# W_x and xt) or of the
# 64-channel chunk and D > 1024 (several chunks through both buffers), d_state 1 and 16, dt_rank 6,
# 12, 24, 40, 48, 64 (x_dbl rows 32 to 384: one row tile, skipped m-tiles, more than one row tile).
FLAT_PREP_SHAPES = [(3, 40, 7, 7, 1, 6), (5, 33, 14, 14, 1, 24), (1, 96, 7, 9, 1, 48), (4, 64, 28, 28, 1, 12),
                    (3, 20, 4, 6, 1, 6), (2, 136, 8, 9, 16, 12), (3, 200, 5, 7, 16, 48), (2, 24, 9, 8, 1, 40),
                    (2, 1040, 3, 5, 1, 64), (1, 72, 5, 5, 16, 64), (7, 48, 9, 10, 16, 24), (3, 56, 6, 10, 16, 12),
                    (2, 20, 2, 10, 1, 6)]


@pytest.mark.parametrize("rows", ["auto", 64, 128, 160, 224, 320])
@pytest.mark.parametrize("shape", FLAT_PREP_SHAPES, ids=_ids(FLAT_PREP_SHAPES))
def test_ss2d_scan_flat_fp16_prep(shape, rows, monkeypatch):
    check_forced_decomposition(shape, torch.float16, {"VMK_PREP_TILE": "flat", "VMK_PREP_FLAT_ROWS": rows}, 41,
                               monkeypatch)


# The launcher's own choice (no knob set) at the VMamba-T stage 1-3 shapes: batch 128, the first batch
# at which it takes the flat prep on 132 SMs (11 / 22 / 42 images), and a batch below that (the
# other float16 kernels); a d_state-16 stage-2 shape.
@pytest.mark.parametrize("shape", [(8, 192, 28, 28, 1, 12), (11, 192, 28, 28, 1, 12), (128, 192, 28, 28, 1, 12),
                                   (16, 384, 14, 14, 1, 24), (22, 384, 14, 14, 1, 24), (128, 384, 14, 14, 1, 24),
                                   (32, 768, 7, 7, 1, 48), (42, 768, 7, 7, 1, 48), (128, 768, 7, 7, 1, 48),
                                   (64, 384, 14, 14, 16, 24)],
                         ids=lambda s: "B{}_D{}_{}x{}_N{}_R{}".format(*s))
def test_ss2d_scan_fp16_short_sequence_stages(shape, monkeypatch):
    monkeypatch.delenv("VMK_PREP_TILE", raising=False)
    monkeypatch.delenv("VMK_PREP_FLAT_ROWS", raising=False)
    check_forced_decomposition(shape, torch.float16, {}, 43, monkeypatch)


# Every float32 decomposition: the prep (VMK_PREP_TILE: tensor cores in 3xTF32 with the large tiles,
# "large", or the small tiles whose channel sum is split between warps, "small"; the CUDA-core GEMM,
# "simt") and the scan's dt (VMK_SCAN_DT: 3xTF32 tensor cores wherever a rank tile exists, "auto";
# CUDA cores, "simt"), in the chunked and unchunked scans. A single TF32 product (10-bit mantissa)
# would miss the float32 bound by 10x or more; 3xTF32 keeps float32 accuracy. Shapes: every rank tile
# (8, 16, 32, 48, 64) and the odd rank 40, D not a multiple of 4, 8 or 32 (scalar W_x loads, dead
# lanes, a partial channel round), L < 64 and L not a multiple of 4 (partial pixel tiles, scalar x
# loads), D > 1024 (several channel rounds in both tile sizes), d_state 16 with tiles 16 and 48,
# batch 1 and > 1, and VMamba-T stage 3 (D 768, 7x7, rank 48).
FP32_DECOMPOSITION_SHAPES = [
    (2, 40, 23, 29, 1, 6),
    (1, 13, 9, 10, 1, 12),
    (3, 33, 14, 14, 1, 24),
    (2, 8, 7, 7, 1, 48),
    (1, 20, 9, 10, 1, 40),
    (2, 70, 7, 5, 1, 64),
    (2, 24, 9, 8, 16, 12),
    (1, 50, 11, 6, 16, 48),
    (1, 1040, 5, 7, 1, 6),
    (4, 768, 7, 7, 1, 48),
]


@pytest.mark.parametrize("dt", ["auto", "simt"])
@pytest.mark.parametrize("variant", ["large", "small", "simt"])
@pytest.mark.parametrize("shape", FP32_DECOMPOSITION_SHAPES, ids=_ids(FP32_DECOMPOSITION_SHAPES))
def test_ss2d_scan_every_fp32_decomposition(shape, variant, dt, monkeypatch):
    check_forced_decomposition(shape, torch.float32, {"VMK_PREP_TILE": variant, "VMK_SCAN_DT": dt}, 29, monkeypatch)


# The 3xTF32 dt in the chunked scans (VMK_SCAN_SLOTS > 1: DtTf32.window), d_state 1 and 16, with the
# prep on tensor cores too.
@pytest.mark.parametrize("slots", [2, 8])
@pytest.mark.parametrize("shape", [(1, 20, 23, 29, 1, 40), (1, 40, 28, 28, 16, 48), (2, 72, 17, 19, 1, 64)],
                         ids=lambda s: "B{}_D{}_{}x{}_N{}_R{}".format(*s))
def test_ss2d_scan_fp32_tensor_core_dt_chunked(shape, slots, monkeypatch):
    check_forced_decomposition(shape, torch.float32, {"VMK_SCAN_SLOTS": slots, "VMK_SCAN_DT": "auto"}, 37 + slots,
                               monkeypatch)


# The float32 flat prep (VMK_PREP_TILE=flat: the flat tiles with 3xTF32 fragments, 32-channel chunks)
# over the float16 flat prep's shapes (in float32: 16-byte pixel runs where L % 4 == 0, 8-byte runs at
# L = 90, 4-byte loads at odd L; D not a multiple of 4 only at 33; partial last chunks of 1 to 24
# channels), plus 8-byte runs with D not a multiple of 4 (scalar W_x and xt), d_state 16 at rank 40
# (288 x_dbl rows: two row tiles at 224, skipped m-tiles at 320) and VMamba-T stage 3 (24 chunks);
# every VMK_PREP_FLAT_ROWS value.
FLAT_FP32_PREP_SHAPES = FLAT_PREP_SHAPES + [(2, 37, 6, 5, 1, 12), (3, 50, 5, 6, 16, 40), (4, 768, 7, 7, 1, 48)]


@pytest.mark.parametrize("rows", ["auto", 64, 128, 160, 224, 320])
@pytest.mark.parametrize("shape", FLAT_FP32_PREP_SHAPES, ids=_ids(FLAT_FP32_PREP_SHAPES))
def test_ss2d_scan_flat_fp32_prep(shape, rows, monkeypatch):
    check_forced_decomposition(shape, torch.float32, {"VMK_PREP_TILE": "flat", "VMK_PREP_FLAT_ROWS": rows}, 47,
                               monkeypatch)


# The launcher's own float32 choice at the VMamba-T stage 1-3 shapes: batch 128, the first batch at
# which it takes the flat prep on 132 SMs (11 / 22 / 42 images), a batch below that (the per-image
# 3xTF32 tiles) and a d_state-16 stage-2 shape.
@pytest.mark.parametrize("shape", [(8, 192, 28, 28, 1, 12), (11, 192, 28, 28, 1, 12), (128, 192, 28, 28, 1, 12),
                                   (22, 384, 14, 14, 1, 24), (128, 384, 14, 14, 1, 24), (32, 768, 7, 7, 1, 48),
                                   (42, 768, 7, 7, 1, 48), (128, 768, 7, 7, 1, 48), (64, 384, 14, 14, 16, 24)],
                         ids=lambda s: "B{}_D{}_{}x{}_N{}_R{}".format(*s))
def test_ss2d_scan_fp32_short_sequence_stages(shape, monkeypatch):
    monkeypatch.delenv("VMK_PREP_TILE", raising=False)
    monkeypatch.delenv("VMK_PREP_FLAT_ROWS", raising=False)
    check_forced_decomposition(shape, torch.float32, {}, 53, monkeypatch)


# The fused scan + merge for short sequences (VMK_SCAN_FUSED=1 forces it, 0 the three launches; the
# launcher takes it by itself where the unchunked scan would run and the shared y tiles leave enough
# resident warps). One block scans all four directions of its channels into shared tiles and writes
# y itself. Knobs: its x_dbl window rows (VMK_SCAN_FUSED_ROWS 16 / 32 / 64: one window, several,
# a last partial one) and two channel groups per block (VMK_SCAN_GROUPS=2, where ceil(D / 32) is
# even). Shapes: L < 16, L < 64, L not a multiple of 16, L = 196 and 256, D not a multiple of 32,
# batch 1 and > 1, d_state 1 and 16, dt_rank 6 / 12 / 24 / 40 / 48 / 64 (every rank tile), and
# VMamba-T stages 2-3 (D 384, 14x14, rank 24; D 768, 7x7, rank 48). Every configuration run below
# fits the fused block in the H200's 227 KB of shared memory per block (the largest, float32 at L 256
# with 64 window rows, 175 KB; two groups, float32 at L 117 and rank 64 with 64 rows, 209 KB), so the
# forced runs do test the fused kernel; two groups of float32 tiles at L >= 196 would not (229 KB and
# more: the launcher would run the three launches) and are skipped.
FUSED_SHAPES = [
    (1, 40, 7, 7, 1, 6),
    (3, 70, 5, 9, 16, 24),
    (2, 96, 14, 14, 1, 48),
    (2, 33, 9, 13, 1, 64),
    (1, 24, 3, 5, 1, 40),
    (2, 64, 16, 16, 1, 24),
    (2, 50, 12, 17, 16, 12),
    (4, 384, 14, 14, 1, 24),
    (8, 768, 7, 7, 1, 48),
]
FUSED_KNOBS = [
    {"VMK_SCAN_FUSED": 1},
    {"VMK_SCAN_FUSED": 0},
    {"VMK_SCAN_FUSED": 1, "VMK_SCAN_FUSED_ROWS": 16},
    {"VMK_SCAN_FUSED": 1, "VMK_SCAN_FUSED_ROWS": 32},
    {"VMK_SCAN_FUSED": 1, "VMK_SCAN_FUSED_ROWS": 64},
    {"VMK_SCAN_FUSED": 1, "VMK_SCAN_GROUPS": 2},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("knobs", FUSED_KNOBS, ids=lambda k: "_".join(f"{n[4:]}{v}" for n, v in k.items()))
@pytest.mark.parametrize("shape", FUSED_SHAPES, ids=_ids(FUSED_SHAPES))
def test_ss2d_scan_fused_short_sequences(shape, knobs, dtype, monkeypatch):
    if knobs.get("VMK_SCAN_GROUPS") == 2:
        if ((shape[1] + 31) // 32) % 2:
            pytest.skip("two channel groups per block need an even number of 32-channel groups")
        if dtype == torch.float32 and shape[2] * shape[3] >= 196:
            pytest.skip("two groups of float32 y tiles at L >= 196 exceed the shared memory of a block")
    check_forced_decomposition(shape, dtype, knobs, 53, monkeypatch)


# The fused path computes what the three launches with the unchunked scan (VMK_SCAN_SLOTS=1)
# compute (the same step loop, partials rounded to the same dtype, the merge's summation order), so
# the two agree far inside the reference tolerance: fp32 to float32 rounding, fp16 up to rare
# one-ulp flips of a partial or the output.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", [(3, 70, 5, 9, 16, 24), (2, 96, 14, 14, 1, 48), (4, 384, 14, 14, 1, 24)],
                         ids=lambda s: "B{}_D{}_{}x{}_N{}_R{}".format(*s))
def test_ss2d_scan_fused_equals_three_launches(shape, dtype, monkeypatch):
    B, D, H, W, N, R = shape
    x, params = make_inputs(B, D, H, W, N, R, dtype, seed=59)
    outs = {}
    monkeypatch.setenv("VMK_SCAN_SLOTS", "1")
    for fused in (1, 0):
        monkeypatch.setenv("VMK_SCAN_FUSED", str(fused))
        outs[fused] = torch.full_like(x, float("nan"))
        kernels.ss2d_scan(x, *params.values(), out=outs[fused])
    diff = rel_err(outs[1], outs[0])
    print(f"ss2d fused vs three launches {shape} {dtype}: rel diff {diff:.2e}")
    assert diff < TOL[dtype] / 10


# Two channels per lane (VMK_SCAN_LANE_CHANNELS=2; float16, d_state 1, unchunked with VMK_SCAN_SLOTS=1,
# tensor-core dt): each lane scans channels (d, d + 1), a warp 64 channels, x and the partials as
# __half2. Every rank tile (6 -> 8, 12 and the odd 13 -> 16, 24 -> 32, 40 and 48 -> 48, 64), D even but
# not a multiple of 64 (dead lanes), L < 64 and a partial last window, batch 1 and > 1, the VMamba-T
# stage 1-3 and VMamba-B stage 1-3 shapes; against the float64 reference, and reruns bitwise equal.
PAIR_SHAPES = [
    (2, 40, 23, 29, 1, 6), (1, 98, 9, 7, 1, 12), (3, 200, 14, 14, 1, 24), (1, 40, 7, 5, 1, 40),
    (2, 96, 16, 16, 1, 48), (4, 64, 13, 11, 1, 64), (1, 24, 57, 31, 1, 6), (2, 130, 5, 3, 1, 13),
    (128, 192, 28, 28, 1, 12), (128, 384, 14, 14, 1, 24), (128, 768, 7, 7, 1, 48),
    (64, 256, 28, 28, 1, 16), (64, 512, 14, 14, 1, 32), (64, 1024, 7, 7, 1, 64),
]


def run_ss2d(x, params, knobs, monkeypatch):
    for name, value in knobs.items():
        monkeypatch.setenv(name, str(value))
    out = torch.full_like(x, float("nan"))
    kernels.ss2d_scan(x, *params.values(), out=out)
    return out


@pytest.mark.parametrize("shape", PAIR_SHAPES, ids=_ids(PAIR_SHAPES))
def test_ss2d_scan_two_channel_lanes(shape, monkeypatch):
    B, D, H, W, N, R = shape
    x, params = make_inputs(B, D, H, W, N, R, torch.float16, seed=61)
    want = reference64(ref.ss2d_scan, x, params)
    knobs = {"VMK_SCAN_SLOTS": 1, "VMK_SCAN_LANE_CHANNELS": 2}
    out = run_ss2d(x, params, knobs, monkeypatch)
    err = rel_err(out, want)
    print(f"ss2d two channels per lane {shape}: rel err {err:.2e}")
    assert err < TOL[torch.float16]
    assert torch.equal(run_ss2d(x, params, knobs, monkeypatch), out)


# The pair kernel against the one-channel kernel on the same inputs: the same step arithmetic per
# channel and the same dt product per channel row, so they agree far inside the reference bound (the
# mma shape may still change rounding); at these shapes the launcher's rule takes one channel per lane
# (fewer than 8 pair warps per SM), so the unset default is VMK_SCAN_LANE_CHANNELS=1 bit for bit; an
# odd D falls back to one channel per lane (the __half2 accesses need D even), bit for bit; forced
# warps per block (VMK_SCAN_GROUPS: 2 where ceil(D / 64) = 2, and 4) with dead lanes.
@pytest.mark.parametrize("shape", [(2, 40, 9, 13, 1, 24), (3, 120, 9, 10, 1, 48), (2, 250, 7, 7, 1, 64),
                                   (2, 41, 9, 13, 1, 24), (1, 63, 7, 6, 1, 6)],
                         ids=lambda s: "B{}_D{}_{}x{}_N{}_R{}".format(*s))
@pytest.mark.parametrize("groups", ["auto", 2, 4])
def test_ss2d_scan_two_channel_lanes_against_one(shape, groups, monkeypatch):
    B, D, H, W, N, R = shape
    x, params = make_inputs(B, D, H, W, N, R, torch.float16, seed=67)
    want = reference64(ref.ss2d_scan, x, params)
    monkeypatch.setenv("VMK_SCAN_SLOTS", "1")
    if groups != "auto":
        monkeypatch.setenv("VMK_SCAN_GROUPS", str(groups))
    monkeypatch.delenv("VMK_SCAN_LANE_CHANNELS", raising=False)
    default = run_ss2d(x, params, {}, monkeypatch)
    one = run_ss2d(x, params, {"VMK_SCAN_LANE_CHANNELS": 1}, monkeypatch)
    two = run_ss2d(x, params, {"VMK_SCAN_LANE_CHANNELS": 2}, monkeypatch)
    assert torch.equal(one, default)
    err, diff = rel_err(two, want), rel_err(two, one)
    print(f"ss2d two vs one channel per lane {shape} groups {groups}: rel err {err:.2e}, rel diff {diff:.2e}")
    assert err < TOL[torch.float16]
    if D % 2:
        assert torch.equal(two, one)
    else:
        assert diff < TOL[torch.float16] / 10


VMEANBA_SHAPES = [
    (1, 8, 7, 9, 1, 3),
    (2, 16, 13, 11, 16, 6),
    (256, 4, 5, 3, 1, 6),
    (1, 24, 57, 31, 1, 6),
    (3, 6, 1, 13, 4, 2),
    (1, 3, 128, 128, 1, 4),
    (2, 20, 56, 56, 1, 6),
    # d_state 1 with 3 L floats past a block's shared memory (272 KB): the reduced scan reads its
    # coefficients from global memory, not staged (every shape above is staged)
    (1, 3, 150, 151, 1, 4),
]


@pytest.mark.parametrize("variant", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", VMEANBA_SHAPES, ids=_ids(VMEANBA_SHAPES))
def test_vmeanba_scan_matches_reference(shape, dtype, variant):
    B, D, H, W, N, R = shape
    # small Ds so the reduced scan, not the skip term, carries most of the output
    x, params = make_inputs(B, D, H, W, N, R, dtype, seed=hash(shape) % 10_000 + variant, ds_scale=0.05)
    want = reference64(ref.vmeanba_scan, x, params, variant)
    out = torch.full_like(x, float("nan"))
    kernels.vmeanba_scan(x, *params.values(), variant=variant, out=out)
    err = rel_err(out, want)
    print(f"vmeanba v{variant} {shape} {dtype}: rel err {err:.2e}")
    assert err < TOL[dtype]
    again = torch.ops.vmamba.vmeanba_scan(x, *params.values(), variant)
    assert torch.equal(again, out)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_vmeanba_reduced_scan_alone(variant):
    """Ds = 0: the output is exactly the broadcast reduced scan, merged."""
    x, params = make_inputs(2, 10, 15, 21, 1, 6, torch.float32, seed=11 + variant, ds_scale=0.0)
    want = reference64(ref.vmeanba_scan, x, params, variant)
    out = torch.full_like(x, float("nan"))
    kernels.vmeanba_scan(x, *params.values(), variant=variant, out=out)
    err = rel_err(out, want)
    print(f"vmeanba v{variant} Ds=0: rel err {err:.2e}")
    assert err < TOL[torch.float32]


# The statistics kernel's choices: channel splits per block (VMK_VMEANBA_SPLITS; the launcher takes
# more of them for few positions) and the dt source (tensor-core fragments up to rank 64: float16
# operands for float16 I/O, 3xTF32 for float32; CUDA cores with VMK_SCAN_DT=simt). Shapes: the VMamba-T stage widths and ranks, d_state
# 16 with ranks of one to four k-steps, odd ranks, channels not a multiple of 8, sequences that end
# inside a 16-position tile; every variant.
VMEANBA_FORCED_SHAPES = [
    (2, 96, 28, 28, 1, 6),
    (3, 192, 14, 14, 1, 12),
    (2, 768, 7, 7, 1, 48),
    (2, 40, 9, 11, 16, 24),
    (1, 70, 5, 13, 1, 5),
    (2, 33, 10, 10, 4, 64),
    (1, 12, 3, 3, 16, 40),
]


def check_vmeanba_variants(shape, dtype, seed, label, rerun=False):
    """VMeanbaScan, every variant, against the float64 reference (the launcher's knobs already set);
    rerun: a second call must be bitwise equal (deterministic)."""
    B, D, H, W, N, R = shape
    for variant in range(3):
        x, params = make_inputs(B, D, H, W, N, R, dtype, seed=seed + variant, ds_scale=0.05)
        want = reference64(ref.vmeanba_scan, x, params, variant)
        out = torch.full_like(x, float("nan"))
        kernels.vmeanba_scan(x, *params.values(), variant=variant, out=out)
        err = rel_err(out, want)
        print(f"vmeanba v{variant} {label} {shape} {dtype}: rel err {err:.2e}")
        assert err < TOL[dtype]
        if rerun:
            again = torch.full_like(x, float("nan"))
            kernels.vmeanba_scan(x, *params.values(), variant=variant, out=again)
            assert torch.equal(again, out)


@pytest.mark.parametrize("dt", ["auto", "simt"])
@pytest.mark.parametrize("splits", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", VMEANBA_FORCED_SHAPES, ids=_ids(VMEANBA_FORCED_SHAPES))
def test_vmeanba_scan_every_decomposition(shape, dtype, splits, dt, monkeypatch):
    monkeypatch.setenv("VMK_VMEANBA_SPLITS", str(splits))
    monkeypatch.setenv("VMK_SCAN_DT", dt)
    check_vmeanba_variants(shape, dtype, 41 + splits, f"splits={splits} dt={dt}")


VMEANBA_BLOCK_SPLIT_SHAPES = [(1, 768, 7, 7, 1, 48), (1, 70, 5, 13, 1, 5), (2, 40, 9, 11, 16, 24), (1, 12, 3, 3, 16, 40)]


# Channel splits across blocks (VMK_VMEANBA_BLOCK_SPLITS; the launcher takes them where positions are
# few, e.g. batch 1 at 7x7), each block into its own copy of the statistics, added in a fixed order:
# with and without splits per block, channel tiles that do not divide among the blocks (D 70, 40),
# channels fewer than the splits (D 12), d_state 1 and 16, every variant, both dtypes; and bitwise
# equal reruns (deterministic).
@pytest.mark.parametrize("bsplits", [1, 2, 8])
@pytest.mark.parametrize("splits", [1, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", VMEANBA_BLOCK_SPLIT_SHAPES, ids=_ids(VMEANBA_BLOCK_SPLIT_SHAPES))
def test_vmeanba_scan_channel_splits_across_blocks(shape, dtype, splits, bsplits, monkeypatch):
    monkeypatch.setenv("VMK_VMEANBA_SPLITS", str(splits))
    monkeypatch.setenv("VMK_VMEANBA_BLOCK_SPLITS", str(bsplits))
    check_vmeanba_variants(shape, dtype, 61 + bsplits, f"splits={splits} block splits={bsplits}", rerun=True)


# The statistics kernel's forms (VMK_VMEANBA_STATS): "v9" (v4-v9's kernel and A2 table launch),
# "table" (one IMAD.WIDE per access, the table launch) and "new" (as table, with each block computing
# its channels' A2 rows in shared memory, no table launch; the table where the rows would not fit),
# each with 0, 2 or 4 of 16 states' exponentials on the FMA pipe (VMK_VMEANBA_POLY_EXP; exp2_fma).
# Shapes: VMamba-T stages 0 and 3 (batch 1: channel splits across blocks), odd ranks (no whole tiles),
# D not a multiple of 8, L < 16 and not a multiple of 16, d_state 1, 4 and 16, ranks 5-64; every
# variant, both dtypes, bitwise-equal reruns.
VMEANBA_STATS_SHAPES = [
    (2, 96, 28, 28, 1, 6),
    (1, 768, 7, 7, 1, 48),
    (3, 70, 5, 13, 1, 5),
    (2, 64, 9, 7, 1, 12),
    (2, 40, 9, 11, 16, 24),
    (1, 12, 3, 3, 16, 40),
    (2, 33, 10, 10, 4, 64),
    (1, 136, 7, 7, 16, 12),
    (2, 100, 6, 5, 16, 7),
]
VMEANBA_STATS_FORMS = [("v9", 0), ("table", 0), ("table", 2), ("table", 4), ("new", 0), ("new", 2), ("new", 4)]


@pytest.mark.parametrize("form,poly", VMEANBA_STATS_FORMS, ids=[f"{f}-poly{p}" for f, p in VMEANBA_STATS_FORMS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", VMEANBA_STATS_SHAPES, ids=_ids(VMEANBA_STATS_SHAPES))
def test_vmeanba_scan_stats_forms(shape, dtype, form, poly, monkeypatch):
    monkeypatch.setenv("VMK_VMEANBA_STATS", form)
    monkeypatch.setenv("VMK_VMEANBA_POLY_EXP", str(poly))
    check_vmeanba_variants(shape, dtype, 71 + poly, f"stats={form} poly={poly}", rerun=True)


# The new form's shared A2 rows follow each block's own order of channel tiles (stats_local_tiles):
# forced splits per block and across blocks, uneven tiles (D 70, 40, 136), fewer channels than
# splits (D 12), d_state-1 rank tiles whose new-form loop takes one tile per iteration (48, 64), and
# a 16-state shape whose rows fit only when split (D 384: 24 KB unsplit, so the table there). With no exponentials on the FMA pipe the new forms do the v9 arithmetic in the v9
# order on the same A2 values (the same expf), and add the statistics' copies (channel splits across
# blocks) in the reduced scan's reads in vmeanba_sum_copies_kernel's order, so their output must
# equal v9's bitwise: a wrong row or copy anywhere shows as a difference.
VMEANBA_STATS_SPLIT_SHAPES = [
    (1, 70, 5, 13, 1, 5),
    (2, 96, 14, 14, 1, 6),
    (1, 768, 7, 7, 1, 48),  # rank tiles 48 / 64 (fp16 / fp32): the new forms' one-tile d_state-1 loop
    (1, 200, 5, 7, 1, 64),
    (2, 40, 9, 11, 16, 24),
    (1, 12, 3, 3, 16, 40),
    (1, 136, 7, 7, 16, 12),
    (2, 384, 6, 5, 16, 24),
]


@pytest.mark.parametrize("splits,bsplits", [(1, 1), (8, 1), (1, 8), (2, 4), (8, 8)], ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", VMEANBA_STATS_SPLIT_SHAPES, ids=_ids(VMEANBA_STATS_SPLIT_SHAPES))
def test_vmeanba_scan_stats_new_forms_equal_v9(shape, dtype, splits, bsplits, monkeypatch):
    B, D, H, W, N, R = shape
    monkeypatch.setenv("VMK_VMEANBA_SPLITS", str(splits))
    monkeypatch.setenv("VMK_VMEANBA_BLOCK_SPLITS", str(bsplits))
    monkeypatch.setenv("VMK_VMEANBA_POLY_EXP", "0")
    for variant in range(3):
        x, params = make_inputs(B, D, H, W, N, R, dtype, seed=81 + variant, ds_scale=0.05)
        outs = {}
        for form in ("v9", "table", "new"):
            monkeypatch.setenv("VMK_VMEANBA_STATS", form)
            outs[form] = torch.full_like(x, float("nan"))
            kernels.vmeanba_scan(x, *params.values(), variant=variant, out=outs[form])
        want = reference64(ref.vmeanba_scan, x, params, variant)
        err = rel_err(outs["new"], want)
        print(f"vmeanba v{variant} stats=new splits={splits}x{bsplits} {shape} {dtype}: rel err {err:.2e}")
        assert err < TOL[dtype]
        assert torch.equal(outs["table"], outs["v9"]), "stats=table differs from v9"
        assert torch.equal(outs["new"], outs["v9"]), "stats=new differs from v9"


QUARTERMAP_CASES = [  # (B, C, H, W, stride, keep)
    (1, 3, 7, 7, 2, 1),
    (2, 5, 8, 13, 2, 1),
    (256, 4, 9, 6, 2, 1),
    (1, 2, 128, 127, 2, 1),
    (3, 4, 10, 11, 3, 2),
    (2, 3, 5, 9, 4, 4),
    (1, 1, 1, 1, 2, 1),
    # widths whose outputs run in 16-, 8-, 4- and 2-byte stores (down / up): 28 / 56, 14 / 28,
    # 16x24 / 32x48, and 20 / 30 columns with stride 3 keep 2
    (2, 6, 56, 56, 2, 1),
    (2, 8, 28, 28, 2, 1),
    (1, 4, 32, 48, 2, 1),
    (1, 3, 16, 30, 3, 2),
    # narrow maps whose 16-byte runs cross rows and planes (output widths 7, 14, 5, 1, 3 and
    # their up widths 14, 28, 9/10, 1/2, 5/6), odd plane counts, batch 1 and 256
    (1, 7, 14, 14, 2, 1),
    (256, 3, 7, 7, 2, 1),
    (3, 5, 28, 28, 2, 1),
    (1, 9, 10, 9, 2, 1),
    (256, 1, 5, 5, 2, 1),
    (1, 3, 1, 1, 2, 1),
    (5, 3, 3, 2, 2, 1),
    (1, 11, 6, 3, 2, 1),
    (3, 3, 9, 7, 3, 1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", QUARTERMAP_CASES, ids=["B{}_C{}_{}x{}_s{}k{}".format(*c) for c in QUARTERMAP_CASES])
def test_quartermap_matches_reference(case, dtype):
    B, C, H, W, stride, keep = case
    x = torch.randn(B, C, H, W, device=DEV).to(dtype)
    # outputs that start 1, 2 or 4 elements past an aligned address take the narrower stores
    # (2-16 bytes: the widest the address allows)
    want, up_want = check_quartermap(x, stride, keep, shifts=(0, 1, 2, 4))
    assert torch.equal(torch.ops.vmamba.quartermap_down(x, stride, keep), want)
    assert torch.equal(torch.ops.vmamba.quartermap_up(want, x), up_want)


def check_quartermap(x, stride: int, keep: int, shifts=(0,)):
    """QuarterMap down, then up of its result, against the reference bit for bit (a copy: exact),
    into NaN-filled outputs starting ``shift`` elements past an aligned address (0: aligned)."""
    want = ref.quartermap_down(x, stride, keep)
    up_want = ref.quartermap_up(want, x)
    for shift in shifts:
        out = shifted_nan(want.shape, shift, x.dtype)
        kernels.quartermap_down(x, stride, keep, out=out)
        assert torch.equal(out, want), f"down {tuple(x.shape)}, output {shift} elements past alignment"
        up = shifted_nan(x.shape, shift, x.dtype)
        kernels.quartermap_up(want, x, out=up)
        assert torch.equal(up, up_want), f"up {tuple(x.shape)}, output {shift} elements past alignment"
    return want, up_want


def shifted_nan(shape, shift: int, dtype) -> torch.Tensor:
    """A NaN-filled tensor of this shape starting ``shift`` elements past a 256-byte-aligned address."""
    return torch.full((math.prod(shape) + shift,), float("nan"), device=DEV, dtype=dtype)[shift:].view(shape)


QUARTERMAP_UP_CASES = [  # (B, C, Hs, Ws, H, W): any sizes, also shrinking (several inputs per output step)
    (2, 3, 3, 5, 7, 14),
    (1, 5, 1, 1, 7, 7),
    (3, 3, 9, 8, 4, 3),
    (1, 7, 3, 3, 1, 5),
    (256, 1, 2, 3, 5, 7),
    (1, 4, 20, 30, 7, 11),
    # output planes on either side of the kernel's table limit (255 and 272 positions)
    (2, 3, 8, 9, 15, 17),
    (2, 3, 8, 9, 16, 17),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", QUARTERMAP_UP_CASES,
                         ids=["B{}_C{}_{}x{}_to_{}x{}".format(*c) for c in QUARTERMAP_UP_CASES])
def test_quartermap_up_any_sizes(case, dtype):
    B, C, Hs, Ws, H, W = case
    y = torch.randn(B, C, Hs, Ws, device=DEV).to(dtype)
    like = torch.empty(B, 1, H, W, device=DEV, dtype=dtype)
    want = ref.quartermap_up(y, like)
    for shift in (0, 1, 2):
        out = shifted_nan(want.shape, shift, dtype)
        kernels.quartermap_up(y, like, out=out)
        assert torch.equal(out, want), f"output {shift} elements past alignment"


@pytest.mark.parametrize("runs", [1, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_quartermap_vmamba_t_stages(stage, dtype, runs, monkeypatch):
    """VMamba-T stage shapes at batch 128 (the benchmarked ones), with one and with four runs per
    thread (VMK_QM_RUNS; the launcher picks four where the output fills the device)."""
    monkeypatch.setenv("VMK_QM_RUNS", str(runs))
    side = (56, 28, 14, 7)[stage]
    check_quartermap(torch.randn(128, 96 << stage, side, side, device=DEV).to(dtype), 2, 1)


@pytest.mark.parametrize("group_planes", [1, 3, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_quartermap_plane_groups(group_planes, dtype, monkeypatch):
    """The planes split into groups (one per blockIdx.y), as for outputs beyond 32-bit indices;
    VMK_QM_GROUP_PLANES forces the split on small tensors."""
    monkeypatch.setenv("VMK_QM_GROUP_PLANES", str(group_planes))
    for B, C, H, W, stride, keep in ((3, 7, 7, 7, 2, 1), (2, 5, 14, 13, 2, 1), (1, 9, 8, 8, 2, 1)):
        check_quartermap(torch.randn(B, C, H, W, device=DEV).to(dtype), stride, keep, shifts=(0, 1))


# QuarterMap's kernels forced (VMK_QM_IMPL; unset, the launcher picks): v3, flat over the output
# with per-element walks or a table; the staged kernel (a block's planes copied into shared memory
# with 16-byte loads, its output written with 16-byte stores through a one-period source table);
# down2 (down by two: 16-byte loads of kept rows, even inputs packed into 8- or 16-byte stores).
# Shapes a forced kernel does not take (staged: an input plane over 24 KB, a table period over 4096
# positions; down2: other sizes, up, misaligned pointers) run v3; the tests include such shapes.
QM_IMPLS = ["v3", "stage", "down2"]


@pytest.mark.parametrize("impl", QM_IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", QUARTERMAP_CASES, ids=["B{}_C{}_{}x{}_s{}k{}".format(*c) for c in QUARTERMAP_CASES])
def test_quartermap_forced_impl_matches_reference(case, dtype, impl, monkeypatch):
    monkeypatch.setenv("VMK_QM_IMPL", impl)
    B, C, H, W, stride, keep = case
    check_quartermap(torch.randn(B, C, H, W, device=DEV).to(dtype), stride, keep, shifts=(0, 1, 2, 4))


@pytest.mark.parametrize("impl", QM_IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", QUARTERMAP_UP_CASES,
                         ids=["B{}_C{}_{}x{}_to_{}x{}".format(*c) for c in QUARTERMAP_UP_CASES])
def test_quartermap_up_any_sizes_forced_impl(case, dtype, impl, monkeypatch):
    monkeypatch.setenv("VMK_QM_IMPL", impl)
    test_quartermap_up_any_sizes(case, dtype)


@pytest.mark.parametrize("impl_runs", [("v3", 1), ("v3", 4), ("stage", 0), ("down2", 0)],
                         ids=["v3_runs1", "v3_runs4", "stage", "down2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_quartermap_vmamba_t_stages_forced_impl(stage, dtype, impl_runs, monkeypatch):
    """The benchmarked VMamba-T stage shapes (batch 128) on each kernel; v3 with one and four runs
    per thread."""
    impl, runs = impl_runs
    monkeypatch.setenv("VMK_QM_IMPL", impl)
    if runs:
        monkeypatch.setenv("VMK_QM_RUNS", str(runs))
    side = (56, 28, 14, 7)[stage]
    check_quartermap(torch.randn(128, 96 << stage, side, side, device=DEV).to(dtype), 2, 1, shifts=(0, 1))


@pytest.mark.parametrize("group_planes", [1, 3, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_quartermap_plane_groups_v3(group_planes, dtype, monkeypatch):
    """v3's plane groups (VMK_QM_GROUP_PLANES) with v3 forced: the launcher's rule would take the
    staged kernel, which has no groups, at most of these shapes."""
    monkeypatch.setenv("VMK_QM_IMPL", "v3")
    test_quartermap_plane_groups(group_planes, dtype, monkeypatch)


# The staged kernel's edges: every width 1..14 (down and its up, strides 2 and 3); more planes
# than 8 blocks per SM hold one each, so that blocks take several planes whose input and output
# chunks start off 16-byte boundaries (7x7: 49-element planes); stages over 16 KB (a thread's
# words beyond the four it holds: 1600 channels of 7x7 at batch 128, about 194 planes per block);
# input planes at and just over the 24 KB stage (float16 96x128 / 97x128, float32 64x96 / 64x97);
# table periods at and over 4096
# positions (up to 64x64, to 63x65 = 4095: odd, so a period of 4095 x 8 or x 4); 1x1 outputs
# (the period spans 8 or 4 planes); and inputs that start off a 16-byte boundary (up of a shifted
# down output, in check_quartermap).
QM_STAGE_WIDTH_CASES = [(3, 5, h, w, s, k) for w in range(1, 15) for h, s, k in ((w + 3, 2, 1), (9, 3, 2))]
QM_STAGE_EDGE_CASES = [  # (B, C, H, W, stride, keep)
    (9, 130, 7, 7, 2, 1),
    (64, 40, 14, 13, 2, 1),
    (128, 1600, 7, 7, 2, 1),
    (1, 3, 96, 128, 2, 1),
    (1, 3, 97, 128, 2, 1),
    (2, 2, 64, 96, 2, 1),
    (2, 2, 64, 97, 2, 1),
    (700, 3, 2, 2, 2, 1),
    (1, 2000, 1, 1, 2, 1),
]
QM_STAGE_UP_EDGE_CASES = [  # (B, C, Hs, Ws, H, W)
    (2, 3, 32, 32, 64, 64),
    (2, 3, 32, 33, 63, 65),
    (3, 700, 2, 3, 1, 1),
    (2, 5, 4, 4, 7, 7),
    (1, 3, 45, 45, 90, 90),
    (128, 1600, 4, 4, 7, 7),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", QM_STAGE_WIDTH_CASES + QM_STAGE_EDGE_CASES,
                         ids=["B{}_C{}_{}x{}_s{}k{}".format(*c) for c in QM_STAGE_WIDTH_CASES + QM_STAGE_EDGE_CASES])
def test_quartermap_staged_edges(case, dtype, monkeypatch):
    monkeypatch.setenv("VMK_QM_IMPL", "stage")
    B, C, H, W, stride, keep = case
    check_quartermap(torch.randn(B, C, H, W, device=DEV).to(dtype), stride, keep, shifts=(0, 1, 2, 4))


# down2's edges: odd heights (the last kept row), one input row, output widths a multiple of 4
# and ones that are not (6, 5: then v3), odd input widths (then v3); outputs off their 8- / 16-byte
# boundary (shifts 1, 2; v3) and on it (shift 4).
QM_DOWN2_CASES = [  # (B, C, H, W, stride, keep)
    (2, 3, 8, 8, 2, 1),
    (2, 3, 7, 8, 2, 1),
    (1, 1, 1, 8, 2, 1),
    (3, 2, 5, 16, 2, 1),
    (2, 3, 9, 24, 2, 1),
    (2, 3, 6, 12, 2, 1),
    (2, 3, 8, 10, 2, 1),
    (1, 2, 3, 15, 2, 1),
    (4, 96, 56, 56, 2, 1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", QM_DOWN2_CASES, ids=["B{}_C{}_{}x{}_s{}k{}".format(*c) for c in QM_DOWN2_CASES])
def test_quartermap_down2_edges(case, dtype, monkeypatch):
    monkeypatch.setenv("VMK_QM_IMPL", "down2")
    B, C, H, W, stride, keep = case
    check_quartermap(torch.randn(B, C, H, W, device=DEV).to(dtype), stride, keep, shifts=(0, 1, 2, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", QM_STAGE_UP_EDGE_CASES,
                         ids=["B{}_C{}_{}x{}_to_{}x{}".format(*c) for c in QM_STAGE_UP_EDGE_CASES])
def test_quartermap_staged_up_edges(case, dtype, monkeypatch):
    monkeypatch.setenv("VMK_QM_IMPL", "stage")
    test_quartermap_up_any_sizes(case, dtype)


def test_bad_arguments_are_refused():
    x, params = make_inputs(1, 4, 5, 5, 1, 2, torch.float32, seed=3)
    with pytest.raises(RuntimeError, match="unsupported"):
        p = dict(params)
        p["A_logs"] = torch.zeros(16, 17, device=DEV)  # d_state 17 > 16
        p["x_proj_weight"] = torch.zeros(4, 2 + 34, 4, device=DEV)
        kernels.ss2d_scan(x, *p.values())
    with pytest.raises(RuntimeError, match="invalid"):
        kernels.vmeanba_scan(x, *params.values(), variant=3)
    with pytest.raises(RuntimeError, match="invalid"):
        kernels.quartermap_down(x, stride=2, keep=3)


def test_cuda_graph_capture_and_replay():
    """All four ops captured in one graph, replayed on new inputs, equal eager results bit for bit."""
    x, params = make_inputs(3, 12, 14, 9, 1, 6, torch.float32, seed=5)
    static_x = x.clone()

    def body():
        a = torch.ops.vmamba.ss2d_scan(static_x, *params.values())
        b = torch.ops.vmamba.vmeanba_scan(static_x, *params.values(), 0)
        small = torch.ops.vmamba.quartermap_down(static_x, 2, 1)
        c = torch.ops.vmamba.quartermap_up(torch.ops.vmamba.ss2d_scan(small, *params.values()), static_x)
        return a, b, c

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        body()  # warm-up outside capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = body()
    for seed in (21, 22):
        fresh, _ = make_inputs(3, 12, 14, 9, 1, 6, torch.float32, seed=seed)
        static_x.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        static_copy = static_x.clone()
        eager = body()
        assert torch.equal(static_x, static_copy)
        for got, want in zip(outs, eager):
            assert torch.equal(got, want)
        want_ss2d = reference64(ref.ss2d_scan, fresh, params)
        assert rel_err(outs[0], want_ss2d) < TOL[torch.float32]


def test_runs_on_the_current_stream():
    """Work is ordered on torch's current stream: a producer on a side stream, then the op there."""
    x, params = make_inputs(2, 8, 16, 16, 1, 6, torch.float32, seed=9)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        xs = x * 1.0  # produced on the side stream
        y = torch.ops.vmamba.ss2d_scan(xs, *params.values())
    side.synchronize()
    want = reference64(ref.ss2d_scan, x, params)
    assert rel_err(y, want) < TOL[torch.float32]
