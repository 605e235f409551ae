#!/usr/bin/env bash
# One call on a CUDA machine: build the kernels + plugin library + harness, make the golden data,
# run the IPluginV3 enqueue harness, then the same harness under compute-sanitizer (memcheck with
# leak check, and racecheck). No TensorRT library is needed, only its headers in
# third_party/TensorRT/include (trt_plugins_cpp/tools/get_trt_headers.sh) or TensorRT_ROOT.
#
#   trt_plugins_cpp/tests/run_device_plugins.sh            # logs + JSON into $OUT (or build/device_plugins/out)
# Env: VMAMBA_DEVICE_BUILD_DIR, VMAMBA_PLUGIN_GOLDEN (reuse golden data), CUDA_ARCH (default 90),
#      SKIP_SANITIZER=1.
# Exit status: 0 only if the build, the harness and every sanitizer run passed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"
build="${VMAMBA_DEVICE_BUILD_DIR:-${root}/build/device_plugins}"
out="${OUT:-${build}/out}"
golden="${VMAMBA_PLUGIN_GOLDEN:-${root}/build/plugin_golden}"
arch="${CUDA_ARCH:-90}"
trt_root="${TensorRT_ROOT:-${root}/third_party/TensorRT}"
mkdir -p "${out}" "${build}"
summary="${out}/device_summary.txt"
: > "${summary}"
note() { echo "$*" | tee -a "${summary}"; }

if [[ ! -f "${trt_root}/include/NvInferRuntime.h" ]]; then
  note "FAIL: TensorRT headers not found under ${trt_root}/include (run trt_plugins_cpp/tools/get_trt_headers.sh)"
  exit 2
fi
export PATH="${PATH}:/usr/local/cuda/bin"
note "date: $(date -u +%FT%TZ)"
note "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
note "nvcc: $(nvcc --version | tail -1)"
note "cmake: $(cmake --version | head -1)"

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
t0=$(date +%s)
if ! cmake -S "${root}" -B "${build}" "${generator[@]}" -DTensorRT_ROOT="${trt_root}" \
      -DCMAKE_CUDA_ARCHITECTURES="${arch}" -DCMAKE_BUILD_TYPE=RelWithDebInfo > "${out}/build.log" 2>&1 \
   || ! cmake --build "${build}" -j "$(nproc)" --target vmamba_trt_plugins enqueue_harness registry_probe \
      >> "${out}/build.log" 2>&1; then
  note "FAIL: build (see build.log); last lines:"
  tail -40 "${out}/build.log" | tee -a "${summary}"
  exit 3
fi
note "build: ok in $(( $(date +%s) - t0 )) s"
harness="$(find "${build}" -name enqueue_harness -type f -perm -u+x | head -1)"
probe="$(find "${build}" -name registry_probe -type f -perm -u+x | head -1)"
plugins="$(find "${build}" -name libvmamba_trt_plugins.so -type f | head -1)"

if [[ ! -f "${golden}/cases.txt" ]]; then
  PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}" python3 "${root}/tests/make_plugin_golden.py" --out "${golden}" 2>&1 | tee -a "${summary}" || { note "FAIL: golden"; exit 4; }
fi

status=0
"${harness}" "${golden}" "${out}/harness.json" > "${out}/harness.log" 2>&1
rc=$?
grep -E "^(device|group|FAIL|HARNESS)" "${out}/harness.log" | tee -a "${summary}"
note "harness exit: ${rc}"
(( rc == 0 )) || status=1

# The creator fuzz again, on this machine's build (no TensorRT library involved).
VMAMBA_TRT_PLUGINS_QUIET=1 "${probe}" fuzz "${plugins}" 20000 5 > "${out}/fuzz.json" 2>&1
rc=$?
note "creator fuzz exit: ${rc} $(cat "${out}/fuzz.json")"
(( rc == 0 )) || status=1

if [[ "${SKIP_SANITIZER:-0}" != "1" ]]; then
  for tool in memcheck racecheck; do
    extra=()
    [[ "${tool}" == memcheck ]] && extra=(--leak-check full)
    timeout 300 compute-sanitizer --tool "${tool}" "${extra[@]}" --error-exitcode 9 "${harness}" "${golden}" \
      > "${out}/${tool}.log" 2>&1
    rc=$?
    note "compute-sanitizer ${tool} exit: ${rc}; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY' "${out}/${tool}.log" | tr '\n' ' ')"
    grep -E "HARNESS" "${out}/${tool}.log" | tee -a "${summary}"
    (( rc == 0 )) || { status=1; grep -m 20 -E "=========" "${out}/${tool}.log" | tee -a "${summary}"; }
  done
fi
note "overall: $([[ ${status} == 0 ]] && echo PASSED || echo FAILED)"
exit "${status}"
