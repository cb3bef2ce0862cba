/**
 * MLA attention on the GPU against the CPU backend (split from ops.gpu.test.ts): cache writes
 * (f32 and bf16 pages), absorbed decode and every prefill mode at tiny, tiny-brown and flash head
 * shapes, the tensor-core decode (mla-decode-tc.cu) at 32 and 40 heads and contexts up to 3001, and
 * the batched decode of several sequences in one launch. GPU outputs are poisoned with NaN first;
 * NMSE and max-abs are reported per case. Skips with the reason when no CUDA device is present.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { MlaParams } from '../backend.js';
import { CpuBackend } from '../cpu/cpu-backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import { Prng } from '../../util/prng.js';
import { CudaBackend, cudaUnavailableReason } from './cuda-backend.js';
import { opPairs } from './op-pairs.js';

const reason = cudaUnavailableReason();
const skip = reason === null ? false : `no CUDA device: ${reason}`;

describe('cuda MLA vs cpu', { skip }, () => {
  let cpu: CpuBackend;
  let gpu: CudaBackend;
  const rng = new Prng(20261127);
  before(() => {
    cpu = new CpuBackend({ threads: 4 });
    gpu = new CudaBackend();
  });
  after(() => {
    cpu?.dispose();
    gpu?.dispose();
  });
  const { rand, out, check } = opPairs(() => ({ cpu, gpu }), rng);

  /**
   * MLA attention of n new queries over the cache, CPU vs GPU: decode when n = 1, and prefill in
   * every mode (n = 1 included). Tolerances: the f32 absorbed kernels and the split (hi + lo bf16,
   * three MMAs) flash kernel stay near f32 (1e-7); the one-MMA bf16 flash kernel rounds q, k, v and
   * p to bf16 (8 significant bits): NMSE ≤ 1e-4.
   */
  const attendEveryMode = (t: TestContext, label: string, cache: { c: Tensor; g: Tensor }, kvB: { c: Tensor; g: Tensor }, seq: { blockTable: Int32Array; ctxStart: number }, p: MlaParams, n: number): void => {
    const { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv } = p, ctx = seq.ctxStart, mode0 = gpu.c.mlaPrefill;
    const q = rand([n, H * (Dn + Dr)], 0.5);
    const o = out([n, H * Dv]);
    if (n === 1) {
      cpu.ops.mlaDecodeAbsorbed(o.c, q.c, cache.c, kvB.c, seq, p);
      gpu.ops.mlaDecodeAbsorbed(o.g, q.g, cache.g, kvB.g, seq, p);
      check(t, `${label} mlaDecodeAbsorbed ctx=${ctx} n=1`, o, 1e-7);
    } else cpu.ops.mlaPrefillExpanded(o.c, q.c, cache.c, kvB.c, seq, p);
    try {
      for (const [mode, tol] of [['absorbed', 1e-7], ['flash-split', 1e-7], ['flash-bf16', 1e-4]] as const) {
        gpu.upload(o.g, new Float64Array(n * H * Dv).fill(NaN));
        gpu.c.mlaPrefill = mode;
        gpu.ops.mlaPrefillExpanded(o.g, q.g, cache.g, kvB.g, seq, p);
        check(t, `${label} mlaPrefillExpanded ${mode} ctx=${ctx} n=${n}`, o, tol);
      }
    } finally {
      gpu.c.mlaPrefill = mode0;
    }
  };

  // Paged caches of both kinds. bf16 pages (HybridCache kvCacheDtype 'bf16'): the GPU stores bf16
  // and its kernels read bf16; the CPU keeps f32 storage and the model rounds what it writes through
  // bf16 (roundBf16), so both caches must hold identical values (NMSE 0) and the attention keeps the
  // f32 tolerances. Shapes: odd tiny heads (64-wide flash kernel, padded), an odd bf16 row width
  // (L + Dr = 17: the unpaired bf16 reads), the flash geometry (128/64/128), tiny-brown's (32/32/64).
  for (const cd of ['f32', 'bf16'] as const)
    test(`MLA cache write (${cd} pages) + attention: prefill from 0, chunks after context, decode; absorbed and every prefill mode`, (t) => {
      const shapes = [[4, 6, 4, 5, 12], ...(cd === 'bf16' ? [[2, 6, 4, 5, 13]] : []), [4, 128, 64, 128, 512], [3, 32, 32, 64, 64]];
      for (const [H, Dn, Dr, Dv, L] of shapes) {
        const p: MlaParams = { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv, kvLora: L, scale: (Dn + Dr) ** -0.5, blockSize: 16 };
        const blocks = 16;
        const cache = { c: cpu.alloc('f32', [blocks * 16, L + Dr]), g: gpu.alloc(cd, [blocks * 16, L + Dr]) };
        const blockTable = Int32Array.from({ length: blocks }, (_, b) => (b * 5 + 3) % blocks);
        const kvB = rand([H * (Dn + Dv), L], 1 / Math.sqrt(L));
        let ctx = 0;
        // The later calls have enough context for the split-context (flash-decoding) path.
        // ctx 61 before the 150-token chunk: query tiles and key tiles both start mid-block.
        for (const n of [19, 1, 40, 1, 150, 1, 7]) {
          const seq = { blockTable, ctxStart: ctx };
          const ckv = rand([n, L]), kpe = rand([n, Dr]);
          if (cd === 'bf16') for (const x of [ckv.c, kpe.c]) cpu.ops.roundBf16(x);
          cpu.ops.mlaCacheWrite(cache.c, ckv.c, kpe.c, seq, p);
          gpu.ops.mlaCacheWrite(cache.g, ckv.g, kpe.g, seq, p); // bf16 pages: unrounded f32 in, rounded by the kernel
          check(t, `L=${L} ${cd} cache after ctx=${ctx} n=${n}`, cache, 0);
          attendEveryMode(t, `L=${L} ${cd} cache`, cache, kvB, seq, p, n);
          ctx += n;
        }
      }
    });

  // The tensor-core decode (mla-decode-tc.cu: every head of a group of 32 per block, hi + lo
  // products): contexts from one row to many tiles per split, splits left empty at short contexts,
  // a second, partly filled head group (40 heads, whose kv_b has a bf16 twin as a bf16 checkpoint's
  // does); both kernels against the CPU (the difference between the two is reported).
  test('MLA decode on tensor cores (bf16 latent cache, L 512): 32 and 40 heads, contexts 1..3001, both decode kernels vs CPU', (t) => {
    const mode0 = gpu.c.mlaDecode;
    try {
      for (const H of [32, 40]) {
        const p: MlaParams = { nHeads: H, qkNope: 128, qkRope: 64, vHead: 128, kvLora: 512, scale: 192 ** -0.5, blockSize: 16 };
        const blocks = 190, W = p.kvLora + p.qkRope;
        const cache = { c: cpu.alloc('f32', [blocks * 16, W]), g: gpu.alloc('bf16', [blocks * 16, W]) };
        const blockTable = Int32Array.from({ length: blocks }, (_, b) => (b * 7 + 3) % blocks);
        const kvB = rand([H * 256, p.kvLora], 1 / Math.sqrt(p.kvLora));
        if (H === 40) {
          // kv_b from a bf16 checkpoint: bf16 values with a bf16 twin on the GPU (mla_absorbq_bf16 reads it).
          cpu.ops.roundBf16(kvB.c);
          gpu.ops.roundBf16(kvB.g);
          const twin = gpu.alloc('bf16', kvB.g.shape);
          gpu.upload(twin, cpu.download(kvB.c));
          gpu.c.addBf16Twin(kvB.g, twin);
        }
        let ctx = 0;
        for (const target of [0, 4, 32, 1023, 1100, 3000]) {
          // Fill up to `target`, then one decode step at position `target`.
          for (const n of [target - ctx, 1].filter((x) => x > 0)) {
            const seq = { blockTable, ctxStart: ctx };
            const ckv = rand([n, p.kvLora]), kpe = rand([n, p.qkRope]);
            cpu.ops.roundBf16(ckv.c);
            cpu.ops.roundBf16(kpe.c);
            cpu.ops.mlaCacheWrite(cache.c, ckv.c, kpe.c, seq, p);
            gpu.ops.mlaCacheWrite(cache.g, ckv.g, kpe.g, seq, p);
            ctx += n;
          }
          const seq = { blockTable, ctxStart: target };
          const q = rand([1, H * 192], 0.5);
          const o = out([1, H * 128]);
          cpu.ops.mlaDecodeAbsorbed(o.c, q.c, cache.c, kvB.c, seq, p);
          const got: Float64Array[] = [];
          for (const mode of ['tc', 'cuda-core'] as const) {
            gpu.c.mlaDecode = mode;
            gpu.upload(o.g, new Float64Array(H * 128).fill(NaN));
            gpu.ops.mlaDecodeAbsorbed(o.g, q.g, cache.g, kvB.g, seq, p);
            check(t, `H=${H} ctx=${target + 1} ${mode}`, o, 1e-7);
            got.push(Float64Array.from(gpu.download(o.g)));
          }
          const s = compare(got[0], got[1]);
          t.diagnostic(`H=${H} ctx=${target + 1}: tensor-core vs CUDA-core kernel ${fmtStats(s)}`);
        }
      }
    } finally {
      gpu.c.mlaDecode = mode0;
    }
  });


  // Batched decode (Ops.mlaDecodeBatch): five sequences with their own block tables and contexts in
  // one bf16 cache, one launch per kernel on the GPU; every row against the CPU and, bit for bit,
  // against the same sequence decoded alone on the GPU.
  test('MLA batched decode on tensor cores: five sequences (contexts 1..2501) in one launch = each alone (bitwise) = CPU', (t) => {
    const H = 32, p: MlaParams = { nHeads: H, qkNope: 128, qkRope: 64, vHead: 128, kvLora: 512, scale: 192 ** -0.5, blockSize: 16 };
    const W = p.kvLora + p.qkRope, ctxs = [0, 40, 1100, 17, 2500], per = 160, blocks = per * ctxs.length;
    const cache = { c: cpu.alloc('f32', [blocks * 16, W]), g: gpu.alloc('bf16', [blocks * 16, W]) };
    const kvB = rand([H * 256, p.kvLora], 1 / Math.sqrt(p.kvLora));
    const seqs = ctxs.map((ctxStart, i) => ({ blockTable: Int32Array.from({ length: per }, (_, b) => (b * 7 + i * 3) % per + i * per), ctxStart }));
    for (const s of seqs) {
      // Positions 0..ctxStart of each sequence (its new token included) in both caches.
      const n = s.ctxStart + 1, seq = { blockTable: s.blockTable, ctxStart: 0 };
      const ckv = rand([n, p.kvLora]), kpe = rand([n, p.qkRope]);
      cpu.ops.roundBf16(ckv.c);
      cpu.ops.roundBf16(kpe.c);
      cpu.ops.mlaCacheWrite(cache.c, ckv.c, kpe.c, seq, p);
      gpu.ops.mlaCacheWrite(cache.g, ckv.g, kpe.g, seq, p);
    }
    const q = rand([ctxs.length, H * 192], 0.5);
    const o = out([ctxs.length, H * 128]);
    cpu.ops.mlaDecodeBatch(o.c, q.c, cache.c, kvB.c, seqs, p);
    gpu.ops.mlaDecodeBatch(o.g, q.g, cache.g, kvB.g, seqs, p);
    check(t, `batched decode of ${ctxs.length} sequences`, o, 1e-7);
    const batched = gpu.download(o.g);
    seqs.forEach((s, i) => {
      const one = out([1, H * 128]);
      gpu.ops.mlaDecodeAbsorbed(one.g, q.g.rows(i, 1), cache.g, kvB.g, s, p);
      const alone = gpu.download(one.g), row = batched.subarray(i * H * 128, (i + 1) * H * 128);
      const at = alone.findIndex((v, j) => v !== row[j]);
      assert.equal(at, -1, `sequence ${i} (ctx ${s.ctxStart + 1}): batched row differs from it alone at ${at}`);
    });
  });
});
