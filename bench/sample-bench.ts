/**
 * Decode step with its sampling, on the flash geometry (dummy weights made on the GPU): the step as
 * the engine ran it before device sampling (forward, [B, V] f32 logits download, host Sampler per
 * row) against forward + Backend.sampleRows (only token ids / logprobs come back), plus the
 * sampling kernel alone on the step's logits. Wall-clock per step (every mode ends synchronised).
 *
 *   node dist/bench/sample-bench.js [--decode 1,64] [--ctx 1024] [--steps 20] [--out FILE]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { HybridCache } from '../src/cache/hybrid-cache.js';
import { resolveSamplingParams, Sampler, SamplerScratch, type SamplingParamsInput } from '../src/engine/sampler.js';
import { cacheGeometry } from '../src/model/cache-spec.js';
import { buildSpec, parseConfig } from '../src/model/config.js';
import { Model } from '../src/model/forward.js';
import type { StepBatch } from '../src/model/step.js';
import { loadWeights } from '../src/model/weights.js';
import { packSampleRows } from '../src/ops/sample/sample.js';
import { dummySource, flashCutConfig } from './geometry.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const log = (s: string): void => void process.stdout.write(s + '\n');
const list = (s: string): number[] => s.split(',').filter(Boolean).map(Number);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

const SETTINGS: Record<string, SamplingParamsInput> = {
  greedy: { temperature: 0 },
  'T1 top-k 50': { temperature: 1, topK: 50 },
  'T0.8 top-p 0.95': { temperature: 0.8, topP: 0.95 },
  'T0.7 top-k 50 top-p 0.9 rep 1.1 logprobs 5': { temperature: 0.7, topK: 50, topP: 0.9, repetitionPenalty: 1.1, logprobs: 5 },
};

function main(): void {
  const { values } = parseArgs({ options: { decode: { type: 'string', default: '1,64' }, ctx: { type: 'string', default: '1024' }, steps: { type: 'string', default: '20' }, out: { type: 'string', default: 'bench/results/gpu-sampling.json' } } });
  const batches = list(values.decode), ctx = Number(values.ctx), steps = Number(values.steps);
  const be = new CudaBackend({ dummyWeights: { seed: 1 } });
  log(`device: ${be.device.name} (sm_${be.device.major}${be.device.minor}, ${be.device.sms} SMs), geometry flash`);
  const { config, naming } = parseConfig(flashCutConfig());
  const spec = buildSpec(config, naming);
  const weights = loadWeights(spec, dummySource(spec), be);
  const maxB = Math.max(...batches), maxCtx = ctx + steps * 8 + 64, blockSize = 16;
  const model = new Model(be, spec, weights, maxB, maxB, blockSize);
  const cache = new HybridCache(be, cacheGeometry(spec), { maxSeqs: maxB, numBlocks: maxB * Math.ceil(maxCtx / blockSize), blockSize });
  const seqs = Array.from({ length: maxB }, () => {
    const s = cache.allocSeq()!;
    if (!cache.reserve(s, maxCtx)) throw new Error('cache reserve failed');
    return s;
  });
  const V = spec.config.vocab_size;
  log(`vocab ${V}; ctx ${ctx}; CUDA graphs ${be.graphs ? 'on' : 'off'}`);
  const results: Record<string, unknown>[] = [];
  const prompt = Array.from({ length: 64 }, (_, i) => (i * 7919) % V);
  for (const B of batches) {
    let i = 0;
    const batch = (): StepBatch => {
      const k = i++ % 8;
      return { ids: Int32Array.from({ length: B }, (_, b) => (b * 7 + k) % 1000), positions: Int32Array.from({ length: B }, () => ctx + k), seqs: seqs.slice(0, B).map((seq, b) => ({ seq, start: b, len: 1, ctxStart: ctx + k })), sampleRows: Int32Array.from({ length: B }, (_, b) => b) };
    };
    const step = () => model.step(batch(), cache);
    const time = (f: () => void, reps = B >= 64 ? 10 : steps): number => {
      for (let w = 0; w < 3; w++) f();
      const ms: number[] = [];
      for (let r = 0; r < reps; r++) {
        const t0 = performance.now();
        f();
        ms.push(performance.now() - t0);
      }
      return median(ms);
    };
    const fwd = time(() => {
      step();
      be.sync();
    });
    const dl = time(() => void be.download(step()));
    log(`B=${B}: forward ${fwd.toFixed(2)} ms; forward + [B, V] download ${dl.toFixed(2)} ms`);
    results.push({ batch: B, ctx, mode: 'forward', ms: fwd }, { batch: B, ctx, mode: 'forward+download', ms: dl });
    for (const [name, input] of Object.entries(SETTINGS)) {
      const p = resolveSamplingParams({ ...input, seed: 1 });
      const scratch = new SamplerScratch();
      const samplers = Array.from({ length: B }, () => new Sampler(p, { promptIds: prompt, scratch }));
      const host = time(() => {
        const logits = be.download(step());
        samplers.forEach((s, r) => s.sample(logits.subarray(r * V, (r + 1) * V)));
      });
      const dev = time(() => {
        const res = be.sampleRows(step(), packSampleRows(samplers.map((s) => s.deviceRow())));
        samplers.forEach((s, r) => s.acceptDevice({ token: res.tokens[r], logprob: null, topLogprobs: null }));
      });
      const logits = step();
      const rows = packSampleRows(samplers.map((s) => s.deviceRow()));
      const kernel = time(() => void be.sampleRows(logits, rows));
      log(`B=${B} [${name}]: host path (download + Sampler) ${host.toFixed(2)} ms/step; device path (sampleRows) ${dev.toFixed(2)} ms/step; sampleRows alone ${kernel.toFixed(3)} ms`);
      results.push({ batch: B, ctx, setting: name, hostPathMs: host, devicePathMs: dev, sampleRowsMs: kernel });
    }
  }
  const out = resolve(ROOT, values.out);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ device: be.device.name, geometry: 'flash', vocab: V, results }, null, 2) + '\n');
  log(`wrote ${out}`);
  be.dispose();
}

main();
