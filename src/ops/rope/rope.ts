/**
 * Rotary embedding reference (in place). NeoX pairs (i, i + R/2) — the linear layers' partial
 * RoPE over the first R dims of each head; GPT-J pairs (2i, 2i+1) — MLA over qk_rope_head_dim.
 * For pair i at position p: θ = p · invFreq[i]; (a, b) → (a cosθ − b sinθ, b cosθ + a sinθ).
 */
import type { RopeSpec } from '../../backend/backend.js';
import { fromF64, toF64, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';

export function checkRope(x: Tensor, positions: Int32Array, s: RopeSpec): void {
  assert(x.shape.length === 2 && x.shape[0] === positions.length, () => `rope: x ${x} vs ${positions.length} positions`);
  assert(s.rotaryDim % 2 === 0 && s.invFreq.length === s.rotaryDim / 2, () => `rope: rotaryDim ${s.rotaryDim} with ${s.invFreq.length} frequencies`);
  assert((s.nHeads - 1) * s.headStride + s.offset + s.rotaryDim <= x.shape[1], () => `rope: heads overrun row width ${x.shape[1]}`);
}

/** Indices of pair i's two elements relative to the rotary part of a head. */
export function ropePair(style: RopeSpec['style'], i: number, rotaryDim: number): [number, number] {
  return style === 'neox' ? [i, i + rotaryDim / 2] : [2 * i, 2 * i + 1];
}

export function refRope(x: Tensor, positions: Int32Array, s: RopeSpec): void {
  checkRope(x, positions, s);
  const W = x.shape[1];
  const v = toF64(x);
  for (let t = 0; t < positions.length; t++)
    for (let h = 0; h < s.nHeads; h++) {
      const base = t * W + h * s.headStride + s.offset;
      for (let i = 0; i < s.rotaryDim / 2; i++) {
        const th = positions[t] * s.invFreq[i];
        const [ia, ib] = ropePair(s.style, i, s.rotaryDim);
        const a = v[base + ia], b = v[base + ib];
        v[base + ia] = a * Math.cos(th) - b * Math.sin(th);
        v[base + ib] = b * Math.cos(th) + a * Math.sin(th);
      }
    }
  fromF64(x, v);
}
