/**
 * Pieces shared by the tiled CPU attention kernels (MLA and GQA): scratch views and the
 * online-softmax step between the two matmuls of a tile.
 */
import { Tensor } from '../tensor/tensor.js';

/** A [rows, cols] view over the start of a scratch buffer (scratch tensors sit at offset 0). */
export function view(t: Tensor, rows: number, cols: number): Tensor {
  return new Tensor('f32', [rows, cols], t.storage, t.offset);
}

/**
 * One online-softmax step. s [rows, T] holds raw q·k dots of one tile; row r may see its first
 * min(T, firstVisible + floor(r / rowsPerQuery)) columns (causal mask). Turns s into unnormalised
 * probabilities exp(score - m_new) in place (masked columns 0), updates m and l at [mOff + r], and
 * sets alpha[r] = exp(m_old - m_new), the factor the row's accumulator needs before adding P·V.
 */
export function softmaxTile(
  s: Float32Array, rows: number, T: number, rowsPerQuery: number, firstVisible: number, scale: number,
  m: Float32Array, l: Float32Array, mOff: number, alpha: Float32Array,
): void {
  for (let r = 0; r < rows; r++) {
    const vis = Math.max(0, Math.min(T, firstVisible + Math.floor(r / rowsPerQuery)));
    const b = r * T;
    let tmax = -Infinity;
    for (let t = 0; t < vis; t++) {
      const x = Math.fround(s[b + t] * scale); // rounded as stored, so m matches the stored scores
      s[b + t] = x;
      if (x > tmax) tmax = x;
    }
    const mOld = m[mOff + r];
    const mNew = Math.max(mOld, tmax);
    if (mNew === -Infinity) {
      // Nothing visible yet for this row: contribute nothing, keep the accumulator (still zero).
      s.fill(0, b, b + T);
      alpha[r] = 1;
      continue;
    }
    let sum = 0;
    for (let t = 0; t < vis; t++) {
      const e = Math.exp(s[b + t] - mNew);
      s[b + t] = e;
      sum += e;
    }
    s.fill(0, b + vis, b + T);
    const a = Math.exp(mOld - mNew); // 0 on the first visible tile (mOld = -Inf)
    alpha[r] = a;
    l[mOff + r] = l[mOff + r] * a + sum;
    m[mOff + r] = mNew;
  }
}

/** acc[accOff + r·w + j] = acc·alpha[r] + pv[r·w + j] for r < rows. */
export function rescaleAdd(acc: Float32Array, accOff: number, pv: Float32Array, alpha: Float32Array, rows: number, w: number): void {
  for (let r = 0; r < rows; r++) {
    const a = alpha[r], ab = accOff + r * w, pb = r * w;
    for (let j = 0; j < w; j++) acc[ab + j] = acc[ab + j] * a + pv[pb + j];
  }
}
