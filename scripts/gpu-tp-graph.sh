#!/usr/bin/env bash
# On a 2-GPU machine after the gpu-bundle prelude: the tensor-parallel GPU test (TP 2 = TP 1 eager
# and as CUDA graphs with the NCCL calls captured; killed ranks, one during a replayed graph), then
# tp-bench at TP 2 on the 16-layer flash cut (decode eager vs graph at B = 1/16/64).
#   bash scripts/gpu-tp-graph.sh [test] [bench]
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
export NCCL_NVLS_ENABLE=0
L="$OUT/run.log"
machine_info "$L"
for what in "$@"; do
  echo "=== $what $(date +%T)" | tee -a "$L"
  case $what in
    test)
      timeout "${TEST_S:-90}" node --test --test-reporter=spec dist/src/api/tp.gpu.test.js > "$OUT/test-tp.log" 2>&1; r=$?
      grep -E "✔|✖|worst|graphs|dead rank|killed|^ℹ (tests|pass|fail)|Error" "$OUT/test-tp.log" | head -40 | tee -a "$L"; echo "tp test exit $r" | tee -a "$L" ;;
    bench)
      timeout "${BENCH_S:-150}" node dist/bench/tp-bench.js --tp "${TP:-2}" --layers "${LAYERS:-16}" --out "$OUT/tp${TP:-2}-flash${LAYERS:-16}-graphs.json" 2>&1 | tee -a "$L"; echo "bench exit ${PIPESTATUS[0]}" | tee -a "$L" ;;
  esac
done
