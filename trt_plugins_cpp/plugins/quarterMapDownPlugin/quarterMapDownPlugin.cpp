#include "quarterMapDownPlugin.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <new>

using namespace nvinfer1;

namespace vmamba
{
namespace plugin
{

QuarterMapDownPlugin* QuarterMapDownPlugin::create(std::string const& layerName, int32_t const* values, std::string& error)
{
    int32_t const stride = values[0];
    int32_t const keep = values[1];
    if (keep > stride)
    {
        error = "keep (" + std::to_string(keep) + ") must be <= stride (" + std::to_string(stride) + ")";
        return nullptr;
    }
    return newPlugin<QuarterMapDownPlugin>(error, layerName, stride, keep);
}

QuarterMapDownPlugin::QuarterMapDownPlugin(std::string layerName, int32_t stride, int32_t keep)
    : VmambaPluginBase(std::move(layerName), Contract::kName, Contract::kVersion, Contract::kNbInputs,
        Contract::kInputIsFloat32)
    , mStride(stride)
    , mKeep(keep)
{
}

IPluginV3* QuarterMapDownPlugin::clone() noexcept
{
    return cloneAs(*this);
}

int64_t QuarterMapDownPlugin::keptSize(int64_t size) const noexcept
{
    return (size / mStride) * mKeep + std::min<int64_t>(size % mStride, mKeep);
}

int32_t QuarterMapDownPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (!checkCounts(nbInputs, nbOutputs, "getOutputShapes") || inputs == nullptr || outputs == nullptr
        || nbShapeInputs != 0)
    {
        return -1;
    }
    if (inputs[0].nbDims != 4)
    {
        fail("getOutputShapes: x must be 4-D [B, C, H, W], got rank " + std::to_string(inputs[0].nbDims));
        return -1;
    }
    // kept(S) = (S / stride) * keep + min(S - (S / stride) * stride, keep), all as shape expressions
    // so that H and W may stay dynamic.
    IDimensionExpr const* stride = exprBuilder.constant(mStride);
    IDimensionExpr const* keep = exprBuilder.constant(mKeep);
    auto kept = [&](IDimensionExpr const* s) -> IDimensionExpr const* {
        IDimensionExpr const* blocks = exprBuilder.operation(DimensionOperation::kFLOOR_DIV, *s, *stride);
        IDimensionExpr const* whole = exprBuilder.operation(DimensionOperation::kPROD, *blocks, *stride);
        IDimensionExpr const* rest = exprBuilder.operation(DimensionOperation::kSUB, *s, *whole);
        IDimensionExpr const* tail = exprBuilder.operation(DimensionOperation::kMIN, *rest, *keep);
        IDimensionExpr const* body = exprBuilder.operation(DimensionOperation::kPROD, *blocks, *keep);
        return exprBuilder.operation(DimensionOperation::kSUM, *body, *tail);
    };
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[0].d[1];
    outputs[0].d[2] = kept(inputs[0].d[2]);
    outputs[0].d[3] = kept(inputs[0].d[3]);
    for (int32_t i = 2; i < 4; ++i)
    {
        if (outputs[0].d[i] == nullptr)
        {
            fail("getOutputShapes: the expression builder returned null");
            return -1;
        }
    }
    return 0;
}

bool QuarterMapDownPlugin::checkShapes(Dims const* in, Dims const* out, std::string& error) const
{
    if (in[0].nbDims != 4)
    {
        error = "x must be 4-D [B, C, H, W], got " + dimsToString(in[0]);
        return false;
    }
    if (out != nullptr)
    {
        int64_t const h = in[0].d[2] >= 0 ? keptSize(in[0].d[2]) : -1;
        int64_t const w = in[0].d[3] >= 0 ? keptSize(in[0].d[3]) : -1;
        if (out->nbDims != 4 || !dimsAgree(out->d[0], in[0].d[0]) || !dimsAgree(out->d[1], in[0].d[1])
            || !dimsAgree(out->d[2], h) || !dimsAgree(out->d[3], w))
        {
            error = "y " + dimsToString(*out) + " does not match x " + dimsToString(in[0]) + " with stride "
                + std::to_string(mStride) + ", keep " + std::to_string(mKeep);
            return false;
        }
    }
    return true;
}

int32_t QuarterMapDownPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            fail("enqueue: null descriptor or pointer array");
            return -1;
        }
        std::string error;
        if (!checkTypesAndFormats(inputDesc, outputDesc, error) || !checkShapes(&inputDesc[0].dims, &outputDesc[0].dims, error))
        {
            fail("enqueue: " + error);
            return -1;
        }
        if (volume(outputDesc[0].dims) == 0)
        {
            return 0;
        }
        Dims const& x = inputDesc[0].dims;
        for (int32_t i = 0; i < 4; ++i)
        {
            if (x.d[i] > std::numeric_limits<int32_t>::max())
            {
                fail("enqueue: dimension does not fit in int32: " + dimsToString(x));
                return -1;
            }
        }
        if (inputs[0] == nullptr || outputs[0] == nullptr)
        {
            fail("enqueue: null input or output");
            return -1;
        }
        vmk_quartermap_down_args_t args{};
        args.batch = static_cast<int32_t>(x.d[0]);
        args.channels = static_cast<int32_t>(x.d[1]);
        args.height = static_cast<int32_t>(x.d[2]);
        args.width = static_cast<int32_t>(x.d[3]);
        args.stride = mStride;
        args.keep = mKeep;
        toKernelDtype(inputDesc[0].type, &args.dtype);
        args.x = inputs[0];
        args.y = outputs[0];
        vmk_status_t const status = vmk_quartermap_down(&args, reinterpret_cast<vmk_stream_t>(stream));
        if (status != VMK_OK)
        {
            fail(std::string("enqueue: vmk_quartermap_down failed: ") + vmk_status_string(status));
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        fail(std::string("enqueue: ") + e.what());
    }
    return -1;
}

PluginFieldCollection const* QuarterMapDownPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mSerializedFields.clear();
        mSerializedFields.emplace_back(Contract::kAttr_stride, &mStride, PluginFieldType::kINT32, 1);
        mSerializedFields.emplace_back(Contract::kAttr_keep, &mKeep, PluginFieldType::kINT32, 1);
        mSerializedCollection.nbFields = static_cast<int32_t>(mSerializedFields.size());
        mSerializedCollection.fields = mSerializedFields.data();
        return &mSerializedCollection;
    }
    catch (std::exception const& e)
    {
        fail(std::string("getFieldsToSerialize: ") + e.what());
    }
    return nullptr;
}

} // namespace plugin
} // namespace vmamba
