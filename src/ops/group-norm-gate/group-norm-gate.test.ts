import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toF64 } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import { sigmoid } from '../../util/numeric.js';
import { Prng } from '../../util/prng.js';
import { refHeadRmsnorm, refRmsnorm } from '../rmsnorm/rmsnorm.js';
import { pair, randn } from '../test-util.js';
import { cpuGroupRmsnormGate } from './cpu.js';
import { refGroupRmsnormGate } from './group-norm-gate.js';

const EPS = 1e-6;

// [T, C, groups]: T = 1 and odd T, groups = 1 (norm over all C) and > 1, real 8 groups of 128-dim heads.
const shapes: [number, number, number][] = [
  [1, 16, 1],
  [1, 48, 3],
  [5, 48, 1],
  [5, 48, 3],
  [7, 128, 4],
  [3, 2048, 8],
];

test('groupRmsnormGate cpu vs reference', (t) => {
  const rng = new Prng(17);
  let worst = '';
  let worstRel = -1;
  for (const [T, C, G] of shapes) {
    const x = pair([T, C], randn(rng, T * C, 2));
    const g = pair([T, C], randn(rng, T * C, 3));
    const w = pair([C], randn(rng, C));
    const out = pair([T, C], new Float64Array(T * C));
    refGroupRmsnormGate(out.ref, x.ref, g.ref, w.ref, G, EPS);
    cpuGroupRmsnormGate(out.cpu, x.cpu, g.cpu, w.cpu, G, EPS);
    const s = compare(toF64(out.cpu), toF64(out.ref));
    assert.ok(s.maxRel < 1e-5, `T=${T} C=${C} groups=${G}: ${fmtStats(s)}`);
    if (s.maxRel > worstRel) [worstRel, worst] = [s.maxRel, `T=${T} C=${C} groups=${G}: ${fmtStats(s)}`];
  }
  t.diagnostic(`worst: ${worst}`);
});

test('groupRmsnormGate: out may alias x', () => {
  const rng = new Prng(4);
  const T = 5, C = 96, G = 3;
  const xv = randn(rng, T * C);
  const x = pair([T, C], xv), g = pair([T, C], randn(rng, T * C)), w = pair([C], randn(rng, C));
  const out = pair([T, C], new Float64Array(T * C));
  cpuGroupRmsnormGate(out.cpu, x.cpu, g.cpu, w.cpu, G, EPS);
  cpuGroupRmsnormGate(x.cpu, x.cpu, g.cpu, w.cpu, G, EPS);
  assert.deepEqual(toF64(x.cpu), toF64(out.cpu));
  refGroupRmsnormGate(out.ref, x.ref, g.ref, w.ref, G, EPS);
  refGroupRmsnormGate(x.ref, x.ref, g.ref, w.ref, G, EPS);
  assert.deepEqual(toF64(x.ref), toF64(out.ref));
});

test('groupRmsnormGate reference agrees with rmsnorm (groups = 1) and per-head rmsnorm (one group per head)', () => {
  const rng = new Prng(6);
  const T = 3, H = 4, D = 16, C = H * D;
  const x = pair([T, C], randn(rng, T * C));
  const gv = randn(rng, T * C);
  const g = pair([T, C], gv);
  const wd = randn(rng, D);
  const wTiled = Float64Array.from({ length: C }, (_, c) => wd[c % D]);
  const w = pair([C], wTiled);
  const gated = (y: Float64Array): Float64Array => y.map((val, i) => val * sigmoid(gv[i]));

  const a = pair([T, C], new Float64Array(T * C)), b = pair([T, C], new Float64Array(T * C));
  refGroupRmsnormGate(a.ref, x.ref, g.ref, w.ref, 1, EPS);
  refRmsnorm(b.ref, x.ref, w.ref, EPS);
  let s = compare(toF64(a.ref), gated(toF64(b.ref)));
  assert.ok(s.maxRel < 1e-12, `groups=1: ${fmtStats(s)}`);

  refGroupRmsnormGate(a.ref, x.ref, g.ref, w.ref, H, EPS);
  refHeadRmsnorm(b.ref, x.ref, pair([D], wd).ref, D, EPS);
  s = compare(toF64(a.ref), gated(toF64(b.ref)));
  assert.ok(s.maxRel < 1e-12, `groups=H: ${fmtStats(s)}`);
});

test('groupRmsnormGate rejects groups that do not divide C', () => {
  const x = pair([2, 48], new Float64Array(96));
  const w = pair([48], new Float64Array(48));
  assert.throws(() => cpuGroupRmsnormGate(x.cpu, x.cpu, x.cpu, w.cpu, 5, EPS), /48 channels do not split into 5 groups/);
  assert.throws(() => refGroupRmsnormGate(x.ref, x.ref, x.ref, w.ref, 5, EPS), /48 channels do not split into 5 groups/);
});
