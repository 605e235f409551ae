/*
 * QuarterMapDown (vmamba.trt, version "1"): QuarterMap token reduction. Keeps rows and columns i
 * with i % stride < keep; kept(S) = (S / stride) * keep + min(S % stride, keep). See README.md.
 */
#pragma once

#include "vmambaPlugin.h"

namespace vmamba
{
namespace plugin
{

class QuarterMapDownPlugin final : public VmambaPluginBase
{
public:
    using Contract = vmamba::contract::QuarterMapDown;
    static constexpr IntAttributeSpec kFieldSpecs[2] = {
        {Contract::kAttr_stride, Contract::kSTRIDE_DEFAULT, Contract::kSTRIDE_MIN, Contract::kSTRIDE_MAX},
        {Contract::kAttr_keep, Contract::kKEEP_DEFAULT, Contract::kKEEP_MIN, Contract::kKEEP_MAX},
    };
    static constexpr int32_t kNbFieldSpecs = 2;
    // values = {stride, keep}, each range-checked; create() adds the cross-field rule keep <= stride.
    static QuarterMapDownPlugin* create(std::string const& layerName, int32_t const* values, std::string& error);

    QuarterMapDownPlugin(std::string layerName, int32_t stride, int32_t keep);
    QuarterMapDownPlugin(QuarterMapDownPlugin const&) = default;

    nvinfer1::IPluginV3* clone() noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const*, int32_t, nvinfer1::DynamicPluginTensorDesc const*,
        int32_t) const noexcept override
    {
        return 0;  // a gather, no scratch
    }
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    int64_t keptSize(int64_t size) const noexcept;

protected:
    bool checkShapes(nvinfer1::Dims const* in, nvinfer1::Dims const* out, std::string& error) const override;

private:
    int32_t mStride;
    int32_t mKeep;
};

using QuarterMapDownPluginCreator = VmambaPluginCreator<QuarterMapDownPlugin>;

} // namespace plugin
} // namespace vmamba
