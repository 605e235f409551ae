/*
 * VMeanbaScan (vmamba.trt, version "1"): the VMeanba reduced SS2D core (one mean scan broadcast to
 * every channel, plus the per-channel skip term, then cross-merge). See README.md.
 */
#pragma once

#include "scanPluginCommon.h"

namespace vmamba
{
namespace plugin
{

class VMeanbaScanPlugin final : public ScanPluginBase
{
public:
    using Contract = vmamba::contract::VMeanbaScan;
    static constexpr IntAttributeSpec kFieldSpecs[1] = {
        {Contract::kAttr_variant, Contract::kVARIANT_DEFAULT, Contract::kVARIANT_MIN, Contract::kVARIANT_MAX},
    };
    static constexpr int32_t kNbFieldSpecs = 1;
    // values[0] = variant (already range-checked against the contract).
    static VMeanbaScanPlugin* create(std::string const& layerName, int32_t const* values, std::string& error);

    VMeanbaScanPlugin(std::string layerName, int32_t variant);
    VMeanbaScanPlugin(VMeanbaScanPlugin const&) = default;

    nvinfer1::IPluginV3* clone() noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    int32_t variant() const noexcept { return mVariant; }

private:
    int32_t mVariant;
};

using VMeanbaScanPluginCreator = VmambaPluginCreator<VMeanbaScanPlugin>;

} // namespace plugin
} // namespace vmamba
