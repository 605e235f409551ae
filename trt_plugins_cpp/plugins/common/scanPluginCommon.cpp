#include "scanPluginCommon.h"

#include <exception>
#include <limits>

using namespace nvinfer1;

namespace vmamba
{
namespace plugin
{
namespace
{
constexpr int32_t kDirections = 4;  // the four cross-scan directions
}

int32_t ScanPluginBase::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    if (!checkCounts(nbInputs, nbOutputs, "getOutputShapes") || inputs == nullptr || outputs == nullptr)
    {
        return -1;
    }
    if (nbShapeInputs != 0)
    {
        fail("getOutputShapes: no shape inputs expected");
        return -1;
    }
    if (inputs[0].nbDims != 4)
    {
        fail("getOutputShapes: x must be 4-D [B, D, H, W], got rank " + std::to_string(inputs[0].nbDims));
        return -1;
    }
    outputs[0] = inputs[0];  // y has x's shape
    return 0;
}

bool ScanPluginBase::checkShapes(Dims const* in, Dims const* out, std::string& error) const
{
    static constexpr int32_t kRanks[6] = {4, 3, 3, 2, 2, 1};
    static constexpr char const* kNames[6] = {"x", "x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"};
    for (int32_t i = 0; i < 6; ++i)
    {
        if (in[i].nbDims != kRanks[i])
        {
            error = std::string(kNames[i]) + " must be " + std::to_string(kRanks[i]) + "-D, got " + dimsToString(in[i]);
            return false;
        }
    }
    int64_t const D = in[0].d[1];
    int64_t const R = in[2].d[2];
    int64_t const N = in[4].d[1];
    auto need = [&](bool ok, char const* what) {
        if (!ok)
        {
            error = std::string(what) + " (x " + dimsToString(in[0]) + ", x_proj_weight " + dimsToString(in[1])
                + ", dt_projs_weight " + dimsToString(in[2]) + ", dt_projs_bias " + dimsToString(in[3]) + ", A_logs "
                + dimsToString(in[4]) + ", Ds " + dimsToString(in[5]) + ")";
        }
        return ok;
    };
    bool const known4D = D >= 0;
    int64_t const fourD = known4D ? kDirections * D : -1;
    int64_t const projRows = (R >= 0 && N >= 0) ? R + 2 * N : -1;
    return need(dimsAgree(in[1].d[0], kDirections) && dimsAgree(in[2].d[0], kDirections)
                   && dimsAgree(in[3].d[0], kDirections),
               "the direction axis of the weights must be 4")
        && need(dimsAgree(in[1].d[2], D) && dimsAgree(in[2].d[1], D) && dimsAgree(in[3].d[1], D),
            "the weights' D must equal x's channel count")
        && need(dimsAgree(in[4].d[0], fourD) && dimsAgree(in[5].d[0], fourD), "A_logs and Ds need 4*D rows")
        && need(dimsAgree(in[1].d[1], projRows), "x_proj_weight needs R + 2N rows (R from dt_projs_weight, N from A_logs)")
        && need(R != 0 && N != 0, "dt_rank and d_state must be positive")
        && need(out == nullptr
                || (out->nbDims == 4 && dimsAgree(out->d[0], in[0].d[0]) && dimsAgree(out->d[1], in[0].d[1])
                    && dimsAgree(out->d[2], in[0].d[2]) && dimsAgree(out->d[3], in[0].d[3])),
            "y must have x's shape");
}

bool ScanPluginBase::makeArgs(Dims const* in, DataType type, vmk_ss2d_args_t& args, std::string& error)
{
    args = vmk_ss2d_args_t{};
    int64_t const values[6] = {in[0].d[0], in[0].d[1], in[0].d[2], in[0].d[3], in[4].d[1], in[2].d[2]};
    for (int64_t v : values)
    {
        if (v < 0 || v > std::numeric_limits<int32_t>::max())
        {
            error = "dimension " + std::to_string(v) + " is unknown or does not fit in int32";
            return false;
        }
    }
    if (!toKernelDtype(type, &args.dtype))
    {
        error = std::string("unsupported data type ") + dataTypeName(type);
        return false;
    }
    args.batch = static_cast<int32_t>(values[0]);
    args.dim = static_cast<int32_t>(values[1]);
    args.height = static_cast<int32_t>(values[2]);
    args.width = static_cast<int32_t>(values[3]);
    args.d_state = static_cast<int32_t>(values[4]);
    args.dt_rank = static_cast<int32_t>(values[5]);
    return true;
}

bool ScanPluginBase::maxArgs(
    DynamicPluginTensorDesc const* inputs, int32_t nbInputs, int32_t nbOutputs, vmk_ss2d_args_t& args) const noexcept
{
    try
    {
        if (!checkCounts(nbInputs, nbOutputs, "getWorkspaceSize") || inputs == nullptr)
        {
            return false;
        }
        std::vector<Dims> maxDims(static_cast<size_t>(nbInputs));
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            maxDims[i] = inputs[i].max;
        }
        std::string error;
        if (!checkShapes(maxDims.data(), nullptr, error) || !makeArgs(maxDims.data(), inputs[0].desc.type, args, error))
        {
            fail("getWorkspaceSize (max dims): " + error);
            return false;
        }
        return true;
    }
    catch (std::exception const& e)
    {
        fail(std::string("getWorkspaceSize: ") + e.what());
    }
    return false;
}

int32_t ScanPluginBase::prepareEnqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, vmk_ss2d_args_t& args) const noexcept
{
    try
    {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            fail("enqueue: null descriptor or pointer array");
            return -1;
        }
        Dims inDims[6];
        for (int32_t i = 0; i < 6; ++i)
        {
            inDims[i] = inputDesc[i].dims;
        }
        std::string error;
        if (!checkTypesAndFormats(inputDesc, outputDesc, error) || !checkShapes(inDims, &outputDesc[0].dims, error)
            || !makeArgs(inDims, inputDesc[0].type, args, error))
        {
            fail("enqueue: " + error);
            return -1;
        }
        if (volume(outputDesc[0].dims) == 0)
        {
            return 1;
        }
        for (int32_t i = 0; i < 6; ++i)
        {
            if (inputs[i] == nullptr)
            {
                fail("enqueue: input " + std::to_string(i) + " is null");
                return -1;
            }
        }
        if (outputs[0] == nullptr)
        {
            fail("enqueue: output is null");
            return -1;
        }
        args.x = inputs[0];
        args.x_proj_weight = inputs[1];
        args.dt_projs_weight = inputs[2];
        args.dt_projs_bias = static_cast<float const*>(inputs[3]);
        args.A_logs = static_cast<float const*>(inputs[4]);
        args.Ds = static_cast<float const*>(inputs[5]);
        args.y = outputs[0];
        return 0;
    }
    catch (std::exception const& e)
    {
        fail(std::string("enqueue: ") + e.what());
    }
    return -1;
}

} // namespace plugin
} // namespace vmamba
