/**
 * The MLA decode metadata of a captured decode step (step-args.ts): the replay writer rebuilds what
 * the launcher staged (fillMlaMeta, one layout for one or many sequences), follows the contexts as
 * they grow, and asks for another graph when the longest block table crosses a power of two.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StepShape } from '../backend.js';
import { fillMlaMeta, mlaMetaStride, ReplayPlan } from './step-args.js';

const bs = 16;
const tables = [Int32Array.from({ length: 200 }, (_, b) => 500 + b), Int32Array.from({ length: 200 }, (_, b) => 900 - b)];
const step = (ctx: readonly number[]): StepShape => ({
  ids: new Int32Array(ctx.length),
  positions: Int32Array.from(ctx),
  sampleRows: Int32Array.from(ctx, (_, i) => i),
  seqs: ctx.map((ctxStart, i) => ({ start: i, len: 1, ctxStart, seq: { slot: i, length: ctxStart, blockTable: tables[i] } })),
});
const staged = (ctx: readonly number[]): { image: Int32Array; stride: number } => {
  const seqs = ctx.map((ctxStart, i) => ({ ctxStart, blockTable: tables[i] }));
  const stride = mlaMetaStride(seqs, bs), image = new Int32Array(seqs.length * stride);
  assert.ok(fillMlaMeta(image, 0, seqs, bs, stride));
  return { image, stride };
};

for (const ctx0 of [[40], [40, 700]])
  test(`MLA decode metadata replays for ${ctx0.length} sequence(s): rebuilt bit for bit, follows the contexts, another graph past a power of two`, () => {
    const { image, stride } = staged(ctx0);
    assert.equal(stride, 1 + 64, 'tables padded to 64 blocks');
    ctx0.forEach((c, i) => {
      assert.equal(image[i * stride], c);
      const used = Math.ceil((c + 1) / bs);
      assert.deepEqual(Array.from(image.subarray(i * stride + 1, i * stride + 1 + used)), Array.from(tables[i].subarray(0, used)));
      assert.ok(image.subarray(i * stride + 1 + used, (i + 1) * stride).every((v) => v === 0));
    });
    const plan = ReplayPlan.build([{ key: 'mla-meta', off: 0, bytes: image.byteLength, hint: { kind: 'mlaMeta', tables: tables.slice(0, ctx0.length), blockSize: bs } }], new Uint8Array(image.buffer), step(ctx0));
    assert.ok(plan, 'the writer reproduces the staged metadata');
    // Later steps: the same layout while every table fits 64 blocks; rewritten from the step.
    const later = ctx0.map((c) => c + 300);
    const img = new Int32Array(image.length);
    assert.ok(plan.write(step(later), img));
    assert.deepEqual(Array.from(img), Array.from(staged(later).image));
    // Past 64 blocks (1024 tokens) the stride doubles: another graph.
    assert.equal(plan.write(step(ctx0.map(() => 1100)), img), false);
  });

test('MLA decode metadata: a block table shorter than the context is refused', () => {
  const seqs = [{ ctxStart: 100, blockTable: Int32Array.of(1, 2, 3) }];
  assert.equal(fillMlaMeta(new Int32Array(mlaMetaStride(seqs, bs)), 0, seqs, bs, mlaMetaStride(seqs, bs)), false);
});
