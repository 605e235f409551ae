/*
 * SS2DScan (vmamba.trt, version "1"): the fused SS2D core of VMamba
 * (cross-scan -> x_proj -> dt_proj -> selective scan + skip -> cross-merge). See README.md.
 */
#pragma once

#include "scanPluginCommon.h"

namespace vmamba
{
namespace plugin
{

class SS2DScanPlugin final : public ScanPluginBase
{
public:
    using Contract = vmamba::contract::SS2DScan;
    static constexpr IntAttributeSpec const* kFieldSpecs = nullptr;  // no attributes
    static constexpr int32_t kNbFieldSpecs = 0;
    static SS2DScanPlugin* create(std::string const& layerName, int32_t const* values, std::string& error);

    explicit SS2DScanPlugin(std::string layerName);
    SS2DScanPlugin(SS2DScanPlugin const&) = default;

    nvinfer1::IPluginV3* clone() noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;
};

using SS2DScanPluginCreator = VmambaPluginCreator<SS2DScanPlugin>;

} // namespace plugin
} // namespace vmamba
