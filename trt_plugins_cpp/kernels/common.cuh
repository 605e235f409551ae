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
// z = exp(-|v|) in (0, 1], log1p(z) by one of two forms chosen by a select (no branch):
// - z < 2^-6 (|v| > 4.16): the series z (1 - z / 2 + z^2 / 3 - z^3 / 4), whose truncation is under
//   z^4 / 5 < 1.2e-8 relative. lg2.approx's error near 1 is absolute (the PTX ISA bounds it by 2^-22.6
//   on [0.5, 2]), so log1p through lg2(1 + z) is off by about that much whatever z is: at dt ~ -18
//   (z ~ 1e-7) that was the whole result, and the ops came out 30-40% off the float64 reference
//   (v8 and v9, tests/test_kernels_gpu.py::test_softplus_across_its_range).
// - z >= 2^-6: ln2 lg2(1 + z). There log1p(z) >= 0.0155, so lg2's absolute error and the rounding of
//   1 + z (half an ulp, 2^-24) are each under 4e-6 of the result.
// Above 20, z < 2.1e-9, so log1p(z) = z and v + z rounds to v (half an ulp of v >= 20 is 9.5e-7):
// torch's pass-through, with no threshold select. 12 instructions, 2 on the MUFU pipe.
__device__ __forceinline__ float softplus_f32(float v)
{
    constexpr float kLn2 = 0.6931471805599453f, kSeriesBelow = 0.015625f;  // 2^-6
    const float z = fast_exp2(-fabsf(v) * kLog2e);
    const float m = fmaxf(v, 0.f);
    const float series = fmaf(z, fmaf(z, fmaf(z, fmaf(z, -0.25f, 1.f / 3.f), -0.5f), 1.f), m);
    const float logged = fmaf(fast_log2(1.f + z), kLn2, m);
    return z < kSeriesBelow ? series : logged;
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
vmk_status_t quartermap_down_run(const vmk_quartermap_down_args_t* a, cudaStream_t stream, const DeviceInfo& dev);
vmk_status_t quartermap_up_run(const vmk_quartermap_up_args_t* a, cudaStream_t stream, const DeviceInfo& dev);

}  // namespace vmk

#endif  // VMAMBA_KERNELS_COMMON_CUH
