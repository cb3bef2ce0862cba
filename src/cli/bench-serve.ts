/**
 * `bailing bench serve`: a load client for a running OpenAI-compatible server. At each
 * concurrency level it keeps C streaming /v1/completions requests in flight (random token-id
 * prompts from a seeded Prng, greedy, ignore_eos so every request makes exactly --max-tokens
 * tokens) and reports throughput and TTFT / ITL / end-to-end percentiles. ITL is the gap
 * between streamed chunks (one token each unless a token ends mid-character); TPOT is
 * (e2e − TTFT) / (tokens − 1) per request.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { BailingError, InvalidRequestError } from '../util/errors.js';
import { Prng } from '../util/prng.js';
import { num } from './args.js';

export const BENCH_USAGE = `usage: bailing bench serve [options]

  --url URL              server (default http://127.0.0.1:8000)
  --api-key KEY
  --concurrency LIST     comma-separated levels (default 1,16,64)
  --requests N           requests per level (default max(2 × concurrency, 8))
  --prompt-tokens N      prompt length in tokens (default 32)
  --max-tokens N         tokens per request (default 32)
  --vocab N              prompt ids are drawn from [0, N) (default 256)
  --seed N               prompt seed (default 0)
  --warmup N             unmeasured requests first (default 4)
  --json FILE            also write the results as JSON
`;

interface Sample {
  ttft: number;
  e2e: number;
  tokens: number;
  gaps: number[];
}

export interface LevelResult {
  concurrency: number;
  requests: number;
  failed: number;
  wallS: number;
  outputTokPerS: number;
  reqPerS: number;
  ttftMs: Percentiles;
  itlMs: Percentiles;
  tpotMs: Percentiles;
  e2eMs: Percentiles;
}

type Percentiles = { p50: number; p90: number; p99: number; mean: number };

function percentiles(xs: number[]): Percentiles {
  if (xs.length === 0) return { p50: NaN, p90: NaN, p99: NaN, mean: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { p50: q(0.5), p90: q(0.9), p99: q(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

async function oneRequest(url: string, headers: Record<string, string>, body: unknown): Promise<Sample> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers, body: JSON.stringify(body) });
  if (!res.ok || !res.body) throw new BailingError(`HTTP ${res.status}: ${await res.text()}`);
  const dec = new TextDecoder();
  let buf = '';
  let first = 0;
  let last = 0;
  let tokens = 0;
  const gaps: number[] = [];
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += dec.decode(chunk, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6)) as { choices: { text: string }[]; usage?: { completion_tokens: number } | null };
      if (j.usage) tokens = j.usage.completion_tokens;
      if (j.choices.length === 0 || j.choices[0].text === '') continue;
      const now = performance.now();
      if (first === 0) first = now;
      else gaps.push(now - last);
      last = now;
    }
  }
  const end = performance.now();
  return { ttft: (first || end) - t0, e2e: end - t0, tokens, gaps };
}

export async function benchLevel(
  url: string,
  headers: Record<string, string>,
  model: string,
  c: number,
  requests: number,
  promptTokens: number,
  maxTokens: number,
  vocab: number,
  rng: Prng,
): Promise<LevelResult> {
  const bodies = Array.from({ length: requests }, () => ({
    model,
    prompt: Array.from({ length: promptTokens }, () => rng.int(vocab)),
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
  }));
  const samples: Sample[] = [];
  let failed = 0;
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < bodies.length) {
      const b = bodies[next++];
      try {
        samples.push(await oneRequest(url, headers, b));
      } catch {
        failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: c }, worker));
  const wallS = (performance.now() - t0) / 1000;
  const tokens = samples.reduce((a, s) => a + s.tokens, 0);
  return {
    concurrency: c,
    requests,
    failed,
    wallS,
    outputTokPerS: tokens / wallS,
    reqPerS: samples.length / wallS,
    ttftMs: percentiles(samples.map((s) => s.ttft)),
    itlMs: percentiles(samples.flatMap((s) => s.gaps)),
    tpotMs: percentiles(samples.filter((s) => s.tokens > 1).map((s) => (s.e2e - s.ttft) / (s.tokens - 1))),
    e2eMs: percentiles(samples.map((s) => s.e2e)),
  };
}

const f = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '—');

export function formatTable(rows: readonly LevelResult[]): string {
  const lines = [
    '| concurrency | requests | failed | output tok/s | req/s | TTFT p50 / p90 / p99 ms | ITL p50 / p90 / p99 ms | TPOT mean ms | e2e p50 / p90 / p99 ms |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows)
    lines.push(
      `| ${r.concurrency} | ${r.requests} | ${r.failed} | ${f(r.outputTokPerS)} | ${r.reqPerS.toFixed(2)} | ${f(r.ttftMs.p50)} / ${f(r.ttftMs.p90)} / ${f(r.ttftMs.p99)} | ` +
        `${f(r.itlMs.p50)} / ${f(r.itlMs.p90)} / ${f(r.itlMs.p99)} | ${f(r.tpotMs.mean)} | ${f(r.e2eMs.p50)} / ${f(r.e2eMs.p90)} / ${f(r.e2eMs.p99)} |`,
    );
  return lines.join('\n');
}

export async function benchCommand(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') return void process.stdout.write(BENCH_USAGE);
  if (sub !== 'serve') throw new InvalidRequestError(`bench: unknown target "${sub}"; try: bailing bench serve --help`, 'bench');
  const { values } = parseArgs({
    args: rest,
    options: {
      url: { type: 'string', default: 'http://127.0.0.1:8000' },
      'api-key': { type: 'string' },
      concurrency: { type: 'string', default: '1,16,64' },
      requests: { type: 'string' },
      'prompt-tokens': { type: 'string' },
      'max-tokens': { type: 'string' },
      vocab: { type: 'string' },
      seed: { type: 'string' },
      warmup: { type: 'string' },
      json: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(BENCH_USAGE);
  const url = values.url.replace(/\/$/, '');
  const levels = values.concurrency.split(',').map((s) => Number(s));
  if (!levels.every((c) => Number.isInteger(c) && c >= 1)) throw new InvalidRequestError(`--concurrency expects a list of integers ≥ 1, got "${values.concurrency}"`, 'concurrency');
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (values['api-key']) headers.Authorization = `Bearer ${values['api-key']}`;
  const models = (await (await fetch(`${url}/v1/models`, { headers })).json()) as { data: { id: string }[] };
  const model = models.data[0].id;
  const promptTokens = num(values, 'prompt-tokens') ?? 32;
  const maxTokens = num(values, 'max-tokens') ?? 32;
  const vocab = num(values, 'vocab') ?? 256;
  const rng = new Prng(num(values, 'seed') ?? 0);
  const warmup = num(values, 'warmup') ?? 4;
  // First requests pay for JIT warm-up and buffer growth; keep them out of the numbers.
  if (warmup > 0) await benchLevel(url, headers, model, Math.min(4, warmup), warmup, promptTokens, maxTokens, vocab, new Prng(0x5eed));
  const rows: LevelResult[] = [];
  for (const c of levels) {
    const n = num(values, 'requests') ?? Math.max(2 * c, 8);
    process.stderr.write(`concurrency ${c}: ${n} requests of ${promptTokens} + ${maxTokens} tokens…\n`);
    rows.push(await benchLevel(url, headers, model, c, n, promptTokens, maxTokens, vocab, rng));
  }
  process.stdout.write(`${url} model ${model}, prompt ${promptTokens} tokens, ${maxTokens} output tokens, greedy\n\n${formatTable(rows)}\n`);
  if (values.json) {
    mkdirSync(dirname(values.json), { recursive: true });
    writeFileSync(values.json, JSON.stringify({ url, model, promptTokens, maxTokens, date: new Date().toISOString(), levels: rows }, null, 2) + '\n');
  }
}
