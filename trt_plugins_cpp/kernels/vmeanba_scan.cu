// VMeanbaScan (the literal reduced scan, METHODS.md), v4: five launches.
//   1. prep (ss2d_prep.cu, shared with SS2DScan): x_dbl = W_x[k] @ x for all four directions at each
//      direction's own sequence index, [b][k][t][Cp], and x channels-last;
//   2. tables: A * log2(e) per row and the mean of A over all rows (variant 2);
//   3. statistics: per (image, direction, sequence position) the sums over the D channels that the
//      reduced sequence needs (exp(delta A) per state and delta * u; variant 2: delta and u). No
//      loop-carried dependency: a pure map-reduce over channels. A warp owns 16 positions; dt for
//      (16 positions x 8 channels) is one tensor-core fragment (float16 I/O; CUDA cores for float32),
//      and each thread keeps the running sums of its fragment's two positions over all the warp's
//      channels, so the sum over channels costs two shuffles per value at the end, not a reduction
//      per channel;
//   4. reduced scan: one block per (image, group), a chunked two-pass block scan;
//   5. merge: y = sum over directions of the reduced output + (sum_k Ds) * x, flat over the output.
#include "ss2d_parts.cuh"

#include <stdlib.h>
#include <string.h>

namespace vmk {
namespace {

// Reduced-scan block size: each thread walks one chunk of the sequence twice, so more threads mean
// shorter dependent chains (VMamba-T stage 0: 4 steps per thread instead of 25 at 128 threads);
// 16 states hold about 4x the registers (128 threads: as many as fit without spilling).
template <int NMAX> __host__ __device__ constexpr int reduced_threads() { return NMAX == 1 ? 1024 : 128; }
constexpr int kStatsWarps = 8;       // a block: (position tiles) x (channel splits) = 8 warps
constexpr int kStatsTile = 16;       // positions per warp: the fragment's 16 rows
constexpr int kMergeThreads = 256;
constexpr int kMergeChannels = 8;    // channels per merge thread (the reduced output is read once)

// Statistics Q[b][k][slot][t] at each direction's own sequence position t, N + 1 slots:
// variants 0/1: sum_d exp(delta A)[n] in slots 0..N-1, sum_d delta * u in slot N;
// variant 2: sum_d delta in slot 0, sum_d u in slot N. B and C are read from x_dbl itself.
__host__ __device__ inline int vmeanba_slots(int N) { return N + 1; }

__global__ void vmeanba_tables_kernel(const float* __restrict__ A_logs, int rows, int N,
                                      float* __restrict__ A2, float* __restrict__ A_mean)
{
    __shared__ float part[256];
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < rows * N; e += gridDim.x * blockDim.x)
        A2[e] = -expf(A_logs[e]) * kLog2e;
    if (blockIdx.x != 0) return;
    for (int n = 0; n < N; ++n) {  // mean over all rows of A, a fixed-order tree: deterministic
        float s = 0.f;
        for (int r = threadIdx.x; r < rows; r += blockDim.x) s += -expf(A_logs[(size_t)r * N + n]);
        part[threadIdx.x] = s;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w >>= 1) {
            if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
            __syncthreads();
        }
        if (threadIdx.x == 0) A_mean[n] = part[0] / rows;
        __syncthreads();
    }
}



struct StatsParams {
    const void* xt;        // [B][L][D] dtype, channels-last (prep)
    const float* xdbl;     // [B][4][L][Cp] (prep)
    const void* wdt;       // [4][D][R] dtype
    const float* dt_bias;  // [4][D]
    const float* A2;       // [4 D][N]: A * log2(e)
    float* Q;              // [B][4][N + 1][L]
    int D, H, W, N, R, Cp, variant;
    int splits;            // channel splits per block (1, 2, 4, 8); kStatsWarps / splits position tiles
};

// dt of one thread's fragment of (16 positions x 8 channels), without the bias: v[0], v[1] at
// position g and channels 2 t2, 2 t2 + 1 of the tile, v[2], v[3] at position g + 8 (g = lane / 4,
// t2 = lane % 4: the accumulator layout of mma m16n8k16). Two sources with one interface:
//   FragMma (float16 I/O, dt_rank <= 64): (16 x R) dt_low @ (R x 8) W_dt^T on tensor cores. dt_low
//     is float32, fed as hi + lo float16 halves (two products, float32 accuracy; as DtMma); its
//     fragments are loaded once per warp, W_dt's (float16, exact) once per tile.
//   FragSimt (float32 I/O, or ranks past 64): 4 R FMAs per thread and tile on CUDA cores.
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
    // exist and R is even (every W_dt pair is one aligned 32-bit load).
    __device__ __forceinline__ void tile(const __half* wk, int c0, int D, int R, bool whole, float* v) const
    {
        const int lane = threadIdx.x & 31, g = lane >> 2, t2 = (lane & 3) * 2;
        const int ch = c0 + g;
        const bool live = ch < D;
        const __half* wr = wk + (live ? ch : 0) * R;
        auto pair = [&](int r) -> uint32_t {
            if (whole) return r < R ? __ldg(reinterpret_cast<const unsigned int*>(wr + r)) : 0u;
            if (!live || r >= R) return 0u;
            const __half zero = __float2half_rn(0.f);
            return half2_bits(__halves2half2(wr[r], r + 1 < R ? wr[r + 1] : zero));
        };
        v[0] = v[1] = v[2] = v[3] = 0.f;
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
            const uint32_t b0 = pair(kt * 16 + t2), b1 = pair(kt * 16 + t2 + 8);
            mma_16816(v, hi[kt], b0, b1);
            mma_16816(v, lo[kt], b0, b1);
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

// One channel's contribution to a position's sums (delta from dt without bias): variants 0/1 add
// exp(delta A) per state to se and delta u to s2; variant 2 (PRE) adds delta and u.
template <int NMAX, bool PRE>
__device__ __forceinline__ void add_channel(float dt, float bias, float u, const float* A2, int N, float* se, float& s2)
{
    const float delta = softplus_f32(dt + bias);
    if (PRE) {
        se[0] += delta;
        s2 += u;
        return;
    }
    s2 = fmaf(delta, u, s2);
    if (NMAX == 1) {
        se[0] += fast_exp2(delta * A2[0]);
    } else if ((N & 3) == 0) {  // rows of A2 are 16-byte aligned: N / 4 vector loads
#pragma unroll
        for (int n = 0; n < NMAX; n += 4) {
            if (n >= N) break;
            const float4 a = __ldg(reinterpret_cast<const float4*>(A2 + n));
            se[n] += fast_exp2(delta * a.x);
            se[n + 1] += fast_exp2(delta * a.y);
            se[n + 2] += fast_exp2(delta * a.z);
            se[n + 3] += fast_exp2(delta * a.w);
        }
    } else {
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
            if (n >= N) break;
            se[n] += fast_exp2(delta * __ldg(A2 + n));
        }
    }
}

// Block (position block, direction k, image b); warp w = (position tile w / splits, channel split
// w % splits). Each warp walks its split's channel tiles of 8 (tile c = split, split + splits, ...)
// over its 16 positions; each thread sums its two positions' values over its channels; at the end
// the 4 lanes of a position add theirs (2 shuffles) and the splits are added in a fixed order.
// Offsets within one image are 32-bit (checked in vmeanba_run).
template <typename T, int NMAX, bool PRE, typename Frag>
__global__ void __launch_bounds__(kStatsWarps * 32) vmeanba_stats_kernel(StatsParams p)
{
    extern __shared__ __align__(16) float smem[];
    const int k = blockIdx.y, b = blockIdx.z;
    const int H = p.H, W = p.W, L = H * W, D = p.D, N = p.N, R = p.R, Cp = p.Cp;
    const int tiles = kStatsWarps / p.splits, per_block = tiles * kStatsTile;
    const int t_block = blockIdx.x * per_block;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int ptile = warp / p.splits, split = warp % p.splits;
    const int g = lane >> 2, t2 = (lane & 3) * 2;
    float* rows_s = smem;                                          // [per_block][Cp]
    float* red_s = smem + (size_t)per_block * Cp;                  // [warps][NMAX + 1][16]

    {  // the block's x_dbl rows (zero past the sequence)
        const int cnt = min(per_block, L - t_block);
        const float4* src = reinterpret_cast<const float4*>(p.xdbl + (((size_t)b * kDirs + k) * L + t_block) * Cp);
        float4* dst = reinterpret_cast<float4*>(rows_s);
        for (int e = threadIdx.x; e < per_block * Cp / 4; e += blockDim.x)
            dst[e] = e < cnt * Cp / 4 ? src[e] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    __syncthreads();

    const int t0 = t_block + ptile * kStatsTile;
    const bool in0 = t0 + g < L, in1 = t0 + g + 8 < L;
    const T* xtb = static_cast<const T*>(p.xt) + (size_t)b * L * D;
    const T* u0 = xtb + (in0 ? seq_pixel(k, t0 + g, H, W) : 0) * D;
    const T* u1 = xtb + (in1 ? seq_pixel(k, t0 + g + 8, H, W) : 0) * D;
    const T* wk = static_cast<const T*>(p.wdt) + (size_t)k * D * R;
    const float* bias = p.dt_bias + (size_t)k * D;
    const float* A2 = p.A2 + (size_t)k * D * N;
    Frag frag;
    frag.init(rows_s + ptile * kStatsTile * Cp, Cp);

    // running sums of positions g (index 0) and g + 8 (index 1): se = sum exp(delta A) per state
    // (variant 2: sum of delta in se[.][0]), s2 = sum delta u (variant 2: sum u)
    float se[2][NMAX], s2[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int n = 0; n < NMAX; ++n) se[i][n] = 0.f;
    // whole tiles (all 8 channels, all 16 positions, D and R even: pairs of channels are aligned
    // 2-element loads) take the path without guards; only the edges of the problem take the other
    const bool whole_rows = t0 + kStatsTile <= L && (D & 1) == 0 && (R & 1) == 0;
    using T2 = typename std::conditional<sizeof(T) == 2, __half2, float2>::type;
    for (int c0 = split * 8; c0 < D; c0 += 8 * p.splits) {
        const bool whole = whole_rows && c0 + 8 <= D;
        float v[4];
        frag.tile(wk, c0, D, R, whole, v);
        const int c = c0 + t2;
        if (whole) {
            const float2 bb = __ldg(reinterpret_cast<const float2*>(bias + c));
            const T2 ua = *reinterpret_cast<const T2*>(u0 + c), ub = *reinterpret_cast<const T2*>(u1 + c);
            const T* uav = reinterpret_cast<const T*>(&ua);
            const T* ubv = reinterpret_cast<const T*>(&ub);
            const float* a0 = A2 + c * N;
            add_channel<NMAX, PRE>(v[0], bb.x, to_f32(uav[0]), a0, N, se[0], s2[0]);
            add_channel<NMAX, PRE>(v[1], bb.y, to_f32(uav[1]), a0 + N, N, se[0], s2[0]);
            add_channel<NMAX, PRE>(v[2], bb.x, to_f32(ubv[0]), a0, N, se[1], s2[1]);
            add_channel<NMAX, PRE>(v[3], bb.y, to_f32(ubv[1]), a0 + N, N, se[1], s2[1]);
        } else {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int ce = c + (e & 1), i = e >> 1;
                if (ce >= D || !(i ? in1 : in0)) continue;
                add_channel<NMAX, PRE>(v[e], bias[ce], to_f32((i ? u1 : u0)[ce]), A2 + ce * N, N, se[i], s2[i]);
            }
        }
    }
    // the 4 lanes of a position (t2 = 0..3) hold disjoint channels: add them (the same order in every lane)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
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
            for (int n = 0; n < NMAX; ++n) mine[n * kStatsTile + g + 8 * i] = se[i][n];
            mine[NMAX * kStatsTile + g + 8 * i] = s2[i];
        }
    }
    __syncthreads();
    // Q rows of the block's positions, the channel splits added in a fixed order
    const int F = vmeanba_slots(N);
    float* Qk = p.Q + ((size_t)b * kDirs + k) * F * L;
    for (int e = threadIdx.x; e < F * per_block; e += blockDim.x) {
        const int slot = e / per_block, tt = e % per_block, t = t_block + tt;
        if (t >= L) continue;
        const int pt = tt / kStatsTile, s = tt % kStatsTile;
        const int field = slot == N ? NMAX : slot;  // slot N (delta u, or u) sits after the NMAX states
        float sum = 0.f;
        for (int z = 0; z < p.splits; ++z)
            sum += red_s[((size_t)(pt * p.splits + z) * (NMAX + 1) + field) * kStatsTile + s];
        Qk[(size_t)slot * L + t] = sum;
    }
}

// The reduced sequence's (a, bu, c) at index l for group grp (variant 1: grp = direction).
template <int NMAX>
struct ReducedCoeffs {
    float a[NMAX], bu[NMAX], c[NMAX];
};

template <int NMAX>
__device__ __forceinline__ void reduced_coeffs(const float* __restrict__ Qb, const float* __restrict__ xdb,
                                               const XdblCols& cols, const float* __restrict__ A_mean, int grp,
                                               int variant, int D, size_t L, int l, ReducedCoeffs<NMAX>& rc)
{
    const int N = cols.N, F = vmeanba_slots(N);
    const float* q = Qb + l;
    auto row = [&](int k) { return xdb + ((size_t)k * L + l) * cols.Cp; };  // direction k's x_dbl at l
    if (variant == 1) {
        const float* qk = q + (size_t)grp * F * L;
        const float* xk = row(grp);
        const float du = qk[(size_t)N * L] / D;
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
            if (n < N) {
                rc.a[n] = qk[(size_t)n * L] / D;
                rc.bu[n] = xk[cols.bo + n] * du;
                rc.c[n] = xk[cols.co + n];
            }
        }
        return;
    }
    if (variant == 0) {
        float du[kDirs];
#pragma unroll
        for (int k = 0; k < kDirs; ++k) du[k] = q[((size_t)k * F + N) * L] / D;
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
            if (n < N) {
                float sa = 0.f, sb = 0.f, sc = 0.f;
#pragma unroll
                for (int k = 0; k < kDirs; ++k) {
                    sa += q[((size_t)k * F + n) * L];
                    sb = fmaf(row(k)[cols.bo + n], du[k], sb);
                    sc += row(k)[cols.co + n];
                }
                rc.a[n] = sa / (kDirs * D);
                rc.bu[n] = sb / kDirs;
                rc.c[n] = sc / kDirs;
            }
        }
        return;
    }
    float sdelta = 0.f, su = 0.f;
#pragma unroll
    for (int k = 0; k < kDirs; ++k) {
        sdelta += q[(size_t)k * F * L];
        su += q[((size_t)k * F + N) * L];
    }
    const float delta_m = sdelta / (kDirs * D), u_m = su / (kDirs * D);
#pragma unroll
    for (int n = 0; n < NMAX; ++n) {
        if (n < N) {
            float sb = 0.f, sc = 0.f;
#pragma unroll
            for (int k = 0; k < kDirs; ++k) {
                sb += row(k)[cols.bo + n];
                sc += row(k)[cols.co + n];
            }
            rc.a[n] = fast_exp2(delta_m * A_mean[n] * kLog2e);
            rc.bu[n] = delta_m * u_m * (sb / kDirs);
            rc.c[n] = sc / kDirs;
        }
    }
}

// One block per (image, group): thread t owns chunk t of the sequence; two passes with a block
// scan of the chunks' affine maps in between (h_out = a_prod * h_in + h_local).
template <int NMAX>
__global__ void __launch_bounds__(reduced_threads<NMAX>()) vmeanba_reduced_scan_kernel(
    const float* __restrict__ Q, const float* __restrict__ xdbl, const float* __restrict__ A_mean, int D, int H,
    int W, XdblCols cols, int variant, float* __restrict__ ym)
{
    constexpr int kThreads = reduced_threads<NMAX>();
    __shared__ float warp_a[kThreads / 32][NMAX], warp_h[kThreads / 32][NMAX];
    const int b = blockIdx.y, grp = blockIdx.x;
    const size_t L = (size_t)H * W;
    const int N = cols.N;
    const float* Qb = Q + (size_t)b * kDirs * vmeanba_slots(N) * L;
    const float* xdb = xdbl + (size_t)b * kDirs * L * cols.Cp;
    const int chunk = (int)((L + kThreads - 1) / kThreads);
    const int l0 = threadIdx.x * chunk;
    const int l1 = min((int)L, l0 + chunk);
    ReducedCoeffs<NMAX> rc;
    float h[NMAX], ap[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; ++n) { h[n] = 0.f; ap[n] = 1.f; }
    for (int l = l0; l < l1; ++l) {
        reduced_coeffs<NMAX>(Qb, xdb, cols, A_mean, grp, variant, D, L, l, rc);
#pragma unroll
        for (int n = 0; n < NMAX; ++n)
            if (n < N) { h[n] = fmaf(rc.a[n], h[n], rc.bu[n]); ap[n] *= rc.a[n]; }
    }
    // inclusive scan of (ap, h) over threads: combine(prev, cur) = (prev.a * cur.a, cur.a * prev.h + cur.h)
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int n = 0; n < NMAX; ++n) {
        if (n >= N) continue;
        float a = ap[n], hv = h[n];
        for (int off = 1; off < 32; off <<= 1) {
            const float pa = __shfl_up_sync(0xffffffffu, a, off);
            const float ph = __shfl_up_sync(0xffffffffu, hv, off);
            if (lane >= off) { hv = fmaf(a, ph, hv); a *= pa; }
        }
        if (lane == 31) { warp_a[warp][n] = a; warp_h[warp][n] = hv; }
        ap[n] = a;
        h[n] = hv;
    }
    __syncthreads();
    float hin[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; ++n) {
        if (n >= N) continue;
        float carry = 0.f;  // state entering this warp
        for (int w = 0; w < warp; ++w) carry = fmaf(warp_a[w][n], carry, warp_h[w][n]);
        // inclusive value of the previous lane, then apply carry
        float pa = __shfl_up_sync(0xffffffffu, ap[n], 1);
        float ph = __shfl_up_sync(0xffffffffu, h[n], 1);
        if (lane == 0) { pa = 1.f; ph = 0.f; }
        hin[n] = fmaf(pa, carry, ph);
    }
    float* y = ym + ((size_t)b * gridDim.x + grp) * L;
    for (int l = l0; l < l1; ++l) {
        reduced_coeffs<NMAX>(Qb, xdb, cols, A_mean, grp, variant, D, L, l, rc);
        float yv = 0.f;
#pragma unroll
        for (int n = 0; n < NMAX; ++n)
            if (n < N) { hin[n] = fmaf(rc.a[n], hin[n], rc.bu[n]); yv = fmaf(rc.c[n], hin[n], yv); }
        y[l] = yv;
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
    w.amean = align_up(w.a2 + (size_t)kDirs * D * N * sizeof(float));
    w.q = align_up(w.amean + N * sizeof(float));
    w.ym = align_up(w.q + B * kDirs * vmeanba_slots((int)N) * L * sizeof(float));
    w.total = align_up(w.ym + B * kDirs * L * sizeof(float));
    return w;
}

template <typename T, int NMAX, typename Frag>
vmk_status_t launch_stats(const StatsParams& p, int B, cudaStream_t stream)
{
    auto kernel = p.variant == 2 ? vmeanba_stats_kernel<T, NMAX, true, Frag> : vmeanba_stats_kernel<T, NMAX, false, Frag>;
    const int per_block = kStatsWarps / p.splits * kStatsTile, L = p.H * p.W;
    const size_t smem = ((size_t)per_block * p.Cp + (size_t)kStatsWarps * (NMAX + 1) * kStatsTile) * sizeof(float);
    if (!allow_smem(kernel, smem)) return VMK_ERR_CUDA;
    kernel<<<dim3((L + per_block - 1) / per_block, kDirs, B), kStatsWarps * 32, smem, stream>>>(p);
    return launch_status();
}

// dt on tensor cores for float16 I/O up to dt_rank 64 (unless VMK_SCAN_DT=simt), else CUDA cores.
template <typename T, int NMAX>
vmk_status_t launch_stats_dt(const StatsParams& p, int B, cudaStream_t stream)
{
    const char* dt_env = getenv("VMK_SCAN_DT");
    const bool simt = dt_env && !strcmp(dt_env, "simt");
    if constexpr (std::is_same<T, __half>::value) {
        if (!simt && p.R <= 64) {
            switch ((p.R + 15) / 16) {
            case 1: return launch_stats<T, NMAX, FragMma<1>>(p, B, stream);
            case 2: return launch_stats<T, NMAX, FragMma<2>>(p, B, stream);
            case 3: return launch_stats<T, NMAX, FragMma<3>>(p, B, stream);
            default: return launch_stats<T, NMAX, FragMma<4>>(p, B, stream);
            }
        }
    }
    return launch_stats<T, NMAX, FragSimt<T>>(p, B, stream);
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
    const int rows = kDirs * D;
    int tblocks = (rows * N + 255) / 256;
    if (tblocks > 1024) tblocks = 1024;
    vmeanba_tables_kernel<<<tblocks, 256, 0, stream>>>(a->A_logs, rows, N, A2, A_mean);
    if (launch_status() != VMK_OK) return VMK_ERR_CUDA;

    // Channel splits: the fewest (each split's partial sums cost a shared-memory round) that give
    // about two waves of 8-warp blocks at 3 blocks per SM; no more than the channel tiles.
    // Tuning and test knob: VMK_VMEANBA_SPLITS forces 1, 2, 4 or 8.
    const long long tiles = (long long)B * kDirs * ((L + kStatsTile - 1) / kStatsTile);
    const int ctiles = (D + 7) / 8;
    int splits = 1;
    while (splits < kStatsWarps && 2 * splits <= ctiles && tiles * splits < 2LL * 3 * kStatsWarps * dev.sms) splits *= 2;
    if (const char* env = getenv("VMK_VMEANBA_SPLITS")) {
        const int want = atoi(env);
        if (want == 1 || want == 2 || want == 4 || want == 8) splits = want;
    }
    const StatsParams sp{xt, xdbl, a->dt_projs_weight, a->dt_projs_bias, A2, Q, D, H, W, N, R, cols.Cp, variant, splits};
    st = N == 1 ? launch_stats_dt<T, 1>(sp, B, stream) : launch_stats_dt<T, kMaxDState>(sp, B, stream);
    if (st != VMK_OK) return st;

    const int groups = variant == 1 ? kDirs : 1;
    if (N == 1)
        vmeanba_reduced_scan_kernel<1><<<dim3(groups, B), reduced_threads<1>(), 0, stream>>>(Q, xdbl, A_mean, D, H, W, cols,
                                                                                        variant, ym);
    else
        vmeanba_reduced_scan_kernel<kMaxDState><<<dim3(groups, B), reduced_threads<kMaxDState>(), 0, stream>>>(
            Q, xdbl, A_mean, D, H, W, cols, variant, ym);
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
