import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CpuBackend } from '../backend/cpu/cpu-backend.js';
import { Prng } from '../util/prng.js';
import { EngineDriver, EngineUnavailableError } from './driver.js';
import type { Engine } from './engine.js';
import { openModel, type OpenOptions, type OpenedModel } from './open.js';
import { resolveSamplingParams } from './sampler.js';

function tinyDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const base of [process.cwd(), resolve(here, '../../..')]) {
    const d = join(base, 'models/tiny-random');
    if (existsSync(join(d, 'config.json'))) return d;
  }
  throw new Error('models/tiny-random not found');
}

async function withModel<T>(opts: OpenOptions, fn: (m: OpenedModel) => Promise<T>): Promise<T> {
  const be = new CpuBackend({ threads: 2 });
  try {
    return await fn(await openModel(tinyDir(), be, opts));
  } finally {
    be.dispose();
  }
}

const ids = (n: number, seed: number): number[] => {
  const r = new Prng(seed);
  return Array.from({ length: n }, () => r.int(256));
};
const greedy = (maxTokens: number) => resolveSamplingParams({ temperature: 0, maxTokens, ignoreEos: true });

function assertFree(e: Engine): void {
  const s = e.stats();
  assert.equal(s.freeBlocks, s.totalBlocks, 'every block free');
  assert.equal(s.freeSlots, s.totalSlots, 'every slot free');
  assert.equal(s.running + s.waiting, 0);
}

test('abort: a waiting, a running and a mid-callback abort each resolve with abort and free the cache at once', async () => {
  await withModel({ maxSeqs: 2 }, async (m) => {
    const e = m.engine;
    const a = e.enqueue({ promptIds: ids(10, 1), params: greedy(50) });
    const b = e.enqueue({ promptIds: ids(12, 2), params: greedy(50) });
    const c = e.enqueue({ promptIds: ids(5, 3), params: greedy(50) }); // waits: only 2 slots
    e.step();
    e.step();
    assert.equal(e.stats().running, 2);
    assert.equal(e.stats().waiting, 1);
    assert.ok(e.abort(c.id));
    assert.ok(e.abort(a.id));
    assert.equal(e.abort(a.id), false, 'second abort of the same id');
    assert.equal(e.stats().running, 1);
    assert.equal(e.stats().freeSlots, 1, 'the slot came back before the next step');
    assert.equal((await a.result).finishReason, 'abort');
    assert.equal((await c.result).finishReason, 'abort');
    assert.equal((await a.result).tokenIds.length, 2);
    e.abort(b.id);
    assert.equal((await b.result).finishReason, 'abort');
    assertFree(e);

    // Aborting another request from a streaming callback (as a server does when a write fails).
    let victim = -1;
    let victimDeltas = 0;
    const d = e.enqueue({ promptIds: ids(8, 4), params: greedy(6), onDelta: () => void e.abort(victim) });
    const v = e.enqueue({ promptIds: ids(8, 5), params: greedy(6), onDelta: () => victimDeltas++ });
    victim = v.id;
    e.runUntilIdle();
    assert.equal((await d.result).finishReason, 'length');
    assert.equal((await v.result).finishReason, 'abort');
    assert.ok(victimDeltas <= 1);
    assertFree(e);
  });
});

test('stats count prompt and generated tokens, and cache usage is used/total blocks', async () => {
  await withModel({ cacheTokens: 256, blockSize: 16 }, async (m) => {
    const e = m.engine;
    const p = e.submit({ promptIds: ids(40, 1), params: greedy(3) });
    e.step();
    const s = e.stats();
    assert.equal(s.running, 1);
    assert.equal(s.totalBlocks, 16);
    assert.equal(s.cacheUsage, 3 / 16);
    e.runUntilIdle();
    await p;
    const t = e.stats();
    assert.equal(t.promptTokens, 40);
    assert.equal(t.generationTokens, 3);
    assert.equal(t.cacheUsage, 0);
  });
});

test('driver: runs requests submitted over time, yields to the event loop between steps, drains', async () => {
  await withModel({}, async (m) => {
    const d = new EngineDriver(m.engine);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const first = d.submit({ promptIds: ids(20, 1), params: greedy(30) });
    await new Promise((r) => setTimeout(r, 5));
    const second = d.submit({ promptIds: ids(20, 2), params: greedy(5) });
    const drained = d.drain();
    assert.throws(() => d.submit({ promptIds: ids(3, 3), params: greedy(2) }), EngineUnavailableError);
    await drained;
    clearInterval(timer);
    assert.equal((await first.result).tokenIds.length, 30);
    assert.equal((await second.result).tokenIds.length, 5);
    assert.ok(ticks > 3, `timers ran between steps (${ticks})`);
    assertFree(m.engine);
  });
});

test('driver: a failing step rejects every pending request, frees the cache and stops', async () => {
  await withModel({}, async (m) => {
    const boom = new Error('device lost');
    const model = m.engine.model as { forward: unknown };
    model.forward = () => {
      throw boom;
    };
    const seen: unknown[] = [];
    const d = new EngineDriver(m.engine, (e) => seen.push(e));
    const a = d.submit({ promptIds: ids(5, 1), params: greedy(4) });
    await assert.rejects(a.result, /device lost/);
    assert.deepEqual(seen, [boom]);
    assert.equal(d.available, false);
    assertFree(m.engine);
  });
});
