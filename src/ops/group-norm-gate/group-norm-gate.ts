/**
 * Gated group RMSNorm (spec §4.3, RMSNormGated with sigmoid, norm before gate), reference.
 * x, gate, out [T, C]; w [C]; `groups` contiguous channel ranges of G = C/groups channels:
 *   y_c = x_c · rsqrt(mean_{group}(x²) + eps) · w_c ;  out_c = y_c · sigmoid(gate_c)
 * groups = 1 is the `group_norm_size == 1` path (one norm over all C channels).
 */
import { checkShape, fromF64, toF64, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { sigmoid } from '../../util/numeric.js';

/** Shape checks shared by both backends. Returns [T, C, G]. */
export function checkGroupNormGate(out: Tensor, x: Tensor, gate: Tensor, w: Tensor, groups: number): [number, number, number] {
  checkShape(w, [-1], 'groupRmsnormGate w');
  const C = w.shape[0];
  assert(Number.isInteger(groups) && groups >= 1 && C % groups === 0, () => `groupRmsnormGate: ${C} channels do not split into ${groups} groups`);
  checkShape(x, [-1, C], 'groupRmsnormGate x');
  checkShape(gate, x.shape, 'groupRmsnormGate gate');
  checkShape(out, x.shape, 'groupRmsnormGate out');
  return [x.shape[0], C, C / groups];
}

export function refGroupRmsnormGate(out: Tensor, x: Tensor, gate: Tensor, w: Tensor, groups: number, eps: number): void {
  const [T, C, G] = checkGroupNormGate(out, x, gate, w, groups);
  const xs = toF64(x), gs = toF64(gate), ws = toF64(w);
  const y = new Float64Array(T * C);
  for (let t = 0; t < T; t++)
    for (let g = 0; g < groups; g++) {
      const b = t * C + g * G;
      let ss = 0;
      for (let c = 0; c < G; c++) ss += xs[b + c] ** 2;
      const inv = 1 / Math.sqrt(ss / G + eps);
      for (let c = 0; c < G; c++) y[b + c] = xs[b + c] * inv * ws[g * G + c] * sigmoid(gs[b + c]);
    }
  fromF64(out, y);
}
