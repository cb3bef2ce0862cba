#!/usr/bin/env bash
# On the GPU machine after the gpu-bundle prelude: whole-model parity under each prefill precision
# mode (routed-expert GEMMs on bf16 activations; every GEMM and the MLA prefill on bf16), then the 8k
# prefill per-kernel profile in each mode on the flash cut. Logs and JSON under $OUT.
#   [BENCH=0] bash scripts/gpu-precision.sh [DIST]
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
D=${1:-dist}
L="$OUT/run.log"
machine_info "$L"
parity() { # NAME ENV...: the model parity test with the MoE prefill path forced onto every step ≥ 9 tokens
  local name=$1; shift
  env BAILING_MOE_GEMM_MIN_T=9 "$@" timeout 240 node --test --test-reporter=spec "$D/src/backend/cuda/model.gpu.test.js" > "$OUT/parity-$name.log" 2>&1
  echo "parity $name exit $?" | tee -a "$L"
  grep -E "✔|✖|imposed|free run|Error" "$OUT/parity-$name.log" | head -80 >> "$L"
}
parity split
parity moe-bf16 BAILING_MOE_SPLIT=0
parity all-bf16 BAILING_GEMM_SPLIT=0 BAILING_MLA_PREFILL=flash-bf16
[ "${BENCH:-1}" = 1 ] && for mode in "split 1" "split 1 --moe-split 0" "split 0 --mla flash-bf16"; do
  tag=$(echo "$mode" | tr -d ' -')
  timeout 150 node "$D/bench/cuda-bench.js" --geometry flash --decode '' --prefill 8192 --profile --$mode --out "$OUT/prefill8k-$tag.json" > "$OUT/prefill8k-$tag.log" 2>&1
  echo "bench $mode exit $?" | tee -a "$L"; grep -iE "prefill|ttft|floor|^ *[a-z_0-9]+ .*ms" "$OUT/prefill8k-$tag.log" | head -40 >> "$L"
done
