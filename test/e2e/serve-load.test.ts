/** Concurrency through the HTTP server: batch invariance, load with disconnects, preemption. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type OpenAI from 'openai';
import { Prng } from '../../src/util/prng.js';
import { scrape, startServer, waitAllFree } from './serve-util.js';

const ids = (rng: Prng, n: number): number[] => Array.from({ length: n }, () => rng.int(256));

test('batch invariance: a greedy request alone and among 15 concurrent ones gives the same tokens', async () => {
  const s = await startServer({ maxSeqs: 16, maxBatchTokens: 64 });
  try {
    const rng = new Prng(7);
    const probe = { model: 'tiny', prompt: ids(rng, 30), max_tokens: 16, temperature: 0, ignore_eos: true, logprobs: 1 };
    const alone = await s.client.completions.create(probe);
    // Others: varied lengths (some chunked), sampled and greedy, streamed and not.
    const others = Array.from({ length: 15 }, (_, i) =>
      complete(s.client, {
        model: 'tiny',
        prompt: ids(rng, 5 + rng.int(100)),
        max_tokens: 4 + rng.int(20),
        temperature: i % 2 ? 0 : 1,
        seed: i,
        ignore_eos: true,
      }),
    );
    const [together] = await Promise.all([s.client.completions.create(probe), ...others]);
    assert.ok((await Promise.all(others)).every((t) => typeof t === 'string'));
    const a = alone.choices[0];
    const b = together.choices[0];
    assert.equal(b.text, a.text);
    assert.deepEqual(b.logprobs!.tokens, a.logprobs!.tokens);
    // The CPU kernels are not bitwise batch invariant (row blocking), so logprobs agree closely, not exactly.
    b.logprobs!.token_logprobs!.forEach((x, i) => assert.ok(Math.abs(x - a.logprobs!.token_logprobs![i]) < 1e-4, `logprob ${i}`));
    await waitAllFree(s.url);
  } finally {
    await s.close();
  }
});

test('load: 64 streaming clients, a third disconnect at random points; the rest complete correctly; all cache is freed', async () => {
  const s = await startServer({ maxSeqs: 32, maxBatchTokens: 128, cacheTokens: 32 * 64 });
  try {
    const rng = new Prng(2024);
    const N = 64;
    const reqs = Array.from({ length: N }, (_, i) => ({
      prompt: ids(rng, 4 + rng.int(24)),
      max_tokens: 8 + rng.int(16),
      // Seeded sampling for some, greedy for the rest: both must be reproducible.
      temperature: i % 3 === 0 ? 0.8 : 0,
      seed: 1000 + i,
      // A third disconnect after a random number of chunks (0: before any arrives).
      dropAfter: i % 3 === 1 ? rng.int(6) : -1,
    }));
    const results = await Promise.all(
      reqs.map(async (r) => {
        const ac = new AbortController();
        const body = { model: 'tiny', prompt: r.prompt, max_tokens: r.max_tokens, temperature: r.temperature, seed: r.seed, ignore_eos: true };
        try {
          const stream = await s.client.completions.create({ ...body, stream: true, stream_options: { include_usage: true } }, { signal: ac.signal });
          if (r.dropAfter === 0) ac.abort();
          let text = '';
          let chunks = 0;
          let finish: string | null = null;
          let tokens = -1;
          for await (const c of stream) {
            if (c.usage) tokens = c.usage.completion_tokens;
            for (const ch of c.choices) {
              text += ch.text;
              finish = ch.finish_reason ?? finish;
            }
            if (++chunks === r.dropAfter) ac.abort();
          }
          return { dropped: false, text, finish, tokens };
        } catch (e) {
          if (r.dropAfter >= 0 && ac.signal.aborted) return { dropped: true, text: '', finish: null, tokens: -1 };
          throw e;
        }
      }),
    );
    const m = await waitAllFree(s.url);
    assert.ok(m.get('bailing:request_success_total{finished_reason="abort"}')! >= 1, 'some requests were aborted by disconnects');

    // Every kept stream is complete and equals the same request made again, not streamed.
    const kept = reqs.map((r, i) => ({ r, res: results[i] })).filter((x) => x.r.dropAfter < 0);
    assert.equal(kept.length, 43);
    const again = await Promise.all(
      kept.map(({ r }) => complete(s.client, { model: 'tiny', prompt: r.prompt, max_tokens: r.max_tokens, temperature: r.temperature, seed: r.seed, ignore_eos: true })),
    );
    kept.forEach(({ r, res }, i) => {
      assert.equal(res.dropped, false);
      assert.equal(res.finish, 'length');
      assert.equal(res.tokens, r.max_tokens);
      assert.equal(res.text, again[i], `request ${i}`);
    });
    await waitAllFree(s.url);
    assert.equal((await s.client.models.list()).data.length, 1, 'still serving');
  } finally {
    await s.close();
  }
});

test('preemption: a cache too small for all running requests completes them all, with the same text', async () => {
  // 8 blocks of 16 tokens; each request needs 3 blocks (20 + 24 tokens) by its end.
  const s = await startServer({ maxSeqs: 8, cacheTokens: 128, blockSize: 16 });
  try {
    const rng = new Prng(99);
    const bodies = Array.from({ length: 6 }, (_, i) => ({
      model: 'tiny',
      prompt: ids(rng, 20),
      max_tokens: 24,
      temperature: i === 2 ? 1 : 0,
      seed: 7,
      ignore_eos: true,
    }));
    const together = await Promise.all(bodies.map((b, i) => (i % 2 ? complete(s.client, b) : collect(s.client, b))));
    const m = await waitAllFree(s.url);
    assert.ok(m.get('bailing:num_preemptions_total')! > 0, 'expected preemptions');
    for (let i = 0; i < bodies.length; i++) {
      assert.equal(together[i], await complete(s.client, bodies[i]), `request ${i}`);
    }
    const after = await scrape(s.url);
    assert.equal(after.get('bailing:cache_blocks_free'), 8);
  } finally {
    await s.close();
  }
});

/** vLLM extensions such as ignore_eos are not in the client's types; the client sends them as is. */
async function complete(client: OpenAI, body: Record<string, unknown>): Promise<string> {
  const r = await client.completions.create(body as unknown as OpenAI.CompletionCreateParamsNonStreaming);
  return r.choices[0].text;
}

async function collect(client: OpenAI, body: Record<string, unknown>): Promise<string> {
  const stream = await client.completions.create({ ...body, stream: true } as unknown as OpenAI.CompletionCreateParamsStreaming);
  let text = '';
  for await (const c of stream) for (const ch of c.choices) text += ch.text;
  return text;
}
