#!/usr/bin/env bash
# One device call: build the kernel library, run the sanitizer driver under compute-sanitizer
# (memcheck, racecheck), the GPU tests, and the benchmark. Logs go to $OUT (or ./out-kernels).
#   bash benchmarks/run_device_kernels.sh [--quick-bench] [--profile]
# --profile adds an Nsight Compute pass (ncu) over benchmarks/profile_kernels.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-$PWD/out-kernels}"
mkdir -p "$OUT_DIR"
source benchmarks/device_common.sh  # step, sanitize_kernel_driver
status=0

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1
nvcc --version | tail -1

step "build (trt_plugins_cpp/kernels on its own; the top-level CMake adds the TensorRT plugins)"
BUILD=build/device-kernels
if ! { cmake -S trt_plugins_cpp/kernels -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90-real}" \
        > "$OUT_DIR/build.log" 2>&1 && cmake --build "$BUILD" -j16 --target vmamba_kernels vmk_sanitize_driver \
        >> "$OUT_DIR/build.log" 2>&1; }; then
    tail -40 "$OUT_DIR/build.log"; echo "BUILD FAILED"; exit 1
fi
grep -i "warning\|spill" "$OUT_DIR/build.log" | grep -v "^--" | head -10
LIB=$(find "$BUILD" -name libvmamba_kernels.so | head -1)
DRIVER=$(find "$BUILD" -name vmk_sanitize_driver -type f | head -1)
export VMAMBA_KERNELS_LIB="$PWD/$LIB"
echo "library: $VMAMBA_KERNELS_LIB"

step "sanitizer driver (plain)"
"$DRIVER" || status=1
sanitize_kernel_driver "$DRIVER" "$OUT_DIR/sanitizer.log" || status=1

step "GPU tests"
python3 -m pytest -q -m gpu tests/test_kernels_gpu.py -rs -s -p no:cacheprovider > "$OUT_DIR/pytest.log" 2>&1
rc=$?
grep -E "rel err" "$OUT_DIR/pytest.log" | sort -t: -k2 | awk '{print}' > "$OUT_DIR/errors.txt"
grep -E "passed|failed|error" "$OUT_DIR/pytest.log" | tail -3
grep -E "^(FAILED|ERROR)" "$OUT_DIR/pytest.log" | head -20
echo "largest fp32 / fp16 errors:"
for dt in float32 float16; do grep "$dt" "$OUT_DIR/errors.txt" | awk '{print $NF, $0}' | sort -g | tail -2; done
[ $rc -eq 0 ] || status=1

step "benchmark"
BENCH_ARGS=""
PROFILE=0
for arg in "$@"; do
    [ "$arg" = "--quick-bench" ] && BENCH_ARGS="--quick"
    [ "$arg" = "--profile" ] && PROFILE=1
done
python3 benchmarks/bench_kernels.py $BENCH_ARGS --json "$OUT_DIR/bench.json" --md "$OUT_DIR/bench.md" || status=1
if [ $PROFILE -eq 1 ]; then
    step "Nsight Compute (VMamba-T stages 0 and 3, batch 128, fp16)"
    ncu --clock-control none --kernel-name regex:"ss2d|vmeanba|quartermap" --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section WarpStateStats --section MemoryWorkloadAnalysis \
        python3 benchmarks/profile_kernels.py > "$OUT_DIR/ncu.txt" 2>&1 || echo "ncu failed"
    grep -E "^  [a-zA-Z_].*\(|Duration|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Stall" "$OUT_DIR/ncu.txt" | cut -c1-150 | head -120
fi
echo "run_device_kernels.sh: exit status $status"
exit $status
