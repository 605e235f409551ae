#!/usr/bin/env bash
# One GPU-machine call: the feature backbones at segmentation sizes, the official Backbone_VSSM and
# this project's prepare_runtime side by side in one process (benchmarks/bench_backbone.py).
#
# Needs the official checkout (only the files benchmarks/official.py lists) in a git-ignored folder
# of the repo, carried to the device machine:
#   python benchmarks/official.py prepare --official /path/to/VMamba --dest third_party/VMamba
#
#   bash benchmarks/run_device_backbone.sh [bench_backbone.py options, e.g. --models vmamba_tiny_s1l8]
#   OFFICIAL=path/to/checkout BACKBONE_BUDGET_S=300 bash benchmarks/run_device_backbone.sh
#
# Builds, in parallel (benchmarks/device_common.sh, the same steps and build folders as
# run_device_side_by_side.sh, so a warm machine reuses them): this project's kernel library and the
# official oflex extension. Then the GPU tests of tests/test_backbone_bench.py (a few seconds;
# BACKBONE_SKIP_TESTS=1 skips them), then the benchmark with a budget of BACKBONE_BUDGET_S seconds
# (default 240; rows that would end later show as "skipped (budget)"), never past 560 s in all.
# Results and logs go to $OUT (default out/backbone); the Markdown table is printed at the end.
# Exit status: the benchmark's (0 ok, 2 bad input, 3 official build/import failed, 4 no kernels), or 1
# when it was 0 but a GPU test failed;
# 1 if this project's kernel library did not build; official.py's (3 build, 5 import) if oflex failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-$PWD/out/backbone}"
mkdir -p "$OUT_DIR"
source benchmarks/device_common.sh

prepare_side_by_side  # device line, official checkout, both builds (benchmarks/device_common.sh)

rc_tests=0
if [ -z "${BACKBONE_SKIP_TESTS:-}" ]; then
    step "GPU tests of the backbone runtime (tests/test_backbone_bench.py -m gpu)"
    python3 -m pytest -q -m gpu tests/test_backbone_bench.py -p no:cacheprovider -rs 2>&1 | tee "$OUT_DIR/test_backbone_gpu.log" | tail -4
    rc_tests=${PIPESTATUS[0]}
fi

budget=${BACKBONE_BUDGET_S:-240}
left=$(( 560 - SECONDS ))
[ "$budget" -gt "$left" ] && budget=$left
step "benchmark (budget ${budget} s)"
python3 benchmarks/bench_backbone.py --official "$OFFICIAL" --work-dir "$OFLEX_WORK_DIR" \
    --oflex-build "$OFLEX_BUILD" --out "$OUT_DIR" --budget-s "$budget" "$@" 2>&1 | tee "$OUT_DIR/bench_backbone.log"
rc=${PIPESTATUS[0]}
echo
[ -f "$OUT_DIR/backbone.md" ] && cat "$OUT_DIR/backbone.md"
echo "run_device_backbone.sh: total ${SECONDS} s, GPU tests exit $rc_tests, benchmark exit $rc"
[ $rc -eq 0 ] && [ $rc_tests -ne 0 ] && rc=1
exit $rc
