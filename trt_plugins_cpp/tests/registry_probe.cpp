/*
 * registry_probe: drives the vmamba.trt plugin libraries through TensorRT's REAL plugin registry
 * (libnvinfer_lean.so.11, which works without a GPU; TENSORRT.md section 5) and prints one JSON
 * object on stdout that tests/test_trt_registry.py checks against the contract and the reference.
 *
 *   registry_probe registry <libnvinfer_lean.so.11> <libvmamba_trt_plugins.so> <spec.txt> [fuzz_iterations seed]
 *       loadLibrary -> getCreator for every op -> plugins created from ONNX-parser-shaped fields
 *       (spec.txt, written by the test) -> types, formats, shapes, serialization, clone, attach,
 *       then a creator fuzz through the registry's creators, then deregisterLibrary.
 *   registry_probe static <libnvinfer_lean.so.11> <libvmamba_trt_plugins_static_reg.so>
 *       dlopen(RTLD_GLOBAL) the lean runtime, dlopen the self-registering library, find the creators.
 *   registry_probe fuzz <libvmamba_trt_plugins.so> <iterations> <seed>
 *       no TensorRT library at all: dlopen + getCreators, then the creator and method fuzz
 *       (the mode to run under valgrind or with the ASan build).
 *
 * spec.txt lines (one ONNX node each, as the parser would see it; TENSORRT.md 2.3):
 *   node <op> <node_name> [<attr>=<INT|FLOAT|STRING>:<value>]...
 *   shape <input rank> <dims...> [<input rank> <dims...>]...     (applies to the last node)
 */
#include "NvInferRuntime.h"
#include "fakeExprBuilder.h"
#include "op_contract.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{
// ------------------------------------------------------------------------------------ JSON bits
std::string q(std::string const& s)
{
    std::string o = "\"";
    for (unsigned char c : s)
    {
        if (c == '"' || c == '\\')
        {
            o += '\\';
            o += static_cast<char>(c);
        }
        else if (c < 0x20)
        {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            o += buf;
        }
        else
        {
            o += static_cast<char>(c);
        }
    }
    return o + "\"";
}
std::string b(bool v) { return v ? "true" : "false"; }
template <typename T>
std::string list(std::vector<T> const& v)
{
    std::string o = "[";
    for (size_t i = 0; i < v.size(); ++i)
    {
        o += (i ? "," : "") + std::to_string(v[i]);
    }
    return o + "]";
}
std::string joinRaw(std::vector<std::string> const& v)
{
    std::string o = "[";
    for (size_t i = 0; i < v.size(); ++i)
    {
        o += (i ? "," : "") + v[i];
    }
    return o + "]";
}

// ------------------------------------------------------------------------------------ logging
class CountingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kERROR)
        {
            ++errors;
            last = msg ? msg : "";
        }
    }
    int64_t errors = 0;
    std::string last;
};
class CountingLoggerFinder : public ILoggerFinder
{
public:
    ILogger* findLogger() override { return &logger; }
    CountingLogger logger;
};
CountingLoggerFinder gFinder;

bool installLoggerFinder(char const* pluginPath)
{
    void* h = dlopen(pluginPath, RTLD_NOW | RTLD_NOLOAD);
    if (!h)
    {
        return false;
    }
    auto fn = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(h, "setLoggerFinder"));
    if (fn)
    {
        fn(&gFinder);
    }
    dlclose(h);
    return fn != nullptr;
}

// ------------------------------------------------------------------------------------ the contract
struct AttrInfo
{
    char const* name;
    int32_t def, lo, hi;
};
struct OpInfo
{
    char const* name;
    char const* version;
    int32_t nbInputs;
    bool const* inputIsFloat32;
    std::vector<AttrInfo> attrs;
};
std::vector<OpInfo> contractOps()
{
    namespace c = vmamba::contract;
    return {
        {c::SS2DScan::kName, c::SS2DScan::kVersion, c::SS2DScan::kNbInputs, c::SS2DScan::kInputIsFloat32, {}},
        {c::VMeanbaScan::kName, c::VMeanbaScan::kVersion, c::VMeanbaScan::kNbInputs, c::VMeanbaScan::kInputIsFloat32,
            {{c::VMeanbaScan::kAttr_variant, c::VMeanbaScan::kVARIANT_DEFAULT, c::VMeanbaScan::kVARIANT_MIN,
                c::VMeanbaScan::kVARIANT_MAX}}},
        {c::QuarterMapDown::kName, c::QuarterMapDown::kVersion, c::QuarterMapDown::kNbInputs,
            c::QuarterMapDown::kInputIsFloat32,
            {{c::QuarterMapDown::kAttr_stride, c::QuarterMapDown::kSTRIDE_DEFAULT, c::QuarterMapDown::kSTRIDE_MIN,
                 c::QuarterMapDown::kSTRIDE_MAX},
                {c::QuarterMapDown::kAttr_keep, c::QuarterMapDown::kKEEP_DEFAULT, c::QuarterMapDown::kKEEP_MIN,
                    c::QuarterMapDown::kKEEP_MAX}}},
        {c::QuarterMapUp::kName, c::QuarterMapUp::kVersion, c::QuarterMapUp::kNbInputs,
            c::QuarterMapUp::kInputIsFloat32, {}},
    };
}
OpInfo const* findOp(std::vector<OpInfo> const& ops, std::string const& name)
{
    for (auto const& op : ops)
    {
        if (name == op.name)
        {
            return &op;
        }
    }
    return nullptr;
}

// ------------------------------------------------------------------------------------ helpers
std::string fieldsJson(PluginFieldCollection const* fc)
{
    if (!fc)
    {
        return "null";
    }
    std::vector<std::string> items;
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        std::string value = "null";
        if (f.data && f.type == PluginFieldType::kINT32 && f.length >= 1)
        {
            value = std::to_string(*static_cast<int32_t const*>(f.data));
        }
        items.push_back(std::string("{\"name\":") + q(f.name ? f.name : "") + ",\"type\":"
            + std::to_string(static_cast<int32_t>(f.type)) + ",\"length\":" + std::to_string(f.length)
            + ",\"value\":" + value + "}");
    }
    return joinRaw(items);
}
IPluginV3OneCore* core(IPluginV3* p) { return static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE)); }
IPluginV3OneBuild* build(IPluginV3* p) { return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD)); }
IPluginV3OneRuntime* runtime(IPluginV3* p) { return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME)); }

Dims makeDims(std::vector<int64_t> const& v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    for (size_t i = 0; i < v.size() && i < static_cast<size_t>(Dims::MAX_DIMS); ++i)
    {
        d.d[i] = v[i];
    }
    return d;
}

// ------------------------------------------------------------------------------------ one node
struct NodeSpec
{
    std::string op, nodeName;
    std::vector<std::pair<std::string, std::string>> attrs;  // name -> "KIND:value"
    std::vector<std::vector<std::vector<int64_t>>> shapes;   // per shape line: per input dims
};

// What the ONNX parser's loadFields builds: only the creator's advertised fields, INT -> kINT32,
// FLOAT -> kFLOAT32, STRING -> kCHAR with the trailing NUL counted.
struct ParserFields
{
    std::vector<PluginField> fields;
    std::vector<std::unique_ptr<char[]>> storage;
    PluginFieldCollection fc{};
};
void loadFieldsLikeParser(IPluginCreatorV3One* creator, NodeSpec const& node, ParserFields& out)
{
    PluginFieldCollection const* names = creator->getFieldNames();
    for (int32_t i = 0; names && i < names->nbFields; ++i)
    {
        std::string want = names->fields[i].name;
        for (auto const& kv : node.attrs)
        {
            if (kv.first != want)
            {
                continue;
            }
            std::string kind = kv.second.substr(0, kv.second.find(':'));
            std::string value = kv.second.substr(kv.second.find(':') + 1);
            if (kind == "INT")
            {
                std::unique_ptr<char[]> mem(new char[sizeof(int32_t)]);
                int32_t v = static_cast<int32_t>(std::strtoll(value.c_str(), nullptr, 10));
                std::memcpy(mem.get(), &v, sizeof(v));
                out.fields.emplace_back(names->fields[i].name, mem.get(), PluginFieldType::kINT32, 1);
                out.storage.push_back(std::move(mem));
            }
            else if (kind == "FLOAT")
            {
                std::unique_ptr<char[]> mem(new char[sizeof(float)]);
                float v = std::strtof(value.c_str(), nullptr);
                std::memcpy(mem.get(), &v, sizeof(v));
                out.fields.emplace_back(names->fields[i].name, mem.get(), PluginFieldType::kFLOAT32, 1);
                out.storage.push_back(std::move(mem));
            }
            else
            {
                std::unique_ptr<char[]> mem(new char[value.size() + 1]);
                std::memcpy(mem.get(), value.c_str(), value.size() + 1);
                out.fields.emplace_back(names->fields[i].name, mem.get(), PluginFieldType::kCHAR,
                    static_cast<int32_t>(value.size() + 1));
                out.storage.push_back(std::move(mem));
            }
        }
    }
    out.fc.nbFields = static_cast<int32_t>(out.fields.size());
    out.fc.fields = out.fields.data();
}

bool sameFields(PluginFieldCollection const* a, PluginFieldCollection const* b)
{
    if (!a || !b || a->nbFields != b->nbFields)
    {
        return false;
    }
    for (int32_t i = 0; i < a->nbFields; ++i)
    {
        PluginField const &x = a->fields[i], &y = b->fields[i];
        if (std::strcmp(x.name, y.name) != 0 || x.type != y.type || x.length != y.length
            || (x.type == PluginFieldType::kINT32
                && std::memcmp(x.data, y.data, sizeof(int32_t) * static_cast<size_t>(x.length)) != 0))
        {
            return false;
        }
    }
    return true;
}

char const* typeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    case DataType::kBOOL: return "bool";
    case DataType::kUINT8: return "uint8";
    case DataType::kFP8: return "fp8";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT64: return "int64";
    default: return "other";
    }
}

std::string runNode(IPluginCreatorV3One* creator, OpInfo const& op, NodeSpec const& node)
{
    std::ostringstream o;
    ParserFields pf;
    loadFieldsLikeParser(creator, node, pf);
    int64_t const errorsBefore = gFinder.logger.errors;
    IPluginV3* plugin = creator->createPlugin(node.nodeName.c_str(), &pf.fc, TensorRTPhase::kBUILD);
    o << "{\"op\":" << q(node.op) << ",\"node\":" << q(node.nodeName) << ",\"fields_passed\":" << fieldsJson(&pf.fc)
      << ",\"created\":" << b(plugin != nullptr);
    if (!plugin)
    {
        o << ",\"errors_logged\":" << (gFinder.logger.errors - errorsBefore) << ",\"last_error\":" << q(gFinder.logger.last)
          << "}";
        return o.str();
    }
    IPluginV3OneCore* c = core(plugin);
    IPluginV3OneBuild* bld = build(plugin);
    IPluginV3OneRuntime* rt = runtime(plugin);
    o << ",\"capabilities\":" << b(c && bld && rt);
    if (!(c && bld && rt))
    {
        delete plugin;
        o << "}";
        return o.str();
    }
    o << ",\"name\":" << q(c->getPluginName()) << ",\"version\":" << q(c->getPluginVersion()) << ",\"namespace\":"
      << q(c->getPluginNamespace()) << ",\"nb_outputs\":" << bld->getNbOutputs();

    int32_t const nbIn = op.nbInputs;
    // getOutputDataTypes for every activation type T (float32-only inputs stay float32).
    std::vector<std::string> types;
    for (int32_t t = 0; t <= 11; ++t)
    {
        std::vector<DataType> in(static_cast<size_t>(nbIn));
        for (int32_t i = 0; i < nbIn; ++i)
        {
            in[i] = op.inputIsFloat32[i] ? DataType::kFLOAT : static_cast<DataType>(t);
        }
        DataType out = DataType::kINT8;
        int32_t rc = bld->getOutputDataTypes(&out, 1, in.data(), nbIn);
        types.push_back(std::string("{\"in\":") + q(typeName(static_cast<DataType>(t))) + ",\"rc\":" + std::to_string(rc)
            + ",\"out\":" + q(rc == 0 ? typeName(out) : "") + "}");
    }
    DataType dummy;
    DataType const fl[8] = {};
    // One input of the wrong type (a float32-only input as float16, or a T input differing from x).
    int32_t wrongParamRc = 0;
    if (nbIn > 1)
    {
        std::vector<DataType> in(static_cast<size_t>(nbIn));
        for (int32_t i = 0; i < nbIn; ++i)
        {
            in[i] = op.inputIsFloat32[i] ? DataType::kFLOAT : DataType::kHALF;
        }
        in[nbIn - 1] = op.inputIsFloat32[nbIn - 1] ? DataType::kHALF : DataType::kFLOAT;
        DataType out = DataType::kINT8;
        wrongParamRc = bld->getOutputDataTypes(&out, 1, in.data(), nbIn);
    }
    o << ",\"output_types_wrong_input_rc\":" << (nbIn > 1 ? std::to_string(wrongParamRc) : std::string("null"));
    o << ",\"output_types\":" << joinRaw(types)
      << ",\"output_types_wrong_count_rc\":" << bld->getOutputDataTypes(&dummy, 2, fl, nbIn);

    // supportsFormatCombination: earlier positions valid for T0, later ones deliberately invalid
    // (the answer may depend on inOut[0..pos] only).
    DataType const candidates[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT8, DataType::kINT32};
    TensorFormat const formats[] = {TensorFormat::kLINEAR, TensorFormat::kCHW32};
    std::vector<std::string> perT0;
    for (DataType t0 : {DataType::kFLOAT, DataType::kHALF})
    {
        std::vector<std::string> accepted;
        for (int32_t pos = 0; pos <= nbIn; ++pos)
        {
            for (DataType cand : candidates)
            {
                for (TensorFormat fmt : formats)
                {
                    std::vector<DynamicPluginTensorDesc> io(static_cast<size_t>(nbIn + 1));
                    for (int32_t i = 0; i <= nbIn; ++i)
                    {
                        io[i].desc.format = i < pos ? TensorFormat::kLINEAR : TensorFormat::kCHW32;
                        io[i].desc.type = i < pos ? ((i < nbIn && op.inputIsFloat32[i]) ? DataType::kFLOAT : t0) : DataType::kINT8;
                    }
                    io[pos].desc.type = cand;
                    io[pos].desc.format = fmt;
                    if (bld->supportsFormatCombination(pos, io.data(), nbIn, 1))
                    {
                        accepted.push_back(std::string("[") + std::to_string(pos) + "," + q(typeName(cand)) + ","
                            + q(fmt == TensorFormat::kLINEAR ? "linear" : "chw32") + "]");
                    }
                }
            }
        }
        perT0.push_back(q(typeName(t0)) + ":" + joinRaw(accepted));
    }
    o << ",\"formats\":{" << perT0[0] << "," << perT0[1] << "}";

    // Shapes through the fake expression builder, then configure / workspace / onShapeChange.
    std::vector<std::string> shapeResults;
    for (auto const& shapeLine : node.shapes)
    {
        vmamba_test::FakeExprBuilder eb;
        std::vector<DimsExprs> inExprs(static_cast<size_t>(nbIn));
        for (int32_t i = 0; i < nbIn && i < static_cast<int32_t>(shapeLine.size()); ++i)
        {
            inExprs[i].nbDims = static_cast<int32_t>(shapeLine[i].size());
            for (size_t k = 0; k < shapeLine[i].size(); ++k)
            {
                inExprs[i].d[k] = eb.symbol(shapeLine[i][k]);
            }
        }
        DimsExprs outExpr{};
        int32_t rc = bld->getOutputShapes(inExprs.data(), nbIn, nullptr, 0, &outExpr, 1, eb);
        std::vector<int64_t> outDims;
        bool dynamic = true;
        for (int32_t k = 0; rc == 0 && k < outExpr.nbDims; ++k)
        {
            outDims.push_back(vmamba_test::FakeExprBuilder::valueOf(outExpr.d[k]));
            dynamic = dynamic && !outExpr.d[k]->isConstant();
        }
        std::string r = std::string("{\"inputs\":[");
        for (size_t i = 0; i < shapeLine.size(); ++i)
        {
            r += (i ? "," : "") + list(shapeLine[i]);
        }
        r += "],\"rc\":" + std::to_string(rc) + ",\"output\":" + list(outDims) + ",\"output_dynamic\":" + b(dynamic)
            + ",\"expr_ops\":" + std::to_string(eb.mFakeImpl.mNbOperations);
        if (rc == 0)
        {
            // Build-time view: batch and spatial dims unknown (-1), min = opt = max = this shape.
            std::vector<DynamicPluginTensorDesc> in(static_cast<size_t>(nbIn));
            std::vector<PluginTensorDesc> concrete(static_cast<size_t>(nbIn));
            for (int32_t i = 0; i < nbIn; ++i)
            {
                Dims d = makeDims(shapeLine[i]);
                in[i].desc.dims = d;
                if (!op.inputIsFloat32[i] && d.nbDims == 4)
                {
                    in[i].desc.dims.d[0] = in[i].desc.dims.d[2] = in[i].desc.dims.d[3] = -1;
                }
                in[i].desc.type = op.inputIsFloat32[i] ? DataType::kFLOAT : DataType::kHALF;
                in[i].desc.format = TensorFormat::kLINEAR;
                in[i].min = in[i].opt = in[i].max = d;
                concrete[i] = in[i].desc;
                concrete[i].dims = d;
            }
            DynamicPluginTensorDesc out{};
            out.desc.dims = makeDims(outDims);
            out.desc.type = DataType::kHALF;
            out.desc.format = TensorFormat::kLINEAR;
            out.min = out.opt = out.max = out.desc.dims;
            int32_t crc = bld->configurePlugin(in.data(), nbIn, &out, 1);
            size_t ws = bld->getWorkspaceSize(in.data(), nbIn, &out, 1);
            PluginTensorDesc outConcrete = out.desc;
            int32_t src = rt->onShapeChange(concrete.data(), nbIn, &outConcrete, 1);
            PluginTensorDesc wrong = outConcrete;
            wrong.dims.d[wrong.dims.nbDims - 1] += 1;
            int32_t bad = rt->onShapeChange(concrete.data(), nbIn, &wrong, 1);
            PluginTensorDesc wrongType = outConcrete;
            wrongType.type = DataType::kFLOAT;
            int32_t badType = rt->onShapeChange(concrete.data(), nbIn, &wrongType, 1);
            r += ",\"configure_rc\":" + std::to_string(crc) + ",\"workspace\":" + std::to_string(ws)
                + ",\"on_shape_change_rc\":" + std::to_string(src) + ",\"wrong_output_shape_rc\":" + std::to_string(bad)
                + ",\"wrong_output_type_rc\":" + std::to_string(badType);
        }
        shapeResults.push_back(r + "}");
    }
    o << ",\"shapes\":" << joinRaw(shapeResults);

    // Serialization round trip: getFieldsToSerialize -> createPlugin(kRUNTIME).
    PluginFieldCollection const* ser = rt->getFieldsToSerialize();
    o << ",\"serialized\":" << fieldsJson(ser);
    IPluginV3* re = ser ? creator->createPlugin(node.nodeName.c_str(), ser, TensorRTPhase::kRUNTIME) : nullptr;
    o << ",\"runtime_recreated\":" << b(re != nullptr);
    if (re)
    {
        o << ",\"runtime_fields_equal\":" << b(sameFields(ser, runtime(re)->getFieldsToSerialize()));
    }
    // clone and attachToContext must give independent, complete copies: use them after deleting
    // their source (valgrind / ASan would see a dangling reference).
    IPluginV3* cl = plugin->clone();
    vmamba_test::FakeResourceContext ctx;
    IPluginV3* at = rt->attachToContext(&ctx);
    std::vector<int32_t> serCopy;
    std::string serBefore = fieldsJson(rt->getFieldsToSerialize());
    delete plugin;
    o << ",\"clone_ok\":" << b(cl && cl != plugin && fieldsJson(runtime(cl)->getFieldsToSerialize()) == serBefore
        && std::string(core(cl)->getPluginName()) == op.name);
    o << ",\"attach_ok\":" << b(at && at != plugin && build(at) && fieldsJson(runtime(at)->getFieldsToSerialize()) == serBefore);
    delete cl;
    delete at;
    delete re;
    o << "}";
    return o.str();
}

// ------------------------------------------------------------------------------------ fuzzing
// An oracle written independently of the plugins' parser: is this collection acceptable, and with
// which attribute values?
struct FuzzStats
{
    int64_t iterations = 0, accepted = 0, rejected = 0, mismatches = 0, roundTripFailures = 0, methodCalls = 0;
    std::string firstMismatch;
};

struct FuzzCase
{
    std::vector<PluginField> fields;
    std::vector<std::string> names;
    std::vector<std::vector<unsigned char>> buffers;
    bool nullFieldArray = false;
    int32_t nbFields = 0;
    bool nullCollection = false;
    int32_t phase = 0;
};

bool oracle(OpInfo const& op, FuzzCase const& fc, std::vector<int32_t>& values)
{
    values.clear();
    for (auto const& a : op.attrs)
    {
        values.push_back(a.def);
    }
    if (fc.phase != 0 && fc.phase != 1)
    {
        return false;
    }
    if (!fc.nullCollection)
    {
        if (fc.nbFields < 0 || (fc.nbFields > 0 && fc.nullFieldArray))
        {
            return false;
        }
        std::vector<bool> seen(op.attrs.size(), false);
        for (int32_t i = 0; i < fc.nbFields; ++i)
        {
            PluginField const& f = fc.fields[i];
            if (!f.name)
            {
                return false;
            }
            int32_t idx = -1;
            for (size_t k = 0; k < op.attrs.size(); ++k)
            {
                if (std::string(f.name) == op.attrs[k].name)
                {
                    idx = static_cast<int32_t>(k);
                }
            }
            if (idx < 0 || seen[idx] || f.type != PluginFieldType::kINT32 || f.length != 1 || !f.data)
            {
                return false;
            }
            seen[idx] = true;
            int32_t v;
            std::memcpy(&v, f.data, 4);
            if (v < op.attrs[idx].lo || v > op.attrs[idx].hi)
            {
                return false;
            }
            values[idx] = v;
        }
    }
    if (std::string(op.name) == vmamba::contract::QuarterMapDown::kName && values[1] > values[0])
    {
        return false;  // keep <= stride
    }
    return true;
}

void makeFuzzCase(OpInfo const& op, std::mt19937& rng, FuzzCase& c)
{
    auto pick = [&](int32_t n) { return static_cast<int32_t>(rng() % static_cast<uint32_t>(n)); };
    c = FuzzCase{};
    int32_t const nb = pick(10) == 0 ? pick(6) : static_cast<int32_t>(op.attrs.size()) - pick(2) + pick(2);
    for (int32_t i = 0; i < std::max(nb, 0); ++i)
    {
        std::string name;
        switch (pick(8))
        {
        case 0: name = "plugin_version"; break;
        case 1: name = op.attrs.empty() ? "variant" : std::string(op.attrs[pick(static_cast<int32_t>(op.attrs.size()))].name) + "x"; break;
        case 2: name = ""; break;
        case 3: name = std::string(1 + pick(40), static_cast<char>('a' + pick(26))); break;
        default:
            name = op.attrs.empty() ? std::string("stride") : std::string(op.attrs[i % op.attrs.size()].name);
        }
        c.names.push_back(name);
        std::vector<unsigned char> buf(64);
        for (auto& x : buf)
        {
            x = static_cast<unsigned char>(rng());
        }
        int32_t value;
        AttrInfo a = op.attrs.empty() ? AttrInfo{"", 0, 0, 0} : op.attrs[i % op.attrs.size()];
        switch (pick(7))
        {
        case 0: value = a.lo - 1; break;
        case 1: value = a.hi + 1; break;
        case 2: value = static_cast<int32_t>(rng()); break;
        case 3: value = pick(2) ? INT32_MIN : INT32_MAX; break;
        default: value = a.lo + pick(std::max(1, a.hi - a.lo + 1));
        }
        std::memcpy(buf.data(), &value, 4);
        c.buffers.push_back(std::move(buf));
    }
    for (size_t i = 0; i < c.names.size(); ++i)
    {
        PluginFieldType type = PluginFieldType::kINT32;
        int32_t len = 1;
        if (pick(5) == 0)
        {
            type = static_cast<PluginFieldType>(pick(16) - 1);  // includes invalid values -1, 14, 15
        }
        if (pick(6) == 0)
        {
            int32_t const lens[] = {-1, 0, 2, 3, 16, INT32_MAX};
            len = lens[pick(6)];
        }
        void const* data = pick(12) == 0 ? nullptr : c.buffers[i].data();
        char const* name = pick(25) == 0 ? nullptr : c.names[i].c_str();
        c.fields.emplace_back(name, data, type, len);
    }
    c.nbFields = static_cast<int32_t>(c.fields.size());
    if (pick(20) == 0)
    {
        c.nbFields = -1 - pick(3);
    }
    if (pick(20) == 0 && c.nbFields > 0)
    {
        c.nullFieldArray = true;
    }
    c.nullCollection = pick(30) == 0;
    c.phase = pick(15) == 0 ? 2 + pick(5) : pick(2);
}

// Random calls to the build/runtime methods with malformed descriptors: must never crash.
void fuzzMethods(IPluginV3* plugin, std::mt19937& rng, FuzzStats& st)
{
    auto pick = [&](int32_t n) { return static_cast<int32_t>(rng() % static_cast<uint32_t>(n)); };
    IPluginV3OneBuild* bld = build(plugin);
    IPluginV3OneRuntime* rt = runtime(plugin);
    plugin->getCapabilityInterface(static_cast<PluginCapabilityType>(pick(6) - 1));
    constexpr int32_t kSlots = 9;  // arrays always hold kSlots entries; counts lie within that
    DynamicPluginTensorDesc dyn[kSlots];
    PluginTensorDesc conc[kSlots];
    DataType types[kSlots];
    for (int32_t i = 0; i < kSlots; ++i)
    {
        Dims d{};
        d.nbDims = pick(12) == 0 ? pick(11) - 1 : 1 + pick(4);
        for (int32_t k = 0; k < Dims::MAX_DIMS; ++k)
        {
            int32_t const r = pick(10);
            d.d[k] = r == 0 ? -1 : r == 1 ? 0 : r == 2 ? (int64_t{1} << 40) : 1 + pick(12);
        }
        dyn[i].desc.dims = d;
        dyn[i].min = dyn[i].opt = dyn[i].max = d;
        dyn[i].desc.type = static_cast<DataType>(pick(13));
        dyn[i].desc.format = pick(4) == 0 ? static_cast<TensorFormat>(pick(13)) : TensorFormat::kLINEAR;
        conc[i] = dyn[i].desc;
        types[i] = conc[i].type;
    }
    int32_t const nbIn = pick(4) == 0 ? pick(kSlots) : 6 - pick(6);
    int32_t const nbOut = pick(5) == 0 ? pick(3) : 1;
    if (nbIn + nbOut > kSlots)
    {
        return;
    }
    DataType outTypes[kSlots];
    bld->getOutputDataTypes(outTypes, nbOut, types, nbIn);
    bld->supportsFormatCombination(pick(kSlots + 2) - 1, dyn, nbIn, nbOut);
    bld->configurePlugin(dyn, nbIn, dyn + nbIn, nbOut);
    bld->getWorkspaceSize(dyn, nbIn, dyn + nbIn, nbOut);
    rt->onShapeChange(conc, nbIn, conc + nbIn, nbOut);
    vmamba_test::FakeExprBuilder eb;
    DimsExprs ex[kSlots];
    for (int32_t i = 0; i < kSlots; ++i)
    {
        ex[i].nbDims = std::max(0, std::min(conc[i].dims.nbDims, Dims::MAX_DIMS));
        for (int32_t k = 0; k < ex[i].nbDims; ++k)
        {
            ex[i].d[k] = eb.symbol(conc[i].dims.d[k]);
        }
    }
    if (nbIn >= 1 && nbIn <= kSlots - 1)
    {
        bld->getOutputShapes(ex, nbIn, nullptr, 0, ex + nbIn, 1, eb);
    }
    // enqueue with null buffers must be rejected by validation before any launch (no GPU here).
    void const* ins[kSlots] = {};
    void* outs[kSlots] = {};
    rt->enqueue(conc, conc + nbIn, ins, outs, nullptr, nullptr);
    st.methodCalls += 8;
}

void fuzzCreators(std::vector<std::pair<OpInfo, IPluginCreatorV3One*>> const& creators, int64_t iterations,
    uint32_t seed, FuzzStats& st)
{
    std::mt19937 rng(seed);
    for (int64_t it = 0; it < iterations; ++it)
    {
        auto const& entry = creators[static_cast<size_t>(it) % creators.size()];
        FuzzCase c;
        makeFuzzCase(entry.first, rng, c);
        PluginFieldCollection fc;
        fc.nbFields = c.nbFields;
        fc.fields = c.nullFieldArray ? nullptr : c.fields.data();
        std::vector<int32_t> want;
        bool const valid = oracle(entry.first, c, want);
        IPluginV3* p = entry.second->createPlugin(
            "fuzz", c.nullCollection ? nullptr : &fc, static_cast<TensorRTPhase>(c.phase));
        ++st.iterations;
        if ((p != nullptr) != valid)
        {
            ++st.mismatches;
            if (st.firstMismatch.empty())
            {
                st.firstMismatch = std::string(entry.first.name) + " iteration " + std::to_string(it) + " valid="
                    + b(valid) + " created=" + b(p != nullptr);
            }
        }
        if (!p)
        {
            ++st.rejected;
            continue;
        }
        ++st.accepted;
        // The accepted values must be the oracle's, and survive serialization.
        PluginFieldCollection const* ser = runtime(p)->getFieldsToSerialize();
        bool ok = ser && ser->nbFields == static_cast<int32_t>(want.size());
        for (int32_t i = 0; ok && i < ser->nbFields; ++i)
        {
            ok = std::string(ser->fields[i].name) == entry.first.attrs[i].name
                && *static_cast<int32_t const*>(ser->fields[i].data) == want[i];
        }
        IPluginV3* re = ok ? entry.second->createPlugin("fuzz", ser, TensorRTPhase::kRUNTIME) : nullptr;
        if (!ok || !re || !sameFields(ser, runtime(re)->getFieldsToSerialize()))
        {
            ++st.roundTripFailures;
        }
        fuzzMethods(p, rng, st);
        delete re;
        delete p;
    }
}

std::string fuzzJson(FuzzStats const& st)
{
    return std::string("{\"iterations\":") + std::to_string(st.iterations) + ",\"accepted\":" + std::to_string(st.accepted)
        + ",\"rejected\":" + std::to_string(st.rejected) + ",\"mismatches\":" + std::to_string(st.mismatches)
        + ",\"round_trip_failures\":" + std::to_string(st.roundTripFailures) + ",\"method_calls\":"
        + std::to_string(st.methodCalls) + ",\"first_mismatch\":" + q(st.firstMismatch) + "}";
}

// ------------------------------------------------------------------------------------ modes
std::vector<NodeSpec> readSpec(char const* path)
{
    std::vector<NodeSpec> nodes;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line))
    {
        std::istringstream ls(line);
        std::string kind;
        ls >> kind;
        if (kind == "node")
        {
            NodeSpec n;
            ls >> n.op >> n.nodeName;
            std::string tok;
            while (ls >> tok)
            {
                auto eq = tok.find('=');
                n.attrs.emplace_back(tok.substr(0, eq), tok.substr(eq + 1));
            }
            nodes.push_back(n);
        }
        else if (kind == "shape" && !nodes.empty())
        {
            std::vector<std::vector<int64_t>> shapes;
            int32_t rank;
            while (ls >> rank)
            {
                std::vector<int64_t> d(static_cast<size_t>(rank));
                for (auto& x : d)
                {
                    ls >> x;
                }
                shapes.push_back(d);
            }
            nodes.back().shapes.push_back(shapes);
        }
    }
    return nodes;
}

using GetRegistryFn = IPluginRegistry* (*) ();

IPluginRegistry* openRegistry(char const* leanPath, std::string& error)
{
    void* lean = dlopen(leanPath, RTLD_NOW | RTLD_GLOBAL);
    if (!lean)
    {
        error = std::string("dlopen lean: ") + dlerror();
        return nullptr;
    }
    auto fn = reinterpret_cast<GetRegistryFn>(dlsym(lean, "getPluginRegistry"));
    if (!fn)
    {
        error = "no getPluginRegistry in the lean library";
        return nullptr;
    }
    return fn();
}

std::string creatorJson(IPluginCreatorInterface* ci)
{
    if (!ci)
    {
        return "null";
    }
    InterfaceInfo info = ci->getInterfaceInfo();
    std::string o = std::string("{\"kind\":") + q(info.kind) + ",\"major\":" + std::to_string(info.major);
    if (std::string(info.kind) == "PLUGIN CREATOR_V3ONE")
    {
        auto* c = static_cast<IPluginCreatorV3One*>(ci);
        o += ",\"name\":" + q(c->getPluginName()) + ",\"version\":" + q(c->getPluginVersion()) + ",\"namespace\":"
            + q(c->getPluginNamespace()) + ",\"field_names\":" + fieldsJson(c->getFieldNames());
    }
    return o + "}";
}

int modeRegistry(int argc, char** argv)
{
    std::string error;
    IPluginRegistry* reg = openRegistry(argv[2], error);
    if (!reg)
    {
        std::printf("{\"error\":%s}\n", q(error).c_str());
        return 2;
    }
    auto ops = contractOps();
    int32_t nBefore = 0;
    reg->getAllCreators(&nBefore);
    IPluginRegistry::PluginLibraryHandle handle = reg->loadLibrary(argv[3]);
    IPluginRegistry::PluginLibraryHandle again = handle ? reg->loadLibrary(argv[3]) : nullptr;
    int32_t nAfter = 0;
    reg->getAllCreators(&nAfter);
    bool const finder = installLoggerFinder(argv[3]);
    std::ostringstream o;
    o << "{\"mode\":\"registry\",\"creators_before\":" << nBefore << ",\"loaded\":" << b(handle != nullptr)
      << ",\"duplicate_load_rejected\":" << b(handle && again == nullptr) << ",\"creators_after\":" << nAfter
      << ",\"logger_finder_installed\":" << b(finder);
    std::vector<std::string> found;
    std::vector<std::pair<OpInfo, IPluginCreatorV3One*>> creators;
    for (auto const& op : ops)
    {
        IPluginCreatorInterface* ci = reg->getCreator(op.name, op.version, vmamba::contract::kPluginNamespace);
        found.push_back(q(op.name) + ":" + creatorJson(ci));
        if (ci && std::string(ci->getInterfaceInfo().kind) == "PLUGIN CREATOR_V3ONE")
        {
            creators.emplace_back(op, static_cast<IPluginCreatorV3One*>(ci));
        }
    }
    o << ",\"creators\":{";
    for (size_t i = 0; i < found.size(); ++i)
    {
        o << (i ? "," : "") << found[i];
    }
    o << "}";
    o << ",\"wrong_version_found\":" << b(reg->getCreator(ops[0].name, "2", "") != nullptr)
      << ",\"wrong_namespace_found\":" << b(reg->getCreator(ops[0].name, ops[0].version, "vmamba.trt") != nullptr);

    std::vector<std::string> nodes;
    for (auto const& node : readSpec(argv[4]))
    {
        OpInfo const* op = findOp(ops, node.op);
        IPluginCreatorV3One* creator = nullptr;
        for (auto const& e : creators)
        {
            if (node.op == e.first.name)
            {
                creator = e.second;
            }
        }
        if (!op || !creator)
        {
            nodes.push_back(std::string("{\"op\":") + q(node.op) + ",\"created\":false,\"no_creator\":true}");
            continue;
        }
        nodes.push_back(runNode(creator, *op, node));
    }
    o << ",\"nodes\":" << joinRaw(nodes);
    if (argc >= 7 && creators.size() == ops.size())
    {
        FuzzStats st;
        int64_t const before = gFinder.logger.errors;
        fuzzCreators(creators, std::atoll(argv[5]), static_cast<uint32_t>(std::atoll(argv[6])), st);
        o << ",\"fuzz\":" << fuzzJson(st) << ",\"fuzz_errors_logged\":" << (gFinder.logger.errors - before);
    }
    if (handle)
    {
        reg->deregisterLibrary(handle);
    }
    bool goneAfter = true;
    for (auto const& op : ops)
    {
        goneAfter = goneAfter && reg->getCreator(op.name, op.version, "") == nullptr;
    }
    o << ",\"creators_gone_after_deregister\":" << b(goneAfter) << "}";
    std::printf("%s\n", o.str().c_str());
    return 0;
}

int modeStatic(char** argv)
{
    std::string error;
    IPluginRegistry* reg = openRegistry(argv[2], error);
    if (!reg)
    {
        std::printf("{\"error\":%s}\n", q(error).c_str());
        return 2;
    }
    int32_t nBefore = 0;
    reg->getAllCreators(&nBefore);
    void* lib = dlopen(argv[3], RTLD_NOW | RTLD_LOCAL);
    std::string dlerr = lib ? "" : dlerror();
    int32_t nAfter = 0;
    reg->getAllCreators(&nAfter);
    std::ostringstream o;
    o << "{\"mode\":\"static\",\"dlopen_ok\":" << b(lib != nullptr) << ",\"dlerror\":" << q(dlerr)
      << ",\"creators_before\":" << nBefore << ",\"creators_after\":" << nAfter
      << ",\"exports_getCreators\":" << b(lib && dlsym(lib, "getCreators")) << ",\"creators\":{";
    auto ops = contractOps();
    for (size_t i = 0; i < ops.size(); ++i)
    {
        IPluginCreatorInterface* ci = reg->getCreator(ops[i].name, ops[i].version, "");
        o << (i ? "," : "") << q(ops[i].name) << ":" << creatorJson(ci);
        // One plugin from default fields, to show the creator works through this route too.
        if (ci && std::string(ci->getInterfaceInfo().kind) == "PLUGIN CREATOR_V3ONE")
        {
            PluginFieldCollection empty{};
            IPluginV3* p = static_cast<IPluginCreatorV3One*>(ci)->createPlugin("static_probe", &empty, TensorRTPhase::kBUILD);
            o.seekp(-1, std::ios_base::cur);
            o << ",\"default_plugin_created\":" << b(p != nullptr) << "}";
            delete p;
        }
    }
    o << "}}";
    std::printf("%s\n", o.str().c_str());
    return 0;
}

int modeFuzz(char** argv)
{
    void* lib = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    if (!lib)
    {
        std::printf("{\"error\":%s}\n", q(dlerror()).c_str());
        return 2;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    auto setFinder = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(lib, "setLoggerFinder"));
    if (!getCreators || !setFinder)
    {
        std::printf("{\"error\":\"getCreators/setLoggerFinder not exported\"}\n");
        return 2;
    }
    setFinder(&gFinder);
    int32_t n = 0;
    IPluginCreatorInterface* const* list = getCreators(n);
    auto ops = contractOps();
    std::vector<std::pair<OpInfo, IPluginCreatorV3One*>> creators;
    for (int32_t i = 0; i < n; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(list[i]);
        if (OpInfo const* op = findOp(ops, c->getPluginName()))
        {
            creators.emplace_back(*op, c);
        }
    }
    FuzzStats st;
    fuzzCreators(creators, std::atoll(argv[3]), static_cast<uint32_t>(std::atoll(argv[4])), st);
    std::printf("{\"mode\":\"fuzz\",\"nb_creators\":%d,\"fuzz\":%s,\"errors_logged\":%lld}\n", n, fuzzJson(st).c_str(),
        static_cast<long long>(gFinder.logger.errors));
    setFinder(nullptr);
    return 0;
}
} // namespace

int main(int argc, char** argv)
{
    std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "registry" && argc >= 5)
    {
        return modeRegistry(argc, argv);
    }
    if (mode == "static" && argc >= 4)
    {
        return modeStatic(argv);
    }
    if (mode == "fuzz" && argc >= 5)
    {
        return modeFuzz(argv);
    }
    std::fprintf(stderr,
        "usage: registry_probe registry <lean.so> <plugins.so> <spec.txt> [fuzz_iterations seed]\n"
        "       registry_probe static <lean.so> <plugins_static_reg.so>\n"
        "       registry_probe fuzz <plugins.so> <iterations> <seed>\n");
    return 64;
}
