/** matmul contract and slow reference: out [T,N] = x [T,K] · w [N,K]ᵀ (+ bias [N]), in float64. */
import { checkShape, fromF64, toF64, type Tensor } from '../../tensor/tensor.js';

export function refMatmul(out: Tensor, x: Tensor, w: Tensor, bias: Tensor | null): void {
  const [T, K] = x.shape;
  const N = w.shape[0];
  checkShape(w, [N, K], 'matmul w');
  checkShape(out, [T, N], 'matmul out');
  if (bias) checkShape(bias, [N], 'matmul bias');
  const xs = toF64(x);
  const ws = toF64(w);
  const bs = bias ? toF64(bias) : null;
  const o = new Float64Array(T * N);
  for (let t = 0; t < T; t++)
    for (let n = 0; n < N; n++) {
      let s = bs ? bs[n] : 0;
      for (let k = 0; k < K; k++) s += xs[t * K + k] * ws[n * K + k];
      o[t * N + n] = s;
    }
  fromF64(out, o);
}
