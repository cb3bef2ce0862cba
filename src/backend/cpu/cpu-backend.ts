/**
 * CPU backend: f32 activations in SharedArrayBuffers (so worker threads can share them), weights
 * used as matrices kept in bf16 when the checkpoint is bf16, everything else f32.
 */
import { availableParallelism } from 'node:os';
import { Tensor, f32Data, fromF64, hostArrayFor, type Dtype } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { f16ToF32 } from '../../util/numeric.js';
import type { Backend, HostComm, MatmulInputs, Ops, WeightSource, WeightUse } from '../backend.js';
import { cpuEmbedding } from '../../ops/embedding/cpu.js';
import { cpuAdd, cpuGatherRows, cpuRoundBf16, cpuSilu, cpuSiluMul } from '../../ops/elementwise/cpu.js';
import { cpuGqaAttention, cpuGqaCacheWrite } from '../../ops/gqa/cpu.js';
import { cpuGroupRmsnormGate } from '../../ops/group-norm-gate/cpu.js';
import { cpuLightningDecode, cpuLightningPrefill } from '../../ops/lightning/cpu.js';
import { cpuMatmul } from '../../ops/matmul/pooled.js';
import { cpuMlaCacheWrite, cpuMlaDecodeAbsorbed, cpuMlaPrefillExpanded } from '../../ops/mla/cpu.js';
import { mlaDecodeEach } from '../../ops/mla/mla.js';
import { cpuMoeExperts, cpuMoeRoute } from '../../ops/moe/cpu.js';
import { cpuAllGatherCols, cpuAllReduceSum } from '../../ops/collective/cpu.js';
import { cpuAddRmsnorm, cpuHeadRmsnorm, cpuRmsnorm } from '../../ops/rmsnorm/cpu.js';
import { cpuRope } from '../../ops/rope/cpu.js';
import type { CpuOpContext } from '../../ops/cpu-context.js';
import { ThreadPool } from './pool.js';

export interface CpuBackendOptions {
  /** Threads including the caller (default: all available cores). */
  threads?: number;
  /** Keep bf16 matrices in bf16 (half the memory, slower matmul) instead of widening to f32. */
  keepBf16?: boolean;
  /** Tensor-parallel peers (tests run N CPU ranks in one process); absent: one rank. */
  comm?: HostComm;
  /** Weight-matmul inputs (backend.ts MatmulInputs; default f32). */
  matmulInputs?: MatmulInputs;
}

export class CpuBackend implements Backend {
  readonly name = 'cpu' as const;
  readonly actDtype = 'f32' as const;
  readonly ops: Ops;
  readonly threads: number;
  private readonly pool: ThreadPool;
  private readonly keepBf16: boolean;
  private readonly scratchMap = new Map<string, Float32Array>();

  constructor(opts: CpuBackendOptions = {}) {
    this.threads = Math.max(1, opts.threads ?? availableParallelism());
    this.keepBf16 = opts.keepBf16 ?? true;
    this.pool = new ThreadPool(this.threads);
    const rowScratch = { row: new Float32Array(1024) };
    const matmul = (out: Tensor, x: Tensor, w: Tensor, bias: Tensor | null): void => cpuMatmul(this.pool, rowScratch, out, x, w, bias);
    const bf16Inputs = opts.matmulInputs === 'bf16';
    // Attention products inside the ops use ctx.matmul on activations: never rounded.
    const ctx: CpuOpContext = { matmul, scratch: (key, shape) => this.scratch(key, shape), bf16Inputs };
    this.ops = {
      embedding: cpuEmbedding,
      rmsnorm: cpuRmsnorm,
      addRmsnorm: cpuAddRmsnorm,
      matmul: bf16Inputs
        ? (out, x, w, bias) => {
            const xr = this.scratch('matmul.x-bf16', x.shape);
            const src = f32Data(x);
            f32Data(xr).data.set(src.data.subarray(src.off, src.off + x.numel));
            cpuRoundBf16(xr);
            matmul(out, xr, w, bias);
          }
        : matmul,
      headRmsnorm: cpuHeadRmsnorm,
      rope: cpuRope,
      silu: cpuSilu,
      siluMul: cpuSiluMul,
      add: cpuAdd,
      gatherRows: cpuGatherRows,
      roundBf16: cpuRoundBf16,
      lightningPrefill: bf16Inputs ? (o, q, k, v, state, p) => cpuLightningPrefill(o, q, k, v, state, p, true) : cpuLightningPrefill,
      lightningDecode: cpuLightningDecode,
      groupRmsnormGate: cpuGroupRmsnormGate,
      mlaCacheWrite: cpuMlaCacheWrite,
      mlaPrefillExpanded: (out, q, cache, kvB, seq, p) => cpuMlaPrefillExpanded(ctx, out, q, cache, kvB, seq, p),
      mlaDecodeAbsorbed: (out, q, cache, kvB, seq, p) => cpuMlaDecodeAbsorbed(ctx, out, q, cache, kvB, seq, p),
      mlaDecodeBatch: (out, q, cache, kvB, seqs, p) => mlaDecodeEach((o, qi, c, w, s, pp) => cpuMlaDecodeAbsorbed(ctx, o, qi, c, w, s, pp), out, q, cache, kvB, seqs, p),
      gqaCacheWrite: cpuGqaCacheWrite,
      gqaAttention: (out, q, cache, seq, p) => cpuGqaAttention(ctx, out, q, cache, seq, p),
      moeRoute: cpuMoeRoute,
      moeExperts: (out, x, ids, weights, w13, w2, ffn) => cpuMoeExperts(ctx, out, x, ids, weights, w13, w2, ffn),
      allReduceSum: (x) => cpuAllReduceSum(opts.comm ?? null, x),
      allGatherCols: (out, x) => cpuAllGatherCols(opts.comm ?? null, out, x),
    };
  }

  alloc(dtype: Dtype, shape: readonly number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return new Tensor(dtype, shape, { kind: 'host', data: hostArrayFor(dtype, n, true) });
  }

  loadWeight(src: WeightSource, use: WeightUse): Tensor {
    const n = src.shape.reduce((a, b) => a * b, 1);
    const bytes = src.parts.reduce((a, p) => a + p.byteLength, 0);
    assert(bytes === n * (src.dtype === 'f32' ? 4 : 2), () => `weight bytes ${bytes} for ${src.dtype}[${src.shape.join(', ')}]`);
    const keep = src.dtype === 'f32' || (src.dtype === 'bf16' && use === 'matrix' && this.keepBf16);
    const t = this.alloc(keep ? src.dtype : 'f32', src.shape);
    const data = (t.storage as { data: Float32Array | Uint16Array }).data;
    let at = 0; // element offset of the current part
    for (const part of src.parts) {
      const count = part.byteLength / (src.dtype === 'f32' ? 4 : 2);
      if (keep) new Uint8Array(data.buffer).set(part, at * data.BYTES_PER_ELEMENT);
      else {
        // bf16/f16 widened to f32; copy the part so the u16 view is aligned.
        const u16 = new Uint16Array(part.slice().buffer, 0, count);
        if (src.dtype === 'bf16') {
          const d32 = new Uint32Array(data.buffer);
          for (let i = 0; i < count; i++) d32[at + i] = u16[i] << 16;
        } else for (let i = 0; i < count; i++) data[at + i] = f16ToF32(u16[i]);
      }
      at += count;
    }
    return t;
  }

  upload(t: Tensor, src: ArrayLike<number>): void {
    fromF64(t, src);
  }

  download(t: Tensor): Float32Array {
    assert(t.dtype === 'f32', () => `download of ${t}: cpu backend downloads f32 tensors`);
    const { data } = t.storage as { data: Float32Array };
    return data.slice(t.offset, t.offset + t.numel);
  }

  sync(): void {}

  dispose(): void {
    this.pool.dispose();
    this.scratchMap.clear();
  }

  private scratch(key: string, shape: readonly number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    let buf = this.scratchMap.get(key);
    if (!buf || buf.length < n) {
      buf = hostArrayFor('f32', Math.max(n, 1024), true) as Float32Array;
      this.scratchMap.set(key, buf);
    }
    return new Tensor('f32', shape, { kind: 'host', data: buf });
  }
}
