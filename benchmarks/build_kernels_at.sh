#!/usr/bin/env bash
# Build this project's kernel library (and the sanitizer driver) at a git revision, for sm_90, on
# any machine with nvcc (no GPU needed): the B side, or the A side, of benchmarks/run_device_ab.sh.
#   bash benchmarks/build_kernels_at.sh REV [CUDA_ARCHS]
# Prints the library's path, build/ab-<rev>/libvmamba_kernels.so (git-ignored: carry it to the device
# machine). The revision is checked out in a temporary git worktree, so the working tree is untouched.
# Exit status: 0 built; 2 bad arguments or unknown revision; 1 the build failed (log beside the library).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    [ $# -lt 1 ] && exit 2 || exit 0
fi
rev=$(git rev-parse --short=10 --verify --quiet "$1^{commit}") || { echo "build_kernels_at: unknown revision '$1'; give a commit, branch or tag of this repository" >&2; exit 2; }
archs="${2:-90-real}"
out="build/ab-$rev"
src=$(mktemp -d /tmp/vmk-ab-XXXXXX)
trap 'git worktree remove --force "$src" > /dev/null 2>&1; rm -rf "$src"' EXIT
git worktree add --detach --quiet "$src" "$rev" || { echo "build_kernels_at: git worktree add failed" >&2; exit 2; }
mkdir -p "$out"
if ! { cmake -S "$src/trt_plugins_cpp/kernels" -B "$out/cmake" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$archs" \
        > "$out/build.log" 2>&1 && cmake --build "$out/cmake" -j"$(nproc)" --target vmamba_kernels vmk_sanitize_driver \
        >> "$out/build.log" 2>&1; }; then
    tail -20 "$out/build.log" >&2; echo "build_kernels_at: the build of $rev failed (log: $out/build.log)" >&2; exit 1
fi
cp "$(find "$out/cmake" -name libvmamba_kernels.so -type f | head -1)" "$out/libvmamba_kernels.so"
cp "$(find "$out/cmake" -name vmk_sanitize_driver -type f | head -1)" "$out/vmk_sanitize_driver"
rm -rf "$out/cmake"
echo "$out/libvmamba_kernels.so"
