/** MLA layer (spec §5.2): latent projections, GPT-J RoPE, paged latent cache, expanded prefill / absorbed decode. */
import type { Backend, MlaParams } from '../backend/backend.js';
import type { HybridCache } from '../cache/hybrid-cache.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Activations } from './activations.js';
import type { ModelSpec } from './config.js';
import type { StepBatch } from './step.js';
import type { MlaWeights } from './weights.js';

export function mlaParams(spec: ModelSpec, blockSize: number): MlaParams {
  const c = spec.config;
  return {
    nHeads: spec.local.heads, // this rank's heads (spec §7)
    qkNope: c.qk_nope_head_dim,
    qkRope: c.qk_rope_head_dim,
    vHead: c.v_head_dim,
    kvLora: c.kv_lora_rank,
    scale: (c.qk_nope_head_dim + c.qk_rope_head_dim) ** -0.5,
    blockSize,
  };
}

/**
 * out [T, C] = MLA(x [T, C]); writes this step's latents into the layer's cache first. Under TP the
 * latent (q_a, kv_a) is computed whole on every rank and out is this rank's heads' partial sum.
 */
export function mlaLayer(be: Backend, spec: ModelSpec, layer: number, w: MlaWeights, p: MlaParams, act: Activations, batch: StepBatch, cache: HybridCache, x: Tensor, out: Tensor): void {
  const c = spec.config;
  const ops = be.ops;
  const T = x.shape[0];
  const H = p.nHeads, Lr = p.kvLora, Dr = p.qkRope;
  const eps = c.rms_norm_eps;
  const q = act.q.prefix([T, H * (p.qkNope + Dr)]);
  // The projections of x first, back to back (a GPU converts x for its GEMMs once for all):
  // kv_a rows are [c_kv (L) ; k_pe (Dr)], two matmuls on row views.
  const ckv = act.ckv.prefix([T, Lr]), kpe = act.kpe.prefix([T, Dr]);
  ops.matmul(ckv, x, w.kvA.rows(0, Lr), w.kvABias ? w.kvABias.rows(0, Lr) : null);
  ops.matmul(kpe, x, w.kvA.rows(Lr, Dr), w.kvABias ? w.kvABias.rows(Lr, Dr) : null);
  if (w.qA && w.qB && w.qANorm) {
    const cq = act.cq.prefix([T, w.qA.shape[0]]);
    ops.matmul(cq, x, w.qA, w.qABias);
    ops.rmsnorm(cq, cq, w.qANorm, eps);
    ops.matmul(q, cq, w.qB, null);
  } else ops.matmul(q, x, w.q!, null);
  ops.rmsnorm(ckv, ckv, w.kvANorm, eps);
  ops.rope(q, batch.positions, { style: 'gptj', nHeads: H, headStride: p.qkNope + Dr, offset: p.qkNope, rotaryDim: Dr, invFreq: spec.mlaInvFreq });
  ops.rope(kpe, batch.positions, { style: 'gptj', nHeads: 1, headStride: Dr, offset: 0, rotaryDim: Dr, invFreq: spec.mlaInvFreq });
  // A bf16 cache in wider storage (host backends) holds the values the GPU's bf16 cache stores.
  if (cache.roundsKvOnWrite) for (const t of [ckv, kpe]) ops.roundBf16(t);
  const latent = cache.latents.get(layer)!;
  const o = act.o.prefix([T, H * p.vHead]);
  const seqs = batch.seqs;
  for (let j = 0; j < seqs.length; ) {
    // A run of one-token sequences on consecutive rows decodes in one batched call.
    let e = j;
    while (e < seqs.length && seqs[e].len === 1 && seqs[e].start === seqs[j].start + (e - j)) e++;
    if (e - j >= 2) {
      const run = seqs.slice(j, e).map((s) => ({ blockTable: s.seq.blockTable, ctxStart: s.ctxStart }));
      const r0 = seqs[j].start;
      run.forEach((seq, i) => ops.mlaCacheWrite(latent, ckv.rows(r0 + i, 1), kpe.rows(r0 + i, 1), seq, p));
      ops.mlaDecodeBatch(o.rows(r0, run.length), q.rows(r0, run.length), latent, w.kvB, run, p);
      j = e;
      continue;
    }
    const s = seqs[j++];
    const seq = { blockTable: s.seq.blockTable, ctxStart: s.ctxStart };
    ops.mlaCacheWrite(latent, ckv.rows(s.start, s.len), kpe.rows(s.start, s.len), seq, p);
    const attend = s.len === 1 ? ops.mlaDecodeAbsorbed : ops.mlaPrefillExpanded;
    attend(o.rows(s.start, s.len), q.rows(s.start, s.len), latent, w.kvB, seq, p);
  }
  ops.matmul(out, o, w.o, w.oBias);
}
