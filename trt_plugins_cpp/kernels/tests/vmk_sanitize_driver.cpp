// Runs every vmamba kernel entry point on small odd shapes (both dtypes, every VMeanba variant,
// d_state 1 and 16) so that compute-sanitizer memcheck / racecheck see each kernel; checks that
// every output element is written (outputs are poisoned with NaN first), finite, and bitwise
// identical across two runs (the kernels are deterministic). Numerical parity against the
// PyTorch reference is tests/test_kernels_gpu.py. Exit code 0 only when every check passed.
#include "vmamba_kernels.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

namespace {

int g_failures = 0;

#define CHECK_CUDA(call)                                                                   \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            std::exit(2);                                                                  \
        }                                                                                  \
    } while (0)

void expect(bool ok, const char* what)
{
    if (!ok) {
        ++g_failures;
        std::fprintf(stderr, "FAIL: %s\n", what);
    }
}

struct DeviceBuffer {
    void* ptr = nullptr;
    size_t bytes = 0;
    explicit DeviceBuffer(size_t n) : bytes(n) { CHECK_CUDA(cudaMalloc(&ptr, n > 0 ? n : 1)); }
    ~DeviceBuffer() { cudaFree(ptr); }
};

// Random values stored as the kernel dtype.
DeviceBuffer upload(const std::vector<float>& v, vmk_dtype_t dt)
{
    DeviceBuffer b(v.size() * (dt == VMK_FLOAT16 ? 2 : 4));
    if (dt == VMK_FLOAT16) {
        std::vector<__half> h(v.size());
        for (size_t i = 0; i < v.size(); ++i) h[i] = __float2half(v[i]);
        CHECK_CUDA(cudaMemcpy(b.ptr, h.data(), b.bytes, cudaMemcpyHostToDevice));
    } else {
        CHECK_CUDA(cudaMemcpy(b.ptr, v.data(), b.bytes, cudaMemcpyHostToDevice));
    }
    return b;
}

std::vector<float> download(const DeviceBuffer& b, size_t n, vmk_dtype_t dt)
{
    std::vector<float> out(n);
    if (dt == VMK_FLOAT16) {
        std::vector<__half> h(n);
        CHECK_CUDA(cudaMemcpy(h.data(), b.ptr, n * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; ++i) out[i] = __half2float(h[i]);
    } else {
        CHECK_CUDA(cudaMemcpy(out.data(), b.ptr, n * 4, cudaMemcpyDeviceToHost));
    }
    return out;
}

void poison(DeviceBuffer& b) { CHECK_CUDA(cudaMemset(b.ptr, 0xFF, b.bytes)); }  // NaN in fp32 and fp16

std::vector<float> randn(size_t n, std::mt19937& rng, float scale, float shift = 0.f)
{
    std::normal_distribution<float> dist(0.f, 1.f);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng) * scale + shift;
    return v;
}

bool all_finite(const std::vector<float>& v)
{
    for (float x : v)
        if (!std::isfinite(x)) return false;
    return true;
}

void run_scan(int B, int D, int H, int W, int N, int R, vmk_dtype_t dt, int op /*-1 ss2d, else variant*/, std::mt19937& rng)
{
    const size_t L = (size_t)H * W;
    auto x = upload(randn((size_t)B * D * L, rng, 1.f), dt);
    auto wx = upload(randn((size_t)4 * (R + 2 * N) * D, rng, 0.3f), dt);
    auto wdt = upload(randn((size_t)4 * D * R, rng, 0.5f), dt);
    auto bias = upload(randn((size_t)4 * D, rng, 0.5f, -2.f), VMK_FLOAT32);
    std::vector<float> alog((size_t)4 * D * N);
    for (size_t i = 0; i < alog.size(); ++i) alog[i] = std::log(1.f + (float)(i % N));
    auto A = upload(alog, VMK_FLOAT32);
    auto Ds = upload(randn((size_t)4 * D, rng, 1.f), VMK_FLOAT32);
    DeviceBuffer y((size_t)B * D * L * (dt == VMK_FLOAT16 ? 2 : 4));
    vmk_ss2d_args_t a{};
    a.batch = B; a.dim = D; a.height = H; a.width = W; a.d_state = N; a.dt_rank = R; a.dtype = dt;
    a.x = x.ptr; a.x_proj_weight = wx.ptr; a.dt_projs_weight = wdt.ptr;
    a.dt_projs_bias = static_cast<const float*>(bias.ptr); a.A_logs = static_cast<const float*>(A.ptr);
    a.Ds = static_cast<const float*>(Ds.ptr); a.y = y.ptr;
    const size_t ws_bytes = op < 0 ? vmk_ss2d_scan_workspace_size(&a) : vmk_vmeanba_scan_workspace_size(&a, op);
    DeviceBuffer ws(ws_bytes);
    std::vector<float> first;
    for (int rep = 0; rep < 2; ++rep) {
        poison(y);
        CHECK_CUDA(cudaMemset(ws.ptr, 0xFF, ws.bytes));  // the kernels must not read unwritten scratch
        vmk_status_t st = op < 0 ? vmk_ss2d_scan(&a, ws.ptr, ws.bytes, nullptr)
                                 : vmk_vmeanba_scan(&a, op, ws.ptr, ws.bytes, nullptr);
        expect(st == VMK_OK, vmk_status_string(st));
        CHECK_CUDA(cudaDeviceSynchronize());
        auto out = download(y, (size_t)B * D * L, dt);
        char what[160];
        std::snprintf(what, sizeof what, "%s B=%d D=%d H=%d W=%d N=%d R=%d dtype=%d: all outputs written and finite",
                      op < 0 ? "ss2d" : "vmeanba", B, D, H, W, N, R, (int)dt);
        expect(all_finite(out), what);
        if (rep == 0) first = out;
        else expect(std::memcmp(first.data(), out.data(), out.size() * 4) == 0, "bitwise identical reruns");
    }
    // A too-small workspace is refused before anything runs.
    vmk_status_t st = op < 0 ? vmk_ss2d_scan(&a, ws.ptr, ws.bytes - 1, nullptr)
                             : vmk_vmeanba_scan(&a, op, ws.ptr, ws.bytes - 1, nullptr);
    expect(st == VMK_ERR_WORKSPACE, "small workspace refused");
}

// QuarterMapDown then QuarterMapUp back to (H, W); both outputs start `shift` elements past an
// aligned address (0: 16-byte runs; else the narrower runs that address allows).
void run_quartermap(int B, int C, int H, int W, int stride, int keep, vmk_dtype_t dt, std::mt19937& rng, int shift = 0)
{
    const int Hk = (H / stride) * keep + std::min(H % stride, keep), Wk = (W / stride) * keep + std::min(W % stride, keep);
    const size_t es = dt == VMK_FLOAT16 ? 2 : 4, n_down = (size_t)B * C * Hk * Wk;
    auto host = randn((size_t)B * C * H * W, rng, 1.f);
    auto x = upload(host, dt);
    DeviceBuffer y((n_down + shift) * es);
    DeviceBuffer z((host.size() + shift) * es);
    poison(y);
    poison(z);
    void* y_out = static_cast<char*>(y.ptr) + shift * es;
    void* z_out = static_cast<char*>(z.ptr) + shift * es;
    vmk_quartermap_down_args_t d{B, C, H, W, stride, keep, dt, x.ptr, y_out};
    expect(vmk_quartermap_down(&d, nullptr) == VMK_OK, "quartermap_down status");
    vmk_quartermap_up_args_t u{B, C, Hk, Wk, H, W, dt, y_out, z_out};
    expect(vmk_quartermap_up(&u, nullptr) == VMK_OK, "quartermap_up status");
    CHECK_CUDA(cudaDeviceSynchronize());
    auto xs = download(x, host.size(), dt);
    auto down = download(y, n_down + shift, dt);
    auto up = download(z, host.size() + shift, dt);
    bool ok = true;
    for (int k = 0; k < shift; ++k) ok = ok && std::isnan(down[k]) && std::isnan(up[k]);  // nothing before the output
    for (int bc = 0; bc < B * C; ++bc)
        for (int i = 0; i < H; ++i)
            for (int j = 0; j < W; ++j) {
                const int si = (int)((long long)i * Hk / H), sj = (int)((long long)j * Wk / W);
                const int xi = (si / keep) * stride + si % keep, xj = (sj / keep) * stride + sj % keep;
                const float want = xs[((size_t)bc * H + xi) * W + xj];
                ok = ok && up[shift + ((size_t)bc * H + i) * W + j] == want &&
                     down[shift + ((size_t)bc * Hk + si) * Wk + sj] == want;
            }
    char what[160];
    std::snprintf(what, sizeof what, "quartermap down/up match the index formulas (B=%d C=%d %dx%d s%d k%d dtype=%d shift=%d)",
                  B, C, H, W, stride, keep, (int)dt, shift);
    expect(ok, what);
}

// QuarterMapUp between any sizes (also shrinking: several input steps per output step).
void run_quartermap_up(int B, int C, int Hs, int Ws, int H, int W, vmk_dtype_t dt, std::mt19937& rng, int shift = 0)
{
    const size_t es = dt == VMK_FLOAT16 ? 2 : 4, n_out = (size_t)B * C * H * W;
    auto host = randn((size_t)B * C * Hs * Ws, rng, 1.f);
    auto x = upload(host, dt);
    DeviceBuffer z((n_out + shift) * es);
    poison(z);
    vmk_quartermap_up_args_t u{B, C, Hs, Ws, H, W, dt, x.ptr, static_cast<char*>(z.ptr) + shift * es};
    expect(vmk_quartermap_up(&u, nullptr) == VMK_OK, "quartermap_up status");
    CHECK_CUDA(cudaDeviceSynchronize());
    auto xs = download(x, host.size(), dt);
    auto up = download(z, n_out + shift, dt);
    bool ok = true;
    for (int k = 0; k < shift; ++k) ok = ok && std::isnan(up[k]);
    for (int bc = 0; bc < B * C; ++bc)
        for (int i = 0; i < H; ++i)
            for (int j = 0; j < W; ++j) {
                const int si = (int)((long long)i * Hs / H), sj = (int)((long long)j * Ws / W);
                ok = ok && up[shift + ((size_t)bc * H + i) * W + j] == xs[((size_t)bc * Hs + si) * Ws + sj];
            }
    char what[160];
    std::snprintf(what, sizeof what, "quartermap up %dx%d -> %dx%d matches the index formula (B=%d C=%d dtype=%d shift=%d)",
                  Hs, Ws, H, W, B, C, (int)dt, shift);
    expect(ok, what);
}

}  // namespace

int main()
{
    std::mt19937 rng(1234);
    for (vmk_dtype_t dt : {VMK_FLOAT32, VMK_FLOAT16}) {
        run_scan(2, 5, 7, 9, 1, 3, dt, -1, rng);
        run_scan(1, 3, 9, 4, 16, 12, dt, -1, rng);
        run_scan(3, 4, 5, 5, 4, 20, dt, -1, rng);
        run_scan(1, 40, 23, 29, 1, 24, dt, -1, rng);   // chunk slots in segments, tensor-core dt (float16), small prep tiles
        run_scan(1, 20, 23, 29, 16, 6, dt, -1, rng);   // 16 states: two-pass chunk slots in segments
        run_scan(20, 40, 32, 32, 1, 24, dt, -1, rng);  // unchunked, large prep tiles
        for (int variant = 0; variant < 3; ++variant) {
            run_scan(2, 5, 7, 9, 1, 3, dt, variant, rng);
            run_scan(1, 3, 6, 11, 16, 5, dt, variant, rng);
        }
        // VMeanbaScan statistics: tensor-core fragments of two and three k-steps (ranks 24, 48), an
        // odd rank (scalar W_dt pairs), channels not a multiple of 8, and forced channel splits
        run_scan(2, 40, 9, 11, 1, 24, dt, 0, rng);
        run_scan(1, 21, 7, 7, 16, 48, dt, 1, rng);
        setenv("VMK_VMEANBA_SPLITS", "8", 1);
        run_scan(1, 70, 5, 13, 1, 5, dt, 2, rng);
        run_scan(3, 12, 6, 6, 16, 12, dt, 0, rng);
        unsetenv("VMK_VMEANBA_SPLITS");
        // channel splits across blocks (copies of the statistics, then summed): uneven tiles, 16 states
        setenv("VMK_VMEANBA_BLOCK_SPLITS", "8", 1);
        run_scan(1, 70, 5, 13, 1, 5, dt, 0, rng);
        run_scan(1, 40, 7, 7, 16, 24, dt, 2, rng);
        unsetenv("VMK_VMEANBA_BLOCK_SPLITS");
        // the statistics' new forms (VMK_VMEANBA_STATS): A2 rows computed per block (no table launch:
        // the workspace's unwritten table stays poisoned), uneven tiles over 8 x 8 splits (the copies
        // added in the reduced scan's reads), 16 states, exponentials on the FMA pipe; the table
        // fallback (16 states, D 384 unsplit: 24 KB of rows) and the table form itself
        setenv("VMK_VMEANBA_STATS", "new", 1);
        setenv("VMK_VMEANBA_POLY_EXP", "4", 1);
        run_scan(1, 70, 5, 13, 1, 5, dt, 0, rng);
        run_scan(2, 40, 9, 11, 16, 24, dt, 1, rng);
        run_scan(1, 12, 3, 3, 16, 40, dt, 2, rng);
        setenv("VMK_VMEANBA_SPLITS", "8", 1);
        setenv("VMK_VMEANBA_BLOCK_SPLITS", "8", 1);
        run_scan(1, 136, 7, 7, 16, 12, dt, 0, rng);
        run_scan(1, 70, 5, 13, 1, 5, dt, 1, rng);
        setenv("VMK_VMEANBA_SPLITS", "1", 1);
        setenv("VMK_VMEANBA_BLOCK_SPLITS", "1", 1);
        run_scan(1, 384, 6, 5, 16, 24, dt, 0, rng);
        unsetenv("VMK_VMEANBA_SPLITS");
        unsetenv("VMK_VMEANBA_BLOCK_SPLITS");
        setenv("VMK_VMEANBA_STATS", "table", 1);
        setenv("VMK_VMEANBA_POLY_EXP", "2", 1);
        run_scan(2, 40, 9, 11, 1, 24, dt, 0, rng);
        run_scan(1, 21, 7, 7, 16, 48, dt, 1, rng);
        unsetenv("VMK_VMEANBA_STATS");
        unsetenv("VMK_VMEANBA_POLY_EXP");
        run_quartermap(2, 3, 7, 9, 2, 1, dt, rng);
        run_quartermap(1, 2, 8, 5, 3, 2, dt, rng);
        // narrow maps: runs crossing rows and planes (output widths 7, 14, 5, 1, 3 / up 14, 28,
        // 9, 1, 6), odd plane counts, batch 256, a partial last run, misaligned outputs
        run_quartermap(1, 7, 14, 14, 2, 1, dt, rng);
        run_quartermap(3, 5, 28, 28, 2, 1, dt, rng, 1);
        run_quartermap(256, 3, 7, 7, 2, 1, dt, rng);
        run_quartermap(1, 9, 10, 9, 2, 1, dt, rng, 2);
        run_quartermap(2, 3, 1, 1, 2, 1, dt, rng);
        run_quartermap(5, 3, 6, 5, 2, 1, dt, rng, 3);
        run_quartermap_up(2, 3, 3, 5, 7, 14, dt, rng);
        run_quartermap_up(3, 3, 9, 8, 4, 3, dt, rng, 1);
        run_quartermap_up(1, 7, 3, 3, 1, 5, dt, rng);
        // down's whole-pair loads (row walks): aligned rows, and an odd width (the last run of a
        // row would read one element past it, so it takes the element walk)
        run_quartermap(2, 3, 56, 56, 2, 1, dt, rng);
        run_quartermap(1, 2, 32, 47, 2, 1, dt, rng);
        // the launcher's test knobs: four runs per thread (else only large outputs take them) and
        // plane groups (else only outputs beyond 32-bit indices)
        setenv("VMK_QM_RUNS", "4", 1);
        setenv("VMK_QM_GROUP_PLANES", "3", 1);
        run_quartermap(3, 5, 7, 7, 2, 1, dt, rng);
        run_quartermap(2, 5, 28, 28, 2, 1, dt, rng, 1);
        run_quartermap_up(2, 5, 3, 5, 7, 14, dt, rng);
        unsetenv("VMK_QM_RUNS");
        unsetenv("VMK_QM_GROUP_PLANES");
        // the staged kernel forced (VMK_QM_IMPL=stage): narrow and odd maps, several planes per block
        // with chunks off 16-byte boundaries (1170 planes of 7x7), misaligned outputs and (up of a
        // shifted down output) inputs, an input plane of exactly the 24 KB stage (float32 64x96,
        // float16 96x128: more words than a thread holds) and a table period of 4096 (up to
        // 64x64), 1x1 outputs, stride 3 keep 2
        setenv("VMK_QM_IMPL", "stage", 1);
        run_quartermap(3, 5, 7, 7, 2, 1, dt, rng, 1);
        run_quartermap(9, 130, 7, 7, 2, 1, dt, rng, 3);
        run_quartermap(2, 5, 28, 28, 2, 1, dt, rng, 2);
        run_quartermap(1, 2, 64, 96, 2, 1, dt, rng, 1);
        run_quartermap(1, 1, 96, 128, 2, 1, dt, rng);
        run_quartermap(700, 3, 2, 2, 2, 1, dt, rng, 1);
        run_quartermap(3, 5, 9, 13, 3, 2, dt, rng, 2);
        run_quartermap_up(2, 3, 32, 32, 64, 64, dt, rng, 1);
        run_quartermap_up(3, 70, 2, 3, 1, 1, dt, rng, 3);
        run_quartermap_up(2, 5, 4, 4, 7, 7, dt, rng, 1);
        // down by two forced (VMK_QM_IMPL=down2): odd heights, one row, an aligned shift (4
        // elements) and a misaligned one (falls back to v3)
        setenv("VMK_QM_IMPL", "down2", 1);
        run_quartermap(2, 3, 7, 8, 2, 1, dt, rng);
        run_quartermap(1, 1, 1, 8, 2, 1, dt, rng, 4);
        run_quartermap(3, 2, 9, 24, 2, 1, dt, rng, 1);
        setenv("VMK_QM_IMPL", "v3", 1);
        // then v3 forced at shapes the rule would stage or take by two
        run_quartermap(3, 5, 7, 7, 2, 1, dt, rng, 1);
        run_quartermap(2, 3, 56, 56, 2, 1, dt, rng);
        unsetenv("VMK_QM_IMPL");
        // every prep variant forced (VMK_PREP_TILE; float32 on tensor cores is 3xTF32): rank tiles 16,
        // 64 and 48 (rank 40), d_state 16, D not a multiple of 4, L not a multiple of 4 and < 64;
        // then more than one channel round (D 1040), and the CUDA-core dt (VMK_SCAN_DT=simt)
        for (const char* tile : {"small", "large", "simt"}) {
            setenv("VMK_PREP_TILE", tile, 1);
            run_scan(2, 13, 9, 10, 1, 12, dt, -1, rng);
            run_scan(1, 70, 7, 5, 1, 64, dt, -1, rng);
            run_scan(2, 50, 11, 6, 16, 40, dt, -1, rng);
        }
        unsetenv("VMK_PREP_TILE");
        run_scan(1, 1040, 5, 7, 1, 6, dt, -1, rng);
        setenv("VMK_SCAN_DT", "simt", 1);
        run_scan(2, 40, 7, 9, 1, 24, dt, -1, rng);
        unsetenv("VMK_SCAN_DT");
        // the fused scan + merge (VMK_SCAN_FUSED=1): d_state 1 and 16, L < 16 and not a multiple of
        // 16, D not a multiple of 32, one and several windows (VMK_SCAN_FUSED_ROWS), two channel
        // groups per block
        setenv("VMK_SCAN_FUSED", "1", 1);
        run_scan(2, 40, 7, 7, 1, 6, dt, -1, rng);
        run_scan(1, 33, 3, 5, 16, 24, dt, -1, rng);
        setenv("VMK_SCAN_FUSED_ROWS", "16", 1);
        setenv("VMK_SCAN_GROUPS", "2", 1);
        run_scan(3, 64, 9, 13, 1, 48, dt, -1, rng);
        run_scan(1, 50, 10, 7, 16, 12, dt, -1, rng);
        unsetenv("VMK_SCAN_GROUPS");
        setenv("VMK_SCAN_FUSED_ROWS", "64", 1);
        run_scan(2, 70, 11, 9, 1, 64, dt, -1, rng);
        unsetenv("VMK_SCAN_FUSED_ROWS");
        unsetenv("VMK_SCAN_FUSED");
        // the unchunked scan (VMK_SCAN_SLOTS=1) at rank tiles 32, 48 and 64; float16: the rolling u
        // buffer, and at 48-64 the W_dt fragments in shared memory after each warp's dt tile
        setenv("VMK_SCAN_SLOTS", "1", 1);
        for (int rank : {24, 40, 64}) run_scan(2, 40, 9, 13, 1, rank, dt, -1, rng);
        unsetenv("VMK_SCAN_SLOTS");
        // the launcher's own choice at a VMamba-T stage-3 shape (small prep tiles over 768 channels,
        // unchunked scan, rank tile 48). float32 only: with this driver's unnormalised random weights
        // the float16 output itself overflows there (the float64 reference reaches |y| = 6.3e4 at
        // batch 4, at the float16 limit of 65504; batch 16 goes past it)
        if (dt == VMK_FLOAT32) run_scan(16, 768, 7, 7, 1, 48, dt, -1, rng);
    }
    // the float16 flat prep (VMK_PREP_TILE=flat) at its smallest and largest rows per block: tiles that
    // span images, 2-, 8- and 16-byte x loads, scalar and cp.async W_x, two channel chunks, d_state 1
    // and 16, skipped m-tiles and two row tiles (x_dbl rows 384 > 320)
    setenv("VMK_PREP_TILE", "flat", 1);
    for (const char* rows : {"64", "320"}) {
        setenv("VMK_PREP_FLAT_ROWS", rows, 1);
        run_scan(3, 40, 7, 7, 1, 24, VMK_FLOAT16, -1, rng);
        run_scan(2, 136, 8, 9, 16, 12, VMK_FLOAT16, -1, rng);
        run_scan(1, 72, 5, 5, 16, 64, VMK_FLOAT16, -1, rng);
        run_scan(3, 56, 6, 10, 16, 12, VMK_FLOAT16, -1, rng);
    }
    unsetenv("VMK_PREP_TILE");
    unsetenv("VMK_PREP_FLAT_ROWS");
    // the float32 flat prep (VMK_PREP_TILE=flat, 3xTF32) at its smallest and largest rows per block:
    // 4-, 8- and 16-byte x loads (L 49, 30, 36), cp.async and scalar W_x (D 40, 37), partial last
    // chunks and three chunks through both buffers (D 72), d_state 16, two row tiles (x_dbl rows 384)
    setenv("VMK_PREP_TILE", "flat", 1);
    for (const char* rows : {"64", "320"}) {
        setenv("VMK_PREP_FLAT_ROWS", rows, 1);
        run_scan(3, 40, 7, 7, 1, 24, VMK_FLOAT32, -1, rng);
        run_scan(2, 37, 6, 5, 16, 12, VMK_FLOAT32, -1, rng);
        run_scan(1, 72, 6, 6, 16, 64, VMK_FLOAT32, -1, rng);
    }
    unsetenv("VMK_PREP_TILE");
    unsetenv("VMK_PREP_FLAT_ROWS");
    // two channels per lane (VMK_SCAN_LANE_CHANNELS=2: float16, d_state 1, unchunked): every rank tile
    // (8, 16, 32, 48 and 64: the W_dt fragments in registers and in shared memory), D even but not a
    // multiple of 64 (dead lanes, one and several warps per block), L < 16 and a partial last window,
    // two warps per block forced (VMK_SCAN_GROUPS); an odd D falls back to one channel per lane
    setenv("VMK_SCAN_LANE_CHANNELS", "2", 1);
    setenv("VMK_SCAN_SLOTS", "1", 1);
    for (int rank : {6, 12, 24, 40, 64}) run_scan(2, 40, 9, 13, 1, rank, VMK_FLOAT16, -1, rng);
    run_scan(3, 200, 3, 5, 1, 12, VMK_FLOAT16, -1, rng);
    run_scan(1, 98, 11, 7, 1, 48, VMK_FLOAT16, -1, rng);
    run_scan(2, 41, 7, 9, 1, 24, VMK_FLOAT16, -1, rng);
    setenv("VMK_SCAN_GROUPS", "2", 1);
    run_scan(2, 120, 9, 10, 1, 24, VMK_FLOAT16, -1, rng);
    unsetenv("VMK_SCAN_GROUPS");
    unsetenv("VMK_SCAN_SLOTS");
    unsetenv("VMK_SCAN_LANE_CHANNELS");
    std::printf("vmk_sanitize_driver: %s (%d failures), kernel library version %d\n",
                g_failures == 0 ? "PASS" : "FAIL", g_failures, vmk_version());
    return g_failures == 0 ? 0 : 1;
}
