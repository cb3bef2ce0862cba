/**
 * Lightning linear attention (spec §4.2, §4.5), reference in float64.
 * Per head h with decay rate s_h, state S_h [D_k, D_v] (k-major):
 *   S_h ← exp(-s_h)·S_h + k_hᵀ v_h ;  o_h = scale · q_h · S_h      (current token included)
 * Layouts: q, k, v, o [n, H·D] with head-major columns; state [H, D, D], S[h][i][j] with i over
 * k dims and j over v dims. `vllmPrefillQuirk` switches the prefill to vLLM's 256-block algorithm
 * (spec §4.6), whose inter-block term is decayed by exp(-s·t) instead of exp(-s·(t+1)).
 */
import type { LightningParams } from '../../backend/backend.js';
import { checkShape, fromF64, toF64, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { roundBf16 } from '../../util/numeric.js';

/** vLLM's `_attention.forward` hard-codes this block length. */
export const VLLM_PREFILL_BLOCK = 256;

/** Shape checks shared by both backends. Returns n (tokens or batch rows). */
export function checkLightning(o: Tensor, q: Tensor, k: Tensor, v: Tensor, p: LightningParams, what: string): number {
  const W = p.nHeads * p.headDim;
  assert(p.decay.length === p.nHeads, () => `${what}: decay has ${p.decay.length} values for ${p.nHeads} heads`);
  // λ = exp(-s) ≤ 1 keeps every decay factor exp(-s·m), m ≥ 0, from overflowing.
  assert(p.decay.every((s) => s >= 0 && Number.isFinite(s)), () => `${what}: decay rates must be finite and ≥ 0, found [${p.decay.join(', ')}]`);
  assert(Number.isInteger(p.chunk) && p.chunk >= 1, () => `${what}: chunk must be an integer ≥ 1, found ${p.chunk}`);
  checkShape(q, [-1, W], `${what} q`);
  const n = q.shape[0];
  checkShape(k, [n, W], `${what} k`);
  checkShape(v, [n, W], `${what} v`);
  checkShape(o, [n, W], `${what} o`);
  return n;
}

/** One recurrent step for all heads: S [H·D·D] updated in place, o [H·D] written (row offsets given). */
function stepToken(S: Float64Array, q: Float64Array, k: Float64Array, v: Float64Array, o: Float64Array, row: number, p: LightningParams): void {
  const H = p.nHeads, D = p.headDim, base = row * H * D;
  for (let h = 0; h < H; h++) {
    const lam = Math.exp(-p.decay[h]);
    const hb = base + h * D;
    for (let i = 0; i < D; i++)
      for (let j = 0; j < D; j++) {
        const s = h * D * D + i * D + j;
        S[s] = lam * S[s] + k[hb + i] * v[hb + j];
      }
    for (let j = 0; j < D; j++) {
      let acc = 0;
      for (let i = 0; i < D; i++) acc += q[hb + i] * S[h * D * D + i * D + j];
      o[hb + j] = p.scale * acc;
    }
  }
}

/** vLLM prefill (spec §4.6 numpy emulation), S updated in place. */
function vllmBlocks(S: Float64Array, q: Float64Array, k: Float64Array, v: Float64Array, o: Float64Array, n: number, p: LightningParams): void {
  const H = p.nHeads, D = p.headDim, W = H * D;
  for (let b0 = 0; b0 < n; b0 += VLLM_PREFILL_BLOCK) {
    const L = Math.min(VLLM_PREFILL_BLOCK, n - b0);
    for (let h = 0; h < H; h++) {
      const s = p.decay[h];
      const Sh = h * D * D;
      const at = (x: Float64Array, t: number, d: number): number => x[(b0 + t) * W + h * D + d];
      for (let t = 0; t < L; t++) {
        // intra-block weights: a_u = (q_t·k_u) exp(-s(t-u)), u ≤ t
        const a = new Float64Array(t + 1);
        for (let u = 0; u <= t; u++) {
          let qk = 0;
          for (let d = 0; d < D; d++) qk += at(q, t, d) * at(k, u, d);
          a[u] = qk * Math.exp(-s * (t - u));
        }
        for (let j = 0; j < D; j++) {
          let intra = 0;
          for (let u = 0; u <= t; u++) intra += a[u] * at(v, u, j);
          // inter-block: (q_t·S_blockstart) exp(-s·t)  (canonical would be t+1)
          let inter = 0;
          for (let d = 0; d < D; d++) inter += at(q, t, d) * S[Sh + d * D + j];
          o[(b0 + t) * W + h * D + j] = p.scale * (intra + inter * Math.exp(-s * t));
        }
      }
      const next = new Float64Array(D * D);
      for (let i = 0; i < D; i++)
        for (let j = 0; j < D; j++) {
          let acc = Math.exp(-s * L) * S[Sh + i * D + j];
          for (let t = 0; t < L; t++) acc += Math.exp(-s * (L - 1 - t)) * at(k, t, i) * at(v, t, j);
          next[i * D + j] = acc;
        }
      S.set(next, Sh);
    }
  }
}

/** bf16Operands (the prefill of MatmulInputs 'bf16', backend.ts): q, k and v rounded to bf16 first. */
export function refLightningPrefill(o: Tensor, q: Tensor, k: Tensor, v: Tensor, state: Tensor, p: LightningParams, bf16Operands = false): void {
  const n = checkLightning(o, q, k, v, p, 'lightningPrefill');
  const H = p.nHeads, D = p.headDim;
  checkShape(state, [H, D, D], 'lightningPrefill state');
  const S = toF64(state);
  const rd = bf16Operands ? roundBf16 : (x: number): number => x;
  const qs = toF64(q).map(rd), ks = toF64(k).map(rd), vs = toF64(v).map(rd);
  const os = new Float64Array(n * H * D);
  if (p.vllmPrefillQuirk) {
    assert(p.chunk === VLLM_PREFILL_BLOCK, () => `lightningPrefill: vllmPrefillQuirk needs chunk ${VLLM_PREFILL_BLOCK}, found ${p.chunk}`);
    vllmBlocks(S, qs, ks, vs, os, n, p);
  } else {
    for (let t = 0; t < n; t++) stepToken(S, qs, ks, vs, os, t, p);
  }
  if (p.stateBf16) for (let i = 0; i < S.length; i++) S[i] = roundBf16(S[i]);
  fromF64(o, os);
  fromF64(state, S);
}

export function refLightningDecode(o: Tensor, q: Tensor, k: Tensor, v: Tensor, states: Tensor, slots: Int32Array, p: LightningParams): void {
  const B = checkLightning(o, q, k, v, p, 'lightningDecode');
  const H = p.nHeads, D = p.headDim;
  checkShape(states, [-1, H, D, D], 'lightningDecode states');
  assert(slots.length === B, () => `lightningDecode: ${slots.length} slots for ${B} rows`);
  for (let b = 0; b < B; b++) {
    const slot = slots[b];
    assert(slot >= 0 && slot < states.shape[0], () => `lightningDecode: slot ${slot} outside [0, ${states.shape[0]})`);
    const st = states.rows(slot, 1);
    const S = toF64(st);
    const os = new Float64Array(H * D);
    stepToken(S, toF64(q.rows(b, 1)), toF64(k.rows(b, 1)), toF64(v.rows(b, 1)), os, 0, p);
    if (p.stateBf16) for (let i = 0; i < S.length; i++) S[i] = roundBf16(S[i]);
    fromF64(o.rows(b, 1), os);
    fromF64(st, S);
  }
}
