/*
 * What SS2DScan and VMeanbaScan share: the same six inputs (contract: x, x_proj_weight,
 * dt_projs_weight, dt_projs_bias, A_logs, Ds), the same shape rules and output shape (= x).
 */
#pragma once

#include "vmambaPlugin.h"

namespace vmamba
{
namespace plugin
{

class ScanPluginBase : public VmambaPluginBase
{
public:
    using VmambaPluginBase::VmambaPluginBase;

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;

protected:
    // x [B, D, H, W], x_proj_weight [4, R + 2N, D], dt_projs_weight [4, D, R], dt_projs_bias [4, D],
    // A_logs [4D, N], Ds [4D]; y = x's shape.
    bool checkShapes(nvinfer1::Dims const* in, nvinfer1::Dims const* out, std::string& error) const override;
    // Kernel arguments from concrete dims (pointers left null). False if a size exceeds int32.
    static bool makeArgs(nvinfer1::Dims const* in, nvinfer1::DataType type, vmk_ss2d_args_t& args, std::string& error);
    // Kernel arguments for the largest shapes of the profile (getWorkspaceSize). False on bad input.
    bool maxArgs(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs, int32_t nbOutputs,
        vmk_ss2d_args_t& args) const noexcept;
    // Validates a concrete enqueue and fills args with shapes and pointers.
    // Returns 1 when there is nothing to compute (an empty tensor), 0 when args are ready, -1 on error.
    int32_t prepareEnqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, vmk_ss2d_args_t& args) const noexcept;
};

} // namespace plugin
} // namespace vmamba
