// VMeanbaScan (the literal reduced scan, METHODS.md): four launches.
//   1. tables: A * log2(e) per row and the mean of A over all rows (variant 2);
//   2. stats: per 8x8 pixel tile, x_dbl = W_x[k] @ x for all four directions, then per pixel and
//      direction the sums over channels that the reduced sequence needs (exp(delta A), delta * u, ...);
//   3. reduced scan: one block per (image, group), a chunked two-pass block scan;
//   4. merge: y = sum over directions of the reduced output + (sum_k Ds) * x.
#include "common.cuh"

namespace vmk {
namespace {

constexpr int kTile = 8;            // projection tiles are 8x8 pixels: 32-byte row pieces
constexpr int kTilePx = kTile * kTile;
constexpr int kProjThreads = 256;   // 64 pixels x 4 output-row groups
constexpr int kProjM = 32;          // output rows per GEMM pass
constexpr int kProjK = 32;          // input channels per GEMM step
constexpr int kProjWStride = kProjM + 4;  // transposed W tile row: 16-byte aligned, offset banks
constexpr int kReducedThreads = 128;

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
vmk_status_t vmeanba_launch(const vmk_ss2d_args_t* a, int variant, void* ws, cudaStream_t stream,
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

}  // namespace

size_t vmeanba_workspace_bytes(const vmk_ss2d_args_t* a) { return vmeanba_layout(a).total; }

vmk_status_t vmeanba_run(const vmk_ss2d_args_t* a, int variant, void* ws, cudaStream_t stream, const DeviceInfo& dev)
{
    return a->dtype == VMK_FLOAT16 ? vmeanba_launch<__half>(a, variant, ws, stream, dev)
                                   : vmeanba_launch<float>(a, variant, ws, stream, dev);
}

}  // namespace vmk
