// QuarterMapDown / QuarterMapUp: one pass each, flat over the output. The output is one array of
// planes * out_h * out_w elements (planes = batch * channels); each thread writes runs of V
// consecutive outputs, V = 16 bytes / element size (one 16-byte store) unless the output pointer
// is less aligned, so the store width does not depend on the map width. A run may cross rows and
// planes. Its first element's position takes a few multiply-high divisions; the later elements'
// sources follow without division, by one of two walks:
// - RowWalk: column and row counters that step and wrap into the next row and plane (planes larger
//   than the table below, and every width that is a multiple of V, where runs stay in one row);
// - TableWalk: small planes whose runs cross rows (7- and 14-column maps): one shared-memory
//   table of each plane position's source, built per block, one read per element.
// Four runs per thread (one for small outputs, which would not fill the device), all gathered
// before any is stored, keep many loads in flight.
// A second kernel, staged (below, quartermap_staged_kernel), takes small planes: a block copies
// its planes' contiguous input into shared memory with 16-byte loads and writes their contiguous
// output with 16-byte stores; a third, down2, takes down by two (stride 2, keep 1) with 16-byte loads
// of kept rows. VMK_QM_IMPL (launch_quartermap) picks.
#include "common.cuh"

#include <stdlib.h>
#include <string.h>

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

// The source index s(o) of output row or column o along one axis, as a quotient g and remainder
// acc of o * mul by lim, s = g * gs + acc * ga:
//   up   (nearest, s = floor(o * in / out)): mul = in, lim = out, gs = 1, ga = 0;
//   down (the o-th kept index, keep of every stride): mul = 1, lim = keep, gs = stride, ga = 1.
// Going from o to o + 1 adds mul to the numerator: s += q and acc += r (q, r = mul / lim, mul % lim
// in units of s), and when acc reaches lim it wraps once (r <= lim) and s gains c more.
struct AxisMap {
    uint32_t mul, gs, ga, q, r, c;
    FastDiv lim;
};

AxisMap up_axis(int in, int out)
{
    return AxisMap{(uint32_t)in, 1, 0, (uint32_t)(in / out), (uint32_t)(in % out), 1, make_fastdiv(out)};
}

AxisMap down_axis(int stride, int keep)
{
    return AxisMap{1, (uint32_t)stride, 1, 1, 1, (uint32_t)(stride - keep), make_fastdiv(keep)};
}

constexpr int kQmThreads = 256;
constexpr uint32_t kQmTableMax = 512;          // table entries (two per thread at most)
constexpr uint32_t kQmMaxIndex = 0x7fffffffu;  // every in-group index and product stays below 2^31

struct QmParams {
    const void* x;
    void* y;
    long long planes;       // batch * channels
    uint32_t group_planes;  // planes per blockIdx.y (more than one group only beyond 32-bit indices)
    uint32_t in_w, out_w, out_h, in_plane, out_plane;
    uint32_t table_len;     // TableWalk only
    bool pairs;             // down with stride 2, keep 1 (row walks load input pairs)
    FastDiv by_out_w, by_out_h, by_out_plane;
    AxisMap rows, cols;
    uint32_t period, period_in;  // staged kernel only: its table's outputs and their input elements
    FastDiv by_period;
};

struct QmGrid {
    long long runs, groups;  // runs of the largest group (the partial last one included)
    int runs_per_thread;
};

template <int BYTES> struct VecOf;
template <> struct VecOf<2> { using type = unsigned short; };
template <> struct VecOf<4> { using type = unsigned int; };
template <> struct VecOf<8> { using type = uint2; };
template <> struct VecOf<16> { using type = uint4; };

__device__ __forceinline__ void axis_start(const AxisMap& a, uint32_t o, uint32_t& s, uint32_t& acc)
{
    const uint32_t num = o * a.mul;
    const uint32_t g = a.lim.div(num);
    acc = num - g * a.lim.d;
    s = g * a.gs + acc * a.ga;
}

__device__ __forceinline__ void axis_step(const AxisMap& a, uint32_t& s, uint32_t& acc)
{
    s += a.q;
    acc += a.r;
    if (acc >= a.lim.d) {
        acc -= a.lim.d;
        s += a.c;
    }
}

// Walks the outputs n, n + 1, ... of one group in order, tracking each one's source element
// (index into the group's input): output column oj and row oi, source column sj and row si with
// their remainders, and the source row's start. CROSS = false: the caller guarantees that the walk
// stays in one row (the output width is a multiple of V).
template <bool CROSS>
struct RowWalk {
    static constexpr bool kCrossesRows = CROSS;
    uint32_t oj, sj, aj, oi, si, ai, plane_start, row_start;

    __device__ static void prepare(const QmParams&) {}

    __device__ __forceinline__ RowWalk(const QmParams& p, uint32_t n)
    {
        const uint32_t r = p.by_out_w.div(n);  // output rows before n
        oj = n - r * p.out_w;
        const uint32_t plane = p.by_out_h.div(r);
        oi = r - plane * p.out_h;
        axis_start(p.cols, oj, sj, aj);
        axis_start(p.rows, oi, si, ai);
        plane_start = plane * p.in_plane;
        row_start = plane_start + si * p.in_w;
    }

    __device__ __forceinline__ uint32_t source() const { return row_start + sj; }

    // Down with stride 2, keep 1: the run's V outputs are the even elements of 2 V consecutive
    // inputs that all lie in this row.
    __device__ __forceinline__ bool pairs_in_row(const QmParams& p, int V) const { return 2 * (oj + V) <= p.in_w; }

    __device__ __forceinline__ void next(const QmParams& p)
    {
        ++oj;
        axis_step(p.cols, sj, aj);
        if (CROSS && oj == p.out_w) {
            oj = sj = aj = 0;
            ++oi;
            axis_step(p.rows, si, ai);
            if (oi == p.out_h) {
                oi = si = ai = 0;
                plane_start += p.in_plane;
            }
            row_start = plane_start + si * p.in_w;
        }
    }
};

// Small planes whose runs cross rows: the block first tabulates the source of every position a of
// table_len = planes_k * out_plane outputs (planes_k planes, enough that a run starting anywhere in
// a plane ends inside the table), then a run needs one division and each element one table read
// (no per-element wrap tests, which diverge when most runs cross a row). Entry a sits at word
// a + a / V: the V-apart starts of a warp's runs then fall in 32 different banks.
extern __shared__ uint32_t qm_table[];

template <int V>
struct TableWalk {
    static constexpr bool kCrossesRows = true;
    uint32_t base, a;  // the input plane of the run's first output; position from that plane's start

    __device__ static __forceinline__ uint32_t slot(uint32_t pos) { return pos + pos / V; }

    __device__ static void prepare(const QmParams& p)
    {
        for (uint32_t pos = threadIdx.x; pos < p.table_len; pos += kQmThreads) {
            const uint32_t k = p.by_out_plane.div(pos);
            qm_table[slot(pos)] = k * p.in_plane + RowWalk<false>(p, pos - k * p.out_plane).source();
        }
        __syncthreads();
    }

    __device__ __forceinline__ TableWalk(const QmParams& p, uint32_t n)
    {
        const uint32_t plane = p.by_out_plane.div(n);
        a = n - plane * p.out_plane;
        base = plane * p.in_plane;
    }

    __device__ __forceinline__ uint32_t source() const { return base + qm_table[slot(a)]; }
    __device__ __forceinline__ void next(const QmParams&) { ++a; }
};

// The pointer, hidden from the optimiser: else it folds the group offset (64-bit) into every
// element's address instead of adding it once.
template <typename P>
__device__ __forceinline__ P* opaque(P* ptr)
{
    asm("" : "+l"(ptr));
    return ptr;
}

// Gathers one run of V outputs starting at n. PAIRS (down with stride 2, keep 1, row walks only):
// a run inside one row whose inputs start 16-byte aligned (8-byte for the 8-byte loads of float16
// runs of 2) loads its 2 V inputs whole and keeps the even ones. For float16 that is two 16-byte
// loads per lane instead of 8 scalar ones, each of which has the warp touch 32 sectors (down's L1
// work is per request, not per byte); for float32 the compiler narrows the loads to the used
// words (4 scalar loads from one address, no per-element index steps).
template <typename T, int V, typename Walk, bool PAIRS, typename Vec>
__device__ __forceinline__ void gather_run(const QmParams& p, const T* __restrict__ x, uint32_t n, Vec& out)
{
    Walk w(p, n);
    T* ov = reinterpret_cast<T*>(&out);
    if constexpr (PAIRS) {
        constexpr int kBytes = 2 * V * (int)sizeof(T), kChunk = kBytes < 16 ? kBytes : 16;
        using Chunk = typename VecOf<kChunk>::type;
        const T* src = x + (int)w.source();
        if (w.pairs_in_row(p, V) && reinterpret_cast<uintptr_t>(src) % kChunk == 0) {
            Chunk in[kBytes / kChunk];
#pragma unroll
            for (int c = 0; c < kBytes / kChunk; ++c) in[c] = __ldg(reinterpret_cast<const Chunk*>(src) + c);
            const T* pairs = reinterpret_cast<const T*>(in);
#pragma unroll
            for (int v = 0; v < V; ++v) ov[v] = pairs[2 * v];
            return;
        }
    }
#pragma unroll
    for (int v = 0; v < V; ++v) {
        ov[v] = __ldg(x + (int)w.source());
        if (v + 1 < V) w.next(p);
    }
}

// RUNS runs per thread (4, or 1 where 4 would leave SMs idle).
template <typename T, int V, typename Walk, int RUNS, bool PAIRS>
__global__ void __launch_bounds__(kQmThreads) quartermap_kernel(QmParams p)
{
    using Vec = typename VecOf<V * sizeof(T)>::type;
    Walk::prepare(p);
    const long long plane0 = (long long)blockIdx.y * p.group_planes;
    const uint32_t count = (uint32_t)min((long long)p.group_planes, p.planes - plane0) * p.out_plane;
    const T* __restrict__ x = opaque(static_cast<const T*>(p.x) + plane0 * p.in_plane);
    T* __restrict__ y = static_cast<T*>(p.y) + plane0 * p.out_plane;
    const uint32_t full_runs = count / V;
    const uint32_t first = blockIdx.x * (kQmThreads * RUNS) + threadIdx.x;

    // Every thread gathers its runs before storing any, so that all their loads are in
    // flight together: runs past the end repeat the last full run (no branch around the
    // gathers, which would make each run wait for its own loads) and store nothing.
    if (full_runs > 0) {
        Vec vals[RUNS];
#pragma unroll
        for (int q = 0; q < RUNS; ++q)
            gather_run<T, V, Walk, PAIRS>(p, x, min(first + q * kQmThreads, full_runs - 1) * V, vals[q]);
        asm volatile("" ::: "memory");  // keeps every load above the first store
#pragma unroll
        for (int q = 0; q < RUNS; ++q) {
            const uint32_t run = first + q * kQmThreads;
            if (run < full_runs) reinterpret_cast<Vec*>(y)[run] = vals[q];
        }
    }

    // the last count % V outputs (only when the width is not a multiple of V): scalar stores by
    // the thread whose next run would start there
    if (Walk::kCrossesRows) {
        const uint32_t rest = count - full_runs * V;
        const uint32_t rel = full_runs - (first - threadIdx.x);
        if (rest > 0 && rel < kQmThreads * RUNS && rel % kQmThreads == threadIdx.x) {
            Walk w(p, full_runs * V);
            for (uint32_t v = 0; v < rest; ++v) {
                y[full_runs * V + v] = __ldg(x + (int)w.source());
                if (v + 1 < rest) w.next(p);
            }
        }
    }
}

// Staged (VMK_QM_IMPL=stage): planes whose input fits a block's shared memory, group_planes
// consecutive planes per block (one chunk). Both the chunk's input and its output are contiguous,
// so the block copies its input into shared memory with 16-byte loads, then writes its output with
// 16-byte stores, each element read from shared memory. Global traffic is wide and coalesced at
// every map width, and the loads in flight wait on no index arithmetic; only the elements before
// the first 16-byte boundary of a range and after its last take scalar accesses.
// The sources come from a per-block table with one period of the output: runs start V apart from
// the first 16-byte boundary of y (out_head elements in), so run r's outputs are the chunk
// elements out_head + r V + v, and the sources repeat every period = lcm(out_plane, V) elements
// (period / out_plane planes, period_in input elements) with the run's table entries at
// (r V) % period + v: V consecutive, V-aligned entries, read as whole 16-byte words (no per-element
// index arithmetic, no bank conflicts: a warp's runs read consecutive words).
// Down reads whole input planes, dropped rows included, so the rule takes the staged kernel for up
// only (VMK_QM_IMPL=stage forces it for down too).
constexpr uint32_t kQmStageInBytes = 24576;  // a block's staged input (with the table, under the 48 KB default)
constexpr uint32_t kQmStagePeriodMax = 4096; // table entries (4 bytes each)
constexpr int kQmStageBlocksPerSm = 8;       // chunks are sized to give the device this many blocks per SM
constexpr uint32_t kQmStageWords = 4;  // 16-byte input words a thread holds across the table build

extern __shared__ uint4 qm_staged[];  // the source table (period words), then the staged input

template <typename T>
__global__ void __launch_bounds__(kQmThreads, kQmStageBlocksPerSm) quartermap_staged_kernel(QmParams p)
{
    constexpr uint32_t V = 16 / sizeof(T);
    uint32_t* table = reinterpret_cast<uint32_t*>(qm_staged);
    T* stage = reinterpret_cast<T*>(table + p.period);  // period is a multiple of V: 16-byte aligned

    const long long plane0 = (long long)blockIdx.x * p.group_planes;
    const uint32_t planes = (uint32_t)min((long long)p.group_planes, p.planes - plane0);
    const T* __restrict__ x = static_cast<const T*>(p.x) + plane0 * p.in_plane;
    T* __restrict__ y = static_cast<T*>(p.y) + plane0 * p.out_plane;
    const uint32_t out_count = planes * p.out_plane;
    const uint32_t out_lead = (uint32_t)(reinterpret_cast<uintptr_t>(y) % 16) / sizeof(T);
    const uint32_t out_head = min((V - out_lead) % V, out_count);

    // input element e goes to stage[lead + e], lead = x's elements past a 16-byte boundary, so
    // that x's 16-byte words land on the stage's. A thread's first kQmStageWords words are loaded
    // first and stored after the table is built, so that the table's arithmetic overlaps their
    // latency; the rest (stages over 16 KB) are copied after them.
    const uint32_t in_count = planes * p.in_plane;
    const uint32_t lead = (uint32_t)(reinterpret_cast<uintptr_t>(x) % 16) / sizeof(T);
    const uint32_t in_head = min((V - lead) % V, in_count);
    const uint32_t in_words = (in_count - in_head) / V;
    const uint4* __restrict__ xw = reinterpret_cast<const uint4*>(x + in_head);
    uint4 held[kQmStageWords];
#pragma unroll
    for (uint32_t c = 0; c < kQmStageWords; ++c)
        if (threadIdx.x + c * kQmThreads < in_words) held[c] = __ldg(xw + threadIdx.x + c * kQmThreads);
    const uint32_t in_tail = in_head + in_words * V;
    for (uint32_t e = threadIdx.x; e < in_head + (in_count - in_tail); e += kQmThreads) {
        const uint32_t i = e < in_head ? e : in_tail + (e - in_head);
        stage[lead + i] = __ldg(x + i);
    }

    // the source of output element n of the chunk, from the chunk's input start
    auto source = [&](uint32_t n) {
        const uint32_t k = p.by_out_plane.div(n);
        return k * p.in_plane + RowWalk<false>(p, n - k * p.out_plane).source();
    };
    for (uint32_t t = threadIdx.x; t < p.period; t += kQmThreads) table[t] = source(out_head + t);

    uint4* sw = reinterpret_cast<uint4*>(stage + lead + in_head);
#pragma unroll
    for (uint32_t c = 0; c < kQmStageWords; ++c)
        if (threadIdx.x + c * kQmThreads < in_words) sw[threadIdx.x + c * kQmThreads] = held[c];
    for (uint32_t w = kQmStageWords * kQmThreads + threadIdx.x; w < in_words; w += kQmThreads) sw[w] = __ldg(xw + w);
    __syncthreads();

    const uint32_t runs = (out_count - out_head) / V;
    uint4* __restrict__ yw = reinterpret_cast<uint4*>(y + out_head);
#pragma unroll 1  // one run at a time: unrolled, the loop spills under the 32 registers of 8 blocks per SM
    for (uint32_t r = threadIdx.x; r < runs; r += kQmThreads) {
        const uint32_t periods = p.by_period.div(r * V);
        const uint32_t t = r * V - periods * p.period;
        const uint32_t base = lead + periods * p.period_in;
        uint32_t src[V];
#pragma unroll
        for (uint32_t c = 0; c < V / 4; ++c)
            *reinterpret_cast<uint4*>(src + 4 * c) = reinterpret_cast<const uint4*>(table + t)[c];
        uint4 out;
        T* ov = reinterpret_cast<T*>(&out);
#pragma unroll
        for (uint32_t v = 0; v < V; ++v) ov[v] = stage[base + src[v]];
        yw[r] = out;
    }
    const uint32_t out_tail = out_head + runs * V;
    for (uint32_t e = threadIdx.x; e < out_head + (out_count - out_tail); e += kQmThreads) {
        const uint32_t n = e < out_head ? e : out_tail + (e - out_head);
        y[n] = stage[lead + source(n)];
    }
}

// The staged launch where a plane's input and the table fit (else false): as many planes per
// block as give kQmStageBlocksPerSm blocks per SM, up to kQmStageInBytes of input.
bool launch_staged(QmParams p, int esize, int sms, cudaStream_t stream)
{
    const uint32_t V = 16 / esize;
    const uint32_t common = min(p.out_plane & (0u - p.out_plane), V);  // gcd(out_plane, V): V is a power of 2
    const uint32_t period_planes = V / common;
    if ((long long)p.in_plane * esize > kQmStageInBytes || (long long)p.out_plane * period_planes > kQmStagePeriodMax)
        return false;
    const long long fit = kQmStageInBytes / ((long long)p.in_plane * esize);
    const long long fill = (p.planes + (long long)kQmStageBlocksPerSm * sms - 1) / ((long long)kQmStageBlocksPerSm * sms);
    const long long chunk = fill < fit ? fill : fit;  // >= 1
    const long long blocks = (p.planes + chunk - 1) / chunk;
    if (blocks > 0x7fffffffLL) return false;
    p.group_planes = (uint32_t)chunk;
    p.period = p.out_plane * period_planes;
    p.period_in = p.in_plane * period_planes;
    // the stage: chunk planes plus up to V - 1 elements of lead, in whole 16-byte words
    const size_t stage_bytes = ((chunk * p.in_plane + V - 1) * esize + 15) / 16 * 16;
    const size_t smem = p.period * sizeof(uint32_t) + stage_bytes;
    p.by_out_w = make_fastdiv(p.out_w);
    p.by_out_h = make_fastdiv(p.out_h);
    p.by_out_plane = make_fastdiv(p.out_plane);
    p.by_period = make_fastdiv(p.period);
    if (esize == 2) quartermap_staged_kernel<__half><<<(unsigned)blocks, kQmThreads, smem, stream>>>(p);
    else quartermap_staged_kernel<float><<<(unsigned)blocks, kQmThreads, smem, stream>>>(p);
    return true;
}

// down2's grid: one wave of blocks (kQmByTwoBlocksPerSm per SM) strides over the runs, kQmByTwoRuns
// at a time per thread, loaded before any is stored: no partial last wave whose few blocks cannot
// keep enough bytes in flight.
constexpr int kQmByTwoRuns = 4;
constexpr int kQmByTwoBlocksPerSm = 8;  // 32 registers: 8 blocks of 256 threads fit

// Down by two (VMK_QM_IMPL=down2): stride 2, keep 1, the input width twice a multiple of 4 (so
// the output width is a multiple of 4). A run is 4 outputs of one output row, from 8 contiguous
// inputs of its kept row: one 16-byte load for float16 (two for float32, which the compiler
// narrows to four 4-byte loads of the used words, as in v3's pairs: the same sectors), the even
// inputs packed (2 PRMT for float16) into one 8-byte (16-byte) store. A warp's loads cover whole
// stretches of kept rows only.
template <typename T>
__global__ void __launch_bounds__(kQmThreads, kQmByTwoBlocksPerSm)
    quartermap_down2_kernel(QmParams p, uint32_t runs, FastDiv by_row_runs, FastDiv by_out_h)
{
    constexpr int kLoads = 8 * sizeof(T) / 16;  // 16-byte loads per run
    using Out = typename VecOf<4 * sizeof(T)>::type;
    const uint4* __restrict__ x = static_cast<const uint4*>(p.x);
    Out* __restrict__ y = static_cast<Out*>(p.y);
    const uint32_t stride = gridDim.x * kQmThreads;
    for (uint32_t first = blockIdx.x * kQmThreads + threadIdx.x; first < runs; first += kQmByTwoRuns * stride) {
        uint4 in[kQmByTwoRuns][kLoads];
#pragma unroll
        for (int q = 0; q < kQmByTwoRuns; ++q) {
            const uint32_t run = min(first + q * stride, runs - 1);
            const uint32_t row = by_row_runs.div(run);  // output row over all planes
            const uint32_t col = run - row * by_row_runs.d;
            const uint32_t plane = by_out_h.div(row), i = row - plane * by_out_h.d;  // its row in the plane
            // input row 2 i of the plane, columns 8 col ..: in 16-byte units
            const unsigned long long src =
                ((unsigned long long)plane * p.in_plane + 2ull * i * p.in_w) / (16 / sizeof(T)) + col * kLoads;
#pragma unroll
            for (int c = 0; c < kLoads; ++c) in[q][c] = __ldg(x + src + c);
        }
        asm volatile("" ::: "memory");  // keeps every load above the first store
#pragma unroll
        for (int q = 0; q < kQmByTwoRuns; ++q) {
            const uint32_t run = first + q * stride;
            if (run >= runs) break;
            Out out;
            if constexpr (sizeof(T) == 2) {
                out = make_uint2(__byte_perm(in[q][0].x, in[q][0].y, 0x5410), __byte_perm(in[q][0].z, in[q][0].w, 0x5410));
            } else {
                out = make_uint4(in[q][0].x, in[q][0].z, in[q][kLoads - 1].x, in[q][kLoads - 1].z);
            }
            y[run] = out;  // the output is contiguous: run r holds outputs 4 r .. 4 r + 3
        }
    }
}

// The down-by-two launch where it applies (else false): the sizes above, x 16-byte and y 4-element
// aligned, every run index below 2^31.
bool launch_down2(const QmParams& p, int esize, int sms, cudaStream_t stream)
{
    if (!p.pairs || p.out_w % 4 != 0 || p.in_w != 2 * p.out_w || reinterpret_cast<uintptr_t>(p.x) % 16 != 0 ||
        reinterpret_cast<uintptr_t>(p.y) % (4 * esize) != 0)
        return false;
    const long long runs = p.planes * p.out_plane / 4;
    const long long wave = (long long)kQmByTwoBlocksPerSm * sms, need = (runs + kQmThreads * kQmByTwoRuns - 1) / (kQmThreads * kQmByTwoRuns);
    const unsigned blocks = (unsigned)(need < wave ? need : wave);
    if (runs + (long long)kQmByTwoRuns * blocks * kQmThreads > kQmMaxIndex) return false;
    const FastDiv by_row_runs = make_fastdiv(p.out_w / 4), by_out_h = make_fastdiv(p.out_h);
    if (esize == 2)
        quartermap_down2_kernel<__half><<<blocks, kQmThreads, 0, stream>>>(p, (uint32_t)runs, by_row_runs, by_out_h);
    else quartermap_down2_kernel<float><<<blocks, kQmThreads, 0, stream>>>(p, (uint32_t)runs, by_row_runs, by_out_h);
    return true;
}

// The grid: runs (the partial last one included) of the largest group in blocks of
// kQmThreads * RUNS, one grid row per group.
template <typename T, int V, typename Walk, bool PAIRS = false>
void launch_walk(const QmParams& p, const QmGrid& g, size_t smem, cudaStream_t stream)
{
    const dim3 grid((unsigned)((g.runs + kQmThreads * g.runs_per_thread - 1) / (kQmThreads * g.runs_per_thread)),
                    (unsigned)g.groups);
    if (g.runs_per_thread == 4) quartermap_kernel<T, V, Walk, 4, PAIRS><<<grid, kQmThreads, smem, stream>>>(p);
    else quartermap_kernel<T, V, Walk, 1, PAIRS><<<grid, kQmThreads, smem, stream>>>(p);
}

// Row walks take the pair loads for down with stride 2, keep 1 (the QuarterMap default).
template <typename T, int V, bool CROSS>
void launch_row_walk(const QmParams& p, const QmGrid& g, cudaStream_t stream)
{
    if (p.pairs) launch_walk<T, V, RowWalk<CROSS>, true>(p, g, 0, stream);
    else launch_walk<T, V, RowWalk<CROSS>>(p, g, 0, stream);
}

// In-row walks where the width is a multiple of V; else the table for small planes, the crossing
// row walk for larger ones.
template <typename T, int V>
void launch_quartermap_walk(QmParams p, const QmGrid& grid, cudaStream_t stream)
{
    if constexpr (V > 1) {
        if (p.out_w % V != 0) {
            const uint32_t table_planes = 1 + (V - 1 + p.out_plane - 1) / p.out_plane;
            if (table_planes * p.out_plane <= kQmTableMax) {
                p.table_len = table_planes * p.out_plane;
                return launch_walk<T, V, TableWalk<V>>(p, grid, (p.table_len + p.table_len / V) * sizeof(uint32_t),
                                                       stream);
            }
            return launch_row_walk<T, V, true>(p, grid, stream);
        }
        return launch_row_walk<T, V, false>(p, grid, stream);
    }
    launch_walk<T, V, RowWalk<false>>(p, grid, 0, stream);
}

template <typename T>
void launch_quartermap_vec(const QmParams& p, const QmGrid& grid, int V, cudaStream_t stream)
{
    if constexpr (sizeof(T) == 2)
        if (V == 8) return launch_quartermap_walk<T, 8>(p, grid, stream);
    if (V == 4) launch_quartermap_walk<T, 4>(p, grid, stream);
    else if (V == 2) launch_quartermap_walk<T, 2>(p, grid, stream);
    else launch_quartermap_walk<T, 1>(p, grid, stream);
}

// Test knobs, so the tests reach every path on tensors of any size (0 when unset):
// VMK_QM_GROUP_PLANES = n splits the planes into groups of n (one per blockIdx.y), as outputs
// beyond 32-bit indices are; VMK_QM_RUNS = 1 or 4 sets the runs per thread.
long long env_knob(const char* name)
{
    const char* env = getenv(name);
    return env && *env ? atoll(env) : 0;
}

// Which kernel: VMK_QM_IMPL=v3 the flat walks (QuarterMap v3) always, =stage the staged kernel
// wherever it fits, =down2 the down-by-two kernel wherever it applies (else v3).
// Unset (or any other value), from the sixth session's device call 2 (H200, VMamba-T shapes, our
// builds only): up takes the staged kernel where v3's runs cross rows (the output width not a
// multiple of a 16-byte run: faster than v3 at stages 1-3), else v3; float16 down by two takes down2
// where it applies (faster at stage 0), else v3 (down2 in float32 and the staged down were slower).
enum class QmImpl { Rule, V3, Staged, Down2 };

QmImpl qm_impl_knob()
{
    const char* env = getenv("VMK_QM_IMPL");
    if (env && !strcmp(env, "v3")) return QmImpl::V3;
    if (env && !strcmp(env, "stage")) return QmImpl::Staged;
    if (env && !strcmp(env, "down2")) return QmImpl::Down2;
    return QmImpl::Rule;
}

vmk_status_t launch_quartermap(QmParams p, vmk_dtype_t dtype, bool down, cudaStream_t stream, const DeviceInfo& dev)
{
    // 32-bit arithmetic inside a group: o * in along each axis, every element index of the group
    if ((long long)p.out_h * p.rows.mul > kQmMaxIndex || (long long)p.out_w * p.cols.mul > kQmMaxIndex)
        return VMK_ERR_UNSUPPORTED;
    const int esize = dtype == VMK_FLOAT16 ? 2 : 4;
    const QmImpl impl = qm_impl_knob();
    if (down && (impl == QmImpl::Down2 || (impl == QmImpl::Rule && esize == 2)) && launch_down2(p, esize, dev.sms, stream))
        return launch_status();
    const bool rule_staged = !down && p.out_w % (16 / esize) != 0;
    if ((impl == QmImpl::Staged || (impl == QmImpl::Rule && rule_staged)) && launch_staged(p, esize, dev.sms, stream))
        return launch_status();
    const uint32_t plane = p.in_plane > p.out_plane ? p.in_plane : p.out_plane;
    long long group = kQmMaxIndex / plane;  // >= 1: a plane is at most 2^30 elements (kMaxSide)
    if (group >= 8) group -= group % 8;     // group starts stay 16-byte aligned
    if (const long long want = env_knob("VMK_QM_GROUP_PLANES"); want > 0 && want < group) group = want;
    if (group > p.planes) group = p.planes;
    p.group_planes = (uint32_t)group;
    const long long groups = (p.planes + group - 1) / group;
    if (groups > 65535) return VMK_ERR_UNSUPPORTED;  // gridDim.y

    // run length: 16 bytes, narrower only where the output pointer (or a group start) is less aligned
    const long long group_elems = group * p.out_plane;
    int V = 16 / esize;
    while (V > 1 && (reinterpret_cast<uintptr_t>(p.y) % (V * esize) != 0 || (groups > 1 && group_elems % V != 0)))
        V /= 2;
    QmGrid grid{(group_elems + V - 1) / V, groups, 4};
    // four runs per thread where that still fills every SM (8 blocks each), else one
    if (grid.runs * groups < 8LL * dev.sms * kQmThreads * 4) grid.runs_per_thread = 1;
    if (const long long want = env_knob("VMK_QM_RUNS"); want == 1 || want == 4) grid.runs_per_thread = (int)want;
    p.by_out_w = make_fastdiv(p.out_w);
    p.by_out_h = make_fastdiv(p.out_h);
    p.by_out_plane = make_fastdiv(p.out_plane);
    if (dtype == VMK_FLOAT16) launch_quartermap_vec<__half>(p, grid, V, stream);
    else launch_quartermap_vec<float>(p, grid, V, stream);
    return launch_status();
}

int kept(int size, int stride, int keep) { return (size / stride) * keep + (size % stride < keep ? size % stride : keep); }

// The fields both directions share: a (batch * channels) stack of in_h x in_w maps to out_h x out_w.
QmParams resample_params(const void* x, void* y, int batch, int channels, int in_h, int in_w, int out_h, int out_w)
{
    QmParams p{};
    p.x = x;
    p.y = y;
    p.planes = (long long)batch * channels;
    p.in_w = in_w;
    p.out_w = out_w;
    p.out_h = out_h;
    p.in_plane = (uint32_t)in_h * in_w;
    p.out_plane = (uint32_t)out_h * out_w;
    return p;
}

}  // namespace

vmk_status_t quartermap_down_run(const vmk_quartermap_down_args_t* a, cudaStream_t stream, const DeviceInfo& dev)
{
    QmParams p = resample_params(a->x, a->y, a->batch, a->channels, a->height, a->width,
                                 kept(a->height, a->stride, a->keep), kept(a->width, a->stride, a->keep));
    p.rows = p.cols = down_axis(a->stride, a->keep);
    p.pairs = a->stride == 2 && a->keep == 1;
    return launch_quartermap(p, a->dtype, true, stream, dev);
}

vmk_status_t quartermap_up_run(const vmk_quartermap_up_args_t* a, cudaStream_t stream, const DeviceInfo& dev)
{
    QmParams p = resample_params(a->x, a->y, a->batch, a->channels, a->in_height, a->in_width,
                                 a->out_height, a->out_width);
    p.rows = up_axis(a->in_height, a->out_height);
    p.cols = up_axis(a->in_width, a->out_width);
    return launch_quartermap(p, a->dtype, false, stream, dev);
}

}  // namespace vmk
