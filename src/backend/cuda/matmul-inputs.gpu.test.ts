/**
 * MatmulInputs 'bf16' on the GPU vs the CPU in the same mode: both round the same inputs to bf16,
 * so every matmul path (GEMV T ≤ 8, cuBLASLt GEMM, f32 router weights) and every routed-expert
 * path (decode, segmented, grouped prefill, per-expert cuBLASLt) must agree to f32 accumulation
 * error; so must the prefill attention kernels on bf16 operands (MLA flash and lightning 'bf16ops',
 * the recurrent lightning kernels); and the mode must differ from f32 inputs. Skips without a CUDA
 * device.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../cpu/cpu-backend.js';
import type { LightningParams, MlaParams } from '../backend.js';
import type { Dtype, Tensor } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import { bf16ToF32, f32ToBf16 } from '../../util/numeric.js';
import { Prng } from '../../util/prng.js';
import { CudaBackend, cudaUnavailableReason } from './cuda-backend.js';
import { GEMV_MAX_T } from './ops-basic.js';

const reason = cudaUnavailableReason();
const skip = reason === null ? false : `no CUDA device: ${reason}`;

/** Same rounded inputs on both sides; only the f32 accumulation order differs. */
const TOL = 1e-9;
/** Experts: an h value computed one f32 ulp apart can round one bf16 ulp apart (rare). */
const TOL_EXPERTS = 1e-8;

describe('cuda vs cpu with bf16 matmul inputs', { skip }, () => {
  let cpu: CpuBackend, gpu: CudaBackend, gpuF32: CudaBackend;
  const rng = new Prng(4242);
  before(() => {
    cpu = new CpuBackend({ threads: 4, matmulInputs: 'bf16' });
    gpu = new CudaBackend({ matmulInputs: 'bf16', graphs: false });
    gpuF32 = new CudaBackend({ graphs: false });
  });
  after(() => {
    cpu?.dispose();
    gpu?.dispose();
    gpuF32?.dispose();
  });
  const both = (shape: number[], scale = 1, dtype: Dtype = 'f32'): { c: Tensor; g: Tensor; f: Tensor } => {
    const v = Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal() * scale);
    const c = cpu.alloc(dtype, shape), g = gpu.alloc(dtype, shape), f = gpuF32.alloc(dtype, shape);
    cpu.upload(c, v);
    gpu.upload(g, v);
    gpuF32.upload(f, v);
    return { c, g, f };
  };
  const outs = (shape: number[]): { c: Tensor; g: Tensor; f: Tensor } => {
    const n = shape.reduce((a, b) => a * b, 1);
    const r = { c: cpu.alloc('f32', shape), g: gpu.alloc('f32', shape), f: gpuF32.alloc('f32', shape) };
    gpu.upload(r.g, new Float64Array(n).fill(NaN));
    return r;
  };

  test('matmul: GEMV (v2 rounding as it reads at T = 1, on a rounded copy above; v1 on a rounded copy), GEMM, f32 and bf16 weights', (t) => {
    // [3, 7, 12]: K % 8 ≠ 0 sends bf16 weights to the v1 GEMV. Steps up to 8 rows on the GEMV
    // kernels here (with bf16 inputs gemvRows() sends 2..8 to cuBLASLt: the [300, ...] and [9, ...] shapes).
    const gemvMaxT0 = gpu.c.gemvMaxT;
    gpu.c.gemvMaxT = gpuF32.c.gemvMaxT = GEMV_MAX_T;
    t.after(() => void (gpu.c.gemvMaxT = gpuF32.c.gemvMaxT = gemvMaxT0));
    for (const [T, N, K] of [[1, 64, 256], [3, 7, 12], [GEMV_MAX_T, 100, 4096], [GEMV_MAX_T + 1, 48, 40], [300, 96, 512]] as const)
      for (const wd of ['f32', 'bf16'] as const) {
        const x = both([T, K]), w = both([N, K], 1 / Math.sqrt(K), wd), o = outs([T, N]);
        cpu.ops.matmul(o.c, x.c, w.c, null);
        gpu.ops.matmul(o.g, x.g, w.g, null);
        gpuF32.ops.matmul(o.f, x.f, w.f, null);
        const got = gpu.download(o.g), want = cpu.download(o.c);
        const s = compare(got, want), moved = compare(gpuF32.download(o.f), want);
        t.diagnostic(`T=${T} N=${N} K=${K} ${wd}: ${fmtStats(s)}; f32 inputs: NMSE ${moved.nmse.toExponential(2)}`);
        assert.ok(got.every(Number.isFinite) && s.nmse <= TOL, `T=${T} N=${N} K=${K} ${wd}: ${fmtStats(s)}`);
        assert.ok(moved.nmse > 1e-7, `T=${T} N=${N} K=${K} ${wd}: the GPU's bf16 mode looks like its f32 mode`);
      }
  });

  test('routed experts: decode (T ≤ 8), segmented, grouped prefill and per-expert cuBLASLt', (t) => {
    const E = 16, K = 4, C = 256, F = 128;
    const w13 = both([E * 2 * F, C], 1 / Math.sqrt(C), 'bf16'), w2 = both([E * C, F], 1 / Math.sqrt(F), 'bf16');
    const saved = { minT: gpu.c.moeGemmMinT, mode: gpu.c.moePrefill };
    try {
      for (const [T, path] of [[1, 'decode'], [6, 'decode'], [40, 'segmented'], [300, 'grouped'], [300, 'cublas']] as const) {
        gpu.c.moeGemmMinT = path === 'grouped' || path === 'cublas' ? 9 : 512;
        if (path === 'grouped' || path === 'cublas') gpu.c.moePrefill = path;
        const x = both([T, C]);
        const idv = Array.from({ length: T }, () => {
          const row = new Set<number>();
          while (row.size < K) row.add(rng.int(E - 1));
          return [...row];
        }).flat();
        const ids = { c: cpu.alloc('i32', [T, K]), g: gpu.alloc('i32', [T, K]) };
        cpu.upload(ids.c, idv);
        gpu.upload(ids.g, idv);
        const wts = both([T, K], 0.3);
        const o = outs([T, C]);
        cpu.ops.moeExperts(o.c, x.c, ids.c, wts.c, w13.c, w2.c, F);
        gpu.ops.moeExperts(o.g, x.g, ids.g, wts.g, w13.g, w2.g, F);
        const got = gpu.download(o.g), s = compare(got, cpu.download(o.c));
        t.diagnostic(`T=${T} ${path}: ${fmtStats(s)}`);
        assert.ok(got.every(Number.isFinite) && s.nmse <= TOL_EXPERTS, `T=${T} ${path}: ${fmtStats(s)}`);
      }
    } finally {
      gpu.c.moeGemmMinT = saved.minT;
      gpu.c.moePrefill = saved.mode;
    }
  });

  test('MLA prefill on bf16 operands (flash bf16ops): f32 and bf16 latent caches, chunks after context', (t) => {
    // c_kv and W_kvb are dyadic, so the f32 expansion is exact on both sides and k_nope, v round to
    // identical bf16 values; q and k_pe are rounded from identical inputs. What is left is f32
    // accumulation order (q·k on tensor cores, P as hi + lo): the split kernel's tolerance.
    const dyadic = (shape: number[], den: number, range: number): { c: Tensor; g: Tensor; f: Tensor } => {
      const v = Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (rng.int(2 * range * den + 1) - range * den) / den);
      const r = { c: cpu.alloc('f32', shape), g: gpu.alloc('f32', shape), f: gpuF32.alloc('f32', shape) };
      cpu.upload(r.c, v);
      gpu.upload(r.g, v);
      gpuF32.upload(r.f, v);
      return r;
    };
    for (const [H, Dn, Dr, Dv, L] of [[4, 6, 4, 5, 12], [4, 128, 64, 128, 512], [3, 32, 32, 64, 64]] as const)
      for (const cd of ['f32', 'bf16'] as const) {
        const p: MlaParams = { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv, kvLora: L, scale: (Dn + Dr) ** -0.5, blockSize: 16 };
        const rows = 16 * 16, blockTable = Int32Array.from({ length: 16 }, (_, b) => (b * 5 + 3) % 16);
        const cache = { c: cpu.alloc('f32', [rows, L + Dr]), g: gpu.alloc(cd, [rows, L + Dr]), f: gpuF32.alloc(cd, [rows, L + Dr]) };
        const kvB = dyadic([H * (Dn + Dv), L], 1024, 1 / 32);
        let ctx = 0;
        for (const n of [19, 40, 150]) {
          const seq = { blockTable, ctxStart: ctx };
          const ckv = dyadic([n, L], 16, 2), kpe = both([n, Dr]);
          if (cd === 'bf16') cpu.ops.roundBf16(kpe.c); // what the bf16 cache stores (c_kv is bf16-exact)
          cpu.ops.mlaCacheWrite(cache.c, ckv.c, kpe.c, seq, p);
          gpu.ops.mlaCacheWrite(cache.g, ckv.g, kpe.g, seq, p);
          gpuF32.ops.mlaCacheWrite(cache.f, ckv.f, kpe.f, seq, p);
          const q = both([n, H * (Dn + Dr)], 0.5), o = outs([n, H * Dv]);
          cpu.ops.mlaPrefillExpanded(o.c, q.c, cache.c, kvB.c, seq, p);
          gpu.ops.mlaPrefillExpanded(o.g, q.g, cache.g, kvB.g, seq, p);
          gpuF32.ops.mlaPrefillExpanded(o.f, q.f, cache.f, kvB.f, seq, p);
          const got = gpu.download(o.g), want = cpu.download(o.c);
          const s = compare(got, want), moved = compare(gpuF32.download(o.f), want);
          const what = `H=${H} ${Dn}/${Dr}/${Dv} L=${L} ${cd} cache ctx=${ctx} n=${n}`;
          t.diagnostic(`${what}: ${fmtStats(s)}; f32 operands: NMSE ${moved.nmse.toExponential(2)}`);
          assert.ok(got.every(Number.isFinite) && s.nmse <= 1e-7, `${what}: ${fmtStats(s)}`);
          assert.ok(moved.nmse > 1e-8, `${what}: the GPU's bf16 mode looks like its f32 mode`);
          ctx += n;
        }
      }
  });
  test('f32 weights from a bf16 checkpoint keep a bf16 twin: the router GEMM and the MLA expansion run on it, same numbers', (t) => {
    /** A bf16 matrix loaded for f32 use on the GPU (loadWeight 'vector'), and its values on the CPU. */
    const bf16Weight = (shape: number[], scale: number): { c: Tensor; g: Tensor } => {
      const n = shape[0] * shape[1];
      const u = Uint16Array.from({ length: n }, () => f32ToBf16(rng.normal() * scale));
      const g = gpu.loadWeight({ dtype: 'bf16', shape, parts: [new Uint8Array(u.buffer)] }, 'vector');
      const c = cpu.alloc('f32', shape);
      cpu.upload(c, Float32Array.from(u, bf16ToF32));
      return { c, g };
    };
    for (const [T, N, K] of [[300, 64, 256], [GEMV_MAX_T + 1, 256, 512]] as const) {
      const w = bf16Weight([N, K], 1 / Math.sqrt(K));
      assert.equal(w.g.dtype, 'f32');
      assert.notEqual(gpu.c.bf16Twin(w.g), null, 'no bf16 twin recorded');
      const x = both([T, K]), o = outs([T, N]);
      cpu.ops.matmul(o.c, x.c, w.c, null);
      gpu.ops.matmul(o.g, x.g, w.g, null);
      const got = gpu.download(o.g), s = compare(got, cpu.download(o.c));
      t.diagnostic(`router-like T=${T} N=${N} K=${K}: ${fmtStats(s)}`);
      assert.ok(got.every(Number.isFinite) && s.nmse <= TOL, `T=${T} N=${N} K=${K}: ${fmtStats(s)}`);
    }
    const [H, Dn, Dr, Dv, L] = [4, 128, 64, 128, 512];
    const p: MlaParams = { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv, kvLora: L, scale: (Dn + Dr) ** -0.5, blockSize: 16 };
    const kvB = bf16Weight([H * (Dn + Dv), L], 1 / Math.sqrt(L));
    const blockTable = Int32Array.from({ length: 8 }, (_, b) => (b * 3 + 1) % 8);
    const cache = { c: cpu.alloc('f32', [128, L + Dr]), g: gpu.alloc('bf16', [128, L + Dr]) };
    const n = 100, seq = { blockTable, ctxStart: 0 };
    const ckv = both([n, L]), kpe = both([n, Dr]);
    cpu.ops.roundBf16(ckv.c); // what the bf16 cache stores
    cpu.ops.roundBf16(kpe.c);
    cpu.ops.mlaCacheWrite(cache.c, ckv.c, kpe.c, seq, p);
    gpu.ops.mlaCacheWrite(cache.g, ckv.g, kpe.g, seq, p);
    const q = both([n, H * (Dn + Dr)], 0.5), o = outs([n, H * Dv]);
    cpu.ops.mlaPrefillExpanded(o.c, q.c, cache.c, kvB.c, seq, p);
    gpu.ops.mlaPrefillExpanded(o.g, q.g, cache.g, kvB.g, seq, p);
    // Random (not dyadic) latents: the CPU's f32 expansion and the GPU's tensor-core one differ in
    // summation order, so a k or v value one f32 ulp apart may round one bf16 ulp apart (rare).
    const got = gpu.download(o.g), s = compare(got, cpu.download(o.c));
    t.diagnostic(`MLA expansion on the twin, n=${n}: ${fmtStats(s)}`);
    assert.ok(got.every(Number.isFinite) && s.nmse <= TOL_EXPERTS, `MLA: ${fmtStats(s)}`);
  });
  test('lightning prefill on bf16 q, k, v: chunked tensor-core (bf16ops), recurrent D = 128 and generic kernels, vLLM quirk', (t) => {
    // q, k, v round identically on both sides (identical inputs); the chunked kernel keeps the
    // decayed scores, values and state as bf16 hi + lo, so its tolerance is tc-split's (1e-8,
    // ops.gpu.test.ts); the recurrent kernels are f32 (1e-7 as there, long sums).
    const mode0 = gpu.c.lightningPrefill;
    try {
      for (const [H, D, n, quirk, mode] of [[4, 128, 300, false, 'tc-split'], [32, 128, 4133, false, 'tc-split'], [4, 128, 300, false, 'recurrent'], [3, 16, 300, false, 'tc-split'], [3, 16, 300, true, 'tc-split']] as const) {
        const p: LightningParams = { nHeads: H, headDim: D, decay: Float64Array.from({ length: H }, (_, h) => 0.001 * 1000 ** (h / Math.max(1, H - 1))), scale: D ** -0.5, chunk: quirk ? 256 : 64, vllmPrefillQuirk: quirk, stateBf16: false };
        const q = both([n, H * D]), k = both([n, H * D]), v = both([n, H * D]), st = both([H, D, D], 0.5), o = outs([n, H * D]);
        gpu.c.lightningPrefill = mode;
        gpuF32.c.lightningPrefill = mode;
        cpu.ops.lightningPrefill(o.c, q.c, k.c, v.c, st.c, p);
        gpu.ops.lightningPrefill(o.g, q.g, k.g, v.g, st.g, p);
        gpuF32.ops.lightningPrefill(o.f, q.f, k.f, v.f, st.f, p);
        const what = `H=${H} D=${D} n=${n}${quirk ? ' quirk' : ''} ${D === 128 && !quirk ? mode : 'generic'}`;
        const got = gpu.download(o.g), want = cpu.download(o.c);
        const s = compare(got, want), sState = compare(gpu.download(st.g), cpu.download(st.c)), moved = compare(gpuF32.download(o.f), want);
        const tol = D === 128 && !quirk && mode === 'tc-split' ? 1e-8 : 1e-7;
        t.diagnostic(`${what}: out ${fmtStats(s)}; state ${fmtStats(sState)}; f32 operands: NMSE ${moved.nmse.toExponential(2)}`);
        assert.ok(got.every(Number.isFinite) && s.nmse <= tol && sState.nmse <= tol, `${what}: out ${fmtStats(s)}, state ${fmtStats(sState)}`);
        assert.ok(moved.nmse > 1e-8, `${what}: the GPU's bf16 mode looks like its f32 mode`);
      }
    } finally {
      gpu.c.lightningPrefill = mode0;
      gpuF32.c.lightningPrefill = mode0;
    }
  });
});
