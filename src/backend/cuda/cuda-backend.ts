/**
 * CUDA backend (DESIGN §4). Storage and numerics:
 * - activations and the residual stream f32 in memory; the weight matmuls (and prefill attention)
 *   take them rounded to bf16 with fp32 accumulation when matmulInputs is 'bf16' (the engine's CUDA
 *   default), or split into bf16 hi + lo (f32-faithful, this class's default) — backend.ts MatmulInputs;
 * - 'matrix' weights bf16 when the checkpoint is bf16 (f32 checkpoints stay f32); 'vector' weights
 *   f32, 2-D ones from a bf16 checkpoint with a bf16 twin; lightning state f32 (bf16 in compat
 *   vllm); MLA latent / GQA KV cache in bf16 or f32 pages (HybridCache kvCacheDtype).
 * matmul: steps of up to c.gemvRows() rows (1 with bf16 inputs, 8 with f32) run a GEMV kernel;
 * larger ones go through cuBLASLt.
 * Everything is enqueued on one stream; download() and sync() wait for it.
 */
import { Tensor, dtypeBytes, fromF64, hostArrayFor, type Dtype } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { bf16ToF32, f16ToF32 } from '../../util/numeric.js';
import { InternalError } from '../../util/errors.js';
import type { Backend, MatmulInputs, Ops, SampleRowsArgs, SampleRowsResult, StepShape, StepSync, WeightSource, WeightUse } from '../backend.js';
import { CudaContext } from './context.js';
import { CudaStepGraphs } from './step-graph.js';
import { CudaDriver, type DeviceInfo } from './driver.js';
import { cudaAllGatherCols, cudaAllReduceSum, type CudaTp } from './ops-collective.js';
import { cudaSampleRows } from './ops-sample.js';
import {
  cudaAdd,
  cudaAddRmsnorm,
  cudaEmbedding,
  cudaGatherRows,
  cudaGroupRmsnormGate,
  cudaHeadRmsnorm,
  cudaMatmul,
  cudaRmsnorm,
  cudaRope,
  cudaRoundBf16,
  cudaSilu,
  cudaSiluMul,
  strideGrid,
} from './ops-basic.js';
import {
  cudaGqaAttention,
  cudaGqaCacheWrite,
  cudaLightningDecode,
  cudaLightningPrefill,
  cudaMlaAttention,
  cudaMlaDecodeBatch,
  cudaMlaCacheWrite,
  cudaMlaPrefill,
  cudaMoeExperts,
  cudaMoeRoute,
} from './ops-attention.js';

export interface CudaBackendOptions {
  /** Device ordinal (default 0). */
  device?: number;
  /** Kernel cache folder (default $BAILING_CACHE_DIR/kernels or ~/.cache/bailing/kernels). */
  cacheDir?: string;
  /**
   * `--load-format dummy`: loadWeight ignores the bytes it is given and fills each weight on the
   * device with seeded uniform values (matrices ~ U(±sqrt(3/cols)), vectors 1 ± 0.1).
   */
  dummyWeights?: { seed: number };
  /**
   * Tensor parallelism: the NCCL communicator of this rank (device = its GPU). Made by
   * initTp() once the context exists (NCCL binds to the current CUDA context).
   */
  tp?: (c: CudaContext) => CudaTp;
  /** Replay pure decode steps as CUDA graphs (default true; BAILING_CUDA_GRAPHS=0 turns it off). */
  graphs?: boolean;
  /**
   * Weight-matmul inputs (backend.ts MatmulInputs). Default f32 (f32-faithful split GEMMs), so a
   * bare backend matches the CPU's default for op tests; the engine asks for bf16 on CUDA
   * (select.ts defaultMatmulInputs).
   */
  matmulInputs?: MatmulInputs;
}

/** Why CUDA cannot be used here, or null when a device is present (tests skip on a reason). */
export function cudaUnavailableReason(): string | null {
  try {
    const d = CudaDriver.open();
    return d.deviceCount() > 0 ? null : 'no CUDA device';
  } catch (e) {
    return (e as Error).message;
  }
}

export class CudaBackend implements Backend {
  readonly name = 'cuda' as const;
  readonly actDtype = 'f32' as const;
  readonly ops: Ops;
  readonly c: CudaContext;
  private readonly dummy: { seed: number } | null;
  /** Tensor-parallel communicator (null: one GPU). */
  readonly tp: CudaTp | null;
  private dummyCount = 0;
  /** Decode-step graphs (null: every step runs eagerly). */
  readonly graphs: CudaStepGraphs | null;

  constructor(opts: CudaBackendOptions = {}) {
    const driver = CudaDriver.open();
    this.c = new CudaContext(driver, opts.device ?? 0, opts.cacheDir);
    if (opts.matmulInputs === 'bf16') {
      this.c.bf16Inputs = true;
      this.c.gemmSplit = this.c.moeSplit = false;
    }
    this.dummy = opts.dummyWeights ?? null;
    const c = this.c;
    this.ops = {
      embedding: (out, table, ids, piece) => cudaEmbedding(c, out, table, ids, piece),
      rmsnorm: (out, x, w, eps) => cudaRmsnorm(c, out, x, w, eps),
      addRmsnorm: (out, r, x, w, eps) => cudaAddRmsnorm(c, out, r, x, w, eps),
      matmul: (out, x, w, bias) => cudaMatmul(c, out, x, w, bias),
      headRmsnorm: (out, x, w, d, eps) => cudaHeadRmsnorm(c, out, x, w, d, eps),
      rope: (x, pos, spec) => cudaRope(c, x, pos, spec),
      silu: (out, x) => cudaSilu(c, out, x),
      siluMul: (out, gu) => cudaSiluMul(c, out, gu),
      add: (out, a, b) => cudaAdd(c, out, a, b),
      gatherRows: (out, x, idx) => cudaGatherRows(c, out, x, idx),
      roundBf16: (x) => cudaRoundBf16(c, x),
      lightningPrefill: (o, q, k, v, st, p) => cudaLightningPrefill(c, o, q, k, v, st, p),
      lightningDecode: (o, q, k, v, st, slots, p) => cudaLightningDecode(c, o, q, k, v, st, slots, p),
      groupRmsnormGate: (out, x, g, w, groups, eps) => cudaGroupRmsnormGate(c, out, x, g, w, groups, eps),
      mlaCacheWrite: (cache, ckv, kpe, seq, p) => cudaMlaCacheWrite(c, cache, ckv, kpe, seq, p),
      mlaPrefillExpanded: (out, q, cache, kvB, seq, p) => cudaMlaPrefill(c, out, q, cache, kvB, seq, p),
      mlaDecodeAbsorbed: (out, q, cache, kvB, seq, p) => cudaMlaAttention(c, out, q, cache, kvB, seq, p),
      mlaDecodeBatch: (out, q, cache, kvB, seqs, p) => cudaMlaDecodeBatch(c, out, q, cache, kvB, seqs, p),
      gqaCacheWrite: (cache, k, v, seq, p) => cudaGqaCacheWrite(c, cache, k, v, seq, p),
      gqaAttention: (out, q, cache, seq, p) => cudaGqaAttention(c, out, q, cache, seq, p),
      moeRoute: (ids, w, logits, bias, p) => cudaMoeRoute(c, ids, w, logits, bias, p),
      moeExperts: (out, x, ids, w, w13, w2, ffn) => cudaMoeExperts(c, out, x, ids, w, w13, w2, ffn),
      allReduceSum: (x) => cudaAllReduceSum(c, this.tp, x),
      allGatherCols: (out, x) => cudaAllGatherCols(c, this.tp, out, x),
    };
    this.tp = opts.tp ? opts.tp(c) : null;
    this.graphs = (opts.graphs ?? process.env.BAILING_CUDA_GRAPHS !== '0') ? new CudaStepGraphs(c) : null;
  }

  runStep(batch: StepShape, forward: () => Tensor, scope: readonly object[], tp?: StepSync): Tensor {
    // Per-launch profiling stays eager (events need launches); collectives are captured (ops-collective.ts).
    if (!this.graphs || this.c.profile || !CudaStepGraphs.eligible(batch)) {
      if (tp && 'follow' in tp && tp.follow !== 'eager') throw new InternalError(`rank 0 runs a step as a graph (${tp.follow}); this rank cannot (graphs ${this.graphs ? 'on' : 'off'}, profiling ${this.c.profile ? 'on' : 'off'})`);
      if (tp && 'announce' in tp) tp.announce('eager');
      return forward();
    }
    return this.graphs.run(batch, forward, scope, tp);
  }

  sampleRows(logits: Tensor, args: SampleRowsArgs): SampleRowsResult {
    return cudaSampleRows(this.c, logits, args);
  }

  get device(): DeviceInfo {
    return this.c.info;
  }

  alloc(dtype: Dtype, shape: readonly number[], owner = 'tensors'): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    const buf = this.c.mem.alloc(n * dtypeBytes[dtype], owner);
    this.c.noteWrite();
    this.c.driver.memsetD8(buf.ptr, 0, buf.bytes, this.c.stream);
    return new Tensor(dtype, shape, { kind: 'device', ptr: buf.ptr, bytes: buf.bytes });
  }

  loadWeight(src: WeightSource, use: WeightUse): Tensor {
    const n = src.shape.reduce((a, b) => a * b, 1);
    const srcBytes = src.dtype === 'f32' ? 4 : 2;
    const keep = src.dtype === 'f32' || (src.dtype === 'bf16' && use === 'matrix');
    const t = this.alloc(keep ? src.dtype : 'f32', src.shape, 'weights');
    // A bf16 matrix widened for f32 use keeps a bf16 twin (CudaContext.bf16Twin): small (router,
    // kv_b), and with bf16 matmul inputs its GEMMs run on tensor cores with the same products.
    const twin = !keep && src.dtype === 'bf16' && src.shape.length === 2 ? this.alloc('bf16', src.shape, 'weights') : null;
    if (twin) this.c.addBf16Twin(t, twin);
    if (this.dummy) {
      if (twin) {
        this.fillDummy(twin); // bf16 values, as a bf16 checkpoint's
        this.c.launch(this.c.kernel('src/backend/cuda/fill.cu', 'fill_widen_bf16', 'ppl'), strideGrid(t.numel), 256, 0, [this.c.ptr(t), this.c.ptr(twin), t.numel]);
      } else this.fillDummy(t);
      return t;
    }
    const bytes = src.parts.reduce((a, p) => a + p.byteLength, 0);
    assert(bytes === n * srcBytes, () => `weight bytes ${bytes} for ${src.dtype}[${src.shape.join(', ')}]`);
    let at = 0; // byte offset in the device tensor
    let twinAt = 0;
    this.c.noteWrite();
    for (const part of src.parts) {
      if (twin) {
        this.c.driver.htod(this.c.ptr(twin) + BigInt(twinAt), part, this.c.stream);
        twinAt += part.byteLength;
      }
      if (keep) {
        this.c.driver.htod(this.c.ptr(t) + BigInt(at), part, this.c.stream);
        at += part.byteLength;
        continue;
      }
      // bf16/f16 widened to f32 on the host (vector weights are small); copy so the u16 view is aligned.
      const u16 = new Uint16Array(part.slice().buffer, 0, part.byteLength / 2);
      const f = new Float32Array(u16.length);
      const conv = src.dtype === 'bf16' ? bf16ToF32 : f16ToF32;
      for (let i = 0; i < u16.length; i++) f[i] = conv(u16[i]);
      this.c.driver.htod(this.c.ptr(t) + BigInt(at), f, this.c.stream);
      at += f.byteLength;
    }
    // Pageable copies are staged before htod returns, but keep load order simple to reason about.
    this.c.sync();
    return t;
  }

  private fillDummy(t: Tensor): void {
    const seed = BigInt(this.dummy!.seed) * 1000003n + BigInt(this.dummyCount++);
    const cols = t.shape.length >= 2 ? t.shape[t.shape.length - 1] : 0;
    const [center, scale] = cols > 0 ? [0, Math.sqrt(3 / cols)] : [1, 0.1];
    const k = this.c.kernel('src/backend/cuda/fill.cu', `fill_uniform_${t.dtype}`, 'pluff');
    this.c.launch(k, strideGrid(t.numel), 256, 0, [this.c.ptr(t), t.numel, seed, center, scale]);
  }

  upload(t: Tensor, src: ArrayLike<number>): void {
    assert(src.length === t.numel, () => `upload: ${src.length} values for ${t}`);
    const host = new Tensor(t.dtype, [t.numel], { kind: 'host', data: hostArrayFor(t.dtype, t.numel, false) });
    fromF64(host, src);
    this.c.noteWrite();
    this.c.driver.htod(this.c.ptr(t), (host.storage as { data: ArrayBufferView }).data, this.c.stream);
  }

  download(t: Tensor): Float32Array {
    const ptr = this.c.ptr(t);
    const d = this.c.driver;
    switch (t.dtype) {
      case 'f32': {
        const out = new Float32Array(t.numel);
        d.dtoh(out, ptr, this.c.stream);
        return out;
      }
      case 'bf16':
      case 'f16': {
        const u = new Uint16Array(t.numel);
        d.dtoh(u, ptr, this.c.stream);
        const conv = t.dtype === 'bf16' ? bf16ToF32 : f16ToF32;
        return Float32Array.from(u, conv);
      }
      case 'i32': {
        const u = new Int32Array(t.numel);
        d.dtoh(u, ptr, this.c.stream);
        return Float32Array.from(u);
      }
      case 'f64': {
        const u = new Float64Array(t.numel);
        d.dtoh(u, ptr, this.c.stream);
        return Float32Array.from(u);
      }
    }
  }

  sync(): void {
    this.c.sync();
  }

  dispose(): void {
    this.graphs?.dispose();
    if (this.tp) this.tp.nccl.destroy(this.tp.comm);
    this.c.dispose();
  }
}
