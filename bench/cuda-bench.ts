/**
 * CUDA benchmark of one geometry with dummy weights made on the GPU: decode at several batch sizes
 * and contexts, prefill of several prompt lengths (time to first token), each with its floor
 * (decode: bytes over the copy bandwidth measured here; prefill: FLOPs over the cuBLASLt bf16 GEMM
 * rate measured here), and a per-kernel breakdown of batch-1 decode.
 *
 *   node dist/bench/cuda-bench.js --geometry flash|ring-mini [--decode 1,8,64,256] [--ctx 1024,32768]
 *        [--prefill 1024,8192,32768] [--chunk 8192 (the engine's CUDA step)] [--moe-chunk 4096] [--profile [--profile-batch 1,64,256]] [--graphs] [--split 0|1]
 *        [--mla absorbed,flash-split,flash-bf16] [--moe cublas,grouped] [--kv-cache-dtype auto|bf16|f32] [--out FILE]
 *
 * --graphs: each decode figure three times in one process: eager launches, CUDA-graph replay through
 * the staging pass (the model's host code re-run with launches skipped), and direct replay (the
 * step's arguments written from the batch; be.runStep's default); the direct one also with the
 * [B, V] logits download.
 *
 * --mla: each prefill once per MLA prefill mode, same process (absorbed skipped above 8k: seconds).
 * --moe: each prefill once per MoE prefill mode (per-expert cuBLASLt calls or the grouped kernel).
 *
 * Decode contexts are synthetic: the sequences' positions and cache lengths are set to ctx without
 * running the prompt (the cache holds zeros); the kernels' work and bytes do not depend on the values.
 * Decode step time = forward + stream sync, logits left on the device (sampling is on the host
 * today; a [B, V] f32 download is reported separately).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import type { MlaPrefillMode, MoePrefillMode } from '../src/backend/cuda/context.js';
import { HybridCache, type KvCacheDtype } from '../src/cache/hybrid-cache.js';
import { cacheGeometry } from '../src/model/cache-spec.js';
import { buildSpec, parseConfig } from '../src/model/config.js';
import { Model } from '../src/model/forward.js';
import type { StepBatch } from '../src/model/step.js';
import { loadWeights } from '../src/model/weights.js';
import { eventTimer, median } from './event-timer.js';
import { decodeBytes, dummySource, flashCutConfig, prefillFlops, ringMiniConfig } from './geometry.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const log = (s: string): void => void process.stdout.write(s + '\n');
const list = (s: string | undefined): number[] => (s ? s.split(',').filter(Boolean).map(Number) : []);

function main(): void {
  const { values } = parseArgs({
    options: {
      geometry: { type: 'string', default: 'flash' }, decode: { type: 'string', default: '1' }, ctx: { type: 'string', default: '1024' },
      prefill: { type: 'string', default: '' }, chunk: { type: 'string', default: '8192' }, steps: { type: 'string', default: '20' },
      mla: { type: 'string', default: '' }, moe: { type: 'string', default: '' }, 'moe-chunk': { type: 'string', default: '' }, profile: { type: 'boolean', default: false }, 'profile-batch': { type: 'string', default: '1' }, graphs: { type: 'boolean', default: false }, split: { type: 'string', default: '1' }, 'kv-cache-dtype': { type: 'string', default: 'auto' }, 'matmul-inputs': { type: 'string', default: 'bf16' }, out: { type: 'string', default: 'bench/results/cuda-bench.json' },
    },
  });
  const batches = list(values.decode), ctxs = list(values.ctx), prompts = list(values.prefill);
  const chunk = Number(values.chunk), steps = Number(values.steps);
  // --matmul-inputs (default bf16, the engine's CUDA default): bf16 rounds weight-matmul inputs, one
  // GEMM per matmul; f32 is the f32-faithful hi + lo split (backend.ts MatmulInputs).
  const be = new CudaBackend({ dummyWeights: { seed: 1 }, matmulInputs: values['matmul-inputs'] === 'bf16' ? 'bf16' : 'f32' });
  const c = be.c, d = c.driver;
  // --split 0: prefill GEMMs on bf16-rounded activations (one GEMM instead of the f32-faithful two).
  if (!c.bf16Inputs) c.gemmSplit = c.moeSplit = values.split !== '0';
  if (values['moe-chunk']) c.moeChunk = Number(values['moe-chunk']);
  log(`device: ${be.device.name} (sm_${be.device.major}${be.device.minor}, ${be.device.sms} SMs, ${(be.device.totalBytes / 2 ** 30).toFixed(1)} GiB), geometry ${values.geometry}`);
  const timeIt = eventTimer(d, c.stream);

  // Ceilings measured in this run: D2D copy (bytes read + written) and a bf16 cuBLASLt GEMM.
  const n = 1 << 30;
  const src = c.mem.alloc(n, 'bench'), dst = c.mem.alloc(n, 'bench');
  d.memsetD8(src.ptr, 1, n, c.stream);
  const copyGBs = (2 * n) / (timeIt(() => d.dtod(dst.ptr, src.ptr, n, c.stream), 10) * 1e-3) / 1e9;
  c.mem.free(src);
  c.mem.free(dst);
  const G = 8192, A = c.mem.alloc(G * G * 2, 'bench'), B = c.mem.alloc(G * G * 2, 'bench'), D = c.mem.alloc(G * G * 4, 'bench');
  const fill = c.kernel('src/backend/cuda/fill.cu', 'fill_uniform_bf16', 'pluff');
  for (const [i, t] of [A, B].entries()) c.launch(fill, [8192, 1, 1], 256, 0, [t.ptr, G * G, BigInt(77 + i), 0, 1]);
  const gemmTflops = (2 * G ** 3) / (timeIt(() => void c.gemm('bf16', D.ptr, A.ptr, B.ptr, G, G, G), 10) * 1e-3) / 1e12;
  for (const t of [A, B, D]) c.mem.free(t);
  log(`copy bandwidth (1 GiB D2D, read+write): ${copyGBs.toFixed(0)} GB/s; cuBLASLt bf16 GEMM 8192³ (random): ${gemmTflops.toFixed(0)} TFLOP/s`);

  const raw = values.geometry === 'ring-mini' ? ringMiniConfig() : flashCutConfig();
  const { config, naming } = parseConfig(raw);
  const spec = buildSpec(config, naming);
  let t0 = performance.now();
  const weights = loadWeights(spec, dummySource(spec), be);
  be.sync();
  log(`dummy weights: ${((c.mem.usage().get('weights') ?? 0) / 1e9).toFixed(2)} GB in ${(performance.now() - t0).toFixed(0)} ms`);

  const maxB = Math.max(1, ...batches), maxCtx = Math.max(...ctxs, ...prompts, 1) + steps + 16;
  const blockSize = 16;
  const maxTokens = Math.max(maxB, prompts.length ? chunk : 1);
  const model = new Model(be, spec, weights, maxTokens, maxB, blockSize);
  const perSeqBlocks = Math.ceil(maxCtx / blockSize);
  const cache = new HybridCache(be, cacheGeometry(spec), { maxSeqs: maxB, numBlocks: maxB * perSeqBlocks, blockSize, kvCacheDtype: values['kv-cache-dtype'] as KvCacheDtype });
  const seqs = Array.from({ length: maxB }, () => {
    const s = cache.allocSeq()!;
    if (!cache.reserve(s, maxCtx)) throw new Error('cache reserve failed');
    return s;
  });
  log(`cache: ${maxB} seqs × ${maxCtx} tokens, ${cache.kvDtype} latents; device memory in use ${([...c.mem.usage().values()].reduce((a, b) => a + b, 0) / 1e9).toFixed(1)} GB`);
  const results: Record<string, unknown>[] = [];

  // Prefill: one sequence, chunks of `chunk` tokens, the last chunk samples its last row; TTFT
  // includes the download of that row's logits.
  const mlaModes = values.mla ? (values.mla.split(',') as MlaPrefillMode[]) : [c.mlaPrefill];
  const moeModes = values.moe ? (values.moe.split(',') as MoePrefillMode[]) : [c.moePrefill];
  const runs = prompts.flatMap((P) => mlaModes.filter((m) => !(m === 'absorbed' && P > 8192 && mlaModes.length > 1)).flatMap((mla) => moeModes.map((moe) => ({ P, mla, moe }))));
  for (const { P, mla, moe } of runs) {
    c.mlaPrefill = mla;
    c.moePrefill = moe;
    const s = seqs[0];
    const run = (): void => {
      for (let p = 0; p < P; p += chunk) {
        const T = Math.min(chunk, P - p);
        const batch: StepBatch = { ids: Int32Array.from({ length: T }, (_, j) => (p + j) % 1000), positions: Int32Array.from({ length: T }, (_, j) => p + j), seqs: [{ seq: s, start: 0, len: T, ctxStart: p }], sampleRows: p + T >= P ? Int32Array.of(T - 1) : new Int32Array(0) };
        const logits = model.forward(batch, cache);
        if (p + T >= P) be.download(logits);
      }
    };
    const reps = P >= 32768 ? 1 : 2;
    const wall: number[] = [];
    for (let i = 0; i < reps + 1; i++) {
      const w0 = performance.now();
      run();
      if (i >= 1 || P >= 32768) wall.push(performance.now() - w0);
    }
    const ms = median(wall);
    const flops = prefillFlops(spec, P), floorMs = (flops / (gemmTflops * 1e12)) * 1e3;
    log(`prefill ${P} [mla ${mla}, moe ${moe}, ${c.bf16Inputs ? 'bf16' : 'f32'} matmul inputs, chunk ${chunk}, moe chunk ${c.moeChunk}]: ${ms.toFixed(1)} ms (TTFT), ${((P / ms) * 1e3).toFixed(0)} tok/s; FLOP floor ${(flops / 1e12).toFixed(2)} TFLOP → ${floorMs.toFixed(1)} ms (${((floorMs / ms) * 100).toFixed(1)}% of floor)`);
    results.push({ kind: 'prefill', tokens: P, ms, tokPerS: (P / ms) * 1e3, flops, floorMs, floorRatio: floorMs / ms, chunk, moeChunk: c.moeChunk, mla, moe, matmulInputs: c.bf16Inputs ? 'bf16' : 'f32' });
    if (values.profile && P === Math.min(...prompts.filter((x) => x >= 8192), Math.max(...prompts))) {
      c.startProfile();
      run();
      const prof = [...c.stopProfile().entries()].map(([name, v]) => ({ name, ms: v.ms, launches: v.launches })).sort((a, b) => b.ms - a.ms);
      const sum = prof.reduce((a, p) => a + p.ms, 0);
      log(`prefill ${P} [mla ${mla}, moe ${moe}] per-kernel (events around each launch; sum ${sum.toFixed(1)} ms):\n| kernel | ms | launches | share |\n| --- | --- | --- | --- |`);
      for (const p of prof.slice(0, 14)) log(`| ${p.name} | ${p.ms.toFixed(1)} | ${p.launches} | ${((p.ms / sum) * 100).toFixed(1)}% |`);
      results.push({ kind: 'prefill-profile', tokens: P, mla, moe, kernels: prof });
    }
  }

  // Decode: B sequences of one token each at context ctx.
  const decodeBatch = (Bn: number, ctx: number, i: number): StepBatch => ({
    ids: Int32Array.from({ length: Bn }, (_, b) => (b * 7 + i) % 1000), positions: Int32Array.from({ length: Bn }, () => ctx + i),
    seqs: seqs.slice(0, Bn).map((seq, b) => ({ seq, start: b, len: 1, ctxStart: ctx + i })), sampleRows: Int32Array.from({ length: Bn }, (_, b) => b),
  });
  for (const ctx of ctxs)
    for (const Bn of batches) {
      let i = 0;
      try {
        const reps = Bn >= 64 ? 8 : steps;
        const bytes = decodeBytes(spec, Bn, ctx, cache.kvDtype === 'bf16' ? 2 : 4), floorMs = (bytes / (copyGBs * 1e9)) * 1e3;
        // Eager (one launch per kernel) and CUDA-graph replay of the same steps, same process.
        for (const mode of values.graphs ? ['eager', 'graph-staged', 'graph', 'graph+download'] : ['eager']) {
          const graph = mode !== 'eager';
          if (be.graphs) be.graphs.directReplay = mode !== 'graph-staged';
          const step = (): void => {
            const b = decodeBatch(Bn, ctx, i++ % 8);
            const logits = graph ? be.runStep(b, () => model.forward(b, cache), [model, cache]) : model.forward(b, cache);
            if (mode === 'graph+download') be.download(logits);
          };
          const before = { ...(be.graphs?.stats ?? {}) }, allocs0 = c.mem.allocations;
          const ms = timeIt(step, reps, graph ? 3 : 2);
          const st = be.graphs?.stats;
          const nRep = st ? st.replays - (before.replays ?? 0) : 0, nDirect = st ? st.direct - (before.direct ?? 0) : 0;
          const fill = st && nRep > nDirect ? (st.fillMs - (before.fillMs ?? 0)) / (nRep - nDirect) : 0;
          const host = st && nDirect > 0 ? (st.directMs - (before.directMs ?? 0)) / nDirect : 0;
          const note = graph && st ? ` [graph replays ${nRep} (direct ${nDirect}), captures ${st.captures - (before.captures ?? 0)}, host ${nDirect > 0 ? `direct replay ${host.toFixed(3)}` : `staging pass ${fill.toFixed(3)}`} ms/step, device allocations ${c.mem.allocations - allocs0}]` : '';
          log(`decode B=${Bn} ctx=${ctx} ${mode}: ${ms.toFixed(2)} ms/step, ${((Bn / ms) * 1e3).toFixed(0)} tok/s; byte floor ${(bytes / 1e9).toFixed(2)} GB → ${floorMs.toFixed(2)} ms (${((floorMs / ms) * 100).toFixed(1)}% of floor)${note}`);
          results.push({ kind: 'decode', mode, kvCacheDtype: cache.kvDtype, batch: Bn, ctx, msPerStep: ms, tokPerS: (Bn / ms) * 1e3, floorBytes: bytes, floorMs, floorRatio: floorMs / ms, hostMs: nDirect > 0 ? host : fill });
        }
      } catch (e) {
        log(`decode B=${Bn} ctx=${ctx}: FAILED ${(e as Error).message}`);
        results.push({ kind: 'decode', batch: Bn, ctx, error: (e as Error).message });
      }
    }

  if (values.profile) {
    // Batch-1 wall time the way the previous bench measured it (logits downloaded each step), then
    // a per-kernel breakdown from events around every launch.
    const ctx = ctxs[0];
    const wall: number[] = [];
    for (let i = 0; i < steps; i++) {
      const w0 = performance.now();
      be.download(model.forward(decodeBatch(1, ctx, i % 8), cache));
      if (i >= 3) wall.push(performance.now() - w0);
    }
    log(`\nbatch-1 decode at ctx ${ctx} with logits download: ${median(wall).toFixed(3)} ms/token (${(1000 / median(wall)).toFixed(1)} tok/s)`);
    // Per-kernel breakdown at each --profile-batch size (eager steps, events around every launch).
    for (const Bp of values['profile-batch']!.split(',').map(Number)) {
      c.startProfile();
      const ps = 5;
      for (let i = 0; i < ps; i++) model.forward(decodeBatch(Bp, ctx, i), cache);
      const prof = [...c.stopProfile().entries()].map(([name, v]) => ({ name, ms: v.ms / ps, launches: v.launches / ps })).sort((a, b) => b.ms - a.ms);
      const sum = prof.reduce((a, p) => a + p.ms, 0);
      log(`\nbatch-${Bp} decode at ctx ${ctx}, per kernel (sum ${sum.toFixed(3)} ms/step):`);
      log('| kernel | ms/step | launches/step | share |\n| --- | --- | --- | --- |');
      for (const p of prof.slice(0, 16)) log(`| ${p.name} | ${p.ms.toFixed(3)} | ${p.launches} | ${((p.ms / sum) * 100).toFixed(1)}% |`);
      results.push({ kind: 'profile', batch: Bp, ctx, wallMsWithDownload: Bp === 1 ? median(wall) : undefined, kernels: prof });
    }
  }
  const outPath = resolve(ROOT, values.out!);
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, JSON.stringify({ device: be.device, geometry: values.geometry, copyGBs, gemmTflops, results, date: new Date().toISOString() }, null, 2) + '\n');
  log(`wrote ${outPath}`);
  be.dispose();
}

main();
