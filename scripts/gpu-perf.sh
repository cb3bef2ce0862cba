#!/usr/bin/env bash
# On the GPU machine after the gpu-bundle prelude: GPU tests, the CLI cuda-vs-cpu check, then the
# issue-4/7 benchmarks (bench/cuda-bench.ts) and the PyTorch eager side-by-side, in one call.
#   bash scripts/gpu-perf.sh [tests] [flash] [flash32k] [torch] [ring]
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
L="$OUT/bench.log"
machine_info "$L"
rc=0
for what in "$@"; do
  echo "=== $what $(date +%T)" | tee -a "$L"
  case $what in
    tests)
      timeout 300 node scripts/run-tests.mjs --gpu dist > "$OUT/test-gpu.log" 2>&1; r=$?; tail -5 "$OUT/test-gpu.log" | tee -a "$L"; echo "test:gpu exit $r" | tee -a "$L"; [ $r = 0 ] || rc=1
      for dev in cpu cuda; do node dist/src/cli/main.js generate "The jury said" --device "$dev" --max-tokens 16 --temperature 0 > "/tmp/gen-$dev.txt" 2>/dev/null; done
      if cmp -s /tmp/gen-cpu.txt /tmp/gen-cuda.txt; then echo "generate: cuda output identical to cpu" | tee -a "$L"; else echo "generate: cuda DIFFERS" | tee -a "$L"; cat /tmp/gen-*.txt >> "$L"; rc=1; fi ;;
    flash) timeout 240 node dist/bench/cuda-bench.js --geometry flash --prefill 1024,8192,32768 --decode 1,8,64,256 --ctx 1024 --profile --out "$OUT/flash.json" 2>&1 | tee -a "$L" ;;
    flash32k) timeout 150 node dist/bench/cuda-bench.js --geometry flash --decode 1,8,64,256 --ctx 32768 --steps 8 --out "$OUT/flash32k.json" 2>&1 | tee -a "$L" ;;
    torch) PYTHONUNBUFFERED=1 timeout 150 python3 bench/torch_eager.py --ctx 1024 --prefill 1024,8192 --out "$OUT/torch.json" 2>&1 | tee -a "$L" ;;
    ring) timeout 120 node dist/bench/cuda-bench.js --geometry ring-mini --prefill 8192 --decode 1,64 --ctx 1024 --profile --out "$OUT/ring.json" 2>&1 | tee -a "$L" ;;
  esac
done
exit "$rc"
