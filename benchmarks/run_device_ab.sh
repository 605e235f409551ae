#!/usr/bin/env bash
# One device call: two builds of this project's kernel library timed against each other, for
# development decisions only (the official code is not timed here, so nothing from it is quoted as a
# speed-up over the official code; docs/KERNELS.md).
#   LIB_A=build/ab-<rev>/libvmamba_kernels.so LIB_B=build/ab-<rev>/libvmamba_kernels.so \
#       bash benchmarks/run_device_ab.sh [--tests] [bench_kernels.py options, e.g. --models T-s1l8 --ops ss2d]
# Build the two libraries on the CPU machine with benchmarks/build_kernels_at.sh and carry them.
# Runs bench_kernels.py with A, B, A, B (alternating, so drift hits both; --no-sweep unless options are
# given), then benchmarks/compare_kernels.py over them. --tests first runs the GPU tests on B and,
# where the sanitizer driver sits beside B's library, compute-sanitizer memcheck and racecheck.
# Output in $OUT (default out/ab): a1/a2/b1/b2.json, compare.md, tests.log, sanitizer.log.
# Exit status: 0 done; 2 LIB_A or LIB_B missing; 1 a test, the sanitizer or a benchmark failed.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
for side in LIB_A LIB_B; do
    if [ -z "${!side:-}" ] || [ ! -f "${!side}" ]; then
        echo "run_device_ab: $side='${!side:-}' is not a file; build it with benchmarks/build_kernels_at.sh REV and carry it" >&2
        exit 2
    fi
done
OUT_DIR="${OUT:-$PWD/out/ab}"
mkdir -p "$OUT_DIR"
source benchmarks/device_common.sh  # sanitize_kernel_driver; PYTHONPATH, PYTHONUNBUFFERED
status=0
tests=0
if [ "${1:-}" = "--tests" ]; then tests=1; shift; fi
bench_args=("$@")
[ ${#bench_args[@]} -eq 0 ] && bench_args=(--no-sweep)
echo "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1); $(date -u '+%F %T UTC')"
if [ $tests -eq 1 ]; then
    VMAMBA_KERNELS_LIB="$(realpath "$LIB_B")" python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels_gpu.py \
        > "$OUT_DIR/tests.log" 2>&1 || status=1
    tail -3 "$OUT_DIR/tests.log"; grep -E "^(FAILED|ERROR)" "$OUT_DIR/tests.log" | head -20
    driver="$(dirname "$LIB_B")/vmk_sanitize_driver"
    if [ -x "$driver" ]; then
        : > "$OUT_DIR/sanitizer.log"
        sanitize_kernel_driver "$driver" "$OUT_DIR/sanitizer.log" || status=1
    else
        echo "no sanitizer driver beside $LIB_B: compute-sanitizer not run"
    fi
fi
for run in a1 b1 a2 b2; do
    lib=$LIB_A; [ "${run:0:1}" = b ] && lib=$LIB_B
    VMAMBA_KERNELS_LIB="$(realpath "$lib")" python3 benchmarks/bench_kernels.py "${bench_args[@]}" --json "$OUT_DIR/$run.json" \
        > "$OUT_DIR/$run.log" 2>&1 || { status=1; tail -5 "$OUT_DIR/$run.log"; }
    echo "bench $run ($lib): done $(date -u +%T)"
done
python3 benchmarks/compare_kernels.py --a "$OUT_DIR/a1.json" "$OUT_DIR/a2.json" --b "$OUT_DIR/b1.json" "$OUT_DIR/b2.json" \
    --md "$OUT_DIR/compare.md" || status=1
echo "run_device_ab.sh: exit status $status"
exit $status
