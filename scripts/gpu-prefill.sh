#!/usr/bin/env bash
# On the GPU machine after the gpu-bundle prelude: the model parity and bf16-input GPU tests, then
# the flash-cut prefill (TTFT, FLOP-floor share, per-kernel profile) with f32 and bf16 matmul
# inputs at chunks of 4096 and 8192. Logs and JSON under $OUT.
#   [PROMPTS=8192] [TESTS=1] bash scripts/gpu-prefill.sh [DIST]
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
D=${1:-dist}
L="$OUT/prefill-run.log"
machine_info "$L"
if [ "${TESTS:-1}" = 1 ]; then
  for f in model matmul-inputs; do
    timeout 300 node --test --test-reporter=spec "$D/src/backend/cuda/$f.gpu.test.js" > "$OUT/test-$f.log" 2>&1
    echo "test $f exit $?" | tee -a "$L"
    grep -E "^ℹ (tests|pass|fail)|✖" "$OUT/test-$f.log" | head -30 | tee -a "$L"
  done
fi
for inputs in f32 bf16; do
  for chunk in 4096 8192; do
    tag="$inputs-$chunk"
    timeout 200 node "$D/bench/cuda-bench.js" --geometry flash --decode '' --prefill "${PROMPTS:-8192}" --chunk "$chunk" --matmul-inputs "$inputs" --profile --out "$OUT/prefill-$tag.json" > "$OUT/prefill-$tag.log" 2>&1
    echo "bench $tag exit $?" | tee -a "$L"
    grep -E "^prefill .*TTFT" "$OUT/prefill-$tag.log" | tee -a "$L"
  done
done
