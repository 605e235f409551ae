/*
 * Shared helpers for the vmamba.trt TensorRT IPluginV3 plugins: logging, strict PluginField parsing,
 * data-type and shape helpers, and a base class that implements the parts every plugin shares.
 *
 * Field rules (TENSORRT.md 2.3): the ONNX parser hands over only the attributes a creator lists in
 * getFieldNames(), INT attributes as kINT32 with length 1. A missing attribute takes the contract's
 * default (the parser skips missing ones with a warning); anything else that is not exactly
 * "known name, kINT32, length 1, non-null data, value in range, given once" is rejected.
 */
#pragma once

#include "NvInferRuntime.h"
#include "op_contract.h"
#include "vmamba_kernels.h"

#include <cstdint>
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace vmamba
{
namespace plugin
{

// ----------------------------------------------------------------------------------- logging
// Messages go to the logger TensorRT hands over through setLoggerFinder (getCreators build);
// without one they go to stderr unless VMAMBA_TRT_PLUGINS_QUIET is set (the fuzz tests set it).
void setGlobalLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void logError(char const* pluginName, std::string const& message) noexcept;
void logWarning(char const* pluginName, std::string const& message) noexcept;

// ----------------------------------------------------------------------------------- fields
struct IntAttributeSpec
{
    char const* name;
    int32_t defaultValue;
    int32_t minValue;
    int32_t maxValue;
};

// Parses fc into values[i] (one per spec, defaults for absent ones). Returns false and fills error
// for a null field array with nbFields > 0, a negative count, a null or unknown name, a duplicate,
// a wrong type or length, null data, or a value outside [min, max].
bool parseIntFields(nvinfer1::PluginFieldCollection const* fc, IntAttributeSpec const* specs, int32_t nbSpecs,
    int32_t* values, std::string& error) noexcept;

// The collection a creator returns from getFieldNames(): name, kINT32, length 1, no data.
class FieldNameList
{
public:
    FieldNameList(IntAttributeSpec const* specs, int32_t nbSpecs);
    nvinfer1::PluginFieldCollection const* get() const noexcept { return &mCollection; }

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

// ----------------------------------------------------------------------------------- types/shapes
inline bool isActivationType(nvinfer1::DataType t) noexcept
{
    return t == nvinfer1::DataType::kFLOAT || t == nvinfer1::DataType::kHALF;
}
bool toKernelDtype(nvinfer1::DataType t, vmk_dtype_t* out) noexcept;
char const* dataTypeName(nvinfer1::DataType t) noexcept;
std::string dimsToString(nvinfer1::Dims const& d);
int64_t volume(nvinfer1::Dims const& d) noexcept;  // 0 if any extent is 0, -1 if any is unknown

// A dimension that must agree with another one; -1 (unknown at build time) agrees with everything.
inline bool dimsAgree(int64_t a, int64_t b) noexcept
{
    return a < 0 || b < 0 || a == b;
}

// ----------------------------------------------------------------------------------- base class
// Everything the four plugins share. Each op derives one concrete IPluginV3 class from it that adds
// its attributes, shape rules, workspace and enqueue. Inputs are described by the contract table
// kInputIsFloat32: such inputs are always float32, the others share input 0's type (float32 or
// float16), and the single output has input 0's type. Only the linear format is supported.
// Every plugin's create(): construct without letting allocation failure throw; nullptr and an
// error message when memory runs out.
template <typename P, typename... Args>
P* newPlugin(std::string& error, Args&&... args)
{
    P* plugin = new (std::nothrow) P(std::forward<Args>(args)...);
    if (plugin == nullptr)
    {
        error = "out of memory";
    }
    return plugin;
}

class VmambaPluginBase : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime
{
public:
    VmambaPluginBase(std::string layerName, char const* opName, char const* opVersion, int32_t nbInputs,
        bool const* inputIsFloat32);
    VmambaPluginBase(VmambaPluginBase const& other);
    VmambaPluginBase& operator=(VmambaPluginBase const&) = delete;
    ~VmambaPluginBase() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return mOpName; }
    char const* getPluginVersion() const noexcept override { return mOpVersion; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }
    void setPluginNamespace(char const* pluginNamespace) noexcept;

    // IPluginV3OneBuild (shared parts)
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;

    // IPluginV3OneRuntime (shared parts)
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;

protected:
    // Checks ranks and the dims that must agree; -1 extents (build time) are skipped. `out` may be
    // null (configure without output dims). Returns false with a message in error.
    virtual bool checkShapes(nvinfer1::Dims const* in, nvinfer1::Dims const* out, std::string& error) const = 0;
    // Checks types and formats of a concrete call (onShapeChange, enqueue).
    bool checkTypesAndFormats(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const* out,
        std::string& error) const;
    bool checkCounts(int32_t nbInputs, int32_t nbOutputs, char const* where) const noexcept;
    void fail(std::string const& message) const noexcept { logError(mOpName, mLayerName + ": " + message); }
    // Every plugin's clone(): a copy of the concrete class, or nullptr with a logged error.
    template <typename Derived>
    nvinfer1::IPluginV3* cloneAs(Derived const& self) const noexcept
    {
        try
        {
            return new Derived(self);
        }
        catch (std::exception const& e)
        {
            fail(std::string("clone: ") + e.what());
        }
        return nullptr;
    }

    std::string mLayerName;
    char const* mOpName;
    char const* mOpVersion;
    int32_t mNbInputs;
    bool const* mInputIsFloat32;
    std::string mNamespace;
    // getFieldsToSerialize storage, rebuilt on every call (the plugin owns it, TensorRT only reads).
    std::vector<nvinfer1::PluginField> mSerializedFields;
    nvinfer1::PluginFieldCollection mSerializedCollection{};
};

// ----------------------------------------------------------------------------------- creators
// The thin creator of plugin type P: P must provide static `kFieldSpecs`/`kNbFieldSpecs` and
// `static P* create(std::string const& layerName, int32_t const* values, std::string& error)`.
template <typename P>
class VmambaPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    VmambaPluginCreator()
        : mFieldNames(P::kFieldSpecs, P::kNbFieldSpecs)
    {
    }
    char const* getPluginName() const noexcept override { return P::Contract::kName; }
    char const* getPluginVersion() const noexcept override { return P::Contract::kVersion; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }
    void setPluginNamespace(char const* pluginNamespace) noexcept
    {
        mNamespace = pluginNamespace ? pluginNamespace : "";
    }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return mFieldNames.get(); }

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override
    {
        try
        {
            std::string layerName = name ? name : "";
            if (phase != nvinfer1::TensorRTPhase::kBUILD && phase != nvinfer1::TensorRTPhase::kRUNTIME)
            {
                logError(P::Contract::kName, layerName + ": unknown TensorRTPhase "
                        + std::to_string(static_cast<int32_t>(phase)));
                return nullptr;
            }
            int32_t values[P::kNbFieldSpecs > 0 ? P::kNbFieldSpecs : 1];
            std::string error;
            if (!parseIntFields(fc, P::kFieldSpecs, P::kNbFieldSpecs, values, error))
            {
                logError(P::Contract::kName, layerName + ": " + error);
                return nullptr;
            }
            P* plugin = P::create(layerName, values, error);
            if (plugin == nullptr)
            {
                logError(P::Contract::kName, layerName + ": " + error);
                return nullptr;
            }
            plugin->setPluginNamespace(mNamespace.c_str());
            return plugin;
        }
        catch (std::exception const& e)
        {
            logError(P::Contract::kName, std::string("createPlugin: ") + e.what());
        }
        catch (...)
        {
            logError(P::Contract::kName, "createPlugin: unknown exception");
        }
        return nullptr;
    }

private:
    FieldNameList mFieldNames;
    std::string mNamespace{vmamba::contract::kPluginNamespace};
};

} // namespace plugin
} // namespace vmamba
