#!/usr/bin/env bash
# One GPU-machine call: the official VMamba code and this project, side by side in one process
# (benchmarks/bench_side_by_side.py): the per-shape kernel table and the end-to-end table.
#
# Needs the official checkout (only the files benchmarks/official.py lists) in a git-ignored folder
# of the repo, carried to the device machine:
#   python benchmarks/official.py prepare --official /path/to/VMamba --dest third_party/VMamba
#
#   bash benchmarks/run_device_side_by_side.sh [bench_side_by_side.py options, e.g. --only kernels]
#   OFFICIAL=path/to/checkout SBS_BUDGET_S=400 bash benchmarks/run_device_side_by_side.sh
#
# Builds, in parallel: this project's kernel library (build/side-by-side-kernels, sm_90 only) and
# the official oflex extension (build/official-oflex, forward kernels, sm_90 only; reused when the
# sources did not change; if that forward-only build fails, the official setup.py build instead;
# OFLEX_BUILD=setup asks for that one directly). Then runs the benchmark with what is left of a 560 s budget
# (SBS_BUDGET_S overrides). Results and logs go to $OUT (default out/side_by_side).
# Exit status: the benchmark's (0 ok, 2 bad input, 3 official build/import failed, 4 no kernels);
# 1 if this project's kernel library did not build; official.py's (3 build, 5 import) if oflex failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-$PWD/out/side_by_side}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OFFICIAL="${OFFICIAL:-third_party/VMamba}"
OFLEX_BUILD="${OFLEX_BUILD:-forward}"   # forward (fast) or setup (the official setup.py, fwd + bwd)
JOBS=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
step() { echo; echo "=== $* ($(date -u +%H:%M:%S), ${SECONDS} s)"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
nvcc --version | tail -1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

if [ ! -d "$OFFICIAL/classification/models" ] || [ ! -d "$OFFICIAL/kernels/selective_scan" ]; then
    echo "official VMamba checkout not found at $OFFICIAL (expected classification/models and kernels/selective_scan)."
    echo "Copy the needed files with: python benchmarks/official.py prepare --official /path/to/VMamba --dest third_party/VMamba"
    echo "and name third_party/VMamba in the device call's carry list."
    exit 2
fi

step "build the official oflex extension in the background (log: oflex_build.log)"
python3 benchmarks/official.py build --official "$OFFICIAL" --work-dir build/official-oflex --jobs "$JOBS" \
    --build "$OFLEX_BUILD" > "$OUT_DIR/oflex_build.log" 2>&1 &
oflex_pid=$!

step "build this project's kernel library (log: kernels_build.log)"
BUILD=build/side-by-side-kernels
if ! { cmake -S trt_plugins_cpp/kernels -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90-real \
        && cmake --build "$BUILD" -j "$JOBS" --target vmamba_kernels; } > "$OUT_DIR/kernels_build.log" 2>&1; then
    tail -40 "$OUT_DIR/kernels_build.log"
    echo "kernel library build FAILED"
    wait "$oflex_pid"
    exit 1
fi
lib=$(find "$BUILD" -name 'libvmamba_kernels*.so' | head -1)
export VMAMBA_KERNELS_LIB="$PWD/$lib"
echo "library: $VMAMBA_KERNELS_LIB (built at ${SECONDS} s)"

wait "$oflex_pid"
oflex_rc=$?
tail -3 "$OUT_DIR/oflex_build.log"
if [ $oflex_rc -eq 3 ] && [ "$OFLEX_BUILD" = forward ]; then
    tail -30 "$OUT_DIR/oflex_build.log"
    step "forward-only oflex build FAILED: falling back to the official setup.py build"
    OFLEX_BUILD=setup
    python3 benchmarks/official.py build --official "$OFFICIAL" --work-dir build/official-oflex --jobs "$(nproc)" \
        --build setup >> "$OUT_DIR/oflex_build.log" 2>&1
    oflex_rc=$?
    tail -3 "$OUT_DIR/oflex_build.log"
fi
if [ $oflex_rc -ne 0 ]; then
    tail -40 "$OUT_DIR/oflex_build.log"
    echo "official oflex build FAILED (exit $oflex_rc)"
    exit $oflex_rc
fi

budget=${SBS_BUDGET_S:-$(( 560 - SECONDS ))}
step "benchmark (budget ${budget} s)"
python3 benchmarks/bench_side_by_side.py --official "$OFFICIAL" --work-dir build/official-oflex \
    --oflex-build "$OFLEX_BUILD" --out "$OUT_DIR" --budget-s "$budget" "$@" 2>&1 | tee "$OUT_DIR/bench_side_by_side.log"
rc=${PIPESTATUS[0]}
echo "run_device_side_by_side.sh: total ${SECONDS} s, benchmark exit $rc"
exit $rc
