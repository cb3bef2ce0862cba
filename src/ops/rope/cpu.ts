import type { RopeSpec } from '../../backend/backend.js';
import { f32Data, type Tensor } from '../../tensor/tensor.js';
import { checkRope } from './rope.js';

export function cpuRope(x: Tensor, positions: Int32Array, s: RopeSpec): void {
  checkRope(x, positions, s);
  const W = x.shape[1];
  const { data, off } = f32Data(x);
  const half = s.rotaryDim / 2;
  const cos = new Float64Array(half), sin = new Float64Array(half);
  const da = s.style === 'neox' ? 1 : 2; // step of the first element of pair i
  const db = s.style === 'neox' ? half : 1; // distance to its partner
  for (let t = 0; t < positions.length; t++) {
    for (let i = 0; i < half; i++) {
      const th = positions[t] * s.invFreq[i];
      cos[i] = Math.cos(th);
      sin[i] = Math.sin(th);
    }
    for (let h = 0; h < s.nHeads; h++) {
      const base = off + t * W + h * s.headStride + s.offset;
      for (let i = 0; i < half; i++) {
        const ia = base + i * da, ib = ia + db;
        const a = data[ia], b = data[ib];
        data[ia] = a * cos[i] - b * sin[i];
        data[ib] = b * cos[i] + a * sin[i];
      }
    }
  }
}
