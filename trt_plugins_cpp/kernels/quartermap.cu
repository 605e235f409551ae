// QuarterMapDown / QuarterMapUp: one pass each. Flattened over a block of whole output rows, four
// elements per thread, so narrow maps (7 columns) keep every lane busy; the index divisions are
// multiply-high (no 64-bit divides).
#include "common.cuh"

namespace vmk {
namespace {


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

int kept(int size, int stride, int keep) { return (size / stride) * keep + (size % stride < keep ? size % stride : keep); }

// The fields both directions share: a (batch * channels) stack of in_h x in_w maps to out_h x out_w.
QmParams resample_params(const void* x, void* y, int batch, int channels, int in_h, int in_w, int out_h, int out_w)
{
    QmParams p{};
    p.x = x;
    p.y = y;
    p.in_h = in_h;
    p.in_w = in_w;
    p.out_h = out_h;
    p.out_w = out_w;
    p.rows = (long long)batch * channels * out_h;
    return p;
}

}  // namespace

vmk_status_t quartermap_down_run(const vmk_quartermap_down_args_t* a, cudaStream_t stream)
{
    QmParams p = resample_params(a->x, a->y, a->batch, a->channels, a->height, a->width,
                                 kept(a->height, a->stride, a->keep), kept(a->width, a->stride, a->keep));
    p.stride = a->stride;
    p.keep = a->keep;
    return launch_quartermap(p, a->dtype, false, stream);
}

vmk_status_t quartermap_up_run(const vmk_quartermap_up_args_t* a, cudaStream_t stream)
{
    return launch_quartermap(resample_params(a->x, a->y, a->batch, a->channels, a->in_height, a->in_width,
                                             a->out_height, a->out_width),
                             a->dtype, true, stream);
}

}  // namespace vmk
