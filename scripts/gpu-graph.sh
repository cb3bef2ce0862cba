#!/usr/bin/env bash
# On the GPU machine after the gpu-bundle prelude: GPU tests (graph replay = eager among them),
# model parity with one bf16 GEMM per matmul (BAILING_GEMM_SPLIT=0), decode eager vs CUDA graphs
# (B = 1/8/64 at 1k and 32k) and 8k prefill both GEMM modes, then `bailing bench serve` at
# concurrency 1/16/64 against `bailing serve --device cuda --load-format dummy` (flash cut).
#   bash scripts/gpu-graph.sh [tests] [split0] [bench] [serve]
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
L="$OUT/run.log"
machine_info "$L"
for what in "$@"; do
  echo "=== $what $(date +%T)" | tee -a "$L"
  case $what in
    tests)
      timeout 280 node scripts/run-tests.mjs --gpu dist > "$OUT/test-gpu.log" 2>&1; r=$?
      grep -E "^# (tests|pass|fail|skipped)|^not ok|^\s+not ok|graph replay|worst NMSE" "$OUT/test-gpu.log" | head -40 | tee -a "$L"; echo "test:gpu exit $r" | tee -a "$L" ;;
    split0)
      BAILING_GEMM_SPLIT=0 timeout 200 node --test dist/src/backend/cuda/model.gpu.test.js > "$OUT/test-split0.log" 2>&1; r=$?
      grep -E "^# (pass|fail)|not ok|NMSE" "$OUT/test-split0.log" | head -30 | tee -a "$L"; echo "split0 parity exit $r" | tee -a "$L" ;;
    bench)
      timeout 200 node dist/bench/cuda-bench.js --geometry flash --decode 1,8,64 --ctx ${CTXS:-1024,32768} --steps 30 --graphs --prefill ${PREFILL:-8192} --out "$OUT/flash-graphs.json" 2>&1 | grep -v "^|" | tee -a "$L"
      timeout 100 node dist/bench/cuda-bench.js --geometry flash --decode 1 --ctx 1024 --split 0 --prefill 8192 --profile --out "$OUT/flash-split0.json" 2>&1 | tee -a "$L" ;;
    serve)
      node dist/bench/make-dummy-dir.js /tmp/flash-dummy flash | tee -a "$L"
      # SERVE_ARGS: more serve flags (e.g. --matmul-inputs bf16).
      node dist/src/cli/main.js serve --model /tmp/flash-dummy --device cuda --load-format dummy --port 18090 --max-num-seqs 64 --max-model-len 1024 ${SERVE_ARGS:-} > "$OUT/serve.log" 2>&1 &
      pid=$!
      for i in $(seq 1 120); do curl -sf http://127.0.0.1:18090/health > /dev/null && break; sleep 1; done
      echo "server up after ${i}s" | tee -a "$L"
      timeout 240 node dist/src/cli/main.js bench serve --url http://127.0.0.1:18090 --concurrency 1,16,64 --json "$OUT/serve-flash.json" 2>&1 | tee -a "$L"
      kill "$pid"; wait "$pid"; tail -3 "$OUT/serve.log" | tee -a "$L" ;;
  esac
done
