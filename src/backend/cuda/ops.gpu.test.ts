/**
 * Op conformance on the GPU: every op of the CUDA backend against the CPU backend on the same
 * seeded inputs, at edge shapes (T = 1, odd sizes, misaligned row views) and a few real ones (MLA
 * attention: mla.gpu.test.ts).
 * GPU outputs are poisoned with NaN first, so an unwritten element fails. NMSE and max-abs are
 * reported per case. Skips with the reason when no CUDA device is present.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { LightningParams, RopeSpec, RouterParams } from '../backend.js';
import { CpuBackend } from '../cpu/cpu-backend.js';
import { toF64, type Tensor } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import { Prng } from '../../util/prng.js';
import { CudaBackend, cudaUnavailableReason } from './cuda-backend.js';
import { GEMV_MAX_T, strideGrid } from './ops-basic.js';
import { opPairs, TOL_F32 } from './op-pairs.js';

const reason = cudaUnavailableReason();
const skip = reason === null ? false : `no CUDA device: ${reason}`;

/** cuBLASLt with bf16 weights: split activations (hi + lo bf16) stay near f32. */
const TOL_BF16_GEMM = 1e-9;

describe('cuda ops vs cpu', { skip }, () => {
  let cpu: CpuBackend;
  let gpu: CudaBackend;
  const rng = new Prng(20261126);
  before(() => {
    cpu = new CpuBackend({ threads: 4 });
    gpu = new CudaBackend();
  });
  after(() => {
    cpu?.dispose();
    gpu?.dispose();
  });

  const { randn, both, rand, out, check } = opPairs(() => ({ cpu, gpu }), rng);

  test('matmul: GEMV (T ≤ c.gemvRows(): 1, and 8, the f32 default) and cuBLASLt paths, f32 and bf16 weights, bias, misaligned row views', (t) => {
    const shapes: [number, number, number][] = [[1, 33, 40], [3, 7, 12], [GEMV_MAX_T, 100, 4096], [GEMV_MAX_T + 1, 48, 40], [17, 96, 12], [64, 256, 512], [300, 96, 32]];
    const gemvMaxT0 = gpu.c.gemvMaxT;
    try {
      for (const gm of [1, GEMV_MAX_T]) {
        gpu.c.gemvMaxT = gm;
        for (const [T, N, K] of shapes)
          for (const wd of ['f32', 'bf16'] as const)
            for (const withBias of [false, true]) {
              const x = rand([T, K]);
              const w = rand([N, K], 1 / Math.sqrt(K), wd);
              const b = withBias ? rand([N]) : null;
              const o = out([T, N]);
              cpu.ops.matmul(o.c, x.c, w.c, b?.c ?? null);
              gpu.ops.matmul(o.g, x.g, w.g, b?.g ?? null);
              check(t, `gemvMaxT ${gm}: T=${T} N=${N} K=${K} ${wd}${withBias ? ' +bias' : ''}`, o, wd === 'bf16' && T > gm ? TOL_BF16_GEMM : TOL_F32);
            }
      }
    } finally {
      gpu.c.gemvMaxT = gemvMaxT0;
    }
    // Row views at odd offsets (qkv split with K = 12: rows start 24 bytes apart).
    for (const [T, K] of [[1, 12], [40, 12], [40, 64]]) {
      const x = rand([T, K]);
      const w = rand([3 * 5, K], 0.3, 'bf16');
      const o = out([T, 5]);
      cpu.ops.matmul(o.c, x.c, w.c.rows(5, 5), null);
      gpu.ops.matmul(o.g, x.g, w.g.rows(5, 5), null);
      check(t, `row view T=${T} K=${K}`, o, T > gpu.c.gemvRows() ? TOL_BF16_GEMM : TOL_F32);
    }
  });

  test('matmul: consecutive GEMMs of one x convert it once, and a write to x between two is seen', (t) => {
    const [T, K, N] = [40, 256, 96];
    const x = rand([T, K]), w1 = rand([N, K], 1 / Math.sqrt(K), 'bf16'), w2 = rand([N, K], 1 / Math.sqrt(K), 'bf16');
    // Three GEMMs of x back to back (outputs made first: their NaN uploads count as writes).
    const ws = [w1, w2, w1], os = ws.map(() => out([T, N]));
    for (const [i, w] of ws.entries()) cpu.ops.matmul(os[i].c, x.c, w.c, null);
    gpu.c.startProfile();
    for (const [i, w] of ws.entries()) gpu.ops.matmul(os[i].g, x.g, w.g, null);
    const casts = [...gpu.c.stopProfile().entries()].filter(([name]) => name.startsWith('matmul_cast')).reduce((a, [, v]) => a + v.launches, 0);
    for (const [i, o] of os.entries()) check(t, `matmul ${i + 1} of x`, o, TOL_BF16_GEMM);
    assert.equal(casts, 1, 'three GEMMs of one x should convert it once');
    // A host upload into x, or a kernel writing x in place, between two GEMMs of x.
    const b = rand([T, K]);
    const writes: [string, () => void][] = [
      ['an upload into x', () => {
        const v = randn(T * K);
        cpu.upload(x.c, v);
        gpu.upload(x.g, v);
      }],
      ['an in-place add into x', () => {
        cpu.ops.add(x.c, x.c, b.c);
        gpu.ops.add(x.g, x.g, b.g);
      }],
    ];
    for (const [what, write] of writes) {
      const o1 = out([T, N]), o2 = out([T, N]);
      cpu.ops.matmul(o1.c, x.c, w1.c, null);
      gpu.ops.matmul(o1.g, x.g, w1.g, null);
      write();
      cpu.ops.matmul(o2.c, x.c, w2.c, null);
      gpu.ops.matmul(o2.g, x.g, w2.g, null);
      check(t, `before ${what}`, o1, TOL_BF16_GEMM);
      check(t, `after ${what}`, o2, TOL_BF16_GEMM);
    }
  });

  test('embedding, rmsnorm, addRmsnorm, headRmsnorm', (t) => {
    for (const dt of ['f32', 'bf16'] as const) {
      const table = rand([50, 40], 1, dt);
      const ids = Int32Array.from([0, 49, 7, 7, 13]);
      const o = out([ids.length, 40]);
      cpu.ops.embedding(o.c, table.c, ids);
      gpu.ops.embedding(o.g, table.g, ids);
      check(t, `embedding ${dt}`, o);
    }
    for (const [T, C] of [[1, 33], [3, 4096], [7, 32]]) {
      const x = rand([T, C]), w = rand([C]);
      const o = out([T, C]);
      cpu.ops.rmsnorm(o.c, x.c, w.c, 1e-6);
      gpu.ops.rmsnorm(o.g, x.g, w.g, 1e-6);
      check(t, `rmsnorm T=${T} C=${C}`, o);
      const r = rand([T, C]);
      const o2 = out([T, C]);
      cpu.ops.addRmsnorm(o2.c, r.c, x.c, w.c, 1e-5);
      gpu.ops.addRmsnorm(o2.g, r.g, x.g, w.g, 1e-5);
      check(t, `addRmsnorm out T=${T} C=${C}`, o2);
      check(t, `addRmsnorm residual T=${T} C=${C}`, r);
    }
    for (const [T, H, D] of [[1, 4, 8], [5, 32, 128], [3, 3, 7]]) {
      const x = rand([T, H * D]), w = rand([D]);
      cpu.ops.headRmsnorm(x.c, x.c, w.c, D, 1e-6); // in place, as the model calls it
      gpu.ops.headRmsnorm(x.g, x.g, w.g, D, 1e-6);
      check(t, `headRmsnorm T=${T} H=${H} D=${D}`, x);
    }
  });

  test('rope (neox partial, gptj offset), silu, siluMul, add, gatherRows, roundBf16', (t) => {
    const T = 6;
    const positions = Int32Array.from([0, 1, 17, 4095, 32767, 100003]);
    const specs: RopeSpec[] = [
      { style: 'neox', nHeads: 4, headStride: 16, offset: 0, rotaryDim: 8, invFreq: Float64Array.from({ length: 4 }, (_, i) => 10000 ** (-i / 4)) },
      { style: 'gptj', nHeads: 3, headStride: 10, offset: 6, rotaryDim: 4, invFreq: Float64Array.from({ length: 2 }, (_, i) => 10000 ** (-i / 2)) },
    ];
    for (const s of specs) {
      const x = rand([T, s.nHeads * s.headStride + 3]);
      cpu.ops.rope(x.c, positions, s);
      gpu.ops.rope(x.g, positions, s);
      check(t, `rope ${s.style}`, x);
    }
    const x = rand([5, 37], 3);
    const o = out([5, 37]);
    cpu.ops.silu(o.c, x.c);
    gpu.ops.silu(o.g, x.g);
    check(t, 'silu', o);
    const gu = rand([5, 2 * 19], 2);
    const h = out([5, 19]);
    cpu.ops.siluMul(h.c, gu.c);
    gpu.ops.siluMul(h.g, gu.g);
    check(t, 'siluMul', h);
    const b = rand([5, 37]);
    const s = out([5, 37]);
    cpu.ops.add(s.c, x.c, b.c);
    gpu.ops.add(s.g, x.g, b.g);
    check(t, 'add', s);
    const idx = Int32Array.from([4, 0, 4, 2]);
    const gr = out([4, 37]);
    cpu.ops.gatherRows(gr.c, x.c, idx);
    gpu.ops.gatherRows(gr.g, x.g, idx);
    check(t, 'gatherRows', gr, 0);
    cpu.ops.roundBf16(x.c);
    gpu.ops.roundBf16(x.g);
    check(t, 'roundBf16', x, 0);
  });

  test('lightning prefill (canonical, vLLM quirk, bf16 state) and batched decode', (t) => {
    for (const [H, D, n, quirk, bf16] of [[4, 8, 1, false, false], [4, 8, 37, false, false], [2, 128, 300, false, false], [3, 16, 300, true, true], [2, 128, 5, false, true]] as const) {
      const p: LightningParams = { nHeads: H, headDim: D, decay: Float64Array.from({ length: H }, (_, h) => 0.01 + 0.3 * h), scale: D ** -0.5, chunk: quirk ? 256 : 16, vllmPrefillQuirk: quirk, stateBf16: bf16 };
      const q = rand([n, H * D]), k = rand([n, H * D]), v = rand([n, H * D]);
      const st = rand([H, D, D], 0.5);
      const o = out([n, H * D]);
      cpu.ops.lightningPrefill(o.c, q.c, k.c, v.c, st.c, p);
      gpu.ops.lightningPrefill(o.g, q.g, k.g, v.g, st.g, p);
      const what = `prefill H=${H} D=${D} n=${n}${quirk ? ' quirk' : ''}${bf16 ? ' bf16-state' : ''}`;
      check(t, `${what} o`, o, 1e-7);
      check(t, `${what} state`, st, bf16 ? 1e-5 : 1e-7);
    }
    for (const [H, D] of [[4, 8], [32, 128]]) {
      const p: LightningParams = { nHeads: H, headDim: D, decay: Float64Array.from({ length: H }, (_, h) => 0.02 * (h + 1)), scale: D ** -0.5, chunk: 16, vllmPrefillQuirk: false, stateBf16: false };
      const slots = Int32Array.from([2, 0, 5]);
      const q = rand([3, H * D]), k = rand([3, H * D]), v = rand([3, H * D]);
      const states = rand([6, H, D, D], 0.5);
      const o = out([3, H * D]);
      cpu.ops.lightningDecode(o.c, q.c, k.c, v.c, states.c, slots, p);
      gpu.ops.lightningDecode(o.g, q.g, k.g, v.g, states.g, slots, p);
      check(t, `decode H=${H} D=${D} o`, o);
      check(t, `decode H=${H} D=${D} states`, states);
    }
  });

  test('lightning prefill, chunked tensor-core kernel (tc-split, tc-bf16) vs CPU: tails, initial state, bf16 state, decays 0.001..8', (t) => {
    const mode0 = gpu.c.lightningPrefill;
    // Decays: λ ≈ 0.999 (long memory), ~1 and 8 (λ^64 underflows to 0 in f32: the state is forgotten every chunk).
    const decays = (H: number): Float64Array => Float64Array.from({ length: H }, (_, h) => (h === H - 1 ? 8 : 0.001 * 1000 ** (h / Math.max(1, H - 2))));
    // Tolerances (NMSE). tc-split: q, k, v, the masked scores and the state are bf16 hi + lo (≈16
    // significant bits each, the lo·lo term dropped), fp32 accumulation: each product is off by
    // ≲2^-16 relative, so NMSE ~1e-10; 1e-8 leaves room for long sums without hiding a wrong term
    // (a missing decay or a wrong fragment gives NMSE ≳ 1e-3). tc-bf16: every operand rounded to 8
    // significant bits: NMSE ~1e-5 per product; 1e-4. A bf16-rounded state flips an ulp (2^-8)
    // where the f32 values differ across a rounding boundary: 1e-5 as the recurrent kernel's test.
    const tols = { 'tc-split': 1e-8, 'tc-bf16': 1e-4 } as const;
    const cases: [number, number, boolean, boolean][] = [
      // [H, n, initial state, stateBf16]
      [4, 1, false, false], [4, 7, true, false], [4, 63, true, true], [4, 64, false, false], [4, 65, true, false],
      [4, 300, true, false], [4, 300, false, true], [32, 4133, true, false],
    ];
    try {
      for (const [H, n, init, bf16] of cases) {
        const D = 128;
        const p: LightningParams = { nHeads: H, headDim: D, decay: decays(H), scale: D ** -0.5, chunk: 64, vllmPrefillQuirk: false, stateBf16: bf16 };
        const q = rand([n, H * D]), k = rand([n, H * D]), v = rand([n, H * D]);
        const s0 = init ? randn(H * D * D, 0.5) : new Float64Array(H * D * D);
        const st = both([H, D, D], s0);
        const o = out([n, H * D]);
        cpu.ops.lightningPrefill(o.c, q.c, k.c, v.c, st.c, p);
        for (const mode of ['tc-split', 'tc-bf16'] as const) {
          gpu.c.lightningPrefill = mode;
          gpu.upload(st.g, s0);
          gpu.upload(o.g, new Float64Array(n * H * D).fill(NaN));
          gpu.ops.lightningPrefill(o.g, q.g, k.g, v.g, st.g, p);
          const what = `${mode} H=${H} n=${n}${init ? ' state0' : ''}${bf16 ? ' bf16-state' : ''}`;
          check(t, `${what} o`, o, tols[mode]);
          check(t, `${what} state`, st, bf16 ? Math.max(tols[mode], 1e-5) : tols[mode]);
        }
      }
    } finally {
      gpu.c.lightningPrefill = mode0;
    }
  });

  test('groupRmsnormGate', (t) => {
    for (const [T, C, groups] of [[1, 32, 1], [5, 32, 4], [3, 4096, 4], [2, 24, 3]]) {
      const x = rand([T, C]), g = rand([T, C]), w = rand([C]);
      const o = out([T, C]);
      cpu.ops.groupRmsnormGate(o.c, x.c, g.c, w.c, groups, 1e-6);
      gpu.ops.groupRmsnormGate(o.g, x.g, g.g, w.g, groups, 1e-6);
      check(t, `T=${T} C=${C} groups=${groups}`, o);
    }
  });

  test('GQA cache write + attention', (t) => {
    for (const [H, KVH, D] of [[4, 2, 16], [8, 1, 128], [3, 3, 7]]) {
      const p = { nHeads: H, nKvHeads: KVH, headDim: D, scale: D ** -0.5, blockSize: 16 };
      const cache = both([6 * 16, 2 * KVH * D], new Float64Array(6 * 16 * 2 * KVH * D));
      const blockTable = Int32Array.from([3, 0, 5, 1, 4, 2]);
      let ctx = 0;
      for (const n of [21, 1, 30, 20, 1]) { // the last decode sees ctx 73 > 64: split-context kernel
        const seq = { blockTable, ctxStart: ctx };
        const k = rand([n, KVH * D]), v = rand([n, KVH * D]);
        cpu.ops.gqaCacheWrite(cache.c, k.c, v.c, seq, p);
        gpu.ops.gqaCacheWrite(cache.g, k.g, v.g, seq, p);
        const q = rand([n, H * D], 0.5);
        const o = out([n, H * D]);
        cpu.ops.gqaAttention(o.c, q.c, cache.c, seq, p);
        gpu.ops.gqaAttention(o.g, q.g, cache.g, seq, p);
        check(t, `H=${H} KVH=${KVH} D=${D} ctx=${ctx} n=${n}`, o, 1e-7);
        ctx += n;
      }
    }
  });

  // bf16 KV pages (HybridCache kvCacheDtype 'bf16'): the GPU stores bf16; the CPU keeps f32 storage
  // of values the model rounds through bf16 first, so both caches hold identical values.
  test('GQA with a bf16 KV cache: cache write rounds as the CPU does (exact), attention (one block and split-context)', (t) => {
    for (const [H, KVH, D] of [[4, 2, 16], [8, 1, 128], [3, 3, 7]]) {
      const p = { nHeads: H, nKvHeads: KVH, headDim: D, scale: D ** -0.5, blockSize: 16 };
      const cache = { c: cpu.alloc('f32', [6 * 16, 2 * KVH * D]), g: gpu.alloc('bf16', [6 * 16, 2 * KVH * D]) };
      const blockTable = Int32Array.from([3, 0, 5, 1, 4, 2]);
      let ctx = 0;
      for (const n of [21, 1, 30, 20, 1]) {
        const seq = { blockTable, ctxStart: ctx };
        const k = rand([n, KVH * D]), v = rand([n, KVH * D]);
        cpu.ops.roundBf16(k.c);
        cpu.ops.roundBf16(v.c);
        cpu.ops.gqaCacheWrite(cache.c, k.c, v.c, seq, p);
        gpu.ops.gqaCacheWrite(cache.g, k.g, v.g, seq, p);
        check(t, `H=${H} KVH=${KVH} D=${D} bf16 cache after ctx=${ctx} n=${n}`, cache, 0);
        const q = rand([n, H * D], 0.5);
        const o = out([n, H * D]);
        cpu.ops.gqaAttention(o.c, q.c, cache.c, seq, p);
        gpu.ops.gqaAttention(o.g, q.g, cache.g, seq, p);
        check(t, `H=${H} KVH=${KVH} D=${D} bf16 cache ctx=${ctx} n=${n}`, o, 1e-7);
        ctx += n;
      }
    }
  });

  test('MoE route (grouped sigmoid + bias, softmax top-k, real size) and experts (f32, bf16)', (t) => {
    const routers: RouterParams[] = [
      { nExperts: 16, topK: 4, nGroup: 4, topkGroup: 2, scoreFunction: 'sigmoid', renormalize: true, renormEps: 1e-20, routedScalingFactor: 2.5 },
      { nExperts: 6, topK: 2, nGroup: null, topkGroup: null, scoreFunction: 'softmax', renormalize: false, renormEps: 0, routedScalingFactor: 1 },
      { nExperts: 256, topK: 8, nGroup: 8, topkGroup: 4, scoreFunction: 'sigmoid', renormalize: true, renormEps: 1e-20, routedScalingFactor: 2.5 },
    ];
    for (const p of routers) {
      const T = 9;
      const logits = rand([T, p.nExperts], 2);
      const bias = p.scoreFunction === 'sigmoid' ? rand([p.nExperts], 0.1) : null;
      const ids = out([T, p.topK], 'i32'), w = out([T, p.topK]);
      cpu.ops.moeRoute(ids.c, w.c, logits.c, bias?.c ?? null, p);
      gpu.ops.moeRoute(ids.g, w.g, logits.g, bias?.g ?? null, p);
      assert.deepEqual(Array.from(gpu.download(ids.g)), Array.from(toF64(ids.c)), `route E=${p.nExperts}: expert ids`);
      check(t, `route E=${p.nExperts} weights`, w, 1e-12);
    }
    for (const wd of ['f32', 'bf16'] as const)
      for (const T of [1, 5, 40, 700]) { // gathered, segmented (8 < T < 512), per-expert GEMM paths
        const E = 8, K = 2, C = 32, Fw = 16;
        const x = rand([T, C]);
        const idv = Float64Array.from({ length: T * K }, (_, i) => (i * 5 + Math.floor(i / K)) % E);
        const ids = both([T, K], idv, 'i32');
        const wts = rand([T, K]);
        const w13 = rand([E * 2 * Fw, C], 1 / Math.sqrt(C), wd), w2 = rand([E * C, Fw], 1 / Math.sqrt(Fw), wd);
        const o = out([T, C]);
        cpu.ops.moeExperts(o.c, x.c, ids.c, wts.c, w13.c, w2.c, Fw);
        gpu.ops.moeExperts(o.g, x.g, ids.g, wts.g, w13.g, w2.g, Fw);
        check(t, `experts ${wd} T=${T}`, o);
      }
  });

  /** K distinct experts per token from `allowed`, skewed to its first entries (long and short runs). */
  const pickIds = (T: number, K: number, allowed: readonly number[]): Float64Array => {
    const v = new Float64Array(T * K);
    for (let t = 0; t < T; t++) {
      const row = new Set<number>();
      while (row.size < K) row.add(allowed[Math.floor(allowed.length * rng.uniform(0, 1) ** 2)]);
      v.set([...row], t * K);
    }
    return v;
  };
  /** Runs the GPU MoE prefill path in each (mode, split) and checks it against `ref`. */
  const prefillModes = (t: TestContext, what: string, o: { c: Tensor; g: Tensor }, runGpu: () => void, splits: readonly boolean[]): void => {
    const c = gpu.c;
    const saved = { mode: c.moePrefill, split: c.moeSplit };
    try {
      for (const mode of ['grouped', 'cublas'] as const)
        for (const split of splits) {
          c.moePrefill = mode;
          c.moeSplit = split;
          gpu.upload(o.g, new Float64Array(o.g.numel).fill(NaN));
          runGpu();
          // split: near f32 like the CPU; bf16 activations: ~1e-5 per matmul
          check(t, `${what} ${mode}${split ? ' split' : ' bf16'}`, o, split ? TOL_F32 : 1e-4);
        }
    } finally {
      c.moePrefill = saved.mode;
      c.moeSplit = saved.split;
    }
  };

  test('MoE prefill GEMMs (grouped kernel and per-expert cuBLASLt) vs cpu: T 9/100/1000, empty experts, K and F tails', (t) => {
    const c = gpu.c;
    const minT = c.moeGemmMinT;
    c.moeGemmMinT = 9; // small steps take the prefill path too
    try {
      const cases = [
        { E: 8, K: 2, C: 32, Fw: 16, Ts: [9, 100, 1000], allowed: [0, 2, 3, 5, 7] }, // experts 1, 4, 6 get no tokens
        { E: 16, K: 4, C: 136, Fw: 72, Ts: [100, 1000], allowed: [3, 0, 1, 2, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15] }, // C % 32, F % 64 ≠ 0
      ];
      for (const { E, K, C, Fw, Ts, allowed } of cases)
        for (const T of Ts) {
          const x = rand([T, C]);
          const ids = both([T, K], pickIds(T, K, allowed), 'i32');
          const wts = rand([T, K]);
          const w13 = rand([E * 2 * Fw, C], 1 / Math.sqrt(C), 'bf16'), w2 = rand([E * C, Fw], 1 / Math.sqrt(Fw), 'bf16');
          const o = out([T, C]);
          cpu.ops.moeExperts(o.c, x.c, ids.c, wts.c, w13.c, w2.c, Fw);
          prefillModes(t, `E=${E} K=${K} C=${C} F=${Fw} T=${T}`, o, () => gpu.ops.moeExperts(o.g, x.g, ids.g, wts.g, w13.g, w2.g, Fw), [true, false]);
        }
    } finally {
      c.moeGemmMinT = minT;
    }
  });

  /**
   * Real-size experts (E 256, C 4096, F 1024): random bf16 weights made on the GPU (6.4 GB) and, on
   * the CPU, the rows of the `used` experts only (local expert j = global used[j]).
   */
  const realExperts = (used: readonly number[], seed: number): { w13: Tensor; w2: Tensor; w13c: Tensor; w2c: Tensor } => {
    const c = gpu.c, E = 256, C = 4096, Fw = 1024;
    const w13 = gpu.alloc('bf16', [E * 2 * Fw, C]), w2 = gpu.alloc('bf16', [E * C, Fw]);
    const fill = c.kernel('src/backend/cuda/fill.cu', 'fill_uniform_bf16', 'pluff');
    for (const [i, w] of [w13, w2].entries()) c.launch(fill, strideGrid(w.numel), 256, 0, [c.ptr(w), w.numel, BigInt(seed + i), 0, Math.sqrt(3 / w.shape[1])]);
    const pick = (w: Tensor, rows: number): Float32Array => {
      const v = new Float32Array(used.length * rows * w.shape[1]);
      used.forEach((e, j) => v.set(gpu.download(w.rows(e * rows, rows)), j * rows * w.shape[1]));
      return v;
    };
    const w13c = cpu.alloc('bf16', [used.length * 2 * Fw, C]), w2c = cpu.alloc('bf16', [used.length * C, Fw]);
    cpu.upload(w13c, pick(w13, 2 * Fw));
    cpu.upload(w2c, pick(w2, C));
    return { w13, w2, w13c, w2c };
  };

  test('MoE prefill GEMMs at real dims (E 256, F 1024, C 4096): 9 tokens on 10 experts, 246 empty', (t) => {
    const c = gpu.c;
    const K = 8, C = 4096, Fw = 1024, T = 9;
    const used = [0, 1, 3, 9, 50, 77, 128, 200, 254, 255];
    const { w13, w2, w13c, w2c } = realExperts(used, 991);
    const local = pickIds(T, K, used.map((_, j) => j));
    const x = rand([T, C]), wts = rand([T, K]);
    const idsC = cpu.alloc('i32', [T, K]), idsG = gpu.alloc('i32', [T, K]);
    cpu.upload(idsC, local);
    gpu.upload(idsG, local.map((j) => used[j]));
    const o = out([T, C]);
    cpu.ops.moeExperts(o.c, x.c, idsC, wts.c, w13c, w2c, Fw);
    const minT = c.moeGemmMinT;
    c.moeGemmMinT = 9;
    try {
      prefillModes(t, `real dims T=${T}`, o, () => gpu.ops.moeExperts(o.g, x.g, idsG, wts.g, w13, w2, Fw), [true]);
    } finally {
      c.moeGemmMinT = minT;
    }
  });

  test('MoE prefill GEMMs at real dims, skewed: 1100 tokens, one expert on all of them (9 row tiles), 243 empty', (t) => {
    const c = gpu.c;
    const K = 8, C = 4096, Fw = 1024, T = 1100;
    const used = [0, 2, 5, 17, 31, 64, 100, 101, 128, 150, 199, 230, 255];
    const { w13, w2, w13c, w2c } = realExperts(used, 1991);
    // Every token: local expert 0 first, then K − 1 skewed picks among the other 12.
    const rest = pickIds(T, K - 1, used.slice(1).map((_, j) => j + 1));
    const local = new Float64Array(T * K);
    for (let i = 0; i < T; i++) local.set([0, ...rest.subarray(i * (K - 1), (i + 1) * (K - 1))], i * K);
    const xv = randn(T * C), wv = randn(T * K);
    const x = gpu.alloc('f32', [T, C]), wts = gpu.alloc('f32', [T, K]), idsG = gpu.alloc('i32', [T, K]), o = gpu.alloc('f32', [T, C]);
    gpu.upload(x, xv);
    gpu.upload(wts, wv);
    gpu.upload(idsG, local.map((j) => used[j]));
    // Each output row depends on its own token only: the CPU computes a sample of the tokens.
    const sample = Array.from({ length: 12 }, (_, i) => Math.floor((i * (T - 1)) / 11));
    const rowsOf = (v: ArrayLike<number>, w: number): Float64Array => Float64Array.from(sample.flatMap((r) => Array.from({ length: w }, (_, j) => v[r * w + j])));
    const S = sample.length;
    const xc = cpu.alloc('f32', [S, C]), wc = cpu.alloc('f32', [S, K]), idsC = cpu.alloc('i32', [S, K]), oc = cpu.alloc('f32', [S, C]);
    cpu.upload(xc, rowsOf(xv, C));
    cpu.upload(wc, rowsOf(wv, K));
    cpu.upload(idsC, rowsOf(local, K));
    cpu.ops.moeExperts(oc, xc, idsC, wc, w13c, w2c, Fw);
    const want = cpu.download(oc);
    const saved = { mode: c.moePrefill, split: c.moeSplit, minT: c.moeGemmMinT };
    c.moeGemmMinT = 9;
    try {
      for (const mode of ['grouped', 'cublas'] as const)
        for (const split of [true, false]) {
          c.moePrefill = mode;
          c.moeSplit = split;
          gpu.upload(o, new Float64Array(T * C).fill(NaN));
          gpu.ops.moeExperts(o, x, idsG, wts, w13, w2, Fw);
          const all = gpu.download(o);
          const got = rowsOf(all, C), s = compare(got, want), what = `skewed T=${T} ${mode}${split ? ' split' : ' bf16'}`, tol = split ? TOL_F32 : 1e-4;
          t.diagnostic(`${what} (${S} sampled tokens): ${fmtStats(s)}`);
          assert.ok(all.every(Number.isFinite), `${what}: non-finite output (unwritten element?)`);
          assert.ok(s.nmse <= tol, `${what}: NMSE ${s.nmse.toExponential(2)} > ${tol} (${fmtStats(s)})`);
        }
    } finally {
      c.moePrefill = saved.mode;
      c.moeSplit = saved.split;
      c.moeGemmMinT = saved.minT;
    }
  });
});
