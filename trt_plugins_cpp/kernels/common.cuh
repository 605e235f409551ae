// Shared by the kernel files of libvmamba_kernels (one file per op family, c_api.cu for the C ABI):
// numeric helpers, launch helpers, argument checks and the internal entry points.
#ifndef VMAMBA_KERNELS_COMMON_CUH
#define VMAMBA_KERNELS_COMMON_CUH

#include "vmamba_kernels.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>

namespace vmk {

constexpr int kDirs = 4;
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kMaxDState = 16;
constexpr int kMaxSide = 1 << 15;
constexpr size_t kAlign = 256;

inline size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

template <typename T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

// The pointer itself, hidden from the optimiser. For p[o] with a lane's base pointer p and an offset o
// from a table, nvcc otherwise folds p's own index arithmetic into every access (a 64-bit
// sign-extended add and a scaled LEA pair, 4 integer instructions, and the kernel parameter
// reloaded for stores); behind this, p[o] is one IMAD.WIDE. The optimiser then no longer knows that
// p is global: load through __ldg and store through st_global_as, or it emits generic LD / ST.
template <typename P> __device__ __forceinline__ P* opaque_ptr(P* p)
{
    asm("" : "+l"(p));
    return p;
}

// v stored as T by a plain (weak) global store (__stwb gives STG.STRONG.SM).
__device__ __forceinline__ void st_global_as(float* p, float v) { asm volatile("st.global.f32 [%0], %1;" ::"l"(p), "f"(v)); }
__device__ __forceinline__ void st_global_as(__half* p, float v)
{
    asm volatile("st.global.b16 [%0], %1;" ::"l"(p), "h"(__half_as_ushort(__float2half_rn(v))));
}

// 2^x on the special-function unit (relative error ~2^-22; results below 2^-126 flush to zero,
// which only drops state contributions smaller than 1e-38).
__device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float fast_log2(float x)
{
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// torch.nn.functional.softplus (inputs above 20 pass through): softplus(v) = max(v, 0) + log1p(z),
// z = exp(-|v|) in (0, 1]. With w = 1 + z rounded and dropped = z - (w - 1) (exact: the part of z that
// rounding w lost, at most half an ulp of w), log1p(z) = log(w) + log(1 + dropped / w). The second
// term is dropped / w to first order, and dropped itself differs from that by dropped (1 - 1 / w)
// < 2^-24 z, under 9e-8 of log1p(z) >= z ln2. So log1p(z) = ln2 lg2(w) + dropped keeps the low bits of
// z that plain log(1 + z) loses for the small steps delta ~ 1e-3 that VMamba uses, as Goldberg's
// log(w) z / (w - 1) (v5d-v8) did, without its reciprocal. w == 1 (z < 2^-24) keeps a select
// returning z, so nothing there depends on lg2.approx(1) being exactly 0, which the PTX ISA does
// not promise. Above 20, z < 2.1e-9, so log1p(z) = z and v + z rounds to v (half an ulp of v >= 20
// is 9.5e-7): torch's pass-through, with no select.
// 11 instructions, 2 on the MUFU pipe (Goldberg's form with the threshold select: 14 and 3).
__device__ __forceinline__ float softplus_f32(float v)
{
    constexpr float kLn2 = 0.6931471805599453f;
    const float z = fast_exp2(-fabsf(v) * kLog2e);
    const float w = 1.f + z;
    const float dropped = z - (w - 1.f);
    const float l1p = w == 1.f ? z : fmaf(fast_log2(w), kLn2, dropped);
    return fmaxf(v, 0.f) + l1p;
}

// Position of pixel (i, j) in direction k's sequence: row-major, column-major, and both reversed.
__host__ __device__ __forceinline__ int seq_index(int k, int i, int j, int H, int W)
{
    const int L = H * W;
    const int l = (k & 1) ? j * H + i : i * W + j;
    return k >= 2 ? L - 1 - l : l;
}

// The inverse: the pixel (row-major index) at position t of direction k's sequence.
__host__ __device__ __forceinline__ int seq_pixel(int k, int t, int H, int W)
{
    const int L = H * W;
    const int l = k >= 2 ? L - 1 - t : t;
    if (!(k & 1)) return l;
    const int j = l / H, i = l - j * H;
    return i * W + j;
}

struct DeviceInfo {
    int sms = 0, smem_optin = 0;
};

inline bool device_info(DeviceInfo* info)
{
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&info->sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&info->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return false;
    return true;
}

inline vmk_status_t launch_status()
{
    return cudaGetLastError() == cudaSuccess ? VMK_OK : VMK_ERR_CUDA;
}

// Whether the kernel may take `bytes` of dynamic shared memory (raising its limit past the default
// 48 KB). A refusal is an answer, not an error: it is cleared from the runtime's last error, which
// launch_status() reads after the launch that follows (a VMeanbaScan over L = 22650 positions,
// 272 KB of staged coefficients, failed that way in tests/test_kernels_gpu.py on the H200).
template <typename K>
inline bool allow_smem(K kernel, size_t bytes)
{
    if (bytes <= 48 * 1024) return true;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes) == cudaSuccess)
        return true;
    (void)cudaGetLastError();
    return false;
}

inline bool valid_dtype(vmk_dtype_t t) { return t == VMK_FLOAT32 || t == VMK_FLOAT16; }

// Internal entry points behind the C ABI (arguments already checked by c_api.cu).
size_t ss2d_workspace_bytes(const vmk_ss2d_args_t* a);
vmk_status_t ss2d_run(const vmk_ss2d_args_t* a, void* ws, cudaStream_t stream, const DeviceInfo& dev);
size_t vmeanba_workspace_bytes(const vmk_ss2d_args_t* a);
vmk_status_t vmeanba_run(const vmk_ss2d_args_t* a, int variant, void* ws, cudaStream_t stream,
                         const DeviceInfo& dev);
vmk_status_t quartermap_down_run(const vmk_quartermap_down_args_t* a, cudaStream_t stream);
vmk_status_t quartermap_up_run(const vmk_quartermap_up_args_t* a, cudaStream_t stream);

}  // namespace vmk

#endif  // VMAMBA_KERNELS_COMMON_CUH
