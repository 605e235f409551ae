// SS2D step 1, prep (docs/KERNELS.md): per tile of pixels (of one image; for short sequences, of
// consecutive images), x_dbl = W_x[k] @ x for all four directions at once (a pixel's
// projection does not depend on the direction's order), stored at each direction's own sequence
// index, [b][k][t][Cp], so that a scan block stages one contiguous slab; and x itself channels-last,
// [b][p][d], so that a warp whose lanes are 32 channels reads one coalesced line per step in every
// direction. Tensor cores: float16 operands for float16 I/O, 3xTF32 for float32 (a CUDA-core GEMM
// stays behind VMK_PREP_TILE=simt).
// Also the first step of VMeanbaScan (vmeanba_scan.cu).
#include "ss2d_parts.cuh"

#include <stdlib.h>
#include <string.h>

namespace vmk {
namespace {

constexpr int kPrepPx = 64;        // pixels per prep block: a run of the row-major order
constexpr int kPrepThreads = 256;  // 16 row groups x 16 pixel groups, 4 pixels per thread
constexpr int kPrepK = 32;         // input channels per tile

// ------------------------------------------------------------------------------------------------
// 1. prep: a tiled SIMT GEMM per image, x_dbl[m, p] = sum_d W_x[m, d] x[d, p] for m = k * Cp + c
// (rows of all four directions at once), block tile BM rows x 64 pixels, 32 channels per step,
// 4 x (BM / 16) outputs per thread. The blocks of the first row tile also write x channels-last.
// Shared by both prep kernels. x_dbl row m of the projection is direction k = m / Cp, column m - k Cp.
__device__ __forceinline__ int direction_of(int m, int Cp) { return (m >= Cp) + (m >= 2 * Cp) + (m >= 3 * Cp); }

// seq[k * BN + pp]: direction k's sequence index of the block's pixel p0 + pp (0 past the image).
template <int BN>
__device__ __forceinline__ void fill_seq_table(int* seq, int p0, int npx, int H, int W)
{
    for (int e = threadIdx.x; e < kDirs * BN; e += kPrepThreads) {
        const int k = e / BN, pp = e % BN, p = p0 + pp;
        seq[e] = pp < npx ? seq_index(k, p / W, p % W, H, W) : 0;
    }
}

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
    const T* __restrict__ x, const T* __restrict__ wx, int D, int H, int W, XdblCols cols,
    T* __restrict__ xt, float* __restrict__ xdbl)
{
    constexpr int TM = BM / 16, TN = BN / 16;
    const int Cp = cols.Cp, C = cols.R + 2 * cols.N;  // x_proj rows per direction
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
    fill_seq_table<BN>(&seq_s[0][0], p0, npx, H, W);
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
            const int k = direction_of(m, Cp), src = m < M ? cols.source(m - k * Cp) : -1;
            ws[dd][mm] = (src >= 0 && d0 + dd < D) ? to_f32(wx[((size_t)k * C + src) * D + d0 + dd]) : 0.f;
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
    // Each thread keeps one x_dbl row m = (direction k, column c) and walks the block's pixels, so the
    // row's address arithmetic is done once; the lanes of a warp are consecutive columns of a
    // (pixel, direction) row of Cp contiguous floats: coalesced stores. 32-bit offsets (ss2d_run).
    // (The tensor-core preps share this as store_prep_tile; it stays written out here because that
    // shared form made ptxas spill in this kernel's channel loop.)
    static_assert(kPrepThreads % BM == 0, "whole rows per thread");
    const int mm = tid % BM;
    if (m0 + mm < M) {
        const int m = m0 + mm;
        const int k = direction_of(m, Cp);
        float* dst = xdbl + ((size_t)b * kDirs + k) * L * Cp + (m - k * Cp);
        for (int pp = tid / BM; pp < npx; pp += kPrepThreads / BM) dst[seq_s[k][pp] * Cp] = out_s[mm][pp];
    }
}

// 1b. prep on tensor cores (float16 I/O): the same GEMM and outputs with mma.sync m16n8k16 (float16
// operands, which float16 I/O supplies exactly, float32 accumulation). Block tile BM = 16 TM GM rows
// x BN = 8 TN GN pixels; 8 warps as GM x GN x GK, where GK > 1 splits the channel sum between warps
// (few blocks: batch 1, short sequences) and the GK partial tiles are added in a fixed order.
// Channels are staged KC at a time: x transposed to [pixel][channel] and W_x as [row][channel], so
// every fragment register is one 32-bit shared load of two consecutive channels (row stride KC + 8
// halves: conflict-free for the 8 rows x 4 pairs of a fragment).

struct MmaPrepTile {
    int TM, TN, GM, GN, GK;
    __host__ __device__ constexpr int bm() const { return 16 * TM * GM; }
    __host__ __device__ constexpr int bn() const { return 8 * TN * GN; }
};
// large grids: 32 or 64 rows x 64 pixels, one warp per 16 x 16/32 output; few blocks: 16 x 16, K split 8 ways
constexpr MmaPrepTile kMmaRows32{1, 2, 2, 4, 1}, kMmaRows64{1, 4, 4, 2, 1}, kMmaSmall{1, 2, 1, 1, 8};

inline size_t mma_prep_smem(const MmaPrepTile& t, int KC)
{
    return (size_t)(t.bn() + t.bm()) * (KC + 8) * sizeof(__half) + (size_t)t.GK * t.bm() * (t.bn() + 1) * sizeof(float) +
           (size_t)kDirs * t.bn() * sizeof(int);
}

// The end of both per-image tensor-core preps (1b, 1d): the warps' accumulator fragments (m16n8
// layout: rows g and g + 8, columns 2 t and 2 t + 1) into the block's GK partial tiles out_s
// [GK][BM][BN + 1], then one x_dbl row per thread, walking the pixels (as in ss2d_prep_kernel), with
// the GK partial tiles added in a fixed order.
template <int TM, int TN, int GM, int GN, int GK>
__device__ __forceinline__ void store_prep_tile(const float (&acc)[TM][TN][4], float* out_s, const int* seq_s,
                                                float* __restrict__ xdbl, int b, int m0, int npx, int L, int Cp)
{
    constexpr int BM = 16 * TM * GM, BN = 8 * TN * GN;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t2 = (lane & 3) * 2, M = kDirs * Cp;
    const int wk = warp / (GM * GN), wm = (warp % (GM * GN)) / GN, wn = warp % GN;
    float* mine = out_s + (size_t)wk * BM * (BN + 1);
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int m = (wm * TM + i) * 16 + g, n = (wn * TN + j) * 8 + t2;
            mine[m * (BN + 1) + n] = acc[i][j][0];
            mine[m * (BN + 1) + n + 1] = acc[i][j][1];
            mine[(m + 8) * (BN + 1) + n] = acc[i][j][2];
            mine[(m + 8) * (BN + 1) + n + 1] = acc[i][j][3];
        }
    __syncthreads();
    // one x_dbl row per thread, walking the pixels (as in ss2d_prep_kernel); the GK partial tiles are
    // added in a fixed order
    static_assert(kPrepThreads % BM == 0, "whole rows per thread");
    const int mm = tid % BM;
    if (m0 + mm < M) {
        const int m = m0 + mm;
        const int k = direction_of(m, Cp);
        float* dst = xdbl + ((size_t)b * kDirs + k) * L * Cp + (m - k * Cp);
        for (int pp = tid / BM; pp < npx; pp += kPrepThreads / BM) {
            float v = 0.f;
#pragma unroll
            for (int z = 0; z < GK; ++z) v += out_s[((size_t)z * BM + mm) * (BN + 1) + pp];
            dst[seq_s[k * BN + pp] * Cp] = v;
        }
    }
}

// Launch of a per-image tensor-core prep (1b, 1d) over its (pixel tiles, row tiles, images) grid.
template <int TM, int TN, int GM, int GN, int GK, typename T>
vmk_status_t launch_prep_tiles(void (*kernel)(const T*, const T*, int, int, int, XdblCols, int, T*, float*),
                               size_t smem, const T* x, const T* wx, int B, int D, int H, int W, XdblCols cols,
                               int KC, T* xt, float* xdbl, cudaStream_t stream)
{
    constexpr MmaPrepTile t{TM, TN, GM, GN, GK};
    if (!allow_smem(kernel, smem)) return VMK_ERR_CUDA;
    const int L = H * W, M = kDirs * cols.Cp;
    kernel<<<dim3((L + t.bn() - 1) / t.bn(), (M + t.bm() - 1) / t.bm(), B), kPrepThreads, smem, stream>>>(
        x, wx, D, H, W, cols, KC, xt, xdbl);
    return launch_status();
}

template <int TM, int TN, int GM, int GN, int GK>
__global__ void __launch_bounds__(kPrepThreads) ss2d_prep_mma_kernel(
    const __half* __restrict__ x, const __half* __restrict__ wx, int D, int H, int W, XdblCols cols, int KC,
    __half* __restrict__ xt, float* __restrict__ xdbl)
{
    const int Cp = cols.Cp, C = cols.R + 2 * cols.N;  // x_proj rows per direction
    static_assert(GM * GN * GK * 32 == kPrepThreads, "8 warps");
    constexpr int BM = 16 * TM * GM, BN = 8 * TN * GN;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int KS = KC + 8;  // row stride in halves
    __half* xs = reinterpret_cast<__half*>(smem_raw);  // [BN][KS]: x transposed
    __half* ws = xs + (size_t)BN * KS;                   // [BM][KS]
    float* out_s = reinterpret_cast<float*>(ws + (size_t)BM * KS);  // [GK][BM][BN + 1]
    int* seq_s = reinterpret_cast<int*>(out_s + (size_t)GK * BM * (BN + 1));  // [4][BN]
    const int b = blockIdx.z, L = H * W;
    const int p0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
    const int npx = min(BN, L - p0), M = kDirs * Cp;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t2 = (lane & 3) * 2;
    const int wk = warp / (GM * GN), wm = (warp % (GM * GN)) / GN, wn = warp % GN;
    const __half* xb = x + (size_t)b * D * L;
    const bool xvec = npx == BN && L % 8 == 0;  // 16-byte runs of 8 pixels stay aligned
    const bool dvec = D % 8 == 0;
    fill_seq_table<BN>(seq_s, p0, npx, H, W);
    float acc[TM][TN][4];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;
    for (int d0 = 0; d0 < D; d0 += KC) {
        // x: channel pairs x pixels -> xs[pixel][channel pair] (one 32-bit store per pair)
        if (xvec) {
            for (int e = tid; e < (KC / 2) * (BN / 8); e += kPrepThreads) {
                const int dp = e / (BN / 8), pv = (e % (BN / 8)) * 8, d = d0 + 2 * dp;
                uint4 r0 = make_uint4(0, 0, 0, 0), r1 = r0;
                if (d < D) r0 = *reinterpret_cast<const uint4*>(xb + (size_t)d * L + p0 + pv);
                if (d + 1 < D) r1 = *reinterpret_cast<const uint4*>(xb + (size_t)(d + 1) * L + p0 + pv);
                const __half* h0 = reinterpret_cast<const __half*>(&r0);
                const __half* h1 = reinterpret_cast<const __half*>(&r1);
#pragma unroll
                for (int q = 0; q < 8; ++q)
                    *reinterpret_cast<__half2*>(xs + (size_t)(pv + q) * KS + 2 * dp) = __halves2half2(h0[q], h1[q]);
            }
        } else {
            for (int e = tid; e < (KC / 2) * BN; e += kPrepThreads) {
                const int dp = e / BN, pp = e % BN, d = d0 + 2 * dp;
                const bool in = pp < npx;
                const __half zero = __float2half_rn(0.f);
                const __half v0 = in && d < D ? xb[(size_t)d * L + p0 + pp] : zero;
                const __half v1 = in && d + 1 < D ? xb[(size_t)(d + 1) * L + p0 + pp] : zero;
                *reinterpret_cast<__half2*>(xs + (size_t)pp * KS + 2 * dp) = __halves2half2(v0, v1);
            }
        }
        // W_x rows of all four directions (padding rows c >= C and channels >= D are zero)
        for (int e = tid; e < BM * (KC / 8); e += kPrepThreads) {
            const int mm = e / (KC / 8), dq = (e % (KC / 8)) * 8, m = m0 + mm;
            const int k = direction_of(m, Cp), sr = m < M ? cols.source(m - k * Cp) : -1;
            const bool row = sr >= 0;
            const __half* src = wx + ((size_t)k * C + (row ? sr : 0)) * D + d0 + dq;
            __half* dst = ws + (size_t)mm * KS + dq;
            if (dvec) {
                const uint4 v = row && d0 + dq < D ? *reinterpret_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
                *reinterpret_cast<uint4*>(dst) = v;
            } else {
#pragma unroll
                for (int q = 0; q < 8; ++q) dst[q] = row && d0 + dq + q < D ? src[q] : __float2half_rn(0.f);
            }
        }
        __syncthreads();
        if (blockIdx.y == 0) {  // channels-last copy of x from the transposed tile
            const int kc = min(KC, D - d0);
            if (dvec) {
                for (int e = tid; e < npx * (kc / 8); e += kPrepThreads) {
                    const int pp = e / (kc / 8), dq = (e % (kc / 8)) * 8;
                    *reinterpret_cast<uint4*>(xt + ((size_t)b * L + p0 + pp) * D + d0 + dq) =
                        *reinterpret_cast<const uint4*>(xs + (size_t)pp * KS + dq);
                }
            } else {
                for (int e = tid; e < npx * kc; e += kPrepThreads) {
                    const int pp = e / kc, dd = e % kc;
                    xt[((size_t)b * L + p0 + pp) * D + d0 + dd] = xs[(size_t)pp * KS + dd];
                }
            }
        }
        for (int s = wk; s < KC / 16; s += GK) {
            const int kk = s * 16 + t2;
            uint32_t a[TM][4];
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                const __half* r = ws + (size_t)((wm * TM + i) * 16 + g) * KS + kk;
                a[i][0] = lds32(r);
                a[i][1] = lds32(r + 8 * KS);
                a[i][2] = lds32(r + 8);
                a[i][3] = lds32(r + 8 * KS + 8);
            }
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const __half* r = xs + (size_t)((wn * TN + j) * 8 + g) * KS + kk;
                const uint32_t b0 = lds32(r), b1 = lds32(r + 8);
#pragma unroll
                for (int i = 0; i < TM; ++i) mma_16816(acc[i][j], a[i], b0, b1);
            }
        }
        __syncthreads();
    }
    store_prep_tile<TM, TN, GM, GN, GK>(acc, out_s, seq_s, xdbl, b, m0, npx, L, Cp);
}

template <int TM, int TN, int GM, int GN, int GK>
vmk_status_t launch_prep_mma(const __half* x, const __half* wx, int B, int D, int H, int W, XdblCols cols, int KC,
                             __half* xt, float* xdbl, cudaStream_t stream)
{
    return launch_prep_tiles<TM, TN, GM, GN, GK>(ss2d_prep_mma_kernel<TM, TN, GM, GN, GK>,
                                                 mma_prep_smem(MmaPrepTile{TM, TN, GM, GN, GK}, KC), x, wx, B, D,
                                                 H, W, cols, KC, xt, xdbl, stream);
}

// 1c. prep for short sequences on tensor cores (both dtypes): the same GEMM and outputs as 1b, built
// for L of a few hundred pixels or less (VMamba stages 1-3), where 1b waits on load latency: its
// per-image pixel tiles leave slots empty (49 of 64 at 7x7), each 64-row tile re-reads x, and each
// channel stage's loads finish before its MMA starts. Here:
// - a pixel tile is 64 consecutive pixels of the flat (image, pixel) order, so it may span images and
//   only the grid's last tile has empty slots;
// - a block holds BM = 32 TM x_dbl rows, all of them up to 320 (x read once per tile), fewer where
//   the grid would not give every SM a block (flat_prep_plan);
// - channels are staged in chunks of 128 bytes per row (64 float16 or 32 float32 channels) in two
//   buffers: the next chunk's W_x goes to shared memory by cp.async and its x into registers while
//   the current chunk's MMA runs (one __syncthreads per chunk);
// - x is read along pixels: 16- or 8-byte runs of pixels where L is a multiple of the run (a run
//   then stays inside one image and aligned), else one element per load, 4 lanes per 32-bit word
//   of channels and 8 consecutive pixels per 4-lane group. All three store whole 32-bit words (2
//   float16 or 1 float32 channel) to the [pixel][channel] tile without bank conflicts (row stride 36
//   words: bank 4 pixel + word, distinct over a warp's lanes).
// - the MMA: float16, mma.sync m16n8k16 on the staged operands; float32, 3xTF32 (split_tf32 as the
//   fragments are loaded, mma_1688_3xtf32, as in 1d): the same word addresses, 4 k-steps per chunk.
// 8 warps: 2 row warps x 4 pixel warps of 16 pixels; a row warp's m-tiles interleave with the other's
// (tile i * 2 + wm) and tiles past M are skipped, so a partly used BM costs no MMA.
constexpr int kFlatPx = 64;                         // pixels per tile
constexpr int kFlatChunkBytes = 128;                // bytes of one staged row's chunk of channels
constexpr int kFlatRowBytes = kFlatChunkBytes + 16; // staged row stride (36 words)
constexpr int kFlatGM = 2, kFlatGN = 4, kFlatTN = 2;  // row warps, pixel warps, n8 tiles per warp
constexpr int kFlatRows[] = {64, 128, 160, 224, 320};  // BM choices (TM = 2, 4, 5, 7, 10)
constexpr int kFlatMaxPixels = 1024;                   // longest L the launcher gives the flat tiles

inline size_t flat_prep_smem(int BM)
{
    return 2 * (size_t)(kFlatPx + BM) * kFlatRowBytes   // two chunk stages; the epilogue reuses them
           + (size_t)kDirs * kFlatPx * sizeof(long long) // x_dbl row offset of each (direction, pixel)
           + (size_t)BM * sizeof(long long);             // W_x row offset of each x_dbl row
}

// 16 bytes global -> shared without a register round trip (sm_80+); fill = false writes 16 zero bytes.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool fill)
{
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(fill ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// One 32-bit word of a staged [pixel][channel] row from consecutive channels' values: two float16
// channels, or one float32 channel.
__device__ __forceinline__ __half2 staged_word(__half lo, __half hi) { return __halves2half2(lo, hi); }
__device__ __forceinline__ float staged_word(float v, float /*unused*/) { return v; }

template <typename T, int TM, int XRUN>
__global__ void __launch_bounds__(kPrepThreads, TM <= 7 ? 2 : 1) ss2d_prep_flat_kernel(
    const T* __restrict__ x, const T* __restrict__ wx, int B, int D, int H, int W, XdblCols cols,
    T* __restrict__ xt, float* __restrict__ xdbl)
{
    constexpr bool kHalf = std::is_same<T, __half>::value;
    static_assert(kHalf || std::is_same<T, float>::value, "float16 or float32 I/O");
    constexpr int BM = 16 * TM * kFlatGM, BN = kFlatPx;
    constexpr int KC = kFlatChunkBytes / sizeof(T), KS = kFlatRowBytes / sizeof(T);  // channels per chunk, row stride
    constexpr int CPW = 4 / sizeof(T);     // channels per 32-bit word of a staged row
    constexpr int VE = 16 / sizeof(T);     // elements per 16-byte run (W_x, xt)
    constexpr int KSTEP = kHalf ? 16 : 8;  // channels per MMA k-step (m16n8k16 / m16n8k8)
    constexpr int STAGE = (BN + BM) * KS;  // elements per stage: x [BN][KS], then W_x [BM][KS]
    using XWord = typename std::conditional<kHalf, __half2, float>::type;
    static_assert(kFlatGM * kFlatGN * 32 == kPrepThreads && kFlatGN * kFlatTN * 8 == BN, "8 warps over 64 pixels");
    static_assert(KC == 32 * CPW && KC / VE == 8, "x loads: 32 lanes x 1 word (runs) or 8 x 4 x 1 (scalar)");
    static_assert(XRUN == 1 || XRUN * sizeof(T) == 16 || XRUN * sizeof(T) == 8, "pixel runs of 16 or 8 bytes");
    static_assert((size_t)BM * (BN + 1) * sizeof(float) <= 2 * STAGE * sizeof(T), "out_s fits in the stages");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* stages = reinterpret_cast<T*>(smem_raw);
    float* out_s = reinterpret_cast<float*>(smem_raw);  // [BM][BN + 1], after the channel loop
    long long* rowoff_s = reinterpret_cast<long long*>(stages + 2 * STAGE);  // [4][BN], -1 past the last pixel
    long long* wrow_s = rowoff_s + kDirs * BN;                               // [BM], -1 for a zero row
    const int Cp = cols.Cp, C = cols.R + 2 * cols.N, M = kDirs * Cp, L = H * W;
    const long long BL = (long long)B * L, gp0 = (long long)blockIdx.x * BN;
    const int m0 = blockIdx.y * BM;
    const int npx = (int)min((long long)BN, BL - gp0);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t2 = (lane & 3) * 2;
    const int wm = warp / kFlatGN, wn = warp % kFlatGN;
    const bool dvec = D % VE == 0;  // W_x rows and xt rows in 16-byte runs
    const int nchunks = (D + KC - 1) / KC;

    for (int e = tid; e < kDirs * BN; e += kPrepThreads) {
        const int k = e / BN, pp = e % BN;
        long long off = -1;
        if (pp < npx) {
            const long long gp = gp0 + pp;
            const int b = (int)(gp / L), p = (int)(gp - (long long)b * L);
            off = ((long long)(b * kDirs + k) * L + seq_index(k, p / W, p % W, H, W)) * Cp;
        }
        rowoff_s[e] = off;
    }
    for (int mm = tid; mm < BM; mm += kPrepThreads) {
        const int m = m0 + mm, k = direction_of(m, Cp), sr = m < M ? cols.source(m - k * Cp) : -1;
        wrow_s[mm] = sr >= 0 ? ((long long)k * C + sr) * D : -1;
    }

    // This thread's x. Runs of XRUN pixels (16 or 8 bytes; L a multiple of XRUN, so a run stays
    // inside one image, aligned, and is whole or past the last pixel): word `lane` (channels
    // CPW lane..) of runs warp + 8 u, u < 8 / XRUN. One element per load (XRUN 1): pixel 8 warp + g,
    // words 4 i + (lane & 3), i < 8. Pixels past the last one load zeros.
    constexpr int XU = XRUN > 1 ? 8 / XRUN : 1;  // runs (or pixels) per thread
    using XRun = typename std::conditional<XRUN * sizeof(T) == 16, uint4, uint2>::type;
    int xpp[XU];
    bool xin[XU];
    const T* xsrc[XU];
#pragma unroll
    for (int u = 0; u < XU; ++u) {
        xpp[u] = XRUN > 1 ? XRUN * (warp + 8 * u) : 8 * warp + g;
        xin[u] = xpp[u] < npx;
        xsrc[u] = x;
        if (xin[u]) {
            const long long gp = gp0 + xpp[u];
            const int b = (int)(gp / L);
            xsrc[u] = x + (size_t)b * D * L + (size_t)(gp - (long long)b * L);
        }
    }
    XRun xr[XU][CPW];  // runs: channels d, d + CPW - 1
    XWord xw[8];       // one element per load: 8 words (the unused one of the two arrays is dropped)
    const T zero = from_f32<T>(0.f);
    auto load_x = [&](int d0) {
        if constexpr (XRUN > 1) {
            const int d = d0 + CPW * lane;
            const XRun none{};
#pragma unroll
            for (int u = 0; u < XU; ++u)
#pragma unroll
                for (int c = 0; c < CPW; ++c)
                    xr[u][c] = xin[u] && d + c < D ? *reinterpret_cast<const XRun*>(xsrc[u] + (size_t)(d + c) * L) : none;
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const int d = d0 + CPW * (4 * i + (lane & 3));
                const T v0 = xin[0] && d < D ? xsrc[0][(size_t)d * L] : zero;
                const T v1 = CPW > 1 && xin[0] && d + 1 < D ? xsrc[0][(size_t)(d + 1) * L] : zero;
                xw[i] = staged_word(v0, v1);
            }
        }
    };
    auto store_x = [&](T* xs) {
        if constexpr (XRUN > 1) {
#pragma unroll
            for (int u = 0; u < XU; ++u) {
                const T* h0 = reinterpret_cast<const T*>(&xr[u][0]);
                const T* h1 = reinterpret_cast<const T*>(&xr[u][CPW - 1]);
#pragma unroll
                for (int q = 0; q < XRUN; ++q)
                    *reinterpret_cast<XWord*>(xs + (xpp[u] + q) * KS + CPW * lane) = staged_word(h0[q], h1[q]);
            }
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) *reinterpret_cast<XWord*>(xs + xpp[0] * KS + CPW * (4 * i + (lane & 3))) = xw[i];
        }
    };
    // W_x rows of chunk d0 (zero for padding rows and channels >= D); rows of m-tiles past M are not
    // read by the MMA and not loaded
    auto load_w = [&](int d0, T* ws) {
        for (int e = tid; e < BM * (KC / VE); e += kPrepThreads) {
            const int mm = e >> 3, dq = (e & 7) * VE;
            if (m0 + (mm & ~15) >= M) continue;
            const long long r = wrow_s[mm];
            T* dst = ws + mm * KS + dq;
            if (dvec) {
                const bool in = r >= 0 && d0 + dq < D;
                cp_async16(dst, in ? wx + r + d0 + dq : wx, in);
            } else {
#pragma unroll
                for (int q = 0; q < VE; ++q) dst[q] = r >= 0 && d0 + dq + q < D ? wx[r + d0 + dq + q] : zero;
            }
        }
        cp_async_commit();
    };

    float acc[TM][kFlatTN][4];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < kFlatTN; ++j)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;

    __syncthreads();  // the row tables
    load_w(0, stages + BN * KS);
    load_x(0);
    store_x(stages);
    for (int c = 0; c < nchunks; ++c) {
        const int d0 = c * KC;
        const T* xs = stages + (c & 1) * STAGE;
        const T* ws = xs + BN * KS;
        T* next = stages + ((c + 1) & 1) * STAGE;
        cp_async_wait_all();
        // chunk c is complete in its stage, and every warp is done with chunk c - 1's stage (next)
        __syncthreads();
        const bool more = c + 1 < nchunks;
        if (more) {  // in flight during this chunk's MMA
            load_w(d0 + KC, next + BN * KS);
            load_x(d0 + KC);
        }
        if (blockIdx.y == 0) {  // channels-last copy of x: the tile's pixels are consecutive rows of xt
            const int kc = min(KC, D - d0);
            T* xtb = xt + (size_t)gp0 * D + d0;
            if (dvec) {
                for (int e = tid; e < npx * (KC / VE); e += kPrepThreads) {
                    const int pp = e >> 3, dq = (e & 7) * VE;
                    if (dq < kc)
                        *reinterpret_cast<uint4*>(xtb + (size_t)pp * D + dq) = *reinterpret_cast<const uint4*>(xs + pp * KS + dq);
                }
            } else {
                for (int e = tid; e < npx * kc; e += kPrepThreads) {
                    const int pp = e / kc, dd = e - pp * kc;
                    xtb[(size_t)pp * D + dd] = xs[pp * KS + dd];
                }
            }
        }
#pragma unroll
        for (int s = 0; s < KC / KSTEP; ++s) {
            if (d0 + s * KSTEP >= D) break;  // zero channels past D (block-uniform)
            if constexpr (kHalf) {
                const int kk = s * 16 + t2;
                uint32_t bf[kFlatTN][2];
#pragma unroll
                for (int j = 0; j < kFlatTN; ++j) {
                    const __half* r = xs + ((wn * kFlatTN + j) * 8 + g) * KS + kk;
                    bf[j][0] = lds32(r);
                    bf[j][1] = lds32(r + 8);
                }
#pragma unroll
                for (int i = 0; i < TM; ++i) {
                    const int mt = i * kFlatGM + wm;
                    if (m0 + mt * 16 >= M) continue;  // warp-uniform
                    const __half* r = ws + (mt * 16 + g) * KS + kk;
                    uint32_t a[4];
                    a[0] = lds32(r);
                    a[1] = lds32(r + 8 * KS);
                    a[2] = lds32(r + 8);
                    a[3] = lds32(r + 8 * KS + 8);
#pragma unroll
                    for (int j = 0; j < kFlatTN; ++j) mma_16816(acc[i][j], a, bf[j][0], bf[j][1]);
                }
            } else {
                const int kk = s * 8 + (lane & 3);
                uint32_t bh[kFlatTN][2], bl[kFlatTN][2];
#pragma unroll
                for (int j = 0; j < kFlatTN; ++j) {  // B (channel x pixel): (t, g), (t + 4, g)
                    const float* r = xs + ((wn * kFlatTN + j) * 8 + g) * KS + kk;
                    split_tf32(r[0], bh[j][0], bl[j][0]);
                    split_tf32(r[4], bh[j][1], bl[j][1]);
                }
#pragma unroll
                for (int i = 0; i < TM; ++i) {
                    const int mt = i * kFlatGM + wm;
                    if (m0 + mt * 16 >= M) continue;  // warp-uniform
                    // A (row x channel): (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)
                    const float* r = ws + (mt * 16 + g) * KS + kk;
                    uint32_t ah[4], al[4];
                    split_tf32(r[0], ah[0], al[0]);
                    split_tf32(r[8 * KS], ah[1], al[1]);
                    split_tf32(r[4], ah[2], al[2]);
                    split_tf32(r[8 * KS + 4], ah[3], al[3]);
#pragma unroll
                    for (int j = 0; j < kFlatTN; ++j) mma_1688_3xtf32(acc[i][j], ah, al, bh[j], bl[j]);
                }
            }
        }
        if (more) store_x(next);
    }
    __syncthreads();  // every warp is done with the stages, which out_s reuses
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int mt = i * kFlatGM + wm;
        if (m0 + mt * 16 >= M) continue;
#pragma unroll
        for (int j = 0; j < kFlatTN; ++j) {
            const int m = mt * 16 + g, n = (wn * kFlatTN + j) * 8 + t2;
            out_s[m * (BN + 1) + n] = acc[i][j][0];
            out_s[m * (BN + 1) + n + 1] = acc[i][j][1];
            out_s[(m + 8) * (BN + 1) + n] = acc[i][j][2];
            out_s[(m + 8) * (BN + 1) + n + 1] = acc[i][j][3];
        }
    }
    __syncthreads();
    // consecutive threads take consecutive rows m of one pixel: for a (pixel, direction) the lanes
    // write consecutive columns of its Cp contiguous floats (coalesced)
    for (int e = tid; e < BM * BN; e += kPrepThreads) {
        const int mm = e % BM, pp = e / BM, m = m0 + mm;
        if (m >= M || pp >= npx) continue;
        const int k = direction_of(m, Cp);
        xdbl[rowoff_s[k * BN + pp] + (m - k * Cp)] = out_s[mm * (BN + 1) + pp];
    }
}

template <typename T, int TM, int XRUN>
vmk_status_t launch_prep_flat_tm(const T* x, const T* wx, int B, int D, int H, int W, XdblCols cols, T* xt,
                                 float* xdbl, cudaStream_t stream)
{
    constexpr int BM = 16 * TM * kFlatGM;
    auto kernel = ss2d_prep_flat_kernel<T, TM, XRUN>;
    const size_t smem = flat_prep_smem(BM);
    if (!allow_smem(kernel, smem)) return VMK_ERR_CUDA;
    const long long tiles = ((long long)B * H * W + kFlatPx - 1) / kFlatPx;
    if (tiles > 0x7fffffffLL) return VMK_ERR_UNSUPPORTED;
    const int M = kDirs * cols.Cp;
    kernel<<<dim3((unsigned)tiles, (M + BM - 1) / BM), kPrepThreads, smem, stream>>>(x, wx, B, D, H, W, cols, xt,
                                                                                     xdbl);
    return launch_status();
}

template <typename T, int TM>
vmk_status_t launch_prep_flat_rows(const T* x, const T* wx, int B, int D, int H, int W, XdblCols cols, T* xt,
                                   float* xdbl, cudaStream_t stream)
{
    constexpr int V = 16 / sizeof(T);  // the widest pixel run that stays aligned and inside one image
    const int L = H * W;
    if (L % V == 0) return launch_prep_flat_tm<T, TM, V>(x, wx, B, D, H, W, cols, xt, xdbl, stream);
    if (L % (V / 2) == 0) return launch_prep_flat_tm<T, TM, V / 2>(x, wx, B, D, H, W, cols, xt, xdbl, stream);
    return launch_prep_flat_tm<T, TM, 1>(x, wx, B, D, H, W, cols, xt, xdbl, stream);
}

template <typename T>
vmk_status_t launch_prep_flat(int rows, const T* x, const T* wx, int B, int D, int H, int W, XdblCols cols, T* xt,
                              float* xdbl, cudaStream_t stream)
{
    switch (rows) {
    case 64: return launch_prep_flat_rows<T, 2>(x, wx, B, D, H, W, cols, xt, xdbl, stream);
    case 128: return launch_prep_flat_rows<T, 4>(x, wx, B, D, H, W, cols, xt, xdbl, stream);
    case 160: return launch_prep_flat_rows<T, 5>(x, wx, B, D, H, W, cols, xt, xdbl, stream);
    case 224: return launch_prep_flat_rows<T, 7>(x, wx, B, D, H, W, cols, xt, xdbl, stream);
    default: return launch_prep_flat_rows<T, 10>(x, wx, B, D, H, W, cols, xt, xdbl, stream);
    }
}

// Rows per flat block: the fewest row tiles (x read the fewest times) among the BM choices whose grid
// still gives every SM a block, ties to the smaller BM (less of the last tile unused). Each flat block
// walks its channel chunks in sequence and hides their latency only by its own double buffering, so
// an SM without a block is lost bandwidth, while one more row tile only re-reads x from L2 (the
// row tiles of a pixel tile run at the same time). Without such a grid: 64 rows (the most blocks),
// and blocks < dev.sms tells the caller.
struct FlatPrepPlan {
    int rows;
    long long blocks;
};

inline FlatPrepPlan flat_prep_plan(int B, int L, int M, const DeviceInfo& dev)
{
    const long long tiles = ((long long)B * L + kFlatPx - 1) / kFlatPx;
    FlatPrepPlan best{kFlatRows[0], tiles * ((M + kFlatRows[0] - 1) / kFlatRows[0])};
    bool found = false;
    for (int rows : kFlatRows) {
        const long long blocks = tiles * ((M + rows - 1) / rows);
        if (blocks < dev.sms) continue;
        if (!found || blocks < best.blocks) best = {rows, blocks};
        found = true;
    }
    return best;
}


// 1d. prep on tensor cores for float32 I/O: the same GEMM and outputs in 3xTF32 (split_tf32: each
// operand as hi + lo TF32 halves, three m16n8k8 products, float32 accumulation), so x_dbl keeps
// float32 accuracy. The block tiles and warp grid are those of ss2d_prep_mma_kernel (MmaPrepTile).
// Channels are staged KC at a time as float32 (split when a fragment is loaded): x as
// [channel][BN + 8] (pixel runs, as read; B fragment (channel t, pixel g): 8 t + g distinct banks),
// W_x as [row][KC + 4] (A fragment (row g, channel t): 4 g + t distinct banks, KC a multiple of 32).
// After the channel loop the partial tiles reuse the staging memory.
inline size_t tf32_prep_smem(const MmaPrepTile& t, int KC)
{
    const size_t staging = ((size_t)KC * (t.bn() + 8) + (size_t)t.bm() * (KC + 4)) * sizeof(float);
    const size_t tiles = (size_t)t.GK * t.bm() * (t.bn() + 1) * sizeof(float);
    return (size_t)kDirs * t.bn() * sizeof(int) + (staging > tiles ? staging : tiles);
}

template <int TM, int TN, int GM, int GN, int GK>
__global__ void __launch_bounds__(kPrepThreads) ss2d_prep_tf32_kernel(
    const float* __restrict__ x, const float* __restrict__ wx, int D, int H, int W, XdblCols cols, int KC,
    float* __restrict__ xt, float* __restrict__ xdbl)
{
    const int Cp = cols.Cp, C = cols.R + 2 * cols.N;  // x_proj rows per direction
    static_assert(GM * GN * GK * 32 == kPrepThreads, "8 warps");
    constexpr int BM = 16 * TM * GM, BN = 8 * TN * GN, XS = BN + 8;
    static_assert(BN % 32 == 16 || BN % 32 == 0, "conflict-free B fragments need BN + 8 = 8 or 24 mod 32");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int WS = KC + 4;                                         // W_x row stride in floats
    int* seq_s = reinterpret_cast<int*>(smem_raw);                 // [4][BN]
    float* xs = reinterpret_cast<float*>(seq_s + kDirs * BN);      // [KC][XS]
    float* ws = xs + (size_t)KC * XS;                              // [BM][WS]
    float* out_s = xs;                                             // [GK][BM][BN + 1], after the loop
    const int b = blockIdx.z, L = H * W;
    const int p0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
    const int npx = min(BN, L - p0), M = kDirs * Cp;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wk = warp / (GM * GN), wm = (warp % (GM * GN)) / GN, wn = warp % GN;
    const float* xb = x + (size_t)b * D * L;
    const bool xvec = npx == BN && L % 4 == 0;  // 16-byte runs of 4 pixels stay aligned
    const bool dvec = D % 4 == 0;               // 16-byte runs of 4 channels of a W_x row stay aligned
    fill_seq_table<BN>(seq_s, p0, npx, H, W);
    float acc[TM][TN][4];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;
    for (int d0 = 0; d0 < D; d0 += KC) {
        // x: channels x pixels as read (zero past D and past the image)
        if (xvec) {
            for (int e = tid; e < KC * (BN / 4); e += kPrepThreads) {
                const int dd = e / (BN / 4), pv = (e % (BN / 4)) * 4;
                float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
                if (d0 + dd < D) v = *reinterpret_cast<const float4*>(xb + (size_t)(d0 + dd) * L + p0 + pv);
                *reinterpret_cast<float4*>(xs + (size_t)dd * XS + pv) = v;
            }
        } else {
            for (int e = tid; e < KC * BN; e += kPrepThreads) {
                const int dd = e / BN, pp = e % BN;
                xs[(size_t)dd * XS + pp] = d0 + dd < D && pp < npx ? xb[(size_t)(d0 + dd) * L + p0 + pp] : 0.f;
            }
        }
        // W_x rows of all four directions (padding rows c >= C and channels >= D are zero)
        for (int e = tid; e < BM * (KC / 4); e += kPrepThreads) {
            const int mm = e / (KC / 4), dq = (e % (KC / 4)) * 4, m = m0 + mm;
            const int k = direction_of(m, Cp), sr = m < M ? cols.source(m - k * Cp) : -1;
            const float* src = wx + ((size_t)k * C + (sr >= 0 ? sr : 0)) * D + d0 + dq;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (sr >= 0 && d0 + dq < D) {
                if (dvec) {
                    v = *reinterpret_cast<const float4*>(src);
                } else {
                    v.x = src[0];
                    v.y = d0 + dq + 1 < D ? src[1] : 0.f;
                    v.z = d0 + dq + 2 < D ? src[2] : 0.f;
                    v.w = d0 + dq + 3 < D ? src[3] : 0.f;
                }
            }
            *reinterpret_cast<float4*>(ws + (size_t)mm * WS + dq) = v;
        }
        __syncthreads();
        if (blockIdx.y == 0) {  // channels-last copy of x, coalesced along channels
            const int kc = min(KC, D - d0);
            for (int e = tid; e < npx * kc; e += kPrepThreads) {
                const int pp = e / kc, dd = e % kc;
                xt[((size_t)b * L + p0 + pp) * D + d0 + dd] = xs[(size_t)dd * XS + pp];
            }
        }
        for (int s = wk; s < KC / 8; s += GK) {
            const int kk = s * 8 + t;
            uint32_t ah[TM][4], al[TM][4];
#pragma unroll
            for (int i = 0; i < TM; ++i) {  // A (row x channel): (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)
                const float* r = ws + (size_t)((wm * TM + i) * 16 + g) * WS + kk;
                split_tf32(r[0], ah[i][0], al[i][0]);
                split_tf32(r[8 * WS], ah[i][1], al[i][1]);
                split_tf32(r[4], ah[i][2], al[i][2]);
                split_tf32(r[8 * WS + 4], ah[i][3], al[i][3]);
            }
#pragma unroll
            for (int j = 0; j < TN; ++j) {  // B (channel x pixel): (t, g), (t + 4, g)
                const float* r = xs + (size_t)kk * XS + (wn * TN + j) * 8 + g;
                uint32_t bh[2], bl[2];
                split_tf32(r[0], bh[0], bl[0]);
                split_tf32(r[4 * XS], bh[1], bl[1]);
#pragma unroll
                for (int i = 0; i < TM; ++i) mma_1688_3xtf32(acc[i][j], ah[i], al[i], bh, bl);
            }
        }
        __syncthreads();  // also: the staging is free for out_s after the last round
    }
    store_prep_tile<TM, TN, GM, GN, GK>(acc, out_s, seq_s, xdbl, b, m0, npx, L, Cp);
}

template <int TM, int TN, int GM, int GN, int GK>
vmk_status_t launch_prep_tf32(const float* x, const float* wx, int B, int D, int H, int W, XdblCols cols, int KC,
                              float* xt, float* xdbl, cudaStream_t stream)
{
    return launch_prep_tiles<TM, TN, GM, GN, GK>(ss2d_prep_tf32_kernel<TM, TN, GM, GN, GK>,
                                                 tf32_prep_smem(MmaPrepTile{TM, TN, GM, GN, GK}, KC), x, wx, B, D,
                                                 H, W, cols, KC, xt, xdbl, stream);
}

// Prep tile choice: large tiles unless they would give fewer than 2 blocks per SM (few images, short
// sequences), then small ones (SIMT 16 x 16; tensor cores 16 x 16 with the channel sum split 8 ways).
inline bool prep_small_tiles(int B, int L, int M, const DeviceInfo& dev)
{
    return (long long)((L + kPrepPx - 1) / kPrepPx) * ((M + 63) / 64) * B < 2LL * dev.sms;
}

// Tuning and test knob: VMK_PREP_TILE = simt | large | small | flat forces the prep variant (both
// dtypes: the CUDA-core GEMM, the large or small per-image tensor-core tiles, or the flat tiles).
inline const char* prep_override()
{
    const char* env = getenv("VMK_PREP_TILE");
    return env && *env ? env : nullptr;
}

// Tuning and test knob: VMK_PREP_FLAT_ROWS = 64 | 128 | 160 | 224 | 320 forces the flat prep's rows
// per block (other values: the plan's choice).
inline int flat_rows_override(int planned)
{
    const char* env = getenv("VMK_PREP_FLAT_ROWS");
    if (!env) return planned;
    const int want = atoi(env);
    for (int rows : kFlatRows)
        if (rows == want) return rows;
    return planned;
}

template <typename T>
vmk_status_t launch_prep_simt(const T* x, const T* wx, int B, int D, int H, int W, XdblCols cols, T* xt, float* xdbl,
                              cudaStream_t stream, bool small)
{
    const int L = H * W, M = kDirs * cols.Cp;
    if (small)
        ss2d_prep_kernel<T, 16, 16><<<dim3((L + 15) / 16, (M + 15) / 16, B), kPrepThreads, 0, stream>>>(
            x, wx, D, H, W, cols, xt, xdbl);
    else if (M <= 32)
        ss2d_prep_kernel<T, 32, kPrepPx><<<dim3((L + kPrepPx - 1) / kPrepPx, 1, B), kPrepThreads, 0, stream>>>(
            x, wx, D, H, W, cols, xt, xdbl);
    else
        ss2d_prep_kernel<T, 64, kPrepPx><<<dim3((L + kPrepPx - 1) / kPrepPx, (M + 63) / 64, B), kPrepThreads, 0,
                                            stream>>>(x, wx, D, H, W, cols, xt, xdbl);
    return launch_status();
}

// The prep variant for a launch, both dtypes. Flat tiles (1c) for short sequences, where their grid
// gives every SM a block (VMamba-T stages 1-3 from 11 / 22 / 42 images on 132 SMs): there the
// per-image tiles (1b, 1d) wait on load latency (empty pixel slots, x re-read per row tile, no
// overlap of loads and MMA). Not at L > 1024 (stage 0, 3136 pixels: whole tiles, M <= 64 is one row
// tile, and 1b runs near its bytes floor), and not for few images (batch 1), whose flat grid would
// leave SMs idle: the per-image tiles split the work finer there, small ones below 2 blocks per SM.
// VMK_PREP_TILE forces a variant (simt: the CUDA-core GEMM, with the small-tile rule for its tiles).
struct PrepChoice {
    bool simt, flat, small;
    int flat_rows;
};

inline PrepChoice choose_prep(int B, int L, int M, const DeviceInfo& dev)
{
    const FlatPrepPlan plan = flat_prep_plan(B, L, M, dev);
    PrepChoice c{false, L <= kFlatMaxPixels && plan.blocks >= dev.sms, prep_small_tiles(B, L, M, dev), plan.rows};
    if (const char* force = prep_override()) {
        if (!strcmp(force, "simt")) c.simt = true, c.flat = false;
        if (!strcmp(force, "large")) c.small = c.flat = false;
        if (!strcmp(force, "small")) c.small = true, c.flat = false;
        if (!strcmp(force, "flat")) c.flat = true;
    }
    c.flat_rows = flat_rows_override(c.flat_rows);
    return c;
}

}  // namespace

vmk_status_t ss2d_prep(const float* x, const float* wx, int B, int D, int H, int W, XdblCols cols, float* xt,
                       float* xdbl, cudaStream_t stream, const DeviceInfo& dev)
{
    // Tensor cores in 3xTF32 (float32 accuracy): the flat tiles (1c) or the float16 prep's per-image
    // tiles (1d).
    const int M = kDirs * cols.Cp;
    const PrepChoice c = choose_prep(B, H * W, M, dev);
    if (c.simt) return launch_prep_simt(x, wx, B, D, H, W, cols, xt, xdbl, stream, c.small);
    if (c.flat) return launch_prep_flat(c.flat_rows, x, wx, B, D, H, W, cols, xt, xdbl, stream);
    // Channels per stage, a multiple of 32 (conflict-free A fragments): small tiles up to 256 (the
    // 8 warps then take 4 k8 steps each per round; 41 KB), large ones 64 (36 KB: 6 blocks per SM).
    const int D32 = (D + 31) / 32 * 32;
    if (c.small) {
        const int KC = D32 < 256 ? D32 : 256;
        return launch_prep_tf32<kMmaSmall.TM, kMmaSmall.TN, kMmaSmall.GM, kMmaSmall.GN, kMmaSmall.GK>(
            x, wx, B, D, H, W, cols, KC, xt, xdbl, stream);
    }
    const int KC = D32 < 64 ? D32 : 64;
    if (M <= 32)
        return launch_prep_tf32<kMmaRows32.TM, kMmaRows32.TN, kMmaRows32.GM, kMmaRows32.GN, kMmaRows32.GK>(
            x, wx, B, D, H, W, cols, KC, xt, xdbl, stream);
    return launch_prep_tf32<kMmaRows64.TM, kMmaRows64.TN, kMmaRows64.GM, kMmaRows64.GN, kMmaRows64.GK>(
        x, wx, B, D, H, W, cols, KC, xt, xdbl, stream);
}

vmk_status_t ss2d_prep(const __half* x, const __half* wx, int B, int D, int H, int W, XdblCols cols, __half* xt,
                       float* xdbl, cudaStream_t stream, const DeviceInfo& dev)
{
    const int M = kDirs * cols.Cp;
    const PrepChoice c = choose_prep(B, H * W, M, dev);
    if (c.simt) return launch_prep_simt(x, wx, B, D, H, W, cols, xt, xdbl, stream, c.small);
    if (c.flat) return launch_prep_flat(c.flat_rows, x, wx, B, D, H, W, cols, xt, xdbl, stream);
    if (c.small) {  // the whole channel sum in one stage (up to 1024 channels): one round of loads
        const int KC = D <= 1024 ? (D + 127) / 128 * 128 : 1024;
        return launch_prep_mma<kMmaSmall.TM, kMmaSmall.TN, kMmaSmall.GM, kMmaSmall.GN, kMmaSmall.GK>(
            x, wx, B, D, H, W, cols, KC, xt, xdbl, stream);
    }
    // Channels per stage: all of them up to 128 (one round of loads), else 128 (the shared memory
    // then still allows the 4 blocks per SM that the registers allow).
    const int KC = D <= 128 ? (D + 15) / 16 * 16 : 128;
    if (M <= 32)
        return launch_prep_mma<kMmaRows32.TM, kMmaRows32.TN, kMmaRows32.GM, kMmaRows32.GN, kMmaRows32.GK>(
            x, wx, B, D, H, W, cols, KC, xt, xdbl, stream);
    return launch_prep_mma<kMmaRows64.TM, kMmaRows64.TN, kMmaRows64.GM, kMmaRows64.GN, kMmaRows64.GK>(
        x, wx, B, D, H, W, cols, KC, xt, xdbl, stream);
}

}  // namespace vmk
