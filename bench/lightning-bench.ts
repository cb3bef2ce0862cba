/**
 * Lightning prefill micro-benchmark on the GPU: one call of n tokens at H heads, D = 128 (the flash
 * geometry: 32 heads, 4096-token chunks), per BAILING_LIGHTNING_PREFILL mode, timed with CUDA
 * events (median of reps). Reports ms per call and the tensor kernels' executed MMA rate.
 *
 *   node dist/bench/lightning-bench.js [--n 4096] [--heads 32] [--reps 20] [--modes recurrent,tc-split,tc-bf16] [--out FILE]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import type { LightningParams } from '../src/backend/backend.js';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import type { LightningPrefillMode } from '../src/backend/cuda/context.js';
import { compare, fmtStats } from '../src/util/compare.js';
import { Prng } from '../src/util/prng.js';

const log = (s: string): void => void process.stdout.write(s + '\n');
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** MMAs (m16n8k16) one block of lightning-chunked.cu issues per 64-token chunk, per product plane:
 *  causal Q·Kᵀ 16·Σ(mt+1) over the 4 row tiles, computed by both column-half warps (2·160); A·V
 *  2·Σ(mt+1) per half (2·20); Q·S 8 warps · 16; S update 8 warps · 16. */
const MMAS_PER_CHUNK = 2 * 160 + 2 * 20 + 128 + 128;

function main(): void {
  const { values } = parseArgs({
    options: { n: { type: 'string', default: '4096' }, heads: { type: 'string', default: '32' }, reps: { type: 'string', default: '20' }, modes: { type: 'string', default: 'recurrent,tc-split,tc-bf16' }, out: { type: 'string', default: '' } },
  });
  const n = Number(values.n), H = Number(values.heads), reps = Number(values.reps), D = 128;
  const be = new CudaBackend();
  const c = be.c, d = c.driver;
  log(`device: ${be.device.name} (sm_${be.device.major}${be.device.minor}, ${be.device.sms} SMs); lightning prefill n=${n} H=${H} D=${D}`);
  const rng = new Prng(7);
  const make = (shape: number[], s: number): ReturnType<CudaBackend['alloc']> => {
    const t = be.alloc('f32', shape);
    be.upload(t, Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal() * s));
    return t;
  };
  const q = make([n, H * D], 1), k = make([n, H * D], 1), v = make([n, H * D], 1), o = make([n, H * D], 0);
  const st = make([H, D, D], 0.1);
  const s0 = be.download(st);
  // Geometric decays as ALiBi-style slopes (0.001 … ~0.7): the values do not change the work.
  const p: LightningParams = { nHeads: H, headDim: D, decay: Float64Array.from({ length: H }, (_, h) => 0.001 * 700 ** (h / (H - 1))), scale: D ** -0.5, chunk: 64, vllmPrefillQuirk: false, stateBf16: false };
  const e0 = d.eventCreate(), e1 = d.eventCreate();
  const results: Record<string, unknown>[] = [];
  for (const mode of (values.modes ?? '').split(',').filter(Boolean) as LightningPrefillMode[]) {
    c.lightningPrefill = mode;
    const ms: number[] = [];
    for (let i = 0; i < reps + 2; i++) {
      d.eventRecord(e0, c.stream);
      be.ops.lightningPrefill(o, q, k, v, st, p);
      d.eventRecord(e1, c.stream);
      d.eventSync(e1);
      if (i >= 2) ms.push(d.eventElapsed(e0, e1));
    }
    const t = median(ms);
    const planes = mode === 'tc-split' ? 3 : mode === 'tc-bf16' ? 1 : 0;
    const mmaFlops = planes * MMAS_PER_CHUNK * 4096 * Math.ceil(n / 64) * H * (D / 32);
    const tflops = mmaFlops / (t * 1e-3) / 1e12;
    log(`${mode}: ${t.toFixed(3)} ms/call (min ${Math.min(...ms).toFixed(3)})${planes ? `, MMA work ${(mmaFlops / 1e9).toFixed(1)} GFLOP → ${tflops.toFixed(0)} TFLOP/s` : ''}`);
    results.push({ mode, n, H, D, msMedian: t, msMin: Math.min(...ms), mmaGflop: mmaFlops / 1e9, mmaTflops: planes ? tflops : null });
  }
  // The same call from the same state in each mode vs the recurrent kernel (real geometry, not a test: the op tests own pass/fail).
  const ref: Record<string, Float32Array> = {};
  for (const mode of ['recurrent', 'tc-split', 'tc-bf16'] as const) {
    c.lightningPrefill = mode;
    be.upload(st, s0);
    be.ops.lightningPrefill(o, q, k, v, st, p);
    const got = { o: be.download(o), st: be.download(st) };
    if (mode === 'recurrent') Object.assign(ref, got);
    else log(`${mode} vs recurrent: o ${fmtStats(compare(got.o, ref.o))}; state ${fmtStats(compare(got.st, ref.st))}`);
  }
  if (values.out) {
    mkdirSync(dirname(values.out), { recursive: true });
    writeFileSync(values.out, JSON.stringify({ device: be.device.name, results }, null, 2));
  }
  be.dispose();
}

main();
