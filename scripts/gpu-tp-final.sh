#!/usr/bin/env bash
# On a 2- or 4-GPU machine after the gpu-bundle prelude (issue 6, final): the dead-rank watcher's
# CPU test, the tensor-parallel GPU test (TP 2 and TP <visible GPUs> = TP 1, eager and as CUDA
# graphs; a rank killed idle and mid-collective, eager and during a replayed graph: TpRankError,
# communicator aborted, the process exits), `bailing serve --tp N` end to end (same greedy text as
# --tp 1, a killed follower ends the server with code 1, a killed server takes its followers),
# then tp-bench (default TP 4 on the full 32-layer Ling-2.6-flash geometry, decode eager and graphs).
#   DIST=dist-tp bash scripts/gpu-tp-final.sh [guard] [test] [serve] [bench]
# GNU timeout signals the whole process group, so a hung test takes its forked ranks with it.
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
export NCCL_NVLS_ENABLE=0
D=${DIST:-dist}
L="$OUT/run.log"
machine_info "$L"
for what in "$@"; do
  echo "=== $what $(date +%T)" | tee -a "$L"
  t0=$SECONDS
  case $what in
    guard)
      timeout -k 5 60 node --test --test-reporter=spec "$D/src/api/tp-guard.test.js" > "$OUT/test-guard.log" 2>&1; r=$?
      grep -E "✔|✖|^ℹ (pass|fail)" "$OUT/test-guard.log" | tee -a "$L"; echo "guard test exit $r" | tee -a "$L" ;;
    test)
      NCCL_DEBUG=${NCCL_DEBUG:-WARN} timeout -k 5 "${TEST_S:-150}" node --test --test-reporter=spec "$D/src/api/tp.gpu.test.js" > "$OUT/test-tp.log" 2>&1; r=$?
      grep -E "✔|✖|﹣|worst|graphs:|dead rank|TP [0-9]+ (eager|graph):|^ℹ (tests|pass|fail)|Error|not ok" "$OUT/test-tp.log" | head -80 | tee -a "$L"; echo "tp test exit $r" | tee -a "$L" ;;
    serve)
      NCCL_DEBUG=${NCCL_DEBUG:-WARN} timeout -k 5 "${SERVE_S:-180}" node --test --test-reporter=spec "$D/src/cli/serve-tp.gpu.test.js" > "$OUT/test-serve.log" 2>&1; r=$?
      grep -E "✔|✖|﹣|--tp [0-9]+|^ℹ (tests|pass|fail)|Error|not ok" "$OUT/test-serve.log" | head -60 | tee -a "$L"; echo "serve test exit $r" | tee -a "$L" ;;
    bench)
      timeout -k 5 "${BENCH_S:-200}" node "$D/bench/tp-bench.js" --tp "${TP:-4}" --layers "${LAYERS:-32}" --out "$OUT/tp${TP:-4}-flash${LAYERS:-32}-graphs.json" 2>&1 | tee -a "$L"; echo "bench exit ${PIPESTATUS[0]}" | tee -a "$L" ;;
  esac
  echo "--- $what took $((SECONDS - t0)) s" | tee -a "$L"
done
