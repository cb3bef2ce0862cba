#!/usr/bin/env bash
# On the GPU machine after the gpu-bundle prelude: the MLA op test (absorbed, flash-split and
# flash-bf16 prefill), every GPU test in the default mode + CLI cuda-vs-cpu, the prefill bench in
# the three MLA modes (same process), then whole-model parity with flash-bf16.  bash scripts/gpu-mla.sh
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
L="$OUT/mla.log"
machine_info "$L"
t() { echo "=== $1 $(date +%T)" | tee -a "$L"; }
t ops
timeout 60 node --test --test-reporter=spec --test-name-pattern=MLA dist/src/backend/cuda/ops.gpu.test.js > "$OUT/ops-mla.log" 2>&1
echo "ops MLA exit $?" | tee -a "$L"; grep -E "NMSE .*>|not ok|^ℹ (pass|fail)|Error" "$OUT/ops-mla.log" | head -20 | tee -a "$L"
t test:gpu
timeout 150 node scripts/run-tests.mjs --gpu dist > "$OUT/test-gpu.log" 2>&1; echo "test:gpu (default MLA mode) exit $?" | tee -a "$L"; grep -E "^ℹ (pass|fail)|^✖" "$OUT/test-gpu.log" | head -20 | tee -a "$L"
for dev in cpu cuda; do timeout 60 node dist/src/cli/main.js generate "The jury said" --device "$dev" --max-tokens 16 --temperature 0 > "/tmp/gen-$dev.txt" 2>/dev/null; done
if cmp -s /tmp/gen-cpu.txt /tmp/gen-cuda.txt; then echo "generate: cuda output identical to cpu" | tee -a "$L"; else echo "generate: cuda DIFFERS" | tee -a "$L"; cat /tmp/gen-*.txt >> "$L"; fi
t bench
timeout 150 node dist/bench/cuda-bench.js --geometry flash --prefill 1024,8192,32768 --mla absorbed,flash-split,flash-bf16 --decode 1 --ctx 1024 --steps 5 --profile --out "$OUT/mla-bench.json" 2>&1 | tee -a "$L"
for m in flash-bf16; do
  t "model $m"
  BAILING_MLA_PREFILL=$m timeout 100 node --test --test-reporter=spec dist/src/backend/cuda/model.gpu.test.js > "$OUT/model-$m.log" 2>&1
  echo "model parity ($m) exit $?" | tee -a "$L"; grep -E "^ℹ (pass|fail)|not ok|NMSE .*>|diverge" "$OUT/model-$m.log" | head -20 | tee -a "$L"
done
t done
