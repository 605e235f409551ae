#!/usr/bin/env bash
# One GPU-machine call: build the kernel library, run the fast path's GPU parity tests, then the
# end-to-end benchmark (benchmarks/bench_e2e.py). About 6-8 minutes on an H100.
#
#   bash benchmarks/run_device_e2e.sh                 # full benchmark grid
#   E2E_ARGS="--profile --variants" bash benchmarks/run_device_e2e.sh   # + profile, compile and TF32 rows
#   E2E_ARGS="--quick --explore --compile" bash benchmarks/run_device_e2e.sh
#   E2E_SKIP_TESTS=1 ...                              # benchmark only
# Results (JSON, plot, logs) go to $OUT (default out/e2e).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/e2e}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BUILD=${BUILD_DIR:-build}
start=$SECONDS

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

echo "== build the kernel library ($BUILD)"
if ! { cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
        && { cmake --build "$BUILD" -j "$(nproc)" --target vmamba_kernels 2>/dev/null \
             || cmake --build "$BUILD" -j "$(nproc)"; }; } > /tmp/e2e_build.log 2>&1; then
  tail -60 /tmp/e2e_build.log
  echo "kernel library build FAILED"
  exit 1
fi
echo "built in $((SECONDS - start)) s: $(find "$BUILD" -name 'libvmamba_kernels*.so' | head -3 | tr '\n' ' ')"
# plugins/kernels.py looks for the library in the build folder; name it explicitly too
lib=$(find "$BUILD" -name 'libvmamba_kernels*.so' | head -1)
[ -n "$lib" ] && export VMAMBA_KERNELS_LIB="$PWD/$lib"
python3 -c 'from exporter.runtime import kernel_status; print("kernels:", kernel_status())'

rc_tests=0
if [ -z "${E2E_SKIP_TESTS:-}" ]; then
  echo "== GPU parity of the fast runtime (tests/test_runtime_gpu.py)"
  python3 -m pytest -q -m gpu tests/test_runtime_gpu.py -p no:cacheprovider 2>&1 | tee "$OUT/test_runtime_gpu.log"
  rc_tests=${PIPESTATUS[0]}
  echo "tests done at $((SECONDS - start)) s (exit $rc_tests)"
fi

echo "== end-to-end benchmark"
# shellcheck disable=SC2086
python3 benchmarks/bench_e2e.py --out "$OUT" ${E2E_ARGS:-} 2>&1 | tee "$OUT/bench_e2e.log"
rc_bench=${PIPESTATUS[0]}
echo "total $((SECONDS - start)) s; tests exit $rc_tests, benchmark exit $rc_bench"
exit $(( rc_tests != 0 || rc_bench != 0 ))
