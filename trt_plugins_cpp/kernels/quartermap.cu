// QuarterMapDown / QuarterMapUp: one pass each. Flattened over a block of whole output rows, four
// runs of V consecutive outputs per thread, so narrow maps (7 columns) keep every lane busy; the
// index divisions are multiply-high (no 64-bit divides). V is the widest run of at most 16 bytes
// that divides the output width: each run is gathered from one input row and stored as one
// V-element access (the stores are most of the bytes: 4/5 of them for up).
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

template <int BYTES> struct VecOf;
template <> struct VecOf<2> { using type = unsigned short; };
template <> struct VecOf<4> { using type = unsigned int; };
template <> struct VecOf<8> { using type = uint2; };
template <> struct VecOf<16> { using type = uint4; };

// Input row / column of output row / column o: nearest (o * in / out) for up; for down, the o-th
// kept one (keep of every stride).
template <bool UP>
__device__ __forceinline__ uint32_t source_of(const QmParams& p, uint32_t o, int in_len, const FastDiv& by_out_map)
{
    if (UP) return by_out_map.div(o * (uint32_t)in_len);
    const uint32_t q = p.by_keep.div(o);
    return q * p.stride + (o - q * p.keep);
}

template <typename T, bool UP, int V>
__global__ void __launch_bounds__(kQmThreads) quartermap_kernel(QmParams p)
{
    using Vec = typename VecOf<V * sizeof(T)>::type;
    const long long r0 = (long long)blockIdx.x * p.rows_per_block;
    const int nrows = (int)min((long long)p.rows_per_block, p.rows - r0);
    const int count = nrows * p.out_w;
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y) + r0 * p.out_w;
    const uint32_t bc0 = p.by_out_h.div((uint32_t)r0), i0 = (uint32_t)r0 - bc0 * (uint32_t)p.out_h;
#pragma unroll
    for (int q = 0; q < kQmPerThread; ++q) {
        // first output of this thread's run (runs never cross a row: V divides out_w)
        const int n = (threadIdx.x + q * kQmThreads + (int)blockIdx.y * kQmThreads * kQmPerThread) * V;
        if (n >= count) break;
        const uint32_t lr = p.by_out_w.div((uint32_t)n);
        const uint32_t oj = (uint32_t)n - lr * p.out_w;
        const uint32_t ri = i0 + lr;                 // rows since the first plane of this block
        const uint32_t dbc = p.by_out_h.div(ri);
        const uint32_t oi = ri - dbc * p.out_h;
        const uint32_t ii = source_of<UP>(p, oi, p.in_h, p.by_out_h_map);
        const T* src = x + ((size_t)(bc0 + dbc) * p.in_h + ii) * p.in_w;
        Vec out;
        T* ov = reinterpret_cast<T*>(&out);
#pragma unroll
        for (int v = 0; v < V; ++v) ov[v] = src[source_of<UP>(p, oj + v, p.in_w, p.by_out_w_map)];
        *reinterpret_cast<Vec*>(y + n) = out;
    }
}

template <typename T, bool UP>
void launch_quartermap_vec(const QmParams& p, dim3 grid, int V, cudaStream_t stream)
{
    if constexpr (sizeof(T) == 2)
        if (V == 8) return quartermap_kernel<T, UP, 8><<<grid, kQmThreads, 0, stream>>>(p);
    if (V == 4) quartermap_kernel<T, UP, 4><<<grid, kQmThreads, 0, stream>>>(p);
    else if (V == 2) quartermap_kernel<T, UP, 2><<<grid, kQmThreads, 0, stream>>>(p);
    else quartermap_kernel<T, UP, 1><<<grid, kQmThreads, 0, stream>>>(p);
}


vmk_status_t launch_quartermap(QmParams p, vmk_dtype_t dtype, bool up, cudaStream_t stream)
{
    // run length: the widest of at most 16 bytes that divides the output width
    const int esize = dtype == VMK_FLOAT16 ? 2 : 4;
    int V = 16 / esize;
    while (V > 1 && (p.out_w % V != 0 || reinterpret_cast<uintptr_t>(p.y) % (V * esize) != 0)) V /= 2;
    // whole output rows per block, about kQmThreads * kQmPerThread runs (more for wide rows:
    // then blockIdx.y splits a block's rows into pieces of that size)
    const int per_piece = kQmThreads * kQmPerThread * V;
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
        if (up) launch_quartermap_vec<__half, true>(p, grid, V, stream);
        else launch_quartermap_vec<__half, false>(p, grid, V, stream);
    } else {
        if (up) launch_quartermap_vec<float, true>(p, grid, V, stream);
        else launch_quartermap_vec<float, false>(p, grid, V, stream);
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
