#!/usr/bin/env bash
# On the GPU machine after the gpu-bundle prelude: the MoE op tests (grouped kernel and per-expert
# cuBLASLt vs the CPU: T 9/100/1000, empty experts, tails, real dims), whole-model parity with the
# grouped kernel forced onto every prefill of ≥ 9 tokens, then 1k/8k prefill with both MoE modes in
# one process (per-kernel profile at 8k).  bash scripts/gpu-moe.sh
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
L="$OUT/moe.log"
machine_info "$L"
t() { echo "=== $1 $(date +%T)" | tee -a "$L"; }
t ops
timeout ${OPS_S:-60} node --test --test-reporter=spec --test-name-pattern=MoE dist/src/backend/cuda/ops.gpu.test.js > "$OUT/ops-moe.log" 2>&1
echo "ops MoE exit $?" | tee -a "$L"; grep -E "NMSE .*>|not ok|✖|^ℹ (pass|fail)|Error" "$OUT/ops-moe.log" | head -20 | tee -a "$L"
grep -E "grouped|cublas" "$OUT/ops-moe.log" | sed 's/^ *//' | head -40 > "$OUT/ops-moe-nmse.txt"
t "model grouped"
BAILING_MOE_PREFILL=grouped BAILING_MOE_GEMM_MIN_T=9 timeout ${MODEL_S:-70} node --test --test-reporter=spec dist/src/backend/cuda/model.gpu.test.js > "$OUT/model-grouped.log" 2>&1
echo "model parity (grouped, min T 9) exit $?" | tee -a "$L"; grep -E "^ℹ (pass|fail)|not ok|✖|diverge|NMSE .*>" "$OUT/model-grouped.log" | head -20 | tee -a "$L"
t bench
timeout ${BENCH_S:-100} node dist/bench/cuda-bench.js --geometry flash --prefill 1024,8192 --moe cublas,grouped --decode 1 --ctx 1024 --steps 5 --profile --out "$OUT/moe-bench.json" > "$OUT/bench.log" 2>&1
echo "bench exit $?" | tee -a "$L"
grep -E "^(device|copy|prefill [0-9]+ \[[^]]*\]:)|^\| (moe_|cublas|mla_|lightning|sum)" "$OUT/bench.log" | head -40 | tee -a "$L"
t done
