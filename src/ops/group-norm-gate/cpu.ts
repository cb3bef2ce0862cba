import { f32Data, type Tensor } from '../../tensor/tensor.js';
import { sigmoid } from '../../util/numeric.js';
import { checkGroupNormGate } from './group-norm-gate.js';

/** Gated group RMSNorm on f32 rows (contract in group-norm-gate.ts). out may alias x or gate. */
export function cpuGroupRmsnormGate(out: Tensor, x: Tensor, gate: Tensor, w: Tensor, groups: number, eps: number): void {
  const [T, C, G] = checkGroupNormGate(out, x, gate, w, groups);
  const o = f32Data(out), xv = f32Data(x), gv = f32Data(gate), wv = f32Data(w);
  for (let t = 0; t < T; t++)
    for (let g = 0; g < groups; g++) {
      const b = t * C + g * G;
      const xb = xv.off + b;
      let ss = 0;
      for (let c = 0; c < G; c++) ss += xv.data[xb + c] * xv.data[xb + c];
      const inv = 1 / Math.sqrt(ss / G + eps);
      // Each element is read before its own slot is written, so aliasing is safe.
      for (let c = 0; c < G; c++) o.data[o.off + b + c] = xv.data[xb + c] * inv * wv.data[wv.off + g * G + c] * sigmoid(gv.data[gv.off + b + c]);
    }
}
