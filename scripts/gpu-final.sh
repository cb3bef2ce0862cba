#!/usr/bin/env bash
# On the GPU machine after the gpu-bundle prelude: every GPU test (npm run test:gpu), the model
# parity test again with the grouped expert GEMMs forced onto every step of ≥ 9 tokens, the CLI
# generate cuda = cpu check, then the flash-cut 8k prefill (f32 / bf16 matmul inputs, MoE passes of
# 4096 and 8192 tokens) with per-kernel profiles, and decode at batch 1 and 64. One summary log,
# $OUT/final.log.
#   bash scripts/gpu-final.sh [DIST]
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
D=${1:-dist}
L="$OUT/final.log"
machine_info "$L"
node scripts/run-tests.mjs --gpu "$D" > "$OUT/test-gpu.log" 2>&1
echo "test:gpu exit $?" | tee -a "$L"; grep -E "^ℹ (tests|pass|fail|skipped)|^✖" "$OUT/test-gpu.log" | head -20 | tee -a "$L"
BAILING_MOE_GEMM_MIN_T=9 timeout 300 node --test --test-reporter=spec "$D/src/backend/cuda/model.gpu.test.js" > "$OUT/model-mint9.log" 2>&1
echo "model parity, grouped experts forced (MIN_T=9) exit $?" | tee -a "$L"; grep -E "^ℹ (tests|pass|fail)|^✖|✖" "$OUT/model-mint9.log" | head -10 | tee -a "$L"
for dev in cpu cuda; do timeout 120 node "$D/src/cli/main.js" generate "The jury said" --device "$dev" --max-tokens 16 --temperature 0 > "$OUT/generate-$dev.txt" 2>/dev/null; done
cmp -s "$OUT/generate-cpu.txt" "$OUT/generate-cuda.txt" && echo "generate: cuda = cpu" | tee -a "$L" || echo "generate: cuda DIFFERS from cpu" | tee -a "$L"
# 8k prefill per matmul-input mode and MoE pass size (MOE_CHUNKS; the engine's CUDA step is 8192),
# each with its per-kernel profile; decode at batch 1 and 64 with graphs.
for mc in ${MOE_CHUNKS:-4096 8192}; do for inputs in f32 bf16; do
  timeout 150 node "$D/bench/cuda-bench.js" --geometry flash --decode "${DECODE:-1,64}" --ctx 1024 --graphs --prefill 8192 --chunk 8192 --moe-chunk $mc --matmul-inputs $inputs --profile --out "$OUT/bench-$mc-$inputs.json" > "$OUT/bench-$mc-$inputs.log" 2>&1
  echo "bench moe-chunk=$mc $inputs exit $?" | tee -a "$L"; grep -E "^prefill .*TTFT|^decode|graph|^\| (moe_gw|mla_flash|cublasLt|matmul_castx)" "$OUT/bench-$mc-$inputs.log" | head -14 | tee -a "$L"
done; done
