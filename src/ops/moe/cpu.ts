/**
 * CPU MoE: the router with insertion-based partial top-k (no sort, a few per-call buffers reused
 * across rows), and the experts grouped by expert so each used expert costs two matmuls over all
 * of its tokens (weights are read once per step, not once per token).
 */
import type { RouterParams } from '../../backend/backend.js';
import { f32Data, hostView, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { sigmoid } from '../../util/numeric.js';
import type { CpuOpContext } from '../cpu-context.js';
import { cpuRoundBf16 } from '../elementwise/cpu.js';
import { checkExperts, checkRoute, routeGroups, scoreRow } from './moe.js';

/**
 * Offer (v, i) to the descending top list vals/idx holding n of at most cap entries; returns the
 * new length. Candidates arrive in ascending index, so an equal value ranks after those already
 * present: that is the lower-index-wins tie rule.
 */
function pushTop(vals: Float64Array, idx: Int32Array, n: number, cap: number, v: number, i: number): number {
  if (n === cap) {
    if (!(v > vals[cap - 1])) return n;
    n--;
  }
  let j = n;
  for (; j > 0 && !(vals[j - 1] >= v); j--) {
    vals[j] = vals[j - 1];
    idx[j] = idx[j - 1];
  }
  vals[j] = v;
  idx[j] = i;
  return n + 1;
}

export function cpuMoeRoute(ids: Tensor, weights: Tensor, logits: Tensor, bias: Tensor | null, p: RouterParams): void {
  const [T, E, K] = checkRoute(ids, weights, logits, bias, p);
  const G = routeGroups(p);
  const size = G > 0 ? E / G : E; // experts per group
  const kg = G > 0 ? (p.topkGroup as number) : 0;
  const lv = f32Data(logits);
  const bv = bias ? f32Data(bias) : null;
  const iv = hostView(ids);
  const idOut = iv.data as Int32Array;
  const wv = f32Data(weights);
  // Selection runs in float64 with the reference's formulas, so both pick identical experts.
  const scores = new Float64Array(E); // [E] unbiased
  const sel = new Float64Array(E); // [E] scores + bias
  const groupVal = new Float64Array(kg);
  const groupIdx = new Int32Array(kg);
  const allowed = new Uint8Array(Math.max(G, 1));
  const topVal = new Float64Array(K);
  const topIdx = new Int32Array(K);
  for (let t = 0; t < T; t++) {
    scoreRow(lv.data, lv.off + t * E, E, p.scoreFunction, scores);
    for (let e = 0; e < E; e++) sel[e] = bv ? scores[e] + bv.data[bv.off + e] : scores[e];
    let n = 0;
    if (G > 0) {
      let ng = 0;
      for (let g = 0; g < G; g++) {
        // Group score: sum of the group's two best selection scores.
        let m1 = -Infinity, m2 = -Infinity;
        for (let e = g * size; e < (g + 1) * size; e++) {
          const v = sel[e];
          if (v > m1) {
            m2 = m1;
            m1 = v;
          } else if (v > m2) m2 = v;
        }
        ng = pushTop(groupVal, groupIdx, ng, kg, size === 1 ? m1 : m1 + m2, g);
      }
      allowed.fill(0);
      for (let j = 0; j < ng; j++) allowed[groupIdx[j]] = 1;
      for (let g = 0; g < G; g++) {
        if (!allowed[g]) continue;
        for (let e = g * size; e < (g + 1) * size; e++) n = pushTop(topVal, topIdx, n, K, sel[e], e);
      }
    } else for (let e = 0; e < E; e++) n = pushTop(topVal, topIdx, n, K, sel[e], e);
    assert(n === K, () => `moeRoute: row ${t} selected ${n} of ${K} experts (non-finite logits?)`);
    let sum = 0;
    for (let k = 0; k < K; k++) sum += scores[topIdx[k]];
    const denom = p.renormalize ? sum + p.renormEps : 1;
    for (let k = 0; k < K; k++) {
      idOut[iv.off + t * K + k] = topIdx[k];
      wv.data[wv.off + t * K + k] = (scores[topIdx[k]] / denom) * p.routedScalingFactor;
    }
  }
}

export function cpuMoeExperts(ctx: CpuOpContext, out: Tensor, x: Tensor, ids: Tensor, weights: Tensor, w13: Tensor, w2: Tensor, ffn: number): void {
  const F = ffn;
  const [T, C, K, E] = checkExperts(out, x, ids, weights, w13, w2, F);
  const o = f32Data(out), xv = f32Data(x), wv = f32Data(weights);
  const iv = hostView(ids);
  // out is zeroed before x is read, so they must not overlap.
  assert(o.data !== xv.data || o.off + T * C <= xv.off || xv.off + T * C <= o.off, 'moeExperts: out overlaps x');
  o.data.fill(0, o.off, o.off + T * C);

  // Counting sort of the T·K assignments by expert: expert e owns slots [start[e], start[e+1]).
  const start = new Int32Array(E + 1);
  for (let i = 0; i < T * K; i++) start[iv.data[iv.off + i] + 1]++;
  let maxN = 0;
  for (let e = 0; e < E; e++) {
    maxN = Math.max(maxN, start[e + 1]);
    start[e + 1] += start[e];
  }
  const tok = new Int32Array(T * K); // token of each slot
  const wt = new Float32Array(T * K); // routing weight of each slot
  const fill = start.slice(0, E);
  for (let t = 0; t < T; t++)
    for (let k = 0; k < K; k++) {
      const j = fill[iv.data[iv.off + t * K + k]]++;
      tok[j] = t;
      wt[j] = wv.data[wv.off + t * K + k];
    }
  if (maxN === 0) return;

  const xs = ctx.scratch('moe.x', [maxN, C]); // gathered token rows
  const gu = ctx.scratch('moe.gu', [maxN, 2 * F]); // [gate | up] projections
  const h = ctx.scratch('moe.h', [maxN, F]); // silu(gate) ⊙ up
  const y = ctx.scratch('moe.y', [maxN, C]); // expert output rows
  const { data: xsd, off: xso } = f32Data(xs);
  const { data: gud, off: guo } = f32Data(gu);
  const { data: hd, off: ho } = f32Data(h);
  const { data: yd, off: yo } = f32Data(y);
  for (let e = 0; e < E; e++) {
    const s0 = start[e], n = start[e + 1] - s0;
    if (n === 0) continue;
    for (let i = 0; i < n; i++) {
      const src = xv.off + tok[s0 + i] * C;
      xsd.set(xv.data.subarray(src, src + C), xso + i * C);
    }
    if (ctx.bf16Inputs) cpuRoundBf16(xs.rows(0, n));
    ctx.matmul(gu.rows(0, n), xs.rows(0, n), w13.rows(e * 2 * F, 2 * F), null); // [n, 2F]
    for (let i = 0; i < n; i++)
      for (let f = 0; f < F; f++) {
        const g = gud[guo + i * 2 * F + f];
        hd[ho + i * F + f] = g * sigmoid(g) * gud[guo + i * 2 * F + F + f];
      }
    if (ctx.bf16Inputs) cpuRoundBf16(h.rows(0, n));
    ctx.matmul(y.rows(0, n), h.rows(0, n), w2.rows(e * C, C), null); // [n, C]
    for (let i = 0; i < n; i++) {
      const dst = o.off + tok[s0 + i] * C, w = wt[s0 + i];
      for (let c = 0; c < C; c++) o.data[dst + c] += w * yd[yo + i * C + c];
    }
  }
}
