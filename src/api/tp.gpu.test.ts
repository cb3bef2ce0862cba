/**
 * Tensor parallelism on real GPUs (issue 6): TP 2 (and TP 4 with four GPUs) against TP 1 on the
 * same device kind, greedy tokens identical and logits within f32 tolerance (scale-relative 1e-4:
 * f32 activations, the same bf16 weights, only the summation order differs); a killed rank makes
 * the next step throw instead of hanging. Decode steps also run as CUDA graphs with the NCCL calls
 * captured inside (Model.step: every rank captures and replays in lockstep): the same tokens as
 * TP 1 and as TP N eager, and a rank killed while a replayed graph waits on it is detected too.
 * Skips without two GPUs or libnccl.
 */
import { spawn } from 'node:child_process';
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
/** runPrompt for device backends: logits come back through download(); `graphs`: through Model.step. */
function runPrompt(h: Harness, ids: readonly number[], chunk: number, seq?: CacheSeq, graphs = false): { logits: Float64Array[]; seq: CacheSeq } {
  const s = seq ?? h.cache.allocSeq()!;
  const start0 = s.length;
  if (!h.cache.reserve(s, start0 + ids.length)) throw new Error('cache full');
  const out: Float64Array[] = [];
  for (let i = 0; i < ids.length; i += chunk) {
    const len = Math.min(chunk, ids.length - i), ctx = start0 + i;
    const batch = { ids: Int32Array.from(ids.slice(i, i + len)), positions: Int32Array.from({ length: len }, (_, j) => ctx + j), seqs: [{ seq: s, start: 0, len, ctxStart: ctx }], sampleRows: Int32Array.from({ length: len }, (_, j) => j) };
    const logits = graphs ? h.model.step(batch, h.cache) : h.model.forward(batch, h.cache);
    const all = h.model.be.download(logits), V = logits.shape[1];
    for (let j = 0; j < len; j++) out.push(Float64Array.from(all.subarray(j * V, (j + 1) * V)));
  }
  return { logits: out, seq: s };
}

function greedy(h: Harness, prompt: number[], steps: number, graphs = false): { logits: Float64Array[]; tokens: number[] } {
  const { logits, seq } = runPrompt(h, prompt, 4, undefined, graphs);
  const tokens: number[] = [];
  for (let i = 0; i < steps; i++) {
    tokens.push(argmax(logits[logits.length - 1]));
    logits.push(...runPrompt(h, [tokens[i]], 1, seq, graphs).logits);
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
        const worstOf = (a: Float64Array[], b: Float64Array[]): number => {
          let worst = 0;
          for (let p = 0; p < b.length; p++) {
            let err = 0, scale = 0;
            for (let i = 0; i < b[p].length; i++) {
              err = Math.max(err, Math.abs(a[p][i] - b[p][i]));
              scale = Math.max(scale, Math.abs(b[p][i]));
            }
            worst = Math.max(worst, err / scale);
          }
          return worst;
        };
        const many = greedy(h, prompt, 12);
        assert.deepEqual(many.tokens, one.tokens);
        const worst = worstOf(many.logits, one.logits);
        console.log(`${name} TP ${size}: worst scale-relative logit error ${worst.toExponential(2)}, tokens ${many.tokens.join(' ')}`);
        assert.ok(worst <= 1e-4, `worst ${worst}`);
        // The same decode as CUDA graphs with the collectives captured, on every rank.
        const st = group.be.graphs!.stats, before = { ...st };
        const graphed = greedy(h, prompt, 12, true);
        assert.deepEqual(graphed.tokens, one.tokens);
        const vsOne = worstOf(graphed.logits, one.logits), vsEager = worstOf(graphed.logits, many.logits);
        const replays = st.replays - before.replays, direct = st.direct - before.direct, captures = st.captures - before.captures;
        console.log(`${name} TP ${size} graphs: ${captures} captures, ${replays} replays (${direct} direct) of 13 decode-shaped steps; worst error vs TP 1 ${vsOne.toExponential(2)}, vs TP ${size} eager ${vsEager.toExponential(2)}`);
        assert.ok(replays >= 10, `only ${replays} replays`);
        assert.ok(vsOne <= 1e-4 && vsEager <= 1e-4, `worst ${vsOne} / ${vsEager}`);
      } finally {
        await group.shutdown();
      }
    });
  }
}

test('tp gpu: a killed rank makes the next step throw TpRankError (no hang)', { skip }, async () => {
  let reported: TpRankError | null = null;
  const { h, group } = await tpHarness(brown, 2, (e) => (reported = e));
  greedy(h, [1, 2, 3, 4, 5], 4, true);
  process.kill(group.pids[0], 'SIGKILL');
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  assert.throws(() => greedy(h, [6, 7, 8, 9], 4, true), TpRankError);
  console.log(`dead rank detected in ${Date.now() - t0} ms; reported: ${String(reported)}`);
  await group.shutdown();
});

// Opt-in (BAILING_TP_KILL_MID_STEP=1): the step throws as it should (2× H100: after 1002 ms, the kill
// at ~1000 ms), but this process then spins at exit on the collective left waiting for the dead rank
// (ncclCommAbort cannot release it: it blocks too), so the file never ends. Known issue, issue 6.
const midStep = process.env.BAILING_TP_KILL_MID_STEP === '1' ? skip : 'opt-in: BAILING_TP_KILL_MID_STEP=1 (the process hangs at exit afterwards)';
test('tp gpu: a rank killed while a replayed decode graph waits on it makes the step throw TpRankError', { skip: midStep }, async () => {
  const { h, group } = await tpHarness(brown, 2);
  const { seq } = runPrompt(h, [1, 2, 3, 4, 5], 4, undefined, true);
  for (let i = 0; i < 4; i++) runPrompt(h, [7], 1, seq, true); // warm-up, capture, replays
  const st = group.be.graphs!.stats, replays = st.replays;
  assert.ok(replays >= 2, `only ${replays} replays`);
  // The stopped rank still takes the frame (its FIFO is open) but never runs it: rank 0's replayed
  // all-reduce waits on it until it is killed a second later (by a process of its own: this one is blocked).
  const pid = group.pids[0];
  process.kill(pid, 'SIGSTOP');
  spawn('sh', ['-c', `sleep 1; kill -9 ${pid}`], { stdio: 'ignore', detached: true }).unref();
  const t0 = Date.now();
  assert.throws(() => runPrompt(h, [8], 1, seq, true), TpRankError);
  const ms = Date.now() - t0;
  assert.equal(st.replays, replays + 1, 'the step was not a graph replay');
  console.log(`rank killed during a replayed graph: TpRankError after ${ms} ms (kill at ~1000 ms)`);
  assert.ok(ms >= 900, `threw after ${ms} ms, before the rank was killed`);
  await group.shutdown();
});
