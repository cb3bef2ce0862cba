/** Lightning linear-attention layer (spec §4.2): projections, qk-norm, partial NeoX RoPE, recurrence, gated group norm, dense. */
import type { Backend, LightningParams } from '../backend/backend.js';
import type { HybridCache } from '../cache/hybrid-cache.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Activations } from './activations.js';
import type { ModelSpec } from './config.js';
import type { StepBatch } from './step.js';
import type { LightningWeights } from './weights.js';

export function lightningParams(spec: ModelSpec, layer: number): LightningParams {
  const c = spec.config;
  const s = spec.semantics;
  return {
    nHeads: spec.local.heads,
    headDim: c.head_dim,
    decay: spec.decay[layer]!,
    scale: c.head_dim ** -0.5,
    // vLLM computes in 256-token blocks; on the CPU short chunks are fastest (measured: 16 beats 64 and 256).
    chunk: s.vllmPrefillQuirk ? 256 : 16,
    vllmPrefillQuirk: s.vllmPrefillQuirk,
    stateBf16: s.stateBf16,
  };
}

/** out [T, C] = LightningAttention(x [T, C]); under TP, this rank's heads' partial sum of the dense projection. */
export function lightningLayer(be: Backend, spec: ModelSpec, layer: number, w: LightningWeights, p: LightningParams, act: Activations, batch: StepBatch, cache: HybridCache, x: Tensor, out: Tensor): void {
  const c = spec.config;
  const ops = be.ops;
  const T = x.shape[0];
  const H = spec.local.heads, D = c.head_dim, HD = H * D; // this rank's heads (spec §7)
  const eps = c.rms_norm_eps;
  const qv = act.q.prefix([T, HD]), k = act.k.prefix([T, HD]), v = act.v.prefix([T, HD]);
  // qkv rows are [Q ; K ; V]: three matmuls on row views of one weight.
  ops.matmul(qv, x, w.qkv.rows(0, HD), w.qkvBias ? w.qkvBias.rows(0, HD) : null);
  ops.matmul(k, x, w.qkv.rows(HD, HD), w.qkvBias ? w.qkvBias.rows(HD, HD) : null);
  ops.matmul(v, x, w.qkv.rows(2 * HD, HD), w.qkvBias ? w.qkvBias.rows(2 * HD, HD) : null);
  // The gate projection of x right away: a GPU converts x for its GEMMs once for all four.
  const g = act.g.prefix([T, HD]);
  ops.matmul(g, x, w.gProj, w.gProjBias);
  if (c.linear_silu) for (const t of [qv, k, v]) ops.silu(t, t); // vLLM's reading of linear_silu (spec §4.2)
  if (w.qNorm && w.kNorm) {
    ops.headRmsnorm(qv, qv, w.qNorm, D, eps);
    ops.headRmsnorm(k, k, w.kNorm, D, eps);
  }
  if (spec.linearRotaryDim > 0) {
    const rope = { style: 'neox' as const, nHeads: H, headStride: D, offset: 0, rotaryDim: spec.linearRotaryDim, invFreq: spec.linearInvFreq };
    ops.rope(qv, batch.positions, rope);
    ops.rope(k, batch.positions, rope);
  }
  const o = act.o.prefix([T, HD]);
  const states = cache.states.get(layer)!;
  for (let i = 0; i < batch.seqs.length; ) {
    const s = batch.seqs[i];
    // Consecutive one-token sequences on consecutive rows share one decode launch.
    let j = i + 1;
    if (s.len === 1) while (j < batch.seqs.length && batch.seqs[j].len === 1 && batch.seqs[j].start === s.start + (j - i)) j++;
    const rows = (t: Tensor): Tensor => t.rows(s.start, s.len === 1 ? j - i : s.len);
    if (s.len === 1) ops.lightningDecode(rows(o), rows(qv), rows(k), rows(v), states, Int32Array.from(batch.seqs.slice(i, j), (d) => d.seq.slot), p);
    else ops.lightningPrefill(rows(o), rows(qv), rows(k), rows(v), states.rows(s.seq.slot, 1).reshape([H, D, D]), p);
    i = j;
  }
  const o2 = act.o2.prefix([T, HD]);
  ops.groupRmsnormGate(o2, o, g, w.gNorm, spec.local.groups, eps);
  ops.matmul(out, o2, w.dense, w.denseBias);
}

