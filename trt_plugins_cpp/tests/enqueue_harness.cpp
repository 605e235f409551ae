/*
 * enqueue_harness: drives every vmamba.trt plugin through the IPluginV3 call sequence TensorRT
 * uses at build and run time, on a GPU, and compares the outputs with golden data from
 * plugins/reference.py (tests/make_plugin_golden.py). No TensorRT library is needed: the plugins
 * come from libvmamba_trt_plugins.so's getCreators(), as IPluginRegistry::loadLibrary gets them.
 *
 * Per golden group (one plugin instance, several input shapes of one dynamic profile):
 *   createPlugin(kBUILD, fields as the ONNX parser passes them) -> getCapabilityInterface ->
 *   getOutputDataTypes -> getOutputShapes (fake IExprBuilder) -> supportsFormatCombination ->
 *   configurePlugin(min/opt/max) -> getWorkspaceSize(max) -> per case: onShapeChange -> enqueue -> compare
 *   -> getFieldsToSerialize -> createPlugin(kRUNTIME) -> attachToContext -> enqueue every case again
 *   -> CUDA graph capture of enqueue, replay twice, compare -> negative checks (null workspace,
 *   wrong output shape must return an error).
 *
 *   enqueue_harness <golden_dir> [summary.json]
 * Exit status 0 only if every check passed.
 */
#include "NvInferRuntime.h"
#include "fakeExprBuilder.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace nvinfer1;

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

namespace
{
int gFailures = 0;
int gChecks = 0;
std::vector<std::string> gFailureLines;

void check(bool ok, std::string const& what)
{
    ++gChecks;
    if (!ok)
    {
        ++gFailures;
        gFailureLines.push_back(what);
        std::printf("FAIL %s\n", what.c_str());
    }
}

#define CUDA_OK(call)                                                                                                  \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess)                                                                                         \
        {                                                                                                              \
            std::printf("FAIL CUDA %s at %s:%d: %s\n", #call, __FILE__, __LINE__, cudaGetErrorString(e_));           \
            std::exit(3);                                                                                              \
        }                                                                                                              \
    } while (0)

float halfToFloat(uint16_t h)
{
    uint32_t const sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float v;
    if (exp == 0)
    {
        v = std::ldexp(static_cast<float>(mant), -24);
    }
    else if (exp == 31)
    {
        v = mant ? NAN : INFINITY;
    }
    else
    {
        v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
    }
    return sign ? -v : v;
}

struct TensorFile
{
    std::string file, dtype;
    std::vector<int64_t> dims;
    std::vector<unsigned char> bytes;
    size_t elementSize() const { return dtype == "float16" ? 2 : 4; }
    size_t count() const
    {
        size_t n = 1;
        for (auto d : dims)
        {
            n *= static_cast<size_t>(d);
        }
        return n;
    }
    float at(size_t i) const
    {
        if (dtype == "float16")
        {
            uint16_t h;
            std::memcpy(&h, bytes.data() + 2 * i, 2);
            return halfToFloat(h);
        }
        float f;
        std::memcpy(&f, bytes.data() + 4 * i, 4);
        return f;
    }
};

struct Case
{
    std::string name;
    std::vector<TensorFile> inputs;
    TensorFile output;
};

struct Group
{
    std::string name, op, dtype;
    std::vector<std::pair<std::string, int32_t>> attrs;
    int32_t nbInputs = 0;
    double atol = 0, rtol = 0;
    std::vector<std::vector<int64_t>> maxDims;
    std::vector<Case> cases;
};

TensorFile readTensorTokens(std::istringstream& ls, std::string const& dir)
{
    TensorFile t;
    int32_t rank;
    ls >> t.file >> t.dtype >> rank;
    t.dims.resize(static_cast<size_t>(rank));
    for (auto& d : t.dims)
    {
        ls >> d;
    }
    std::ifstream f(dir + "/" + t.file, std::ios::binary);
    t.bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    if (t.bytes.size() != t.count() * t.elementSize())
    {
        std::printf("FAIL golden file %s has %zu bytes, expected %zu\n", t.file.c_str(), t.bytes.size(),
            t.count() * t.elementSize());
        std::exit(2);
    }
    return t;
}

std::vector<Group> readGolden(std::string const& dir)
{
    std::vector<Group> groups;
    std::ifstream in(dir + "/cases.txt");
    std::string line;
    while (std::getline(in, line))
    {
        std::istringstream ls(line);
        std::string kind;
        ls >> kind;
        if (kind == "group")
        {
            Group g;
            int32_t nAttrs, nCases;
            ls >> g.name >> g.op >> g.dtype >> nAttrs;
            for (int32_t i = 0; i < nAttrs; ++i)
            {
                std::string k;
                int32_t v;
                ls >> k >> v;
                g.attrs.emplace_back(k, v);
            }
            ls >> g.nbInputs >> nCases >> g.atol >> g.rtol;
            groups.push_back(g);
        }
        else if (kind == "maxdims")
        {
            int32_t rank;
            while (ls >> rank)
            {
                std::vector<int64_t> d(static_cast<size_t>(rank));
                for (auto& x : d)
                {
                    ls >> x;
                }
                groups.back().maxDims.push_back(d);
            }
        }
        else if (kind == "case")
        {
            Case c;
            ls >> c.name;
            for (int32_t i = 0; i < groups.back().nbInputs; ++i)
            {
                c.inputs.push_back(readTensorTokens(ls, dir));
            }
            c.output = readTensorTokens(ls, dir);
            groups.back().cases.push_back(c);
        }
    }
    return groups;
}

Dims toDims(std::vector<int64_t> const& v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    for (size_t i = 0; i < v.size(); ++i)
    {
        d.d[i] = v[i];
    }
    return d;
}
DataType toType(std::string const& s) { return s == "float16" ? DataType::kHALF : DataType::kFLOAT; }

IPluginV3OneBuild* build(IPluginV3* p) { return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD)); }
IPluginV3OneRuntime* runtime(IPluginV3* p) { return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME)); }

// Device buffers for one case.
struct DeviceCase
{
    std::vector<void*> inputs;
    void* output = nullptr;
    size_t outputBytes = 0;
    std::vector<PluginTensorDesc> inDesc;
    PluginTensorDesc outDesc{};
    ~DeviceCase()
    {
        for (void* p : inputs)
        {
            cudaFree(p);
        }
        cudaFree(output);
    }
};

void upload(Case const& c, DeviceCase& d)
{
    for (auto const& t : c.inputs)
    {
        void* p = nullptr;
        CUDA_OK(cudaMalloc(&p, std::max<size_t>(t.bytes.size(), 1)));
        CUDA_OK(cudaMemcpy(p, t.bytes.data(), t.bytes.size(), cudaMemcpyHostToDevice));
        d.inputs.push_back(p);
        PluginTensorDesc desc{};
        desc.dims = toDims(t.dims);
        desc.type = toType(t.dtype);
        desc.format = TensorFormat::kLINEAR;
        d.inDesc.push_back(desc);
    }
    d.outputBytes = c.output.bytes.size();
    CUDA_OK(cudaMalloc(&d.output, std::max<size_t>(d.outputBytes, 1)));
    d.outDesc.dims = toDims(c.output.dims);
    d.outDesc.type = toType(c.output.dtype);
    d.outDesc.format = TensorFormat::kLINEAR;
}

// Returns the worst |out - golden| / (atol + rtol |golden|) ratio (<= 1 passes) and counts NaNs.
double compare(Case const& c, DeviceCase const& d, Group const& g, double* maxAbs)
{
    TensorFile got = c.output;
    CUDA_OK(cudaMemcpy(got.bytes.data(), d.output, d.outputBytes, cudaMemcpyDeviceToHost));
    double worst = 0;
    *maxAbs = 0;
    for (size_t i = 0; i < got.count(); ++i)
    {
        double const want = c.output.at(i), have = got.at(i);
        double const err = std::fabs(have - want);
        if (std::isnan(have) || std::isnan(err))
        {
            return INFINITY;
        }
        *maxAbs = std::max(*maxAbs, err);
        double const allowed = g.atol + g.rtol * std::fabs(want);
        worst = std::max(worst, allowed > 0 ? err / allowed : (err > 0 ? INFINITY : 0.0));
    }
    return worst;
}

std::string fmt(double v)
{
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.3g", v);
    return buf;
}

IPluginCreatorV3One* findCreator(std::string const& op)
{
    int32_t n = 0;
    IPluginCreatorInterface* const* list = getCreators(n);
    for (int32_t i = 0; i < n; ++i)
    {
        if (std::string(list[i]->getInterfaceInfo().kind) != "PLUGIN CREATOR_V3ONE")
        {
            continue;
        }
        auto* c = static_cast<IPluginCreatorV3One*>(list[i]);
        if (op == c->getPluginName() && std::string(c->getPluginVersion()) == "1")
        {
            return c;
        }
    }
    return nullptr;
}

int32_t runCase(IPluginV3* plugin, DeviceCase& d, void* workspace, cudaStream_t stream)
{
    IPluginV3OneRuntime* rt = runtime(plugin);
    int32_t rc = rt->onShapeChange(d.inDesc.data(), static_cast<int32_t>(d.inDesc.size()), &d.outDesc, 1);
    if (rc != 0)
    {
        return rc;
    }
    void* outs[1] = {d.output};
    return rt->enqueue(d.inDesc.data(), &d.outDesc, d.inputs.data(), outs, workspace, stream);
}

std::string runGroup(Group const& g, cudaStream_t stream)
{
    std::string const tag = g.name + ": ";
    IPluginCreatorV3One* creator = findCreator(g.op);
    check(creator != nullptr, tag + "creator found through getCreators");
    if (!creator)
    {
        return "";
    }
    // Fields exactly as the ONNX parser passes INT attributes: kINT32, length 1.
    std::vector<int32_t> values;
    for (auto const& a : g.attrs)
    {
        values.push_back(a.second);
    }
    std::vector<PluginField> fields;
    for (size_t i = 0; i < g.attrs.size(); ++i)
    {
        fields.emplace_back(g.attrs[i].first.c_str(), &values[i], PluginFieldType::kINT32, 1);
    }
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
    IPluginV3* plugin = creator->createPlugin(g.name.c_str(), &fc, TensorRTPhase::kBUILD);
    check(plugin != nullptr, tag + "createPlugin(kBUILD)");
    if (!plugin)
    {
        return "";
    }
    IPluginV3OneBuild* bld = build(plugin);
    check(bld && runtime(plugin) && plugin->getCapabilityInterface(PluginCapabilityType::kCORE), tag + "capabilities");

    int32_t const nbIn = g.nbInputs;
    std::vector<DataType> inTypes;
    for (auto const& t : g.cases[0].inputs)
    {
        inTypes.push_back(toType(t.dtype));
    }
    DataType outType = DataType::kINT8;
    check(bld->getOutputDataTypes(&outType, 1, inTypes.data(), nbIn) == 0 && outType == toType(g.dtype),
        tag + "getOutputDataTypes gives the activation type");

    // Output shapes of every case through the expression builder.
    for (auto const& c : g.cases)
    {
        vmamba_test::FakeExprBuilder eb;
        std::vector<DimsExprs> ex(static_cast<size_t>(nbIn));
        for (int32_t i = 0; i < nbIn; ++i)
        {
            ex[i].nbDims = static_cast<int32_t>(c.inputs[i].dims.size());
            for (int32_t k = 0; k < ex[i].nbDims; ++k)
            {
                ex[i].d[k] = eb.symbol(c.inputs[i].dims[k]);
            }
        }
        DimsExprs out{};
        bool ok = bld->getOutputShapes(ex.data(), nbIn, nullptr, 0, &out, 1, eb) == 0
            && out.nbDims == static_cast<int32_t>(c.output.dims.size());
        for (int32_t k = 0; ok && k < out.nbDims; ++k)
        {
            ok = vmamba_test::FakeExprBuilder::valueOf(out.d[k]) == c.output.dims[k];
        }
        check(ok, tag + c.name + " getOutputShapes matches the reference's output shape");
    }

    // Formats: TensorRT asks position by position with the types of this network.
    std::vector<DynamicPluginTensorDesc> io(static_cast<size_t>(nbIn + 1));
    for (int32_t i = 0; i <= nbIn; ++i)
    {
        io[i].desc.type = i < nbIn ? inTypes[i] : outType;
        io[i].desc.format = TensorFormat::kLINEAR;
    }
    for (int32_t pos = 0; pos <= nbIn; ++pos)
    {
        check(bld->supportsFormatCombination(pos, io.data(), nbIn, 1), tag + "supportsFormatCombination pos " + std::to_string(pos));
    }

    // configurePlugin with the profile: min = smallest case, opt = first case, max = golden max dims.
    std::vector<DynamicPluginTensorDesc> in(static_cast<size_t>(nbIn));
    for (int32_t i = 0; i < nbIn; ++i)
    {
        std::vector<int64_t> mn = g.cases[0].inputs[i].dims;
        for (auto const& c : g.cases)
        {
            for (size_t k = 0; k < mn.size(); ++k)
            {
                mn[k] = std::min(mn[k], c.inputs[i].dims[k]);
            }
        }
        in[i].desc.dims = toDims(g.maxDims[i]);
        for (int32_t k = 0; k < in[i].desc.dims.nbDims; ++k)
        {
            if (mn[k] != g.maxDims[i][k])
            {
                in[i].desc.dims.d[k] = -1;  // dynamic in this profile
            }
        }
        in[i].desc.type = inTypes[i];
        in[i].desc.format = TensorFormat::kLINEAR;
        in[i].min = toDims(mn);
        in[i].opt = toDims(g.cases[0].inputs[i].dims);
        in[i].max = toDims(g.maxDims[i]);
    }
    DynamicPluginTensorDesc out{};
    out.desc.dims = toDims(g.cases[0].output.dims);
    for (int32_t k = 0; k < out.desc.dims.nbDims; ++k)
    {
        out.desc.dims.d[k] = -1;
    }
    out.desc.type = outType;
    out.desc.format = TensorFormat::kLINEAR;
    check(bld->configurePlugin(in.data(), nbIn, &out, 1) == 0, tag + "configurePlugin");
    size_t const workspaceBytes = bld->getWorkspaceSize(in.data(), nbIn, &out, 1);
    void* workspace = nullptr;
    if (workspaceBytes > 0)
    {
        CUDA_OK(cudaMalloc(&workspace, workspaceBytes));
    }

    std::vector<std::unique_ptr<DeviceCase>> dev;
    std::string results;
    double worstAll = 0;
    for (auto const& c : g.cases)
    {
        dev.emplace_back(new DeviceCase);
        upload(c, *dev.back());
    }
    auto runAll = [&](IPluginV3* p, char const* stage) {
        for (size_t i = 0; i < g.cases.size(); ++i)
        {
            CUDA_OK(cudaMemsetAsync(dev[i]->output, 0xff, dev[i]->outputBytes, stream));  // NaN poison
            int32_t rc = runCase(p, *dev[i], workspace, stream);
            CUDA_OK(cudaStreamSynchronize(stream));
            double maxAbs = 0;
            double worst = rc == 0 ? compare(g.cases[i], *dev[i], g, &maxAbs) : INFINITY;
            worstAll = std::max(worstAll, worst);
            check(rc == 0 && worst <= 1.0,
                tag + g.cases[i].name + " [" + stage + "] rc=" + std::to_string(rc) + " max|err|=" + fmt(maxAbs)
                    + " worst err/tol=" + fmt(worst));
        }
    };
    runAll(plugin, "build-phase plugin");

    // Engine serialization round trip and execution-context attach.
    PluginFieldCollection const* ser = runtime(plugin)->getFieldsToSerialize();
    IPluginV3* restored = ser ? creator->createPlugin(g.name.c_str(), ser, TensorRTPhase::kRUNTIME) : nullptr;
    check(restored != nullptr, tag + "createPlugin(kRUNTIME) from getFieldsToSerialize");
    vmamba_test::FakeResourceContext ctx;
    IPluginV3* attached = restored ? runtime(restored)->attachToContext(&ctx) : nullptr;
    check(attached != nullptr && attached != restored, tag + "attachToContext clones");
    delete restored;  // the context's clone must not depend on it
    if (attached)
    {
        runAll(attached, "deserialized+attached");

        // CUDA graph: capture enqueue (global mode: any forbidden call such as cudaMalloc or a sync
        // invalidates the capture), replay twice into NaN-poisoned outputs.
        DeviceCase& d = *dev.back();
        CUDA_OK(cudaMemset(d.output, 0xff, d.outputBytes));
        cudaGraph_t graph = nullptr;
        CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        int32_t rc = runCase(attached, d, workspace, stream);
        cudaError_t endErr = cudaStreamEndCapture(stream, &graph);
        check(rc == 0 && endErr == cudaSuccess && graph != nullptr,
            tag + "enqueue captured in a CUDA graph (rc=" + std::to_string(rc) + ", " + cudaGetErrorString(endErr) + ")");
        if (graph)
        {
            cudaGraphExec_t exec = nullptr;
            CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
            for (int rep = 0; rep < 2; ++rep)
            {
                CUDA_OK(cudaMemsetAsync(d.output, 0xff, d.outputBytes, stream));
                CUDA_OK(cudaGraphLaunch(exec, stream));
                CUDA_OK(cudaStreamSynchronize(stream));
                double maxAbs = 0;
                double worst = compare(g.cases.back(), d, g, &maxAbs);
                check(worst <= 1.0, tag + "CUDA graph replay " + std::to_string(rep) + " max|err|=" + fmt(maxAbs));
            }
            CUDA_OK(cudaGraphExecDestroy(exec));
            CUDA_OK(cudaGraphDestroy(graph));
        }

        // Errors are reported, never launched: wrong output shape, and null workspace when needed.
        PluginTensorDesc wrong = d.outDesc;
        wrong.dims.d[wrong.dims.nbDims - 1] += 1;
        void* outs[1] = {d.output};
        check(runtime(attached)->enqueue(d.inDesc.data(), &wrong, d.inputs.data(), outs, workspace, stream) != 0,
            tag + "enqueue rejects a wrong output shape");
        if (workspaceBytes > 0)
        {
            check(runtime(attached)->enqueue(d.inDesc.data(), &d.outDesc, d.inputs.data(), outs, nullptr, stream) != 0,
                tag + "enqueue rejects a missing workspace");
        }
        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaGetLastError());
        delete attached;
    }
    delete plugin;
    cudaFree(workspace);
    std::printf("group %-20s op %-15s %-8s cases %zu workspace %zu B worst err/tol %s\n", g.name.c_str(), g.op.c_str(),
        g.dtype.c_str(), g.cases.size(), workspaceBytes, fmt(worstAll).c_str());
    return "{\"group\":\"" + g.name + "\",\"op\":\"" + g.op + "\",\"dtype\":\"" + g.dtype + "\",\"cases\":"
        + std::to_string(g.cases.size()) + ",\"workspace_bytes\":" + std::to_string(workspaceBytes)
        + ",\"worst_err_over_tol\":" + fmt(std::isinf(worstAll) ? 1e30 : worstAll) + "}";
}
} // namespace

int main(int argc, char** argv)
{
    if (argc < 2)
    {
        std::fprintf(stderr, "usage: enqueue_harness <golden_dir> [summary.json]\n");
        return 64;
    }
    std::vector<Group> groups = readGolden(argv[1]);
    if (groups.empty())
    {
        std::printf("FAIL no golden groups in %s\n", argv[1]);
        return 2;
    }
    cudaDeviceProp prop{};
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    std::string json = "{\"device\":\"" + std::string(prop.name) + "\",\"groups\":[";
    for (size_t i = 0; i < groups.size(); ++i)
    {
        json += (i ? "," : "") + runGroup(groups[i], stream);
    }
    CUDA_OK(cudaStreamDestroy(stream));
    json += "],\"checks\":" + std::to_string(gChecks) + ",\"failures\":" + std::to_string(gFailures) + "}";
    if (argc > 2)
    {
        std::ofstream(argv[2]) << json << "\n";
    }
    std::printf("%s: %d checks, %d failures\n", gFailures ? "HARNESS FAILED" : "HARNESS PASSED", gChecks, gFailures);
    return gFailures ? 1 : 0;
}
