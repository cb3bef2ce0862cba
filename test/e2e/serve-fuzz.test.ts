/**
 * Hostile input: at least 1000 malformed requests from a seeded generator (bad JSON, wrong types,
 * out-of-range and huge numbers, huge and deep bodies, invalid UTF-8, missing fields, bad
 * routes). Every one must get a 4xx with an OpenAI error body, and the server must keep serving.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng } from '../../src/util/prng.js';
import { raw as request, startServer, waitAllFree, type RawResponse } from './serve-util.js';

const LIMIT = 64 * 1024;

interface Case {
  kind: string;
  method: string;
  path: string;
  body: Buffer | null;
  headers?: Record<string, string>;
}

/** A number literal JSON.stringify cannot write (it would turn 1e309 into null). */
const raw = (literal: string): string => `__RAW__${literal}__`;
const unraw = (json: string): string => json.replace(/"__RAW__(.*?)__"/g, '$1');

const VALID_CHAT = { model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 };
const VALID_COMPLETION = { model: 'tiny', prompt: 'hi', max_tokens: 2 };

/** Values that are wrong for the named field (type or range), never valid by accident. */
const BAD_FIELDS: Record<string, unknown[]> = {
  temperature: [-1, '0.5', true, [], {}, raw('1e309'), -1e308],
  top_p: [0, 1.5, -0.1, 'x', 2],
  top_k: [-2, 1.5, 'k', false],
  min_p: [-0.1, 1.01, 'x'],
  presence_penalty: [3, -2.5, 'x', 1e300],
  frequency_penalty: [2.01, -9, {}],
  repetition_penalty: [0, -1, 'x'],
  seed: [1.5, 'x', 2 ** 60, -1e300, raw('123456789012345678901234567890')],
  max_tokens: [0, -1, 1.5, 'x', 1e18, 2 ** 53 + 2, 513, raw('1e999'), raw('-0.0e-999999')],
  n: [0, -1, 1.5, 'x', 1e9, 129, raw('-1e400')],
  stop: [5, [1], [''], '', {}, [null]],
  stop_token_ids: ['x', [-1], [1e9], [1.5], 5],
  ignore_eos: ['yes', 1, []],
  stream: ['true', 1, {}],
  stream_options: [5, 'x', []],
  model: [5, ['tiny'], {}, 'not-this-model'],
  user: [5, {}],
  logit_bias: [{ '5': 10 }, 'x', 5],
  best_of: [2, 0, 'x'],
};
const BAD_CHAT: Record<string, unknown[]> = {
  ...BAD_FIELDS,
  messages: [null, 'hi', [], [5], [{}], [{ role: 'wizard', content: 'x' }], [{ role: 'user' }], [{ role: 'user', content: 5 }], [{ role: 'user', content: [{ type: 'image_url' }] }]],
  logprobs: [5, 'x'],
  top_logprobs: [21, -1, 'x'],
  tools: ['x', [5], [{ type: 'function' }], [{ type: 'function', function: { name: 5 } }]],
  tool_choice: ['always', 5, { type: 'function' }],
  response_format: [{ type: 'json_object' }, 'x'],
  max_completion_tokens: [0, 'x', 1e20],
  chat_template_kwargs: ['x', 5],
};
const BAD_COMPLETION: Record<string, unknown[]> = {
  ...BAD_FIELDS,
  prompt: [null, 5, [], [[]], [1, 'a'], ['a', 1], [-1], [1e9], [1.5], {}, 'x'.repeat(600), [[1, 2], [3, 1e6]]],
  logprobs: [21, -1, true, 'x'],
  echo: [true, 'x'],
  suffix: ['tail', 5],
};

function nest(depth: number, rng: Prng): string {
  const open = rng.int(2) ? '[' : '{"a":';
  const close = open === '[' ? ']' : '}';
  return `{"prompt":"x","extra":${open.repeat(depth)}1${close.repeat(depth)}}`;
}

function generate(rng: Prng): Case {
  const pick = <T>(xs: readonly T[]): T => xs[rng.int(xs.length)];
  const chat = rng.int(2) === 0;
  const path = chat ? '/v1/chat/completions' : '/v1/completions';
  const valid = chat ? VALID_CHAT : VALID_COMPLETION;
  const json = (o: unknown): Buffer => Buffer.from(unraw(JSON.stringify(o)));
  switch (rng.int(12)) {
    case 0:
    case 1:
    case 2: {
      // One known field with a wrong value.
      const table = chat ? BAD_CHAT : BAD_COMPLETION;
      const key = pick(Object.keys(table));
      const o: Record<string, unknown> = { ...valid, [key]: pick(table[key]) };
      if (key === 'stream_options') o.stream = true;
      if (o[key] === null) delete o[key];
      return { kind: `field:${key}`, method: 'POST', path, body: json(o) };
    }
    case 3: {
      // Truncated or corrupted JSON.
      const s = JSON.stringify(valid);
      const cut = s.slice(0, rng.int(s.length - 1));
      const bad = [cut, s.replace('{', '{{'), s + '}', s.replace(/"/g, "'"), 'NaN', '', '   ', 'null', '[]', '"str"', '12', 'true', s.replace(':', '')];
      return { kind: 'json', method: 'POST', path, body: Buffer.from(pick(bad)) };
    }
    case 4: {
      // Random bytes.
      const b = Buffer.alloc(1 + rng.int(300));
      for (let i = 0; i < b.length; i++) b[i] = rng.int(256);
      b[0] = 0xff; // never valid UTF-8, never JSON
      return { kind: 'bytes', method: 'POST', path, body: b };
    }
    case 5: {
      // Invalid UTF-8 inside an otherwise valid body.
      const s = Buffer.from(JSON.stringify(valid));
      const at = s.indexOf('hi');
      const bad = pick([[0xc3], [0xff], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0x80, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]]);
      return { kind: 'utf8', method: 'POST', path, body: Buffer.concat([s.subarray(0, at), Buffer.from(bad), s.subarray(at)]) };
    }
    case 6: {
      // Required fields missing.
      const o: Record<string, unknown> = { ...valid };
      delete o[chat ? 'messages' : 'prompt'];
      if (rng.int(2)) delete o.model;
      return { kind: 'missing', method: 'POST', path, body: json(o) };
    }
    case 7:
      return { kind: 'deep', method: 'POST', path: '/v1/completions', body: Buffer.from(nest(65 + rng.int(20000), rng)) };
    case 8: {
      // Oversized bodies, declared or chunked.
      const size = LIMIT + 1 + rng.int(4 * LIMIT);
      const body = Buffer.from(JSON.stringify({ ...valid, pad: 'x'.repeat(size) }));
      return { kind: 'huge', method: 'POST', path, body, headers: rng.int(2) ? { 'Transfer-Encoding': 'chunked' } : {} };
    }
    case 9:
      return { kind: 'route', method: pick(['GET', 'PUT', 'DELETE', 'PATCH']), path: pick([path, '/tokenize', '/detokenize']), body: null };
    case 10:
      return { kind: 'route404', method: pick(['GET', 'POST']), path: pick(['/', '/v1', '/v1/chat', '/v1/embeddings', '/%ff', '/v1/completions/x', '/metrics/x']), body: json(valid) };
    default: {
      const tok = rng.int(2);
      const bad = tok
        ? pick([{}, { prompt: 5 }, { prompt: 'a', messages: [{ role: 'user', content: 'x' }] }, { prompt: 'a', add_special_tokens: 'y' }])
        : pick([{}, { tokens: 'x' }, { tokens: [1e9] }, { tokens: [-1] }, { tokens: [[1]] }, { tokens: [1.5] }]);
      return { kind: tok ? 'tokenize' : 'detokenize', method: 'POST', path: tok ? '/tokenize' : '/detokenize', body: json(bad) };
    }
  }
}

test('fuzz: 1200 hostile requests all get a 4xx with an OpenAI error body; the server keeps serving', async () => {
  const s = await startServer({ maxSeqs: 4 }, { maxBodyBytes: LIMIT });
  try {
    const rng = new Prng(12345);
    const N = 1200;
    const kinds = new Map<string, number>();
    const cases = Array.from({ length: N }, () => generate(rng));
    const check = (c: Case, r: RawResponse, i: number): void => {
      const what = `case ${i} (${c.kind}) ${c.method} ${c.path} ${c.body ? JSON.stringify(c.body.subarray(0, 120).toString('latin1')) : ''}: ${r.status} ${r.body.slice(0, 200)}`;
      assert.ok(r.status >= 400 && r.status < 500, what);
      if (c.method !== 'HEAD') {
        let parsed: unknown = null;
        try {
          parsed = JSON.parse(r.body);
        } catch {
          assert.fail(`not JSON: ${what}`);
        }
        const e = (parsed as { error: { message: unknown; type: unknown; param: unknown; code: unknown } }).error;
        assert.ok(typeof e.message === 'string' && typeof e.type === 'string' && 'param' in e && 'code' in e, what);
      }
      kinds.set(c.kind.split(':')[0], (kinds.get(c.kind.split(':')[0]) ?? 0) + 1);
    };
    // 16 at a time, with a health check between batches.
    for (let i = 0; i < N; i += 16) {
      const batch = cases.slice(i, i + 16);
      const rs = await Promise.all(batch.map((c) => request(s.url, c.method, c.path, c.body, c.headers)));
      rs.forEach((r, j) => check(batch[j], r, i + j));
      if (i % 160 === 0) assert.equal((await request(s.url, 'GET', '/health', null)).status, 200);
    }
    for (const k of ['field', 'json', 'bytes', 'utf8', 'missing', 'deep', 'huge', 'route', 'route404', 'tokenize', 'detokenize'])
      assert.ok((kinds.get(k) ?? 0) > 10, `kind ${k} covered (${kinds.get(k) ?? 0})`);
    // Still serving real requests, and nothing leaked.
    const ok = await s.client.completions.create({ model: 'tiny', prompt: 'still alive', max_tokens: 3 });
    assert.equal(ok.choices[0].finish_reason, 'length');
    await waitAllFree(s.url);
  } finally {
    await s.close();
  }
});
