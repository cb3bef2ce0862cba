import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidRequestError } from '../util/errors.js';
import { loadModel, ModelDisposedError, type BailingModel, type LoadProgress } from './model.js';

const open = (opts: { maxNumSeqs?: number } = {}): Promise<BailingModel> => loadModel({ device: 'cpu', threads: 2, seed: 7, ...opts });

function cacheIsFree(m: BailingModel): void {
  const s = m.engine.stats();
  assert.equal(s.freeSlots, s.totalSlots, 'every state slot is free');
  assert.equal(s.freeBlocks, s.totalBlocks, 'every latent block is free');
  assert.equal(s.running + s.waiting, 0);
}

test('loadModel: the embedded model, progress reports, info', async () => {
  const seen: LoadProgress[] = [];
  const m = await loadModel({ device: 'cpu', threads: 2, onProgress: (p) => seen.push(p) });
  try {
    assert.equal(m.info.device, 'cpu');
    assert.equal(m.info.architecture, 'BailingMoeV2_5ForCausalLM');
    assert.ok(m.info.layers.some((l) => l.mixer === 'lightning') && m.info.layers.some((l) => l.mixer === 'mla'));
    assert.ok(m.info.inspect.params.total > 1_000_000);
    const weights = seen.filter((p) => p.phase === 'weights');
    assert.ok(weights.length > 10 && weights.at(-1)!.done === weights.at(-1)!.total, 'every tensor reported');
    assert.equal(seen.at(-1)!.phase, 'ready');
    assert.deepEqual(m.tokenize('The jury', { addSpecialTokens: false }).length > 0, true);
    assert.equal(m.detokenize(m.tokenize('The jury said', { addSpecialTokens: false })), 'The jury said');
  } finally {
    await m.dispose();
  }
  await assert.rejects(loadModel({ model: '/nonexistent/model' }), InvalidRequestError);
  await assert.rejects(loadModel({ device: 'cpu', tp: 2 }), /tensor parallelism/);
});

test('generate: streamed chunks add up to the result; the promise form alone works; greedy is deterministic', async () => {
  const m = await open();
  try {
    const s = m.generate('The jury said', { maxTokens: 12, temperature: 0, ignoreEos: true, logprobs: 2 });
    let text = '';
    const ids: number[] = [];
    let lps = 0;
    for await (const c of s) {
      text += c.text;
      ids.push(...c.tokenIds);
      lps += c.logprobs?.length ?? 0;
    }
    const r = await s.result;
    assert.equal(r.finishReason, 'length');
    assert.equal(r.completionTokens, 12);
    assert.equal(text, r.text);
    assert.deepEqual(ids, r.tokenIds);
    assert.equal(lps, 12);
    assert.ok(r.logprobs!.every((e) => e.logprob <= 0 && e.top.length === 2));
    // Promise form without iterating; token-id prompts.
    const again = await m.generate(m.tokenize('The jury said'), { maxTokens: 12, temperature: 0, ignoreEos: true }).result;
    assert.deepEqual(again.tokenIds, r.tokenIds);
    cacheIsFree(m);
  } finally {
    await m.dispose();
  }
});

test('chat: the template is applied and content streams; options are validated like the server', async () => {
  const m = await open();
  try {
    const s = m.chat([{ role: 'user', content: 'Tell me about the jury.' }], { maxTokens: 10, temperature: 0, ignoreEos: true });
    let content = '';
    for await (const c of s) content += c.content;
    const r = await s.result;
    assert.equal(content, r.content);
    assert.equal(r.completionTokens, 10);
    assert.ok(r.promptTokens > m.tokenize('Tell me about the jury.', { addSpecialTokens: false }).length, 'the template adds role markers');
    const tools = [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object' } } }];
    assert.ok((await m.chat([{ role: 'user', content: 'hi' }], { tools, maxTokens: 2 }).result).completionTokens <= 2);
    assert.throws(() => m.chat([], {}), (e: unknown) => e instanceof InvalidRequestError && e.param === 'messages');
    assert.throws(() => m.generate('x', { temperature: -1 }), (e: unknown) => e instanceof InvalidRequestError && e.param === 'temperature');
    assert.throws(() => m.generate('x', { tempreature: 1 } as never), /unknown option "tempreature"/);
    assert.throws(() => m.generate([], {}), /prompt is empty/);
  } finally {
    await m.dispose();
  }
});

test('abort: an AbortSignal stops generation at once, rejects with its reason, and frees the cache', async () => {
  const m = await open();
  try {
    const ac = new AbortController();
    const s = m.generate('The jury said', { maxTokens: 200, temperature: 0, ignoreEos: true, signal: ac.signal });
    let n = 0;
    await assert.rejects(
      (async () => {
        for await (const c of s) {
          n += c.tokenIds.length;
          if (n >= 3) ac.abort();
        }
      })(),
      (e: unknown) => e instanceof Error && e.name === 'AbortError',
    );
    await assert.rejects(s.result, (e: unknown) => e instanceof Error && e.name === 'AbortError');
    assert.ok(n < 200);
    cacheIsFree(m);
    // An already-aborted signal throws before anything runs; breaking out of the loop cancels too.
    assert.throws(() => m.generate('x', { signal: AbortSignal.abort() }), (e: unknown) => e instanceof Error && e.name === 'AbortError');
    const s2 = m.generate('The jury said', { maxTokens: 200, temperature: 0, ignoreEos: true });
    for await (const _ of s2) break;
    await assert.rejects(s2.result);
    cacheIsFree(m);
  } finally {
    await m.dispose();
  }
});

test('concurrent calls are batched by the one engine and equal the same calls alone', async () => {
  const m = await open({ maxNumSeqs: 4 });
  try {
    const prompts = ['The jury said', 'In the morning', 'The president of the', 'It was'];
    const opts = { maxTokens: 16, temperature: 0, ignoreEos: true };
    const alone: (readonly number[])[] = [];
    for (const p of prompts) alone.push((await m.generate(p, opts).result).tokenIds);
    const stepsBefore = m.engine.stats().steps;
    const together = await Promise.all(prompts.map((p) => m.generate(p, opts).result));
    const steps = m.engine.stats().steps - stepsBefore;
    together.forEach((r, i) => assert.deepEqual(r.tokenIds, alone[i], `prompt ${i}`));
    assert.ok(steps <= 17, `4 requests of 16 tokens shared ${steps} steps`);
    cacheIsFree(m);
  } finally {
    await m.dispose();
  }
});

test('dispose: running calls reject, later calls throw, and it is idempotent (also via Symbol.asyncDispose)', async () => {
  const m = await open();
  const s = m.generate('The jury said', { maxTokens: 500, temperature: 0, ignoreEos: true });
  const it = s[Symbol.asyncIterator]();
  await it.next();
  await m.dispose();
  await assert.rejects(s.result, ModelDisposedError);
  assert.throws(() => m.generate('x'), ModelDisposedError);
  assert.throws(() => m.tokenize('x'), ModelDisposedError);
  await m.dispose();
  const m2 = await open();
  await m2[Symbol.asyncDispose]();
  assert.throws(() => m2.chat([{ role: 'user', content: 'x' }]), ModelDisposedError);
});
