#!/usr/bin/env bash
# On the GPU machine after the gpu-bundle prelude: the graph-replay GPU test (direct replay checked
# against the staging pass), decode eager / staged graph / direct graph at B = 1/8/64, 1k and 32k
# (flash cut), PyTorch eager decode at the same contexts, then the whole GPU suite.
#   bash scripts/gpu-direct.sh [graphtest] [bench] [torch] [tests]
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
L="$OUT/run.log"
machine_info "$L"
for what in "$@"; do
  echo "=== $what $(date +%T)" | tee -a "$L"
  case $what in
    graphtest)
      timeout 150 node --test --test-reporter=spec dist/src/backend/cuda/graph.gpu.test.js > "$OUT/test-graph.log" 2>&1; r=$?
      grep -E "^# (pass|fail)|✖|✔|worst NMSE|direct" "$OUT/test-graph.log" | head -30 | tee -a "$L"; echo "graph test exit $r" | tee -a "$L" ;;
    bench)
      timeout 220 node dist/bench/cuda-bench.js --geometry flash --decode 1,8,64 --ctx ${CTXS:-1024,32768} --steps 30 --graphs ${BENCH_ARGS:-} --out "$OUT/flash-direct.json" 2>&1 | grep -v "^|" | tee -a "$L" ;;
    torch)
      for ctx in 1024 32768; do PYTHONUNBUFFERED=1 timeout 90 python3 bench/torch_eager.py --ctx $ctx --prefill "" --out "$OUT/torch-$ctx.json" 2>&1 | tee -a "$L"; done ;;
    tests)
      timeout ${TESTS_S:-240} node scripts/run-tests.mjs --gpu dist > "$OUT/test-gpu.log" 2>&1; r=$?
      grep -E "^ℹ (tests|pass|fail|skipped)|✖|ring-linear" "$OUT/test-gpu.log" | head -40 | tee -a "$L"; echo "test:gpu exit $r" | tee -a "$L" ;;
  esac
done
