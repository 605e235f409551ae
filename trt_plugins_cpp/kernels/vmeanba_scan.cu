// VMeanbaScan (the literal reduced scan, METHODS.md), v4: five launches.
//   1. prep (ss2d_prep.cu, shared with SS2DScan): x_dbl = W_x[k] @ x for all four directions at each
//      direction's own sequence index, [b][k][t][Cp], and x channels-last;
//   2. tables: A * log2(e) per row (variants 0/1) or the mean of A over all rows (variant 2);
//   3. statistics: per (image, direction, sequence position) the sums over the D channels that the
//      reduced sequence needs (exp(delta A) per state and delta * u; variant 2: delta and u). No
//      loop-carried dependency: a pure map-reduce over channels. A warp owns 16 positions; dt for
//      (16 positions x 8 channels) is one tensor-core fragment (float16 I/O; CUDA cores for float32),
//      and each thread keeps the running sums of its fragment's two positions over all the warp's
//      channels, so the sum over channels costs two shuffles per value at the end, not a reduction
//      per channel;
//   4. reduced scan: one block per (image, group), a chunked two-pass block scan;
//   5. merge: y = sum over directions of the reduced output + (sum_k Ds) * x, flat over the output.
// d_state 1 (StatsForm kStatsFolded; VMK_VMEANBA_STATS forces a form): step 2 folded into step 3
// (each block computes its channels' A rows), and where channels are split across blocks step 4 adds
// the statistics' copies on read instead of vmeanba_sum_copies_kernel; so four launches (variant 2:
// five, its mean of A stays).
#include "ss2d_parts.cuh"

#include <algorithm>
#include <stdlib.h>
#include <string.h>

namespace vmk {
namespace {

// Reduced-scan block: each thread walks one chunk of one state twice, so more threads mean shorter
// dependent chains (VMamba-T stage 0: 4 steps per thread; 16 states: 49).
constexpr int kReducedThreads = 1024;
constexpr int kStatsWarps = 8;       // a block: (position tiles) x (channel splits) = 8 warps
constexpr int kStatsTile = 16;       // positions per warp: the fragment's 16 rows
constexpr int kMergeThreads = 256;
constexpr int kMergeChannels = 8;    // channels per merge thread (the reduced output is read once)
// Channel splits across blocks (few positions, e.g. batch 1 at 7x7: 16 blocks of statistics): each
// block sums its share of the channel tiles into its own copy of Q, and vmeanba_sum_copies_kernel adds
// the copies into the first in a fixed order. Up to kMaxBlockSplits copies; the workspace holds them
// only where kBlockSplitTiles position tiles or fewer could ask for them (a bound that does not
// depend on the device).
constexpr int kMaxBlockSplits = 8;
constexpr long long kBlockSplitTiles = 4096;

// Statistics Q[b][k][t][slot] at each direction's own sequence position t, N + 1 slots (slot fastest,
// so the reduced scan's lanes over states read one contiguous run per position):
// variants 0/1: sum_d exp(delta A)[n] in slots 0..N-1, sum_d delta * u in slot N;
// variant 2: sum_d delta in slot 0, sum_d u in slot N. B and C are read from x_dbl itself.
__host__ __device__ inline int vmeanba_slots(int N) { return N + 1; }

// A * log2(e) per row (direction, channel), padded to 16 states for d_state > 1 (zero past N).
__host__ __device__ inline int a2_stride(int N) { return N == 1 ? 1 : kMaxDState; }

// Variants 0/1: A * log2(e) per row (direction, channel) for the statistics' exponentials; rows of
// a2_stride(N) values, zero past N (d_state > 1: 16, so a channel's exps need no guard).
__global__ void vmeanba_a2_kernel(const float* __restrict__ A_logs, int rows, int N, float* __restrict__ A2)
{
    const int AS = a2_stride(N);
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < rows * AS; e += gridDim.x * blockDim.x) {
        const int r = e / AS, n = e % AS;
        A2[e] = n < N ? -expf(A_logs[(size_t)r * N + n]) * kLog2e : 0.f;
    }
}

// Variant 2: the mean of A over all rows, one warp per state: lanes over rows, then a fixed xor tree,
// so the order is fixed and the result deterministic. (v4 computed both tables on every call, the
// mean in one block, state after state, with a barrier tree each: 14-30 us in the v7 profiles.)
__global__ void vmeanba_a_mean_kernel(const float* __restrict__ A_logs, int rows, int N, float* __restrict__ A_mean)
{
    const int n = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (n >= N) return;
    float s = 0.f;
    for (int r = lane; r < rows; r += 32) s += -expf(A_logs[(size_t)r * N + n]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) A_mean[n] = s / rows;
}

struct StatsParams {
    const void* xt;        // [B][L][D] dtype, channels-last (prep)
    const float* xdbl;     // [B][4][L][Cp] (prep)
    const void* wdt;       // [4][D][R] dtype
    const float* dt_bias;  // [4][D]
    const float* A2;       // [4 D][a2_stride(N)]: A * log2(e)
    float* Q;              // [2^bsplit_log2 copies][B][4][L][N + 1]
    int D, H, W, N, R, Cp, variant;
    int splits;            // channel splits per block (1, 2, 4, 8); kStatsWarps / splits position tiles
    int bsplit_log2;       // channel splits across blocks, 2^0..2^3: blockIdx.x = position block << log2 | split
    const float* A_logs;   // [4 D][N]: kStatsFolded computes the block's A2 rows from it (A2 unused)
};

// Forms of the statistics kernel (VMK_VMEANBA_STATS, chosen in vmeanba_launch):
//   kStatsV9: v4-v9 (A2 table launch; 64-bit index arithmetic per access);
//   kStatsTable: the table, but every access to u, the bias, A2 and W_dt is one IMAD.WIDE from an
//     opaque_ptr'd base (v9's scan-step form) and the A2 stride a constant;
//   kStatsFolded: as kStatsTable, and no table launch: each block computes A * log2(e) of its own
//     channels into shared memory (the same expf as vmeanba_a2_kernel, so the same values).
// Variant 2 reads no A2 table: its kernels take kStatsTable's form for both new forms.
enum StatsForm { kStatsV9 = 0, kStatsTable = 1, kStatsFolded = 2 };

// Channel tiles of 8 a statistics block owns, counted in the block's own order (the tile index
// split + m splits, m = 0, 1, ...; kStatsFolded's shared rows): with S splits per block and
// 2^bsplit_log2 across blocks, the block of split bsplit owns the global tiles bsplit S + s +
// m S 2^bsplit_log2 (s < S), so m < ceil(tiles / (S 2^bsplit_log2)).
__host__ __device__ inline int stats_local_tiles(int D, int splits, int bsplit_log2)
{
    const int tiles = (D + 7) / 8, per_m = splits << bsplit_log2;
    return (tiles + per_m - 1) / per_m * splits;
}

// kStatsFolded's shared A2 rows at most (else the table launch, kStatsTable): at d_state 16 the
// rows cost 64 bytes per channel of the block, which would cost occupancy at batch 128 (where one
// launch more is nothing) but fit where channels are split across blocks (batch 1).
constexpr size_t kFoldedA2Bytes = 16 * 1024;

// 2^x for x <= 0 on the FMA pipe, as accurate as fast_exp2 (relative error 2.3e-7 over [-125, 0],
// float32 Horner evaluation; fast_exp2 ~2^-22): x = j + f with j = rint(x) (the 1.5 2^23 shift puts
// j in the low mantissa bits of t), 2^f a degree-5 fit on [-0.5, 0.5], and j added to its exponent
// field. x is clamped at -125 so that the exponent stays normal: results there are below 2^-124,
// where fast_exp2 flushes below 2^-126 (both negligible against a sum over channels of terms <= 1).
// 10 instructions, none on the MUFU pipe, which at d_state 16 is the statistics' bound (18 MUFU per
// element against 16 per clock and SM).
__device__ __forceinline__ float exp2_fma(float x)
{
    constexpr float kShift = 12582912.f;  // 1.5 * 2^23
    x = fmaxf(x, -125.f);
    const float t = x + kShift;
    const float f = x - (t - kShift);  // exact, in [-0.5, 0.5]
    float p = fmaf(0.0013276395620778203f, f, 0.009675522334873676f);
    p = fmaf(p, f, 0.05550713464617729f);
    p = fmaf(p, f, 0.24022120237350464f);
    p = fmaf(p, f, 0.6931469440460205f);
    p = fmaf(p, f, 1.0000001192092896f);
    // t's bits are 0x4B400000 + j: shifted by 23 only j << 23 remains (mod 2^32, unsigned)
    return __uint_as_float(__float_as_uint(p) + (__float_as_uint(t) << 23));
}

// dt of one thread's fragment of (16 positions x 8 channels), without the bias: v[0], v[1] at
// position g and channels 2 t2, 2 t2 + 1 of the tile, v[2], v[3] at position g + 8 (g = lane / 4,
// t2 = lane % 4: the accumulator layout of mma m16n8k16). Two sources with one interface:
//   FragMma (float16 I/O, dt_rank <= 64): (16 x R) dt_low @ (R x 8) W_dt^T on tensor cores. dt_low
//     is float32, fed as hi + lo float16 halves (two products, float32 accuracy; as DtMma); its
//     fragments are loaded once per warp, W_dt's (float16, exact) once per tile.
//   FragTf32 (float32 I/O, dt_rank <= 64): the same product in 3xTF32 (float32 accuracy).
//   FragSimt (ranks past 64, or VMK_SCAN_DT=simt): 4 R FMAs per thread and tile on CUDA cores.
template <int KT>
struct FragMma {
    uint32_t hi[KT][4], lo[KT][4];
    __device__ __forceinline__ void init(const float* rows, int Cp)
    {
        const int lane = threadIdx.x & 31, g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
            for (int q = 0; q < 4; ++q) {  // a0: (g, c), a1: (g + 8, c), a2: (g, c + 8), a3: (g + 8, c + 8)
                const int row = g + (q & 1) * 8, col = kt * 16 + t2 + (q >> 1) * 8;
                // columns past the row are zero (inside it they meet zero weights past R)
                const float2 v = col < Cp ? *reinterpret_cast<const float2*>(rows + row * Cp + col) : make_float2(0.f, 0.f);
                const __half2 h = __floats2half2_rn(v.x, v.y);
                const float2 f = __half22float2(h);
                hi[kt][q] = half2_bits(h);
                lo[kt][q] = half2_bits(__floats2half2_rn(v.x - f.x, v.y - f.y));
            }
        }
    }
    // wk: direction k's W_dt [D][R]; c0: the tile's first channel. whole: the tile's 8 channels
    // exist and R is even (every W_dt pair is one aligned 32-bit load). OPAQUE_ROW (the new
    // statistics forms): a whole tile reads the lane's row from its first rank behind opaque_ptr, so
    // every pair is one load at a constant offset (one IMAD.WIDE per tile; else about 4 integer
    // instructions per pair).
    template <bool OPAQUE_ROW = false>
    __device__ __forceinline__ void tile(const __half* wk, int c0, int D, int R, bool whole, float* v) const
    {
        const int lane = threadIdx.x & 31, g = lane >> 2, t2 = (lane & 3) * 2;
        const int ch = c0 + g;
        const bool live = ch < D;
        const __half* wr = wk + (live ? ch : 0) * R;
        const unsigned int* wp = nullptr;  // OPAQUE_ROW: the pair at ranks t2, t2 + 1
        if constexpr (OPAQUE_ROW) wp = opaque_ptr(reinterpret_cast<const unsigned int*>(wr + t2));
        auto pair = [&](int k16) -> uint32_t {  // k16: the pair's rank less t2 (a constant)
            const int r = k16 + t2;
            if (whole && OPAQUE_ROW) return r < R ? __ldg(wp + k16 / 2) : 0u;
            if (whole) return r < R ? __ldg(reinterpret_cast<const unsigned int*>(wr + r)) : 0u;
            if (!live || r >= R) return 0u;
            const __half zero = __float2half_rn(0.f);
            return half2_bits(__halves2half2(wr[r], r + 1 < R ? wr[r + 1] : zero));
        };
        v[0] = v[1] = v[2] = v[3] = 0.f;
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
            const uint32_t b0 = pair(kt * 16), b1 = pair(kt * 16 + 8);
            mma_16816(v, hi[kt], b0, b1);
            mma_16816(v, lo[kt], b0, b1);
        }
    }
};

// float32 I/O: the same fragment on tensor cores in 3xTF32 (split_tf32, mma m16n8k8), KT8 k8-steps;
// dt_low's split fragments are held for the warp's life, W_dt's are split per tile.
template <int KT8>
struct FragTf32 {
    uint32_t ah[KT8][4], al[KT8][4];
    __device__ __forceinline__ void init(const float* rows, int Cp)
    {
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int kt = 0; kt < KT8; ++kt) {
#pragma unroll
            for (int q = 0; q < 4; ++q) {  // a0: (g, c), a1: (g + 8, c), a2: (g, c + 4), a3: (g + 8, c + 4)
                const int row = g + (q & 1) * 8, col = kt * 8 + t + (q >> 1) * 4;
                split_tf32(col < Cp ? rows[row * Cp + col] : 0.f, ah[kt][q], al[kt][q]);
            }
        }
    }
    // OPAQUE_ROW: as FragMma's, the lane's row from rank t behind opaque_ptr (constant offsets)
    template <bool OPAQUE_ROW = false>
    __device__ __forceinline__ void tile(const float* wk, int c0, int D, int R, bool whole, float* v) const
    {
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        const int ch = c0 + g;
        const bool live = whole || ch < D;
        const float* wr = wk + (live ? ch : 0) * R;
        if constexpr (OPAQUE_ROW) wr = opaque_ptr(wr + t) - t;  // wr + r0 below: one constant offset
        v[0] = v[1] = v[2] = v[3] = 0.f;
#pragma unroll
        for (int kt = 0; kt < KT8; ++kt) {
            const int r0 = kt * 8 + t, r1 = r0 + 4;
            uint32_t bh[2], bl[2];
            split_tf32(live && r0 < R ? __ldg(wr + r0) : 0.f, bh[0], bl[0]);
            split_tf32(live && r1 < R ? __ldg(wr + r1) : 0.f, bh[1], bl[1]);
            mma_1688_3xtf32(v, ah[kt], al[kt], bh, bl);
        }
    }
};

template <typename T>
struct FragSimt {
    const float* r0;  // staged rows of positions g and g + 8
    const float* r1;
    __device__ __forceinline__ void init(const float* rows, int Cp)
    {
        const int g = (threadIdx.x & 31) >> 2;
        r0 = rows + g * Cp;
        r1 = rows + (g + 8) * Cp;
    }
    template <bool OPAQUE_ROW = false>  // (no table offsets here: the loop walks the rows)
    __device__ __forceinline__ void tile(const T* wk, int c0, int D, int R, bool /*whole*/, float* v) const
    {
        const int t2 = (threadIdx.x & 3) * 2;
        const int ca = min(c0 + t2, D - 1), cb = min(c0 + t2 + 1, D - 1);  // dead channels: masked later
        const T* wa = wk + ca * R;
        const T* wb = wk + cb * R;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma unroll 4
        for (int r = 0; r < R; ++r) {
            const float a = to_f32(wa[r]), b = to_f32(wb[r]), x0 = r0[r], x1 = r1[r];
            s0 = fmaf(a, x0, s0);
            s1 = fmaf(b, x0, s1);
            s2 = fmaf(a, x1, s2);
            s3 = fmaf(b, x1, s3);
        }
        v[0] = s0; v[1] = s1; v[2] = s2; v[3] = s3;
    }
};

// Whether the new forms' d_state-1 loop takes two whole tiles per iteration (as v9 does), per dt
// source: not for FragMma<3> and FragTf32<8>, where the second tile in flight cost occupancy or
// spilled (ptxas, sm_90: FragMma<3> 76 registers against 64 with one tile, 3 blocks per SM instead
// of 4; FragTf32<8> 128 with 16 bytes spilled against 118).
template <typename Frag> struct NewFormTwoTiles { static constexpr bool value = true; };
template <> struct NewFormTwoTiles<FragMma<3>> { static constexpr bool value = false; };
template <> struct NewFormTwoTiles<FragTf32<8>> { static constexpr bool value = false; };

// One channel's contribution to the sums of the thread's two positions (i = 0, 1; dt without bias):
// variants 0/1 add exp(delta A) per state to se[i] and delta u to s2[i]; variant 2 (PRE) adds delta
// and u. `both`: position 1 exists (else only position 0 is added). The two positions share each
// load of the channel's A2 row, 8 independent exponentials per 16-byte load.
// POLY (new forms, d_state 16): states 4 q + 3 for q < POLY take exp2_fma instead of the MUFU, which
// moves POLY of the 18 MUFU operations per element to the FMA pipe at 9 more issued instructions
// each. FORM: kStatsFolded reads A2 from its shared rows (plain loads), kStatsTable through the
// read-only path (its pointer is opaque_ptr'd, so a plain load would be generic), kStatsV9 as before.
template <int NMAX, bool PRE, int NS, int POLY = 0, int FORM = kStatsV9>
__device__ __forceinline__ void add_channel(float dt0, float dt1, float bias, float u0, float u1, bool both,
                                            const float* A2, float (&se)[2][NS], float (&s2)[2])
{
    const float d0 = softplus_f32(dt0 + bias), d1 = softplus_f32(dt1 + bias);
    const float w1 = both ? 1.f : 0.f;  // position 1's weight (its delta is finite either way)
    if (PRE) {
        se[0][0] += d0;
        s2[0] += u0;
        se[1][0] = fmaf(w1, d1, se[1][0]);
        s2[1] = fmaf(w1, u1, s2[1]);
        return;
    }
    s2[0] = fmaf(d0, u0, s2[0]);
    s2[1] = fmaf(w1 * d1, u1, s2[1]);
    if (NMAX == 1) {
        const float a = FORM == kStatsTable ? __ldg(A2) : A2[0];
        se[0][0] += fast_exp2(d0 * a);
        se[1][0] = fmaf(w1, fast_exp2(d1 * a), se[1][0]);
    } else {  // A2 rows hold 16 values, zero past N: sums past N are never read
#pragma unroll
        for (int n = 0; n < NMAX; n += 4) {
            const float4 a = FORM == kStatsFolded ? *reinterpret_cast<const float4*>(A2 + n)
                                                  : __ldg(reinterpret_cast<const float4*>(A2 + n));
            const bool poly = n / 4 < POLY;  // state n + 3 on the FMA pipe
            se[0][n] += fast_exp2(d0 * a.x);
            se[0][n + 1] += fast_exp2(d0 * a.y);
            se[0][n + 2] += fast_exp2(d0 * a.z);
            se[0][n + 3] += poly ? exp2_fma(d0 * a.w) : fast_exp2(d0 * a.w);
            se[1][n] = fmaf(w1, fast_exp2(d1 * a.x), se[1][n]);
            se[1][n + 1] = fmaf(w1, fast_exp2(d1 * a.y), se[1][n + 1]);
            se[1][n + 2] = fmaf(w1, fast_exp2(d1 * a.z), se[1][n + 2]);
            se[1][n + 3] = fmaf(w1, poly ? exp2_fma(d1 * a.w) : fast_exp2(d1 * a.w), se[1][n + 3]);
        }
    }
}

// Block (position block, direction k, image b); warp w = (position tile w / splits, channel split
// w % splits). Each warp walks its split's channel tiles of 8 (tile c = split, split + splits, ...)
// over its 16 positions; each thread sums its two positions' values over its channels; at the end
// the 4 lanes of a position add theirs (2 shuffles) and the splits are added in a fixed order.
// Offsets within one image are 32-bit (checked in vmeanba_run). FORM, POLY: StatsForm and
// add_channel's exponentials on the FMA pipe.
template <typename T, int NMAX, bool PRE, typename Frag, int FORM = kStatsV9, int POLY = 0>
__global__ void __launch_bounds__(kStatsWarps * 32) vmeanba_stats_kernel(StatsParams p)
{
    extern __shared__ __align__(16) float smem[];
    const int k = blockIdx.y, b = blockIdx.z;
    const int H = p.H, W = p.W, L = H * W, D = p.D, N = p.N, R = p.R, Cp = p.Cp;
    const int tiles = kStatsWarps / p.splits, per_block = tiles * kStatsTile;
    const int bsplit = blockIdx.x & ((1 << p.bsplit_log2) - 1);
    const int t_block = (blockIdx.x >> p.bsplit_log2) * per_block;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int ptile = warp / p.splits, split = warp % p.splits;
    const int g = lane >> 2, t2 = (lane & 3) * 2;
    float* rows_s = smem;                                          // [per_block][Cp]
    float* red_s = smem + (size_t)per_block * Cp;                  // [warps][NMAX + 1][16]
    float* a2_s = red_s + kStatsWarps * (NMAX + 1) * kStatsTile;   // kStatsFolded: [local channels][NMAX]
    const int lstep = 8 * p.splits;  // kStatsFolded: a warp's next channel tile, in local channels

    {  // the block's x_dbl rows (zero past the sequence)
        const int cnt = min(per_block, L - t_block);
        const float4* src = reinterpret_cast<const float4*>(p.xdbl + (((size_t)b * kDirs + k) * L + t_block) * Cp);
        float4* dst = reinterpret_cast<float4*>(rows_s);
        for (int e = threadIdx.x; e < per_block * Cp / 4; e += blockDim.x)
            dst[e] = e < cnt * Cp / 4 ? src[e] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    if constexpr (FORM == kStatsFolded && !PRE) {  // the block's A2 rows, in its tile order (stats_local_tiles)
        const int S = p.splits, per_m = S << p.bsplit_log2;
        const int rows = stats_local_tiles(D, S, p.bsplit_log2) * 8;
        const float* al = p.A_logs + (size_t)k * D * N;
        for (int e = threadIdx.x; e < rows * NMAX; e += blockDim.x) {
            const int lc = e / NMAX, n = e % NMAX, lt = lc >> 3;
            const int c = ((lt / S) * per_m + bsplit * S + lt % S) * 8 + (lc & 7);
            a2_s[e] = c < D && n < N ? -expf(al[c * N + n]) * kLog2e : 0.f;  // as vmeanba_a2_kernel
        }
    }
    __syncthreads();

    const int t0 = t_block + ptile * kStatsTile;
    const bool in0 = t0 + g < L, in1 = t0 + g + 8 < L;
    const T* xtb = static_cast<const T*>(p.xt) + (size_t)b * L * D;
    const T* u0 = xtb + (in0 ? seq_pixel(k, t0 + g, H, W) : 0) * D;
    const T* u1 = xtb + (in1 ? seq_pixel(k, t0 + g + 8, H, W) : 0) * D;
    const T* wk = static_cast<const T*>(p.wdt) + (size_t)k * D * R;
    const float* bias = p.dt_bias + (size_t)k * D;
    // the new forms know the stride: a2_stride(N) == NMAX for every N (1 for N == 1, else 16)
    const int AS = FORM == kStatsV9 ? a2_stride(N) : NMAX;
    const float* A2 = FORM == kStatsFolded ? a2_s : p.A2 + (size_t)k * D * AS;
    constexpr bool kNewForm = FORM != kStatsV9;
    if constexpr (kNewForm) {  // one IMAD.WIDE per access (see opaque_ptr); loads through __ldg
        u0 = opaque_ptr(u0);
        u1 = opaque_ptr(u1);
        wk = opaque_ptr(wk);
        bias = opaque_ptr(bias);
        if (FORM == kStatsTable) A2 = opaque_ptr(A2);
    }
    Frag frag;
    frag.init(rows_s + ptile * kStatsTile * Cp, Cp);

    // running sums of positions g (index 0) and g + 8 (index 1): se = sum exp(delta A) per state
    // (variant 2: sum of delta in se[.][0]), s2 = sum delta u (variant 2: sum u)
    constexpr int NS = PRE ? 1 : NMAX;  // state sums held (variant 2 sums delta only)
    float se[2][NS], s2[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int n = 0; n < NS; ++n) se[i][n] = 0.f;
    // whole tiles (all 8 channels, all 16 positions, D and R even: pairs of channels are aligned
    // 2-element loads) take the path without guards; only the edges of the problem take the other
    const bool whole_rows = t0 + kStatsTile <= L && (D & 1) == 0 && (R & 1) == 0;
    using T2 = typename std::conditional<sizeof(T) == 2, __half2, float2>::type;
    // c: this thread's first channel of the tile; ca: its A2 row (kStatsFolded: local channel)
    auto whole_tile = [&](int c, int ca, const float* v) {
        const float2 bb = __ldg(reinterpret_cast<const float2*>(bias + c));
        T2 ua, ub;
        if constexpr (FORM == kStatsV9) {
            ua = *reinterpret_cast<const T2*>(u0 + c);
            ub = *reinterpret_cast<const T2*>(u1 + c);
        } else {
            ua = __ldg(reinterpret_cast<const T2*>(u0 + c));
            ub = __ldg(reinterpret_cast<const T2*>(u1 + c));
        }
        const T* uav = reinterpret_cast<const T*>(&ua);
        const T* ubv = reinterpret_cast<const T*>(&ub);
        const float* a0 = A2 + ca * AS;
        add_channel<NMAX, PRE, NS, POLY, FORM>(v[0], v[2], bb.x, to_f32(uav[0]), to_f32(ubv[0]), true, a0, se, s2);
        add_channel<NMAX, PRE, NS, POLY, FORM>(v[1], v[3], bb.y, to_f32(uav[1]), to_f32(ubv[1]), true, a0 + AS, se, s2);
    };
    auto row_of = [&](int c, int cl) { return FORM == kStatsFolded ? cl : c; };
    // channel tiles of 8: this warp takes tile bsplit * splits + split, then every (splits << log2)-th
    const int cstep = (8 * p.splits) << p.bsplit_log2;
    int c0 = (bsplit * p.splits + split) * 8, c0l = split * 8;  // c0l: c0's local channel (kStatsFolded)
    // d_state 1: two whole tiles per iteration, twice the independent work per loop overhead (16
    // states have 64 independent exponentials per tile already, and the second tile's registers
    // would cost occupancy)
    if (NMAX == 1 && whole_rows && (!kNewForm || NewFormTwoTiles<Frag>::value)) {
        for (; c0 + cstep + 8 <= D; c0 += 2 * cstep, c0l += 2 * lstep) {
            float v0[4], v1[4];
            frag.template tile<kNewForm>(wk, c0, D, R, true, v0);
            frag.template tile<kNewForm>(wk, c0 + cstep, D, R, true, v1);
            whole_tile(c0 + t2, row_of(c0, c0l) + t2, v0);
            whole_tile(c0 + cstep + t2, row_of(c0 + cstep, c0l + lstep) + t2, v1);
        }
    }
    for (; c0 < D; c0 += cstep, c0l += lstep) {
        const bool whole = whole_rows && c0 + 8 <= D;
        float v[4];
        frag.template tile<kNewForm>(wk, c0, D, R, whole, v);
        const int c = c0 + t2;
        if (whole) {
            whole_tile(c, row_of(c0, c0l) + t2, v);
        } else {
#pragma unroll
            for (int e = 0; e < 2; ++e) {  // channels c and c + 1; position 1 only where it exists
                const int ce = c + e;
                // in0 is false only if in1 is too. The new forms add such lanes' sums anyway (finite:
                // zero dt_low rows, pixel 0's u), since rows past L are never written to Q: holding
                // in0 for this test cost a predicate spill (ptxas, d_state 1, rank tiles 48-64)
                if (ce >= D || (FORM == kStatsV9 && !in0)) continue;
                if constexpr (FORM == kStatsV9)
                    add_channel<NMAX, PRE, NS>(v[e], v[e + 2], bias[ce], to_f32(u0[ce]), to_f32(u1[ce]), in1, A2 + ce * AS,
                                               se, s2);
                else
                    add_channel<NMAX, PRE, NS, POLY, FORM>(v[e], v[e + 2], __ldg(bias + ce), to_f32(__ldg(u0 + ce)),
                                                           to_f32(__ldg(u1 + ce)), in1,
                                                           A2 + (row_of(c0, c0l) + t2 + e) * AS, se, s2);
            }
        }
    }
    // the 4 lanes of a position (t2 = 0..3) hold disjoint channels: add them (the same order in every lane)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int n = 0; n < NS; ++n) {
            se[i][n] += __shfl_xor_sync(0xffffffffu, se[i][n], 1);
            se[i][n] += __shfl_xor_sync(0xffffffffu, se[i][n], 2);
        }
        s2[i] += __shfl_xor_sync(0xffffffffu, s2[i], 1);
        s2[i] += __shfl_xor_sync(0xffffffffu, s2[i], 2);
    }
    float* mine = red_s + (size_t)warp * (NMAX + 1) * kStatsTile;
    if (t2 == 0) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
#pragma unroll
            for (int n = 0; n < NMAX; ++n) mine[n * kStatsTile + g + 8 * i] = n < NS ? se[i][n] : 0.f;
            mine[NMAX * kStatsTile + g + 8 * i] = s2[i];
        }
    }
    __syncthreads();
    // Q rows of the block's positions, the channel splits added in a fixed order
    const int F = vmeanba_slots(N);
    float* Qk = p.Q + (((size_t)bsplit * gridDim.z + b) * kDirs + k) * F * L;
    for (int e = threadIdx.x; e < F * per_block; e += blockDim.x) {  // slot fastest: coalesced rows of Q
        const int tt = e / F, slot = e % F, t = t_block + tt;
        if (t >= L) continue;
        const int pt = tt / kStatsTile, s = tt % kStatsTile;
        const int field = slot == N ? NMAX : slot;  // slot N (delta u, or u) sits after the NMAX states
        float sum = 0.f;
        for (int z = 0; z < p.splits; ++z)
            sum += red_s[((size_t)(pt * p.splits + z) * (NMAX + 1) + field) * kStatsTile + s];
        Qk[(size_t)t * F + slot] = sum;
    }
}

// Q = sum over its copies (channel splits across blocks), into the first, in the order of the copies.
__global__ void vmeanba_sum_copies_kernel(float* __restrict__ Q, size_t n, int copies)
{
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        float v = Q[e];
        for (int z = 1; z < copies; ++z) v += Q[z * n + e];
        Q[e] = v;
    }
}

// The reduced sequence's coefficients (a, bu, c) of state n at index l for group grp (variant 1:
// grp = direction); states n >= N get (1, 0, 0), so they stay zero.
// COPIES (the new statistics forms with channel splits across blocks): Q's `copies` copies, copy_stride
// floats apart, are added here in vmeanba_sum_copies_kernel's order (the same sums, bitwise), so that
// launch goes.
template <bool COPIES = false>
__device__ __forceinline__ void reduced_coeff(const float* __restrict__ Qb, const float* __restrict__ xdb,
                                              const XdblCols& cols, const float* __restrict__ A_mean, int grp,
                                              int variant, int D, int L, int l, int n, float& a, float& bu, float& c,
                                              size_t copy_stride = 0, int copies = 1)
{
    const int N = cols.N, F = vmeanba_slots(N), Cp = cols.Cp;
    const bool live = n < N;
    const int s = live ? n : 0;
    auto qrow = [&](int k) { return Qb + ((size_t)k * L + l) * F; };     // direction k's sums at l
    auto row = [&](int k) { return xdb + ((size_t)k * L + l) * Cp; };  // direction k's x_dbl at l
    auto qv = [&](int k, int slot) {  // direction k's sum in slot at l
        const float* q = qrow(k) + slot;
        float v = q[0];
        if constexpr (COPIES)
            for (int z = 1; z < copies; ++z) v += q[z * copy_stride];
        return v;
    };
    if (variant == 1) {
        const float* xk = row(grp);
        a = qv(grp, s) / D;
        bu = xk[cols.bo + s] * (qv(grp, N) / D);
        c = xk[cols.co + s];
    } else if (variant == 0) {
        float sa = 0.f, sb = 0.f, sc = 0.f;
#pragma unroll
        for (int k = 0; k < kDirs; ++k) {
            sa += qv(k, s);
            sb = fmaf(row(k)[cols.bo + s], qv(k, N) / D, sb);
            sc += row(k)[cols.co + s];
        }
        a = sa / (kDirs * D);
        bu = sb / kDirs;
        c = sc / kDirs;
    } else {
        float sdelta = 0.f, su = 0.f, sb = 0.f, sc = 0.f;
#pragma unroll
        for (int k = 0; k < kDirs; ++k) {
            sdelta += qv(k, 0);
            su += qv(k, N);
            sb += row(k)[cols.bo + s];
            sc += row(k)[cols.co + s];
        }
        const float delta_m = sdelta / (kDirs * D), u_m = su / (kDirs * D);
        a = fast_exp2(delta_m * A_mean[s] * kLog2e);
        bu = delta_m * u_m * (sb / kDirs);
        c = sc / kDirs;
    }
    if (!live) { a = 1.f; bu = 0.f; c = 0.f; }
}

// One block per (image, group) of kReducedThreads threads = (chunks of the sequence) x (NS states,
// the fastest index): the states of the reduced scan are independent except for the readout, so a
// thread scans one state over one chunk. Two passes with a scan of the chunks' affine maps
// (h_out = a_prod * h_in + h_local) in between; the readout y = sum_n c_n h_n adds the NS lanes of a
// chunk (shuffles in a fixed order).
// STAGED (d_state 1, where 3 L floats fit a block's shared memory): the coefficients of the whole
// sequence are first computed into shared memory with consecutive threads on consecutive positions,
// and both passes read them there. With one state, thread q's chunk of positions lies L / 1024
// positions from its neighbour's, so the passes' own loads touched a different x_dbl and Q line per
// lane and per direction (29.5 us for the one block at VMamba-T stage 0, batch 1, in Nsight Compute
// on the H200; 16 states have their lanes on consecutive states and need no staging).
// COPIES: Q's copies are added on read (reduced_coeff), copy_stride floats apart.
template <int NS, bool STAGED, bool COPIES = false>
__global__ void __launch_bounds__(kReducedThreads) vmeanba_reduced_scan_kernel(
    const float* __restrict__ Q, const float* __restrict__ xdbl, const float* __restrict__ A_mean, int D, int H,
    int W, XdblCols cols, int variant, float* __restrict__ ym, size_t copy_stride, int copies)
{
    static_assert(32 % NS == 0, "the states of a chunk lie in one warp");
    static_assert(!STAGED || NS == 1, "staged coefficients: one state");
    constexpr int kChunks = kReducedThreads / NS, kWarps = kReducedThreads / 32;
    __shared__ float warp_a[kWarps][NS], warp_h[kWarps][NS];
    extern __shared__ float coef_s[];  // STAGED: a, bu and c of every position, [3][L]
    const int b = blockIdx.y, grp = blockIdx.x;
    const int L = H * W, N = cols.N;
    const float* Qb = Q + (size_t)b * kDirs * vmeanba_slots(N) * L;
    const float* xdb = xdbl + (size_t)b * kDirs * L * cols.Cp;
    const int n = threadIdx.x % NS, q = threadIdx.x / NS;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int chunk = (L + kChunks - 1) / kChunks;
    const int l0 = min(L, q * chunk), l1 = min(L, l0 + chunk);
    if constexpr (STAGED) {
        for (int l = threadIdx.x; l < L; l += kReducedThreads) {
            float a, bu, c;
            reduced_coeff<COPIES>(Qb, xdb, cols, A_mean, grp, variant, D, L, l, 0, a, bu, c, copy_stride, copies);
            coef_s[l] = a;
            coef_s[L + l] = bu;
            coef_s[2 * L + l] = c;
        }
        __syncthreads();
    }
    auto coeff = [&](int l, float& a, float& bu, float& c) {
        if constexpr (STAGED) {
            a = coef_s[l];
            bu = coef_s[L + l];
            c = coef_s[2 * L + l];
        } else {
            reduced_coeff<COPIES>(Qb, xdb, cols, A_mean, grp, variant, D, L, l, n, a, bu, c, copy_stride, copies);
        }
    };
    float h = 0.f, ap = 1.f, a, bu, c;
    // (unrolled: the coefficient loads of later steps do not depend on h and issue early; not where
    // the copies are added on read, which at 4 spilled at the 64-register cap of 1024 threads)
    constexpr int kUnroll = COPIES && !STAGED ? 1 : 4;
#pragma unroll kUnroll
    for (int l = l0; l < l1; ++l) {
        coeff(l, a, bu, c);
        h = fmaf(a, h, bu);
        ap *= a;
    }
    // inclusive scan over the chunks of state n: combine(prev, cur) = (prev.a cur.a, cur.a prev.h + cur.h)
    for (int off = NS; off < 32; off <<= 1) {
        const float pa = __shfl_up_sync(0xffffffffu, ap, off);
        const float ph = __shfl_up_sync(0xffffffffu, h, off);
        if (lane >= off) { h = fmaf(ap, ph, h); ap *= pa; }
    }
    if (lane >= 32 - NS) { warp_a[warp][n] = ap; warp_h[warp][n] = h; }
    __syncthreads();
    float carry = 0.f;  // state entering this warp's first chunk
    for (int w = 0; w < warp; ++w) carry = fmaf(warp_a[w][n], carry, warp_h[w][n]);
    float pa = __shfl_up_sync(0xffffffffu, ap, NS);  // the previous chunk's inclusive map
    float ph = __shfl_up_sync(0xffffffffu, h, NS);
    if (lane < NS) { pa = 1.f; ph = 0.f; }
    float hin = fmaf(pa, carry, ph);
    const unsigned group_mask = NS == 32 ? 0xffffffffu : ((1u << NS) - 1) << (lane & ~(NS - 1));
    float* y = ym + ((size_t)b * gridDim.x + grp) * L;
#pragma unroll kUnroll
    for (int l = l0; l < l1; ++l) {
        coeff(l, a, bu, c);
        hin = fmaf(a, hin, bu);
        float yv = c * hin;
#pragma unroll
        for (int off = NS / 2; off > 0; off >>= 1) yv += __shfl_xor_sync(group_mask, yv, off);
        if (n == 0) y[l] = yv;
    }
}

// y[b, d, p] = sum_k y_m[b, group(k), l_k(p)] + (sum_k Ds[k, d]) x[b, d, p]: flat over
// (image, group of 8 channels, run of V pixels), so a warp reads and writes along pixels in V-element
// accesses (V = 16 bytes' worth where every (b, d) row of L elements keeps that alignment, else
// fewer) and every thread reads the four reduced outputs of its pixels once for its 8 channels.
template <typename T, int V>
__global__ void __launch_bounds__(kMergeThreads) vmeanba_merge_kernel(const T* __restrict__ x,
                                                                      const float* __restrict__ Ds,
                                                                      const float* __restrict__ ym, int groups,
                                                                      int B, int D, int H, int W, T* __restrict__ y)
{
    struct alignas(V * sizeof(T)) Vec { T v[V]; };
    const int L = H * W, runs = L / V;
    const size_t dgroups = (D + kMergeChannels - 1) / kMergeChannels;
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)B * dgroups * runs) return;
    const int p0 = (int)(e % runs) * V;
    const size_t rest = e / runs;
    const int d0 = (int)(rest % dgroups) * kMergeChannels, b = (int)(rest / dgroups);
    const float* yb = ym + (size_t)b * groups * L;
    float S[V];
#pragma unroll
    for (int q = 0; q < V; ++q) {
        const int p = p0 + q, i = p / W, j = p - i * W;
        float s[kDirs];
#pragma unroll
        for (int k = 0; k < kDirs; ++k) s[k] = yb[(size_t)(groups == 1 ? 0 : k) * L + seq_index(k, i, j, H, W)];
        S[q] = (s[0] + s[2]) + (s[1] + s[3]);
    }
    const int dn = min(kMergeChannels, D - d0);
#pragma unroll
    for (int dd = 0; dd < kMergeChannels; ++dd) {
        if (dd >= dn) break;
        const int d = d0 + dd;
        const float dsum = (Ds[d] + Ds[D + d]) + (Ds[2 * D + d] + Ds[3 * D + d]);
        const size_t row = ((size_t)b * D + d) * L + p0;
        const Vec in = *reinterpret_cast<const Vec*>(x + row);
        Vec out;
#pragma unroll
        for (int q = 0; q < V; ++q) out.v[q] = from_f32<T>(fmaf(dsum, to_f32(in.v[q]), S[q]));
        *reinterpret_cast<Vec*>(y + row) = out;
    }
}

// The widest run (16 bytes at most) that divides L, so that every (b, d) row stays aligned.
template <typename T>
vmk_status_t launch_merge(const T* x, const float* Ds, const float* ym, int groups, int B, int D, int H, int W, T* y,
                          cudaStream_t stream)
{
    const int L = H * W;
    constexpr int VMAX = 16 / sizeof(T);
    auto launch = [&](auto kernel, int V) {
        const size_t threads = (size_t)B * ((D + kMergeChannels - 1) / kMergeChannels) * (L / V);
        kernel<<<(unsigned)((threads + kMergeThreads - 1) / kMergeThreads), kMergeThreads, 0, stream>>>(x, Ds, ym, groups,
                                                                                                      B, D, H, W, y);
        return launch_status();
    };
    if (L % VMAX == 0) return launch(vmeanba_merge_kernel<T, VMAX>, VMAX);
    if (L % 4 == 0) return launch(vmeanba_merge_kernel<T, 4>, 4);
    if (L % 2 == 0) return launch(vmeanba_merge_kernel<T, 2>, 2);
    return launch(vmeanba_merge_kernel<T, 1>, 1);
}


// A split-count knob from the environment: 1, 2, 4 or 8, and at most `most`; else `chosen`.
inline int split_knob(const char* name, int most, int chosen)
{
    const char* env = getenv(name);
    const int want = env ? atoi(env) : 0;
    return (want == 1 || want == 2 || want == 4 || want == 8) && want <= most ? want : chosen;
}

// Position tiles of the statistics (16 positions of one direction of one image each).
inline long long stats_tiles(int B, int L) { return (long long)B * kDirs * ((L + kStatsTile - 1) / kStatsTile); }

// Copies of Q the workspace holds: kMaxBlockSplits where channel splits across blocks may be chosen
// (few position tiles), else 1.
inline size_t stats_copies(const vmk_ss2d_args_t* a)
{
    return stats_tiles(a->batch, a->height * a->width) <= kBlockSplitTiles ? kMaxBlockSplits : 1;
}

struct VmeanbaLayout {
    size_t xt, xdbl, a2, amean, q, ym, total;
};

VmeanbaLayout vmeanba_layout(const vmk_ss2d_args_t* a)
{
    const size_t L = (size_t)a->height * a->width, B = a->batch, D = a->dim, N = a->d_state;
    const size_t esz = a->dtype == VMK_FLOAT16 ? sizeof(__half) : sizeof(float);
    const size_t Cp = xdbl_cols(a->dt_rank, a->d_state).Cp;
    VmeanbaLayout w;
    w.xt = 0;
    w.xdbl = align_up(B * L * D * esz);
    w.a2 = align_up(w.xdbl + B * kDirs * L * Cp * sizeof(float));
    w.amean = align_up(w.a2 + (size_t)kDirs * D * a2_stride((int)N) * sizeof(float));
    w.q = align_up(w.amean + N * sizeof(float));
    w.ym = align_up(w.q + stats_copies(a) * B * kDirs * vmeanba_slots((int)N) * L * sizeof(float));
    w.total = align_up(w.ym + B * kDirs * L * sizeof(float));
    return w;
}

// kStatsFolded's shared A2 rows of a block, in floats.
inline size_t folded_a2_floats(const StatsParams& p, int nmax)
{
    return (size_t)stats_local_tiles(p.D, p.splits, p.bsplit_log2) * 8 * nmax;
}

using StatsKernel = void (*)(StatsParams);

// The new forms' kernel for variants 0/1: poly states of 16 on the FMA pipe (0, 2 or 4; d_state 1: none).
template <typename T, int NMAX, typename Frag, int FORM>
StatsKernel stats_kernel_poly(int poly)
{
    if constexpr (NMAX == 1) return vmeanba_stats_kernel<T, NMAX, false, Frag, FORM, 0>;
    else
        return poly >= 4   ? vmeanba_stats_kernel<T, NMAX, false, Frag, FORM, 4>
               : poly >= 2 ? vmeanba_stats_kernel<T, NMAX, false, Frag, FORM, 2>
                           : vmeanba_stats_kernel<T, NMAX, false, Frag, FORM, 0>;
}

template <typename T, int NMAX, typename Frag>
vmk_status_t launch_stats(const StatsParams& p, int B, StatsForm form, int poly, cudaStream_t stream)
{
    StatsKernel kernel;
    if (form == kStatsV9)
        kernel = p.variant == 2 ? vmeanba_stats_kernel<T, NMAX, true, Frag> : vmeanba_stats_kernel<T, NMAX, false, Frag>;
    else if (p.variant == 2)  // no A2: one new form
        kernel = vmeanba_stats_kernel<T, NMAX, true, Frag, kStatsTable>;
    else
        kernel = form == kStatsFolded ? stats_kernel_poly<T, NMAX, Frag, kStatsFolded>(poly)
                                      : stats_kernel_poly<T, NMAX, Frag, kStatsTable>(poly);
    const int per_block = kStatsWarps / p.splits * kStatsTile, L = p.H * p.W;
    const size_t folded = form == kStatsFolded && p.variant != 2 ? folded_a2_floats(p, NMAX) : 0;
    const size_t smem =
        ((size_t)per_block * p.Cp + (size_t)kStatsWarps * (NMAX + 1) * kStatsTile + folded) * sizeof(float);
    if (!allow_smem(kernel, smem)) return VMK_ERR_CUDA;
    kernel<<<dim3(((L + per_block - 1) / per_block) << p.bsplit_log2, kDirs, B), kStatsWarps * 32, smem, stream>>>(p);
    return launch_status();
}

// dt on tensor cores up to dt_rank 64 (float16 operands for float16 I/O, 3xTF32 for float32), unless
// VMK_SCAN_DT=simt; else CUDA cores.
template <typename T, int NMAX>
vmk_status_t launch_stats_dt(const StatsParams& p, int B, StatsForm form, int poly, cudaStream_t stream)
{
    const char* dt_env = getenv("VMK_SCAN_DT");
    const bool simt = dt_env && !strcmp(dt_env, "simt");
    if constexpr (std::is_same<T, __half>::value) {
        if (!simt && p.R <= 64) {
            switch ((p.R + 15) / 16) {
            case 1: return launch_stats<T, NMAX, FragMma<1>>(p, B, form, poly, stream);
            case 2: return launch_stats<T, NMAX, FragMma<2>>(p, B, form, poly, stream);
            case 3: return launch_stats<T, NMAX, FragMma<3>>(p, B, form, poly, stream);
            default: return launch_stats<T, NMAX, FragMma<4>>(p, B, form, poly, stream);
            }
        }
    }
    if constexpr (std::is_same<T, float>::value) {
        if (!simt && p.R <= 64) {
            // k8 steps of the rank, rounded up to 1, 2, 3, 4, 6 or 8 (zero weights past R)
            switch ((p.R + 7) / 8) {
            case 1: return launch_stats<T, NMAX, FragTf32<1>>(p, B, form, poly, stream);
            case 2: return launch_stats<T, NMAX, FragTf32<2>>(p, B, form, poly, stream);
            case 3: return launch_stats<T, NMAX, FragTf32<3>>(p, B, form, poly, stream);
            case 4: return launch_stats<T, NMAX, FragTf32<4>>(p, B, form, poly, stream);
            case 5:
            case 6: return launch_stats<T, NMAX, FragTf32<6>>(p, B, form, poly, stream);
            default: return launch_stats<T, NMAX, FragTf32<8>>(p, B, form, poly, stream);
            }
        }
    }
    return launch_stats<T, NMAX, FragSimt<T>>(p, B, form, poly, stream);
}

template <typename T>
vmk_status_t vmeanba_launch(const vmk_ss2d_args_t* a, int variant, void* ws, cudaStream_t stream,
                            const DeviceInfo& dev)
{
    const int B = a->batch, D = a->dim, H = a->height, W = a->width, N = a->d_state, R = a->dt_rank;
    const int L = H * W;
    const XdblCols cols = xdbl_cols(R, N);
    const VmeanbaLayout lay = vmeanba_layout(a);
    char* base = static_cast<char*>(ws);
    T* xt = reinterpret_cast<T*>(base + lay.xt);
    float* xdbl = reinterpret_cast<float*>(base + lay.xdbl);
    float* A2 = reinterpret_cast<float*>(base + lay.a2);
    float* A_mean = reinterpret_cast<float*>(base + lay.amean);
    float* Q = reinterpret_cast<float*>(base + lay.q);
    float* ym = reinterpret_cast<float*>(base + lay.ym);

    vmk_status_t st = ss2d_prep(static_cast<const T*>(a->x), static_cast<const T*>(a->x_proj_weight), B, D, H, W,
                                cols, xt, xdbl, stream, dev);
    if (st != VMK_OK) return st;

    // Channel splits: the fewest (each split's partial sums cost a shared-memory round) that give
    // about two waves of 8-warp blocks at 3 blocks per SM; no more than the channel tiles. First
    // within a block (up to its 8 warps), then across blocks (copies of Q, where the workspace holds
    // them): at VMamba-T stage 3, batch 1, the 16 blocks of 8 splits ran 0.03 waves and took 25.5 us
    // (Nsight Compute, docs/results/h200_ncu_v8_summary.md). Tuning and test knobs:
    // VMK_VMEANBA_SPLITS forces 1, 2, 4 or 8 splits per block, VMK_VMEANBA_BLOCK_SPLITS 1, 2, 4 or 8
    // across blocks (where the workspace holds the copies).
    const long long tiles = stats_tiles(B, L), target = 2LL * 3 * kStatsWarps * dev.sms;
    const int ctiles = (D + 7) / 8, max_bsplits = (int)stats_copies(a);
    int splits = 1, bsplits = 1;
    while (splits < kStatsWarps && 2 * splits <= ctiles && tiles * splits < target) splits *= 2;
    while (bsplits < max_bsplits && 2 * splits * bsplits <= ctiles && tiles * splits * bsplits < target) bsplits *= 2;
    splits = split_knob("VMK_VMEANBA_SPLITS", kStatsWarps, splits);
    bsplits = split_knob("VMK_VMEANBA_BLOCK_SPLITS", max_bsplits, bsplits);
    const int bsplit_log2 = __builtin_ctz((unsigned)bsplits);
    const StatsParams sp{xt, xdbl, a->dt_projs_weight, a->dt_projs_bias, A2, Q, D, H, W, N, R, cols.Cp, variant, splits,
                         bsplit_log2, a->A_logs};
    // The statistics' form (StatsForm): the folded form for d_state 1 (A2 folded into the statistics
    // where the block's rows fit kFoldedA2Bytes, else the table launch), v9's for more states. In the
    // sixth session's device A/B (H200, our builds only) the folded form was faster at d_state 1 at
    // batch 128 in both dtypes except at VMamba-T stage 3 float32 and VMamba-B stage 3 float16; at
    // d_state 16 it was much slower at batch 1 and mixed at batch 128. Knob: VMK_VMEANBA_STATS=new |
    // table (the new accesses with the table launch) | v9 forces a form; VMK_VMEANBA_POLY_EXP=0, 2 or
    // 4 (else 2): the new forms' states of 16 whose exponentials run on the FMA pipe (exp2_fma).
    const char* form_env = getenv("VMK_VMEANBA_STATS");
    StatsForm form = N == 1 ? kStatsFolded : kStatsV9;
    if (form_env && !strcmp(form_env, "v9")) form = kStatsV9;
    if (form_env && !strcmp(form_env, "new")) form = kStatsFolded;
    if (form_env && !strcmp(form_env, "table")) form = kStatsTable;
    if (form == kStatsFolded && folded_a2_floats(sp, N == 1 ? 1 : kMaxDState) * sizeof(float) > kFoldedA2Bytes)
        form = kStatsTable;
    const char* poly_env = getenv("VMK_VMEANBA_POLY_EXP");
    const int poly_want = poly_env ? atoi(poly_env) : 2;
    const int poly = poly_want == 0 || poly_want == 4 ? poly_want : 2;
    // each variant's table only: A2 for the statistics' exps (variants 0/1, unless folded), the mean
    // of A (variant 2)
    const int rows = kDirs * D;
    if (variant == 2) {
        vmeanba_a_mean_kernel<<<1, 32 * N, 0, stream>>>(a->A_logs, rows, N, A_mean);
        if (launch_status() != VMK_OK) return VMK_ERR_CUDA;
    } else if (form != kStatsFolded) {
        const int tblocks = std::min((rows * a2_stride(N) + 255) / 256, 1024);
        vmeanba_a2_kernel<<<tblocks, 256, 0, stream>>>(a->A_logs, rows, N, A2);
        if (launch_status() != VMK_OK) return VMK_ERR_CUDA;
    }
    st = N == 1 ? launch_stats_dt<T, 1>(sp, B, form, poly, stream)
                : launch_stats_dt<T, kMaxDState>(sp, B, form, poly, stream);
    if (st != VMK_OK) return st;
    // Q's copies (channel splits across blocks): v9 adds them in their own launch, the new forms in
    // the reduced scan's reads (the same sums)
    const size_t copy_stride = (size_t)B * kDirs * vmeanba_slots(N) * L;
    const bool copies_on_read = form != kStatsV9 && bsplits > 1;
    if (bsplits > 1 && !copies_on_read) {
        const size_t n = copy_stride;
        vmeanba_sum_copies_kernel<<<(unsigned)std::min<size_t>((n + 255) / 256, 1024), 256, 0, stream>>>(Q, n, bsplits);
        if (launch_status() != VMK_OK) return VMK_ERR_CUDA;
    }

    const int groups = variant == 1 ? kDirs : 1;
    // d_state 1 stages its coefficients where 3 L floats fit a block's shared memory
    const size_t staged = (size_t)3 * L * sizeof(float);
    auto reduced = copies_on_read ? vmeanba_reduced_scan_kernel<1, true, true> : vmeanba_reduced_scan_kernel<1, true>;
    const bool stage = N == 1 && allow_smem(reduced, staged);
    if (!stage)
        reduced = copies_on_read ? (N == 1 ? vmeanba_reduced_scan_kernel<1, false, true>
                                           : vmeanba_reduced_scan_kernel<kMaxDState, false, true>)
                                 : (N == 1 ? vmeanba_reduced_scan_kernel<1, false>
                                           : vmeanba_reduced_scan_kernel<kMaxDState, false>);
    reduced<<<dim3(groups, B), kReducedThreads, stage ? staged : 0, stream>>>(Q, xdbl, A_mean, D, H, W, cols, variant,
                                                                            ym, copy_stride, bsplits);
    if (launch_status() != VMK_OK) return VMK_ERR_CUDA;

    return launch_merge(static_cast<const T*>(a->x), a->Ds, ym, groups, B, D, H, W, static_cast<T*>(a->y), stream);
}

}  // namespace

size_t vmeanba_workspace_bytes(const vmk_ss2d_args_t* a) { return vmeanba_layout(a).total; }

vmk_status_t vmeanba_run(const vmk_ss2d_args_t* a, int variant, void* ws, cudaStream_t stream, const DeviceInfo& dev)
{
    const long long L = (long long)a->height * a->width;
    if (L * xdbl_cols(a->dt_rank, a->d_state).Cp >= (1LL << 31) || L * a->dim >= (1LL << 31))
        return VMK_ERR_UNSUPPORTED;  // the prep's 32-bit offsets within one image
    return a->dtype == VMK_FLOAT16 ? vmeanba_launch<__half>(a, variant, ws, stream, dev)
                                   : vmeanba_launch<float>(a, variant, ws, stream, dev);
}

}  // namespace vmk
