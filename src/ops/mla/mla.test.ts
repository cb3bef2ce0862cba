import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MlaParams, MlaSeq } from '../../backend/backend.js';
import { CpuBackend } from '../../backend/cpu/cpu-backend.js';
import { ReferenceBackend } from '../../backend/reference/reference-backend.js';
import { toF64 } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import { Prng } from '../../util/prng.js';
import { pair, randf, type Pair } from '../test-util.js';
import { refMlaCacheWrite, refMlaDecodeAbsorbed, refMlaPrefillExpanded } from './mla.js';

interface Dims {
  H: number;
  Dn: number;
  Dr: number;
  Dv: number;
  L: number;
}

const odd: Dims = { H: 3, Dn: 6, Dr: 4, Dv: 5, L: 12 };
const real: Dims = { H: 4, Dn: 128, Dr: 64, Dv: 128, L: 512 };



/** One sequence in a paged cache: scrambled block table, spare blocks and unused rows poisoned with NaN. */
interface Scene {
  p: MlaParams;
  blockTable: Int32Array;
  cache: Pair;
  kvB: Pair;
  q: Float64Array; // [ctx, H·(Dn+Dr)], one query row per position
  ckv: Float64Array; // [ctx, L]
  kpe: Float64Array; // [ctx, Dr]
}

function scene(d: Dims, blockSize: number, ctx: number, seed: number, qScale = 1.5): Scene {
  const rng = new Prng(seed);
  const p: MlaParams = { nHeads: d.H, qkNope: d.Dn, qkRope: d.Dr, vHead: d.Dv, kvLora: d.L, scale: (d.Dn + d.Dr) ** -0.5, blockSize };
  const nBlocks = Math.ceil(ctx / blockSize);
  const phys = nBlocks + 3;
  const perm = Array.from({ length: phys }, (_, i) => i);
  for (let i = phys - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const W = d.L + d.Dr;
  return {
    p,
    blockTable: Int32Array.from(perm.slice(0, nBlocks)),
    cache: pair([phys * blockSize, W], new Float64Array(phys * blockSize * W).fill(NaN)),
    kvB: pair([d.H * (d.Dn + d.Dv), d.L], randf(rng, d.H * (d.Dn + d.Dv) * d.L, d.L ** -0.5)),
    q: randf(rng, ctx * d.H * (d.Dn + d.Dr), qScale),
    ckv: randf(rng, ctx * d.L),
    kpe: randf(rng, ctx * d.Dr),
  };
}

/** Write positions [start, start+n) of the scene into both caches. */
function writeCache(be: CpuBackend, sc: Scene, start: number, n: number): void {
  const { kvLora: L, qkRope: Dr } = sc.p;
  const seq: MlaSeq = { blockTable: sc.blockTable, ctxStart: start };
  const ckv = pair([n, L], sc.ckv.subarray(start * L, (start + n) * L));
  const kpe = pair([n, Dr], sc.kpe.subarray(start * Dr, (start + n) * Dr));
  refMlaCacheWrite(sc.cache.ref, ckv.ref, kpe.ref, seq, sc.p);
  be.ops.mlaCacheWrite(sc.cache.cpu, ckv.cpu, kpe.cpu, seq, sc.p);
}

type Form = 'expanded' | 'absorbed';

/** Run queries for positions [start, start+n) with one op call; returns the output pair. */
function attend(be: CpuBackend, sc: Scene, form: Form, start: number, n: number): Pair {
  const { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv } = sc.p;
  const Dq = H * (Dn + Dr);
  const seq: MlaSeq = { blockTable: sc.blockTable, ctxStart: start };
  const q = pair([n, Dq], sc.q.subarray(start * Dq, (start + n) * Dq));
  const out = pair([n, H * Dv], new Float64Array(n * H * Dv));
  if (form === 'expanded') {
    refMlaPrefillExpanded(out.ref, q.ref, sc.cache.ref, sc.kvB.ref, seq, sc.p);
    be.ops.mlaPrefillExpanded(out.cpu, q.cpu, sc.cache.cpu, sc.kvB.cpu, seq, sc.p);
  } else {
    refMlaDecodeAbsorbed(out.ref, q.ref, sc.cache.ref, sc.kvB.ref, seq, sc.p);
    be.ops.mlaDecodeAbsorbed(out.cpu, q.cpu, sc.cache.cpu, sc.kvB.cpu, seq, sc.p);
  }
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

interface Case {
  d: Dims;
  name: string;
  blockSize: number;
  ctxStart: number;
  n: number;
}

const cases: Case[] = [];
for (const blockSize of [1, 4, 16])
  for (const [ctxStart, n] of [[0, 7], [200, 1], [37, 9], [130, 70]])
    cases.push({ d: odd, name: 'odd', blockSize, ctxStart, n });
for (const [ctxStart, n] of [[0, 12], [20, 1], [60, 10]]) cases.push({ d: real, name: 'real', blockSize: 16, ctxStart, n });

/**
 * maxRel uses compare's floor of 1e-3·max|out|, so it is decided by outputs that nearly cancel.
 * Scores are stored in f32 (as any f32 kernel does): a score of magnitude ~5 carries ~3e-7
 * absolute rounding, i.e. ~3e-7 relative error in its softmax weight, which lands as ~3e-7
 * absolute on outputs of size ~1 and up to ~5e-5 relative on the floor elements. nmse stays at
 * ~1e-14 (f32 epsilon level). Both are checked.
 */
const TOL = 1e-4;
const TOL_NMSE = 1e-12;

test('mla cpu expanded and absorbed vs float64 reference, and absorbed vs expanded', (t) => {
  withCpu((be) => {
    let seed = 1;
    for (const c of cases) {
      const label = `${c.name} H=${c.d.H} bs=${c.blockSize} ctxStart=${c.ctxStart} n=${c.n}`;
      const sc = scene(c.d, c.blockSize, c.ctxStart + c.n, seed++);
      writeCache(be, sc, 0, c.ctxStart + c.n);
      const ex = attend(be, sc, 'expanded', c.ctxStart, c.n);
      const ab = attend(be, sc, 'absorbed', c.ctxStart, c.n);
      const sEx = compare(toF64(ex.cpu), toF64(ex.ref));
      const sAb = compare(toF64(ab.cpu), toF64(ab.ref));
      const sX = compare(toF64(ab.cpu), toF64(ex.cpu));
      t.diagnostic(`${label}: expanded ${fmtStats(sEx)} | absorbed ${fmtStats(sAb)} | absorbed vs expanded ${fmtStats(sX)}`);
      assert.ok(sEx.maxRel <= TOL && sEx.nmse <= TOL_NMSE, `${label} expanded: ${fmtStats(sEx)}`);
      assert.ok(sAb.maxRel <= TOL && sAb.nmse <= TOL_NMSE, `${label} absorbed: ${fmtStats(sAb)}`);
      assert.ok(sX.maxRel <= TOL && sX.nmse <= TOL_NMSE, `${label} absorbed vs expanded: ${fmtStats(sX)}`);
    }
  });
});

/** n multiples of 1/den in [-range, range]: products and sums of these are exact in f32. */
function dyadic(rng: Prng, n: number, den: number, range: number): Float64Array {
  return Float64Array.from({ length: n }, () => (rng.int(2 * range * den + 1) - range * den) / den);
}

test('mla expanded with bf16 operands (MatmulInputs bf16): cpu = reference with the same rounding, and the rounding moves the result', (t) => {
  // c_kv and W_kvb are dyadic so the expansion is exact in f32 and f64 alike: k_nope and v round
  // to the same bf16 values on both sides, and the comparison is as tight as the f32 one. q and
  // k_pe are random (they are rounded from identical inputs).
  const bf = new CpuBackend({ threads: 2, matmulInputs: 'bf16' });
  try {
    let seed = 100;
    for (const c of cases.filter((x) => x.n > 1)) {
      const label = `${c.name} bs=${c.blockSize} ctxStart=${c.ctxStart} n=${c.n}`;
      const sc = scene(c.d, c.blockSize, c.ctxStart + c.n, seed);
      const rng = new Prng(seed++);
      sc.ckv = dyadic(rng, sc.ckv.length, 16, 2);
      sc.kvB = pair(sc.kvB.ref.shape, dyadic(rng, sc.kvB.ref.numel, 1024, 1 / 32)); // ~ L^-0.5 at L = 512, as scene()
      writeCache(bf, sc, 0, c.ctxStart + c.n);
      const { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv } = sc.p;
      const Dq = H * (Dn + Dr), seq: MlaSeq = { blockTable: sc.blockTable, ctxStart: c.ctxStart };
      const q = pair([c.n, Dq], sc.q.subarray(c.ctxStart * Dq, (c.ctxStart + c.n) * Dq));
      const out = pair([c.n, H * Dv], new Float64Array(c.n * H * Dv)), plain = pair([c.n, H * Dv], new Float64Array(c.n * H * Dv));
      refMlaPrefillExpanded(out.ref, q.ref, sc.cache.ref, sc.kvB.ref, seq, sc.p, true);
      bf.ops.mlaPrefillExpanded(out.cpu, q.cpu, sc.cache.cpu, sc.kvB.cpu, seq, sc.p);
      refMlaPrefillExpanded(plain.ref, q.ref, sc.cache.ref, sc.kvB.ref, seq, sc.p);
      const s = compare(toF64(out.cpu), toF64(out.ref)), moved = compare(toF64(plain.ref), toF64(out.ref));
      t.diagnostic(`${label}: cpu vs reference ${fmtStats(s)} | bf16 vs f32 operands ${fmtStats(moved)}`);
      assert.ok(s.maxRel <= TOL && s.nmse <= TOL_NMSE, `${label}: ${fmtStats(s)}`);
      // bf16 operands carry 2^-9 relative error: far above the f32 comparison, so the mode is on.
      assert.ok(moved.nmse > 1e3 * TOL_NMSE, `${label}: bf16 operands did not change the result (${fmtStats(moved)})`);
    }
  } finally {
    bf.dispose();
  }
});

test('mla softmax stays finite and close with scores in the tens (max subtracted)', (t) => {
  withCpu((be) => {
    const ctxStart = 100, n = 5;
    const sc = scene(odd, 4, ctxStart + n, 77, 40);
    writeCache(be, sc, 0, ctxStart + n);
    for (const form of ['expanded', 'absorbed'] as const) {
      const out = attend(be, sc, form, ctxStart, n);
      const got = toF64(out.cpu);
      assert.ok(got.every(Number.isFinite), `${form}: non-finite output`);
      // Score rounding grows with |score| (~3e-6 absolute at 50), hence the looser bound.
      const st = compare(got, toF64(out.ref));
      t.diagnostic(`${form}: ${fmtStats(st)}`);
      assert.ok(st.nmse <= 1e-9, `${form}: ${fmtStats(st)}`);
    }
  });
});

test('mla chunked prefill (two calls) and token-by-token decode equal one prefill call', (t) => {
  for (const form of ['expanded', 'absorbed'] as const)
    for (const [d, blockSize, ctxStart, n] of [[odd, 4, 5, 10], [odd, 1, 60, 14], [real, 16, 3, 8]] as const)
      withCpu((be) => {
        const label = `${form} H=${d.H} bs=${blockSize} ctxStart=${ctxStart} n=${n}`;
        const ctx = ctxStart + n;
        const whole = scene(d, blockSize, ctx, 99);
        writeCache(be, whole, 0, ctx);
        const one = toF64(attend(be, whole, form, ctxStart, n).cpu);

        // Incremental: the cache only holds what has been written so far (the rest is NaN).
        const half = n / 2;
        const chunked = scene(d, blockSize, ctx, 99);
        writeCache(be, chunked, 0, ctxStart + half);
        const a = toF64(attend(be, chunked, form, ctxStart, half).cpu);
        writeCache(be, chunked, ctxStart + half, half);
        const b = toF64(attend(be, chunked, form, ctxStart + half, half).cpu);
        const two = new Float64Array(one.length);
        two.set(a, 0);
        two.set(b, a.length);
        const s2 = compare(two, one);

        const stepped = scene(d, blockSize, ctx, 99);
        writeCache(be, stepped, 0, ctxStart);
        const steps = new Float64Array(one.length);
        const w = one.length / n;
        for (let i = 0; i < n; i++) {
          writeCache(be, stepped, ctxStart + i, 1);
          steps.set(toF64(attend(be, stepped, form, ctxStart + i, 1).cpu), i * w);
        }
        const s1 = compare(steps, one);
        t.diagnostic(`${label}: 2 chunks ${fmtStats(s2)} | ${n} x 1 ${fmtStats(s1)}`);
        assert.ok(s2.maxRel <= 1e-6, `${label} two chunks: ${fmtStats(s2)}`);
        assert.ok(s1.maxRel <= 1e-6, `${label} one at a time: ${fmtStats(s1)}`);
      });
});

test('mlaCacheWrite places rows where the block table says and touches nothing else', () => {
  withCpu((be) => {
    for (const blockSize of [1, 4, 16]) {
      const d = odd;
      const W = d.L + d.Dr;
      const ctxStart = 3, n = 6;
      const sc = scene(d, blockSize, ctxStart + n, 5);
      const rows = sc.cache.cpu.shape[0];
      const sentinel = pair([rows, W], new Float64Array(rows * W).fill(-7));
      sc.cache = sentinel;
      writeCache(be, sc, ctxStart, n);
      for (const which of ['ref', 'cpu'] as const) {
        const got = toF64(sc.cache[which]);
        const expect = new Float64Array(rows * W).fill(-7);
        for (let i = 0; i < n; i++) {
          const pos = ctxStart + i;
          const r = sc.blockTable[Math.floor(pos / blockSize)] * blockSize + (pos % blockSize);
          expect.set(sc.ckv.subarray(pos * d.L, (pos + 1) * d.L), r * W);
          expect.set(sc.kpe.subarray(pos * d.Dr, (pos + 1) * d.Dr), r * W + d.L);
        }
        const s = compare(got, expect);
        assert.ok(s.maxAbs <= 1e-6 * 8, `${which} bs=${blockSize}: ${fmtStats(s)}`);
      }
    }
  });
});

test('mlaDecodeBatch: row i is sequence i decoded alone (three sequences, own block tables and contexts, one cache), on the cpu and the reference; rows ≠ sequences is refused', () => {
  withCpu((be) => {
    const d = odd, blockSize = 4, W = d.L + d.Dr;
    const rng = new Prng(77);
    const p: MlaParams = { nHeads: d.H, qkNope: d.Dn, qkRope: d.Dr, vHead: d.Dv, kvLora: d.L, scale: (d.Dn + d.Dr) ** -0.5, blockSize };
    const rows = 12 * blockSize;
    const cache = pair([rows, W], randf(rng, rows * W));
    const kvB = pair([d.H * (d.Dn + d.Dv), d.L], randf(rng, d.H * (d.Dn + d.Dv) * d.L, d.L ** -0.5));
    // Disjoint blocks; contexts 0 (one token), 9 and 22 (the new token at ctxStart is in the cache).
    const seqs: MlaSeq[] = [
      { blockTable: Int32Array.of(7), ctxStart: 0 },
      { blockTable: Int32Array.of(3, 10, 1), ctxStart: 9 },
      { blockTable: Int32Array.of(0, 5, 9, 2, 11, 6), ctxStart: 22 },
    ];
    const Dq = d.H * (d.Dn + d.Dr), Do = d.H * d.Dv;
    const qv = randf(rng, 3 * Dq, 1.5);
    const q = pair([3, Dq], qv);
    const out = pair([3, Do], new Float64Array(3 * Do));
    be.ops.mlaDecodeBatch(out.cpu, q.cpu, cache.cpu, kvB.cpu, seqs, p);
    const ref = new ReferenceBackend();
    ref.ops.mlaDecodeBatch(out.ref, q.ref, cache.ref, kvB.ref, seqs, p);
    const got = toF64(out.cpu), want = toF64(out.ref);
    seqs.forEach((seq, i) => {
      const one = pair([1, Do], new Float64Array(Do));
      const qi = pair([1, Dq], qv.subarray(i * Dq, (i + 1) * Dq));
      be.ops.mlaDecodeAbsorbed(one.cpu, qi.cpu, cache.cpu, kvB.cpu, seq, p);
      refMlaDecodeAbsorbed(one.ref, qi.ref, cache.ref, kvB.ref, seq, p);
      assert.deepEqual(Array.from(got.subarray(i * Do, (i + 1) * Do)), Array.from(toF64(one.cpu)), `cpu row ${i} ≠ its sequence alone`);
      assert.deepEqual(Array.from(want.subarray(i * Do, (i + 1) * Do)), Array.from(toF64(one.ref)), `reference row ${i} ≠ its sequence alone`);
    });
    const s = compare(got, want);
    assert.ok(s.maxRel < 1e-5 && s.nmse < 1e-12, `cpu vs reference: ${fmtStats(s)}`);
    assert.throws(() => be.ops.mlaDecodeBatch(out.cpu, q.cpu, cache.cpu, kvB.cpu, seqs.slice(0, 2), p), /mlaDecodeBatch q/);
  });
});
