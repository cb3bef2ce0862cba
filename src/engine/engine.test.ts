import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CpuBackend } from '../backend/cpu/cpu-backend.js';
import { argmax, harness, runPrompt } from '../model/test-harness.js';
import { InvalidRequestError } from '../util/errors.js';
import { Prng } from '../util/prng.js';
import { Engine, type GenerateResult } from './engine.js';
import { openModel, type OpenOptions, type OpenedModel } from './open.js';
import { resolveSamplingParams, type SamplingParamsInput } from './sampler.js';

/** models/tiny-random, found from the package root (cwd, or above the compiled file). */
function tinyDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const base of [process.cwd(), resolve(here, '../../..'), resolve(here, '../..')]) {
    const d = join(base, 'models/tiny-random');
    if (existsSync(join(d, 'config.json'))) return d;
  }
  throw new Error('models/tiny-random not found (run from the package root)');
}
const TINY = tinyDir();

function randomIds(n: number, seed: number, vocab = 256): number[] {
  const rng = new Prng(seed);
  return Array.from({ length: n }, () => rng.int(vocab));
}

function greedy(maxTokens: number, extra: SamplingParamsInput = {}): ReturnType<typeof resolveSamplingParams> {
  return resolveSamplingParams({ temperature: 0, maxTokens, ignoreEos: true, ...extra });
}

async function withModel<T>(opts: OpenOptions, fn: (m: OpenedModel, be: CpuBackend) => Promise<T> | T): Promise<T> {
  const be = new CpuBackend({ threads: 2 });
  try {
    return await fn(await openModel(TINY, be, opts), be);
  } finally {
    be.dispose();
  }
}

/** Submit all, run to idle, await all. */
async function runAll(engine: Engine, reqs: Parameters<Engine['submit']>[0][]): Promise<GenerateResult[]> {
  const ps = reqs.map((r) => engine.submit(r));
  engine.runUntilIdle();
  return Promise.all(ps);
}


function assertCacheEmpty(engine: Engine): void {
  const c = engine.cache;
  assert.equal(c.freeSlotCount, c.opts.maxSeqs, 'every state slot is free');
  assert.equal(c.freeBlockCount, c.opts.numBlocks, 'every latent block is free');
  assert.equal(c.liveCount, 0, 'no live sequence');
  assert.equal(engine.pending, 0);
}

test('greedy generation is deterministic and equals a hand-rolled forward + argmax loop', async () => {
  const prompt = randomIds(23, 1);
  const N = 16;
  await withModel({}, async (m, be) => {
    const a = await runAll(m.engine, [{ promptIds: prompt, params: greedy(N) }]);
    const b = await runAll(m.engine, [{ promptIds: prompt, params: greedy(N) }]);
    assert.deepEqual(b[0].tokenIds, a[0].tokenIds, 'same prompt twice → same tokens');
    assert.equal(a[0].tokenIds.length, N);
    assert.equal(a[0].promptTokens, prompt.length);

    // Independent loop: one prefill, then single-token decodes on a fresh model and cache.
    const h = harness(TINY, be);
    let { logits, seq } = runPrompt(h, prompt, prompt.length);
    const want: number[] = [];
    for (let i = 0; i < N; i++) {
      const t = argmax(logits[logits.length - 1]);
      want.push(t);
      if (i < N - 1) logits = runPrompt(h, [t], 1, seq).logits;
    }
    assert.deepEqual(a[0].tokenIds, want);
    assertCacheEmpty(m.engine);
  });
});

test('finish reasons: max_tokens → length; eos / stop_token_ids → stop; ignoreEos; stop strings; streamed deltas', async () => {
  await withModel({}, async (m) => {
    const prompt = m.tokenizer.encode('the quick brown fox jumps over the lazy dog');
    const deltas: string[] = [];
    const deltaIds: number[] = [];
    const [base] = await runAll(m.engine, [
      { promptIds: prompt, params: greedy(24), onDelta: (t, ids) => (deltas.push(t), deltaIds.push(...ids)) },
    ]);
    assert.equal(base.finishReason, 'length');
    assert.equal(base.tokenIds.length, 24);
    assert.equal(base.stoppedBy, null);
    assert.equal(deltas.join(''), base.text, 'deltas concatenate to the final text');
    assert.deepEqual(deltaIds, base.tokenIds, 'delta ids concatenate to the token ids');

    for (const n of [1, 5]) {
      const [r] = await runAll(m.engine, [{ promptIds: prompt, params: greedy(n) }]);
      assert.equal(r.finishReason, 'length');
      assert.deepEqual(r.tokenIds, base.tokenIds.slice(0, n));
    }

    // A generated token as stop_token_ids: ends at its first occurrence, included in tokenIds.
    const t = base.tokenIds[5];
    const first = base.tokenIds.indexOf(t);
    const [byId] = await runAll(m.engine, [{ promptIds: prompt, params: greedy(24, { stopTokenIds: [t] }) }]);
    assert.equal(byId.finishReason, 'stop');
    assert.equal(byId.stoppedBy, t);
    assert.deepEqual(byId.tokenIds, base.tokenIds.slice(0, first + 1));

    // The same token as an eos id of an engine; ignoreEos runs through it.
    const eosEngine = new Engine(m.engine.model, m.engine.cache, m.tokenizer, { maxModelLen: m.maxModelLen, eosIds: [t] });
    const [eos] = await runAll(eosEngine, [{ promptIds: prompt, params: greedy(24, { ignoreEos: false }) }]);
    assert.equal(eos.finishReason, 'stop');
    assert.equal(eos.stoppedBy, t);
    assert.deepEqual(eos.tokenIds, base.tokenIds.slice(0, first + 1));
    const [ign] = await runAll(eosEngine, [{ promptIds: prompt, params: greedy(24, { ignoreEos: true }) }]);
    assert.equal(ign.finishReason, 'length');
    assert.deepEqual(ign.tokenIds, base.tokenIds);

    // A stop string taken from the middle of the text: output stops before it and excludes it.
    const chars = [...base.text];
    let at = -1;
    for (let i = Math.floor(chars.length / 3); i < chars.length; i++)
      if (chars[i] !== '\uFFFD' && chars[i].trim() !== '') {
        at = i;
        break;
      }
    assert.ok(at >= 0, `no usable stop character in ${JSON.stringify(base.text)}`);
    const stop = chars[at];
    const cut = base.text.indexOf(stop);
    const sDeltas: string[] = [];
    const [byStr] = await runAll(m.engine, [{ promptIds: prompt, params: greedy(24, { stop: [stop] }), onDelta: (x) => sDeltas.push(x) }]);
    assert.equal(byStr.finishReason, 'stop');
    assert.equal(byStr.stoppedBy, stop);
    assert.equal(byStr.text, base.text.slice(0, cut));
    assert.ok(!byStr.text.includes(stop));
    assert.equal(sDeltas.join(''), byStr.text);
    assert.deepEqual(byStr.tokenIds, base.tokenIds.slice(0, byStr.tokenIds.length), 'tokens are a prefix of the unstopped run');
    assert.ok(byStr.tokenIds.length < 24);
    assertCacheEmpty(m.engine);
  });
});

test('seeded sampling at temperature 1 is reproducible; another seed differs', async () => {
  await withModel({}, async (m) => {
    const prompt = randomIds(10, 3);
    const params = (seed: number) => resolveSamplingParams({ temperature: 1, seed, maxTokens: 24, ignoreEos: true });
    const [a] = await runAll(m.engine, [{ promptIds: prompt, params: params(7) }]);
    const [b] = await runAll(m.engine, [{ promptIds: prompt, params: params(7) }]);
    const [c] = await runAll(m.engine, [{ promptIds: prompt, params: params(8) }]);
    assert.deepEqual(b.tokenIds, a.tokenIds);
    assert.notDeepEqual(c.tokenIds, a.tokenIds);
    // Concurrency does not change a seeded request's tokens.
    const [d] = await runAll(m.engine, [
      { promptIds: prompt, params: params(7) },
      { promptIds: randomIds(30, 4), params: params(9) },
    ]);
    assert.deepEqual(d.tokenIds, a.tokenIds);
  });
});

test('batch invariance: each of 8 concurrent greedy requests equals the request run alone', async () => {
  await withModel({}, async (m) => {
    const prompts = [23, 1, 7, 40, 16, 17, 3, 64].map((n, i) => randomIds(n, 100 + i));
    const maxTok = [12, 9, 14, 5, 12, 1, 10, 8];
    const reqs = prompts.map((p, i) => ({ promptIds: p, params: greedy(maxTok[i]) }));
    const together = await runAll(m.engine, reqs);
    for (let i = 0; i < reqs.length; i++) {
      const [alone] = await runAll(m.engine, [reqs[i]]);
      assert.deepEqual(together[i].tokenIds, alone.tokenIds, `request ${i}`);
      assert.equal(together[i].tokenIds.length, maxTok[i]);
    }
    assertCacheEmpty(m.engine);
  });
});

test('chunked prefill: maxBatchTokens 8 gives the same greedy tokens as 256 (60-token prompt)', async () => {
  const prompt = randomIds(60, 5);
  const others = [randomIds(13, 6), randomIds(5, 7)];
  const run = (maxBatchTokens: number) =>
    withModel({ maxBatchTokens }, (m) => runAll(m.engine, [prompt, ...others].map((p) => ({ promptIds: p, params: greedy(10) }))));
  const big = await run(256);
  const small = await run(8);
  for (let i = 0; i < big.length; i++) assert.deepEqual(small[i].tokenIds, big[i].tokenIds, `request ${i}`);
});

test('preemption: a cache too small for all requests still completes them with the same tokens', async () => {
  const prompts = [20, 18, 25, 12, 30].map((n, i) => randomIds(n, 200 + i));
  // Request 2 samples (seeded): a preempted request keeps its tokens and its Prng, so it too is unchanged.
  const reqs = prompts.map((p, i) => ({
    promptIds: p,
    params: i === 2 ? resolveSamplingParams({ temperature: 1, seed: 11, maxTokens: 20, ignoreEos: true }) : greedy(20),
  }));
  const big = await withModel({}, async (m) => {
    const r = await runAll(m.engine, reqs);
    assert.equal(m.engine.preemptions, 0);
    return r;
  });
  // 6 blocks of 16 tokens; each request needs 3 blocks by its end.
  await withModel({ cacheTokens: 96, blockSize: 16 }, async (m) => {
    const small = await runAll(m.engine, reqs);
    assert.ok(m.engine.preemptions > 0, 'expected preemptions');
    for (let i = 0; i < reqs.length; i++) {
      assert.equal(small[i].finishReason, 'length');
      assert.deepEqual(small[i].tokenIds, big[i].tokenIds, `request ${i}`);
    }
    assertCacheEmpty(m.engine);
  });
});

test('invalid requests: empty prompt, prompt not shorter than the context, out-of-vocab ids', async () => {
  await withModel({ maxModelLen: 64 }, (m) => {
    const e = m.engine;
    const V = e.model.spec.config.vocab_size;
    const p = greedy(4);
    const bad: number[][] = [[], randomIds(65, 1), randomIds(64, 1), [1, V, 2], [-1], [1.5], [Number.NaN]];
    for (const ids of bad) assert.throws(() => e.submit({ promptIds: ids, params: p }), InvalidRequestError, JSON.stringify(ids.slice(0, 4)));
    assert.equal(e.pending, 0, 'rejected requests are not queued');
    // The largest valid prompt leaves room for one token and ends with 'length' at the context.
    const pr = e.submit({ promptIds: randomIds(63, 2), params: greedy(10) });
    e.runUntilIdle();
    return pr.then((r) => {
      assert.equal(r.finishReason, 'length');
      assert.equal(r.tokenIds.length, 1);
    });
  });
});

test('a request that could not fit the whole cache on its own is refused up front', async () => {
  await withModel({ cacheTokens: 32 }, (m) => {
    assert.throws(
      () => void m.engine.submit({ promptIds: randomIds(20, 3), params: greedy(40, { ignoreEos: true }) }),
      (e: unknown) => e instanceof InvalidRequestError && /exceeds the cache \(32 tokens\)/.test(e.message),
    );
    assert.equal(m.engine.pending, 0);
  });
});
