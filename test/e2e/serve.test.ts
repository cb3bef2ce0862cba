/** The real `openai` npm client against `bailing serve` (in process, CPU, embedded model). */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import OpenAI from 'openai';
import { raw, ROOT, scrape, startServer, TINY, waitAllFree, type Running } from './serve-util.js';

let s: Running;
before(async () => {
  s = await startServer({ maxSeqs: 8 });
});
after(async () => {
  await s.close();
});

const greedy = { temperature: 0, ignore_eos: true } as const;

test('GET /v1/models lists the served model', async () => {
  const list = await s.client.models.list();
  assert.deepEqual(
    list.data.map((m) => m.id),
    ['tiny'],
  );
  assert.equal(list.data[0].object, 'model');
});

test('completions: not streamed, streamed (same text), usage, list and token-id prompts', async () => {
  const body = { model: 'tiny', prompt: 'The jury said', max_tokens: 12, ...greedy };
  const a = await s.client.completions.create(body);
  assert.equal(a.object, 'text_completion');
  assert.equal(a.choices.length, 1);
  assert.equal(a.choices[0].finish_reason, 'length');
  assert.ok(a.choices[0].text.length > 0);
  const ids = (await (await fetch(`${s.url}/tokenize`, { method: 'POST', body: JSON.stringify({ prompt: 'The jury said' }) })).json()) as { tokens: number[] };
  const P = ids.tokens.length;
  assert.deepEqual(a.usage, { prompt_tokens: P, completion_tokens: 12, total_tokens: P + 12 });

  const stream = await s.client.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | null | undefined = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      finish = c.finish_reason ?? finish;
    }
  }
  assert.equal(text, a.choices[0].text);
  assert.equal(finish, 'length');
  assert.deepEqual(usage, a.usage);

  // A list of strings and token-id prompts: choices come back per prompt, in order.
  const b = await s.client.completions.create({ ...body, prompt: ['The jury said', 'x'] });
  assert.equal(b.choices.length, 2);
  assert.equal(b.choices[0].text, a.choices[0].text);
  const c = await s.client.completions.create({ ...body, prompt: ids.tokens });
  assert.equal(c.choices[0].text, a.choices[0].text);
  const d = await s.client.completions.create({ ...body, prompt: [ids.tokens, [1, 2, 3]] });
  assert.equal(d.choices[0].text, a.choices[0].text);
  assert.equal(d.usage?.prompt_tokens, P + 3);
});

test('completions: n > 1 with a seed is reproducible; stop strings; logprobs', async () => {
  const body = { model: 'tiny', prompt: 'Once upon a time', max_tokens: 10, temperature: 1, seed: 5, n: 3, ignore_eos: true };
  const a = await s.client.completions.create(body);
  const b = await s.client.completions.create(body);
  assert.deepEqual(
    a.choices.map((c) => c.index),
    [0, 1, 2],
  );
  assert.deepEqual(
    a.choices.map((c) => c.text),
    b.choices.map((c) => c.text),
  );
  assert.ok(new Set(a.choices.map((c) => c.text)).size > 1, 'choices differ');
  assert.equal(a.usage?.completion_tokens, 30);

  const base = await s.client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 16, ...greedy });
  const t = base.choices[0].text;
  const stop = [...t].find((ch, i) => i >= 3 && ch !== '\uFFFD' && ch.trim() !== '')!;
  const cut = await s.client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 16, ...greedy, stop: [stop] });
  assert.equal(cut.choices[0].finish_reason, 'stop');
  assert.equal(cut.choices[0].text, t.slice(0, t.indexOf(stop)));

  const lp = await s.client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 4, ...greedy, logprobs: 3 });
  const l = lp.choices[0].logprobs!;
  assert.equal(l.tokens!.length, 4);
  assert.equal(l.token_logprobs!.length, 4);
  for (let i = 0; i < 4; i++) {
    assert.ok(l.token_logprobs![i] <= 0);
    const top = Object.values(l.top_logprobs![i]);
    assert.ok(top.length >= 1 && top.length <= 3);
    // Greedy: the chosen token is the most likely one.
    assert.equal(l.top_logprobs![i][l.tokens![i]], l.token_logprobs![i]);
    assert.ok(Math.max(...top) <= l.token_logprobs![i]);
  }
});

test('chat: not streamed and streamed agree; the first delta carries the role; usage; n; logprobs', async () => {
  const messages: OpenAI.ChatCompletionMessageParam[] = [
    { role: 'system', content: 'be brief' },
    { role: 'user', content: 'hello there' },
  ];
  const a = await s.client.chat.completions.create({ model: 'tiny', messages, max_completion_tokens: 10, ...greedy });
  assert.equal(a.object, 'chat.completion');
  assert.equal(a.choices[0].message.role, 'assistant');
  assert.equal(a.choices[0].finish_reason, 'length');
  assert.equal(a.usage?.completion_tokens, 10);
  const content = a.choices[0].message.content ?? '';
  const reasoning = (a.choices[0].message as { reasoning_content?: string | null }).reasoning_content ?? '';

  const stream = await s.client.chat.completions.create({ model: 'tiny', messages, max_tokens: 10, ...greedy, stream: true, stream_options: { include_usage: true } });
  let first = true;
  let text = '';
  let think = '';
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of stream) {
    if (chunk.usage) {
      usage = chunk.usage;
      assert.equal(chunk.choices.length, 0);
    }
    for (const c of chunk.choices) {
      if (first) assert.equal(c.delta.role, 'assistant');
      first = false;
      text += c.delta.content ?? '';
      think += (c.delta as { reasoning_content?: string }).reasoning_content ?? '';
    }
  }
  assert.equal(text, content);
  assert.equal(think, reasoning);
  assert.deepEqual(usage, a.usage);

  const n = await s.client.chat.completions.create({ model: 'tiny', messages, max_tokens: 6, temperature: 0.9, seed: 3, n: 2, logprobs: true, top_logprobs: 2 });
  assert.equal(n.choices.length, 2);
  for (const c of n.choices) {
    assert.equal(c.logprobs?.content?.length, 6);
    for (const e of c.logprobs!.content!) assert.ok(e.top_logprobs.length === 2 && typeof e.token === 'string');
  }
});

test('chat with tools renders the tool format and answers (content or tool_calls)', async () => {
  const r = await s.client.chat.completions.create({
    model: 'tiny',
    messages: [{ role: 'user', content: 'weather in Paris?' }],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
    max_tokens: 4,
    ...greedy,
  });
  assert.ok(['length', 'stop', 'tool_calls'].includes(r.choices[0].finish_reason));
  assert.ok((r.usage?.prompt_tokens ?? 0) > 60, 'the tool schema is in the prompt');
});

test('errors come back in the OpenAI shape through the client', async () => {
  const bad = async (p: Promise<unknown>, status: number, param: string | null): Promise<void> => {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof OpenAI.APIError, String(e));
      assert.equal(e.status, status);
      assert.equal(e.param ?? null, param);
      assert.ok(typeof e.message === 'string' && e.message.length > 0);
      return true;
    });
  };
  const msg = [{ role: 'user' as const, content: 'hi' }];
  await bad(s.client.chat.completions.create({ model: 'tiny', messages: msg, temperature: -1 }), 400, 'temperature');
  await bad(s.client.chat.completions.create({ model: 'tiny', messages: [] }), 400, 'messages');
  await bad(s.client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 0 }), 400, 'max_tokens');
  await bad(s.client.completions.create({ model: 'tiny', prompt: 'x'.repeat(600) }), 400, 'prompt');
  await bad(s.client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 600 }), 400, 'max_tokens');
  await bad(s.client.completions.create({ model: 'tiny', prompt: [1, 99999] }), 400, 'prompt');
  await bad(s.client.chat.completions.create({ model: 'nope', messages: msg }), 404, 'model');
  const e = await raw(s.url, 'DELETE', '/v1/models', null);
  assert.equal(e.status, 405);
  assert.equal(e.headers.allow, 'GET');
  assert.equal((JSON.parse(e.body) as { error: { type: string } }).error.type, 'invalid_request_error');
  assert.equal((await raw(s.url, 'GET', '/v2/x', null)).status, 404);
});

test('--api-key: 401 without or with a wrong key, 200 with it; /health and /metrics stay open', async () => {
  const k = await startServer({}, { apiKey: 'sekret' });
  try {
    const ok = await k.client.completions.create({ model: 'tiny', prompt: 'a', max_tokens: 2 });
    assert.equal(ok.choices.length, 1);
    const wrong = new OpenAI({ baseURL: `${k.url}/v1`, apiKey: 'sekreT', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401);
    const none = await raw(k.url, 'POST', '/v1/completions', Buffer.from('{"prompt":"a"}'));
    assert.equal(none.status, 401);
    assert.equal((JSON.parse(none.body) as { error: { code: string } }).error.code, 'invalid_api_key');
    assert.equal((await raw(k.url, 'POST', '/tokenize', Buffer.from('{"prompt":"a"}'))).status, 401);
    assert.equal((await raw(k.url, 'GET', '/health', null)).status, 200);
    assert.equal((await raw(k.url, 'GET', '/metrics', null)).status, 200);
  } finally {
    await k.close();
  }
});

test('tokenize / detokenize round trip; health; metrics count tokens and outcomes', async () => {
  const t = (await (await fetch(`${s.url}/tokenize`, { method: 'POST', body: JSON.stringify({ prompt: 'héllo' }) })).json()) as { tokens: number[]; count: number; max_model_len: number };
  assert.equal(t.count, t.tokens.length);
  assert.equal(t.max_model_len, 512);
  const d = (await (await fetch(`${s.url}/detokenize`, { method: 'POST', body: JSON.stringify({ tokens: t.tokens }) })).json()) as { prompt: string };
  assert.equal(d.prompt, 'héllo');
  const chat = (await (
    await fetch(`${s.url}/tokenize`, { method: 'POST', body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] }) })
  ).json()) as { count: number };
  assert.ok(chat.count > 2);
  assert.deepEqual(JSON.parse((await raw(s.url, 'GET', '/health', null)).body), { status: 'ok' });
  const before = await scrape(s.url);
  await s.client.completions.create({ model: 'tiny', prompt: 'abc', max_tokens: 3, ...greedy });
  const m = await waitAllFree(s.url);
  assert.equal(m.get('bailing:prompt_tokens_total')! - before.get('bailing:prompt_tokens_total')!, 3);
  assert.equal(m.get('bailing:generation_tokens_total')! - before.get('bailing:generation_tokens_total')!, 3);
  assert.ok(m.get('bailing:request_success_total{finished_reason="length"}')! >= 1);
  assert.ok(m.get('bailing:time_to_first_token_seconds_count')! >= 1);
  assert.ok(m.has('bailing:e2e_request_latency_seconds_bucket{le="+Inf"}'));
});

test('SSE: keep-alive comments while a long prompt is prefilled in small chunks', async () => {
  const k = await startServer({ maxBatchTokens: 8 }, { keepAliveMs: 1 });
  try {
    const r = await raw(k.url, 'POST', '/v1/completions', Buffer.from(JSON.stringify({ prompt: 'y'.repeat(400), max_tokens: 2, stream: true })));
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /text\/event-stream/);
    assert.match(r.body, /^: keep-alive$/m);
    assert.ok(r.body.endsWith('data: [DONE]\n\n'));
  } finally {
    await k.close();
  }
});

test('bailing serve as a child: SIGTERM drains the in-flight stream, then exits 0', async () => {
  const args = [join(ROOT, 'dist/src/cli/main.js'), 'serve', '--model', TINY, '--port', '0', '--max-model-len', '256', '--threads', '1'];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  let err = '';
  try {
    const url = await new Promise<string>((res, rej) => {
      child.stderr.on('data', (c: Buffer) => {
        err += c.toString();
        const m = /"url":"([^"]+)"/.exec(err);
        if (m) res(m[1]);
      });
      void exited.then(() => rej(new Error(`serve exited: ${err}`)));
    });
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
    const model = (await client.models.list()).data[0].id;
    assert.equal(model, 'tiny-random', 'the directory name is the default model id');
    const stream = await client.completions.create({ model, prompt: 'drain me', max_tokens: 40, ...greedy, stream: true, stream_options: { include_usage: true } });
    let signalled = false;
    let tokens = 0;
    for await (const chunk of stream) {
      if (!signalled) {
        child.kill('SIGTERM');
        signalled = true;
      }
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
    }
    assert.equal(tokens, 40, 'the in-flight request ran to completion');
    assert.equal(await exited, 0, err);
    assert.match(err, /SIGTERM: draining/);
    assert.match(err, /\[info\] request \{"id":"cmpl-[0-9a-f]+","route":"\/v1\/completions","outcome":"ok","prompt_tokens":\d+,"completion_tokens":40/);
  } finally {
    // Never leave a server behind when an assertion fails.
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});
