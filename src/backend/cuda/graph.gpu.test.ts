/**
 * Decode steps replayed as CUDA graphs equal the same steps launched eagerly: two caches filled by
 * the same prompts, then batches of B sequences at different contexts decode greedily side by side
 * (eager forward vs be.runStep); tokens identical, logits NMSE ≤ 1e-6 (the kernels are the same,
 * so in practice 0). Replays are direct (arguments written from the batch, no model host code),
 * each checked against the staging pass (BAILING_GRAPH_VERIFY). Mid-run, one sequence is preempted
 * (a new slot and blocks, re-prefilled eagerly) and a larger eager step moves the scratch the
 * graphs point into (they are dropped and recaptured); with block size 4 a block table crosses a
 * power of two (another graph). The replayed steps allocate no device memory and, with
 * BAILING_NO_COMPILE=1, compile nothing. Skips without a CUDA device.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HybridCache, type CacheSeq } from '../../cache/hybrid-cache.js';
import { cacheGeometry } from '../../model/cache-spec.js';
import { Model } from '../../model/forward.js';
import { loadModelDir } from '../../model/load.js';
import type { StepBatch } from '../../model/step.js';
import { tinyConfig, writeTinyModel } from '../../model/tiny-checkpoint.js';
import { realHeadVariant } from '../../model/tiny-configs.js';
import { compare } from '../../util/compare.js';
import { Prng } from '../../util/prng.js';
import { CudaBackend, cudaUnavailableReason } from './cuda-backend.js';
import { argmax } from '../../model/test-harness.js';

const reason = cudaUnavailableReason();
const skip = reason === null ? false : `no CUDA device: ${reason}`;
const NMSE_MAX = 1e-6;


describe('cuda decode graphs vs eager', { skip }, () => {
  let be: CudaBackend;
  let grow = 1 << 20;
  const root = mkdtempSync(join(tmpdir(), 'bailing-gpu-graph-'));
  before(() => {
    process.env.BAILING_NO_COMPILE = '1'; // read by the graph runner at construction
    be = new CudaBackend();
    be.graphs!.verify = true;
  });
  after(() => {
    be?.dispose();
    delete process.env.BAILING_NO_COMPILE;
    rmSync(root, { recursive: true, force: true });
  });

  // f32 weights (gathered v1 MoE kernels) and bf16 weights (GEMV / device-sorted segmented MoE).
  const models = [
    { name: 'f32', config: tinyConfig(), opts: { seed: 1 } },
    { name: 'bf16', config: tinyConfig({ num_experts: 16, n_group: 4, topk_group: 2, num_experts_per_tok: 4 }), opts: { seed: 7, dtype: 'BF16' as const } },
  ];
  interface GraphCase {
    m: { name: string; config: Record<string, unknown>; opts: { seed: number; dtype?: 'BF16' } };
    B: number;
    blockSize: number;
    lens: number[];
    /** moeGemmMinT for this case (the grouped expert GEMMs from this many rows). */
    minT?: number;
  }
  const cases: GraphCase[] = [
    ...models.flatMap((m) => [1, 3, 8, 12].map((B) => ({ m, B, blockSize: 16, lens: Array.from({ length: B }, (_, b) => 5 + 37 * b) }))),
    // 64 blocks of 4 = 256 tokens: sequence 0 crosses into a 128-block table mid-run.
    { m: models[1], B: 2, blockSize: 4, lens: [236, 60] },
    // Batched decode through the grouped expert GEMMs (moeGemmMinT lowered to 9 here; 16 by
    // default): the device-side permutation and tile schedule inside a captured graph.
    { m: models[1], B: 12, blockSize: 16, lens: Array.from({ length: 12 }, (_, b) => 5 + 37 * b), minT: 9 },
    // kv_lora_rank 512 with the CUDA default bf16 latent pages: the batched tensor-core MLA decode
    // (one launch for all sequences, per-sequence block tables at a common stride) captured and
    // replayed directly; sequence 0 crosses 64 blocks of 4 mid-run (the stride doubles: recaptured).
    { m: { name: 'L512', config: realHeadVariant.config, opts: { seed: 3, dtype: 'BF16' } }, B: 5, blockSize: 4, lens: [240, 3, 60, 17, 100] },
  ];
  for (const { m, B, blockSize, lens, minT } of cases)
      test(`${m.name}: batch ${B}, block ${blockSize}, contexts ${lens[0]}..${lens[B - 1]}${minT ? `, grouped MoE from ${minT} tokens` : ''}: graph replay = eager (tokens, logits NMSE ≤ ${NMSE_MAX})`, (t) => {
        const minT0 = be.c.moeGemmMinT;
        if (minT) be.c.moeGemmMinT = minT;
        t.after(() => void (be.c.moeGemmMinT = minT0));
        const dir = join(root, m.name);
        writeTinyModel(dir, m.config, m.opts);
        const { spec, weights } = loadModelDir(dir, be);
        const model = new Model(be, spec, weights, 512, 16, blockSize);
        const caches = [0, 1].map(() => new HybridCache(be, cacheGeometry(spec), { maxSeqs: 16, numBlocks: (16 * 32 * 16) / blockSize, blockSize }));
        const V = spec.config.vocab_size;
        const rng = new Prng(B * 31 + 5);
        const seqs: CacheSeq[][] = caches.map(() => []);
        const last: number[][] = [[], []];
        // A sequence's prompt prefilled eagerly in both caches (the same new slot and blocks in each).
        const admit = (len: number): [CacheSeq, CacheSeq] => {
          const ids = Array.from({ length: len }, () => rng.int(V));
          const out = caches.map((cache, k) => {
            const s = cache.allocSeq()!;
            assert.ok(cache.reserve(s, len + 40));
            const batch: StepBatch = { ids: Int32Array.from(ids), positions: Int32Array.from(ids, (_, j) => j), seqs: [{ seq: s, start: 0, len: ids.length, ctxStart: 0 }], sampleRows: Int32Array.of(ids.length - 1) };
            last[k].push(argmax(be.download(model.forward(batch, cache))));
            return s;
          });
          return [out[0], out[1]];
        };
        for (let b = 0; b < B; b++) admit(lens[b]).forEach((s, k) => seqs[k].push(s));
        assert.deepEqual(last[1], last[0]);
        const st0 = { ...be.graphs!.stats };
        let allocs = -1, compiled = -1, worst = 0;
        const steps = 24;
        for (let step = 0; step < steps; step++) {
          const out: Float32Array[] = [];
          for (let k = 0; k < 2; k++) {
            const batch: StepBatch = {
              ids: Int32Array.from(last[k]), positions: Int32Array.from(seqs[k], (s) => s.length),
              seqs: seqs[k].map((s, b) => ({ seq: s, start: b, len: 1, ctxStart: s.length })), sampleRows: Int32Array.from({ length: B }, (_, b) => b),
            };
            const fwd = () => model.forward(batch, caches[k]);
            out.push(be.download(k === 0 ? fwd() : be.runStep(batch, fwd, [model, caches[k]])));
          }
          for (let b = 0; b < B; b++) {
            const row = (k: number): Float32Array => out[k].subarray(b * V, (b + 1) * V);
            worst = Math.max(worst, compare(row(1), row(0)).nmse);
            last[0][b] = argmax(row(0));
            last[1][b] = argmax(row(1));
          }
          assert.deepEqual(last[1], last[0], `step ${step}: greedy tokens differ`);
          if (step === 9) {
            // Preempt sequence 0: re-admitted into a new slot and new blocks, then freed.
            const fresh = admit(seqs[0][0].length);
            caches.forEach((cache, k) => {
              cache.free(seqs[k][0]);
              seqs[k][0] = fresh[k];
              last[k][0] = last[k].pop()!;
            });
            assert.deepEqual(last[1], last[0]);
            allocs = -1; // the re-prefill is an eager step and may grow scratch: count again from the next replay
          }
          // From the first replay on, the step loop allocates and compiles nothing.
          if (be.graphs!.stats.replays > st0.replays && allocs < 0) {
            allocs = be.c.mem.allocations;
            compiled = be.c.kernels.stats.compiled;
          }
          if (step === 16) {
            assert.equal(be.c.mem.allocations, allocs, 'device allocations in replayed steps');
            assert.equal(be.c.kernels.stats.compiled, compiled, 'kernel compiles in replayed steps');
            // What a larger eager step (a prefill) does between decodes: scratch the graphs point into moves.
            grow += 1 << 20; // larger than any earlier test's request, so the buffers really move
            for (const key of ['mla-part', 'moe-h', 'moe-y', 'mla-qlat', 'moe-hh', 'moe-yp']) be.c.scratch(key, grow);
          }
        }
        const st = be.graphs!.stats;
        t.diagnostic(`worst NMSE ${worst.toExponential(2)}; eager ${st.eager - st0.eager}, captures ${st.captures - st0.captures}, replays ${st.replays - st0.replays} (direct ${st.direct - st0.direct}), misses ${st.misses - st0.misses}, invalidations ${st.invalidations - st0.invalidations}`);
        assert.ok(worst <= NMSE_MAX, `NMSE ${worst}`);
        assert.ok(st.replays - st0.replays >= steps - 8, `only ${st.replays - st0.replays} of ${steps} steps replayed`);
        assert.ok(st.direct - st0.direct >= steps - 8, `only ${st.direct - st0.direct} of ${steps} steps replayed directly`);
        assert.ok(st.invalidations > st0.invalidations, 'moved scratch did not drop the graphs');
      });
});
