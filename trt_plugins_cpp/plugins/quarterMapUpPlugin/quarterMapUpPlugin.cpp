#include "quarterMapUpPlugin.h"

#include <exception>
#include <limits>
#include <new>

using namespace nvinfer1;

namespace vmamba
{
namespace plugin
{

QuarterMapUpPlugin* QuarterMapUpPlugin::create(std::string const& layerName, int32_t const* /*values*/, std::string& error)
{
    return newPlugin<QuarterMapUpPlugin>(error, layerName);
}

QuarterMapUpPlugin::QuarterMapUpPlugin(std::string layerName)
    : VmambaPluginBase(std::move(layerName), Contract::kName, Contract::kVersion, Contract::kNbInputs,
        Contract::kInputIsFloat32)
{
}

IPluginV3* QuarterMapUpPlugin::clone() noexcept
{
    return cloneAs(*this);
}

int32_t QuarterMapUpPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    if (!checkCounts(nbInputs, nbOutputs, "getOutputShapes") || inputs == nullptr || outputs == nullptr
        || nbShapeInputs != 0)
    {
        return -1;
    }
    if (inputs[0].nbDims != 4 || inputs[1].nbDims != 4)
    {
        fail("getOutputShapes: y and like must be 4-D");
        return -1;
    }
    // [B, C] of y, [H, W] of like.
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[0].d[1];
    outputs[0].d[2] = inputs[1].d[2];
    outputs[0].d[3] = inputs[1].d[3];
    return 0;
}

bool QuarterMapUpPlugin::checkShapes(Dims const* in, Dims const* out, std::string& error) const
{
    if (in[0].nbDims != 4 || in[1].nbDims != 4)
    {
        error = "y and like must be 4-D, got " + dimsToString(in[0]) + " and " + dimsToString(in[1]);
        return false;
    }
    if (!dimsAgree(in[0].d[0], in[1].d[0]))
    {
        error = "y and like need the same batch, got " + dimsToString(in[0]) + " and " + dimsToString(in[1]);
        return false;
    }
    if (out != nullptr
        && (out->nbDims != 4 || !dimsAgree(out->d[0], in[0].d[0]) || !dimsAgree(out->d[1], in[0].d[1])
            || !dimsAgree(out->d[2], in[1].d[2]) || !dimsAgree(out->d[3], in[1].d[3])))
    {
        error = "out " + dimsToString(*out) + " must be [B, C] of y " + dimsToString(in[0]) + " and [H, W] of like "
            + dimsToString(in[1]);
        return false;
    }
    return true;
}

int32_t QuarterMapUpPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
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
        Dims const inDims[2] = {inputDesc[0].dims, inputDesc[1].dims};
        if (!checkTypesAndFormats(inputDesc, outputDesc, error) || !checkShapes(inDims, &outputDesc[0].dims, error))
        {
            fail("enqueue: " + error);
            return -1;
        }
        if (volume(outputDesc[0].dims) == 0)
        {
            return 0;
        }
        if (volume(inputDesc[0].dims) == 0)
        {
            fail("enqueue: cannot restore a non-empty map from an empty y " + dimsToString(inputDesc[0].dims));
            return -1;
        }
        Dims const& y = inputDesc[0].dims;
        Dims const& o = outputDesc[0].dims;
        int64_t const sizes[6] = {y.d[0], y.d[1], y.d[2], y.d[3], o.d[2], o.d[3]};
        for (int64_t s : sizes)
        {
            if (s > std::numeric_limits<int32_t>::max())
            {
                fail("enqueue: dimension does not fit in int32");
                return -1;
            }
        }
        // `like` (inputs[1]) is never read, so a null pointer there is harmless.
        if (inputs[0] == nullptr || outputs[0] == nullptr)
        {
            fail("enqueue: null y or output");
            return -1;
        }
        vmk_quartermap_up_args_t args{};
        args.batch = static_cast<int32_t>(sizes[0]);
        args.channels = static_cast<int32_t>(sizes[1]);
        args.in_height = static_cast<int32_t>(sizes[2]);
        args.in_width = static_cast<int32_t>(sizes[3]);
        args.out_height = static_cast<int32_t>(sizes[4]);
        args.out_width = static_cast<int32_t>(sizes[5]);
        toKernelDtype(inputDesc[0].type, &args.dtype);
        args.x = inputs[0];
        args.y = outputs[0];
        vmk_status_t const status = vmk_quartermap_up(&args, reinterpret_cast<vmk_stream_t>(stream));
        if (status != VMK_OK)
        {
            fail(std::string("enqueue: vmk_quartermap_up failed: ") + vmk_status_string(status));
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

PluginFieldCollection const* QuarterMapUpPlugin::getFieldsToSerialize() noexcept
{
    mSerializedFields.clear();
    mSerializedCollection.nbFields = 0;
    mSerializedCollection.fields = nullptr;
    return &mSerializedCollection;
}

} // namespace plugin
} // namespace vmamba
