/*
 * Self-registration (libvmamba_trt_plugins_static_reg.so): the creators register themselves in
 * TensorRT's global registry (namespace "") when the library is dlopen'ed, through
 * REGISTER_TENSORRT_PLUGIN -> getPluginRegistry(). For consumers that only dlopen: trtexec
 * --staticPlugins, Polygraphy --plugins, ONNX Runtime trt_extra_plugin_lib_paths, LD_PRELOAD.
 * getPluginRegistry() comes from libnvinfer (or libnvinfer_lean), which must be linked (NEEDED) or
 * already loaded with RTLD_GLOBAL. Never combine it with getCreators.cpp in one .so.
 */
#include "allCreators.h"

namespace
{
using namespace vmamba::plugin;
REGISTER_TENSORRT_PLUGIN(SS2DScanPluginCreator);
REGISTER_TENSORRT_PLUGIN(VMeanbaScanPluginCreator);
REGISTER_TENSORRT_PLUGIN(QuarterMapDownPluginCreator);
REGISTER_TENSORRT_PLUGIN(QuarterMapUpPluginCreator);
} // namespace
