// CUDA kernels behind the vmamba.trt custom ops. C ABI: vmamba_kernels.h. Design: docs/KERNELS.md.
//
// SS2DScan = two launches:
//   1. xdbl_proj: per 8x8 pixel tile, x_dbl = W_x[k] @ x for all four directions at once (a pixel's
//      projection does not depend on the direction's order), written to the workspace in the layout
//      the scan reads coalesced (transposed for the row-major directions).
//   2. ss2d_scan: one block per (image, group of G channels). The block's x planes and an fp32
//      accumulator plane live in shared memory; each direction's sequence is cut into segments
//      (image rows for k = 0/2, columns for k = 1/3), scanned from zero (summaries), chained
//      (carries), and re-scanned with the true incoming state, adding y into the accumulator.
//      Every pixel's four contributions are added by one thread in a fixed order: deterministic.
// VMeanbaScan = four launches (A table, fused projection + row means, reduced scan, merge).
// QuarterMap down / up: one pass each, coalesced along rows.
#include "vmamba_kernels.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdlib.h>

namespace {

constexpr int kDirs = 4;
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kTile = 8;            // projection tiles are 8x8 pixels: 32-byte row pieces
constexpr int kTilePx = kTile * kTile;
constexpr int kProjThreads = 256;   // 64 pixels x 4 output-row groups
constexpr int kProjM = 32;          // output rows per GEMM pass
constexpr int kProjK = 32;          // input channels per GEMM step
constexpr int kProjWStride = kProjM + 4;  // transposed W tile row: 16-byte aligned, offset banks
constexpr int kScanMaxThreads = 512;
constexpr int kReducedThreads = 128;
constexpr size_t kAlign = 256;

inline size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

template <typename T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

// 2^x on the special-function unit (relative error ~2^-22; results below 2^-126 flush to zero,
// which only drops state contributions smaller than 1e-38).
__device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// torch.nn.functional.softplus (inputs above 20 pass through), branch-free and accurate to ~3e-7
// relative: softplus(v) = max(v, 0) + log1p(z), z = exp(-|v|) in (0, 1], and
// log1p(z) = 2 atanh(s), s = z / (2 + z) <= 1/3, summed to s^15 (next term < 2e-9 relative).
// (log1pf is as accurate but branches and costs ~4x the instructions; log(1 + z) loses the
// small steps delta ~ 1e-3 that VMamba uses.)
__device__ __forceinline__ float softplus_f32(float v)
{
    const float z = fast_exp2(-fabsf(v) * kLog2e);
    const float s = __fdividef(z, 2.f + z);
    const float t = s * s;
    float poly = 1.f / 15.f;
    poly = fmaf(poly, t, 1.f / 13.f);
    poly = fmaf(poly, t, 1.f / 11.f);
    poly = fmaf(poly, t, 1.f / 9.f);
    poly = fmaf(poly, t, 1.f / 7.f);
    poly = fmaf(poly, t, 1.f / 5.f);
    poly = fmaf(poly, t, 1.f / 3.f);
    poly = fmaf(poly, t, 1.f);
    const float sp = fmaxf(v, 0.f) + 2.f * s * poly;
    return v > 20.f ? v : sp;
}

// ------------------------------------------------------------------------------------------------
// Projection of an 8x8 pixel tile: xd_s[m * (kTilePx + 1) + px] = sum_d W_x[m, d] * x[d, px] for
// all M = 4 * (R + 2N) rows m = k * C + c. Out-of-image pixels compute zeros and are never stored.
template <typename T>
__device__ void project_tile(const T* __restrict__ xb, const T* __restrict__ wx, int D, int H, int W,
                             int M, int i0, int j0, float* xd_s, float* xk_s, float* w_s)
{
    const int tid = threadIdx.x;
    const int px = tid & (kTilePx - 1);
    const int ty = tid >> 6;  // 0..3
    const size_t L = (size_t)H * W;
    for (int m0 = 0; m0 < M; m0 += kProjM) {
        float acc[kProjM / 4];
#pragma unroll
        for (int t = 0; t < kProjM / 4; ++t) acc[t] = 0.f;
        for (int d0 = 0; d0 < D; d0 += kProjK) {
#pragma unroll
            for (int q = 0; q < (kProjK * kTilePx) / kProjThreads; ++q) {
                const int e = tid + q * kProjThreads;
                const int dd = e >> 6, pp = e & (kTilePx - 1);
                const int i = i0 + (pp >> 3), j = j0 + (pp & 7);
                float v = 0.f;
                if (d0 + dd < D && i < H && j < W) v = to_f32(xb[(size_t)(d0 + dd) * L + (size_t)i * W + j]);
                xk_s[dd * kTilePx + pp] = v;
            }
#pragma unroll
            for (int q = 0; q < (kProjM * kProjK) / kProjThreads; ++q) {
                const int e = tid + q * kProjThreads;
                const int mm = e >> 5, dd = e & 31;
                float v = 0.f;
                if (m0 + mm < M && d0 + dd < D) v = to_f32(wx[(size_t)(m0 + mm) * D + d0 + dd]);
                w_s[dd * kProjWStride + mm] = v;  // transposed: a thread's 8 rows are 2 float4
            }
            __syncthreads();
#pragma unroll 8
            for (int dd = 0; dd < kProjK; ++dd) {
                const float xv = xk_s[dd * kTilePx + px];
                const float4 wa = *reinterpret_cast<const float4*>(w_s + dd * kProjWStride + ty * 8);
                const float4 wb = *reinterpret_cast<const float4*>(w_s + dd * kProjWStride + ty * 8 + 4);
                acc[0] = fmaf(wa.x, xv, acc[0]);
                acc[1] = fmaf(wa.y, xv, acc[1]);
                acc[2] = fmaf(wa.z, xv, acc[2]);
                acc[3] = fmaf(wa.w, xv, acc[3]);
                acc[4] = fmaf(wb.x, xv, acc[4]);
                acc[5] = fmaf(wb.y, xv, acc[5]);
                acc[6] = fmaf(wb.z, xv, acc[6]);
                acc[7] = fmaf(wb.w, xv, acc[7]);
            }
            __syncthreads();
        }
#pragma unroll
        for (int t = 0; t < kProjM / 4; ++t) {
            const int m = m0 + ty * 8 + t;
            if (m < M) xd_s[m * (kTilePx + 1) + px] = acc[t];
        }
    }
    __syncthreads();
}

__host__ __device__ inline size_t proj_smem_floats(int M)
{
    return (size_t)M * (kTilePx + 1) + (size_t)kProjK * kTilePx + (size_t)kProjK * kProjWStride;
}

// x_dbl for the scan. Row-major directions (k = 0, 2) are stored transposed, [b][k/2][c][j][i], so
// that threads that own consecutive image rows read consecutive addresses; column-major directions
// (k = 1, 3) row-major, [b][k/2][c][i][j]. Stores go through shared memory in 32-byte pieces.
template <typename T>
__global__ void __launch_bounds__(kProjThreads) xdbl_proj_kernel(
    const T* __restrict__ x, const T* __restrict__ wx, int D, int H, int W, int C,
    float* __restrict__ xrow, float* __restrict__ xcol)
{
    extern __shared__ float smem[];
    const int M = kDirs * C;
    float* xd_s = smem;
    float* xk_s = xd_s + (size_t)M * (kTilePx + 1);
    float* w_s = xk_s + kProjK * kTilePx;  // 16-byte aligned: M = 4C, so M * 65 floats is a multiple of 4
    const int b = blockIdx.z;
    const int i0 = blockIdx.y * kTile, j0 = blockIdx.x * kTile;
    const size_t L = (size_t)H * W;
    project_tile(x + (size_t)b * D * L, wx, D, H, W, M, i0, j0, xd_s, xk_s, w_s);
    for (int e = threadIdx.x; e < M * kTilePx; e += blockDim.x) {
        const int m = e >> 6, q = e & (kTilePx - 1);
        const int k = m / C, c = m - k * C;
        const bool rowdir = (k & 1) == 0;
        const int pi = rowdir ? (q & 7) : (q >> 3);  // rowdir: consecutive threads walk down i
        const int pj = rowdir ? (q >> 3) : (q & 7);
        const int i = i0 + pi, j = j0 + pj;
        if (i >= H || j >= W) continue;
        const float v = xd_s[m * (kTilePx + 1) + pi * kTile + pj];
        const size_t plane = ((size_t)b * 2 + (k >> 1)) * C + c;
        if (rowdir) xrow[plane * L + (size_t)j * H + i] = v;
        else xcol[plane * L + (size_t)i * W + j] = v;
    }
}

// ------------------------------------------------------------------------------------------------
struct ScanParams {
    const void* x;
    const void* wdt;
    const float* dt_bias;
    const float* A_logs;
    const float* Ds;
    const float* xrow;
    const float* xcol;
    void* y;
    int D, H, W, N, R, C, G, Wp;
};

// One direction's constants for channel d (row r = k * D + d).
template <typename T, int NMAX, int RREG>
struct DirConsts {
    float A2[NMAX];      // A * log2(e)
    float wdt[RREG > 0 ? RREG : 1];
    const T* wdt_g;      // used when R > RREG
    float bias;

    __device__ __forceinline__ void load(const ScanParams& p, int k, int d)
    {
        const int r = k * p.D + d;
#pragma unroll
        for (int n = 0; n < NMAX; ++n) A2[n] = n < p.N ? -expf(p.A_logs[(size_t)r * p.N + n]) * kLog2e : 0.f;
        bias = p.dt_bias[r];
        wdt_g = static_cast<const T*>(p.wdt) + (size_t)r * p.R;
        if (RREG > 0) {
#pragma unroll
            for (int q = 0; q < (RREG > 0 ? RREG : 1); ++q) wdt[q] = q < p.R ? to_f32(wdt_g[q]) : 0.f;
        }
    }

    // delta = softplus(W_dt[r] . dt_low + bias) at sequence element `off` of the x_dbl planes.
    __device__ __forceinline__ float delta_at(const float* __restrict__ xd, size_t L, size_t off, int R) const
    {
        float v = bias;
        if (RREG > 0) {
#pragma unroll
            for (int q = 0; q < (RREG > 0 ? RREG : 1); ++q)
                if (q < R) v = fmaf(wdt[q], __ldg(xd + (size_t)q * L + off), v);
        } else {
            for (int q = 0; q < R; ++q) v = fmaf(to_f32(wdt_g[q]), __ldg(xd + (size_t)q * L + off), v);
        }
        return softplus_f32(v);
    }
};

// A segment: T steps; x_dbl offset off0 + t * offstep, shared-memory u index u0 + t * ustep.
// 32-bit offsets: one (image, direction) x_dbl block has C * L < 2^31 elements (checked on launch).
struct Segment {
    int off0, offstep;
    int u0, ustep, T;
};

// Family 0 = rows (k = 0 forward, k = 2 backward), family 1 = columns (k = 1, k = 3).
__device__ __forceinline__ Segment make_segment(const ScanParams& p, int fam, int dir, int s)
{
    Segment g;
    if (fam == 0) {  // segment s = image row i; x_dbl transposed: offset j * H + i
        g.T = p.W;
        if (dir == 0) { g.off0 = s; g.offstep = p.H; g.u0 = s * p.Wp; g.ustep = 1; }
        else { g.off0 = s + (p.W - 1) * p.H; g.offstep = -p.H; g.u0 = s * p.Wp + p.W - 1; g.ustep = -1; }
    } else {  // segment s = image column j; x_dbl row-major: offset i * W + j
        g.T = p.H;
        if (dir == 0) { g.off0 = s; g.offstep = p.W; g.u0 = s; g.ustep = p.Wp; }
        else { g.off0 = s + (p.H - 1) * p.W; g.offstep = -p.W; g.u0 = s + (p.H - 1) * p.Wp; g.ustep = -p.Wp; }
    }
    return g;
}

// Block size cap: 512 threads for d_state 1; 256 for d_state 16 (its states need the registers).
// Wide register tiles (dt_rank > 16) need the 255-register budget of a 256-thread block.
template <int NMAX, int RREG> __host__ __device__ constexpr int scan_max_threads() { return (NMAX > 1 || RREG > 16) ? kScanMaxThreads / 2 : kScanMaxThreads; }
// Steps whose loads are issued together before any of them is used (hides L2 latency).
template <int NMAX, int RREG> __host__ __device__ constexpr int scan_prefetch() { return (NMAX > 1 || RREG > 16) ? 1 : (RREG > 8 ? 2 : 4); }

// U consecutive steps of a segment: all their loads are issued before the first is used.
template <typename T, int NMAX, int RREG, bool READOUT, int U>
__device__ __forceinline__ void scan_steps(const DirConsts<T, NMAX, RREG>& dc, const float* __restrict__ xd,
                                           int L, int N, int R, int off, int offstep, int ui, int ustep,
                                           const float* xu, float* yu, float* h, float& dsum)
{
    constexpr int RP = RREG > 0 ? RREG : 1;
    float dtl[U][RP], bv[U][NMAX], cv[U][NMAX], uv[U];
#pragma unroll
    for (int q = 0; q < U; ++q) {
        const int o = off + q * offstep;
        if (RREG > 0) {
#pragma unroll
            for (int r = 0; r < RP; ++r) dtl[q][r] = r < R ? __ldg(xd + r * L + o) : 0.f;
        }
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
            const bool live = NMAX == 1 || n < N;
            bv[q][n] = live ? __ldg(xd + (R + n) * L + o) : 0.f;
            if (READOUT) cv[q][n] = live ? __ldg(xd + (R + N + n) * L + o) : 0.f;
        }
        uv[q] = xu[ui + q * ustep];
    }
#pragma unroll
    for (int q = 0; q < U; ++q) {
        float v = dc.bias;
        if (RREG > 0) {
#pragma unroll
            for (int r = 0; r < RP; ++r) v = fmaf(dc.wdt[r], dtl[q][r], v);
        } else {
            const int o = off + q * offstep;
            for (int r = 0; r < R; ++r) v = fmaf(to_f32(dc.wdt_g[r]), __ldg(xd + r * L + o), v);
        }
        const float delta = softplus_f32(v);
        const float du = delta * uv[q];
        float y = 0.f;
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
            if (NMAX == 1 || n < N) {
                h[n] = fmaf(fast_exp2(delta * dc.A2[n]), h[n], du * bv[q][n]);
                if (READOUT) y = fmaf(cv[q][n], h[n], y);
            }
        }
        if (READOUT) yu[ui + q * ustep] += y;
        else dsum += delta;
    }
}

// Scan one segment from state h. READOUT: also add y = C . h at every step into yu (phase 3);
// otherwise accumulate the segment's sum of delta (phase 1). Returns the state at its end in h.
template <typename T, int NMAX, int RREG, bool READOUT>
__device__ __forceinline__ void scan_segment(const DirConsts<T, NMAX, RREG>& dc, const float* __restrict__ xd,
                                             size_t L, int N, int R, const Segment& sg,
                                             const float* xu, float* yu, float* h, float& dsum)
{
    constexpr int U = scan_prefetch<NMAX, RREG>();
    int t = 0, off = sg.off0, ui = sg.u0;
    for (; t + U <= sg.T; t += U, off += U * sg.offstep, ui += U * sg.ustep)
        scan_steps<T, NMAX, RREG, READOUT, U>(dc, xd, (int)L, N, R, off, sg.offstep, ui, sg.ustep, xu, yu, h, dsum);
    for (; t < sg.T; ++t, off += sg.offstep, ui += sg.ustep)
        scan_steps<T, NMAX, RREG, READOUT, 1>(dc, xd, (int)L, N, R, off, sg.offstep, ui, sg.ustep, xu, yu, h, dsum);
}

// Shared-memory plane stride: threads of a warp are (segment, channel) pairs with the channel
// fastest, so planes are offset by 32 / (channels per warp) banks and rows (odd Wp) by one.
__host__ __device__ inline int scan_plane_stride(int H, int Wp, int G)
{
    int g2 = 1;
    while (g2 < G && g2 < 32) g2 <<= 1;
    const int spacing = 32 / g2;  // 1..32
    const int base = (H * Wp + 31) / 32 * 32;
    return base + (spacing % 32);
}

template <typename T, int NMAX, int RREG>
__global__ void __launch_bounds__(scan_max_threads<NMAX, RREG>()) ss2d_scan_kernel(ScanParams p)
{
    extern __shared__ float smem[];
    const int b = blockIdx.y;
    const int g0 = blockIdx.x * p.G;
    const int Gb = min(p.G, p.D - g0);
    const int H = p.H, W = p.W, N = p.N, R = p.R;
    const size_t L = (size_t)H * W;
    const int plane = scan_plane_stride(H, p.Wp, p.G);
    float* xs = smem;                               // [G][plane] input, pixel (i, j) at i * Wp + j
    float* ys = xs + (size_t)p.G * plane;           // [G][plane] output accumulator
    float* sd_row = ys + (size_t)p.G * plane;       // [2][H][G] segment sums of delta
    float* sd_col = sd_row + (size_t)p.G * 2 * H;   // [2][W][G]
    float* hs_row = sd_col + (size_t)p.G * 2 * W;   // [2][H][G][N] segment end states, then carries
    float* hs_col = hs_row + (size_t)p.G * 2 * H * N;
    const T* xg = static_cast<const T*>(p.x) + ((size_t)b * p.D + g0) * L;

    // Load the planes; start the accumulator at the merged skip term sum_k Ds[k, d] * x.
    for (int g = 0; g < Gb; ++g) {
        const int d = g0 + g;
        const float dsum = (p.Ds[d] + p.Ds[p.D + d]) + (p.Ds[2 * p.D + d] + p.Ds[3 * p.D + d]);
        for (int i = threadIdx.y; i < H; i += blockDim.y) {
            for (int j = threadIdx.x; j < W; j += blockDim.x) {
                const float u = to_f32(xg[(size_t)g * L + (size_t)i * W + j]);
                xs[g * plane + i * p.Wp + j] = u;
                ys[g * plane + i * p.Wp + j] = dsum * u;
            }
        }
    }
    __syncthreads();
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int nthreads = blockDim.x * blockDim.y;

    // Phase 1: every (family, direction, segment, channel) scanned from a zero state. Consecutive
    // threads take consecutive channels of one segment: they read the same x_dbl values.
    const int units_row = Gb * 2 * H, units_col = Gb * 2 * W;
    for (int u = tid; u < units_row + units_col; u += nthreads) {
        const int fam = u < units_row ? 0 : 1;
        const int uu = fam == 0 ? u : u - units_row;
        const int S = fam == 0 ? H : W;
        const int g = uu % Gb, rest = uu / Gb;
        const int s = rest % S, dir = rest / S;
        const int k = fam + 2 * dir;
        DirConsts<T, NMAX, RREG> dc;
        dc.load(p, k, g0 + g);
        const float* xd = (fam == 0 ? p.xrow : p.xcol) + ((size_t)b * 2 + dir) * p.C * L;
        const Segment sg = make_segment(p, fam, dir, s);
        float h[NMAX];
#pragma unroll
        for (int n = 0; n < NMAX; ++n) h[n] = 0.f;
        float dsum = 0.f;
        scan_segment<T, NMAX, RREG, false>(dc, xd, L, N, R, sg, xs + g * plane, nullptr, h, dsum);
        float* sd = fam == 0 ? sd_row : sd_col;
        float* hs = fam == 0 ? hs_row : hs_col;
        const int idx = (dir * S + s) * p.G + g;
        sd[idx] = dsum;
#pragma unroll
        for (int n = 0; n < NMAX; ++n)
            if (n < N) hs[(size_t)idx * N + n] = h[n];
    }
    __syncthreads();

    // Phase 2: chain the segments in each direction's order; hs becomes the incoming state.
    for (int u = tid; u < Gb * 4 * N; u += nthreads) {
        const int n = u % N, rest = u / N;
        const int g = rest % Gb, fd = rest / Gb;
        const int fam = fd & 1, dir = fd >> 1;
        const int S = fam == 0 ? H : W;
        const int k = fam + 2 * dir;
        const float A2 = -expf(p.A_logs[(size_t)(k * p.D + g0 + g) * N + n]) * kLog2e;
        const float* sd = fam == 0 ? sd_row : sd_col;
        float* hs = fam == 0 ? hs_row : hs_col;
        float carry = 0.f;
        for (int t = 0; t < S; ++t) {
            const int s = dir == 0 ? t : S - 1 - t;
            const int idx = (dir * S + s) * p.G + g;
            const float hend = hs[(size_t)idx * N + n];
            hs[(size_t)idx * N + n] = carry;
            carry = fmaf(fast_exp2(A2 * sd[idx]), carry, hend);
        }
    }
    __syncthreads();

    // Phase 3: re-scan each segment from its incoming state and add C . h into the accumulator.
    // One thread owns a segment in both directions of a family, so each pixel's adds are ordered.
    for (int fam = 0; fam < 2; ++fam) {
        const int S = fam == 0 ? H : W;
        for (int u = tid; u < Gb * S; u += nthreads) {
            const int g = u % Gb, s = u / Gb;
            for (int dir = 0; dir < 2; ++dir) {
                const int k = fam + 2 * dir;
                DirConsts<T, NMAX, RREG> dc;
                dc.load(p, k, g0 + g);
                const float* xd = (fam == 0 ? p.xrow : p.xcol) + ((size_t)b * 2 + dir) * p.C * L;
                const Segment sg = make_segment(p, fam, dir, s);
                const float* hs = (fam == 0 ? hs_row : hs_col) + (size_t)((dir * S + s) * p.G + g) * N;
                float h[NMAX];
#pragma unroll
                for (int n = 0; n < NMAX; ++n) h[n] = n < N ? hs[n] : 0.f;
                float unused = 0.f;
                scan_segment<T, NMAX, RREG, true>(dc, xd, L, N, R, sg, xs + g * plane, ys + g * plane, h, unused);
            }
        }
        __syncthreads();
    }

    T* yg = static_cast<T*>(p.y) + ((size_t)b * p.D + g0) * L;
    for (int g = 0; g < Gb; ++g)
        for (int i = threadIdx.y; i < H; i += blockDim.y)
            for (int j = threadIdx.x; j < W; j += blockDim.x)
                yg[(size_t)g * L + (size_t)i * W + j] = from_f32<T>(ys[g * plane + i * p.Wp + j]);
}

// ------------------------------------------------------------------------------------------------
// VMeanba. Per-pixel statistics are stored at each direction's own sequence index l, in fields
// (slots) of Q[b][k][slot][l]: variants 0/1: sum_d exp(delta A)[n] (N), sum_d delta*u, -, B (N), C (N);
// variant 2: -, sum_d delta, sum_d u, B, C.
__host__ __device__ inline int vmeanba_slots(int N) { return 3 * N + 2; }

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

__device__ __forceinline__ int seq_index(int k, int i, int j, int H, int W)
{
    const int L = H * W;
    const int l = (k & 1) ? j * H + i : i * W + j;
    return k >= 2 ? L - 1 - l : l;
}

template <typename T, int NMAX>
__global__ void __launch_bounds__(kProjThreads) vmeanba_stats_kernel(
    const T* __restrict__ x, const T* __restrict__ wx, const T* __restrict__ wdt,
    const float* __restrict__ dt_bias, const float* __restrict__ A2, int D, int H, int W, int N, int R,
    int variant, float* __restrict__ Q)
{
    extern __shared__ float smem[];
    const int C = R + 2 * N, M = kDirs * C;
    float* xd_s = smem;
    float* xk_s = xd_s + (size_t)M * (kTilePx + 1);
    float* w_s = xk_s + kProjK * kTilePx;
    const int b = blockIdx.z;
    const int i0 = blockIdx.y * kTile, j0 = blockIdx.x * kTile;
    const size_t L = (size_t)H * W;
    const T* xb = x + (size_t)b * D * L;
    project_tile(xb, wx, D, H, W, M, i0, j0, xd_s, xk_s, w_s);

    const int k = threadIdx.x >> 6, q = threadIdx.x & (kTilePx - 1);
    // consecutive threads walk the direction's own sequence order, so the stores below coalesce
    const int pi = (k & 1) ? (q & 7) : (q >> 3), pj = (k & 1) ? (q >> 3) : (q & 7);
    const int i = i0 + pi, j = j0 + pj;
    if (i >= H || j >= W) return;
    const int px = pi * kTile + pj;
    const float* xdk = xd_s + (size_t)k * C * (kTilePx + 1) + px;  // row c at xdk[c * (kTilePx + 1)]
    float se[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; ++n) se[n] = 0.f;
    float sdu = 0.f, sdelta = 0.f, su = 0.f;
    // dt_low of this pixel in registers when it is short (the common dt_rank <= 8), so the loads
    // of W_dt below are independent of each other and issue together
    constexpr int kRReg = 8;
    float dtl[kRReg];
#pragma unroll
    for (int q2 = 0; q2 < kRReg; ++q2) dtl[q2] = q2 < R ? xdk[q2 * (kTilePx + 1)] : 0.f;
    const T* xp = xb + (size_t)i * W + j;
#pragma unroll 2
    for (int d = 0; d < D; ++d) {
        const int r = k * D + d;
        float v = __ldg(dt_bias + r);
        const T* wr = wdt + (size_t)r * R;
        if (R <= kRReg) {
#pragma unroll
            for (int q2 = 0; q2 < kRReg; ++q2) v = fmaf(q2 < R ? to_f32(wr[q2]) : 0.f, dtl[q2], v);
        } else {
#pragma unroll 4
            for (int q2 = 0; q2 < R; ++q2) v = fmaf(to_f32(wr[q2]), xdk[q2 * (kTilePx + 1)], v);
        }
        const float delta = softplus_f32(v);
        const float u = to_f32(xp[(size_t)d * L]);
        if (variant == 2) {
            sdelta += delta;
            su += u;
        } else {
            sdu = fmaf(delta, u, sdu);
#pragma unroll
            for (int n = 0; n < NMAX; ++n)
                if (NMAX == 1 || n < N) se[n] += fast_exp2(delta * __ldg(A2 + (size_t)r * N + n));
        }
    }
    const int l = seq_index(k, i, j, H, W);
    float* Qk = Q + ((size_t)b * kDirs + k) * vmeanba_slots(N) * L + l;
    if (variant == 2) {
        Qk[(size_t)N * L] = sdelta;
        Qk[(size_t)(N + 1) * L] = su;
    } else {
#pragma unroll
        for (int n = 0; n < NMAX; ++n)
            if (NMAX == 1 || n < N) Qk[(size_t)n * L] = se[n];
        Qk[(size_t)N * L] = sdu;
    }
    for (int n = 0; n < N; ++n) {
        Qk[(size_t)(N + 2 + n) * L] = xdk[(R + n) * (kTilePx + 1)];
        Qk[(size_t)(2 * N + 2 + n) * L] = xdk[(R + N + n) * (kTilePx + 1)];
    }
}

// The reduced sequence's (a, bu, c) at index l for group grp (variant 1: grp = direction).
template <int NMAX>
struct ReducedCoeffs {
    float a[NMAX], bu[NMAX], c[NMAX];
};

template <int NMAX>
__device__ __forceinline__ void reduced_coeffs(const float* __restrict__ Qb, const float* __restrict__ A_mean,
                                               int grp, int variant, int D, int N, size_t L, int l,
                                               ReducedCoeffs<NMAX>& rc)
{
    const int F = vmeanba_slots(N);
    const float* q = Qb + l;
    if (variant == 1) {
        const float* qk = q + (size_t)grp * F * L;
        const float du = qk[(size_t)N * L] / D;
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
            if (n < N) {
                rc.a[n] = qk[(size_t)n * L] / D;
                rc.bu[n] = qk[(size_t)(N + 2 + n) * L] * du;
                rc.c[n] = qk[(size_t)(2 * N + 2 + n) * L];
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
                    sb = fmaf(q[((size_t)k * F + N + 2 + n) * L], du[k], sb);
                    sc += q[((size_t)k * F + 2 * N + 2 + n) * L];
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
        sdelta += q[((size_t)k * F + N) * L];
        su += q[((size_t)k * F + N + 1) * L];
    }
    const float delta_m = sdelta / (kDirs * D), u_m = su / (kDirs * D);
#pragma unroll
    for (int n = 0; n < NMAX; ++n) {
        if (n < N) {
            float sb = 0.f, sc = 0.f;
#pragma unroll
            for (int k = 0; k < kDirs; ++k) {
                sb += q[((size_t)k * F + N + 2 + n) * L];
                sc += q[((size_t)k * F + 2 * N + 2 + n) * L];
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
__global__ void __launch_bounds__(kReducedThreads) vmeanba_reduced_scan_kernel(
    const float* __restrict__ Q, const float* __restrict__ A_mean, int D, int H, int W, int N, int variant,
    float* __restrict__ ym)
{
    __shared__ float warp_a[kReducedThreads / 32][NMAX], warp_h[kReducedThreads / 32][NMAX];
    const int b = blockIdx.y, grp = blockIdx.x;
    const size_t L = (size_t)H * W;
    const int F = vmeanba_slots(N);
    const float* Qb = Q + (size_t)b * kDirs * F * L;
    const int chunk = (int)((L + kReducedThreads - 1) / kReducedThreads);
    const int l0 = threadIdx.x * chunk;
    const int l1 = min((int)L, l0 + chunk);
    ReducedCoeffs<NMAX> rc;
    float h[NMAX], ap[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; ++n) { h[n] = 0.f; ap[n] = 1.f; }
    for (int l = l0; l < l1; ++l) {
        reduced_coeffs<NMAX>(Qb, A_mean, grp, variant, D, N, L, l, rc);
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
        reduced_coeffs<NMAX>(Qb, A_mean, grp, variant, D, N, L, l, rc);
        float yv = 0.f;
#pragma unroll
        for (int n = 0; n < NMAX; ++n)
            if (n < N) { hin[n] = fmaf(rc.a[n], hin[n], rc.bu[n]); yv = fmaf(rc.c[n], hin[n], yv); }
        y[l] = yv;
    }
}

// y[b, d, p] = sum_k y_m[b, group(k), l_k(p)] + (sum_k Ds[k, d]) * x[b, d, p]
template <typename T>
__global__ void vmeanba_merge_kernel(const T* __restrict__ x, const float* __restrict__ Ds,
                                     const float* __restrict__ ym, int groups, int D, int H, int W,
                                     T* __restrict__ y)
{
    const int b = blockIdx.y;
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    const int L = H * W;
    if (p >= L) return;
    const int i = p / W, j = p - i * W;
    const float* yb = ym + (size_t)b * groups * L;
    float s[kDirs];
#pragma unroll
    for (int k = 0; k < kDirs; ++k) s[k] = yb[(size_t)(groups == 1 ? 0 : k) * L + seq_index(k, i, j, H, W)];
    const float S = (s[0] + s[2]) + (s[1] + s[3]);
    const size_t base = (size_t)b * D * L + p;
#pragma unroll 4
    for (int d = 0; d < D; ++d) {
        const float dsum = (Ds[d] + Ds[D + d]) + (Ds[2 * D + d] + Ds[3 * D + d]);
        y[base + (size_t)d * L] = from_f32<T>(fmaf(dsum, to_f32(x[base + (size_t)d * L]), S));
    }
}

// ------------------------------------------------------------------------------------------------
// QuarterMap. Flattened over a block of whole output rows, four elements per thread, so narrow
// maps (7 columns) keep every lane busy; the index divisions are multiply-high (no 64-bit divides).
struct FastDiv {  // n / d for 0 <= n < 2^31, 1 <= d < 2^31 (Granlund-Montgomery, as in PyTorch)
    uint32_t d, m, s;
    __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, m) + n) >> s; }
};

FastDiv make_fastdiv(uint32_t d)
{
    uint32_t s = 0;
    while (s < 32 && (1ull << s) < d) ++s;
    const uint64_t m = ((1ull << 32) * ((1ull << s) - d)) / d + 1;
    return FastDiv{d, (uint32_t)m, s};
}

constexpr int kQmThreads = 256, kQmPerThread = 4;

struct QmParams {
    const void* x;
    void* y;
    long long rows;        // batch * channels * out_height
    int rows_per_block;
    int in_h, in_w, out_h, out_w;
    FastDiv by_out_w, by_out_h, by_keep, by_out_h_map, by_out_w_map;  // *_map: for i * in / out
    int stride, keep;      // down only
};

template <typename T, bool UP>
__global__ void __launch_bounds__(kQmThreads) quartermap_kernel(QmParams p)
{
    const long long r0 = (long long)blockIdx.x * p.rows_per_block;
    const int nrows = (int)min((long long)p.rows_per_block, p.rows - r0);
    const int count = nrows * p.out_w;
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y) + r0 * p.out_w;
    const uint32_t bc0 = p.by_out_h.div((uint32_t)r0), i0 = (uint32_t)r0 - bc0 * (uint32_t)p.out_h;
#pragma unroll
    for (int q = 0; q < kQmPerThread; ++q) {
        const int n = threadIdx.x + q * kQmThreads + (int)blockIdx.y * kQmThreads * kQmPerThread;
        if (n >= count) break;
        const uint32_t lr = p.by_out_w.div((uint32_t)n);
        const uint32_t oj = (uint32_t)n - lr * p.out_w;
        const uint32_t ri = i0 + lr;                 // rows since the first plane of this block
        const uint32_t dbc = p.by_out_h.div(ri);
        const uint32_t oi = ri - dbc * p.out_h;
        uint32_t ii, jj;
        if (UP) {
            ii = p.by_out_h_map.div(oi * (uint32_t)p.in_h);
            jj = p.by_out_w_map.div(oj * (uint32_t)p.in_w);
        } else {
            const uint32_t qi = p.by_keep.div(oi), qj = p.by_keep.div(oj);
            ii = qi * p.stride + (oi - qi * p.keep);
            jj = qj * p.stride + (oj - qj * p.keep);
        }
        const size_t src = ((size_t)(bc0 + dbc) * p.in_h + ii) * p.in_w + jj;
        y[n] = x[src];
    }
}

// ------------------------------------------------------------------------------------------------
// Host side.
struct DeviceInfo {
    int sms = 0, smem_optin = 0;
};

bool device_info(DeviceInfo* info)
{
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&info->sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&info->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return false;
    return true;
}

vmk_status_t launch_status()
{
    return cudaGetLastError() == cudaSuccess ? VMK_OK : VMK_ERR_CUDA;
}

template <typename K>
bool allow_smem(K kernel, size_t bytes)
{
    if (bytes <= 48 * 1024) return true;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes) == cudaSuccess;
}

bool valid_dtype(vmk_dtype_t t) { return t == VMK_FLOAT32 || t == VMK_FLOAT16; }

constexpr int kMaxDState = 16;
constexpr int kMaxSide = 1 << 15;

vmk_status_t check_ss2d_shapes(const vmk_ss2d_args_t* a)
{
    if (!a) return VMK_ERR_INVALID_ARGUMENT;
    if (a->batch <= 0 || a->dim <= 0 || a->height <= 0 || a->width <= 0 || a->d_state <= 0 || a->dt_rank <= 0)
        return VMK_ERR_INVALID_ARGUMENT;
    if (!valid_dtype(a->dtype)) return VMK_ERR_INVALID_ARGUMENT;
    if (a->d_state > kMaxDState) return VMK_ERR_UNSUPPORTED;
    if (a->height > kMaxSide || a->width > kMaxSide || (long long)a->height * a->width > (1LL << 30))
        return VMK_ERR_UNSUPPORTED;
    if (a->batch > 65535) return VMK_ERR_UNSUPPORTED;  // gridDim.y / z
    return VMK_OK;
}

vmk_status_t check_ss2d_pointers(const vmk_ss2d_args_t* a)
{
    if (!a->x || !a->x_proj_weight || !a->dt_projs_weight || !a->dt_projs_bias || !a->A_logs || !a->Ds || !a->y)
        return VMK_ERR_INVALID_ARGUMENT;
    return VMK_OK;
}

size_t ss2d_xdbl_bytes(const vmk_ss2d_args_t* a)
{
    const size_t L = (size_t)a->height * a->width;
    const size_t C = (size_t)a->dt_rank + 2 * (size_t)a->d_state;
    return (size_t)a->batch * kDirs * C * L * sizeof(float);
}

size_t scan_smem_bytes(const vmk_ss2d_args_t* a, int G)
{
    const int Wp = a->width | 1;
    const size_t plane = (size_t)scan_plane_stride(a->height, Wp, G);
    const size_t sums = (size_t)G * 2 * (a->height + a->width) * (1 + (size_t)a->d_state);
    return (2 * (size_t)G * plane + sums) * sizeof(float);
}

template <typename T, int NMAX, int RREG>
vmk_status_t launch_scan(const ScanParams& p, int batch, size_t smem, cudaStream_t stream)
{
    auto kernel = ss2d_scan_kernel<T, NMAX, RREG>;
    if (!allow_smem(kernel, smem)) return VMK_ERR_CUDA;
    const int units = p.G * 2 * (p.H > p.W ? p.H : p.W);
    int threads = ((units + 31) / 32) * 32;
    if (threads > scan_max_threads<NMAX, RREG>()) threads = scan_max_threads<NMAX, RREG>();
    if (threads < 64) threads = 64;
    // 2-D block: x runs along image rows for the coalesced plane loads and stores
    const int bx = p.W >= 32 ? 32 : (p.W >= 16 ? 16 : 8);
    dim3 block(bx, threads / bx);
    dim3 grid((p.D + p.G - 1) / p.G, batch);
    kernel<<<grid, block, smem, stream>>>(p);
    return launch_status();
}

template <typename T>
vmk_status_t ss2d_run(const vmk_ss2d_args_t* a, void* ws, cudaStream_t stream, const DeviceInfo& dev)
{
    const int B = a->batch, D = a->dim, H = a->height, W = a->width, N = a->d_state, R = a->dt_rank;
    const int C = R + 2 * N;
    const size_t L = (size_t)H * W;
    // Workspace: x_dbl of the row-major directions, then of the column-major ones.
    float* xrow = static_cast<float*>(ws);
    float* xcol = xrow + (size_t)B * 2 * C * L;

    const size_t proj_smem = proj_smem_floats(kDirs * C) * sizeof(float);
    if (proj_smem > (size_t)dev.smem_optin) return VMK_ERR_UNSUPPORTED;
    if ((size_t)C * L >= (1ull << 31)) return VMK_ERR_UNSUPPORTED;  // the scan's 32-bit offsets
    if (!allow_smem(xdbl_proj_kernel<T>, proj_smem)) return VMK_ERR_CUDA;
    dim3 pgrid((W + kTile - 1) / kTile, (H + kTile - 1) / kTile, B);
    xdbl_proj_kernel<T><<<pgrid, kProjThreads, proj_smem, stream>>>(
        static_cast<const T*>(a->x), static_cast<const T*>(a->x_proj_weight), D, H, W, C, xrow, xcol);
    if (launch_status() != VMK_OK) return VMK_ERR_CUDA;

    // Channels per block: as many as shared memory holds, but few enough to give every SM ~2 blocks.
    int G = 1;
    while (G < D && scan_smem_bytes(a, G + 1) <= (size_t)dev.smem_optin) ++G;
    const long long want = ((long long)B * D + 2LL * dev.sms - 1) / (2LL * dev.sms);
    if (G > want) G = (int)(want < 1 ? 1 : want);
    // Tuning knob for the benchmark: VMK_SCAN_CHANNELS caps the channels per block.
    if (const char* env = getenv("VMK_SCAN_CHANNELS")) {
        const int cap = atoi(env);
        if (cap > 0 && cap < G) G = cap;
    }
    if (scan_smem_bytes(a, G) > (size_t)dev.smem_optin) return VMK_ERR_UNSUPPORTED;
    ScanParams p{a->x, a->dt_projs_weight, a->dt_projs_bias, a->A_logs, a->Ds, xrow, xcol, a->y,
                 D, H, W, N, R, C, G, W | 1};
    const size_t smem = scan_smem_bytes(a, G);
    // W_dt stays in registers up to dt_rank 64 for d_state 1 (VMamba-B stage 3), 32 for d_state 16; reading it from global memory at
    // every step made stages 2-3 3-4x slower (docs/BENCHMARKS.md profile).
    if (N == 1) {
        if (R <= 8) return launch_scan<T, 1, 8>(p, B, smem, stream);
        if (R <= 16) return launch_scan<T, 1, 16>(p, B, smem, stream);
        if (R <= 32) return launch_scan<T, 1, 32>(p, B, smem, stream);
        if (R <= 64) return launch_scan<T, 1, 64>(p, B, smem, stream);
        return launch_scan<T, 1, 0>(p, B, smem, stream);
    }
    if (R <= 16) return launch_scan<T, 16, 16>(p, B, smem, stream);
    if (R <= 32) return launch_scan<T, 16, 32>(p, B, smem, stream);  // 16 x 64 would spill
    return launch_scan<T, 16, 0>(p, B, smem, stream);
}

struct VmeanbaLayout {
    size_t a2, amean, q, ym, total;
};

VmeanbaLayout vmeanba_layout(const vmk_ss2d_args_t* a)
{
    const size_t L = (size_t)a->height * a->width;
    const size_t N = a->d_state;
    VmeanbaLayout w;
    w.a2 = 0;
    w.amean = align_up(w.a2 + (size_t)kDirs * a->dim * N * sizeof(float));
    w.q = align_up(w.amean + N * sizeof(float));
    w.ym = align_up(w.q + (size_t)a->batch * kDirs * vmeanba_slots((int)N) * L * sizeof(float));
    w.total = align_up(w.ym + (size_t)a->batch * kDirs * L * sizeof(float));
    return w;
}

template <typename T>
vmk_status_t vmeanba_run(const vmk_ss2d_args_t* a, int variant, void* ws, cudaStream_t stream,
                         const DeviceInfo& dev)
{
    const int B = a->batch, D = a->dim, H = a->height, W = a->width, N = a->d_state, R = a->dt_rank;
    const int C = R + 2 * N;
    const VmeanbaLayout lay = vmeanba_layout(a);
    char* base = static_cast<char*>(ws);
    float* A2 = reinterpret_cast<float*>(base + lay.a2);
    float* A_mean = reinterpret_cast<float*>(base + lay.amean);
    float* Q = reinterpret_cast<float*>(base + lay.q);
    float* ym = reinterpret_cast<float*>(base + lay.ym);
    const int rows = kDirs * D;
    int tblocks = (rows * N + 255) / 256;
    if (tblocks > 1024) tblocks = 1024;
    vmeanba_tables_kernel<<<tblocks, 256, 0, stream>>>(a->A_logs, rows, N, A2, A_mean);
    if (launch_status() != VMK_OK) return VMK_ERR_CUDA;

    const size_t smem = proj_smem_floats(kDirs * C) * sizeof(float);
    if (smem > (size_t)dev.smem_optin) return VMK_ERR_UNSUPPORTED;
    auto stats = N == 1 ? vmeanba_stats_kernel<T, 1> : vmeanba_stats_kernel<T, 16>;
    if (!allow_smem(stats, smem)) return VMK_ERR_CUDA;
    dim3 pgrid((W + kTile - 1) / kTile, (H + kTile - 1) / kTile, B);
    stats<<<pgrid, kProjThreads, smem, stream>>>(
        static_cast<const T*>(a->x), static_cast<const T*>(a->x_proj_weight),
        static_cast<const T*>(a->dt_projs_weight), a->dt_projs_bias, A2, D, H, W, N, R, variant, Q);
    if (launch_status() != VMK_OK) return VMK_ERR_CUDA;

    const int groups = variant == 1 ? kDirs : 1;
    if (N == 1)
        vmeanba_reduced_scan_kernel<1><<<dim3(groups, B), kReducedThreads, 0, stream>>>(Q, A_mean, D, H, W, N, variant, ym);
    else
        vmeanba_reduced_scan_kernel<16><<<dim3(groups, B), kReducedThreads, 0, stream>>>(Q, A_mean, D, H, W, N, variant, ym);
    if (launch_status() != VMK_OK) return VMK_ERR_CUDA;

    const int L = H * W;
    vmeanba_merge_kernel<T><<<dim3((L + 255) / 256, B), 256, 0, stream>>>(
        static_cast<const T*>(a->x), a->Ds, ym, groups, D, H, W, static_cast<T*>(a->y));
    return launch_status();
}

int kept(int size, int stride, int keep) { return (size / stride) * keep + (size % stride < keep ? size % stride : keep); }

}  // namespace

extern "C" {

size_t vmk_ss2d_scan_workspace_size(const vmk_ss2d_args_t* args)
{
    if (check_ss2d_shapes(args) != VMK_OK) return 0;
    return ss2d_xdbl_bytes(args);
}

vmk_status_t vmk_ss2d_scan(const vmk_ss2d_args_t* args, void* workspace, size_t workspace_bytes, vmk_stream_t stream)
{
    vmk_status_t st = check_ss2d_shapes(args);
    if (st != VMK_OK) return st;
    if ((st = check_ss2d_pointers(args)) != VMK_OK) return st;
    if (!workspace || workspace_bytes < ss2d_xdbl_bytes(args)) return VMK_ERR_WORKSPACE;
    DeviceInfo dev;
    if (!device_info(&dev)) return VMK_ERR_CUDA;
    cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
    return args->dtype == VMK_FLOAT16 ? ss2d_run<__half>(args, workspace, s, dev) : ss2d_run<float>(args, workspace, s, dev);
}

size_t vmk_vmeanba_scan_workspace_size(const vmk_ss2d_args_t* args, int32_t variant)
{
    if (check_ss2d_shapes(args) != VMK_OK || variant < 0 || variant > 2) return 0;
    return vmeanba_layout(args).total;
}

vmk_status_t vmk_vmeanba_scan(const vmk_ss2d_args_t* args, int32_t variant, void* workspace,
                              size_t workspace_bytes, vmk_stream_t stream)
{
    vmk_status_t st = check_ss2d_shapes(args);
    if (st != VMK_OK) return st;
    if (variant < 0 || variant > 2) return VMK_ERR_INVALID_ARGUMENT;
    if ((st = check_ss2d_pointers(args)) != VMK_OK) return st;
    if (!workspace || workspace_bytes < vmeanba_layout(args).total) return VMK_ERR_WORKSPACE;
    DeviceInfo dev;
    if (!device_info(&dev)) return VMK_ERR_CUDA;
    cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
    return args->dtype == VMK_FLOAT16 ? vmeanba_run<__half>(args, variant, workspace, s, dev)
                                      : vmeanba_run<float>(args, variant, workspace, s, dev);
}

}  // extern "C"

namespace {

vmk_status_t launch_quartermap(QmParams p, vmk_dtype_t dtype, bool up, cudaStream_t stream)
{
    // whole output rows per block, about kQmThreads * kQmPerThread elements (more for wide rows:
    // then blockIdx.y splits a block's rows into pieces of that size)
    const int per_piece = kQmThreads * kQmPerThread;
    p.rows_per_block = p.out_w >= per_piece ? 1 : per_piece / p.out_w;
    const long long blocks = (p.rows + p.rows_per_block - 1) / p.rows_per_block;
    const long long count = (long long)p.rows_per_block * p.out_w;
    const long long pieces = (count + per_piece - 1) / per_piece;
    if (p.rows >= (1LL << 31) || pieces > 65535 || count >= (1LL << 31)) return VMK_ERR_UNSUPPORTED;
    if ((long long)p.out_h * p.in_h >= (1LL << 31) || (long long)p.out_w * p.in_w >= (1LL << 31))
        return VMK_ERR_UNSUPPORTED;
    p.by_out_w = make_fastdiv(p.out_w);
    p.by_out_h = make_fastdiv(p.out_h);
    p.by_out_h_map = make_fastdiv(p.out_h);
    p.by_out_w_map = make_fastdiv(p.out_w);
    p.by_keep = make_fastdiv(p.keep > 0 ? p.keep : 1);
    const dim3 grid((unsigned)blocks, (unsigned)pieces);
    if (dtype == VMK_FLOAT16) {
        if (up) quartermap_kernel<__half, true><<<grid, kQmThreads, 0, stream>>>(p);
        else quartermap_kernel<__half, false><<<grid, kQmThreads, 0, stream>>>(p);
    } else {
        if (up) quartermap_kernel<float, true><<<grid, kQmThreads, 0, stream>>>(p);
        else quartermap_kernel<float, false><<<grid, kQmThreads, 0, stream>>>(p);
    }
    return launch_status();
}

}  // namespace

extern "C" {

vmk_status_t vmk_quartermap_down(const vmk_quartermap_down_args_t* a, vmk_stream_t stream)
{
    if (!a || !a->x || !a->y || !valid_dtype(a->dtype)) return VMK_ERR_INVALID_ARGUMENT;
    if (a->batch <= 0 || a->channels <= 0 || a->height <= 0 || a->width <= 0) return VMK_ERR_INVALID_ARGUMENT;
    if (a->stride < 1 || a->keep < 1 || a->keep > a->stride) return VMK_ERR_INVALID_ARGUMENT;
    if (a->height > kMaxSide || a->width > kMaxSide) return VMK_ERR_UNSUPPORTED;
    QmParams p{};
    p.x = a->x;
    p.y = a->y;
    p.in_h = a->height;
    p.in_w = a->width;
    p.out_h = kept(a->height, a->stride, a->keep);
    p.out_w = kept(a->width, a->stride, a->keep);
    p.rows = (long long)a->batch * a->channels * p.out_h;
    p.stride = a->stride;
    p.keep = a->keep;
    return launch_quartermap(p, a->dtype, false, reinterpret_cast<cudaStream_t>(stream));
}

vmk_status_t vmk_quartermap_up(const vmk_quartermap_up_args_t* a, vmk_stream_t stream)
{
    if (!a || !a->x || !a->y || !valid_dtype(a->dtype)) return VMK_ERR_INVALID_ARGUMENT;
    if (a->batch <= 0 || a->channels <= 0 || a->in_height <= 0 || a->in_width <= 0 || a->out_height <= 0 ||
        a->out_width <= 0)
        return VMK_ERR_INVALID_ARGUMENT;
    if (a->in_height > kMaxSide || a->in_width > kMaxSide || a->out_height > kMaxSide || a->out_width > kMaxSide)
        return VMK_ERR_UNSUPPORTED;
    QmParams p{};
    p.x = a->x;
    p.y = a->y;
    p.in_h = a->in_height;
    p.in_w = a->in_width;
    p.out_h = a->out_height;
    p.out_w = a->out_width;
    p.rows = (long long)a->batch * a->channels * p.out_h;
    return launch_quartermap(p, a->dtype, true, reinterpret_cast<cudaStream_t>(stream));
}

const char* vmk_status_string(vmk_status_t status)
{
    switch (status) {
    case VMK_OK: return "ok";
    case VMK_ERR_INVALID_ARGUMENT: return "invalid argument";
    case VMK_ERR_UNSUPPORTED: return "unsupported shape or option";
    case VMK_ERR_WORKSPACE: return "workspace missing or too small";
    case VMK_ERR_CUDA: return "CUDA launch failed";
    }
    return "unknown status";
}

int32_t vmk_version(void) { return 10000; }

}  // extern "C"
