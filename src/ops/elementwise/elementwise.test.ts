import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostTensor, toF64 } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import { roundBf16 } from '../../util/numeric.js';
import { Prng } from '../../util/prng.js';
import { cpuEmbedding } from '../embedding/cpu.js';
import { refEmbedding } from '../embedding/embedding.js';
import { pair, randn } from '../test-util.js';
import { cpuAdd, cpuGatherRows, cpuRoundBf16, cpuSilu, cpuSiluMul } from './cpu.js';
import { refAdd, refGatherRows, refRoundBf16, refSilu, refSiluMul } from './elementwise.js';
import { InvalidRequestError } from '../../util/errors.js';

/** f32 storage vs float64: error relative to the tensor's scale (see util/compare.ts). */
const ok = (a: ArrayLike<number>, b: ArrayLike<number>, what: string): void => {
  const s = compare(a, b, 1);
  assert.ok(s.maxRel < 1e-6, `${what}: ${fmtStats(s)}`);
};

test('silu, siluMul, add: cpu vs reference (T = 1 and odd shapes, aliasing)', () => {
  const rng = new Prng(3);
  for (const [T, F] of [[1, 1], [3, 17], [8, 256]]) {
    const x = pair([T, F], randn(rng, T * F, 4));
    const o = pair([T, F], new Float64Array(T * F));
    refSilu(o.ref, x.ref);
    cpuSilu(o.cpu, x.cpu);
    ok(toF64(o.cpu), toF64(o.ref), `silu ${T}x${F}`);
    const gu = pair([T, 2 * F], randn(rng, 2 * T * F, 4));
    refSiluMul(o.ref, gu.ref);
    cpuSiluMul(o.cpu, gu.cpu);
    ok(toF64(o.cpu), toF64(o.ref), `siluMul ${T}x${F}`);
    const b = pair([T, F], randn(rng, T * F));
    refAdd(o.ref, o.ref, b.ref);
    cpuAdd(o.cpu, o.cpu, b.cpu);
    ok(toF64(o.cpu), toF64(o.ref), `add ${T}x${F}`);
  }
  // silu(x) = x·sigmoid(x) at a few exact points; extreme inputs stay finite.
  const x = pair([1, 4], [0, 1, -1000, 1000]);
  const o = pair([1, 4], [0, 0, 0, 0]);
  cpuSilu(o.cpu, x.cpu);
  const v = toF64(o.cpu);
  assert.equal(v[0], 0);
  assert.ok(Math.abs(v[1] - 1 / (1 + Math.exp(-1))) < 1e-7);
  assert.equal(v[2], -0);
  assert.equal(v[3], 1000);
});

test('gatherRows and embedding: cpu vs reference, bf16 table, out-of-range ids rejected', () => {
  const rng = new Prng(4);
  const x = pair([10, 6], randn(rng, 60));
  const idx = Int32Array.of(9, 0, 3, 3);
  const o = pair([4, 6], new Float64Array(24));
  refGatherRows(o.ref, x.ref, idx);
  cpuGatherRows(o.cpu, x.cpu, idx);
  ok(toF64(o.cpu), toF64(o.ref), 'gatherRows');
  for (const dt of ['f32', 'bf16'] as const) {
    const table = pair([50, 8], randn(rng, 400).map(Math.fround), dt); // f32-exact: rows copy bit for bit
    const ids = Int32Array.of(49, 0, 7);
    const e = pair([3, 8], new Float64Array(24));
    refEmbedding(e.ref, table.ref, ids);
    cpuEmbedding(e.cpu, table.cpu, ids);
    assert.deepEqual(Array.from(toF64(e.cpu)), Array.from(toF64(e.ref)), `embedding ${dt}`);
    assert.throws(() => cpuEmbedding(e.cpu, table.cpu, Int32Array.of(1, 50, 2)), InvalidRequestError);
    assert.throws(() => cpuEmbedding(e.cpu, table.cpu, Int32Array.of(-1, 0, 2)), InvalidRequestError);
  }
});

test('roundBf16 rounds to nearest even through bf16', () => {
  const vals = [1, 1 + 2 ** -8, 1 + 3 * 2 ** -9, -3.14159, 1e-30, 65504.5];
  const r = hostTensor('f64', [6], vals);
  refRoundBf16(r);
  const c = pair([6], vals);
  cpuRoundBf16(c.cpu);
  assert.deepEqual(Array.from(toF64(c.cpu)), Array.from(toF64(r)));
  assert.deepEqual(Array.from(toF64(r)), vals.map(roundBf16));
  assert.equal(roundBf16(1 + 2 ** -8), 1); // tie → even
  assert.equal(roundBf16(1 + 3 * 2 ** -8), 1 + 2 ** -6); // tie → even (up)
});
