/**
 * RMSNorm family, reference: y = x · rsqrt(mean(x²) + eps) · w over each row (or each head slice).
 * addRmsnorm first adds x into the residual stream in place (spec §1.2 fused form).
 */
import { checkShape, fromF64, toF64, type Tensor } from '../../tensor/tensor.js';

function normRows(x: Float64Array, w: Float64Array, width: number, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / width; r++) {
    let ss = 0;
    for (let c = 0; c < width; c++) ss += x[r * width + c] ** 2;
    const inv = 1 / Math.sqrt(ss / width + eps);
    for (let c = 0; c < width; c++) y[r * width + c] = x[r * width + c] * inv * w[c];
  }
  return y;
}

export function refRmsnorm(out: Tensor, x: Tensor, w: Tensor, eps: number): void {
  const C = w.shape[0];
  checkShape(x, [-1, C], 'rmsnorm x');
  checkShape(out, x.shape, 'rmsnorm out');
  fromF64(out, normRows(toF64(x), toF64(w), C, eps));
}

export function refAddRmsnorm(out: Tensor, residual: Tensor, x: Tensor, w: Tensor, eps: number): void {
  const C = w.shape[0];
  checkShape(residual, [-1, C], 'addRmsnorm residual');
  checkShape(x, residual.shape, 'addRmsnorm x');
  checkShape(out, residual.shape, 'addRmsnorm out');
  const r = toF64(residual);
  const xs = toF64(x);
  for (let i = 0; i < r.length; i++) r[i] += xs[i];
  fromF64(residual, r);
  fromF64(out, normRows(toF64(residual), toF64(w), C, eps));
}

export function refHeadRmsnorm(out: Tensor, x: Tensor, w: Tensor, headDim: number, eps: number): void {
  checkShape(w, [headDim], 'headRmsnorm w');
  checkShape(out, x.shape, 'headRmsnorm out');
  fromF64(out, normRows(toF64(x), toF64(w), headDim, eps));
}
