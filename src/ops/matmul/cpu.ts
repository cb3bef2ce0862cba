/**
 * CPU matmul kernel over raw arrays, callable from worker threads: rows [n0, n1) of the output
 * columns. Each weight row is read once per 4 activation rows; bf16 rows are widened into a
 * scratch row first (bits << 16), which is cheaper than widening inside the dot product.
 */

export interface MatmulArgs {
  out: Float32Array;
  outOff: number;
  x: Float32Array;
  xOff: number;
  /** f32 weights, or bf16 bit patterns when wBf16. */
  w: Float32Array | Uint16Array;
  wOff: number;
  wBf16: boolean;
  bias: Float32Array | null;
  biasOff: number;
  T: number;
  N: number;
  K: number;
}

export function matmulRange(a: MatmulArgs, n0: number, n1: number, scratch: Float32Array): void {
  const { out, outOff, x, xOff, T, N, K, bias, biasOff } = a;
  let wrow: Float32Array;
  let wbase: number;
  const wu32 = a.wBf16 ? new Uint32Array(scratch.buffer, scratch.byteOffset, K) : null;
  for (let n = n0; n < n1; n++) {
    if (a.wBf16) {
      const w = a.w as Uint16Array;
      const src = a.wOff + n * K;
      for (let k = 0; k < K; k++) wu32![k] = w[src + k] << 16;
      wrow = scratch;
      wbase = 0;
    } else {
      wrow = a.w as Float32Array;
      wbase = a.wOff + n * K;
    }
    const b = bias ? bias[biasOff + n] : 0;
    let t = 0;
    for (; t + 4 <= T; t += 4) {
      const x0 = xOff + t * K;
      const x1 = x0 + K;
      const x2 = x1 + K;
      const x3 = x2 + K;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let k = 0; k < K; k++) {
        const wv = wrow[wbase + k];
        s0 += x[x0 + k] * wv;
        s1 += x[x1 + k] * wv;
        s2 += x[x2 + k] * wv;
        s3 += x[x3 + k] * wv;
      }
      const o = outOff + t * N + n;
      out[o] = s0 + b;
      out[o + N] = s1 + b;
      out[o + 2 * N] = s2 + b;
      out[o + 3 * N] = s3 + b;
    }
    for (; t < T; t++) {
      const x0 = xOff + t * K;
      let s0 = 0;
      let s1 = 0;
      let k = 0;
      for (; k + 2 <= K; k += 2) {
        s0 += x[x0 + k] * wrow[wbase + k];
        s1 += x[x0 + k + 1] * wrow[wbase + k + 1];
      }
      if (k < K) s0 += x[x0 + k] * wrow[wbase + k];
      out[outOff + t * N + n] = s0 + s1 + b;
    }
  }
}
