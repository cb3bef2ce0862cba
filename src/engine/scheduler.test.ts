import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng } from '../util/prng.js';
import { blocksFor, planStep, type SchedRequest, type SchedState } from './scheduler.js';

const req = (id: number, total: number, done = 0, blockSize = 4): SchedRequest => ({ id, total, done, blocks: blocksFor(done, blockSize) });

function state(over: Partial<SchedState>): SchedState {
  return { running: [], waiting: [], freeBlocks: 100, freeSlots: 8, tokenBudget: 32, maxSeqs: 8, blockSize: 4, ...over };
}

test('decodes and prefill chunks share a step; running requests go first', () => {
  const p = planStep(state({ running: [req(1, 11, 10), req(2, 21, 20)], waiting: [req(3, 50)] }));
  assert.deepEqual(p.preempt, []);
  assert.deepEqual(p.admit, [3]);
  assert.deepEqual(
    p.parts.map((x) => [x.id, x.len]),
    [
      [1, 1],
      [2, 1],
      [3, 30],
    ],
  );
  assert.equal(p.tokens, 32);
  assert.equal(p.parts[2].blocks, 8); // 30 tokens in blocks of 4
});

test('a long prompt is chunked by the token budget and continues next step', () => {
  const first = planStep(state({ waiting: [req(1, 100)] }));
  assert.deepEqual(first.parts, [{ id: 1, len: 32, blocks: 8 }]);
  const next = planStep(state({ running: [req(1, 100, 32)], waiting: [req(2, 5)] }));
  assert.deepEqual(
    next.parts.map((x) => [x.id, x.len]),
    [[1, 32]],
    'the budget is spent on the running chunk; the newcomer waits',
  );
});

test('--max-num-seqs caps the batch and free state slots cap admission', () => {
  const waiting = Array.from({ length: 10 }, (_, i) => req(i, 2));
  assert.equal(planStep(state({ waiting, maxSeqs: 3 })).parts.length, 3);
  assert.equal(planStep(state({ waiting, freeSlots: 2 })).admit.length, 2);
  assert.equal(planStep(state({ waiting, freeSlots: 0 })).parts.length, 0);
});

test('admission is FIFO by free blocks: a request that does not fit blocks those behind it', () => {
  const p = planStep(state({ waiting: [req(1, 20), req(2, 2)], freeBlocks: 3 }));
  assert.deepEqual(p.parts, []);
});

test('out of blocks: the newest running request is preempted, and nothing is admitted that step', () => {
  // 1 and 2 each cross a block boundary; one free block.
  const running = [req(1, 9, 8), req(2, 13, 12), req(3, 6, 5)];
  const p = planStep(state({ running, waiting: [req(9, 2)], freeBlocks: 1 }));
  assert.deepEqual(p.preempt, [3]);
  assert.deepEqual(
    p.parts.map((x) => x.id),
    [1, 2],
  );
  assert.deepEqual(p.admit, []);
});

test('a request that cannot grow even alone preempts itself and everything newer', () => {
  const running = [req(1, 9, 8), req(2, 5, 4)];
  const p = planStep(state({ running, freeBlocks: 0 }));
  // 1 needs a 3rd block: 2 goes (frees 1 block), which is enough.
  assert.deepEqual(p.preempt, [2]);
  assert.deepEqual(p.parts, [{ id: 1, len: 1, blocks: 3 }]);
  const q = planStep(state({ running: [req(1, 9, 8)], freeBlocks: 0 }));
  assert.deepEqual(q.preempt, [1]);
  assert.deepEqual(q.parts, []);
});

test('no cache without paged layers: blockSize 0 never preempts', () => {
  const p = planStep(state({ running: [req(1, 9, 8, 0)], waiting: [req(2, 40, 0, 0)], freeBlocks: 0, blockSize: 0 }));
  assert.deepEqual(p.preempt, []);
  assert.deepEqual(
    p.parts.map((x) => [x.id, x.len]),
    [
      [1, 1],
      [2, 31],
    ],
  );
});

test('invariants over random queue states: budget, caps, blocks and slots never overdrawn', () => {
  const rng = new Prng(42);
  for (let iter = 0; iter < 2000; iter++) {
    const blockSize = 1 + rng.int(8);
    const running: SchedRequest[] = [];
    const waiting: SchedRequest[] = [];
    let id = 0;
    for (let i = rng.int(8); i > 0; i--) {
      const done = 1 + rng.int(40);
      running.push({ id: id++, done, total: done + 1 + rng.int(3) * rng.int(20), blocks: blocksFor(done, blockSize) });
    }
    for (let i = rng.int(8); i > 0; i--) waiting.push(req(id++, 1 + rng.int(60), 0, blockSize));
    const s = state({
      running,
      waiting,
      blockSize,
      freeBlocks: rng.int(30),
      freeSlots: rng.int(4),
      tokenBudget: 1 + rng.int(64),
      maxSeqs: 1 + rng.int(10),
    });
    const p = planStep(s);
    assert.ok(p.tokens <= s.tokenBudget);
    assert.equal(
      p.tokens,
      p.parts.reduce((a, x) => a + x.len, 0),
    );
    assert.ok(p.parts.length <= s.maxSeqs);
    assert.ok(p.admit.length <= s.freeSlots);
    const all = new Map([...running, ...waiting].map((r) => [r.id, r]));
    let blocks = s.freeBlocks;
    for (const v of p.preempt) blocks += all.get(v)!.blocks;
    for (const x of p.parts) {
      const r = all.get(x.id)!;
      assert.ok(!p.preempt.includes(x.id), 'a preempted request does not run');
      assert.ok(x.len >= 1 && r.done + x.len <= r.total);
      assert.equal(x.blocks, Math.max(r.blocks, blocksFor(r.done + x.len, blockSize)));
      blocks -= x.blocks - r.blocks;
    }
    assert.ok(blocks >= 0, `blocks overdrawn at iteration ${iter}`);
    // Preemption takes the newest first.
    const order = running.map((r) => r.id);
    assert.deepEqual(p.preempt, order.slice(order.length - p.preempt.length).reverse());
  }
});
