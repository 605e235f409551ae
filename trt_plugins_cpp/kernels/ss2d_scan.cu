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

namespace vmk {
namespace {

constexpr int kPrepPx = 64;        // pixels per prep block: a run of the row-major order
constexpr int kPrepThreads = 256;  // 64 pixels x 4 row groups of 16 outputs
constexpr int kPrepK = 32;         // input channels per tile
constexpr int kPrepM = 64;         // x_dbl rows per pass
constexpr int kSteps = 16;         // T: steps per thread per super-chunk
constexpr int kWindowSub = 4;      // unchunked scans stage 4 * T steps of x_dbl at a time

// W_dt rows up to 64 live in registers (dt_rank of every released model is ceil(D / 16) <= 64).
inline int rank_regs(int R) { return R <= 8 ? 8 : R <= 16 ? 16 : R <= 32 ? 32 : R <= 64 ? 64 : 0; }

// x_dbl row stride: C = R + 2N rounded to float4, and at least the register tile (zero padding).
inline int xdbl_stride(int R, int N)
{
    const int c4 = (R + 2 * N + 3) / 4 * 4;
    const int rr = rank_regs(R);
    return c4 > rr ? c4 : rr;
}

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
    w.total = align_up(w.ys + B * kDirs * L * D * sizeof(float));
    return w;
}

// ------------------------------------------------------------------------------------------------
// 1. prep
template <typename T>
__global__ void __launch_bounds__(kPrepThreads) ss2d_prep_kernel(
    const T* __restrict__ x, const T* __restrict__ wx, int D, int H, int W, int C, int Cp,
    T* __restrict__ xt, float* __restrict__ xdbl)
{
    __shared__ float xk_s[kPrepK][kPrepPx + 1];
    __shared__ __align__(16) float w_s[kPrepK][kPrepM + 4];  // transposed W tile: 4 float4 per thread
    __shared__ float out_s[kPrepM][kPrepPx + 1];
    const int b = blockIdx.y;
    const int L = H * W;
    const int p0 = blockIdx.x * kPrepPx;
    const int npx = min(kPrepPx, L - p0);
    const int tid = threadIdx.x, px = tid & (kPrepPx - 1), ty = tid >> 6;
    const int M = kDirs * Cp;
    const T* xb = x + (size_t)b * D * L;
    for (int m0 = 0; m0 < M; m0 += kPrepM) {
        float acc[16];
#pragma unroll
        for (int t = 0; t < 16; ++t) acc[t] = 0.f;
        for (int d0 = 0; d0 < D; d0 += kPrepK) {
            for (int e = tid; e < kPrepK * kPrepPx; e += kPrepThreads) {
                const int dd = e >> 6, pp = e & (kPrepPx - 1);
                float v = 0.f;
                if (d0 + dd < D && pp < npx) v = to_f32(xb[(size_t)(d0 + dd) * L + p0 + pp]);
                xk_s[dd][pp] = v;
            }
            for (int e = tid; e < kPrepM * kPrepK; e += kPrepThreads) {
                const int mm = e >> 5, dd = e & 31;
                const int m = m0 + mm, k = m / Cp, c = m - k * Cp;
                float v = 0.f;
                if (m < M && c < C && d0 + dd < D) v = to_f32(wx[((size_t)k * C + c) * D + d0 + dd]);
                w_s[dd][mm] = v;
            }
            __syncthreads();
            if (m0 == 0) {  // channels-last copy of x, coalesced along channels
                for (int e = tid; e < kPrepK * kPrepPx; e += kPrepThreads) {
                    const int pp = e >> 5, dd = e & 31;
                    if (pp < npx && d0 + dd < D)
                        xt[((size_t)b * L + p0 + pp) * D + d0 + dd] = from_f32<T>(xk_s[dd][pp]);
                }
            }
#pragma unroll 8
            for (int dd = 0; dd < kPrepK; ++dd) {
                const float xv = xk_s[dd][px];
                const float4* wr = reinterpret_cast<const float4*>(&w_s[dd][ty * 16]);
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    const float4 w4 = wr[q];
                    acc[4 * q + 0] = fmaf(w4.x, xv, acc[4 * q + 0]);
                    acc[4 * q + 1] = fmaf(w4.y, xv, acc[4 * q + 1]);
                    acc[4 * q + 2] = fmaf(w4.z, xv, acc[4 * q + 2]);
                    acc[4 * q + 3] = fmaf(w4.w, xv, acc[4 * q + 3]);
                }
            }
            __syncthreads();
        }
#pragma unroll
        for (int t = 0; t < 16; ++t) out_s[ty * 16 + t][px] = acc[t];
        __syncthreads();
        // each (pixel, direction) row of x_dbl is Cp contiguous floats: c runs fastest
        const int mcount = min(kPrepM, M - m0);
        for (int e = tid; e < mcount * kPrepPx; e += kPrepThreads) {
            const int pp = e / mcount, mm = e - pp * mcount;
            if (pp >= npx) continue;
            const int m = m0 + mm, k = m / Cp, c = m - k * Cp;
            const int p = p0 + pp, i = p / W, j = p - i * W;
            xdbl[(((size_t)b * kDirs + k) * L + seq_index(k, i, j, H, W)) * Cp + c] = out_s[mm][pp];
        }
        __syncthreads();
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
    float* ys;             // [B][4][L][D]
    int D, H, W, N, R, Cp;
    int S, GW, ngroups;    // chunk slots, channel groups (warps) per block, blocks along channels
};

// Walks direction k's sequence from position t: pixel p = i * W + j.
struct Walk {
    int i, j, p;
    __device__ __forceinline__ void start(int k, int t, int H, int W, int L)
    {
        const int l = k < 2 ? t : L - 1 - t;  // index in the row-major (k even) / column-major order
        if (k & 1) {
            j = l / H;
            i = l - j * H;
            p = i * W + j;
        } else {
            p = l;
        }
    }
    __device__ __forceinline__ void next(int k, int H, int W)
    {
        if (k == 0) {
            ++p;
        } else if (k == 2) {
            --p;
        } else if (k == 1) {
            if (++i == H) { i = 0; ++j; }
            p = i * W + j;
        } else {
            if (--i < 0) { i = H - 1; --j; }
            p = i * W + j;
        }
    }
};

template <bool CHUNKED, int RREG> __host__ __device__ constexpr int scan_threads_max()
{
    return CHUNKED && RREG > 0 && RREG <= 16 ? 512 : 256;
}

// dt = bias + W_dt[r] . dt_low for one staged x_dbl row
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

template <typename T, int NMAX, int RREG, bool CHUNKED>
__global__ void __launch_bounds__(scan_threads_max<CHUNKED, RREG>()) ss2d_chunk_scan_kernel(ScanParams p)
{
    static_assert(!CHUNKED || NMAX == 1, "chunk slots keep per-step state in registers: d_state 1 only");
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
    float* sum_s = xd_s + (size_t)window * Cp; // CHUNKED: [GW][S][32] x (P_end, h_end)

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

    const T* xtb = static_cast<const T*>(p.xt) + (size_t)b * L * p.D + dc;
    const float* xdb = p.xdbl + ((size_t)b * kDirs + k) * L * Cp;
    float* ysb = p.ys + ((size_t)b * kDirs + k) * L * p.D + dc;

    float carry[NMAX];  // state entering the current window (all slots of a channel hold the same)
#pragma unroll
    for (int n = 0; n < NMAX; ++n) carry[n] = 0.f;

    for (int t0 = 0; t0 < L; t0 += window) {
        const int cnt = min(window, L - t0);
        __syncthreads();  // the previous window's readers are done
        {
            const float4* src = reinterpret_cast<const float4*>(xdb + (size_t)t0 * Cp);
            float4* dst = reinterpret_cast<float4*>(xd_s);
            const int n4 = cnt * Cp / 4;
            for (int e = threadIdx.x; e < n4; e += blockDim.x) dst[e] = src[e];
        }
        __syncthreads();

        if (CHUNKED) {
            const int s0 = slot * kSteps;  // this thread's chunk within the window
            Walk w;
            w.start(k, t0 + s0, H, W, L);
            float u[kSteps];
#pragma unroll
            for (int q = 0; q < kSteps; ++q) {
                u[q] = s0 + q < cnt ? to_f32(xtb[(size_t)w.p * p.D]) : 0.f;
                w.next(k, H, W);
            }
            float h = 0.f, P = 1.f, hl[kSteps], Pl[kSteps];
#pragma unroll
            for (int q = 0; q < kSteps; ++q) {
                const bool ok = s0 + q < cnt;
                const float* row = xd_s + (size_t)(s0 + q) * Cp;
                const float delta = softplus_f32(dt_of<T, RREG>(row, wdt, wdt_g, bias, R));
                const float a = ok ? fast_exp2(delta * A2[0]) : 1.f;
                const float bu = ok ? delta * u[q] * row[R] : 0.f;
                h = fmaf(a, h, bu);
                P *= a;
                hl[q] = h;
                Pl[q] = P;
            }
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
            w.start(k, t0 + s0, H, W, L);
#pragma unroll
            for (int q = 0; q < kSteps; ++q) {
                if (live && s0 + q < cnt)
                    ysb[(size_t)w.p * p.D] = xd_s[(size_t)(s0 + q) * Cp + R + 1] * fmaf(Pl[q], hin, hl[q]);
                w.next(k, H, W);
            }
        } else {
            for (int s0 = 0; s0 < cnt; s0 += kSteps) {
                Walk w;
                w.start(k, t0 + s0, H, W, L);
                float u[kSteps];
#pragma unroll
                for (int q = 0; q < kSteps; ++q) {
                    u[q] = s0 + q < cnt ? to_f32(xtb[(size_t)w.p * p.D]) : 0.f;
                    w.next(k, H, W);
                }
                w.start(k, t0 + s0, H, W, L);
#pragma unroll
                for (int q = 0; q < kSteps; ++q) {
                    const float* row = xd_s + (size_t)(s0 + q) * Cp;
                    const float delta = softplus_f32(dt_of<T, RREG>(row, wdt, wdt_g, bias, R));
                    const float du = delta * u[q];
                    float y = 0.f;
#pragma unroll
                    for (int n = 0; n < NMAX; ++n) {
                        if (NMAX == 1 || n < N) {
                            carry[n] = fmaf(fast_exp2(delta * A2[n]), carry[n], du * row[R + n]);
                            y = fmaf(row[R + N + n], carry[n], y);
                        }
                    }
                    // steps past the end only occur in the last window; their state is never used
                    if (live && s0 + q < cnt) ysb[(size_t)w.p * p.D] = y;
                    w.next(k, H, W);
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// 3. merge
template <typename T>
__global__ void __launch_bounds__(256) ss2d_merge_kernel(const float* __restrict__ ys, const T* __restrict__ x,
                                                         const float* __restrict__ Ds, int D, int L,
                                                         T* __restrict__ y)
{
    __shared__ float tile[32][33];
    const int b = blockIdx.z, p0 = blockIdx.x * 32, d0 = blockIdx.y * 32;
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const size_t ks = (size_t)L * D;
    for (int pp = ty; pp < 32; pp += 8) {  // lanes over channels: coalesced in ys
        const int p = p0 + pp, d = d0 + tx;
        float s = 0.f;
        if (p < L && d < D) {
            const float* q = ys + ((size_t)b * kDirs * L + p) * D + d;
            s = (q[0] + q[2 * ks]) + (q[ks] + q[3 * ks]);
        }
        tile[pp][tx] = s;
    }
    __syncthreads();
    for (int dd = ty; dd < 32; dd += 8) {  // lanes over pixels: coalesced in x and y
        const int d = d0 + dd, p = p0 + tx;
        if (d < D && p < L) {
            const float dsum = (Ds[d] + Ds[D + d]) + (Ds[2 * D + d] + Ds[3 * D + d]);
            const size_t o = ((size_t)b * D + d) * L + p;
            y[o] = from_f32<T>(fmaf(dsum, to_f32(x[o]), tile[tx][dd]));
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
    const size_t smem = ((size_t)window * p.Cp + (CHUNKED ? (size_t)p.GW * S * 64 : 0)) * sizeof(float);
    if (!allow_smem(kernel, smem)) return VMK_ERR_CUDA;
    const int threads = 32 * p.GW * S;
    if (threads > scan_threads_max<CHUNKED, RREG>()) return VMK_ERR_UNSUPPORTED;
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
    float* ys = reinterpret_cast<float*>(base + lay.ys);

    ss2d_prep_kernel<T><<<dim3((L + kPrepPx - 1) / kPrepPx, B), kPrepThreads, 0, stream>>>(
        static_cast<const T*>(a->x), static_cast<const T*>(a->x_proj_weight), D, H, W, C, Cp, xt, xdbl);
    if (launch_status() != VMK_OK) return VMK_ERR_CUDA;

    // Chunk slots only where rows are too few to fill the GPU: about 32 warps per SM wanted.
    const int groups32 = (D + 31) / 32;
    const long long row_warps = (long long)B * kDirs * groups32;
    const int max_slots = rank_regs(R) > 0 && rank_regs(R) <= 16 ? 16 : 8;
    int S = 1;
    if (N == 1)
        while (S < max_slots && row_warps * S < 32LL * dev.sms && 2 * S * kSteps <= L) S *= 2;
    // Tuning and test knob: VMK_SCAN_SLOTS forces the slot count (a power of two; 1 = unchunked).
    if (const char* env = getenv("VMK_SCAN_SLOTS")) {
        const int want = atoi(env);
        if (want >= 1 && want <= max_slots && (want & (want - 1)) == 0 && (N == 1 || want == 1)) S = want;
    }
    int GW = S >= 8 ? 1 : 8 / S;
    if (GW > groups32) GW = groups32;
    ScanParams p{xt, xdbl, a->dt_projs_weight, a->dt_projs_bias, a->A_logs, ys,
                 D, H, W, N, R, Cp, S, GW, (groups32 + GW - 1) / GW};
    vmk_status_t st;
    if (N == 1) st = S > 1 ? launch_scan_rank<T, 1, true>(p, B, stream) : launch_scan_rank<T, 1, false>(p, B, stream);
    else st = launch_scan_rank<T, kMaxDState, false>(p, B, stream);
    if (st != VMK_OK) return st;

    ss2d_merge_kernel<T><<<dim3((L + 31) / 32, groups32, B), 256, 0, stream>>>(
        ys, static_cast<const T*>(a->x), a->Ds, D, L, static_cast<T*>(a->y));
    return launch_status();
}

}  // namespace

size_t ss2d_workspace_bytes(const vmk_ss2d_args_t* a) { return ss2d_layout(a).total; }

vmk_status_t ss2d_run(const vmk_ss2d_args_t* a, void* ws, cudaStream_t stream, const DeviceInfo& dev)
{
    if ((long long)a->height * a->width * xdbl_stride(a->dt_rank, a->d_state) >= (1LL << 31))
        return VMK_ERR_UNSUPPORTED;  // 32-bit offsets within one image
    return a->dtype == VMK_FLOAT16 ? ss2d_launch<__half>(a, ws, stream, dev) : ss2d_launch<float>(a, ws, stream, dev);
}

}  // namespace vmk
