import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { GqaParams, KvSeq } from '../../backend/backend.js';
import { CpuBackend } from '../../backend/cpu/cpu-backend.js';
import { toF64 } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import { Prng } from '../../util/prng.js';
import { pair, randf, type Pair } from '../test-util.js';
import { refGqaAttention, refGqaCacheWrite } from './gqa.js';

interface Dims {
  H: number;
  KVH: number;
  D: number;
}



/** One sequence in a paged cache: scrambled block table, spare blocks, unused rows poisoned with NaN. */
interface Scene {
  p: GqaParams;
  blockTable: Int32Array;
  cache: Pair;
  q: Float64Array; // [ctx, H·D], one query row per position
  k: Float64Array; // [ctx, KVH·D]
  v: Float64Array; // [ctx, KVH·D]
}

function scene(d: Dims, blockSize: number, ctx: number, seed: number, qScale = 1): Scene {
  const rng = new Prng(seed);
  const p: GqaParams = { nHeads: d.H, nKvHeads: d.KVH, headDim: d.D, scale: d.D ** -0.5, blockSize };
  const nBlocks = Math.ceil(ctx / blockSize);
  const phys = nBlocks + 3;
  const perm = Array.from({ length: phys }, (_, i) => i);
  for (let i = phys - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const KD = d.KVH * d.D;
  return {
    p,
    blockTable: Int32Array.from(perm.slice(0, nBlocks)),
    cache: pair([phys * blockSize, 2 * KD], new Float64Array(phys * blockSize * 2 * KD).fill(NaN)),
    q: randf(rng, ctx * d.H * d.D, qScale),
    k: randf(rng, ctx * KD),
    v: randf(rng, ctx * KD),
  };
}

function writeCache(be: CpuBackend, sc: Scene, start: number, n: number): void {
  const KD = sc.p.nKvHeads * sc.p.headDim;
  const seq: KvSeq = { blockTable: sc.blockTable, ctxStart: start };
  const k = pair([n, KD], sc.k.subarray(start * KD, (start + n) * KD));
  const v = pair([n, KD], sc.v.subarray(start * KD, (start + n) * KD));
  refGqaCacheWrite(sc.cache.ref, k.ref, v.ref, seq, sc.p);
  be.ops.gqaCacheWrite(sc.cache.cpu, k.cpu, v.cpu, seq, sc.p);
}

/** Queries for positions [start, start+n) in one op call on both backends. */
function attend(be: CpuBackend, sc: Scene, start: number, n: number): Pair {
  const HD = sc.p.nHeads * sc.p.headDim;
  const seq: KvSeq = { blockTable: sc.blockTable, ctxStart: start };
  const q = pair([n, HD], sc.q.subarray(start * HD, (start + n) * HD));
  const out = pair([n, HD], new Float64Array(n * HD));
  refGqaAttention(out.ref, q.ref, sc.cache.ref, seq, sc.p);
  be.ops.gqaAttention(out.cpu, q.cpu, sc.cache.cpu, seq, sc.p);
  return out;
}

function withCpu(fn: (be: CpuBackend) => void): void {
  const be = new CpuBackend({ threads: 2 });
  try {
    fn(be);
  } finally {
    be.dispose();
  }
}

const odd: Dims = { H: 6, KVH: 2, D: 5 }; // group of 3, odd head dim
const mha: Dims = { H: 3, KVH: 3, D: 7 };
const mqa: Dims = { H: 4, KVH: 1, D: 6 };
const real: Dims = { H: 16, KVH: 4, D: 128 }; // Ring-mini-linear-2.0

/** Same reasoning as mla.test.ts: f32 scores carry ~1e-7 relative rounding; nmse stays at f32 level. */
const TOL = 1e-4;
const TOL_NMSE = 1e-12;

test('gqa cpu attention vs float64 reference (odd shapes, MHA, MQA, real dims, scrambled blocks)', (t) => {
  withCpu((be) => {
    let seed = 1;
    const cases: [Dims, string, number, number, number][] = [];
    for (const [d, name] of [[odd, 'odd'], [mha, 'mha'], [mqa, 'mqa']] as const)
      for (const bs of [1, 4, 16])
        for (const [ctxStart, n] of [[0, 7], [200, 1], [37, 9], [130, 70]]) cases.push([d, name, bs, ctxStart, n]);
    for (const [ctxStart, n] of [[0, 12], [20, 1], [60, 10], [0, 65]]) cases.push([real, 'real', 16, ctxStart, n]);
    for (const [d, name, bs, ctxStart, n] of cases) {
      const label = `${name} H=${d.H} KVH=${d.KVH} D=${d.D} bs=${bs} ctxStart=${ctxStart} n=${n}`;
      const sc = scene(d, bs, ctxStart + n, seed++);
      writeCache(be, sc, 0, ctxStart + n);
      const out = attend(be, sc, ctxStart, n);
      const st = compare(toF64(out.cpu), toF64(out.ref));
      t.diagnostic(`${label}: ${fmtStats(st)}`);
      assert.ok(st.maxRel <= TOL && st.nmse <= TOL_NMSE, `${label}: ${fmtStats(st)}`);
    }
  });
});

test('gqa softmax stays finite and close with scores in the tens (max subtracted)', (t) => {
  withCpu((be) => {
    const ctxStart = 100, n = 5;
    const sc = scene(odd, 4, ctxStart + n, 77, 30);
    writeCache(be, sc, 0, ctxStart + n);
    const out = attend(be, sc, ctxStart, n);
    const got = toF64(out.cpu);
    assert.ok(got.every(Number.isFinite), 'non-finite output');
    const st = compare(got, toF64(out.ref));
    t.diagnostic(fmtStats(st));
    assert.ok(st.nmse <= 1e-9, fmtStats(st));
  });
});

test('gqa chunked prefill (two calls) and token-by-token decode equal one call', (t) => {
  for (const [d, bs, ctxStart, n] of [[odd, 4, 5, 10], [mqa, 1, 60, 14], [real, 16, 3, 8], [mha, 16, 0, 130]] as const)
    withCpu((be) => {
      const label = `H=${d.H} KVH=${d.KVH} bs=${bs} ctxStart=${ctxStart} n=${n}`;
      const ctx = ctxStart + n;
      const whole = scene(d, bs, ctx, 99);
      writeCache(be, whole, 0, ctx);
      const one = toF64(attend(be, whole, ctxStart, n).cpu);

      // Incremental: the cache holds only what has been written so far (the rest is NaN).
      const half = Math.floor(n / 2);
      const chunked = scene(d, bs, ctx, 99);
      writeCache(be, chunked, 0, ctxStart + half);
      const a = toF64(attend(be, chunked, ctxStart, half).cpu);
      writeCache(be, chunked, ctxStart + half, n - half);
      const b = toF64(attend(be, chunked, ctxStart + half, n - half).cpu);
      const two = new Float64Array(one.length);
      two.set(a, 0);
      two.set(b, a.length);
      const s2 = compare(two, one);

      const stepped = scene(d, bs, ctx, 99);
      writeCache(be, stepped, 0, ctxStart);
      const steps = new Float64Array(one.length);
      const w = one.length / n;
      for (let i = 0; i < n; i++) {
        writeCache(be, stepped, ctxStart + i, 1);
        steps.set(toF64(attend(be, stepped, ctxStart + i, 1).cpu), i * w);
      }
      const s1 = compare(steps, one);
      t.diagnostic(`${label}: 2 chunks ${fmtStats(s2)} | ${n} x 1 ${fmtStats(s1)}`);
      assert.ok(s2.maxRel <= 1e-6, `${label} two chunks: ${fmtStats(s2)}`);
      assert.ok(s1.maxRel <= 1e-6, `${label} one at a time: ${fmtStats(s1)}`);
    });
});

test('gqaCacheWrite places [k | v] rows where the block table says and touches nothing else', () => {
  withCpu((be) => {
    for (const bs of [1, 4, 16]) {
      const d = odd;
      const KD = d.KVH * d.D;
      const ctxStart = 3, n = 6;
      const sc = scene(d, bs, ctxStart + n, 5);
      const rows = sc.cache.cpu.shape[0];
      sc.cache = pair([rows, 2 * KD], new Float64Array(rows * 2 * KD).fill(-7));
      writeCache(be, sc, ctxStart, n);
      for (const which of ['ref', 'cpu'] as const) {
        const expect = new Float64Array(rows * 2 * KD).fill(-7);
        for (let i = 0; i < n; i++) {
          const pos = ctxStart + i;
          const r = sc.blockTable[Math.floor(pos / bs)] * bs + (pos % bs);
          expect.set(sc.k.subarray(pos * KD, (pos + 1) * KD), r * 2 * KD);
          expect.set(sc.v.subarray(pos * KD, (pos + 1) * KD), r * 2 * KD + KD);
        }
        const s = compare(toF64(sc.cache[which]), expect);
        assert.equal(s.maxAbs, 0, `${which} bs=${bs}: ${fmtStats(s)}`);
      }
    }
  });
});

test('gqa: query heads sharing a KV head give equal outputs for equal queries', () => {
  withCpu((be) => {
    // MQA: all query heads read KV head 0, so copying query head 0 into head 3 copies the output.
    const sc = scene(mqa, 4, 20, 3);
    const HD = mqa.H * mqa.D;
    for (let pos = 0; pos < 20; pos++) sc.q.copyWithin(pos * HD + 3 * mqa.D, pos * HD, pos * HD + mqa.D);
    writeCache(be, sc, 0, 20);
    const out = toF64(attend(be, sc, 0, 20).cpu);
    for (let pos = 0; pos < 20; pos++)
      for (let d = 0; d < mqa.D; d++) assert.equal(out[pos * HD + 3 * mqa.D + d], out[pos * HD + d]);
  });
});
