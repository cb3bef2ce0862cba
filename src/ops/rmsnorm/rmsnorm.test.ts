import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toF64 } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import { Prng } from '../../util/prng.js';
import { pair, randn } from '../test-util.js';
import { cpuAddRmsnorm, cpuHeadRmsnorm, cpuRmsnorm } from './cpu.js';
import { refAddRmsnorm, refHeadRmsnorm, refRmsnorm } from './rmsnorm.js';

/** f32 storage vs float64: error relative to the tensor's scale (see util/compare.ts). */
const ok = (a: ArrayLike<number>, b: ArrayLike<number>, what: string): void => {
  const s = compare(a, b, 1);
  assert.ok(s.maxRel < 1e-6, `${what}: ${fmtStats(s)}`);
};

test('rmsnorm and addRmsnorm: cpu vs reference at T = 1, odd T and real widths; out aliasing x', () => {
  const rng = new Prng(1);
  for (const [T, C] of [[1, 1], [1, 64], [5, 33], [3, 4096]]) {
    const x = pair([T, C], randn(rng, T * C, 3));
    const w = pair([C], randn(rng, C));
    const out = pair([T, C], new Float64Array(T * C));
    refRmsnorm(out.ref, x.ref, w.ref, 1e-6);
    cpuRmsnorm(out.cpu, x.cpu, w.cpu, 1e-6);
    ok(toF64(out.cpu), toF64(out.ref), `rmsnorm ${T}x${C}`);
    cpuRmsnorm(x.cpu, x.cpu, w.cpu, 1e-6); // in place
    ok(toF64(x.cpu), toF64(out.ref), `rmsnorm in place ${T}x${C}`);

    const r = pair([T, C], randn(rng, T * C));
    const d = pair([T, C], randn(rng, T * C));
    refAddRmsnorm(out.ref, r.ref, d.ref, w.ref, 1e-5);
    cpuAddRmsnorm(out.cpu, r.cpu, d.cpu, w.cpu, 1e-5);
    ok(toF64(r.cpu), toF64(r.ref), `residual ${T}x${C}`);
    ok(toF64(out.cpu), toF64(out.ref), `addRmsnorm ${T}x${C}`);
  }
});

test('addRmsnorm adds into the residual first (r ← r + x; out = norm(r)·w)', () => {
  const r = pair([1, 2], [1, 1]);
  const x = pair([1, 2], [2, -2]);
  const w = pair([2], [1, 2]);
  const out = pair([1, 2], [0, 0]);
  refAddRmsnorm(out.ref, r.ref, x.ref, w.ref, 0);
  assert.deepEqual(Array.from(toF64(r.ref)), [3, -1]);
  const inv = 1 / Math.sqrt((9 + 1) / 2);
  assert.deepEqual(Array.from(toF64(out.ref)), [3 * inv, -1 * inv * 2]);
});

test('headRmsnorm normalises each head slice separately', () => {
  const rng = new Prng(2);
  for (const [T, H, D] of [[1, 1, 8], [4, 3, 16], [2, 32, 128]]) {
    const x = pair([T, H * D], randn(rng, T * H * D, 5));
    const w = pair([D], randn(rng, D));
    const out = pair([T, H * D], new Float64Array(T * H * D));
    refHeadRmsnorm(out.ref, x.ref, w.ref, D, 1e-6);
    cpuHeadRmsnorm(out.cpu, x.cpu, w.cpu, D, 1e-6);
    ok(toF64(out.cpu), toF64(out.ref), `headRmsnorm ${T}x${H}x${D}`);
    // Scaling one head's input leaves the others unchanged and that head's output unchanged.
    const y = toF64(x.ref);
    for (let d = 0; d < D; d++) y[d] *= 10;
    const x2 = pair([T, H * D], y);
    const out2 = pair([T, H * D], new Float64Array(T * H * D));
    refHeadRmsnorm(out2.ref, x2.ref, w.ref, D, 0);
    refHeadRmsnorm(out.ref, x.ref, w.ref, D, 0);
    ok(toF64(out2.ref), toF64(out.ref), 'scale invariance per head');
  }
});
