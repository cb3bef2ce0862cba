import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RouterParams } from '../../backend/backend.js';
import { CpuBackend } from '../../backend/cpu/cpu-backend.js';
import { hostTensor, toF64, type Tensor } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import { sigmoid } from '../../util/numeric.js';
import { Prng } from '../../util/prng.js';
import { pair, randn, sharedTensor } from '../test-util.js';
import { cpuMoeRoute } from './cpu.js';
import { refMoeExperts, refMoeRoute } from './moe.js';

// ---------------------------------------------------------------------------------------------
// Brute-force router: an independent formulation. A selection of k out of candidates is the
// unique subset that dominates (every member beats every non-member: higher value, or equal value
// and lower index). Small cases enumerate all subsets; large ones count, per candidate, how many
// candidates beat it (rank < k), since C(128, 8) subsets cannot be enumerated.

const beats = (v: ArrayLike<number>, a: number, b: number): boolean => v[a] > v[b] || (v[a] === v[b] && a < b);

function binom(n: number, k: number): number {
  let r = 1;
  for (let i = 0; i < k; i++) r = (r * (n - i)) / (i + 1);
  return r;
}

function dominantSubset(cands: number[], k: number, v: ArrayLike<number>): Set<number> {
  if (binom(cands.length, k) > 20000) {
    const rank = (e: number): number => cands.filter((f) => f !== e && beats(v, f, e)).length;
    const chosen = new Set(cands.filter((e) => rank(e) < k));
    assert.equal(chosen.size, k);
    return chosen;
  }
  const found: Set<number>[] = [];
  const pick: number[] = [];
  const rec = (from: number): void => {
    if (pick.length === k) {
      const s = new Set(pick);
      if (pick.every((a) => cands.every((b) => s.has(b) || beats(v, a, b)))) found.push(s);
      return;
    }
    for (let i = from; i < cands.length; i++) {
      pick.push(cands[i]);
      rec(i + 1);
      pick.pop();
    }
  };
  rec(0);
  assert.equal(found.length, 1, 'exactly one dominating subset');
  return found[0];
}

function rowScores(logits: number[], fn: RouterParams['scoreFunction']): number[] {
  if (fn === 'sigmoid') return logits.map(sigmoid);
  const m = Math.max(...logits);
  const ex = logits.map((l) => Math.exp(l - m));
  let sum = 0;
  for (const v of ex) sum += v;
  return ex.map((v) => v / sum);
}

interface Brute {
  chosen: Set<number>;
  sel: number[];
  weight: Map<number, number>;
  /** The K-th chosen and the best rejected allowed expert have equal selection scores. */
  tieAtBoundary: boolean;
}

function bruteRoute(logits: number[], bias: number[] | null, p: RouterParams): Brute {
  const E = p.nExperts;
  const scores = rowScores(logits, p.scoreFunction);
  const sel = scores.map((s, e) => s + (bias ? bias[e] : 0));
  let allowed = Array.from({ length: E }, (_, e) => e);
  const G = p.nGroup;
  if (G !== null && p.topkGroup !== null && E > G && E % G === 0) {
    const size = E / G;
    // Top-2 sum as the best pair sum: float addition is monotone, so this equals top1 + top2.
    const gScore = Array.from({ length: G }, (_, g) => {
      if (size === 1) return sel[g];
      let best = -Infinity;
      for (let i = g * size; i < (g + 1) * size; i++) for (let j = i + 1; j < (g + 1) * size; j++) best = Math.max(best, sel[i] + sel[j]);
      return best;
    });
    const groups = dominantSubset(Array.from({ length: G }, (_, g) => g), p.topkGroup, gScore);
    allowed = allowed.filter((e) => groups.has(Math.floor(e / size)));
  }
  const chosen = dominantSubset(allowed, p.topK, sel);
  let sum = 0;
  for (const e of chosen) sum += scores[e];
  const weight = new Map<number, number>();
  for (const e of chosen) weight.set(e, ((p.renormalize ? scores[e] / (sum + p.renormEps) : scores[e]) * p.routedScalingFactor));
  const worstIn = Math.min(...[...chosen].map((e) => sel[e]));
  const bestOut = Math.max(-Infinity, ...allowed.filter((e) => !chosen.has(e)).map((e) => sel[e]));
  return { chosen, sel, weight, tieAtBoundary: worstIn === bestOut };
}

// ---------------------------------------------------------------------------------------------

function params(E: number, K: number, nGroup: number | null, topkGroup: number | null, over: Partial<RouterParams> = {}): RouterParams {
  return { nExperts: E, topK: K, nGroup, topkGroup, scoreFunction: 'sigmoid', renormalize: true, renormEps: 0, routedScalingFactor: 1, ...over };
}

/** f32-exact logits from a 9-value set, so exact ties are frequent. */
function tiedLogits(rng: Prng, n: number): number[] {
  return Array.from({ length: n }, () => (rng.int(9) - 4) * 0.5);
}

function routeOn(fn: typeof refMoeRoute, dtype: 'f64' | 'f32', T: number, logits: number[], bias: number[] | null, p: RouterParams): { ids: Int32Array; w: Float64Array } {
  const ids = hostTensor('i32', [T, p.topK]);
  const w = hostTensor(dtype, [T, p.topK]);
  const b: Tensor | null = bias ? hostTensor(dtype, [p.nExperts], bias) : null;
  fn(ids, w, hostTensor(dtype, [T, p.nExperts], logits), b, p);
  return { ids: Int32Array.from(toF64(ids)), w: toF64(w) };
}

const bruteCases: { E: number; K: number; G: number | null; kg: number | null; rows: number }[] = [
  { E: 8, K: 2, G: 4, kg: 2, rows: 150 },
  { E: 12, K: 3, G: 4, kg: 2, rows: 150 },
  { E: 16, K: 4, G: 8, kg: 3, rows: 100 },
  { E: 16, K: 4, G: 4, kg: 1, rows: 100 },
  { E: 16, K: 4, G: null, kg: null, rows: 100 },
  { E: 10, K: 3, G: null, kg: null, rows: 150 },
  { E: 6, K: 2, G: 4, kg: 2, rows: 100 }, // E % nGroup != 0: plain top-k
  { E: 8, K: 2, G: 8, kg: 2, rows: 100 }, // E == nGroup: plain top-k
  { E: 256, K: 8, G: 8, kg: 4, rows: 12 }, // the real config
  { E: 256, K: 8, G: null, kg: null, rows: 6 },
];

test('moeRoute (reference and cpu) vs brute-force enumeration, with frequent exact ties', () => {
  const rng = new Prng(11);
  let rows = 0, boundaryTies = 0;
  for (const c of bruteCases)
    for (const withBias of [false, true])
      for (const scoreFunction of ['sigmoid', 'softmax'] as const) {
        const p = params(c.E, c.K, c.G, c.kg, { scoreFunction, renormalize: rng.next() < 0.7, renormEps: 1e-20, routedScalingFactor: 2.5 });
        const T = c.rows;
        const logits = tiedLogits(rng, T * c.E);
        const bias = withBias ? Array.from({ length: c.E }, () => (rng.int(3) - 1) * 0.25) : null;
        const ref = routeOn(refMoeRoute, 'f64', T, logits, bias, p);
        const cpu = routeOn(cpuMoeRoute, 'f32', T, logits, bias, p);
        for (let t = 0; t < T; t++) {
          const b = bruteRoute(logits.slice(t * c.E, (t + 1) * c.E), bias, p);
          rows++;
          if (b.tieAtBoundary) boundaryTies++;
          const tag = `E=${c.E} K=${c.K} G=${c.G} kg=${c.kg} bias=${withBias} ${scoreFunction} row ${t}`;
          for (const [name, got, tol] of [['ref', ref, 1e-12], ['cpu', cpu, 1e-6]] as const) {
            const row = Array.from(got.ids.subarray(t * c.K, (t + 1) * c.K));
            assert.deepEqual(new Set(row), b.chosen, `${name} ids ${tag}: [${row}] vs [${[...b.chosen]}]`);
            for (let k = 1; k < c.K; k++) assert.ok(beats(b.sel, row[k - 1], row[k]), `${name} order ${tag}: [${row}]`);
            row.forEach((e, k) => {
              const want = b.weight.get(e) as number;
              assert.ok(Math.abs(got.w[t * c.K + k] - want) <= tol * Math.abs(want), `${name} weight ${tag} k=${k}: ${got.w[t * c.K + k]} vs ${want}`);
            });
          }
        }
      }
  console.log(`brute-force router: ${rows} rows, ${boundaryTies} with an exact tie at the top-k boundary`);
  assert.ok(boundaryTies > rows / 10, 'the tie-breaking rule must be exercised');
});

test('moeRoute cpu == reference: ids exact, weights rel <= 1e-6', () => {
  const rng = new Prng(5);
  const E = 256, K = 8, T = 17;
  let checked = 0;
  for (const grouped of [true, false])
    for (const scoreFunction of ['sigmoid', 'softmax'] as const)
      for (const renormalize of [true, false])
        for (const renormEps of [0, 1e-20])
          for (const routedScalingFactor of [1, 2.5])
            for (const withBias of [false, true])
              for (const tied of [false, true]) {
                const p = params(E, K, grouped ? 8 : null, grouped ? 4 : null, { scoreFunction, renormalize, renormEps, routedScalingFactor });
                const logits = tied ? tiedLogits(rng, T * E) : Array.from(randn(rng, T * E, 2), Math.fround);
                const bias = withBias ? Array.from(randn(rng, E, 0.1), Math.fround) : null;
                const ref = routeOn(refMoeRoute, 'f64', T, logits, bias, p);
                const cpu = routeOn(cpuMoeRoute, 'f32', T, logits, bias, p);
                assert.deepEqual(cpu.ids, ref.ids, JSON.stringify(p));
                const s = compare(cpu.w, ref.w, 0);
                assert.ok(s.maxRel <= 1e-6, `${JSON.stringify(p)}: ${fmtStats(s)}`);
                checked++;
              }
  assert.equal(checked, 128);
});

test('moeRoute weights: renormalised rows sum to routedScalingFactor', () => {
  const rng = new Prng(9);
  const p = params(64, 6, 8, 3, { routedScalingFactor: 2.5, renormEps: 1e-20 });
  const T = 5;
  const got = routeOn(cpuMoeRoute, 'f32', T, Array.from(randn(rng, T * 64), Math.fround), null, p);
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let k = 0; k < 6; k++) s += got.w[t * 6 + k];
    assert.ok(Math.abs(s - 2.5) < 1e-5, `row ${t} sums to ${s}`);
  }
});

// ---------------------------------------------------------------------------------------------

/** Random distinct experts per row drawn from [0, usable): experts >= usable receive no tokens. */
function randomIds(rng: Prng, T: number, K: number, usable: number): Tensor {
  const v: number[] = [];
  for (let t = 0; t < T; t++) {
    const row = new Set<number>();
    while (row.size < K) row.add(rng.int(usable));
    v.push(...row);
  }
  return hostTensor('i32', [T, K], v);
}

const expertCases = [
  { T: 1, C: 64, F: 48, E: 5, K: 3 },
  { T: 13, C: 64, F: 48, E: 5, K: 3 }, // ~10 tokens per used expert
  { T: 13, C: 256, F: 256, E: 4, K: 2 }, // large enough for the threaded matmul
];

for (const wDtype of ['f32', 'bf16'] as const)
  test(`moeExperts cpu vs reference, weights ${wDtype}`, () => {
    const be = new CpuBackend({ threads: 2 });
    try {
      const rng = new Prng(wDtype === 'f32' ? 21 : 22);
      for (const { T, C, F, E, K } of expertCases) {
        const x = pair([T, C], randn(rng, T * C));
        const ids = randomIds(rng, T, K, E - 1); // the last expert gets no tokens
        const w = pair([T, K], Array.from({ length: T * K }, () => rng.uniform(0.05, 1)));
        const w13 = pair([E * 2 * F, C], randn(rng, E * 2 * F * C, 1 / Math.sqrt(C)), wDtype);
        const w2 = pair([E * C, F], randn(rng, E * C * F, 1 / Math.sqrt(F)), wDtype);
        const out = pair([T, C], new Float64Array(T * C).fill(Number.NaN)); // must be overwritten
        refMoeExperts(out.ref, x.ref, ids, w.ref, w13.ref, w2.ref, F);
        be.ops.moeExperts(out.cpu, x.cpu, ids, w.cpu, w13.cpu, w2.cpu, F);
        // Floor at 1% of the largest output: entries near zero carry f32 cancellation error
        // (~1e-7 absolute on O(1) outputs) that a 0.1% floor turns into rel ~5e-5.
        const s = compare(toF64(out.cpu), toF64(out.ref), 1e-2);
        console.log(`moeExperts ${wDtype} T=${T} C=${C} F=${F} E=${E} K=${K}: ${fmtStats(s)}`);
        assert.ok(s.maxRel < 1e-5 && s.nmse < 1e-12, fmtStats(s));
      }
    } finally {
      be.dispose();
    }
  });

test('moeExperts with bf16 inputs (MatmulInputs): cpu vs reference, x and silu(g)·u rounded the same way', () => {
  const be = new CpuBackend({ threads: 2, matmulInputs: 'bf16' });
  try {
    const rng = new Prng(23);
    for (const { T, C, F, E, K } of expertCases) {
      const x = pair([T, C], randn(rng, T * C));
      const ids = randomIds(rng, T, K, E - 1);
      const w = pair([T, K], Array.from({ length: T * K }, () => rng.uniform(0.05, 1)));
      const w13 = pair([E * 2 * F, C], randn(rng, E * 2 * F * C, 1 / Math.sqrt(C)), 'bf16');
      const w2 = pair([E * C, F], randn(rng, E * C * F, 1 / Math.sqrt(F)), 'bf16');
      const out = pair([T, C], new Float64Array(T * C).fill(Number.NaN)), plain = pair([T, C], new Float64Array(T * C));
      refMoeExperts(out.ref, x.ref, ids, w.ref, w13.ref, w2.ref, F, true);
      refMoeExperts(plain.ref, x.ref, ids, w.ref, w13.ref, w2.ref, F);
      be.ops.moeExperts(out.cpu, x.cpu, ids, w.cpu, w13.cpu, w2.cpu, F);
      // x rounds identically; an h value whose f32 and f64 versions straddle a rounding boundary
      // (rare) rounds one ulp apart, so NMSE, not max relative error, bounds the agreement.
      const s = compare(toF64(out.cpu), toF64(out.ref), 1e-2);
      const moved = compare(toF64(plain.ref), toF64(out.ref), 1e-2);
      assert.ok(s.nmse < 1e-9, `T=${T} C=${C}: ${fmtStats(s)}`);
      assert.ok(moved.nmse > 1e-7, `T=${T} C=${C}: the rounding changed nothing (${fmtStats(moved)})`);
    }
  } finally {
    be.dispose();
  }
});

test('moeExperts on row views: a batch equals its rows run one at a time', () => {
  const be = new CpuBackend({ threads: 2 });
  try {
    const rng = new Prng(4);
    const T = 6, C = 32, F = 16, E = 8, K = 2;
    const x = sharedTensor('f32', [T, C], randn(rng, T * C));
    const ids = randomIds(rng, T, K, E);
    const w = sharedTensor('f32', [T, K], Array.from({ length: T * K }, () => rng.next()));
    const w13 = sharedTensor('bf16', [E * 2 * F, C], randn(rng, E * 2 * F * C, 0.2));
    const w2 = sharedTensor('bf16', [E * C, F], randn(rng, E * C * F, 0.2));
    const all = sharedTensor('f32', [T, C]);
    be.ops.moeExperts(all, x, ids, w, w13, w2, F);
    const one = sharedTensor('f32', [T, C]);
    for (let t = 0; t < T; t++) be.ops.moeExperts(one.rows(t, 1), x.rows(t, 1), ids.rows(t, 1), w.rows(t, 1), w13, w2, F);
    const s = compare(toF64(one), toF64(all));
    assert.ok(s.maxRel < 1e-6, fmtStats(s));
  } finally {
    be.dispose();
  }
});
