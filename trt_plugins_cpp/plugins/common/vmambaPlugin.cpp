#include "vmambaPlugin.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

using namespace nvinfer1;

namespace vmamba
{
namespace plugin
{
namespace
{
std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

void emit(ILogger::Severity severity, char const* pluginName, std::string const& message) noexcept
{
    try
    {
        std::string text = std::string("[vmamba.trt ") + (pluginName ? pluginName : "?") + "] " + message;
        ILogger* logger = nullptr;
        if (ILoggerFinder* finder = gLoggerFinder.load())
        {
            logger = finder->findLogger();
        }
        if (logger != nullptr)
        {
            logger->log(severity, text.c_str());
        }
        else if (std::getenv("VMAMBA_TRT_PLUGINS_QUIET") == nullptr)
        {
            std::fprintf(stderr, "%s\n", text.c_str());
        }
    }
    catch (...)
    {
        // Logging must never throw out of a noexcept TensorRT entry point.
    }
}
} // namespace

void setGlobalLoggerFinder(ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void logError(char const* pluginName, std::string const& message) noexcept
{
    emit(ILogger::Severity::kERROR, pluginName, message);
}

void logWarning(char const* pluginName, std::string const& message) noexcept
{
    emit(ILogger::Severity::kWARNING, pluginName, message);
}

// ------------------------------------------------------------------------------------------ fields
bool parseIntFields(PluginFieldCollection const* fc, IntAttributeSpec const* specs, int32_t nbSpecs, int32_t* values,
    std::string& error) noexcept
{
    try
    {
        for (int32_t s = 0; s < nbSpecs; ++s)
        {
            values[s] = specs[s].defaultValue;
        }
        if (fc == nullptr)
        {
            return true;  // no fields at all: every attribute takes its default
        }
        if (fc->nbFields < 0)
        {
            error = "PluginFieldCollection has a negative field count " + std::to_string(fc->nbFields);
            return false;
        }
        if (fc->nbFields > 0 && fc->fields == nullptr)
        {
            error = "PluginFieldCollection has " + std::to_string(fc->nbFields) + " fields but a null field array";
            return false;
        }
        std::vector<bool> seen(static_cast<size_t>(nbSpecs), false);
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            if (f.name == nullptr)
            {
                error = "field " + std::to_string(i) + " has a null name";
                return false;
            }
            int32_t match = -1;
            for (int32_t s = 0; s < nbSpecs; ++s)
            {
                if (std::strcmp(f.name, specs[s].name) == 0)
                {
                    match = s;
                    break;
                }
            }
            // Bounded copy of the name for messages: it came from outside.
            std::string shownName(f.name, strnlen(f.name, 64));
            if (match < 0)
            {
                error = "unknown field '" + shownName + "'";
                return false;
            }
            if (seen[match])
            {
                error = "field '" + shownName + "' given twice";
                return false;
            }
            seen[match] = true;
            if (f.type != PluginFieldType::kINT32)
            {
                error = "field '" + shownName + "' must be kINT32, got PluginFieldType "
                    + std::to_string(static_cast<int32_t>(f.type));
                return false;
            }
            if (f.length != 1)
            {
                error = "field '" + shownName + "' must have length 1, got " + std::to_string(f.length);
                return false;
            }
            if (f.data == nullptr)
            {
                error = "field '" + shownName + "' has null data";
                return false;
            }
            int32_t value;
            std::memcpy(&value, f.data, sizeof(value));  // data may be unaligned
            if (value < specs[match].minValue || value > specs[match].maxValue)
            {
                error = "field '" + shownName + "' = " + std::to_string(value) + " is outside ["
                    + std::to_string(specs[match].minValue) + ", " + std::to_string(specs[match].maxValue) + "]";
                return false;
            }
            values[match] = value;
        }
        return true;
    }
    catch (std::exception const& e)
    {
        error = e.what();
    }
    catch (...)
    {
        error = "unknown exception while parsing fields";
    }
    return false;
}

FieldNameList::FieldNameList(IntAttributeSpec const* specs, int32_t nbSpecs)
{
    for (int32_t s = 0; s < nbSpecs; ++s)
    {
        mFields.emplace_back(specs[s].name, nullptr, PluginFieldType::kINT32, 1);
    }
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.empty() ? nullptr : mFields.data();
}

// ------------------------------------------------------------------------------------------ types
bool toKernelDtype(DataType t, vmk_dtype_t* out) noexcept
{
    switch (t)
    {
    case DataType::kFLOAT: *out = VMK_FLOAT32; return true;
    case DataType::kHALF: *out = VMK_FLOAT16; return true;
    default: return false;
    }
}

char const* dataTypeName(DataType t) noexcept
{
    switch (t)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    case DataType::kBOOL: return "bool";
    case DataType::kUINT8: return "uint8";
    case DataType::kFP8: return "fp8";
    default: return "other";
    }
}

std::string dimsToString(Dims const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims && i < Dims::MAX_DIMS; ++i)
    {
        s += (i ? ", " : "") + std::to_string(d.d[i]);
    }
    return s + "]";
}

int64_t volume(Dims const& d) noexcept
{
    int64_t v = 1;
    bool unknown = false;
    for (int32_t i = 0; i < d.nbDims && i < Dims::MAX_DIMS; ++i)
    {
        if (d.d[i] == 0)
        {
            return 0;
        }
        if (d.d[i] < 0)
        {
            unknown = true;
            continue;
        }
        v *= d.d[i];
    }
    return unknown ? -1 : v;
}

// ------------------------------------------------------------------------------------------ base
VmambaPluginBase::VmambaPluginBase(
    std::string layerName, char const* opName, char const* opVersion, int32_t nbInputs, bool const* inputIsFloat32)
    : mLayerName(std::move(layerName))
    , mOpName(opName)
    , mOpVersion(opVersion)
    , mNbInputs(nbInputs)
    , mInputIsFloat32(inputIsFloat32)
    , mNamespace(vmamba::contract::kPluginNamespace)
{
}

// The serialization buffers point into the source object: a copy starts with empty ones.
VmambaPluginBase::VmambaPluginBase(VmambaPluginBase const& other)
    : IPluginV3(other)
    , IPluginV3OneCore(other)
    , IPluginV3OneBuild(other)
    , IPluginV3OneRuntime(other)
    , mLayerName(other.mLayerName)
    , mOpName(other.mOpName)
    , mOpVersion(other.mOpVersion)
    , mNbInputs(other.mNbInputs)
    , mInputIsFloat32(other.mInputIsFloat32)
    , mNamespace(other.mNamespace)
{
}

IPluginCapability* VmambaPluginBase::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

void VmambaPluginBase::setPluginNamespace(char const* pluginNamespace) noexcept
{
    try
    {
        mNamespace = pluginNamespace ? pluginNamespace : "";
    }
    catch (...)
    {
    }
}

bool VmambaPluginBase::checkCounts(int32_t nbInputs, int32_t nbOutputs, char const* where) const noexcept
{
    if (nbInputs != mNbInputs || nbOutputs != 1)
    {
        fail(std::string(where) + ": expected " + std::to_string(mNbInputs) + " inputs and 1 output, got "
            + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
        return false;
    }
    return true;
}

int32_t VmambaPluginBase::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (!checkCounts(nbInputs, nbOutputs, "getOutputDataTypes") || outputTypes == nullptr || inputTypes == nullptr)
    {
        return -1;
    }
    if (!isActivationType(inputTypes[0]))
    {
        fail(std::string("input 0 must be float32 or float16, got ") + dataTypeName(inputTypes[0]));
        return -1;
    }
    // Strongly typed networks (TensorRT 11): the ONNX types are final, so say here which one is wrong
    // rather than letting supportsFormatCombination find no combination.
    for (int32_t i = 1; i < nbInputs; ++i)
    {
        DataType const want = mInputIsFloat32[i] ? DataType::kFLOAT : inputTypes[0];
        if (inputTypes[i] != want)
        {
            fail("input " + std::to_string(i) + " must be " + dataTypeName(want) + ", got " + dataTypeName(inputTypes[i]));
            return -1;
        }
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

bool VmambaPluginBase::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != mNbInputs || nbOutputs != 1 || pos < 0 || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos < nbInputs && mInputIsFloat32[pos])
    {
        return desc.type == DataType::kFLOAT;
    }
    if (pos == 0)
    {
        return isActivationType(desc.type);
    }
    // Every other activation input and the output follow input 0.
    return desc.type == inOut[0].desc.type;
}

bool VmambaPluginBase::checkTypesAndFormats(PluginTensorDesc const* in, PluginTensorDesc const* out, std::string& error) const
{
    if (!isActivationType(in[0].type))
    {
        error = std::string("input 0 must be float32 or float16, got ") + dataTypeName(in[0].type);
        return false;
    }
    for (int32_t i = 0; i <= mNbInputs; ++i)
    {
        PluginTensorDesc const& d = i < mNbInputs ? in[i] : out[0];
        DataType want = (i < mNbInputs && mInputIsFloat32[i]) ? DataType::kFLOAT : in[0].type;
        if (d.type != want)
        {
            error = (i < mNbInputs ? "input " + std::to_string(i) : std::string("output 0")) + " must be "
                + dataTypeName(want) + ", got " + dataTypeName(d.type);
            return false;
        }
        if (d.format != TensorFormat::kLINEAR)
        {
            error = "only the linear format is supported";
            return false;
        }
    }
    return true;
}

int32_t VmambaPluginBase::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (!checkCounts(nbInputs, nbOutputs, "configurePlugin") || in == nullptr)
        {
            return -1;
        }
        std::vector<Dims> inDims(static_cast<size_t>(nbInputs));
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            inDims[i] = in[i].desc.dims;
        }
        std::string error;
        if (!checkShapes(inDims.data(), out ? &out[0].desc.dims : nullptr, error))
        {
            fail("configurePlugin: " + error);
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        fail(std::string("configurePlugin: ") + e.what());
    }
    return -1;
}

int32_t VmambaPluginBase::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (!checkCounts(nbInputs, nbOutputs, "onShapeChange") || in == nullptr || out == nullptr)
        {
            return -1;
        }
        std::vector<Dims> inDims(static_cast<size_t>(nbInputs));
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            inDims[i] = in[i].dims;
        }
        std::string error;
        if (!checkTypesAndFormats(in, out, error) || !checkShapes(inDims.data(), &out[0].dims, error))
        {
            fail("onShapeChange: " + error);
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        fail(std::string("onShapeChange: ") + e.what());
    }
    return -1;
}

IPluginV3* VmambaPluginBase::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    // No per-context resources (the kernels take no handles): a full clone is all a context needs.
    return clone();
}

} // namespace plugin
} // namespace vmamba
