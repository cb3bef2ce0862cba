#!/usr/bin/env bash
# On the GPU machine after the gpu-bundle prelude: the issue-4 closing runs, by stage, one summary
# log ($OUT/final.log); every other log goes to $OUT/logs, packed into one $OUT/logs.tgz at the end
# (the device tool brings back only a few files).
#   bash scripts/gpu-final.sh STAGE...   (env: DIST=dist, DEADLINE=s since start for benches)
# Stages:
#   tests     npm run test:gpu, then the model parity test with the grouped experts forced onto
#             every step of >= 9 tokens (BAILING_MOE_GEMM_MIN_T=9)
#   generate  CLI generate, cuda = cpu, with f32 and with bf16 matmul inputs
#   prefill   8k prefill with per-kernel profiles, bf16 and f32 matmul inputs (MOE_CHUNKS: MoE pass
#             sizes, default the engine's), decode at batch 1 and 64 with graphs
#   matrix    the issue's table at the defaults: decode batch 1/8/64/256 at ctx 1k and 32k, prefill
#             1k/8k/32k, CUDA graphs
#   torch     the PyTorch eager forward of the same geometry (bench/torch_eager.py)
#   tp        (>= 2 GPUs) tp.gpu.test, and `generate --tp 2 --load-format dummy`
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
D=${DIST:-dist}
L="$OUT/final.log"
LOGS="$OUT/logs"; mkdir -p "$LOGS"
START=$SECONDS; DEADLINE=${DEADLINE:-560}
pack() { tar -C "$OUT" -czf "$OUT/logs.tgz" logs && rm -rf "$LOGS"; }
trap pack EXIT
late() { (( SECONDS - START > DEADLINE - $1 )) && { echo "$2 skipped (deadline)" | tee -a "$L"; return 0; }; return 1; }
summary() { grep -E "^prefill .*TTFT|^decode|^\| (moe_gw|mla_flash|cublasLt|matmul_castx|lightning)" "$1" | head -${2:-14} | tee -a "$L"; }
machine_info "$L"
for stage in "$@"; do
  echo "=== $stage $(date +%T)" | tee -a "$L"
  case $stage in
    tests)
      timeout 330 node scripts/run-tests.mjs --gpu "$D" > "$LOGS/test-gpu.log" 2>&1
      echo "test:gpu exit $?" | tee -a "$L"; grep -E "^ℹ (tests|pass|fail|skipped)|^✖" "$LOGS/test-gpu.log" | head -20 | tee -a "$L"
      BAILING_MOE_GEMM_MIN_T=9 timeout 300 node --test --test-reporter=spec "$D/src/backend/cuda/model.gpu.test.js" > "$LOGS/model-mint9.log" 2>&1
      echo "model parity, grouped experts forced (MIN_T=9) exit $?" | tee -a "$L"; grep -E "^ℹ (tests|pass|fail)|✖" "$LOGS/model-mint9.log" | head -10 | tee -a "$L" ;;
    generate)
      for mi in f32 bf16; do
        for dev in cpu cuda; do timeout 120 node "$D/src/cli/main.js" generate "The jury said" --device "$dev" --matmul-inputs $mi --max-tokens 16 --temperature 0 > "$LOGS/generate-$dev-$mi.txt" 2>/dev/null; done
        [[ -s "$LOGS/generate-cpu-$mi.txt" ]] && cmp -s "$LOGS/generate-cpu-$mi.txt" "$LOGS/generate-cuda-$mi.txt" && echo "generate ($mi matmul inputs): cuda = cpu" | tee -a "$L" || { echo "generate ($mi matmul inputs): cuda DIFFERS from cpu (or is empty)" | tee -a "$L"; cat "$LOGS"/generate-*-$mi.txt | tee -a "$L"; }
      done ;;
    prefill)
      for mc in ${MOE_CHUNKS:-default}; do for inputs in bf16 f32; do
        late 150 "prefill moe-chunk=$mc $inputs" && continue
        mca=(); [[ $mc != default ]] && mca=(--moe-chunk "$mc")
        timeout 150 node "$D/bench/cuda-bench.js" --geometry flash --decode "${DECODE:-1,64}" --ctx 1024 --graphs --prefill 8192 "${mca[@]}" --matmul-inputs $inputs --profile --out "$LOGS/prefill-$mc-$inputs.json" > "$LOGS/prefill-$mc-$inputs.log" 2>&1
        echo "bench moe-chunk=$mc $inputs exit $?" | tee -a "$L"; summary "$LOGS/prefill-$mc-$inputs.log"
      done; done ;;
    matrix)
      late 200 "matrix ctx 1k" || { timeout 240 node "$D/bench/cuda-bench.js" --geometry flash --decode 1,8,64,256 --ctx 1024 --graphs --prefill 1024,8192,32768 --out "$LOGS/matrix-1k.json" > "$LOGS/matrix-1k.log" 2>&1; echo "matrix ctx 1k exit $?" | tee -a "$L"; summary "$LOGS/matrix-1k.log" 40; }
      late 150 "matrix ctx 32k" || { timeout 180 node "$D/bench/cuda-bench.js" --geometry flash --decode 1,8,64,256 --ctx 32768 --graphs --steps 8 --out "$LOGS/matrix-32k.json" > "$LOGS/matrix-32k.log" 2>&1; echo "matrix ctx 32k exit $?" | tee -a "$L"; summary "$LOGS/matrix-32k.log" 40; } ;;
    torch)
      late 150 "torch" || { PYTHONUNBUFFERED=1 timeout 150 python3 bench/torch_eager.py --ctx 1024 --prefill 1024,8192 --out "$LOGS/torch.json" > "$LOGS/torch.log" 2>&1; echo "torch eager exit $?" | tee -a "$L"; tail -8 "$LOGS/torch.log" | tee -a "$L"; } ;;
    tp)
      timeout 300 node --test --test-reporter=spec "$D/src/api/tp.gpu.test.js" > "$LOGS/tp-gpu.log" 2>&1
      echo "tp.gpu.test exit $?" | tee -a "$L"; grep -E "^ℹ (tests|pass|fail)|✖|tp gpu:|TP [0-9]|worst NMSE" "$LOGS/tp-gpu.log" | head -30 | tee -a "$L"
      timeout 120 node "$D/src/cli/main.js" generate "The jury said" --device cuda --tp 2 --load-format dummy --model models/tiny-brown --max-tokens 8 --temperature 0 > "$LOGS/generate-tp2-dummy.txt" 2> "$LOGS/generate-tp2-dummy.err"
      echo "generate --tp 2 --load-format dummy exit $?: $(head -c 200 "$LOGS/generate-tp2-dummy.txt")" | tee -a "$L"; tail -3 "$LOGS/generate-tp2-dummy.err" | tee -a "$L" ;;
    *) echo "unknown stage $stage" | tee -a "$L" ;;
  esac
done
