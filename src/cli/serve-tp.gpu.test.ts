/**
 * `bailing serve --tp N` end to end on GPUs (issue 6): the real CLI in a process of its own on a
 * tiny checkpoint whose heads and g_norm groups divide by 4 (with tiny-brown's tokenizer), N = 2
 * and the visible GPUs up to 4. A greedy chat completion gives --tp 1's text; then a follower
 * process of the server is SIGKILLed while a long streamed completion runs, and while the server
 * is idle, and the server must exit with a non-zero code by itself (not by a signal, not by the
 * exit watchdog) with no follower left; and a SIGKILLed server must take its followers with it.
 * The bounds are liveness deadlines, not timings. Skips without two GPUs or libnccl.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { alive } from '../api/tp-guard.js';
import { tpGpuCount } from '../api/tp.js';
import { tinyConfig, writeTinyModel } from '../model/tiny-checkpoint.js';

const n = tpGpuCount();
const skip = n < 2 ? `needs 2 GPUs and libnccl (found ${n} usable)` : false;
const sizes = [...new Set([2, Math.min(n, 4)])].filter((s) => s >= 2);

const here = dirname(fileURLToPath(import.meta.url));
const main = join(here, 'main.js');
const brown = resolve(here, '../../../models/tiny-brown');
const root = mkdtempSync(join(tmpdir(), 'bailing-serve-tp-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
const dir = join(root, 'gns4');
if (!skip) {
  // 4 heads, group_norm_size 4, intermediate 40 (divisible by 4), tiny-brown's vocab and eos.
  writeTinyModel(dir, tinyConfig({ vocab_size: 4096, group_norm_size: 4, intermediate_size: 40, q_lora_rank: null, eos_token_id: 3 }), { seed: 21, dtype: 'BF16' });
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(brown, f), join(dir, f));
}

interface Server {
  readonly p: ChildProcess;
  readonly url: string;
  readonly exit: Promise<[number | null, string | null]>;
  log(): string;
}

async function serve(tp: number): Promise<Server> {
  const p = spawn(process.execPath, [main, 'serve', '--model', dir, '--device', 'cuda', '--tp', String(tp), '--port', '0', '--max-num-seqs', '4', '--max-model-len', '1024'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const exit = once(p, 'exit') as Promise<[number | null, string | null]>;
  const url = await new Promise<string>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`serve --tp ${tp} did not start in 120 s: ${log}`)), 120_000);
    p.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      const m = /\[info\] serving (\{.*\})/.exec(log);
      if (m) {
        clearTimeout(t);
        ok((JSON.parse(m[1]) as { url: string }).url);
      }
    });
    p.once('exit', (c, s) => {
      clearTimeout(t);
      fail(new Error(`serve --tp ${tp} exited during start (${c ?? s}): ${log}`));
    });
  });
  return { p, url, exit, log: () => log };
}

async function chat(url: string): Promise<string> {
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gns4', messages: [{ role: 'user', content: 'The jury said' }], temperature: 0, max_tokens: 24, ignore_eos: true }),
  });
  assert.equal(r.status, 200, await r.clone().text());
  const j = (await r.json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
  assert.equal(j.usage.completion_tokens, 24);
  return j.choices[0].message.content;
}

/** Child process ids of `pid` (the server's tensor-parallel followers). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The server's exit within `ms` (a deadline), or null. */
async function exitWithin(s: Server, ms: number): Promise<[number | null, string | null] | null> {
  return Promise.race([s.exit, sleep(ms).then(() => null)]);
}

async function goneWithin(pids: number[], ms: number): Promise<number[]> {
  const end = Date.now() + ms;
  while (pids.some((p) => alive(p)) && Date.now() < end) await sleep(50);
  return pids.filter((p) => alive(p));
}

test('serve --tp N on GPUs: greedy chat = --tp 1; a follower killed mid-stream ends the server with code 1', { skip }, async () => {
  const one = await serve(1);
  const want = await chat(one.url);
  one.p.kill('SIGTERM');
  assert.deepEqual(await exitWithin(one, 30_000), [0, null], one.log());
  console.log(`--tp 1: ${JSON.stringify(want)}`);
  for (const tp of sizes) {
    const s = await serve(tp);
    try {
      assert.equal(await chat(s.url), want, `--tp ${tp} text`);
      const kids = childrenOf(s.p.pid!);
      assert.equal(kids.length, tp - 1, `followers of the server: ${kids.join(' ')}`);
      // A long streamed completion in flight, then a follower dies.
      const long = fetch(`${s.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gns4', prompt: 'The jury said', max_tokens: 900, temperature: 0, ignore_eos: true, stream: true }),
      }).then(
        async (r) => `status ${r.status}, ${(await r.text().catch((e: Error) => `body cut: ${e.message}`)).length} bytes`,
        (e: Error) => `request failed: ${e.message}`,
      );
      await sleep(300);
      const t0 = Date.now();
      process.kill(kids[kids.length - 1], 'SIGKILL');
      const done = await exitWithin(s, 45_000);
      const ms = Date.now() - t0;
      const left = await goneWithin(kids, 5000);
      console.log(`--tp ${tp}: follower killed mid-stream; server exit ${JSON.stringify(done)} after ${ms} ms; stream: ${await long}; followers left ${left.length}`);
      assert.ok(done, `the server did not exit within 45 s:\n${s.log().slice(-3000)}`);
      assert.deepEqual(done, [1, null], s.log().slice(-3000));
      assert.doesNotMatch(s.log(), /still running .* after it should have exited/, 'the exit watchdog had to kill it');
      assert.deepEqual(left, []);
    } finally {
      s.p.kill('SIGKILL');
    }
  }
});

test('serve --tp 2 on GPUs: a follower killed while idle ends the server with code 1; a killed server takes its followers', { skip }, async () => {
  const s = await serve(2);
  try {
    const kids = childrenOf(s.p.pid!);
    assert.equal(kids.length, 1);
    const t0 = Date.now();
    process.kill(kids[0], 'SIGKILL');
    const done = await exitWithin(s, 45_000);
    console.log(`--tp 2: follower killed while idle; server exit ${JSON.stringify(done)} after ${Date.now() - t0} ms`);
    assert.deepEqual(done, [1, null], s.log().slice(-3000));
  } finally {
    s.p.kill('SIGKILL');
  }
  const r = await serve(2);
  const kids = childrenOf(r.p.pid!);
  assert.equal(kids.length, 1);
  await chat(r.url);
  const t0 = Date.now();
  r.p.kill('SIGKILL');
  const left = await goneWithin(kids, 5000);
  console.log(`--tp 2: server SIGKILLed; its follower gone after ${Date.now() - t0} ms (left ${left.length})`);
  assert.deepEqual(left, []);
});
