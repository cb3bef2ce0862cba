/** FFN blocks (spec §6): dense SwiGLU and the sigmoid-routed MoE with a shared expert. */
import type { Backend, RouterParams } from '../backend/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Activations } from './activations.js';
import type { ModelSpec } from './config.js';
import type { DenseFfnWeights, MoeWeights } from './weights.js';

export function routerParams(spec: ModelSpec): RouterParams {
  const c = spec.config;
  return {
    nExperts: c.num_experts,
    topK: c.num_experts_per_tok,
    nGroup: c.n_group,
    topkGroup: c.topk_group,
    scoreFunction: c.score_function,
    renormalize: c.norm_topk_prob,
    renormEps: spec.semantics.renormEps,
    routedScalingFactor: c.routed_scaling_factor,
  };
}

/** out [T, C] = W_down(silu(W_gate x) ⊙ W_up x). */
export function denseFfn(be: Backend, w: DenseFfnWeights, act: Activations, x: Tensor, out: Tensor): void {
  denseDown(be, w, act, denseGateUp(be, w, act, x), out);
}

/** gu [T, 2F] = [W_gate x | W_up x] in act.gu (the first half of denseFfn). */
function denseGateUp(be: Backend, w: DenseFfnWeights, act: Activations, x: Tensor): Tensor {
  const gu = act.gu.prefix([x.shape[0], 2 * w.ffn]);
  be.ops.matmul(gu, x, w.gateUp, w.gateUpBias);
  return gu;
}

/** out [T, C] = W_down(silu(gate) ⊙ up) of gu (the second half of denseFfn). */
function denseDown(be: Backend, w: DenseFfnWeights, act: Activations, gu: Tensor, out: Tensor): void {
  const h = act.hmid.prefix([gu.shape[0], w.ffn]);
  be.ops.siluMul(h, gu);
  be.ops.matmul(out, h, w.down, w.downBias);
}

/**
 * out [T, C] = Σ_k w_k·expert_k(x) (weights renormalised and scaled by the router) + shared(x).
 * Under TP the router runs whole on every rank and out is this rank's F-slice partial sum.
 */
export function moeFfn(be: Backend, spec: ModelSpec, w: MoeWeights, p: RouterParams, act: Activations, x: Tensor, out: Tensor): void {
  const c = spec.config;
  const T = x.shape[0];
  const K = c.num_experts_per_tok;
  const logits = act.routerLogits.prefix([T, c.num_experts]);
  be.ops.matmul(logits, x, w.router, null);
  // The shared expert's gate/up projection of x right after the router's (a GPU converts x for
  // both GEMMs once); the rest of the shared expert after the routed ones.
  const gu = w.shared ? denseGateUp(be, w.shared, act, x) : null;
  if (spec.semantics.routerLogitsBf16) be.ops.roundBf16(logits);
  const ids = act.topIds.prefix([T, K]), weights = act.topW.prefix([T, K]);
  be.ops.moeRoute(ids, weights, logits, w.expertBias, p);
  be.ops.moeExperts(out, x, ids, weights, w.w13, w.w2, spec.local.moeFfn); // this rank's F/tp slice of every expert
  if (w.shared && gu) {
    const sh = act.shared.prefix([T, c.hidden_size]);
    denseDown(be, w.shared, act, gu, sh);
    be.ops.add(out, out, sh);
  }
}
