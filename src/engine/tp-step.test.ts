/** Tensor-parallel step frames: a StepBatch and rank 0's step mode survive the wire, split anywhere. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CacheSeq } from '../cache/hybrid-cache.js';
import { FrameReader, decodeStep, encodeStep } from './tp-step.js';

test('tp-step: frames round-trip batch and mode through arbitrary chunking', () => {
  const a = new CacheSeq(0, 3), b = new CacheSeq(1, 5);
  a.blocks.push(7, 2);
  b.blocks.push(9);
  const batch = { ids: Int32Array.of(11, 12), positions: Int32Array.of(20, 4), seqs: [{ seq: a, start: 0, len: 1, ctxStart: 20 }, { seq: b, start: 1, len: 1, ctxStart: 4 }], sampleRows: Int32Array.of(0, 1) };
  const modes = ['eager', 'capture', 'replay'] as const;
  const wire = Buffer.concat(modes.map((m) => encodeStep(batch, m)));
  const got: ReturnType<typeof decodeStep>[] = [];
  const r = new FrameReader();
  for (let at = 0; at < wire.length; at += 7) r.push(wire.subarray(at, at + 7), (w) => got.push(decodeStep(w)));
  assert.deepEqual(got.map((g) => g.mode), [...modes]);
  for (const { batch: d } of got) {
    assert.deepEqual([...d.ids], [11, 12]);
    assert.deepEqual([...d.positions], [20, 4]);
    assert.deepEqual([...d.sampleRows], [0, 1]);
    assert.deepEqual(d.seqs.map((s) => [s.seq.slot, s.start, s.len, s.ctxStart, s.seq.length, [...s.seq.blockTable]]), [[3, 0, 1, 20, 20, [7, 2]], [5, 1, 1, 4, 4, [9]]]);
  }
});
