/*
 * C ABI of the CUDA kernels behind the custom ops in plugins/contract/*.yaml.
 *
 * One library, three users: the TensorRT plugins (linked statically), PyTorch (libvmamba_kernels.so
 * through ctypes, plugins/kernels.py) and the benchmarks. No PyTorch or TensorRT types here.
 *
 * Conventions
 *  - Every tensor is dense, row-major (C-contiguous) in the layout written next to it.
 *  - dtype tells the type of x, y, x_proj_weight and dt_projs_weight; dt_projs_bias, A_logs and Ds
 *    are always float32. All arithmetic is float32; outputs are rounded to dtype at the end.
 *  - Every launch is stream-ordered, allocates nothing and never synchronises, so it can be
 *    captured in a CUDA graph. Scratch memory comes from the caller: ask *_workspace_size() with
 *    the largest shapes you will run (TensorRT: the profile's max dims) and pass at least that.
 *  - Functions return VMK_OK or an error code; vmk_status_string() names it. A bad argument is
 *    reported before anything is launched.
 *  - Limits of this build (VMK_ERR_UNSUPPORTED beyond them): d_state 1..16, batch <= 65535,
 *    height and width <= 32768, (dt_rank + 2 * d_state) * height * width < 2^31. Results are
 *    deterministic (no atomics): the same inputs give bitwise identical outputs.
 */
#ifndef VMAMBA_KERNELS_H
#define VMAMBA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; these are its only exported symbols. */
#if defined(__GNUC__)
#define VMK_API __attribute__((visibility("default")))
#else
#define VMK_API
#endif

typedef struct CUstream_st* vmk_stream_t; /* the same type as cudaStream_t */

typedef enum {
    VMK_FLOAT32 = 0,
    VMK_FLOAT16 = 1,
} vmk_dtype_t;

typedef enum {
    VMK_OK = 0,
    VMK_ERR_INVALID_ARGUMENT = 1, /* null pointer, non-positive size, inconsistent shapes */
    VMK_ERR_UNSUPPORTED = 2,      /* a valid shape or option this build has no kernel for */
    VMK_ERR_WORKSPACE = 3,        /* workspace missing or smaller than *_workspace_size() */
    VMK_ERR_CUDA = 4,             /* a CUDA launch failed (cudaGetLastError after launch) */
} vmk_status_t;

/* SS2DScan and VMeanbaScan share their inputs.
 * x, y            : (batch, dim, height, width)   dtype
 * x_proj_weight   : (4, dt_rank + 2 * d_state, dim) dtype   rows [dt_low | B | C]
 * dt_projs_weight : (4, dim, dt_rank)              dtype
 * dt_projs_bias   : (4, dim)                       float32
 * A_logs          : (4 * dim, d_state)             float32   A = -exp(A_logs), row r = k*dim + d
 * Ds              : (4 * dim)                      float32
 */
typedef struct {
    int32_t batch, dim, height, width;
    int32_t d_state, dt_rank;
    vmk_dtype_t dtype;
    const void* x;
    const void* x_proj_weight;
    const void* dt_projs_weight;
    const float* dt_projs_bias;
    const float* A_logs;
    const float* Ds;
    void* y;
} vmk_ss2d_args_t;

/* Scratch bytes for these shapes (pointers are not read). */
VMK_API size_t vmk_ss2d_scan_workspace_size(const vmk_ss2d_args_t* args);
VMK_API vmk_status_t vmk_ss2d_scan(const vmk_ss2d_args_t* args, void* workspace, size_t workspace_bytes,
                           vmk_stream_t stream);

/* variant: 0 = all rows (the authors' default), 1 = per direction, 2 = pre-discretisation. */
VMK_API size_t vmk_vmeanba_scan_workspace_size(const vmk_ss2d_args_t* args, int32_t variant);
VMK_API vmk_status_t vmk_vmeanba_scan(const vmk_ss2d_args_t* args, int32_t variant, void* workspace,
                              size_t workspace_bytes, vmk_stream_t stream);

/* QuarterMapDown: x (batch, channels, height, width) -> y (batch, channels, kept(height), kept(width)),
 * kept(S) = (S / stride) * keep + min(S % stride, keep); keeps index i when i % stride < keep. */
typedef struct {
    int32_t batch, channels, height, width;
    int32_t stride, keep;
    vmk_dtype_t dtype;
    const void* x;
    void* y;
} vmk_quartermap_down_args_t;
VMK_API vmk_status_t vmk_quartermap_down(const vmk_quartermap_down_args_t* args, vmk_stream_t stream);

/* QuarterMapUp: x (batch, channels, in_height, in_width) -> y (batch, channels, out_height, out_width),
 * y[i, j] = x[(i * in_height) / out_height, (j * in_width) / out_width] (integer division). */
typedef struct {
    int32_t batch, channels, in_height, in_width, out_height, out_width;
    vmk_dtype_t dtype;
    const void* x;
    void* y;
} vmk_quartermap_up_args_t;
VMK_API vmk_status_t vmk_quartermap_up(const vmk_quartermap_up_args_t* args, vmk_stream_t stream);

VMK_API const char* vmk_status_string(vmk_status_t status);
/* 10000 * major + 100 * minor + patch of this kernel library. */
VMK_API int32_t vmk_version(void);

#ifdef __cplusplus
}
#endif

#endif /* VMAMBA_KERNELS_H */
