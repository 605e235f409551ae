#include "vmeanbaScanPlugin.h"

#include <exception>
#include <new>

using namespace nvinfer1;

namespace vmamba
{
namespace plugin
{

VMeanbaScanPlugin* VMeanbaScanPlugin::create(std::string const& layerName, int32_t const* values, std::string& error)
{
    return newPlugin<VMeanbaScanPlugin>(error, layerName, values[0]);
}

VMeanbaScanPlugin::VMeanbaScanPlugin(std::string layerName, int32_t variant)
    : ScanPluginBase(std::move(layerName), Contract::kName, Contract::kVersion, Contract::kNbInputs,
        Contract::kInputIsFloat32)
    , mVariant(variant)
{
}

IPluginV3* VMeanbaScanPlugin::clone() noexcept
{
    return cloneAs(*this);
}

size_t VMeanbaScanPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    vmk_ss2d_args_t args;
    if (!maxArgs(inputs, nbInputs, nbOutputs, args))
    {
        return 0;
    }
    return vmk_vmeanba_scan_workspace_size(&args, mVariant);
}

int32_t VMeanbaScanPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    vmk_ss2d_args_t args;
    int32_t const ready = prepareEnqueue(inputDesc, outputDesc, inputs, outputs, args);
    if (ready != 0)
    {
        return ready > 0 ? 0 : -1;
    }
    size_t const workspaceBytes = vmk_vmeanba_scan_workspace_size(&args, mVariant);
    if (workspaceBytes > 0 && workspace == nullptr)
    {
        fail("enqueue: no workspace given, " + std::to_string(workspaceBytes) + " bytes needed");
        return -1;
    }
    vmk_status_t const status
        = vmk_vmeanba_scan(&args, mVariant, workspace, workspaceBytes, reinterpret_cast<vmk_stream_t>(stream));
    if (status != VMK_OK)
    {
        fail(std::string("enqueue: vmk_vmeanba_scan failed: ") + vmk_status_string(status));
        return -1;
    }
    return 0;
}

PluginFieldCollection const* VMeanbaScanPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mSerializedFields.clear();
        mSerializedFields.emplace_back(Contract::kAttr_variant, &mVariant, PluginFieldType::kINT32, 1);
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
