/**
 * Lightning linear attention on the CPU: f32 storage, float64 accumulation.
 * Prefill uses the chunked form (chunk length L = p.chunk, chunks aligned to the call's first
 * token). Per head and chunk, with local index t and the state S at the chunk start:
 *   o_t = scale · [ Σ_{u≤t} (q_t·k_u) λ^(t-u) v_u  +  λ^(t+1) (q_t·S) ]     (quirk: λ^t)
 *   S  ← λ^L S + Σ_u λ^(L-1-u) k_uᵀ v_u
 * Every decay factor is λ^m = exp(-s·m) with m ≥ 0, so nothing can overflow.
 * Decode is the plain recurrent step for B sequences, each reading/writing its own state slot.
 */
import type { LightningParams } from '../../backend/backend.js';
import { checkShape, f32Data, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { roundBf16 } from '../../util/numeric.js';
import { checkLightning, VLLM_PREFILL_BLOCK } from './lightning.js';

/** bf16Operands (MatmulInputs 'bf16'): q, k and v rounded to bf16 as they are gathered (refLightningPrefill's). */
export function cpuLightningPrefill(o: Tensor, q: Tensor, k: Tensor, v: Tensor, state: Tensor, p: LightningParams, bf16Operands = false): void {
  const n = checkLightning(o, q, k, v, p, 'lightningPrefill');
  const H = p.nHeads, D = p.headDim, W = H * D;
  checkShape(state, [H, D, D], 'lightningPrefill state');
  if (p.vllmPrefillQuirk) assert(p.chunk === VLLM_PREFILL_BLOCK, () => `lightningPrefill: vllmPrefillQuirk needs chunk ${VLLM_PREFILL_BLOCK}, found ${p.chunk}`);
  const od = f32Data(o), qd = f32Data(q), kd = f32Data(k), vd = f32Data(v), sd = f32Data(state);
  // The inter-chunk term of local token t is decayed by λ^(t+interShift).
  const interShift = p.vllmPrefillQuirk ? 0 : 1;
  const Lmax = Math.min(p.chunk, n);
  // Scratch, once per call: one head's chunk of q/k/v [Lmax, D], its state [D, D], λ^m for m ∈ [0, Lmax].
  const qc = new Float64Array(Lmax * D), kc = new Float64Array(Lmax * D), vc = new Float64Array(Lmax * D);
  const S = new Float64Array(D * D);
  const pw = new Float64Array(Lmax + 1);
  const acc = new Float64Array(D), inter = new Float64Array(D);

  for (let h = 0; h < H; h++) {
    const s = p.decay[h];
    for (let m = 0; m <= Lmax; m++) pw[m] = Math.exp(-s * m);
    const sOff = sd.off + h * D * D;
    for (let i = 0; i < D * D; i++) S[i] = sd.data[sOff + i];

    for (let c0 = 0; c0 < n; c0 += p.chunk) {
      const L = Math.min(p.chunk, n - c0);
      // Gather this head's columns first, so o may alias q, k or v.
      for (let t = 0; t < L; t++) {
        const src = (c0 + t) * W + h * D;
        for (let d = 0; d < D; d++) {
          qc[t * D + d] = qd.data[qd.off + src + d];
          kc[t * D + d] = kd.data[kd.off + src + d];
          vc[t * D + d] = vd.data[vd.off + src + d];
        }
      }
      if (bf16Operands)
        for (let i = 0; i < L * D; i++) {
          qc[i] = roundBf16(qc[i]);
          kc[i] = roundBf16(kc[i]);
          vc[i] = roundBf16(vc[i]);
        }

      for (let t = 0; t < L; t++) {
        const qb = t * D;
        acc.fill(0);
        // intra-chunk causal part
        for (let u = 0; u <= t; u++) {
          const kb = u * D;
          let qk = 0;
          for (let d = 0; d < D; d++) qk += qc[qb + d] * kc[kb + d];
          const a = qk * pw[t - u];
          if (a === 0) continue;
          for (let j = 0; j < D; j++) acc[j] += a * vc[kb + j];
        }
        // inter-chunk part from the state at the chunk start (skipped once λ^m underflows)
        const f = pw[t + interShift];
        if (f !== 0) {
          inter.fill(0);
          for (let i = 0; i < D; i++) {
            const qi = qc[qb + i];
            if (qi === 0) continue;
            const sb = i * D;
            for (let j = 0; j < D; j++) inter[j] += qi * S[sb + j];
          }
          for (let j = 0; j < D; j++) acc[j] += f * inter[j];
        }
        const dst = od.off + (c0 + t) * W + h * D;
        for (let j = 0; j < D; j++) od.data[dst + j] = p.scale * acc[j];
      }

      // state update to the chunk's last token
      const fL = pw[L];
      for (let i = 0; i < D; i++) {
        const sb = i * D;
        for (let j = 0; j < D; j++) S[sb + j] *= fL;
        for (let u = 0; u < L; u++) {
          const c = pw[L - 1 - u] * kc[u * D + i];
          if (c === 0) continue;
          const vb = u * D;
          for (let j = 0; j < D; j++) S[sb + j] += c * vc[vb + j];
        }
      }
    }

    if (p.stateBf16) for (let i = 0; i < D * D; i++) sd.data[sOff + i] = roundBf16(S[i]);
    else for (let i = 0; i < D * D; i++) sd.data[sOff + i] = S[i];
  }
}

export function cpuLightningDecode(o: Tensor, q: Tensor, k: Tensor, v: Tensor, states: Tensor, slots: Int32Array, p: LightningParams): void {
  const B = checkLightning(o, q, k, v, p, 'lightningDecode');
  const H = p.nHeads, D = p.headDim, W = H * D;
  checkShape(states, [-1, H, D, D], 'lightningDecode states');
  assert(slots.length === B, () => `lightningDecode: ${slots.length} slots for ${B} rows`);
  const od = f32Data(o), qd = f32Data(q), kd = f32Data(k), vd = f32Data(v), sd = f32Data(states);
  const acc = new Float64Array(D);
  const qh = new Float64Array(D);
  const lam = p.decay.map((s) => Math.exp(-s));
  const round = p.stateBf16;

  for (let b = 0; b < B; b++) {
    const slot = slots[b];
    assert(slot >= 0 && slot < states.shape[0], () => `lightningDecode: slot ${slot} outside [0, ${states.shape[0]})`);
    for (let h = 0; h < H; h++) {
      const x = b * W + h * D;
      const sOff = sd.off + (slot * H + h) * D * D;
      const l = lam[h];
      for (let i = 0; i < D; i++) qh[i] = qd.data[qd.off + x + i];
      acc.fill(0);
      for (let i = 0; i < D; i++) {
        const ki = kd.data[kd.off + x + i];
        const qi = qh[i];
        const sb = sOff + i * D;
        for (let j = 0; j < D; j++) {
          // the output uses the unrounded new state; only the stored copy is rounded (as vLLM)
          const sNew = l * sd.data[sb + j] + ki * vd.data[vd.off + x + j];
          acc[j] += qi * sNew;
          sd.data[sb + j] = round ? roundBf16(sNew) : sNew;
        }
      }
      const dst = od.off + x;
      for (let j = 0; j < D; j++) od.data[dst + j] = p.scale * acc[j];
    }
  }
}
