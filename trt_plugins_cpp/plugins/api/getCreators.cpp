/*
 * Dynamic registration (libvmamba_trt_plugins.so): TensorRT's IPluginRegistry::loadLibrary,
 * trtexec --dynamicPlugins / --setPluginsToSerialize and
 * tensorrt.get_plugin_registry().load_library() call these two C entry points. This library
 * needs no libnvinfer symbol. Never combine it with staticRegistration.cpp in one .so: the
 * static registrars would register the creators first and loadLibrary would then fail.
 */
#include "allCreators.h"

#define VMAMBA_EXPORT extern "C" __attribute__((visibility("default")))

namespace
{
using namespace vmamba::plugin;

// Creator objects live as long as the library is loaded.
SS2DScanPluginCreator gSS2DScanCreator;
VMeanbaScanPluginCreator gVMeanbaScanCreator;
QuarterMapDownPluginCreator gQuarterMapDownCreator;
QuarterMapUpPluginCreator gQuarterMapUpCreator;

nvinfer1::IPluginCreatorInterface* const gCreators[] = {
    &gSS2DScanCreator,
    &gVMeanbaScanCreator,
    &gQuarterMapDownCreator,
    &gQuarterMapUpCreator,
};
} // namespace

VMAMBA_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    vmamba::plugin::setGlobalLoggerFinder(finder);
}

VMAMBA_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    nbCreators = static_cast<int32_t>(sizeof(gCreators) / sizeof(gCreators[0]));
    return gCreators;
}
