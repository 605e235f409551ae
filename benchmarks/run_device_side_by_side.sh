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
# Builds, in parallel (benchmarks/device_common.sh): this project's kernel library (build/side-by-side-kernels, sm_90 only) and
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
source benchmarks/device_common.sh  # step, device_info and the two builds (shared with run_device_backbone.sh)

prepare_side_by_side  # device line, official checkout, both builds (benchmarks/device_common.sh)

budget=${SBS_BUDGET_S:-$(( 560 - SECONDS ))}
step "benchmark (budget ${budget} s)"
python3 benchmarks/bench_side_by_side.py --official "$OFFICIAL" --work-dir "$OFLEX_WORK_DIR" \
    --oflex-build "$OFLEX_BUILD" --out "$OUT_DIR" --budget-s "$budget" "$@" 2>&1 | tee "$OUT_DIR/bench_side_by_side.log"
rc=${PIPESTATUS[0]}
echo "run_device_side_by_side.sh: total ${SECONDS} s, benchmark exit $rc"
exit $rc
