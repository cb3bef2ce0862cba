/**
 * Reference backend: every tensor in float64 and every op the slow, obvious reference of
 * ops/<op>/<op>.ts. Running the model on it gives the float64 reference forward that the fast
 * backends are tested against.
 */
import { Tensor, fromF64, hostArrayFor, toF64, type Dtype } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { bf16ToF32, f16ToF32, roundBf16 } from '../../util/numeric.js';
import type { Backend, MatmulInputs, Ops, WeightSource } from '../backend.js';
import { refAllGatherCols, refAllReduceSum } from '../../ops/collective/collective.js';
import { refEmbedding } from '../../ops/embedding/embedding.js';
import { refAdd, refGatherRows, refRoundBf16, refSilu, refSiluMul } from '../../ops/elementwise/elementwise.js';
import { refGqaAttention, refGqaCacheWrite } from '../../ops/gqa/gqa.js';
import { refGroupRmsnormGate } from '../../ops/group-norm-gate/group-norm-gate.js';
import { refLightningDecode, refLightningPrefill } from '../../ops/lightning/lightning.js';
import { refMatmul } from '../../ops/matmul/matmul.js';
import { refMlaCacheWrite, refMlaDecodeAbsorbed, refMlaDecodeBatch, refMlaPrefillExpanded } from '../../ops/mla/mla.js';
import { refMoeExperts, refMoeRoute } from '../../ops/moe/moe.js';
import { refAddRmsnorm, refHeadRmsnorm, refRmsnorm } from '../../ops/rmsnorm/rmsnorm.js';
import { refRope } from '../../ops/rope/rope.js';

export const referenceOps: Ops = {
  embedding: refEmbedding,
  rmsnorm: refRmsnorm,
  addRmsnorm: refAddRmsnorm,
  matmul: refMatmul,
  headRmsnorm: refHeadRmsnorm,
  rope: refRope,
  silu: refSilu,
  siluMul: refSiluMul,
  add: refAdd,
  gatherRows: refGatherRows,
  roundBf16: refRoundBf16,
  lightningPrefill: refLightningPrefill,
  lightningDecode: refLightningDecode,
  groupRmsnormGate: refGroupRmsnormGate,
  mlaCacheWrite: refMlaCacheWrite,
  mlaPrefillExpanded: refMlaPrefillExpanded,
  mlaDecodeAbsorbed: refMlaDecodeAbsorbed,
  mlaDecodeBatch: refMlaDecodeBatch,
  gqaCacheWrite: refGqaCacheWrite,
  gqaAttention: refGqaAttention,
  moeRoute: refMoeRoute,
  moeExperts: refMoeExperts,
  allReduceSum: refAllReduceSum,
  allGatherCols: refAllGatherCols,
};

/** referenceOps with MatmulInputs 'bf16': weight-matmul inputs and prefill attention operands rounded to bf16 first. */
const bf16InputOps: Ops = {
  ...referenceOps,
  matmul: (out, x, w, bias) => {
    const xr = new Tensor('f64', x.shape, { kind: 'host', data: toF64(x).map(roundBf16) });
    refMatmul(out, xr, w, bias);
  },
  moeExperts: (out, x, ids, weights, w13, w2, ffn) => refMoeExperts(out, x, ids, weights, w13, w2, ffn, true),
  mlaPrefillExpanded: (out, q, cache, kvB, seq, p) => refMlaPrefillExpanded(out, q, cache, kvB, seq, p, true),
  lightningPrefill: (o, q, k, v, state, p) => refLightningPrefill(o, q, k, v, state, p, true),
};

export class ReferenceBackend implements Backend {
  readonly name = 'reference' as const;
  readonly actDtype = 'f64' as const;
  readonly ops: Ops;

  constructor(opts: { matmulInputs?: MatmulInputs } = {}) {
    this.ops = opts.matmulInputs === 'bf16' ? bf16InputOps : referenceOps;
  }

  alloc(dtype: Dtype, shape: readonly number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return new Tensor(dtype, shape, { kind: 'host', data: hostArrayFor(dtype, n, false) });
  }

  loadWeight(src: WeightSource): Tensor {
    const t = this.alloc('f64', src.shape);
    const d = (t.storage as { data: Float64Array }).data;
    let at = 0;
    for (const part of src.parts) {
      const buf = part.slice().buffer;
      if (src.dtype === 'f32') {
        const v = new Float32Array(buf);
        d.set(v, at);
        at += v.length;
      } else {
        const u16 = new Uint16Array(buf);
        const conv = src.dtype === 'bf16' ? bf16ToF32 : f16ToF32;
        for (let i = 0; i < u16.length; i++) d[at + i] = conv(u16[i]);
        at += u16.length;
      }
    }
    assert(at === t.numel, () => `weight of ${at} values for [${src.shape.join(', ')}]`);
    return t;
  }

  upload(t: Tensor, src: ArrayLike<number>): void {
    fromF64(t, src);
  }

  download(t: Tensor): Float32Array {
    assert(t.storage.kind === 'host', 'reference tensors live on the host');
    return Float32Array.from(toF64(t));
  }

  /** Full-precision copy (the reason this backend exists). */
  downloadF64(t: Tensor): Float64Array {
    return toF64(t);
  }

  sync(): void {}
  dispose(): void {}
}
