/**
 * GQA full-attention layer of Ring-linear-2.0 (docs/ring-linear.md): fused QKV projection,
 * per-head qk-RMSNorm, partial NeoX RoPE, paged KV cache, causal softmax attention, dense.
 */
import type { Backend, GqaParams } from '../backend/backend.js';
import type { HybridCache } from '../cache/hybrid-cache.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Activations } from './activations.js';
import type { ModelSpec } from './config.js';
import type { StepBatch } from './step.js';
import type { GqaWeights } from './weights.js';

export function gqaParams(spec: ModelSpec, blockSize: number): GqaParams {
  const c = spec.config;
  return { nHeads: spec.local.heads, nKvHeads: spec.local.kvHeads, headDim: c.head_dim, scale: c.head_dim ** -0.5, blockSize };
}

/** out [T, C] = GQA(x [T, C]); writes this step's keys and values into the layer's cache first. */
export function gqaLayer(be: Backend, spec: ModelSpec, layer: number, w: GqaWeights, p: GqaParams, act: Activations, batch: StepBatch, cache: HybridCache, x: Tensor, out: Tensor): void {
  const ops = be.ops;
  const T = x.shape[0];
  const H = p.nHeads, KVH = p.nKvHeads, D = p.headDim, HD = H * D, KD = KVH * D;
  const eps = spec.config.rms_norm_eps;
  const q = act.q.prefix([T, HD]), k = act.k.prefix([T, KD]), v = act.v.prefix([T, KD]);
  // qkv rows are [Q (H·D) ; K (KVH·D) ; V (KVH·D)]: three matmuls on row views of one weight.
  ops.matmul(q, x, w.qkv.rows(0, HD), w.qkvBias ? w.qkvBias.rows(0, HD) : null);
  ops.matmul(k, x, w.qkv.rows(HD, KD), w.qkvBias ? w.qkvBias.rows(HD, KD) : null);
  ops.matmul(v, x, w.qkv.rows(HD + KD, KD), w.qkvBias ? w.qkvBias.rows(HD + KD, KD) : null);
  if (w.qNorm && w.kNorm) {
    ops.headRmsnorm(q, q, w.qNorm, D, eps);
    ops.headRmsnorm(k, k, w.kNorm, D, eps);
  }
  if (spec.gqaRotaryDim > 0) {
    const rope = { style: 'neox' as const, headStride: D, offset: 0, rotaryDim: spec.gqaRotaryDim, invFreq: spec.gqaInvFreq };
    ops.rope(q, batch.positions, { ...rope, nHeads: H });
    ops.rope(k, batch.positions, { ...rope, nHeads: KVH });
  }
  // A bf16 cache in wider storage (host backends) holds the values the GPU's bf16 cache stores.
  if (cache.roundsKvOnWrite) for (const t of [k, v]) ops.roundBf16(t);
  const kv = cache.kv.get(layer)!;
  const o = act.o.prefix([T, HD]);
  for (const s of batch.seqs) {
    const seq = { blockTable: s.seq.blockTable, ctxStart: s.ctxStart };
    ops.gqaCacheWrite(kv, k.rows(s.start, s.len), v.rows(s.start, s.len), seq, p);
    ops.gqaAttention(o.rows(s.start, s.len), q.rows(s.start, s.len), kv, seq, p);
  }
  ops.matmul(out, o, w.dense, w.denseBias);
}
