# Steps shared by the GPU-machine scripts. Sourced, not run. The builds: for the scripts that compare
# with the official VMamba code (benchmarks/run_device_side_by_side.sh, benchmarks/run_device_backbone.sh);
# the sanitizer pass over the kernel driver: for benchmarks/run_device_kernels.sh and run_device_ab.sh.
#
# The caller sets OUT_DIR (logs go there) and may set OFFICIAL (default third_party/VMamba) and
# OFLEX_BUILD (forward: the fast forward-only build; setup: the official setup.py, fwd + bwd).
# Build folders: build/side-by-side-kernels (this project's kernel library, sm_90 only) and
# build/official-oflex (the official oflex extension); both are reused by a later call on the same
# machine when the sources did not change.

OFFICIAL="${OFFICIAL:-third_party/VMamba}"
OFLEX_BUILD="${OFLEX_BUILD:-forward}"
OFLEX_WORK_DIR=build/official-oflex
KERNELS_BUILD=build/side-by-side-kernels
JOBS=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() { echo; echo "=== $* ($(date -u +%H:%M:%S), ${SECONDS} s)"; }

# compute-sanitizer memcheck and racecheck over the kernel library's driver DRIVER
# (trt_plugins_cpp/kernels/tests/vmk_sanitize_driver.cpp): each tool's log is appended to LOG, its
# last lines and exit code printed. Returns 1 if either tool failed.
sanitize_kernel_driver() {
    local driver=$1 log=$2 tool rc failed=0
    for tool in memcheck racecheck; do
        step "compute-sanitizer --tool $tool"
        compute-sanitizer --tool "$tool" --error-exitcode 3 "$driver" > "/tmp/sanitizer_$tool.log" 2>&1
        rc=$?
        cat "/tmp/sanitizer_$tool.log" >> "$log"
        tail -4 "/tmp/sanitizer_$tool.log"
        echo "compute-sanitizer $tool exit code $rc"
        [ $rc -eq 0 ] || failed=1
    done
    return $failed
}

device_info() {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    nvcc --version | tail -1
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
}

# Exit 2 (with the fix) when the official checkout is not there.
require_official_checkout() {
    if [ ! -d "$OFFICIAL/classification/models" ] || [ ! -d "$OFFICIAL/kernels/selective_scan" ]; then
        echo "official VMamba checkout not found at $OFFICIAL (expected classification/models and kernels/selective_scan)."
        echo "Copy the needed files with: python benchmarks/official.py prepare --official /path/to/VMamba --dest third_party/VMamba"
        echo "and name third_party/VMamba in the device call's carry list."
        exit 2
    fi
}

# The official oflex extension, in the background (log: $OUT_DIR/oflex_build.log); sets oflex_pid.
start_oflex_build() {
    step "build the official oflex extension in the background (log: oflex_build.log)"
    python3 benchmarks/official.py build --official "$OFFICIAL" --work-dir "$OFLEX_WORK_DIR" --jobs "$JOBS" \
        --build "$OFLEX_BUILD" > "$OUT_DIR/oflex_build.log" 2>&1 &
    oflex_pid=$!
}

# This project's kernel library (log: $OUT_DIR/kernels_build.log); exports VMAMBA_KERNELS_LIB.
# Returns 1 when it did not build. A folder configured before is only rebuilt (make reruns cmake when a
# CMakeLists.txt changed); if that fails, the folder is configured afresh.
configure_kernel_library() {
    cmake -S trt_plugins_cpp/kernels -B "$KERNELS_BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90-real
}
build_kernel_library() {
    step "build this project's kernel library (log: kernels_build.log)"
    local log="$OUT_DIR/kernels_build.log"
    : > "$log"
    if [ -f "$KERNELS_BUILD/CMakeCache.txt" ] \
            && cmake --build "$KERNELS_BUILD" -j "$JOBS" --target vmamba_kernels >> "$log" 2>&1; then
        echo "rebuilt in the configured folder $KERNELS_BUILD"
    elif ! { rm -rf "$KERNELS_BUILD" && configure_kernel_library \
             && cmake --build "$KERNELS_BUILD" -j "$JOBS" --target vmamba_kernels; } >> "$log" 2>&1; then
        tail -40 "$log"
        echo "kernel library build FAILED"
        return 1
    fi
    local lib
    lib=$(find "$KERNELS_BUILD" -name 'libvmamba_kernels*.so' | head -1)
    export VMAMBA_KERNELS_LIB="$PWD/$lib"
    echo "library: $VMAMBA_KERNELS_LIB (built at ${SECONDS} s)"
}

# Wait for start_oflex_build; if the forward-only build failed, try the official setup.py build.
# Returns official.py's exit status (0 ok, 3 build, 5 import); OFLEX_BUILD names the build used.
finish_oflex_build() {
    wait "$oflex_pid"
    local rc=$?
    tail -3 "$OUT_DIR/oflex_build.log"
    if [ $rc -eq 3 ] && [ "$OFLEX_BUILD" = forward ]; then
        tail -30 "$OUT_DIR/oflex_build.log"
        step "forward-only oflex build FAILED: falling back to the official setup.py build"
        OFLEX_BUILD=setup
        python3 benchmarks/official.py build --official "$OFFICIAL" --work-dir "$OFLEX_WORK_DIR" --jobs "$(nproc)" \
            --build setup >> "$OUT_DIR/oflex_build.log" 2>&1
        rc=$?
        tail -3 "$OUT_DIR/oflex_build.log"
    fi
    if [ $rc -ne 0 ]; then
        tail -40 "$OUT_DIR/oflex_build.log"
        echo "official oflex build FAILED (exit $rc)"
    fi
    return $rc
}

# Everything a side-by-side script needs before its benchmark: the device line, the official
# checkout, and both builds (in parallel). Exits with the documented status when a step fails.
prepare_side_by_side() {
    step "device"
    device_info
    require_official_checkout
    start_oflex_build
    if ! build_kernel_library; then
        wait "$oflex_pid"
        exit 1
    fi
    finish_oflex_build || exit $?
}
