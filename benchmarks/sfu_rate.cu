// Throughput of the special-function unit (ex2.approx.ftz.f32, the MUFU.EX2 behind every exp in the
// kernels) and of FP32 FMA on this GPU, for the bounds in docs/KERNELS.md: each thread runs 8
// independent chains, so the rate is the pipe's, not the latency's.
//   nvcc -O3 -arch=sm_90 -o build/sfu_rate benchmarks/sfu_rate.cu && build/sfu_rate
#include <cuda_runtime.h>

#include <cstdio>

constexpr int kChains = 8, kIters = 4096;

__global__ void ex2_kernel(float* out, float seed)
{
    float v[kChains];
    for (int c = 0; c < kChains; ++c) v[c] = seed * (threadIdx.x + c) * 1e-9f;
    for (int i = 0; i < kIters; ++i)
#pragma unroll
        for (int c = 0; c < kChains; ++c) asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(v[c]));
    float s = 0.f;
    for (int c = 0; c < kChains; ++c) s += v[c];
    if (s == 12345.f) out[0] = s;  // keeps the chains alive
}

__global__ void ffma_kernel(float* out, float seed)
{
    float v[kChains];
    for (int c = 0; c < kChains; ++c) v[c] = seed * (threadIdx.x + c);
    for (int i = 0; i < kIters; ++i)
#pragma unroll
        for (int c = 0; c < kChains; ++c) asm volatile("fma.rn.f32 %0, %0, 0f3F7FFFFF, 0f33800000;" : "+f"(v[c]));
    float s = 0.f;
    for (int c = 0; c < kChains; ++c) s += v[c];
    if (s == 12345.f) out[0] = s;
}

template <typename K>
double rate(K kernel, int blocks, int threads, float* out)
{
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    kernel<<<blocks, threads>>>(out, 1.f);  // warm-up
    cudaEventRecord(a);
    kernel<<<blocks, threads>>>(out, 1.f);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, a, b);
    return (double)blocks * threads * kChains * kIters / (ms * 1e-3);
}

int main()
{
    int dev = 0, sms = 0, khz = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev);
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, dev);
    float* out = nullptr;
    cudaMalloc(&out, sizeof(float));
    const int threads = 256, blocks = sms * 8;
    const double ex2 = rate(ex2_kernel, blocks, threads, out), fma = rate(ffma_kernel, blocks, threads, out);
    if (cudaDeviceSynchronize() != cudaSuccess) {
        std::printf("sfu_rate: CUDA error\n");
        return 1;
    }
    const double per_clk = 1e3 * khz * sms;  // SM-cycles per second at the reported clock
    std::printf("%s, %d SMs, reported max clock %.0f MHz\n", prop.name, sms, khz / 1e3);
    std::printf("ex2.approx.ftz.f32: %.3g /s = %.1f per SM per cycle at that clock\n", ex2, ex2 / per_clk);
    std::printf("fma.rn.f32:         %.3g /s = %.1f per SM per cycle at that clock\n", fma, fma / per_clk);
    return 0;
}
