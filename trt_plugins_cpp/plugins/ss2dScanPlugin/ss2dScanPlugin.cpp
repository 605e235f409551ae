#include "ss2dScanPlugin.h"

#include <exception>
#include <new>

using namespace nvinfer1;

namespace vmamba
{
namespace plugin
{

SS2DScanPlugin* SS2DScanPlugin::create(std::string const& layerName, int32_t const* /*values*/, std::string& error)
{
    return newPlugin<SS2DScanPlugin>(error, layerName);
}

SS2DScanPlugin::SS2DScanPlugin(std::string layerName)
    : ScanPluginBase(std::move(layerName), Contract::kName, Contract::kVersion, Contract::kNbInputs,
        Contract::kInputIsFloat32)
{
}

IPluginV3* SS2DScanPlugin::clone() noexcept
{
    return cloneAs(*this);
}

size_t SS2DScanPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    vmk_ss2d_args_t args;
    if (!maxArgs(inputs, nbInputs, nbOutputs, args))
    {
        return 0;
    }
    return vmk_ss2d_scan_workspace_size(&args);
}

int32_t SS2DScanPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    vmk_ss2d_args_t args;
    int32_t const ready = prepareEnqueue(inputDesc, outputDesc, inputs, outputs, args);
    if (ready != 0)
    {
        return ready > 0 ? 0 : -1;
    }
    // TensorRT gave at least getWorkspaceSize(max dims), which covers these (smaller or equal) shapes.
    size_t const workspaceBytes = vmk_ss2d_scan_workspace_size(&args);
    if (workspaceBytes > 0 && workspace == nullptr)
    {
        fail("enqueue: no workspace given, " + std::to_string(workspaceBytes) + " bytes needed");
        return -1;
    }
    vmk_status_t const status = vmk_ss2d_scan(&args, workspace, workspaceBytes, reinterpret_cast<vmk_stream_t>(stream));
    if (status != VMK_OK)
    {
        fail(std::string("enqueue: vmk_ss2d_scan failed: ") + vmk_status_string(status));
        return -1;
    }
    return 0;
}

PluginFieldCollection const* SS2DScanPlugin::getFieldsToSerialize() noexcept
{
    mSerializedFields.clear();
    mSerializedCollection.nbFields = 0;
    mSerializedCollection.fields = nullptr;
    return &mSerializedCollection;
}

} // namespace plugin
} // namespace vmamba
