#!/usr/bin/env bash
# On the GPU machine, after the gpu-bundle prelude (../shared/tools/gpu-bundle.sh prints it): the
# GPU tests (npm run test:gpu without npm) and the first decode benchmark; logs and JSON under $OUT.
#   bash scripts/gpu-run.sh [tests|bench|all]
set -uo pipefail
what=${1:-all}
source "$(dirname "$0")/gpu-env.sh"
machine_info "$OUT/machine.txt"
rc=0
if [ "$what" = tests ] || [ "$what" = all ]; then
  node scripts/run-tests.mjs --gpu dist 2>&1 | tee "$OUT/test-gpu.log"
  rc=${PIPESTATUS[0]}
  echo "test:gpu exit $rc"
fi
if [ "$what" = all ]; then
  # The CLI end to end on the embedded model: greedy text must match the CPU backend's.
  for dev in cpu cuda; do node dist/src/cli/main.js generate "The jury said" --device "$dev" --max-tokens 16 --temperature 0 > "$OUT/generate-$dev.txt" 2> "$OUT/generate-$dev.err"; echo "generate --device $dev exit $?"; done
  if cmp -s "$OUT/generate-cpu.txt" "$OUT/generate-cuda.txt"; then echo "generate: cuda output identical to cpu"; else echo "generate: cuda output DIFFERS from cpu"; rc=1; fi
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  # Twice: the spread between two identical runs is the noise floor for comparing versions.
  for run in 1 2; do
    node dist/bench/cuda-bench.js --geometry flash --decode 1 --ctx 1024 --prefill 1024 --out "$OUT/cuda-decode-$run.json" 2>&1 | tee "$OUT/bench-$run.log"
    echo "bench $run exit ${PIPESTATUS[0]}"
  done
fi
exit "$rc"
