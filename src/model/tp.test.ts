/**
 * Tensor parallelism on the CPU (spec §7): N ranks as worker threads of this process, each a
 * CpuBackend holding only its shards, summing through a SharedArrayBuffer (SharedMemoryComm). TP 2
 * and TP 4 must give TP 1's logits (scale-relative 1e-5) and greedy tokens, prefill in chunks and
 * then decode. This file is also the ranks' worker script (isMainThread false).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { CpuBackend } from '../backend/cpu/cpu-backend.js';
import { SharedMemoryComm } from '../backend/cpu/shared-comm.js';
import { ModelLoadError } from '../util/errors.js';
import { Prng } from '../util/prng.js';
import { buildSpec, parseConfig } from './config.js';
import { argmax, harness, runPrompt, type Harness } from './test-harness.js';
import { tinyConfig, writeTinyModel } from './tiny-checkpoint.js';
import { ringLinearVariants, tinyVariants } from './tiny-configs.js';

interface Job {
  readonly dir: string;
  readonly prompt: readonly number[];
  readonly chunk: number;
  readonly steps: number;
}
interface Run {
  readonly logits: Float64Array[];
  readonly tokens: number[];
}


/** Prefill in chunks, then `steps` greedy decode steps; every position's logits. */
function greedy(h: Harness, job: Job): Run {
  const { logits, seq } = runPrompt(h, job.prompt, job.chunk);
  const tokens: number[] = [];
  for (let i = 0; i < job.steps; i++) {
    tokens.push(argmax(logits[logits.length - 1]));
    logits.push(...runPrompt(h, [tokens[i]], 1, seq).logits);
  }
  return { logits, tokens };
}

if (!isMainThread) {
  const { job, rank, size, sab } = workerData as { job: Job; rank: number; size: number; sab: SharedArrayBuffer };
  const be = new CpuBackend({ threads: 1, comm: new SharedMemoryComm(sab, rank, size) });
  try {
    const run = greedy(harness(job.dir, be, 'default', 64, 16, { rank, size }), job);
    parentPort!.postMessage({ ok: true, run });
  } catch (e) {
    parentPort!.postMessage({ ok: false, error: (e as Error).stack ?? String(e) });
  } finally {
    be.dispose();
  }
} else {
  const root = mkdtempSync(join(tmpdir(), 'bailing-tp-'));
  process.on('exit', () => rmSync(root, { recursive: true, force: true }));
  const self = fileURLToPath(import.meta.url);

  /** Every rank's run (rank order), each in its own worker thread. */
  const runRanks = (job: Job, size: number): Promise<Run[]> => {
    const sab = SharedMemoryComm.buffer(size, 1 << 18);
    return Promise.all(
      Array.from({ length: size }, (_, rank) =>
        new Promise<Run>((ok, fail) => {
          const w = new Worker(self, { workerData: { job, rank, size, sab } });
          w.once('message', (m: { ok: boolean; run?: Run; error?: string }) => (m.ok ? ok(m.run!) : fail(new Error(`rank ${rank}: ${m.error}`))));
          w.once('error', fail);
        }),
      ),
    );
  };

  const check = async (dir: string, vocab: number, sizes: readonly number[], seed: number): Promise<void> => {
    const rng = new Prng(seed);
    const job: Job = { dir, prompt: Array.from({ length: 11 }, () => rng.int(vocab)), chunk: 4, steps: 6 };
    const be = new CpuBackend({ threads: 1 });
    const one = greedy(harness(dir, be, 'default', 64, 16), job);
    be.dispose();
    for (const size of sizes) {
      const runs = await runRanks(job, size);
      for (const [rank, run] of runs.entries()) {
        assert.deepEqual(run.tokens, one.tokens, `tp ${size} rank ${rank}: greedy tokens`);
        for (let p = 0; p < one.logits.length; p++) {
          const a = run.logits[p], b = one.logits[p];
          let err = 0, scale = 0;
          for (let i = 0; i < b.length; i++) {
            err = Math.max(err, Math.abs(a[i] - b[i]));
            scale = Math.max(scale, Math.abs(b[i]));
          }
          assert.ok(err <= 1e-5 * scale, `tp ${size} rank ${rank} position ${p}: max|Δ| ${err.toExponential(2)} vs scale ${scale.toExponential(2)}`);
        }
      }
    }
  };

  // Heads 4, group_norm_size 2: TP 2. The port variant checks stacked-expert slicing.
  for (const v of tinyVariants.filter((x) => ['base', 'port', 'softmax'].includes(x.name))) {
    test(`tp: ${v.name} at TP 2 matches TP 1 (logits, greedy tokens)`, async () => {
      const dir = join(root, v.name);
      writeTinyModel(dir, v.config, v.opts);
      await check(dir, v.config.vocab_size as number, [2], 7);
    });
  }

  test('tp: TP 2 and 4 with group_norm_size 4, bias flags, bf16 weights and a vocabulary 4 does not divide (padded)', async () => {
    const config = tinyConfig({ vocab_size: 94, group_norm_size: 4, intermediate_size: 40, use_bias: true, use_qkv_bias: true, q_lora_rank: null });
    const dir = join(root, 'tp4');
    writeTinyModel(dir, config, { seed: 21, dtype: 'BF16' });
    await check(dir, 94, [2, 4], 8);
  });

  test('tp: Ring-linear (GQA, 2 KV heads) at TP 2', async () => {
    const v = ringLinearVariants[0];
    const dir = join(root, v.name);
    writeTinyModel(dir, v.config, v.opts);
    await check(dir, v.config.vocab_size as number, [2], 9);
  });

  test('tp: the shipped tiny-brown model at TP 2', async () => {
    const dir = resolve(dirname(self), '../../../models/tiny-brown');
    await check(dir, 4096, [2], 10);
  });

  test('tp: sizes tp does not divide fail with a ModelLoadError naming the key', () => {
    const spec = (over: Record<string, unknown>, size: number): void => {
      const { config, naming } = parseConfig(tinyConfig(over));
      buildSpec(config, naming, 'default', { rank: 0, size });
    };
    assert.throws(() => spec({}, 3), (e: unknown) => e instanceof ModelLoadError && /num_attention_heads = 4/.test(e.message));
    assert.throws(() => spec({}, 4), (e: unknown) => e instanceof ModelLoadError && /exceeds group_norm_size 2/.test(e.message));
    assert.throws(() => spec({ group_norm_size: 1 }, 2), (e: unknown) => e instanceof ModelLoadError && /group_norm_size/.test(e.message));
    assert.throws(() => spec({ group_norm_size: 4, moe_intermediate_size: 6, moe_shared_expert_intermediate_size: 6 }, 4), (e: unknown) => e instanceof ModelLoadError && /moe_intermediate_size = 6/.test(e.message));
    assert.doesNotThrow(() => spec({ vocab_size: 97 }, 2)); // vocabulary is padded, not required to divide
  });
}
