import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RopeSpec } from '../../backend/backend.js';
import { toF64 } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import { Prng } from '../../util/prng.js';
import { pair, randn } from '../test-util.js';
import { cpuRope } from './cpu.js';
import { refRope } from './rope.js';

const freqs = (theta: number, dim: number): Float64Array => Float64Array.from({ length: dim / 2 }, (_, i) => theta ** ((-2 * i) / dim));

const cases: { name: string; W: number; spec: RopeSpec }[] = [
  // Linear layers: 4 heads of 16, NeoX over the first 8 dims.
  { name: 'neox partial', W: 64, spec: { style: 'neox', nHeads: 4, headStride: 16, offset: 0, rotaryDim: 8, invFreq: freqs(10000, 8) } },
  // MLA q: 3 heads of [nope 6 | rope 4], GPT-J over the rope part.
  { name: 'gptj mla q', W: 30, spec: { style: 'gptj', nHeads: 3, headStride: 10, offset: 6, rotaryDim: 4, invFreq: freqs(10000, 4) } },
  // MLA k_pe: a single head, the whole row.
  { name: 'gptj k_pe', W: 64, spec: { style: 'gptj', nHeads: 1, headStride: 64, offset: 0, rotaryDim: 64, invFreq: freqs(6e6, 64) } },
];

for (const c of cases)
  test(`rope ${c.name}: cpu vs reference, large positions`, () => {
    const rng = new Prng(5);
    for (const T of [1, 7]) {
      const x = pair([T, c.W], randn(rng, T * c.W));
      const pos = Int32Array.from({ length: T }, (_, t) => (t === 0 ? 0 : 1 + rng.int(100_000)));
      refRope(x.ref, pos, c.spec);
      cpuRope(x.cpu, pos, c.spec);
      const s = compare(toF64(x.cpu), toF64(x.ref), 1);
      assert.ok(s.maxRel < 1e-6, `T=${T}: ${fmtStats(s)}`);
    }
  });

test('rope rotates the right pairs and leaves the rest alone', () => {
  // One head of 8, rotary 4, position 1 with invFreq [π/2, 0]: NeoX pairs (0,2),(1,3); GPT-J (0,1),(2,3).
  const row = [1, 2, 3, 4, 5, 6, 7, 8];
  const spec = (style: 'neox' | 'gptj'): RopeSpec => ({ style, nHeads: 1, headStride: 8, offset: 0, rotaryDim: 4, invFreq: Float64Array.of(Math.PI / 2, 0) });
  const neox = pair([1, 8], row);
  refRope(neox.ref, Int32Array.of(1), spec('neox'));
  assert.deepEqual(Array.from(toF64(neox.ref), (v) => Math.round(v * 1e9) / 1e9), [-3, 2, 1, 4, 5, 6, 7, 8]);
  const gptj = pair([1, 8], row);
  refRope(gptj.ref, Int32Array.of(1), spec('gptj'));
  assert.deepEqual(Array.from(toF64(gptj.ref), (v) => Math.round(v * 1e9) / 1e9), [-2, 1, 3, 4, 5, 6, 7, 8]);
  // Position 0 is the identity.
  const id = pair([1, 8], row);
  cpuRope(id.cpu, Int32Array.of(0), spec('neox'));
  assert.deepEqual(Array.from(toF64(id.cpu)), row);
});
