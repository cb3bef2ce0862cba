/**
 * MoE contract and slow float64 references: the router (sigmoid/softmax scores, optional expert
 * bias for selection, group-limited top-k) and the routed experts (SwiGLU per expert, weighted sum).
 *
 * Tie-breaking contract: among equal values the lower index wins, for groups and for experts.
 * Row order of ids: descending selection score, ties by lower index. Weights follow the ids.
 * (vLLM's fused CUDA kernel does not specify tie order; the chosen *set* is what matters.)
 */
import type { RouterParams } from '../../backend/backend.js';
import { checkShape, fromF64, hostView, toF64, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { roundBf16, sigmoid, silu } from '../../util/numeric.js';

/** Number of contiguous expert groups used for selection, or 0 for plain top-k. */
export function routeGroups(p: RouterParams): number {
  const { nGroup, topkGroup, nExperts: E } = p;
  if (nGroup === null || topkGroup === null) return 0;
  return E > nGroup && E % nGroup === 0 ? nGroup : 0;
}

/** Validate shapes and parameters; returns [T, E, K]. */
export function checkRoute(ids: Tensor, weights: Tensor, logits: Tensor, bias: Tensor | null, p: RouterParams): [number, number, number] {
  const T = logits.shape[0];
  const E = p.nExperts;
  const K = p.topK;
  checkShape(logits, [T, E], 'moeRoute logits');
  checkShape(ids, [T, K], 'moeRoute ids');
  checkShape(weights, [T, K], 'moeRoute weights');
  assert(ids.dtype === 'i32', () => `moeRoute ids must be i32, found ${ids.dtype}`);
  if (bias) checkShape(bias, [E], 'moeRoute bias');
  assert(K >= 1 && K <= E, () => `moeRoute: topK ${K} outside [1, ${E}]`);
  const G = routeGroups(p);
  if (G > 0) {
    const kg = p.topkGroup as number;
    assert(kg >= 1 && kg <= G, () => `moeRoute: topkGroup ${kg} outside [1, ${G}]`);
    // Otherwise torch would pick masked (-inf) experts; no real config does that.
    assert(K <= kg * (E / G), () => `moeRoute: topK ${K} exceeds the ${kg * (E / G)} experts of ${kg} groups`);
  }
  return [T, E, K];
}

/** Scores of one row in place: sigmoid per expert, or softmax over the row (max-shifted). */
export function scoreRow(s: Float64Array | Float32Array, off: number, E: number, fn: RouterParams['scoreFunction'], dst: Float64Array): void {
  if (fn === 'sigmoid') {
    for (let e = 0; e < E; e++) dst[e] = sigmoid(s[off + e]);
    return;
  }
  let m = -Infinity;
  for (let e = 0; e < E; e++) m = Math.max(m, s[off + e]);
  let sum = 0;
  for (let e = 0; e < E; e++) {
    dst[e] = Math.exp(s[off + e] - m);
    sum += dst[e];
  }
  for (let e = 0; e < E; e++) dst[e] /= sum;
}

/** Descending by value, ties by lower index. */
function byScore(v: ArrayLike<number>): (a: number, b: number) => number {
  return (a, b) => (v[a] !== v[b] ? (v[b] > v[a] ? 1 : -1) : a - b);
}

export function refMoeRoute(ids: Tensor, weights: Tensor, logits: Tensor, bias: Tensor | null, p: RouterParams): void {
  const [T, E, K] = checkRoute(ids, weights, logits, bias, p);
  const G = routeGroups(p);
  const lv = toF64(logits);
  const bv = bias ? toF64(bias) : null;
  const outIds = new Float64Array(T * K);
  const outW = new Float64Array(T * K);
  const scores = new Float64Array(E);
  for (let t = 0; t < T; t++) {
    scoreRow(lv, t * E, E, p.scoreFunction, scores);
    const sel = scores.map((s, e) => s + (bv ? bv[e] : 0)); // [E] selection scores
    const allowed = new Array<boolean>(E).fill(true);
    if (G > 0) {
      const size = E / G;
      const groupScore = new Float64Array(G);
      for (let g = 0; g < G; g++) {
        const members = Array.from(sel.subarray(g * size, (g + 1) * size)).sort((a, b) => b - a);
        groupScore[g] = size === 1 ? members[0] : members[0] + members[1];
      }
      const order = Array.from({ length: G }, (_, g) => g).sort(byScore(groupScore));
      const keep = new Set(order.slice(0, p.topkGroup as number));
      for (let e = 0; e < E; e++) allowed[e] = keep.has(Math.floor(e / size));
    }
    const chosen = Array.from({ length: E }, (_, e) => e)
      .filter((e) => allowed[e])
      .sort(byScore(sel))
      .slice(0, K);
    let sum = 0;
    for (const e of chosen) sum += scores[e];
    const denom = p.renormalize ? sum + p.renormEps : 1;
    chosen.forEach((e, k) => {
      outIds[t * K + k] = e;
      outW[t * K + k] = (scores[e] / denom) * p.routedScalingFactor;
    });
  }
  fromF64(ids, outIds);
  fromF64(weights, outW);
}

/** Validate expert shapes; returns [T, C, K, E]. */
export function checkExperts(out: Tensor, x: Tensor, ids: Tensor, weights: Tensor, w13: Tensor, w2: Tensor, F: number): [number, number, number, number] {
  const [T, C] = x.shape;
  const K = ids.shape[1];
  checkShape(out, [T, C], 'moeExperts out');
  checkShape(ids, [T, K], 'moeExperts ids');
  checkShape(weights, [T, K], 'moeExperts weights');
  assert(ids.dtype === 'i32', () => `moeExperts ids must be i32, found ${ids.dtype}`);
  assert(F > 0 && w13.shape[0] % (2 * F) === 0, () => `moeExperts: w13 rows ${w13.shape[0]} not a multiple of 2·${F}`);
  const E = w13.shape[0] / (2 * F);
  checkShape(w13, [E * 2 * F, C], 'moeExperts w13');
  checkShape(w2, [E * C, F], 'moeExperts w2');
  const { data, off } = hostView(ids);
  for (let i = 0; i < T * K; i++) assert(data[off + i] >= 0 && data[off + i] < E, () => `moeExperts: expert id ${data[off + i]} outside [0, ${E})`);
  return [T, C, K, E];
}

/** bf16Inputs (MatmulInputs 'bf16'): x and silu(g)·u rounded to bf16 before their projections. */
export function refMoeExperts(out: Tensor, x: Tensor, ids: Tensor, weights: Tensor, w13: Tensor, w2: Tensor, ffn: number, bf16Inputs = false): void {
  const F = ffn;
  const [T, C, K] = checkExperts(out, x, ids, weights, w13, w2, F);
  const iv = toF64(ids), wv = toF64(weights), a = toF64(w13), b = toF64(w2);
  const xv = bf16Inputs ? toF64(x).map(roundBf16) : toF64(x);
  const r = bf16Inputs ? roundBf16 : (v: number): number => v;
  const o = new Float64Array(T * C);
  const h = new Float64Array(F);
  for (let t = 0; t < T; t++)
    for (let k = 0; k < K; k++) {
      const e = iv[t * K + k];
      for (let f = 0; f < F; f++) {
        let g = 0, u = 0;
        const gr = (e * 2 * F + f) * C, ur = (e * 2 * F + F + f) * C;
        for (let c = 0; c < C; c++) {
          g += a[gr + c] * xv[t * C + c];
          u += a[ur + c] * xv[t * C + c];
        }
        h[f] = r(silu(g) * u);
      }
      for (let c = 0; c < C; c++) {
        let y = 0;
        const dr = (e * C + c) * F;
        for (let f = 0; f < F; f++) y += b[dr + f] * h[f];
        o[t * C + c] += wv[t * K + k] * y;
      }
    }
  fromF64(out, o);
}
