// SS2DScan, decomposed from its bounds (docs/KERNELS.md, "v5"): three launches.
//   1. prep (ss2d_prep.cu): x_dbl = W_x[k] @ x for all four directions at each direction's own
//      sequence index, and x channels-last.
//   2. scan: one block per (image, direction, channel groups); lanes = channels, so x_dbl is a
//      shared-memory broadcast; dt = W_dt x_dbl[:R] per 16 steps on tensor cores (float16 operands
//      for float16 I/O, 3xTF32 for float32) or from a W_dt register tile. The only loop-carried
//      dependency is h = a * h + b; everything else of a step is independent work.
//      Long sequences with few rows (small batch, early stages) are cut into S chunk slots of
//      T steps per super-chunk: each warp scans its chunk from zero in registers, the block
//      chains the S chunk summaries through shared memory (h_out = P * h_in + h_end) and every
//      thread fixes its T outputs up, y = C * (h_local + P_local * h_in): no step is recomputed.
//      Each direction's y goes to a float32 workspace at its pixel's place, channels-last.
//   3. merge: y[b, d, p] = sum_k y_k[b, p, d] + (sum_k Ds[k, d]) x[b, d, p], transposed back
//      through a shared-memory tile, in a fixed order: deterministic, no atomics.
//   Short sequences (2+3 fused, ss2d_fused_scan_kernel): one block scans all four directions of its
//   channels into shared y tiles and writes y itself (no partials, no merge launch).
#include "ss2d_parts.cuh"

#include <stdlib.h>
#include <string.h>

#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

namespace vmk {
namespace {

constexpr int kWindowSub = 4;      // unchunked scans stage 4 * T steps of x_dbl at a time
constexpr int kMergeThreads = 256;

// Per-direction partial outputs: float32 for float32 I/O; float16 for float16 I/O (each partial
// is rounded once, about as much as the output itself; measured in tests/test_kernels_gpu.py).
template <typename T> struct Partial { using type = float; };
template <> struct Partial<__half> { using type = __half; };

// Segmented chunked scan (small batches, see ss2d_launch): up to kMaxSegments segments of a sequence,
// each summarised per channel by (decay, end state) for d_state 1 and (sum of delta, 16 end states)
// otherwise. Only batches up to kSegmentMaxBatch get the summary buffer.
constexpr int kMaxSegments = 16, kSegmentMaxBatch = 4;
inline int segment_stride(int N) { return N == 1 ? 2 : kMaxDState + 1; }

struct Ss2dLayout {
    size_t xt, xdbl, ys, seg, total;
};

Ss2dLayout ss2d_layout(const vmk_ss2d_args_t* a)
{
    const size_t L = (size_t)a->height * a->width, B = a->batch, D = a->dim;
    const size_t esz = a->dtype == VMK_FLOAT16 ? sizeof(__half) : sizeof(float);
    const size_t Cp = xdbl_cols(a->dt_rank, a->d_state).Cp;
    Ss2dLayout w;
    w.xt = 0;
    w.xdbl = align_up(B * L * D * esz);
    w.ys = align_up(w.xdbl + B * kDirs * L * Cp * sizeof(float));
    w.seg = align_up(w.ys + B * kDirs * L * D * esz);
    const size_t seg_floats = B <= kSegmentMaxBatch ? B * kDirs * kMaxSegments * D * segment_stride(a->d_state) : 0;
    w.total = align_up(w.seg + seg_floats * sizeof(float));
    return w;
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
    int bo, co;            // columns of B and C in a staged x_dbl row (XdblCols)
    int S, GW, ngroups;    // chunk slots, channel groups (warps) per block, blocks along channels
    // Segments (chunked scans only): blockIdx.z takes seg_steps steps of the sequence from
    // blockIdx.z * seg_steps. mode 0: one segment, the whole sequence. mode 1: summaries only, of
    // segments 0..nseg-2 into seg_sum [B][4][nseg][D][segment_stride]. mode 2: every segment starts
    // from the state that the summaries of the segments before it chain to, and writes y.
    float* seg_sum;
    int seg_steps, nseg, mode;
};

// The fused scan + merge's extra arguments (ss2d_fused_scan_kernel; a separate struct: growing
// ScanParams changed ptxas's register allocation of the other scan kernels): the op's x and y
// [B][D][L] in the I/O dtype, Ds [4][D], the x_dbl rows staged per direction and window (16, 32 or
// 64; 0 on entry to launch_fused: chosen there) and, for the host only, the fewest resident warps
// per SM that launch_fused accepts.
struct FusedParams {
    const void* x;
    const float* Ds;
    void* y;
    int wrows;  // x_dbl window rows asked for (0: chosen)
};

// Block size limit: 512 threads only where the registers allow (chunked d_state 1, tiles <= 16).
__host__ __device__ constexpr int scan_threads_max(bool chunked, int rreg, int nmax)
{
    return chunked && nmax == 1 && rreg > 0 && rreg <= 16 ? 512 : 256;
}

// Register caps, through the blocks per SM asked of the compiler (0: none asked; an explicit 1 makes
// it spend more). Where ptxas fits them without spilling (or nearly), so that more warps are resident:
//   16 states: 128 registers, 16 warps per SM (uncapped: 178, 6 warps per SM, and two waves at
//     MedMamba-T stage 0, batch 128, in Nsight Compute). Not with the W_dt register tiles of 32-64
//     (float32 I/O), which would spill hundreds of bytes.
//   d_state 1, tensor-core dt with tiles of 8 or 16 (VMamba stages 0-1): 80 registers, 24 warps per
//     SM, so that VMamba-T stage 1 at batch 128 (3072 row warps) is one wave (uncapped: 100, 16
//     warps per SM, 1.45 waves at best).
//   d_state 1, float16 tensor-core dt with tiles of 32-64 (VMamba-T/B stages 2-3): 80 as well, with
//     the rolling u buffer and dt read from the warp's tile per step (scan_rolls), and at tiles 48-64
//     the W_dt fragments in shared memory (ScanDt). ptxas: 0 / 12 / 16 bytes of spill at tiles
//     32 / 48 / 64. In the register form these took 127-128, i.e. 16 warps per SM and 23% achieved
//     occupancy at VMamba-T stages 2-3 in Nsight Compute (docs/KERNELS.md).
//   float32 I/O with the 3xTF32 dt (DtTf32: no W_dt registers, but the split and the fragments):
//     16 states with tiles up to 32 at 128 (ptxas: 0-16 bytes of spill, as the other dt sources;
//     tiles of 48-64 fit 142 uncapped and spill 24-32 bytes at 128, so stay uncapped); d_state 1
//     with the tile of 8 at 80 (77, no spill; the tile of 16 spills 232 bytes there: uncapped, 121;
//     the rolling form of tiles 32-64 spills 244-344 bytes at 80).
#ifndef VMK_SCAN_N1_MIN_BLOCKS
#define VMK_SCAN_N1_MIN_BLOCKS 3
#endif
// Whether the unchunked scan keeps u in a rolling buffer and reads dt from the warp's tile per step
// (unchunked_steps) instead of holding both for the 16 steps: always for 16 states; for d_state 1
// where the float16 tensor-core dt's W_dt fragments (16-32 registers at tiles 32-64) would otherwise
// keep the kernel above the register cap.
__host__ __device__ constexpr bool scan_rolls(int nmax, int rreg, bool dt_mma, bool half_io)
{
    return nmax > 1 || (dt_mma && half_io && rreg >= 32);
}
// The scan's dt source: DtSource, except that the unchunked rolling d_state-1 scans with the
// float16 tensor-core dt and tiles of 48-64 keep its W_dt fragments in shared memory (DtMma<., true>;
// ptxas at the cap of 80: 12 and 16 bytes of spill against 40 and 216 with the fragments in
// registers; the tile of 32 fits 80 without spilling with them in registers, and spills 8 bytes
// without).
template <typename T, int NMAX, int RREG, bool CHUNKED, bool DT_MMA>
using ScanDt = typename std::conditional<!CHUNKED && NMAX == 1 && std::is_same<T, __half>::value && DT_MMA &&
                                             RREG >= 48,  // (these scans roll: scan_rolls)
                                         DtMma<RREG, true>, typename DtSource<T, RREG, DT_MMA>::type>::type;

__host__ __device__ constexpr int scan_min_blocks(bool chunked, int nmax, int rreg, bool dt_mma, bool half_io)
{
    return chunked ? 0
           : nmax > 1 ? (rreg <= 16 || (dt_mma && (half_io || rreg <= 32)) ? 2 : 0)
                      : (dt_mma && (rreg <= (half_io ? 16 : 8) || scan_rolls(nmax, rreg, dt_mma, half_io))
                             ? VMK_SCAN_N1_MIN_BLOCKS
                             : 0);
}

// One step of the selective scan from state h with readout: delta = softplus(dt),
// h = exp(delta A) h + delta u B, returns y = C . h. NMAX is 1 or kMaxDState; with kMaxDState every
// one of the 16 states is updated: past N, A2 and B are zero, so those states stay zero.
template <int NMAX>
__device__ __forceinline__ float scan_step(const float* row, float u, float dt, const float* A2, int bo, int co,
                                           float* h)
{
    const float delta = softplus_f32(dt);
    const float du = delta * u;
    if (NMAX == 1) {
        const float2 bc = *reinterpret_cast<const float2*>(row + bo);  // (B, C): co = bo + 1 (XdblCols)
        h[0] = fmaf(fast_exp2(delta * A2[0]), h[0], du * bc.x);
        return bc.y * h[0];
    }
    float y0 = 0.f, y1 = 0.f;  // two partial sums: half the readout's dependent chain
#pragma unroll
    for (int n = 0; n < NMAX; n += 4) {
        const float4 b = *reinterpret_cast<const float4*>(row + bo + n);
        const float4 c = *reinterpret_cast<const float4*>(row + co + n);
        h[n] = fmaf(fast_exp2(delta * A2[n]), h[n], du * b.x);
        h[n + 1] = fmaf(fast_exp2(delta * A2[n + 1]), h[n + 1], du * b.y);
        h[n + 2] = fmaf(fast_exp2(delta * A2[n + 2]), h[n + 2], du * b.z);
        h[n + 3] = fmaf(fast_exp2(delta * A2[n + 3]), h[n + 3], du * b.w);
        y0 = fmaf(c.x, h[n], y0);
        y1 = fmaf(c.y, h[n + 1], y1);
        y0 = fmaf(c.z, h[n + 2], y0);
        y1 = fmaf(c.w, h[n + 3], y1);
    }
    return y0 + y1;
}

// One thread's T steps of a chunk slot (d_state 1) from a zero state: local states and decays.
// FULL: every step lies inside the sequence (all windows but the last), so nothing is guarded.
template <bool FULL>
__device__ __forceinline__ void chunk_local(const float* xd_s, int Cp, int bo, int s0, int cnt, const float* u,
                                            const float* dt, float A2, float* hl, float* Pl, float& h, float& P)
{
    h = 0.f;
    P = 1.f;
#pragma unroll
    for (int q = 0; q < kSteps; ++q) {
        const float* row = xd_s + (s0 + q) * Cp;
        const float delta = softplus_f32(dt[q]);
        float a = fast_exp2(delta * A2), bu = delta * u[q] * row[bo];
        if (!FULL && s0 + q >= cnt) { a = 1.f; bu = 0.f; }
        h = fmaf(a, h, bu);
        P *= a;
        hl[q] = h;
        Pl[q] = P;
    }
}

// What the unchunked scan loads ahead: u of the next T steps, as float32 for d_state 1, raw for 16
// states (there a rolling buffer; see unchunked_steps).
template <typename T, int NMAX> using Ahead = typename std::conditional<NMAX == 1, float, T>::type;

// The unchunked scan's output to the partial workspace: the lane's channel at the step's pixel
// (offset table of the window); dead lanes store nothing.
template <typename PT>
struct PartialOut {
    PT* yl;
    const int* off_s;
    bool live;
    __device__ __forceinline__ void operator()(int s, float y, bool inside) const
    {
        if (live && inside) st_global_as(yl + off_s[s], y);  // yl is opaque_ptr'd
    }
};

// T steps of an unchunked scan from state h, and the loads of the next T inputs into `ahead` (their
// latency is the step loop's only long wait). FULL: the T steps and the T loaded ahead all lie
// inside the sequence (no guards).
//   ROLL false (d_state 1, most tiles): dt and u of the T steps in registers; the T loads are
//   issued before the steps.
//   ROLL true (16 states; d_state 1 where scan_rolls says): no dt or u registers: dt comes from the
//   warp's dt tile, and step q's slot of the rolling buffer is refilled with the input T steps ahead
//   as soon as it is read (registers are what limits these scans' occupancy).
// `out(s, y, inside)` takes the output of window step s, stored only if `inside` the sequence (steps
// past the end occur only in the last window): PartialOut for the partial workspace, TileOut (the
// fused scan) for the block's shared y tile.
template <typename T, int NMAX, bool FULL, bool ROLL, typename Dt, typename Out>
__device__ __forceinline__ void unchunked_steps(const float* xd_s, const int* off_s, int Cp, int bo, int co, int s0,
                                                int cnt, int rest, const T* xl, const Out& out, const Dt& dtp,
                                                float* scratch, const float* A2, float* h, Ahead<T, NMAX>* ahead)
{
    static_assert(ROLL || NMAX == 1, "16 states need the rolling form");
    if constexpr (!ROLL) {
        float u[kSteps], dt[kSteps];
        dtp.window(xd_s + s0 * Cp, Cp, scratch, dt);
#pragma unroll
        for (int q = 0; q < kSteps; ++q) u[q] = ahead[q];
#pragma unroll
        for (int q = 0; q < kSteps; ++q)
            ahead[q] = (FULL || s0 + kSteps + q < rest) ? to_f32(__ldg(xl + off_s[s0 + kSteps + q])) : 0.f;
#pragma unroll
        for (int q = 0; q < kSteps; ++q) {
            const float y = scan_step<NMAX>(xd_s + (s0 + q) * Cp, u[q], dt[q], A2, bo, co, h);
            // steps past the end: their state is never used
            out(s0 + q, y, FULL || s0 + q < cnt);
        }
    } else {
        const int lane = threadIdx.x & 31;
        dtp.store(xd_s + s0 * Cp, Cp, scratch);
#pragma unroll
        for (int q = 0; q < kSteps; ++q) {
            const float u = to_f32(ahead[q]);
            const bool in = FULL || s0 + kSteps + q < rest;
            if constexpr (NMAX == 1) ahead[q] = in ? to_f32(__ldg(xl + off_s[s0 + kSteps + q])) : 0.f;
            else ahead[q] = in ? __ldg(xl + off_s[s0 + kSteps + q]) : from_f32<T>(0.f);
            const float y = scan_step<NMAX>(xd_s + (s0 + q) * Cp, u, scratch[q * kDtTileStride + lane] + dtp.bias,
                                            A2, bo, co, h);
            out(s0 + q, y, FULL || s0 + q < cnt);
        }
    }
}

// A scan block's window: the cnt staged x_dbl rows from step t0 of direction k's slab xdb into xd_s,
// and the pixel offsets (element offsets in the channels-last plane) of the window's steps and of
// the T steps after it (the unchunked prefetch) into off_s; 0 past the sequence. Whole block.
__device__ __forceinline__ void stage_window(const float* xdb, int t0, int cnt, int window, int Cp, int k, int H,
                                             int W, int D, float* xd_s, int* off_s)
{
    const int L = H * W;
    const float4* src = reinterpret_cast<const float4*>(xdb + (size_t)t0 * Cp);
    float4* dst = reinterpret_cast<float4*>(xd_s);
    const int n4 = cnt * Cp / 4;
    for (int e = threadIdx.x; e < n4; e += blockDim.x) dst[e] = src[e];
    for (int e = threadIdx.x; e < window + kSteps; e += blockDim.x) {
        const int t = t0 + e;
        int o = 0;
        if (t < L) {
            Walk at;
            at.init(k, H, W, D);
            at.start(k, t, H, W, D);
            o = at.off;
        }
        off_s[e] = o;
    }
}

template <typename T, int NMAX, int RREG, bool CHUNKED, bool DT_MMA>
__global__ void __launch_bounds__(scan_threads_max(CHUNKED, RREG, NMAX),
                                  scan_min_blocks(CHUNKED, NMAX, RREG, DT_MMA, std::is_same<T, __half>::value))
    ss2d_chunk_scan_kernel(ScanParams p)
{
    constexpr bool kRoll = scan_rolls(NMAX, RREG, DT_MMA, std::is_same<T, __half>::value);
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
    const int H = p.H, W = p.W, L = H * W, N = p.N, R = p.R, Cp = p.Cp, bo = p.bo, co = p.co;
    const int window = CHUNKED ? S * kSteps : kWindowSub * kSteps;
    float* xd_s = smem;                        // [window][Cp]
    int* off_s = reinterpret_cast<int*>(xd_s + (size_t)window * Cp);  // [window + T] pixel offsets
    // CHUNKED chunk summaries: [GW][S][32] x (P, h) for d_state 1, x (sum of delta, h[N]) otherwise
    float* sum_s = reinterpret_cast<float*>(off_s + window + kSteps);
    // one dt tile per warp after the summaries (DT_MMA, or unchunked: see launch_scan)
    // (ScanDt<...>::kSharedFloats more per warp where the dt source keeps its fragments there)
    using Dt = ScanDt<T, NMAX, RREG, CHUNKED, DT_MMA>;
    float* scratch = sum_s + (CHUNKED ? (size_t)p.GW * S * 32 * (NMAX == 1 ? 2 : NMAX + 1) : 0) +
                     (size_t)warp * (kDtScratch + Dt::kSharedFloats);

    const int r = k * p.D + dc;
    float A2[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; ++n) A2[n] = n < N ? -expf(p.A_logs[(size_t)r * N + n]) * kLog2e : 0.f;
    Dt dtp;
    dtp.init(static_cast<const T*>(p.wdt), k, dc, d - lane, p.D, R, p.dt_bias[r], scratch);

    // 32-bit element offsets within one image's [L][D] plane (checked on launch)
    const T* xtb = static_cast<const T*>(p.xt) + (size_t)b * L * p.D + dc;
    const float* xdb = p.xdbl + ((size_t)b * kDirs + k) * L * Cp;
    PT* ysb = static_cast<PT*>(p.ys) + ((size_t)b * kDirs + k) * L * p.D + dc;
    const T* xl = opaque_ptr(xtb);  // the unchunked scan's per-step accesses (see opaque_ptr)
    PT* yl = opaque_ptr(ysb);
    Walk w;
    w.init(k, H, W, p.D);

    float carry[NMAX];  // state entering the current window (all slots of a channel hold the same)
#pragma unroll
    for (int n = 0; n < NMAX; ++n) carry[n] = 0.f;
    const int seg = CHUNKED ? blockIdx.z : 0;
    const int t_begin = CHUNKED ? seg * p.seg_steps : 0, t_end = CHUNKED ? min(L, t_begin + p.seg_steps) : L;
    const int sstride = NMAX == 1 ? 2 : NMAX + 1;
    float* seg_mine = CHUNKED && p.mode ? p.seg_sum + (((size_t)b * kDirs + k) * p.nseg * p.D + dc) * sstride : nullptr;
    if (CHUNKED && p.mode == 2) {  // the state entering this segment, from the summaries before it
        for (int s2 = 0; s2 < seg; ++s2) {
            const float* e = seg_mine + (size_t)s2 * p.D * sstride;
            if (NMAX == 1) {
                carry[0] = fmaf(e[0], carry[0], e[1]);
            } else {
#pragma unroll
                for (int n = 0; n < NMAX; ++n) carry[n] = fmaf(fast_exp2(A2[n] * e[0]), carry[n], e[1 + n]);
            }
        }
    }
    float seg_decay = CHUNKED && NMAX == 1 ? 1.f : 0.f;  // mode 1: the segment's decay (d_state 1) or sum of delta
    Ahead<T, NMAX> ahead[CHUNKED ? 1 : kSteps];  // unchunked: u of the next T steps, loaded ahead
    if (!CHUNKED) {
        w.start(k, 0, H, W, p.D);
#pragma unroll
        for (int q = 0; q < (CHUNKED ? 1 : kSteps); ++q) {
            if constexpr (NMAX == 1) ahead[q] = q < L ? to_f32(xtb[w.off]) : 0.f;
            else ahead[q] = q < L ? xtb[w.off] : from_f32<T>(0.f);
            w.next();
        }
    }

    for (int t0 = t_begin; t0 < t_end; t0 += window) {
        const int cnt = min(window, t_end - t0);
        __syncthreads();  // the previous window's readers are done
        stage_window(xdb, t0, cnt, window, Cp, k, H, W, p.D, xd_s, off_s);
        __syncthreads();

        if (CHUNKED && NMAX == 1) {
            const int s0 = slot * kSteps;  // this thread's chunk within the window
            const bool full = s0 + kSteps <= cnt;
            float u[kSteps];
#pragma unroll
            for (int q = 0; q < kSteps; ++q) u[q] = (full || s0 + q < cnt) ? to_f32(xtb[off_s[s0 + q]]) : 0.f;
            float h, P, hl[kSteps], Pl[kSteps], dt[kSteps];
            dtp.window(xd_s + s0 * Cp, Cp, scratch, dt);
            if (full) chunk_local<true>(xd_s, Cp, bo, s0, cnt, u, dt, A2[0], hl, Pl, h, P);
            else chunk_local<false>(xd_s, Cp, bo, s0, cnt, u, dt, A2[0], hl, Pl, h, P);
            float* mine = sum_s + ((size_t)(gw * S + slot) * 32 + lane) * 2;
            mine[0] = P;
            mine[1] = h;
            __syncthreads();
            const float* chain = sum_s + (size_t)gw * S * 64 + lane * 2;
            float hin = carry[0], c = carry[0];
            for (int s2 = 0; s2 < S; ++s2) {
                if (s2 == slot) hin = c;
                c = fmaf(chain[s2 * 64], c, chain[s2 * 64 + 1]);
                seg_decay *= chain[s2 * 64];
            }
            carry[0] = c;
            if (p.mode == 1) continue;  // summaries only
#pragma unroll
            for (int q = 0; q < kSteps; ++q) {
                const PT yv = from_f32<PT>(xd_s[(s0 + q) * Cp + co] * fmaf(Pl[q], hin, hl[q]));
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
            float h[NMAX], dsum = 0.f, dt[kSteps];
            dtp.window(xd_s + s0 * Cp, Cp, scratch, dt);  // once for both passes
#pragma unroll
            for (int n = 0; n < NMAX; ++n) h[n] = 0.f;
#pragma unroll
            for (int q = 0; q < kSteps; ++q) {
                if (s0 + q >= cnt) break;  // uniform per warp: the slot's steps past the end
                const float* row = xd_s + (s0 + q) * Cp;
                const float delta = softplus_f32(dt[q]);
                const float du = delta * u[q];
                dsum += delta;
#pragma unroll
                for (int n = 0; n < NMAX; n += 4) {  // states past N stay zero (A2 and B are zero)
                    const float4 bv = *reinterpret_cast<const float4*>(row + bo + n);
                    h[n] = fmaf(fast_exp2(delta * A2[n]), h[n], du * bv.x);
                    h[n + 1] = fmaf(fast_exp2(delta * A2[n + 1]), h[n + 1], du * bv.y);
                    h[n + 2] = fmaf(fast_exp2(delta * A2[n + 2]), h[n + 2], du * bv.z);
                    h[n + 3] = fmaf(fast_exp2(delta * A2[n + 3]), h[n + 3], du * bv.w);
                }
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
                for (int n = 0; n < NMAX; ++n) carry[n] = fmaf(fast_exp2(A2[n] * e[0]), carry[n], e[1 + n]);
                seg_decay += e[0];
            }
            if (p.mode == 1) continue;  // summaries only
#pragma unroll
            for (int q = 0; q < kSteps; ++q) {
                if (s0 + q >= cnt) break;
                const float y = scan_step<NMAX>(xd_s + (s0 + q) * Cp, u[q], dt[q], A2, bo, co, hin);
                const PT yv = from_f32<PT>(y);
                if (live) ysb[off_s[s0 + q]] = yv;
            }
        } else {
            // the offsets of the T steps after the window (the rolling prefetch) are in the table's
            // tail; sub-chunks whose steps and prefetch all lie inside the sequence run unguarded
            const PartialOut<PT> out{yl, off_s, live};
            for (int s0 = 0; s0 < cnt; s0 += kSteps) {
                if (t0 + s0 + 2 * kSteps <= L)
                    unchunked_steps<T, NMAX, true, kRoll>(xd_s, off_s, Cp, bo, co, s0, cnt, L - t0, xl, out, dtp,
                                                          scratch, A2, carry, ahead);
                else
                    unchunked_steps<T, NMAX, false, kRoll>(xd_s, off_s, Cp, bo, co, s0, cnt, L - t0, xl, out, dtp,
                                                           scratch, A2, carry, ahead);
            }
        }
    }
    if (CHUNKED && p.mode == 1 && live && slot == 0) {  // every slot holds the same summary
        float* e = seg_mine + (size_t)seg * p.D * sstride;
        e[0] = seg_decay;
#pragma unroll
        for (int n = 0; n < NMAX; ++n) e[1 + n] = carry[n];
    }
}

// ------------------------------------------------------------------------------------------------
// 2, two channels per lane (taken by ss2d_launch's rule; VMK_SCAN_LANE_CHANNELS forces it): the
// unchunked d_state-1 float16 scan with the tensor-core dt, where each lane owns the adjacent
// channels (d, d + 1) and a warp 64 channels. The scan is issue-bound (docs/KERNELS.md, "What bounds
// it now"), and the per-step work that does not depend on the channel is paid once per two
// channel-steps: the two offset-table loads, the x-load and partial-store address arithmetic, the
// (B, C) broadcast, the dt-tile address and the loop control; x is loaded and the partial stored as one __half2 (D even: the lane's element offset
// 2 lane + p D is even, so 4-byte aligned; an odd D takes the one-channel kernel). The rolling form
// for every tile: u ahead as __half2 (one register per two channels), dt from the warp's 64-channel
// tile (one 8-byte shared load per step), so the two recurrences are independent chains (ILP)
// where the one-channel kernel relies on more resident warps. Dead lanes (d >= D; D even, so both
// channels or neither) compute on channels D - 2, D - 1 and store nothing.
constexpr int kPairChannels = 64;  // channels per warp
// Rank tiles from which the 64-channel dt keeps its W_dt fragments in shared memory (4 KT 4 registers
// in the register form: 16 at tiles 8 / 16, 32 at 32).
constexpr int kPairSharedATile = 32;
// Register cap of the pair kernel, through the blocks of 256 threads per SM asked of the compiler
// (ptxas, sm_90, nvcc 13.0, 2026-12-02): tiles 8-32 at 80 registers (3 blocks: 24 warps per SM as far
// as registers go; 0 / 0 / 4 bytes of spill), tiles 48-64 at 128 (2 blocks, 16 warps; 0 / 16 bytes:
// at 96 registers, blocks of 128 x 5, 28 / 48 bytes; at 80, 200 / 248). Uncapped: 80 / 80 / 102 /
// 128 / 128 registers. Shared memory (the dt tile and, from tile 32, the W_dt fragments per warp)
// may allow fewer warps than the registers: launch_pair_scan's occupancy query decides the block.
constexpr int kPairThreadsMax = 256;
__host__ __device__ constexpr int pair_min_blocks(int rreg) { return rreg >= 48 ? 2 : 3; }
template <int RREG> using PairDt = DtMma<RREG, (RREG >= kPairSharedATile), 4>;

// v as two float16 by one plain 4-byte global store (p 4-byte aligned; see st_global_as)
__device__ __forceinline__ void st_global_pair(__half* p, float v0, float v1)
{
    asm volatile("st.global.b32 [%0], %1;" ::"l"(p), "r"(half2_bits(__floats2half2_rn(v0, v1))));
}

// T steps of the pair scan from states h0, h1 (unchunked_steps' rolling form for two channels):
// dt of the window into the warp's tile, then per step the input T steps ahead into step q's slot of
// the rolling buffer as soon as it is read. FULL: the T steps and the T loaded ahead all lie inside
// the sequence (no guards).
template <bool FULL, int RREG>
__device__ __forceinline__ void pair_steps(const float* xd_s, const int* off_s, int Cp, int bo, int s0, int cnt,
                                           int rest, const __half* xl, __half* yl, bool live,
                                           const PairDt<RREG>& dtp, float* scratch, float2 bias, float2 A2,
                                           float2& h, __half2* ahead)
{
    const int lane = threadIdx.x & 31;
    dtp.store(xd_s + s0 * Cp, Cp, scratch);
    const float2* dt_s = reinterpret_cast<const float2*>(scratch) + lane;  // channels 2 lane, 2 lane + 1
#pragma unroll
    for (int q = 0; q < kSteps; ++q) {
        const float2 u = __half22float2(ahead[q]);
        const bool in = FULL || s0 + kSteps + q < rest;
        ahead[q] = in ? __ldg(reinterpret_cast<const __half2*>(xl + off_s[s0 + kSteps + q])) : __float2half2_rn(0.f);
        const float2 dt = dt_s[q * (kDtPairStride / 2)];
        const float* row = xd_s + (s0 + q) * Cp;  // (B, C): one shared load for both channels
        const float y0 = scan_step<1>(row, u.x, dt.x + bias.x, &A2.x, bo, bo + 1, &h.x);
        const float y1 = scan_step<1>(row, u.y, dt.y + bias.y, &A2.y, bo, bo + 1, &h.y);
        // steps past the end (last window only): their state is never used
        if (live && (FULL || s0 + q < cnt)) st_global_pair(yl + off_s[s0 + q], y0, y1);
    }
}

template <int RREG>
__global__ void __launch_bounds__(kPairThreadsMax, pair_min_blocks(RREG)) ss2d_pair_scan_kernel(ScanParams p)
{
    using Dt = PairDt<RREG>;
    extern __shared__ __align__(16) float smem[];
    const int k = blockIdx.x & 3, gb = blockIdx.x >> 2, b = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int dwarp = (gb * p.GW + warp) * kPairChannels, d = dwarp + 2 * lane;
    const bool live = d < p.D;          // D even: then d + 1 < D too
    const int dc = live ? d : p.D - 2;  // dead lanes compute on real channels and store nothing
    const int H = p.H, W = p.W, L = H * W, R = p.R, Cp = p.Cp, bo = p.bo;
    constexpr int window = kWindowSub * kSteps;
    float* xd_s = smem;                                                // [window][Cp]
    int* off_s = reinterpret_cast<int*>(xd_s + (size_t)window * Cp);  // [window + T] pixel offsets
    float* scratch = reinterpret_cast<float*>(off_s + window + kSteps) + (size_t)warp * (kDtPairScratch + Dt::kSharedFloats);

    const int r = k * p.D + dc;  // d_state 1: A_logs is [4 D][1]
    const float2 A2 = make_float2(-expf(p.A_logs[r]) * kLog2e, -expf(p.A_logs[r + 1]) * kLog2e);
    const float2 bias = make_float2(p.dt_bias[r], p.dt_bias[r + 1]);
    Dt dtp;
    dtp.init(static_cast<const __half*>(p.wdt), k, dc, dwarp, p.D, R, 0.f, scratch);

    // 32-bit element offsets within one image's [L][D] plane (checked on launch)
    const __half* xtb = static_cast<const __half*>(p.xt) + (size_t)b * L * p.D + dc;
    __half* ysb = static_cast<__half*>(p.ys) + ((size_t)b * kDirs + k) * L * p.D + dc;
    const __half* xl = opaque_ptr(xtb);  // the per-step accesses (see opaque_ptr)
    __half* yl = opaque_ptr(ysb);
    const float* xdb = p.xdbl + ((size_t)b * kDirs + k) * L * Cp;

    float2 h = make_float2(0.f, 0.f);
    __half2 ahead[kSteps];  // u of the next T steps, loaded ahead
    {
        Walk w;
        w.init(k, H, W, p.D);
        w.start(k, 0, H, W, p.D);
#pragma unroll
        for (int q = 0; q < kSteps; ++q) {
            ahead[q] = q < L ? __ldg(reinterpret_cast<const __half2*>(xtb + w.off)) : __float2half2_rn(0.f);
            w.next();
        }
    }

    for (int t0 = 0; t0 < L; t0 += window) {
        const int cnt = min(window, L - t0);
        __syncthreads();  // the previous window's readers are done
        stage_window(xdb, t0, cnt, window, Cp, k, H, W, p.D, xd_s, off_s);
        __syncthreads();
        for (int s0 = 0; s0 < cnt; s0 += kSteps) {
            if (t0 + s0 + 2 * kSteps <= L)
                pair_steps<true, RREG>(xd_s, off_s, Cp, bo, s0, cnt, L - t0, xl, yl, live, dtp, scratch, bias, A2, h,
                                       ahead);
            else
                pair_steps<false, RREG>(xd_s, off_s, Cp, bo, s0, cnt, L - t0, xl, yl, live, dtp, scratch, bias, A2, h,
                                        ahead);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// 2+3 fused, for short sequences: one block per (image, GW channel groups) scans all four directions
// of its channels and writes y itself, so the partial workspace is neither written nor read and the
// merge launch disappears (VMamba-T stages 2-3: the merge re-read 77 MB of partials at stage 2 and
// took 25-43 us). Warp w = 4 gw + k scans direction k of channel group gw with the unchunked step
// loop (unchunked_steps, the same dt sources); the block stages the four directions' x_dbl windows
// (each direction's slab is contiguous: the prep stores it at the direction's own sequence index).
// Each warp's y_k goes to its own shared tile [L][33] (stride 33: the step loop's row writes and the
// epilogue's pixel-major reads are both free of bank conflicts) in the partial dtype, so the result
// is rounded exactly as the three-launch path's partials are; after one barrier the block sums the
// four tiles in the merge's fixed order (y0 + y2) + (y1 + y3), adds (sum_k Ds[k, d]) x, and writes
// its [32 GW][L] slice of y, which is contiguous in [b][d][p] (coalesced). Deterministic, no atomics.
// The tiles take 4 GW L 33 partial-size bytes, so the path is chosen only where the block's shared
// memory still leaves several blocks per SM (launch_fused).
constexpr int kFusedTileStride = 33;
constexpr int kFusedMaxGroups = 2;  // blocks of 4 or 8 warps (256 threads at most)

// Register cap of the fused kernel, through the blocks per SM asked of the compiler: 128 registers
// (2 blocks of 256 threads) where ptxas fits that without spilling. Not the unchunked scan's 80 for
// d_state 1 with rank tiles 8 / 16 (the tables and the epilogue spilled 20-40 bytes there), and
// uncapped for 16 states with float16 tiles of 48-64 (4-60 bytes of spill at 128 for sm_90) and the
// float32 tile of 64 (4 bytes for sm_80).
__host__ __device__ constexpr int fused_min_blocks(int nmax, int rreg, bool half_io)
{
    return nmax > 1 && rreg >= (half_io ? 48 : 64) ? 0 : 2;
}

__host__ __device__ constexpr size_t fused_smem_bytes(int GW, int wrows, int L, int Cp, size_t psize)
{
    return ((size_t)kDirs * wrows * Cp + (size_t)kDirs * GW * kDtScratch + 32 * GW) * sizeof(float) +
           (size_t)kDirs * (2 * wrows + kSteps) * sizeof(int) + (size_t)kDirs * GW * L * kFusedTileStride * psize;
}

// The fused scan's output: y_k of the lane's channel at the step's pixel of the warp's y tile.
template <typename PT>
struct TileOut {
    PT* tile;          // the warp's tile, at the lane's column
    const int* pix_s;  // per window step: pixel * kFusedTileStride
    __device__ __forceinline__ void operator()(int s, float y, bool inside) const
    {
        if (inside) tile[pix_s[s]] = from_f32<PT>(y);
    }
};

template <typename T, int NMAX, int RREG, bool DT_MMA>
__global__ void __launch_bounds__(kFusedMaxGroups * kDirs * 32,
                                  fused_min_blocks(NMAX, RREG, std::is_same<T, __half>::value))
    ss2d_fused_scan_kernel(ScanParams p, FusedParams f)
{
    using PT = typename Partial<T>::type;
    extern __shared__ __align__(16) float smem[];
    const int GW = p.GW, wrows = f.wrows, b = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, k = warp & 3, gw = warp >> 2;
    const int D = p.D, H = p.H, W = p.W, L = H * W, N = p.N, R = p.R, Cp = p.Cp, bo = p.bo, co = p.co;
    const int d0 = blockIdx.x * GW * 32, d = d0 + gw * 32 + lane;
    const int dc = d < D ? d : D - 1;  // dead lanes compute on a real channel; the epilogue skips them
    // shared memory: x_dbl windows [4][wrows][Cp], dt tiles [4 GW][kDtScratch], sum_k Ds [32 GW],
    // offset tables [4][wrows + T] (pixel * D: x loads), pixel tables [4][wrows] (pixel * stride:
    // tile rows), y tiles [GW][4][L][stride] in the partial dtype
    float* xd_all = smem;
    float* scratch = xd_all + (size_t)kDirs * wrows * Cp + (size_t)warp * kDtScratch;
    float* ds_s = xd_all + (size_t)kDirs * wrows * Cp + (size_t)kDirs * GW * kDtScratch;
    int* off_all = reinterpret_cast<int*>(ds_s + 32 * GW);
    int* pix_all = off_all + kDirs * (wrows + kSteps);
    PT* tiles = reinterpret_cast<PT*>(pix_all + kDirs * wrows);
    const float* xd_s = xd_all + (size_t)k * wrows * Cp;
    const int* off_s = off_all + k * (wrows + kSteps);
    const TileOut<PT> out{tiles + (size_t)warp * L * kFusedTileStride + lane, pix_all + k * wrows};

    const int r = k * D + dc;
    float A2[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; ++n) A2[n] = n < N ? -expf(p.A_logs[(size_t)r * N + n]) * kLog2e : 0.f;
    typename DtSource<T, RREG, DT_MMA>::type dtp;
    dtp.init(static_cast<const T*>(p.wdt), k, dc, d - lane, D, R, p.dt_bias[r], scratch);
    if (k == 0) ds_s[gw * 32 + lane] = (f.Ds[dc] + f.Ds[D + dc]) + (f.Ds[2 * D + dc] + f.Ds[3 * D + dc]);

    // 32-bit element offsets within one image's [L][D] plane (checked on launch)
    const T* xl = static_cast<const T*>(p.xt) + (size_t)b * L * D + dc;
    const float* xdb = p.xdbl + (size_t)b * kDirs * L * Cp;  // the image's four slabs [4][L][Cp]
    float h[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; ++n) h[n] = 0.f;
    Ahead<T, NMAX> ahead[kSteps];  // u of the next T steps, loaded ahead
    {
        Walk w;
        w.init(k, H, W, D);
        w.start(k, 0, H, W, D);
#pragma unroll
        for (int q = 0; q < kSteps; ++q) {
            if constexpr (NMAX == 1) ahead[q] = q < L ? to_f32(xl[w.off]) : 0.f;
            else ahead[q] = q < L ? xl[w.off] : from_f32<T>(0.f);
            w.next();
        }
    }

    for (int t0 = 0; t0 < L; t0 += wrows) {  // the same trip count in every warp: barriers are uniform
        const int cnt = min(wrows, L - t0);
        __syncthreads();  // the previous window's readers are done
        {
            const int n4 = cnt * Cp / 4;  // float4s per direction (Cp is a float4 multiple)
            for (int e = threadIdx.x; e < kDirs * n4; e += blockDim.x) {
                const int kk = e / n4, i = e - kk * n4;
                reinterpret_cast<float4*>(xd_all + (size_t)kk * wrows * Cp)[i] =
                    reinterpret_cast<const float4*>(xdb + ((size_t)kk * L + t0) * Cp)[i];
            }
            // per direction: offsets of the window's steps and of the T steps after it (the prefetch),
            // and the tile row of each window step
            const int per = wrows + kSteps;
            for (int e = threadIdx.x; e < kDirs * per; e += blockDim.x) {
                const int kk = e / per, i = e - kk * per, t = t0 + i;
                const int pix = t < L ? seq_pixel(kk, t, H, W) : 0;
                off_all[e] = pix * D;
                if (i < wrows) pix_all[kk * wrows + i] = pix * kFusedTileStride;
            }
        }
        __syncthreads();
        for (int s0 = 0; s0 < cnt; s0 += kSteps) {
            // the fused kernel keeps the register form for d_state 1 (its own register cap)
            if (t0 + s0 + 2 * kSteps <= L)
                unchunked_steps<T, NMAX, true, (NMAX > 1)>(xd_s, off_s, Cp, bo, co, s0, cnt, L - t0, xl, out, dtp,
                                                           scratch, A2, h, ahead);
            else
                unchunked_steps<T, NMAX, false, (NMAX > 1)>(xd_s, off_s, Cp, bo, co, s0, cnt, L - t0, xl, out, dtp,
                                                            scratch, A2, h, ahead);
        }
    }
    __syncthreads();  // every direction's tile is complete

    // y[b, d0 + c, p] for the block's channels: one contiguous run of nch * L elements of y and x
    const int nch = min(32 * GW, D - d0), total = nch * L, step = blockDim.x;
    const size_t base = ((size_t)b * D + d0) * L;
    const T* xin = static_cast<const T*>(f.x) + base;
    T* yout = static_cast<T*>(f.y) + base;
    const size_t ks = (size_t)L * kFusedTileStride;  // between the four direction tiles of a group
    const int sc = step / L, sp = step - sc * L;
    int c = threadIdx.x / L, pp = threadIdx.x - c * L;  // channel and pixel of element e
    for (int e = threadIdx.x; e < total; e += step) {
        const PT* tp = tiles + (size_t)(c >> 5) * kDirs * ks + (size_t)pp * kFusedTileStride + (c & 31);
        const float v0 = to_f32(tp[0]), v1 = to_f32(tp[ks]), v2 = to_f32(tp[2 * ks]), v3 = to_f32(tp[3 * ks]);
        yout[e] = from_f32<T>(fmaf(ds_s[c], to_f32(xin[e]), (v0 + v2) + (v1 + v3)));
        pp += sp;
        c += sc;
        if (pp >= L) {
            pp -= L;
            ++c;
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


// Resident blocks per SM of a scan kernel at this block size and shared memory (0: cannot run), from
// the occupancy query once per (device, kernel, configuration): the plugins launch the op on every
// inference, and the answer never changes.
template <typename K>
int scan_blocks_per_sm(K* kernel, int threads, size_t smem)
{
    static std::mutex mutex;
    static std::map<std::tuple<int, const void*, int, size_t>, int> known;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    const auto key = std::make_tuple(dev, reinterpret_cast<const void*>(kernel), threads, smem);
    std::lock_guard<std::mutex> lock(mutex);
    const auto it = known.find(key);
    if (it != known.end()) return it->second;
    int per_sm = 0;
    if (!allow_smem(kernel, smem) ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) != cudaSuccess)
        per_sm = 0;
    return known[key] = per_sm;
}

// Channel groups per block: among the divisors g of the group count whose blocks of g S warps fit
// (max_warps; no dead warps), the one whose grid runs in the fewest waves at the occupancy that this
// kernel's registers and shared memory smem_of(g) allow (at least one wave; ties within 2% to the
// larger block, which stages x_dbl once for more channels). 0: none fits.
template <typename K, typename Smem>
int fewest_waves_groups(K* kernel, int groups, int S, int max_warps, const Smem& smem_of, int B, const DeviceInfo& dev)
{
    int best_g = 0;
    double best = INFINITY;
    for (int g = 1; g <= groups && g * S <= max_warps; ++g) {
        const int per_sm = groups % g == 0 ? scan_blocks_per_sm(kernel, 32 * g * S, smem_of(g)) : 0;
        if (per_sm <= 0) continue;
        const double waves = fmax(1.0, (double)kDirs * (groups / g) * B / ((double)per_sm * dev.sms));
        if (waves <= best * 1.02) {
            best_g = g;
            best = fmin(best, waves);
        }
    }
    return best_g;
}

template <typename T, int NMAX, int RREG, bool CHUNKED, bool DT_MMA>
vmk_status_t launch_scan(ScanParams p, int B, cudaStream_t stream, const DeviceInfo& dev)
{
    auto kernel = ss2d_chunk_scan_kernel<T, NMAX, RREG, CHUNKED, DT_MMA>;
    const int S = CHUNKED ? p.S : 1;
    const int window = CHUNKED ? S * kSteps : kWindowSub * kSteps;
    auto smem_of = [&](int gw) {
        const size_t sums = CHUNKED ? (size_t)gw * S * 32 * (NMAX == 1 ? 2 : NMAX + 1) : 0;
        const size_t tiles =
            DT_MMA || !CHUNKED ? (size_t)gw * S * (kDtScratch + ScanDt<T, NMAX, RREG, CHUNKED, DT_MMA>::kSharedFloats) : 0;
        return ((size_t)window * p.Cp + window + kSteps + sums + tiles) * sizeof(float);
    };
    // Channel groups per block from the occupancy (fewest_waves_groups). Blocks of one length make a
    // partial last wave cost nearly a whole one: VMamba-T stage 1, batch 128 ran 1.94 waves of 6-warp
    // blocks.
    const int groups32 = (p.D + 31) / 32, max_warps = scan_threads_max(CHUNKED, RREG, NMAX) / 32;
    if (p.GW <= 0) {
        p.GW = fewest_waves_groups(kernel, groups32, S, max_warps < 16 ? max_warps : 16, smem_of, B, dev);
        if (p.GW <= 0) return VMK_ERR_UNSUPPORTED;
    }
    p.ngroups = (groups32 + p.GW - 1) / p.GW;
    const size_t smem = smem_of(p.GW);
    if (!allow_smem(kernel, smem)) return VMK_ERR_CUDA;
    const int threads = 32 * p.GW * S;
    if (threads > scan_threads_max(CHUNKED, RREG, NMAX)) return VMK_ERR_UNSUPPORTED;
    // Segments (chunked scans of small batches): a long sequence split so that the blocks of all
    // segments fill the SMs about once (one chunked block takes a whole SM's registers), in whole
    // windows. Each segment but the last is scanned twice: once for its summary (mode 1), then
    // with readout from its true incoming state (mode 2). p.nseg on entry: 0 = choose, else the
    // segment count asked for (VMK_SCAN_SEGMENTS; the benchmark sweep measures the choice).
    const int L = p.H * p.W, want_in = p.nseg;
    p.nseg = 1;
    p.seg_steps = L;
    p.mode = 0;
    const int nwin = (L + S * kSteps - 1) / (S * kSteps);
    // (fewer than 4 windows: the second launch and the summary pass cost more than they save, as at
    // VMamba-T stage 3, batch 1, with 2 windows)
    if (CHUNKED && p.seg_sum && (nwin >= 4 || want_in > 1)) {
        const int window = S * kSteps;
        const long long per_segment = (long long)kDirs * p.ngroups * B;
        long long want = want_in > 0 ? want_in : dev.sms / per_segment;
        want = want < 1 ? 1 : want > kMaxSegments ? kMaxSegments : want;
        if (want > nwin) want = nwin;
        const int seg_windows = (int)((nwin + want - 1) / want);
        p.nseg = (nwin + seg_windows - 1) / seg_windows;
        p.seg_steps = seg_windows * window;
    }
    if (p.nseg > 1) {
        p.mode = 1;
        kernel<<<dim3(kDirs * p.ngroups, B, p.nseg - 1), threads, smem, stream>>>(p);
        if (cudaPeekAtLastError() != cudaSuccess) return VMK_ERR_CUDA;
        p.mode = 2;
    }
    kernel<<<dim3(kDirs * p.ngroups, B, p.nseg), threads, smem, stream>>>(p);
    return launch_status();
}

// The pair scan (ss2d_pair_scan_kernel; float16, d_state 1, unchunked, tensor-core dt, D even):
// 64-channel warps, the block's warps chosen as in launch_scan from ceil(D / 64) warp groups
// (VMK_SCAN_GROUPS applies where it divides that count and fits the block, else the choice).
template <int RREG>
vmk_status_t launch_pair_scan(ScanParams p, int B, cudaStream_t stream, const DeviceInfo& dev)
{
    auto kernel = ss2d_pair_scan_kernel<RREG>;
    constexpr int window = kWindowSub * kSteps;
    auto smem_of = [&](int gw) {
        return ((size_t)window * p.Cp + window + kSteps + (size_t)gw * (kDtPairScratch + PairDt<RREG>::kSharedFloats)) *
               sizeof(float);
    };
    const int groups = (p.D + kPairChannels - 1) / kPairChannels, max_warps = kPairThreadsMax / 32;
    if (p.GW > 0 && (groups % p.GW != 0 || p.GW > max_warps)) p.GW = 0;
    if (p.GW <= 0) p.GW = fewest_waves_groups(kernel, groups, 1, max_warps, smem_of, B, dev);
    if (p.GW <= 0) return VMK_ERR_UNSUPPORTED;
    p.ngroups = groups / p.GW;
    const size_t smem = smem_of(p.GW);
    if (!allow_smem(kernel, smem)) return VMK_ERR_CUDA;
    kernel<<<dim3(kDirs * p.ngroups, B), 32 * p.GW, smem, stream>>>(p);
    return launch_status();
}

// The fused scan + merge (ss2d_fused_scan_kernel). Configuration: GW channel groups per block (1 or
// 2, a divisor of ceil(D / 32), or VMK_SCAN_GROUPS) and x_dbl window rows (16, 32 or 64, no longer
// than the sequence needs, or VMK_SCAN_FUSED_ROWS), the one whose grid of B * ceil(D / 32) / GW
// blocks needs the fewest waves at the occupancy that the query reports for its shared memory
// (ties within 2% to the larger window, then the larger block; the y tiles grow with L, 4 GW L 33
// partial-size bytes). VMK_ERR_UNSUPPORTED when no block fits on an SM (the caller then runs the
// three launches).
template <typename T, int NMAX, int RREG, bool DT_MMA>
vmk_status_t launch_fused(ScanParams p, FusedParams f, int B, cudaStream_t stream, const DeviceInfo& dev)
{
    auto kernel = ss2d_fused_scan_kernel<T, NMAX, RREG, DT_MMA>;
    const int L = p.H * p.W, groups32 = (p.D + 31) / 32;
    const size_t psize = sizeof(typename Partial<T>::type);
    int gw_best = 0, rows_best = 0;
    double best = INFINITY;
    for (int g = 1; g <= kFusedMaxGroups; ++g) {
        if (groups32 % g != 0 || (p.GW > 0 && g != p.GW)) continue;
        for (int rows = kSteps; rows <= kWindowSub * kSteps; rows *= 2) {
            if (f.wrows > 0 ? rows != f.wrows : rows > kSteps && rows / 2 >= L) continue;
            const size_t smem = fused_smem_bytes(g, rows, L, p.Cp, psize);
            if (smem > (size_t)dev.smem_optin) continue;
            const int per_sm = scan_blocks_per_sm(kernel, kDirs * 32 * g, smem);
            if (per_sm <= 0) continue;
            const double waves = fmax(1.0, (double)(groups32 / g) * B / ((double)per_sm * dev.sms));
            if (waves <= best * 1.02) {
                gw_best = g;
                rows_best = rows;
                best = fmin(best, waves);
            }
        }
    }
    if (gw_best == 0) return VMK_ERR_UNSUPPORTED;
    p.GW = gw_best;
    f.wrows = rows_best;
    const size_t smem = fused_smem_bytes(p.GW, f.wrows, L, p.Cp, psize);
    if (!allow_smem(kernel, smem)) return VMK_ERR_CUDA;
    kernel<<<dim3(groups32 / p.GW, B), kDirs * 32 * p.GW, smem, stream>>>(p, f);
    return launch_status();
}

// Calls launch(rreg, dt_mma) with R's register tile (rank_regs) and the dt source as compile-time
// constants (std::integral_constant / std::bool_constant): dt on tensor cores wherever it applies
// (dt_mma_fits: DtMma for float16 I/O, DtTf32 for float32), unless `mma` is false (VMK_SCAN_DT=simt).
template <bool HALF, typename Launch>
vmk_status_t with_rank_tile(int R, bool mma, Launch&& launch)
{
    auto dt = [&](auto rreg) -> vmk_status_t {
        if constexpr (dt_mma_fits(HALF, decltype(rreg)::value))
            if (mma) return launch(rreg, std::true_type{});
        return launch(rreg, std::false_type{});
    };
    switch (rank_regs(R)) {
    case 8: return dt(std::integral_constant<int, 8>{});
    case 16: return dt(std::integral_constant<int, 16>{});
    case 32: return dt(std::integral_constant<int, 32>{});
    case 48: return dt(std::integral_constant<int, 48>{});
    case 64: return dt(std::integral_constant<int, 64>{});
    default: return dt(std::integral_constant<int, 0>{});
    }
}

// The three-launch path's scan (chunked or not), and the fused scan + merge. The fused kernel exists
// only with the tensor-core dt (every rank tile of 8..64 in both dtypes): with the CUDA-core dt
// (VMK_SCAN_DT=simt, or dt_rank > 64) it is not built (ptxas spilled several of those variants)
// and the three launches run. `pair`: the two-channel lanes (launch_pair_scan) where they exist
// (float16, d_state 1, unchunked, tensor-core dt; the caller checks that D is even).
template <typename T, int NMAX>
vmk_status_t launch_scan_path(bool chunked, const ScanParams& p, int B, cudaStream_t stream, const DeviceInfo& dev,
                              bool mma, bool pair)
{
    return with_rank_tile<std::is_same<T, __half>::value>(p.R, mma, [&](auto rreg, auto dt) {
        constexpr int RREG = decltype(rreg)::value;
        constexpr bool DT = decltype(dt)::value;
        if constexpr (std::is_same<T, __half>::value && NMAX == 1 && DT)
            if (pair && !chunked) return launch_pair_scan<RREG>(p, B, stream, dev);
        return chunked ? launch_scan<T, NMAX, RREG, true, DT>(p, B, stream, dev)
                       : launch_scan<T, NMAX, RREG, false, DT>(p, B, stream, dev);
    });
}

template <typename T, int NMAX>
vmk_status_t launch_fused_path(const ScanParams& p, const FusedParams& f, int B, cudaStream_t stream,
                               const DeviceInfo& dev, bool mma)
{
    return with_rank_tile<std::is_same<T, __half>::value>(p.R, mma, [&](auto rreg, auto dt) -> vmk_status_t {
        if constexpr (decltype(dt)::value)
            return launch_fused<T, NMAX, decltype(rreg)::value, true>(p, f, B, stream, dev);
        else
            return VMK_ERR_UNSUPPORTED;
    });
}

template <typename T>
vmk_status_t ss2d_launch(const vmk_ss2d_args_t* a, void* ws, cudaStream_t stream, const DeviceInfo& dev)
{
    const int B = a->batch, D = a->dim, H = a->height, W = a->width, N = a->d_state, R = a->dt_rank;
    const int L = H * W;
    const XdblCols cols = xdbl_cols(R, N);
    const Ss2dLayout lay = ss2d_layout(a);
    char* base = static_cast<char*>(ws);
    T* xt = reinterpret_cast<T*>(base + lay.xt);
    float* xdbl = reinterpret_cast<float*>(base + lay.xdbl);
    auto* ys = reinterpret_cast<typename Partial<T>::type*>(base + lay.ys);

    const vmk_status_t prep = ss2d_prep(static_cast<const T*>(a->x), static_cast<const T*>(a->x_proj_weight), B, D,
                                          H, W, cols, xt, xdbl, stream, dev);
    if (prep != VMK_OK) return prep;

    // Chunk slots only where rows are too few to keep ~4 warps per SM busy: the unchunked scan does
    // fewer instructions per step (no fix-up pass), so it wins whenever it has the parallelism
    // (measured, docs/KERNELS.md: VMamba-T stage 0 batch 128, 1536 row warps: unchunked 1.6x faster).
    const int groups32 = (D + 31) / 32;
    const long long row_warps = (long long)B * kDirs * groups32;
    // d_state > 1 chunks scan their steps twice (no room for N local states per step): even fewer.
    const int max_slots = N == 1 && rank_regs(R) > 0 && rank_regs(R) <= 16 ? 16 : 8;
    // (Slots may cover more than the sequence: at VMamba-T stage 3, batch 1 (L 49), 4 slots of 16
    // steps were faster than the 2 that stay within it in the bench_kernels.py sweep of the third
    // session, H200.)
    int S = 1;
    while (S < max_slots && row_warps * S < 4LL * dev.sms && S * kSteps < L) S *= 2;
    // Tuning and test knob: VMK_SCAN_SLOTS forces the slot count (a power of two; 1 = unchunked).
    if (const char* env = getenv("VMK_SCAN_SLOTS")) {
        const int want = atoi(env);
        if (want >= 1 && want <= max_slots && (want & (want - 1)) == 0) S = want;
    }
    // Channel groups per block: chosen in launch_scan from the kernel's occupancy. Tuning and test
    // knob: VMK_SCAN_GROUPS forces it (a divisor of ceil(D / 32) that fits the block).
    int GW = 0;
    if (const char* env = getenv("VMK_SCAN_GROUPS")) {
        const int want = atoi(env);
        if (want >= 1 && groups32 % want == 0 && want * S <= 16) GW = want;
    }
    // Segments of the chunked scan: chosen in launch_scan; VMK_SCAN_SEGMENTS forces the count asked
    // for (1 = none), a tuning and test knob.
    int nseg = 0;
    if (const char* env = getenv("VMK_SCAN_SEGMENTS")) {
        const int want = atoi(env);
        if (want >= 1 && want <= kMaxSegments) nseg = want;
    }
    float* seg_sum = B <= kSegmentMaxBatch ? reinterpret_cast<float*>(base + lay.seg) : nullptr;
    ScanParams p{xt, xdbl, a->dt_projs_weight, a->dt_projs_bias, a->A_logs, ys,
                 D, H, W, N, R, cols.Cp, cols.bo, cols.co, S, GW, 0, seg_sum, 0, nseg, 0};
    // Tuning and test knob: VMK_SCAN_DT=simt keeps dt on CUDA cores where tensor cores would apply.
    const char* dt_env = getenv("VMK_SCAN_DT");
    const bool mma = !(dt_env && !strcmp(dt_env, "simt"));

    // Fused scan + merge (short sequences; launch_fused): opt-in only. In the bench_kernels.py sweep
    // of the third session (H200, VMamba-T batch 128 float16) it was slower than the three launches
    // at stages 2 and 3 (its y tiles limit a stage-2 block to 12 warps per SM, and the four direction
    // warps of a block wait for the slowest; docs/KERNELS.md, design item 4). Knobs: VMK_SCAN_FUSED=1 takes it wherever one block fits on an SM (any batch,
    // even where chunk slots would be chosen, and over VMK_SCAN_SLOTS); VMK_SCAN_FUSED_ROWS=16|32|64
    // forces its x_dbl window rows (VMK_SCAN_GROUPS, when 1 or 2, its channel groups per block).
    const char* fused_env = getenv("VMK_SCAN_FUSED");
    const int fused_knob = fused_env ? atoi(fused_env) : 0;
    if (fused_knob == 1) {
        FusedParams f{a->x, a->Ds, a->y, 0};
        if (const char* env = getenv("VMK_SCAN_FUSED_ROWS")) {
            const int want = atoi(env);
            if (want == kSteps || want == 2 * kSteps || want == kWindowSub * kSteps) f.wrows = want;
        }
        ScanParams pf = p;
        pf.GW = GW <= kFusedMaxGroups ? GW : 0;
        const vmk_status_t st = N == 1 ? launch_fused_path<T, 1>(pf, f, B, stream, dev, mma)
                                       : launch_fused_path<T, kMaxDState>(pf, f, B, stream, dev, mma);
        if (st != VMK_ERR_UNSUPPORTED) return st;  // launched (or failed); else the three launches
    }

    // Two channels per lane (ss2d_pair_scan_kernel) where they exist (float16, d_state 1, unchunked,
    // tensor-core dt) and D is even (the __half2 accesses), when the rank tile is 16 or more and the
    // pair warps give every SM at least 8. In the sixth session's device A/B (H200, our builds only)
    // the pairs were faster at VMamba-T/B stages 1-3, batch 128 (rank tiles 16-64, 12-62 pair warps
    // per SM), and slower at stage 0 (rank tile 8, 6-8 pair warps per SM: too few warps to hide the
    // step latency with two chains each). VMK_SCAN_LANE_CHANNELS = 1 | 2 forces one or two channels
    // per lane (2 still only where the kernel exists and D is even).
    const char* lanes_env = getenv("VMK_SCAN_LANE_CHANNELS");
    const int lanes_knob = lanes_env ? atoi(lanes_env) : 0;
    const long long pair_warps = (long long)B * kDirs * ((D + kPairChannels - 1) / kPairChannels);
    const bool pair_rule = rank_regs(R) >= 16 && pair_warps >= 8LL * dev.sms;
    const bool pair = D % 2 == 0 && (lanes_knob == 2 || (lanes_knob != 1 && pair_rule));
    const vmk_status_t st = N == 1 ? launch_scan_path<T, 1>(S > 1, p, B, stream, dev, mma, pair)
                                   : launch_scan_path<T, kMaxDState>(S > 1, p, B, stream, dev, mma, pair);
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
    if (L * xdbl_cols(a->dt_rank, a->d_state).Cp >= (1LL << 31) || L * a->dim >= (1LL << 31))
        return VMK_ERR_UNSUPPORTED;  // 32-bit offsets within one image
    return a->dtype == VMK_FLOAT16 ? ss2d_launch<__half>(a, ws, stream, dev) : ss2d_launch<float>(a, ws, stream, dev);
}

}  // namespace vmk
