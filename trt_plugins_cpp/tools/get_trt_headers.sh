#!/usr/bin/env bash
# Put the TensorRT 11 C++ headers where trt_plugins_cpp/plugins/CMakeLists.txt looks for them:
# <repo>/third_party/TensorRT/include (git-ignored: the headers are NVIDIA's and are never committed).
#
# Usage:
#   trt_plugins_cpp/tools/get_trt_headers.sh                      # clone github.com/NVIDIA/TensorRT (needs network)
#   trt_plugins_cpp/tools/get_trt_headers.sh /usr/local/TensorRT   # a TensorRT install (has include/NvInfer.h)
#   trt_plugins_cpp/tools/get_trt_headers.sh ~/src/TensorRT        # an NVIDIA/TensorRT checkout
#   trt_plugins_cpp/tools/get_trt_headers.sh path/to/repo.git      # a bare mirror of NVIDIA/TensorRT
#   TRT_REF=release/11.1 trt_plugins_cpp/tools/get_trt_headers.sh  # branch or tag to take (default: main)
#
# Alternatively skip this script and configure with -DTensorRT_ROOT=<install or checkout>; CMake also
# searches /usr/include/x86_64-linux-gnu (Debian/Ubuntu libnvinfer-dev) and /usr/local/tensorrt/include.
# Only headers are needed to build the plugins; the self-registering library additionally links
# libnvinfer when CMake finds it (TensorRT_ROOT/lib), otherwise it resolves getPluginRegistry at load time.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${repo_root}/third_party/TensorRT/include"
ref="${TRT_REF:-main}"
src="${1:-}"

copy_dir() {  # copy_dir <dir with NvInfer.h>
  mkdir -p "${dest}"
  cp -r "$1"/. "${dest}/"
}

if [[ -z "${src}" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "${tmp}"' EXIT
  git clone --depth 1 --branch "${ref}" --filter=blob:none --sparse https://github.com/NVIDIA/TensorRT.git "${tmp}/TensorRT"
  git -C "${tmp}/TensorRT" sparse-checkout set include
  copy_dir "${tmp}/TensorRT/include"
elif [[ -f "${src}/include/NvInfer.h" ]]; then
  copy_dir "${src}/include"
elif [[ -f "${src}/NvInfer.h" ]]; then
  copy_dir "${src}"
elif git --git-dir="${src}" rev-parse --verify -q "${ref}" >/dev/null 2>&1 || git --git-dir="${src}" rev-parse --verify -q HEAD >/dev/null 2>&1; then
  git --git-dir="${src}" rev-parse --verify -q "${ref}" >/dev/null 2>&1 || ref=HEAD
  mkdir -p "${dest%/include}"
  git --git-dir="${src}" archive "${ref}" include | tar -x -C "${dest%/include}"
else
  echo "error: ${src} is neither a TensorRT install, a checkout, an include folder nor a git mirror" >&2
  exit 1
fi

version="$(grep -E '^#define (TRT|NV_TENSORRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? +[0-9]+' "${dest}/NvInferVersion.h" | awk '{print $3}' | head -3 | paste -sd. -)"
echo "TensorRT headers (${version:-unknown version}) in ${dest}"
case "${version}" in
  11.*) ;;
  *) echo "warning: these plugins are written for the TensorRT 11 IPluginV3 ABI" >&2 ;;
esac
