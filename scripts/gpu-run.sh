#!/usr/bin/env bash
# On the GPU machine, after the gpu-bundle prelude (../shared/tools/gpu-bundle.sh prints it): the
# GPU tests (npm run test:gpu without npm) and the first decode benchmark; logs and JSON under $OUT.
#   bash scripts/gpu-run.sh [tests|bench|all]
set -uo pipefail
what=${1:-all}
OUT=${OUT:-/tmp/bailing-gpu}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export BAILING_CACHE_DIR=${BAILING_CACHE_DIR:-/tmp/bailing-cache}
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; node --version; } 2>&1 | tee "$OUT/machine.txt"
rc=0
if [ "$what" = tests ] || [ "$what" = all ]; then
  node scripts/run-tests.mjs --gpu dist 2>&1 | tee "$OUT/test-gpu.log"
  rc=${PIPESTATUS[0]}
  echo "test:gpu exit $rc"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  node dist/bench/cuda-decode-bench.js --ctx 1024 --steps 30 --out "$OUT/cuda-decode.json" 2>&1 | tee "$OUT/bench.log"
  echo "bench exit ${PIPESTATUS[0]}"
fi
exit "$rc"
