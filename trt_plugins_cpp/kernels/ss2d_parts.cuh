// Pieces shared by the SS2D prep and scan (ss2d_prep.cu, ss2d_scan.cu) and VMeanbaScan's statistics
// (vmeanba_scan.cu): the staged x_dbl row layout, the tensor-core helper, the direction walks over a
// channels-last plane, and the two dt sources (W_dt . dt_low on CUDA cores or tensor cores).
#ifndef VMAMBA_KERNELS_SS2D_PARTS_CUH
#define VMAMBA_KERNELS_SS2D_PARTS_CUH

#include "common.cuh"

#include <type_traits>

namespace vmk {

constexpr int kSteps = 16;  // T: steps per thread per (super-)chunk, and the dt tile's columns

// W_dt rows up to 64 live in registers (dt_rank of every released model is ceil(D / 16) <= 64:
// 6/12/24/48 for VMamba-T/S, 8/16/32/64 for VMamba-B).
inline int rank_regs(int R) { return R <= 8 ? 8 : R <= 16 ? 16 : R <= 32 ? 32 : R <= 48 ? 48 : R <= 64 ? 64 : 0; }

// Columns of a staged x_dbl row (one per pixel and direction): dt_low in [0, R), B at bo, C at co.
// d_state 1: B and C follow dt_low as one 8-byte aligned pair (bo = R rounded up to even, co = bo + 1),
// which a step reads with one 8-byte load. d_state > 1: B and C each start on a
// float4 and take 16 columns (kMaxDState; the ones past N are zero), so a step reads them as four
// 16-byte loads each and needs no guard on N. The stride Cp is a float4 multiple and at least the
// register tile, whose dot product reads whole tiles (the extra columns meet zero weights).
struct XdblCols {
    int R, N, bo, co, Cp;
    // row of x_proj_weight that column col holds, or -1 for a zero padding column
    __host__ __device__ __forceinline__ int source(int col) const
    {
        if (col < R) return col;
        if (col >= bo && col < bo + N) return R + col - bo;
        if (col >= co && col < co + N) return R + N + col - co;
        return -1;
    }
};

inline XdblCols xdbl_cols(int R, int N)
{
    XdblCols c{R, N, (R + 1) / 2 * 2, (R + 1) / 2 * 2 + 1, 0};
    if (N > 1) {
        c.bo = (R + 3) / 4 * 4;
        c.co = c.bo + kMaxDState;
    }
    const int used = (N > 1 ? c.co + kMaxDState : c.co + 1 + 3) / 4 * 4, rr = rank_regs(R);
    c.Cp = rr > used ? rr : used;
    return c;
}

// D += A B on tensor cores: m16n8k16, float16 operands, float32 accumulation (A row-major, B column-major).
__device__ __forceinline__ void mma_16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t lds32(const __half* p) { return *reinterpret_cast<const uint32_t*>(p); }

// float32 on tensor cores, 3xTF32: v = hi + lo with hi = tf32(v) and lo = tf32(v - hi) (both rounded to
// nearest; v - hi is exact in float32), so v - hi - lo is within 2^-22 |v| (11 + 11 significant
// bits). A product is Ah Bh + Ah Bl + Al Bh (Al Bl, ~2^-22 of it, dropped), accumulated in float32:
// about float32 accuracy at 3 tensor-core products instead of one.
// (volatile: the compiler must not hoist the split of loop-invariant values, such as DtTf32's W_dt,
// out of the loop, which would hold both halves in registers.)
__device__ __forceinline__ uint32_t tf32_rna(float v)
{
    uint32_t r;
    asm volatile("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

__device__ __forceinline__ void split_tf32(float v, uint32_t& hi, uint32_t& lo)
{
    hi = tf32_rna(v);
    lo = tf32_rna(v - __uint_as_float(hi));
}

// D += A B: m16n8k8, TF32 operands, float32 accumulation (A row-major, B column-major).
__device__ __forceinline__ void mma_1688_tf32(float* c, const uint32_t* a, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D += A B in 3xTF32 from split fragments (small products first).
__device__ __forceinline__ void mma_1688_3xtf32(float* c, const uint32_t* ah, const uint32_t* al, const uint32_t* bh,
                                                const uint32_t* bl)
{
    mma_1688_tf32(c, al, bh[0], bh[1]);
    mma_1688_tf32(c, ah, bl[0], bl[1]);
    mma_1688_tf32(c, ah, bh[0], bh[1]);
}

// Direction k's sequence as element offsets into a channels-last [L][D] plane, branch-free: runs of
// `run` steps of `step`, then one jump of `wrap` (rows: one run of L; columns: runs of H).
struct Walk {
    int off, left;          // offset of the current pixel, steps left in the current run
    int step, wrap, run;
    __device__ __forceinline__ void init(int k, int H, int W, int D)
    {
        const bool col = k & 1, rev = k >= 2;
        run = col ? H : H * W;
        step = (col ? W * D : D) * (rev ? -1 : 1);
        wrap = col ? (rev ? ((H - 1) * W - 1) * D : (1 - (H - 1) * W) * D) : 0;
    }
    __device__ __forceinline__ void start(int k, int t, int H, int W, int D)
    {
        const int L = H * W;
        const int l = k < 2 ? t : L - 1 - t;  // index in the row-major (k even) / column-major order
        int p, pos;
        if (k & 1) {
            const int j = l / H, i = l - j * H;
            p = i * W + j;
            pos = k < 2 ? i : H - 1 - i;  // steps already taken in this run
        } else {
            p = l;
            pos = t;
        }
        off = p * D;
        left = run - pos;
    }
    __device__ __forceinline__ void next()
    {
        const bool jump = --left == 0;
        off += jump ? wrap : step;
        left = jump ? run : left;
    }
};

// dt = bias + W_dt[r] . dt_low for one staged x_dbl row (register tile: no guards; see XdblCols).
template <typename T, int RREG>
__device__ __forceinline__ float dt_of(const float* row, const float* wdt, const T* wdt_g, float bias, int R)
{
    float v = bias;
    if (RREG > 0) {
#pragma unroll
        for (int r4 = 0; r4 < RREG; r4 += 4) {
            const float4 q = *reinterpret_cast<const float4*>(row + r4);
            v = fmaf(wdt[r4 + 0], q.x, v);
            v = fmaf(wdt[r4 + 1], q.y, v);
            v = fmaf(wdt[r4 + 2], q.z, v);
            v = fmaf(wdt[r4 + 3], q.w, v);
        }
    } else {
        for (int r = 0; r < R; ++r) v = fmaf(to_f32(wdt_g[r]), row[r], v);
    }
    return v;
}

// Per-warp dt tile: [step][36] floats (the tensor-core fragment stores hit 32 distinct banks).
constexpr int kDtTileStride = 36;
constexpr int kDtScratch = kSteps * kDtTileStride;  // floats per warp

// The dt of a lane's channel for T consecutive staged steps: dt[q] = bias + W_dt[r] . dt_low(step q),
// either into registers (window) or, without the bias, into the warp's dt tile at
// [q][lane] (store: the unchunked scan then holds no dt registers).
// Three implementations with one interface, chosen per launch (scan kernel template DT_MMA, and
// the I/O dtype):
//   DtSimt: the W_dt row in registers, 2 FMAs per rank and step (CUDA cores).
//   DtTf32 (float32 I/O, tiles of 8..64): the product below in 3xTF32, mma.sync m16n8k8 (after DtMma).
//   DtMma (float16 I/O, tiles of 8..64): the warp's 32 channels x T steps as one tensor-core
//     product, (32 x R) W_dt @ (R x 16) dt_low, mma.sync m16n8k16. W_dt is float16 (exact); dt_low is
//     float32 and is fed as hi + lo float16 halves (two products), so dt keeps float32 accuracy. The
//     accumulator fragments (channel = row, step = column) are transposed to lane = channel through a
//     per-warp shared-memory tile. This replaces 2R instructions per element by about 8 / (R / 16).
template <typename T, int RREG>
struct DtSimt {
    static constexpr int RP = RREG > 0 ? RREG : 1;
    static constexpr int kSharedFloats = 0;  // shared memory after the warp's dt tile (DtMma<., true>)
    float w[RP];
    const T* wg;
    float bias;
    int R;
    __device__ __forceinline__ void init(const T* wdt, int k, int dc, int /*dwarp*/, int D, int R_, float bias_,
                                         float* /*scratch*/)
    {
        R = R_;
        bias = bias_;
        wg = wdt + ((size_t)k * D + dc) * R;
#pragma unroll
        for (int q = 0; q < RP; ++q) w[q] = (RREG > 0 && q < R) ? to_f32(wg[q]) : 0.f;
    }
    __device__ __forceinline__ void window(const float* rows, int Cp, float* scratch, float* dt) const
    {
#pragma unroll
        for (int q = 0; q < kSteps; ++q) dt[q] = dt_of<T, RREG>(rows + q * Cp, w, wg, bias, R);
    }
    __device__ __forceinline__ void store(const float* rows, int Cp, float* scratch) const
    {
        const int lane = threadIdx.x & 31;  // each lane writes and later reads only its own column
#pragma unroll
        for (int q = 0; q < kSteps; ++q) scratch[q * kDtTileStride + lane] = dt_of<T, RREG>(rows + q * Cp, w, wg, 0.f, R);
    }
};

__device__ __forceinline__ uint32_t half2_bits(__half2 v) { return *reinterpret_cast<uint32_t*>(&v); }

// The tensor-core dt sources' accumulators, c[i][j] = the m16n8 fragment of channels 16 i.. x steps
// 8 j.. (m16n8k16 and m16n8k8 share the layout: rows g and g + 8, columns 2 (lane % 4) and + 1), into
// the warp's dt tile at [step][channel]. MT m16 tiles: 2 (32 channels, stride 36) or 4 (64 channels
// for the two-channel lanes, stride 68). Both strides are 4 mod 32, so the 32 lanes of a store hit
// 32 distinct banks; 68 is even, so a lane's channel pair (2 lane, 2 lane + 1) is one aligned float2.
constexpr int kDtPairStride = 68;
template <int MT> __host__ __device__ constexpr int dt_tile_stride() { return MT == 2 ? kDtTileStride : kDtPairStride; }
constexpr int kDtPairScratch = kSteps * kDtPairStride;  // floats per warp (64-channel tile)

template <int MT>
__device__ __forceinline__ void store_dt_tile(const float (&c)[MT][2][4], float* scratch)
{
    constexpr int stride = dt_tile_stride<MT>();
    const int lane = threadIdx.x & 31, g = lane >> 2, t2 = (lane & 3) * 2;
    __syncwarp();  // the previous window's readers are done with the tile
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int ch = i * 16 + g, st = j * 8 + t2;
            scratch[st * stride + ch] = c[i][j][0];
            scratch[(st + 1) * stride + ch] = c[i][j][1];
            scratch[st * stride + ch + 8] = c[i][j][2];
            scratch[(st + 1) * stride + ch + 8] = c[i][j][3];
        }
    __syncwarp();
}

// The lane's channel's T dt values (plus the bias) from the warp's dt tile.
__device__ __forceinline__ void read_dt_tile(const float* scratch, float bias, float* dt)
{
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int q = 0; q < kSteps; ++q) dt[q] = scratch[q * kDtTileStride + lane] + bias;
}

// SHARED_A: the A fragments are kept in shared memory after the warp's dt tile instead of registers
// (MT KT 16 bytes per lane; a lane reads back only what it wrote, so no barrier) and read per window
// with one 16-byte load per fragment. For the register-capped unchunked d_state-1 scans with tiles
// 48-64 (ScanDt in ss2d_scan.cu), where their 24-32 registers would spill.
// MT: m16 tiles of channels per warp, 2 (32 channels, one per lane) or 4 (64 channels: the
// two-channel lanes of ss2d_pair_scan_kernel; dt tile [step][kDtPairStride], store only).
template <int RREG, bool SHARED_A = false, int MT = 2>
struct DtMma {
    // A tile of 8 ranks is one k16 step whose upper 8 columns are zero (not loaded: the staged rows
    // are only 8 floats wide there).
    static constexpr int KT = (RREG + 15) / 16;
    static_assert(RREG == 8 || (RREG % 16 == 0 && KT >= 1), "tensor-core dt needs a tile of 8 or 16..64 ranks");
    static_assert(MT == 2 || MT == 4, "a warp's dt covers 32 or 64 channels");
    static constexpr int kSharedFloats = SHARED_A ? MT * KT * 32 * 4 : 0;
    uint32_t a[MT][KT][4];  // A fragments: W_dt rows of the warp's channels 16 i.. 16 i + 15 (SHARED_A: init only)
    const uint4* a_s;       // SHARED_A: the lane's fragments in shared memory, [MT][KT][32 lanes]
    float bias;
    __device__ __forceinline__ void init(const __half* wdt, int k, int /*dc*/, int dwarp, int D, int R, float bias_,
                                         float* scratch)
    {
        bias = bias_;
        const int lane = threadIdx.x & 31, g = lane >> 2, t2 = (lane & 3) * 2;
        const __half* wk = wdt + (size_t)k * D * R;  // direction k's [D][R]
        const __half zero = __float2half_rn(0.f);
#pragma unroll
        for (int i = 0; i < MT; ++i) {
            const int c0 = min(dwarp + i * 16 + g, D - 1), c1 = min(c0 + 8, D - 1);
#pragma unroll
            for (int kt = 0; kt < KT; ++kt) {
                const int col = kt * 16 + t2;
                auto pair = [&](int ch, int cc) {
                    const __half lo = cc < R ? wk[(size_t)ch * R + cc] : zero;
                    const __half hi = cc + 1 < R ? wk[(size_t)ch * R + cc + 1] : zero;
                    return half2_bits(__halves2half2(lo, hi));
                };
                a[i][kt][0] = pair(c0, col);
                a[i][kt][1] = pair(c1, col);
                a[i][kt][2] = pair(c0, col + 8);
                a[i][kt][3] = pair(c1, col + 8);
            }
        }
        if constexpr (SHARED_A) {
            uint4* dst = reinterpret_cast<uint4*>(scratch + kSteps * dt_tile_stride<MT>());  // after the dt tile
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int kt = 0; kt < KT; ++kt)
                    dst[(i * KT + kt) * 32 + lane] = make_uint4(a[i][kt][0], a[i][kt][1], a[i][kt][2], a[i][kt][3]);
            a_s = dst + lane;
        }
    }
    __device__ __forceinline__ void window(const float* rows, int Cp, float* scratch, float* dt) const
    {
        store(rows, Cp, scratch);
        read_dt_tile(scratch, bias, dt);
    }
    __device__ __forceinline__ void store(const float* rows, int Cp, float* scratch) const
    {
        const int lane = threadIdx.x & 31, g = lane >> 2, t2 = (lane & 3) * 2;
        float c[MT][2][4];
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int q = 0; q < 4; ++q) c[i][j][q] = 0.f;
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
            uint32_t af[MT][4];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                if constexpr (SHARED_A) {
                    const uint4 v = a_s[(i * KT + kt) * 32];
                    af[i][0] = v.x;
                    af[i][1] = v.y;
                    af[i][2] = v.z;
                    af[i][3] = v.w;
                } else {
#pragma unroll
                    for (int q = 0; q < 4; ++q) af[i][q] = a[i][kt][q];
                }
            }
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const float* row = rows + (j * 8 + g) * Cp + kt * 16 + t2;
                const float2 v0 = *reinterpret_cast<const float2*>(row);
                const float2 v1 = RREG == 8 ? make_float2(0.f, 0.f) : *reinterpret_cast<const float2*>(row + 8);
                const __half2 h0 = __floats2half2_rn(v0.x, v0.y), h1 = __floats2half2_rn(v1.x, v1.y);
                const float2 f0 = __half22float2(h0), f1 = __half22float2(h1);
                const __half2 l0 = __floats2half2_rn(v0.x - f0.x, v0.y - f0.y);
                const __half2 l1 = __floats2half2_rn(v1.x - f1.x, v1.y - f1.y);
#pragma unroll
                for (int i = 0; i < MT; ++i) {
                    mma_16816(c[i][j], af[i], half2_bits(h0), half2_bits(h1));
                    mma_16816(c[i][j], af[i], half2_bits(l0), half2_bits(l1));
                }
            }
        }
        store_dt_tile(c, scratch);
    }
};

// float32 I/O: the same (32 x R) @ (R x 16) product in 3xTF32 (split_tf32), mma.sync m16n8k8, so dt
// keeps float32 accuracy (relative error ~1e-6, about that of the float32 FMA chain it replaces).
// W_dt is not held in registers: each window reads the warp's rows again in the A-fragment layout
// (read-only cache; 32 x R floats per warp, L1-resident across the windows) and splits them. Per
// 8 ranks and window a lane issues 8 global and 4 shared loads, 12 splits (36 instructions) and 12
// mma: about R / 2 instructions per element against the 2 R FMAs of DtSimt. Holding the float32
// fragments instead took more registers than DtSimt (ptxas hoisted their split out of the window
// loop and held both halves: 178 against 139 at dt_rank 48, d_state 1; this form takes 127).
template <int RREG>
struct DtTf32 {
    static_assert(RREG % 8 == 0 && RREG > 0, "TF32 dt needs a register tile of whole 8-rank steps");
    static constexpr int KT = RREG / 8;
    static constexpr int kSharedFloats = 0;
    const float* w;  // direction k's W_dt [D][R] at rank t of this lane
    int row[2][2];   // element offsets of this lane's fragment rows: channels 16 i + g and 16 i + g + 8
    int R;
    float bias;
    __device__ __forceinline__ void init(const float* wdt, int k, int /*dc*/, int dwarp, int D, int R_, float bias_,
                                         float* /*scratch*/)
    {
        bias = bias_;
        R = R_;
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        w = wdt + (size_t)k * D * R + t;
#pragma unroll
        for (int i = 0; i < 2; ++i) {  // dead channels (past D) read channel D - 1 and are never stored
            const int c0 = min(dwarp + i * 16 + g, D - 1), c1 = min(c0 + 8, D - 1);
            row[i][0] = c0 * R;
            row[i][1] = c1 * R;
        }
    }
    __device__ __forceinline__ void window(const float* rows, int Cp, float* scratch, float* dt) const
    {
        store(rows, Cp, scratch);
        read_dt_tile(scratch, bias, dt);
    }
    __device__ __forceinline__ void store(const float* rows, int Cp, float* scratch) const
    {
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        float c[2][2][4];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int q = 0; q < 4; ++q) c[i][j][q] = 0.f;
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
            // A (channel x rank): (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4); zero past R
            const int col = kt * 8, lo_in = col + t < R, hi_in = col + 4 + t < R;
            uint32_t ah[2][4], al[2][4];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                split_tf32(lo_in ? __ldg(w + row[i][0] + col) : 0.f, ah[i][0], al[i][0]);
                split_tf32(lo_in ? __ldg(w + row[i][1] + col) : 0.f, ah[i][1], al[i][1]);
                split_tf32(hi_in ? __ldg(w + row[i][0] + col + 4) : 0.f, ah[i][2], al[i][2]);
                split_tf32(hi_in ? __ldg(w + row[i][1] + col + 4) : 0.f, ah[i][3], al[i][3]);
            }
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                // B (rank x step): (t, g), (t + 4, g)
                const float* r = rows + (j * 8 + g) * Cp + kt * 8 + t;
                uint32_t bh[2], bl[2];
                split_tf32(r[0], bh[0], bl[0]);
                split_tf32(r[4], bh[1], bl[1]);
#pragma unroll
                for (int i = 0; i < 2; ++i) mma_1688_3xtf32(c[i][j], ah[i], al[i], bh, bl);
            }
        }
        store_dt_tile(c, scratch);
    }
};

template <typename T, int RREG, bool DT_MMA> struct DtSource { using type = DtSimt<T, RREG>; };
template <int RREG> struct DtSource<__half, RREG, true> { using type = DtMma<RREG>; };
template <int RREG> struct DtSource<float, RREG, true> { using type = DtTf32<RREG>; };

// Whether the tensor-core dt applies to a register tile: float16 I/O (DtMma) with a tile of 8 or
// whole 16-rank steps, float32 I/O (DtTf32) with any tile (whole 8-rank steps). The staged rows then
// hold at least the tile's columns (see XdblCols); dt_rank past 64 (no tile) stays on CUDA cores.
__host__ __device__ constexpr bool dt_mma_fits(bool half_io, int rreg)
{
    return half_io ? (rreg == 8 || (rreg >= 16 && rreg % 16 == 0)) : (rreg > 0 && rreg % 8 == 0);
}

// x_dbl = W_x[k] @ x for all four directions at each direction's own sequence index,
// [b][k][t][Cp] float32, and x channels-last [b][p][d] in the I/O dtype (ss2d_prep.cu).
vmk_status_t ss2d_prep(const float* x, const float* wx, int B, int D, int H, int W, XdblCols cols, float* xt,
                       float* xdbl, cudaStream_t stream, const DeviceInfo& dev);
vmk_status_t ss2d_prep(const __half* x, const __half* wx, int B, int D, int H, int W, XdblCols cols, __half* xt,
                       float* xdbl, cudaStream_t stream, const DeviceInfo& dev);

}  // namespace vmk

#endif  // VMAMBA_KERNELS_SS2D_PARTS_CUH
