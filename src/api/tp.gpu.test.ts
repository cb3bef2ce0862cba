/**
 * Tensor parallelism on real GPUs (issue 6): TP 2 (and TP 4 with four GPUs) against TP 1 on the
 * same device kind, greedy tokens identical and logits within f32 tolerance (scale-relative 1e-4:
 * f32 activations, the same bf16 weights, only the summation order differs); a killed rank makes
 * the next step throw instead of hanging. Skips without two GPUs or libnccl.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CudaBackend, cudaUnavailableReason } from '../backend/cuda/cuda-backend.js';
import { CudaDriver, Nccl } from '../backend/cuda/driver.js';
import { HybridCache } from '../cache/hybrid-cache.js';
import { engineSizes, type OpenOptions } from '../engine/open.js';
import { cacheGeometry } from '../model/cache-spec.js';
import { Model } from '../model/forward.js';
import { loadModelDir } from '../model/load.js';
import { harness, type Harness } from '../model/test-harness.js';
import type { CacheSeq } from '../cache/hybrid-cache.js';
import { tinyConfig, writeTinyModel } from '../model/tiny-checkpoint.js';
import { Prng } from '../util/prng.js';
import { TpGroup, TpRankError } from './tp.js';

function gpus(): number {
  if (cudaUnavailableReason() !== null) return 0;
  try {
    Nccl.open();
  } catch {
    return 0;
  }
  return CudaDriver.open().deviceCount();
}
const n = gpus();
const skip = n < 2 ? `needs 2 GPUs and libnccl (found ${n} usable)` : false;
const OPEN: OpenOptions = { maxBatchTokens: 64, maxSeqs: 4, blockSize: 16, cacheTokens: 4096 };

function argmax(v: Float64Array): number {
  let b = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[b]) b = i;
  return b;
}
/** runPrompt for device backends: logits come back through download(). */
function runPrompt(h: Harness, ids: readonly number[], chunk: number, seq?: CacheSeq): { logits: Float64Array[]; seq: CacheSeq } {
  const s = seq ?? h.cache.allocSeq()!;
  const start0 = s.length;
  if (!h.cache.reserve(s, start0 + ids.length)) throw new Error('cache full');
  const out: Float64Array[] = [];
  for (let i = 0; i < ids.length; i += chunk) {
    const len = Math.min(chunk, ids.length - i), ctx = start0 + i;
    const batch = { ids: Int32Array.from(ids.slice(i, i + len)), positions: Int32Array.from({ length: len }, (_, j) => ctx + j), seqs: [{ seq: s, start: 0, len, ctxStart: ctx }], sampleRows: Int32Array.from({ length: len }, (_, j) => j) };
    const logits = h.model.forward(batch, h.cache);
    const all = h.model.be.download(logits), V = logits.shape[1];
    for (let j = 0; j < len; j++) out.push(Float64Array.from(all.subarray(j * V, (j + 1) * V)));
  }
  return { logits: out, seq: s };
}

function greedy(h: Harness, prompt: number[], steps: number): { logits: Float64Array[]; tokens: number[] } {
  const { logits, seq } = runPrompt(h, prompt, 4);
  const tokens: number[] = [];
  for (let i = 0; i < steps; i++) {
    tokens.push(argmax(logits[logits.length - 1]));
    logits.push(...runPrompt(h, [tokens[i]], 1, seq).logits);
  }
  h.cache.free(seq);
  return { logits, tokens };
}
async function tpHarness(dir: string, size: number, onExit?: (e: TpRankError) => void): Promise<{ h: Harness; group: TpGroup }> {
  const group = await TpGroup.start(size, { dir }, OPEN, onExit ?? (() => {}));
  const { spec, weights } = loadModelDir(dir, group.be, 'default', undefined, { rank: 0, size });
  const z = engineSizes(spec.config, OPEN);
  const model = new Model(group.be, spec, weights, z.maxBatchTokens, z.maxSampleRows, z.blockSize, group);
  const cache = new HybridCache(group.be, cacheGeometry(spec), { maxSeqs: z.maxSeqs, numBlocks: z.numBlocks, blockSize: z.blockSize });
  return { h: { model, cache }, group };
}

const root = mkdtempSync(join(tmpdir(), 'bailing-tp-gpu-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
const brown = resolve(dirname(fileURLToPath(import.meta.url)), '../../../models/tiny-brown');
const tp4 = join(root, 'tp4');
writeTinyModel(tp4, tinyConfig({ vocab_size: 94, group_norm_size: 4, intermediate_size: 40, q_lora_rank: null }), { seed: 21, dtype: 'BF16' });

for (const [name, dir, vocab, sizes] of [['tiny-brown', brown, 4096, [2]], ['tiny gns4 vocab 94', tp4, 94, [2, 4]]] as const) {
  for (const size of sizes) {
    test(`tp gpu: ${name} TP ${size} = TP 1 (greedy tokens, logits)`, { skip: skip || (size > n ? `needs ${size} GPUs` : false) }, async () => {
      const rng = new Prng(5);
      const prompt = Array.from({ length: 13 }, () => rng.int(vocab));
      const be1 = new CudaBackend({ device: 0 });
      const one = greedy(harness(dir, be1, 'default', 64, 16), prompt, 12);
      be1.dispose();
      const { h, group } = await tpHarness(dir, size);
      try {
        const many = greedy(h, prompt, 12);
        assert.deepEqual(many.tokens, one.tokens);
        let worst = 0;
        for (let p = 0; p < one.logits.length; p++) {
          let err = 0, scale = 0;
          for (let i = 0; i < one.logits[p].length; i++) {
            err = Math.max(err, Math.abs(many.logits[p][i] - one.logits[p][i]));
            scale = Math.max(scale, Math.abs(one.logits[p][i]));
          }
          worst = Math.max(worst, err / scale);
        }
        console.log(`${name} TP ${size}: worst scale-relative logit error ${worst.toExponential(2)}, tokens ${many.tokens.join(' ')}`);
        assert.ok(worst <= 1e-4, `worst ${worst}`);
      } finally {
        await group.shutdown();
      }
    });
  }
}

test('tp gpu: a killed rank makes the next step throw TpRankError (no hang)', { skip }, async () => {
  let reported: TpRankError | null = null;
  const { h, group } = await tpHarness(brown, 2, (e) => (reported = e));
  greedy(h, [1, 2, 3, 4, 5], 2);
  process.kill(group.pids[0], 'SIGKILL');
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  assert.throws(() => greedy(h, [6, 7, 8, 9], 4), TpRankError);
  console.log(`dead rank detected in ${Date.now() - t0} ms; reported: ${String(reported)}`);
  await group.shutdown();
});
