// SS2DScan, decomposed from its bounds (docs/KERNELS.md, "v5"): three launches.
//   1. prep: per run of 64 pixels of one image, x_dbl = W_x[k] @ x for all four directions (a
//      pixel's projection does not depend on the direction's order), stored at each direction's
//      own sequence index, [b][k][t][c], so that a scan block stages one contiguous slab; and x
//      itself channels-last, [b][p][d], so that a warp whose lanes are 32 channels reads one
//      coalesced line per step in every direction.
//   2. scan: one block per (image, direction, channel groups); lanes = channels, so x_dbl is a
//      shared-memory broadcast and W_dt[k, d, :] lives in registers. The only loop-carried
//      dependency is h = a * h + b; everything else of a step is independent work.
//      Long sequences with few rows (small batch, early stages) are cut into S chunk slots of
//      T steps per super-chunk: each warp scans its chunk from zero in registers, the block
//      chains the S chunk summaries through shared memory (h_out = P * h_in + h_end) and every
//      thread fixes its T outputs up, y = C * (h_local + P_local * h_in): no step is recomputed.
//      Each direction's y goes to a float32 workspace at its pixel's place, channels-last.
//   3. merge: y[b, d, p] = sum_k y_k[b, p, d] + (sum_k Ds[k, d]) x[b, d, p], transposed back
//      through a shared-memory tile, in a fixed order: deterministic, no atomics.
#include "common.cuh"

#include <stdlib.h>

#include <type_traits>

namespace vmk {
namespace {

constexpr int kPrepPx = 64;        // pixels per prep block: a run of the row-major order
constexpr int kPrepThreads = 256;  // 16 row groups x 16 pixel groups, 4 pixels per thread
constexpr int kPrepK = 32;         // input channels per tile
constexpr int kSteps = 16;         // T: steps per thread per super-chunk
constexpr int kWindowSub = 4;      // unchunked scans stage 4 * T steps of x_dbl at a time
constexpr int kMergeThreads = 256;

// W_dt rows up to 64 live in registers (dt_rank of every released model is ceil(D / 16) <= 64:
// 6/12/24/48 for VMamba-T/S, 8/16/32/64 for VMamba-B).
inline int rank_regs(int R) { return R <= 8 ? 8 : R <= 16 ? 16 : R <= 32 ? 32 : R <= 48 ? 48 : R <= 64 ? 64 : 0; }

// x_dbl row stride: C = R + 2N rounded up to a float4, and at least the register tile, whose dot
// product reads whole tiles (the extra columns are B, C and zero padding, against zero weights).
inline int xdbl_stride(int R, int N)
{
    const int c4 = (R + 2 * N + 3) / 4 * 4, rr = rank_regs(R);
    return rr > c4 ? rr : c4;
}

// Per-direction partial outputs: float32 for float32 I/O; float16 for float16 I/O (each partial
// is rounded once, about as much as the output itself; measured in tests/test_kernels_gpu.py).
template <typename T> struct Partial { using type = float; };
template <> struct Partial<__half> { using type = __half; };

struct Ss2dLayout {
    size_t xt, xdbl, ys, total;
};

Ss2dLayout ss2d_layout(const vmk_ss2d_args_t* a)
{
    const size_t L = (size_t)a->height * a->width, B = a->batch, D = a->dim;
    const size_t esz = a->dtype == VMK_FLOAT16 ? sizeof(__half) : sizeof(float);
    const size_t Cp = xdbl_stride(a->dt_rank, a->d_state);
    Ss2dLayout w;
    w.xt = 0;
    w.xdbl = align_up(B * L * D * esz);
    w.ys = align_up(w.xdbl + B * kDirs * L * Cp * sizeof(float));
    w.total = align_up(w.ys + B * kDirs * L * D * esz);
    return w;
}

// ------------------------------------------------------------------------------------------------
// 1. prep: a tiled SIMT GEMM per image, x_dbl[m, p] = sum_d W_x[m, d] x[d, p] for m = k * Cp + c
// (rows of all four directions at once), block tile BM rows x 64 pixels, 32 channels per step,
// 4 x (BM / 16) outputs per thread. The blocks of the first row tile also write x channels-last.
// N consecutive shared-memory floats into registers: one 16-byte load when N is 4 (the run is
// 16-byte aligned there), scalar loads otherwise.
template <int N>
__device__ __forceinline__ void load_run(const float* src, float* dst)
{
    if (N == 4) {
        const float4 v = *reinterpret_cast<const float4*>(src);
        dst[0] = v.x; dst[N > 1 ? 1 : 0] = v.y; dst[N > 2 ? 2 : 0] = v.z; dst[N > 3 ? 3 : 0] = v.w;
    } else {
#pragma unroll
        for (int q = 0; q < N; ++q) dst[q] = src[q];
    }
}

template <typename T, int BM, int BN>
__global__ void __launch_bounds__(kPrepThreads) ss2d_prep_kernel(
    const T* __restrict__ x, const T* __restrict__ wx, int D, int H, int W, int C, int Cp,
    T* __restrict__ xt, float* __restrict__ xdbl)
{
    constexpr int TM = BM / 16, TN = BN / 16;
    __shared__ __align__(16) float xs[kPrepK][BN + 4];
    __shared__ __align__(16) float ws[kPrepK][BM + 4];
    __shared__ float out_s[BM][BN + 1];
    __shared__ int seq_s[kDirs][BN];
    const int b = blockIdx.z;
    const int L = H * W;
    const int p0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
    const int npx = min(BN, L - p0);
    const int M = kDirs * Cp;
    const int tid = threadIdx.x, tn = tid & 15, tm = tid >> 4;
    const T* xb = x + (size_t)b * D * L;
    const bool vec = npx == BN && (L * sizeof(T)) % 16 == 0;
    for (int e = tid; e < kDirs * BN; e += kPrepThreads) {  // each direction's sequence index of the block's pixels
        const int k = e / BN, pp = e % BN, p = p0 + pp;
        seq_s[k][pp] = pp < npx ? seq_index(k, p / W, p % W, H, W) : 0;
    }
    float acc[TM][TN];
#pragma unroll
    for (int a = 0; a < TM; ++a)
#pragma unroll
        for (int q = 0; q < TN; ++q) acc[a][q] = 0.f;
    for (int d0 = 0; d0 < D; d0 += kPrepK) {
        if (vec) {  // 16-byte loads: a full tile of an image whose rows of L elements stay aligned
            constexpr int V = 16 / sizeof(T), PER_ROW = BN / V;
            for (int e = tid; e < kPrepK * PER_ROW; e += kPrepThreads) {
                const int dd = e / PER_ROW, pv = (e % PER_ROW) * V;
                float v[V];
                if (d0 + dd < D) {
                    const uint4 raw = *reinterpret_cast<const uint4*>(xb + (size_t)(d0 + dd) * L + p0 + pv);
                    const T* el = reinterpret_cast<const T*>(&raw);
#pragma unroll
                    for (int q = 0; q < V; ++q) v[q] = to_f32(el[q]);
                } else {
#pragma unroll
                    for (int q = 0; q < V; ++q) v[q] = 0.f;
                }
#pragma unroll
                for (int q = 0; q < V; q += 4)
                    *reinterpret_cast<float4*>(&xs[dd][pv + q]) = make_float4(v[q], v[q + 1], v[q + 2], v[q + 3]);
            }
        } else {
            for (int e = tid; e < kPrepK * BN; e += kPrepThreads) {
                const int dd = e / BN, pp = e % BN;
                xs[dd][pp] = (d0 + dd < D && pp < npx) ? to_f32(xb[(size_t)(d0 + dd) * L + p0 + pp]) : 0.f;
            }
        }
        for (int e = tid; e < BM * kPrepK; e += kPrepThreads) {
            const int mm = e >> 5, dd = e & 31;
            const int m = m0 + mm;
            const int k = (m >= Cp) + (m >= 2 * Cp) + (m >= 3 * Cp), c = m - k * Cp;
            ws[dd][mm] = (m < M && c < C && d0 + dd < D) ? to_f32(wx[((size_t)k * C + c) * D + d0 + dd]) : 0.f;
        }
        __syncthreads();
        if (blockIdx.y == 0) {  // channels-last copy of x, coalesced along channels
            for (int e = tid; e < kPrepK * BN; e += kPrepThreads) {
                const int pp = e >> 5, dd = e & 31;
                if (pp < npx && d0 + dd < D) xt[((size_t)b * L + p0 + pp) * D + d0 + dd] = from_f32<T>(xs[dd][pp]);
            }
        }
#pragma unroll 8
        for (int dd = 0; dd < kPrepK; ++dd) {
            float xv[TN], wv[TM];
            load_run<TN>(&xs[dd][tn * TN], xv);
            load_run<TM>(&ws[dd][tm * TM], wv);
#pragma unroll
            for (int a = 0; a < TM; ++a)
#pragma unroll
                for (int q = 0; q < TN; ++q) acc[a][q] = fmaf(wv[a], xv[q], acc[a][q]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int a = 0; a < TM; ++a)
#pragma unroll
        for (int q = 0; q < TN; ++q) out_s[tm * TM + a][tn * TN + q] = acc[a][q];
    __syncthreads();
    // each (pixel, direction) row of x_dbl is Cp contiguous floats: m runs fastest
    const int mcount = min(BM, M - m0);
    for (int e = tid; e < BM * BN; e += kPrepThreads) {
        const int mm = e % BM, pp = e / BM;
        if (pp >= npx || mm >= mcount) continue;
        const int m = m0 + mm;
        const int k = (m >= Cp) + (m >= 2 * Cp) + (m >= 3 * Cp), c = m - k * Cp;
        xdbl[(((size_t)b * kDirs + k) * L + seq_s[k][pp]) * Cp + c] = out_s[mm][pp];
    }
}

// ------------------------------------------------------------------------------------------------
// 2. scan
struct ScanParams {
    const void* xt;        // [B][L][D] dtype
    const float* xdbl;     // [B][4][L][Cp]
    const void* wdt;       // [4][D][R] dtype
    const float* dt_bias;  // [4][D]
    const float* A_logs;   // [4 D][N]
    void* ys;              // [B][4][L][D] Partial<dtype>
    int D, H, W, N, R, Cp;
    int S, GW, ngroups;    // chunk slots, channel groups (warps) per block, blocks along channels
};

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

// Block size limit: 512 threads only where the registers allow (chunked d_state 1, tiles <= 16).
__host__ __device__ constexpr int scan_threads_max(bool chunked, int rreg, int nmax)
{
    return chunked && nmax == 1 && rreg > 0 && rreg <= 16 ? 512 : 256;
}

// dt = bias + W_dt[r] . dt_low for one staged x_dbl row (register tile: no guards; see xdbl_stride).
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

// One step of the selective scan from state h (N states) with readout: delta = softplus(dt),
// h = exp(delta A) h + delta u B, returns y = C . h.
template <typename T, int NMAX, int RREG>
__device__ __forceinline__ float scan_step(const float* row, float u, const float* wdt, const T* wdt_g, float bias,
                                           const float* A2, int R, int N, float* h)
{
    const float delta = softplus_f32(dt_of<T, RREG>(row, wdt, wdt_g, bias, R));
    const float du = delta * u;
    float y = 0.f;
#pragma unroll
    for (int n = 0; n < NMAX; ++n) {
        if (NMAX == 1 || n < N) {
            h[n] = fmaf(fast_exp2(delta * A2[n]), h[n], du * row[R + n]);
            y = fmaf(row[R + N + n], h[n], y);
        }
    }
    return y;
}

// One thread's T steps of a chunk slot (d_state 1) from a zero state: local states and decays.
// FULL: every step lies inside the sequence (all windows but the last), so nothing is guarded.
template <typename T, int RREG, bool FULL>
__device__ __forceinline__ void chunk_local(const float* xd_s, int Cp, int R, int s0, int cnt, const float* u,
                                            const float* wdt, const T* wdt_g, float bias, float A2,
                                            float* hl, float* Pl, float& h, float& P)
{
    h = 0.f;
    P = 1.f;
#pragma unroll
    for (int q = 0; q < kSteps; ++q) {
        const float* row = xd_s + (s0 + q) * Cp;
        const float delta = softplus_f32(dt_of<T, RREG>(row, wdt, wdt_g, bias, R));
        float a = fast_exp2(delta * A2), bu = delta * u[q] * row[R];
        if (!FULL && s0 + q >= cnt) { a = 1.f; bu = 0.f; }
        h = fmaf(a, h, bu);
        P *= a;
        hl[q] = h;
        Pl[q] = P;
    }
}

// T steps of an unchunked scan from `carry`, and the prefetch of the next T inputs into unext.
// FULL: the T steps and the T prefetched ones all lie inside the sequence (no guards).
template <typename T, int NMAX, int RREG, bool FULL>
__device__ __forceinline__ void unchunked_steps(const float* xd_s, const int* off_s, int Cp, int R, int N, int s0,
                                                int cnt, int rest, const T* xl, typename Partial<T>::type* yl,
                                                bool live, const float* wdt, const T* wdt_g, float bias,
                                                const float* A2, float* carry, float* unext)
{
    using PT = typename Partial<T>::type;
    float u[kSteps];
#pragma unroll
    for (int q = 0; q < kSteps; ++q) u[q] = unext[q];
#pragma unroll
    for (int q = 0; q < kSteps; ++q)
        unext[q] = (FULL || s0 + kSteps + q < rest) ? to_f32(xl[off_s[s0 + kSteps + q]]) : 0.f;
#pragma unroll
    for (int q = 0; q < kSteps; ++q) {
        const float y = scan_step<T, NMAX, RREG>(xd_s + (s0 + q) * Cp, u[q], wdt, wdt_g, bias, A2, R, N, carry);
        // steps past the end only occur in the last window; their state is never used
        const PT yv = from_f32<PT>(y);
        if (live && (FULL || s0 + q < cnt)) yl[off_s[s0 + q]] = yv;
    }
}

template <typename T, int NMAX, int RREG, bool CHUNKED>
__global__ void __launch_bounds__(scan_threads_max(CHUNKED, RREG, NMAX)) ss2d_chunk_scan_kernel(ScanParams p)
{
    using PT = typename Partial<T>::type;
    extern __shared__ __align__(16) float smem[];
    const int S = CHUNKED ? p.S : 1;
    const int k = blockIdx.x & 3, gb = blockIdx.x >> 2, b = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int slot = CHUNKED ? warp % S : 0;
    const int gw = CHUNKED ? warp / S : warp;
    const int d = (gb * p.GW + gw) * 32 + lane;
    const bool live = d < p.D;
    const int dc = live ? d : p.D - 1;  // dead lanes compute on a real channel and store nothing
    const int H = p.H, W = p.W, L = H * W, N = p.N, R = p.R, Cp = p.Cp;
    const int window = CHUNKED ? S * kSteps : kWindowSub * kSteps;
    float* xd_s = smem;                        // [window][Cp]
    int* off_s = reinterpret_cast<int*>(xd_s + (size_t)window * Cp);  // [window + T] pixel offsets
    // CHUNKED chunk summaries: [GW][S][32] x (P, h) for d_state 1, x (sum of delta, h[N]) otherwise
    float* sum_s = reinterpret_cast<float*>(off_s + window + kSteps);

    const int r = k * p.D + dc;
    float A2[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; ++n) A2[n] = n < N ? -expf(p.A_logs[(size_t)r * N + n]) * kLog2e : 0.f;
    const float bias = p.dt_bias[r];
    constexpr int RP = RREG > 0 ? RREG : 1;
    const T* wdt_g = static_cast<const T*>(p.wdt) + (size_t)r * R;
    float wdt[RP];
#pragma unroll
    for (int q = 0; q < RP; ++q) wdt[q] = (RREG > 0 && q < R) ? to_f32(wdt_g[q]) : 0.f;

    // 32-bit element offsets within one image's [L][D] plane (checked on launch)
    const T* xtb = static_cast<const T*>(p.xt) + (size_t)b * L * p.D + dc;
    const float* xdb = p.xdbl + ((size_t)b * kDirs + k) * L * Cp;
    PT* ysb = static_cast<PT*>(p.ys) + ((size_t)b * kDirs + k) * L * p.D + dc;
    const T* xl = xtb;
    PT* yl = ysb;
    Walk w;
    w.init(k, H, W, p.D);

    float carry[NMAX];  // state entering the current window (all slots of a channel hold the same)
#pragma unroll
    for (int n = 0; n < NMAX; ++n) carry[n] = 0.f;
    float unext[CHUNKED ? 1 : kSteps];  // unchunked: u of the next T steps, loaded ahead
    if (!CHUNKED) {
        w.start(k, 0, H, W, p.D);
#pragma unroll
        for (int q = 0; q < (CHUNKED ? 1 : kSteps); ++q) {
            unext[q] = q < L ? to_f32(xtb[w.off]) : 0.f;
            w.next();
        }
    }

    for (int t0 = 0; t0 < L; t0 += window) {
        const int cnt = min(window, L - t0);
        __syncthreads();  // the previous window's readers are done
        {
            const float4* src = reinterpret_cast<const float4*>(xdb + (size_t)t0 * Cp);
            float4* dst = reinterpret_cast<float4*>(xd_s);
            const int n4 = cnt * Cp / 4;
            for (int e = threadIdx.x; e < n4; e += blockDim.x) dst[e] = src[e];
            // offsets of the window's steps and of the T steps after it (the unchunked prefetch)
            for (int e = threadIdx.x; e < window + kSteps; e += blockDim.x) {
                const int t = t0 + e;
                int o = 0;
                if (t < L) {
                    Walk at;
                    at.init(k, H, W, p.D);
                    at.start(k, t, H, W, p.D);
                    o = at.off;
                }
                off_s[e] = o;
            }
        }
        __syncthreads();

        if (CHUNKED && NMAX == 1) {
            const int s0 = slot * kSteps;  // this thread's chunk within the window
            const bool full = s0 + kSteps <= cnt;
            float u[kSteps];
#pragma unroll
            for (int q = 0; q < kSteps; ++q) u[q] = (full || s0 + q < cnt) ? to_f32(xtb[off_s[s0 + q]]) : 0.f;
            float h, P, hl[kSteps], Pl[kSteps];
            if (full) chunk_local<T, RREG, true>(xd_s, Cp, R, s0, cnt, u, wdt, wdt_g, bias, A2[0], hl, Pl, h, P);
            else chunk_local<T, RREG, false>(xd_s, Cp, R, s0, cnt, u, wdt, wdt_g, bias, A2[0], hl, Pl, h, P);
            float* mine = sum_s + ((size_t)(gw * S + slot) * 32 + lane) * 2;
            mine[0] = P;
            mine[1] = h;
            __syncthreads();
            const float* chain = sum_s + (size_t)gw * S * 64 + lane * 2;
            float hin = carry[0], c = carry[0];
            for (int s2 = 0; s2 < S; ++s2) {
                if (s2 == slot) hin = c;
                c = fmaf(chain[s2 * 64], c, chain[s2 * 64 + 1]);
            }
            carry[0] = c;
#pragma unroll
            for (int q = 0; q < kSteps; ++q) {
                const PT yv = from_f32<PT>(xd_s[(s0 + q) * Cp + R + 1] * fmaf(Pl[q], hin, hl[q]));
                if (live && (full || s0 + q < cnt)) ysb[off_s[s0 + q]] = yv;
            }
        } else if (CHUNKED) {
            // d_state > 1: N local states per step do not fit in registers, so each slot scans its
            // T steps twice: from zero for its summary (end state, and the sum of delta, whose
            // exp2(A2 * sum) is the chunk's decay), then from its true incoming state with readout.
            const int s0 = slot * kSteps;
            float u[kSteps];
#pragma unroll
            for (int q = 0; q < kSteps; ++q) u[q] = s0 + q < cnt ? to_f32(xtb[off_s[s0 + q]]) : 0.f;
            float h[NMAX], dsum = 0.f;
#pragma unroll
            for (int n = 0; n < NMAX; ++n) h[n] = 0.f;
#pragma unroll
            for (int q = 0; q < kSteps; ++q) {
                if (s0 + q >= cnt) break;  // uniform per warp: the slot's steps past the end
                const float* row = xd_s + (s0 + q) * Cp;
                const float delta = softplus_f32(dt_of<T, RREG>(row, wdt, wdt_g, bias, R));
                const float du = delta * u[q];
                dsum += delta;
#pragma unroll
                for (int n = 0; n < NMAX; ++n)
                    if (n < N) h[n] = fmaf(fast_exp2(delta * A2[n]), h[n], du * row[R + n]);
            }
            const int stride = NMAX + 1;
            float* mine = sum_s + ((size_t)(gw * S + slot) * 32 + lane) * stride;
            mine[0] = dsum;
#pragma unroll
            for (int n = 0; n < NMAX; ++n) mine[1 + n] = h[n];
            __syncthreads();
            const float* chain = sum_s + ((size_t)gw * S * 32 + lane) * stride;
            float hin[NMAX];
#pragma unroll
            for (int n = 0; n < NMAX; ++n) hin[n] = carry[n];
            for (int s2 = 0; s2 < S; ++s2) {
                if (s2 == slot) {
#pragma unroll
                    for (int n = 0; n < NMAX; ++n) hin[n] = carry[n];
                }
                const float* e = chain + (size_t)s2 * 32 * stride;
#pragma unroll
                for (int n = 0; n < NMAX; ++n)
                    if (n < N) carry[n] = fmaf(fast_exp2(A2[n] * e[0]), carry[n], e[1 + n]);
            }
#pragma unroll
            for (int q = 0; q < kSteps; ++q) {
                if (s0 + q >= cnt) break;
                const float y = scan_step<T, NMAX, RREG>(xd_s + (s0 + q) * Cp, u[q], wdt, wdt_g, bias, A2, R, N, hin);
                const PT yv = from_f32<PT>(y);
                if (live) ysb[off_s[s0 + q]] = yv;
            }
        } else {
            // u of the next T steps is loaded while the current T steps compute (the loads' latency
            // is the step loop's only long wait); their offsets are in the table's tail. Sub-chunks
            // whose steps and prefetch all lie inside the sequence run without any guard.
            for (int s0 = 0; s0 < cnt; s0 += kSteps) {
                if (t0 + s0 + 2 * kSteps <= L)
                    unchunked_steps<T, NMAX, RREG, true>(xd_s, off_s, Cp, R, N, s0, cnt, L - t0, xl, yl, live, wdt,
                                                         wdt_g, bias, A2, carry, unext);
                else
                    unchunked_steps<T, NMAX, RREG, false>(xd_s, off_s, Cp, R, N, s0, cnt, L - t0, xl, yl, live, wdt,
                                                          wdt_g, bias, A2, carry, unext);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// 3. merge: a tile of 64 pixels x 32 channels. The four partials are read 16 bytes per lane (8 or 4
// channels; D a multiple of that) and the tile is written along pixels, two per lane (L even).
// Other shapes take the scalar path of the same kernel.
template <typename T, bool VEC>
__global__ void __launch_bounds__(kMergeThreads) ss2d_merge_kernel(const typename Partial<T>::type* __restrict__ ys,
                                                         const T* __restrict__ x,
                                                         const float* __restrict__ Ds, int D, int L,
                                                         T* __restrict__ y)
{
    using PT = typename Partial<T>::type;
    constexpr int TP = 64, TC = 32;
    __shared__ float tile[TP][TC + 1];
    const int b = blockIdx.z, p0 = blockIdx.x * TP, d0 = blockIdx.y * TC;
    const int tid = threadIdx.x;
    const size_t ks = (size_t)L * D;
    const PT* yb = ys + (size_t)b * kDirs * ks;
    if (VEC) {
        constexpr int V = 16 / sizeof(PT), LANES = TC / V, ROWS = kMergeThreads / LANES;
        const int cv = (tid % LANES) * V;
        for (int pp = tid / LANES; pp < TP; pp += ROWS) {
            const int p = p0 + pp, d = d0 + cv;
            float sum[V];
#pragma unroll
            for (int q = 0; q < V; ++q) sum[q] = 0.f;
            if (p < L && d < D) {
                const PT* q0 = yb + (size_t)p * D + d;
                uint4 raw[kDirs];
#pragma unroll
                for (int k = 0; k < kDirs; ++k) raw[k] = *reinterpret_cast<const uint4*>(q0 + k * ks);
#pragma unroll
                for (int q = 0; q < V; ++q) {
                    const float v0 = to_f32(reinterpret_cast<const PT*>(&raw[0])[q]);
                    const float v1 = to_f32(reinterpret_cast<const PT*>(&raw[1])[q]);
                    const float v2 = to_f32(reinterpret_cast<const PT*>(&raw[2])[q]);
                    const float v3 = to_f32(reinterpret_cast<const PT*>(&raw[3])[q]);
                    sum[q] = (v0 + v2) + (v1 + v3);
                }
            }
#pragma unroll
            for (int q = 0; q < V; ++q) tile[pp][cv + q] = sum[q];
        }
    } else {
        const int cc = tid & 31;
        for (int pp = tid >> 5; pp < TP; pp += 8) {
            const int p = p0 + pp, d = d0 + cc;
            float sv = 0.f;
            if (p < L && d < D) {
                const PT* q = yb + (size_t)p * D + d;
                sv = (to_f32(q[0]) + to_f32(q[2 * ks])) + (to_f32(q[ks]) + to_f32(q[3 * ks]));
            }
            tile[pp][cc] = sv;
        }
    }
    __syncthreads();
    const int tx = tid & 31, ty = tid >> 5;
    for (int dd = ty; dd < TC; dd += 8) {  // lanes over pixels: coalesced in x and y
        const int d = d0 + dd;
        if (d >= D) break;
        const float dsum = (Ds[d] + Ds[D + d]) + (Ds[2 * D + d] + Ds[3 * D + d]);
        const size_t row = ((size_t)b * D + d) * L;
        const int p = p0 + 2 * tx;
        if ((L & 1) == 0 && p + 1 < L) {  // two pixels per lane as one 4- or 8-byte access
            using T2 = typename std::conditional<sizeof(T) == 2, __half2, float2>::type;
            const T2 in = *reinterpret_cast<const T2*>(x + row + p);
            const T* iv = reinterpret_cast<const T*>(&in);
            T2 out;
            T* ov = reinterpret_cast<T*>(&out);
            ov[0] = from_f32<T>(fmaf(dsum, to_f32(iv[0]), tile[2 * tx][dd]));
            ov[1] = from_f32<T>(fmaf(dsum, to_f32(iv[1]), tile[2 * tx + 1][dd]));
            *reinterpret_cast<T2*>(y + row + p) = out;
        } else {
            for (int q = 0; q < 2; ++q) {
                if (p + q < L) {
                    const size_t o = row + p + q;
                    y[o] = from_f32<T>(fmaf(dsum, to_f32(x[o]), tile[2 * tx + q][dd]));
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// host

template <typename T, int NMAX, int RREG, bool CHUNKED>
vmk_status_t launch_scan(const ScanParams& p, int B, cudaStream_t stream)
{
    auto kernel = ss2d_chunk_scan_kernel<T, NMAX, RREG, CHUNKED>;
    const int S = CHUNKED ? p.S : 1;
    const int window = CHUNKED ? S * kSteps : kWindowSub * kSteps;
    const size_t sums = CHUNKED ? (size_t)p.GW * S * 32 * (NMAX == 1 ? 2 : NMAX + 1) : 0;
    const size_t smem = ((size_t)window * p.Cp + window + kSteps + sums) * sizeof(float);
    if (!allow_smem(kernel, smem)) return VMK_ERR_CUDA;
    const int threads = 32 * p.GW * S;
    if (threads > scan_threads_max(CHUNKED, RREG, NMAX)) return VMK_ERR_UNSUPPORTED;
    kernel<<<dim3(kDirs * p.ngroups, B), threads, smem, stream>>>(p);
    return launch_status();
}

template <typename T, int NMAX, bool CHUNKED>
vmk_status_t launch_scan_rank(const ScanParams& p, int B, cudaStream_t stream)
{
    switch (rank_regs(p.R)) {
    case 8: return launch_scan<T, NMAX, 8, CHUNKED>(p, B, stream);
    case 16: return launch_scan<T, NMAX, 16, CHUNKED>(p, B, stream);
    case 32: return launch_scan<T, NMAX, 32, CHUNKED>(p, B, stream);
    case 48: return launch_scan<T, NMAX, 48, CHUNKED>(p, B, stream);
    case 64: return launch_scan<T, NMAX, 64, CHUNKED>(p, B, stream);
    default: return launch_scan<T, NMAX, 0, CHUNKED>(p, B, stream);
    }
}

template <typename T>
vmk_status_t ss2d_launch(const vmk_ss2d_args_t* a, void* ws, cudaStream_t stream, const DeviceInfo& dev)
{
    const int B = a->batch, D = a->dim, H = a->height, W = a->width, N = a->d_state, R = a->dt_rank;
    const int L = H * W;
    const int C = R + 2 * N, Cp = xdbl_stride(R, N);
    const Ss2dLayout lay = ss2d_layout(a);
    char* base = static_cast<char*>(ws);
    T* xt = reinterpret_cast<T*>(base + lay.xt);
    float* xdbl = reinterpret_cast<float*>(base + lay.xdbl);
    auto* ys = reinterpret_cast<typename Partial<T>::type*>(base + lay.ys);

    const int M = kDirs * Cp;
    const T* xin = static_cast<const T*>(a->x);
    const T* wx = static_cast<const T*>(a->x_proj_weight);
    const long long big_blocks = (long long)((L + kPrepPx - 1) / kPrepPx) * ((M + 63) / 64) * B;
    if (big_blocks < 2LL * dev.sms)  // few images, short sequences: small tiles for parallelism
        ss2d_prep_kernel<T, 16, 16><<<dim3((L + 15) / 16, (M + 15) / 16, B), kPrepThreads, 0, stream>>>(
            xin, wx, D, H, W, C, Cp, xt, xdbl);
    else if (M <= 32)
        ss2d_prep_kernel<T, 32, kPrepPx><<<dim3((L + kPrepPx - 1) / kPrepPx, 1, B), kPrepThreads, 0, stream>>>(
            xin, wx, D, H, W, C, Cp, xt, xdbl);
    else
        ss2d_prep_kernel<T, 64, kPrepPx><<<dim3((L + kPrepPx - 1) / kPrepPx, (M + 63) / 64, B), kPrepThreads, 0,
                                            stream>>>(xin, wx, D, H, W, C, Cp, xt, xdbl);
    if (launch_status() != VMK_OK) return VMK_ERR_CUDA;

    // Chunk slots only where rows are too few to keep ~4 warps per SM busy: the unchunked scan does
    // fewer instructions per step (no fix-up pass), so it wins whenever it has the parallelism
    // (measured, docs/KERNELS.md: VMamba-T stage 0 batch 128, 1536 row warps: unchunked 1.6x faster).
    const int groups32 = (D + 31) / 32;
    const long long row_warps = (long long)B * kDirs * groups32;
    // d_state > 1 chunks scan their steps twice (no room for N local states per step): even fewer.
    const int max_slots = N == 1 && rank_regs(R) > 0 && rank_regs(R) <= 16 ? 16 : 8;
    int S = 1;
    while (S < max_slots && row_warps * S < 4LL * dev.sms && 2 * S * kSteps <= L) S *= 2;
    // Tuning and test knob: VMK_SCAN_SLOTS forces the slot count (a power of two; 1 = unchunked).
    if (const char* env = getenv("VMK_SCAN_SLOTS")) {
        const int want = atoi(env);
        if (want >= 1 && want <= max_slots && (want & (want - 1)) == 0) S = want;
    }
    // Channel groups per block: the largest divisor of the group count that fits the block (no
    // dead warps), at most 8 warps unchunked.
    const int max_warps = (S > 1 ? scan_threads_max(true, rank_regs(R), N == 1 ? 1 : kMaxDState) : 256) / 32;
    int GW = 1;
    for (int g = 1; g <= groups32 && g * S <= max_warps && g * S <= 16; ++g)
        if (groups32 % g == 0) GW = g;
    ScanParams p{xt, xdbl, a->dt_projs_weight, a->dt_projs_bias, a->A_logs, ys,
                 D, H, W, N, R, Cp, S, GW, (groups32 + GW - 1) / GW};
    vmk_status_t st;
    if (N == 1) st = S > 1 ? launch_scan_rank<T, 1, true>(p, B, stream) : launch_scan_rank<T, 1, false>(p, B, stream);
    else st = S > 1 ? launch_scan_rank<T, kMaxDState, true>(p, B, stream)
                    : launch_scan_rank<T, kMaxDState, false>(p, B, stream);
    if (st != VMK_OK) return st;

    const dim3 mgrid((L + 63) / 64, (D + 31) / 32, B);
    if (D % (16 / sizeof(typename Partial<T>::type)) == 0)
        ss2d_merge_kernel<T, true><<<mgrid, kMergeThreads, 0, stream>>>(ys, static_cast<const T*>(a->x), a->Ds, D, L,
                                                             static_cast<T*>(a->y));
    else
        ss2d_merge_kernel<T, false><<<mgrid, kMergeThreads, 0, stream>>>(ys, static_cast<const T*>(a->x), a->Ds, D, L,
                                                              static_cast<T*>(a->y));
    return launch_status();
}

}  // namespace

size_t ss2d_workspace_bytes(const vmk_ss2d_args_t* a) { return ss2d_layout(a).total; }

vmk_status_t ss2d_run(const vmk_ss2d_args_t* a, void* ws, cudaStream_t stream, const DeviceInfo& dev)
{
    const long long L = (long long)a->height * a->width;
    if (L * xdbl_stride(a->dt_rank, a->d_state) >= (1LL << 31) || L * a->dim >= (1LL << 31))
        return VMK_ERR_UNSUPPORTED;  // 32-bit offsets within one image
    return a->dtype == VMK_FLOAT16 ? ss2d_launch<__half>(a, ws, stream, dev) : ss2d_launch<float>(a, ws, stream, dev);
}

}  // namespace vmk
