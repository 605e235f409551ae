// The C ABI of vmamba_kernels.h: argument checks, device query and dispatch to the op files
// (ss2d_scan.cu, vmeanba_scan.cu, quartermap.cu). Nothing is launched for a bad argument.
#include "common.cuh"

namespace {

using namespace vmk;

vmk_status_t check_ss2d_shapes(const vmk_ss2d_args_t* a)
{
    if (!a) return VMK_ERR_INVALID_ARGUMENT;
    if (a->batch <= 0 || a->dim <= 0 || a->height <= 0 || a->width <= 0 || a->d_state <= 0 || a->dt_rank <= 0)
        return VMK_ERR_INVALID_ARGUMENT;
    if (!valid_dtype(a->dtype)) return VMK_ERR_INVALID_ARGUMENT;
    if (a->d_state > kMaxDState) return VMK_ERR_UNSUPPORTED;
    if (a->height > kMaxSide || a->width > kMaxSide || (long long)a->height * a->width > (1LL << 30))
        return VMK_ERR_UNSUPPORTED;
    if (a->batch > 65535) return VMK_ERR_UNSUPPORTED;  // gridDim.y / z
    return VMK_OK;
}

vmk_status_t check_ss2d_pointers(const vmk_ss2d_args_t* a)
{
    if (!a->x || !a->x_proj_weight || !a->dt_projs_weight || !a->dt_projs_bias || !a->A_logs || !a->Ds || !a->y)
        return VMK_ERR_INVALID_ARGUMENT;
    return VMK_OK;
}

}  // namespace

extern "C" {

size_t vmk_ss2d_scan_workspace_size(const vmk_ss2d_args_t* args)
{
    if (check_ss2d_shapes(args) != VMK_OK) return 0;
    return ss2d_workspace_bytes(args);
}

vmk_status_t vmk_ss2d_scan(const vmk_ss2d_args_t* args, void* workspace, size_t workspace_bytes, vmk_stream_t stream)
{
    vmk_status_t st = check_ss2d_shapes(args);
    if (st != VMK_OK) return st;
    if ((st = check_ss2d_pointers(args)) != VMK_OK) return st;
    if (!workspace || workspace_bytes < ss2d_workspace_bytes(args)) return VMK_ERR_WORKSPACE;
    DeviceInfo dev;
    if (!device_info(&dev)) return VMK_ERR_CUDA;
    return ss2d_run(args, workspace, reinterpret_cast<cudaStream_t>(stream), dev);
}

size_t vmk_vmeanba_scan_workspace_size(const vmk_ss2d_args_t* args, int32_t variant)
{
    if (check_ss2d_shapes(args) != VMK_OK || variant < 0 || variant > 2) return 0;
    return vmeanba_workspace_bytes(args);
}

vmk_status_t vmk_vmeanba_scan(const vmk_ss2d_args_t* args, int32_t variant, void* workspace,
                              size_t workspace_bytes, vmk_stream_t stream)
{
    vmk_status_t st = check_ss2d_shapes(args);
    if (st != VMK_OK) return st;
    if (variant < 0 || variant > 2) return VMK_ERR_INVALID_ARGUMENT;
    if ((st = check_ss2d_pointers(args)) != VMK_OK) return st;
    if (!workspace || workspace_bytes < vmeanba_workspace_bytes(args)) return VMK_ERR_WORKSPACE;
    DeviceInfo dev;
    if (!device_info(&dev)) return VMK_ERR_CUDA;
    return vmeanba_run(args, variant, workspace, reinterpret_cast<cudaStream_t>(stream), dev);
}

vmk_status_t vmk_quartermap_down(const vmk_quartermap_down_args_t* a, vmk_stream_t stream)
{
    if (!a || !a->x || !a->y || !valid_dtype(a->dtype)) return VMK_ERR_INVALID_ARGUMENT;
    if (a->batch <= 0 || a->channels <= 0 || a->height <= 0 || a->width <= 0) return VMK_ERR_INVALID_ARGUMENT;
    if (a->stride < 1 || a->keep < 1 || a->keep > a->stride) return VMK_ERR_INVALID_ARGUMENT;
    if (a->height > kMaxSide || a->width > kMaxSide) return VMK_ERR_UNSUPPORTED;
    DeviceInfo dev;
    if (!device_info(&dev)) return VMK_ERR_CUDA;
    return quartermap_down_run(a, reinterpret_cast<cudaStream_t>(stream), dev);
}

vmk_status_t vmk_quartermap_up(const vmk_quartermap_up_args_t* a, vmk_stream_t stream)
{
    if (!a || !a->x || !a->y || !valid_dtype(a->dtype)) return VMK_ERR_INVALID_ARGUMENT;
    if (a->batch <= 0 || a->channels <= 0 || a->in_height <= 0 || a->in_width <= 0 || a->out_height <= 0 ||
        a->out_width <= 0)
        return VMK_ERR_INVALID_ARGUMENT;
    if (a->in_height > kMaxSide || a->in_width > kMaxSide || a->out_height > kMaxSide || a->out_width > kMaxSide)
        return VMK_ERR_UNSUPPORTED;
    DeviceInfo dev;
    if (!device_info(&dev)) return VMK_ERR_CUDA;
    return quartermap_up_run(a, reinterpret_cast<cudaStream_t>(stream), dev);
}

const char* vmk_status_string(vmk_status_t status)
{
    switch (status) {
    case VMK_OK: return "ok";
    case VMK_ERR_INVALID_ARGUMENT: return "invalid argument";
    case VMK_ERR_UNSUPPORTED: return "unsupported shape or option";
    case VMK_ERR_WORKSPACE: return "workspace missing or too small";
    case VMK_ERR_CUDA: return "CUDA launch failed";
    }
    return "unknown status";
}

int32_t vmk_version(void) { return 20000; }

}  // extern "C"
