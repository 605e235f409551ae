/*
 * QuarterMapUp (vmamba.trt, version "1"): nearest-neighbour restore of the reduced map y to the
 * spatial size of `like`: out[i, j] = y[(i * Hs) / H, (j * Ws) / W]. Only like's shape is read.
 * See README.md.
 */
#pragma once

#include "vmambaPlugin.h"

namespace vmamba
{
namespace plugin
{

class QuarterMapUpPlugin final : public VmambaPluginBase
{
public:
    using Contract = vmamba::contract::QuarterMapUp;
    static constexpr IntAttributeSpec const* kFieldSpecs = nullptr;  // no attributes
    static constexpr int32_t kNbFieldSpecs = 0;
    static QuarterMapUpPlugin* create(std::string const& layerName, int32_t const* values, std::string& error);

    explicit QuarterMapUpPlugin(std::string layerName);
    QuarterMapUpPlugin(QuarterMapUpPlugin const&) = default;

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

protected:
    bool checkShapes(nvinfer1::Dims const* in, nvinfer1::Dims const* out, std::string& error) const override;
};

using QuarterMapUpPluginCreator = VmambaPluginCreator<QuarterMapUpPlugin>;

} // namespace plugin
} // namespace vmamba
