import { checkShape, f32Data, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';

function normRows(o: Float32Array, oo: number, x: Float32Array, xo: number, w: Float32Array, wo: number, rows: number, width: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const xb = xo + r * width;
    const ob = oo + r * width;
    let ss = 0;
    for (let c = 0; c < width; c++) ss += x[xb + c] * x[xb + c];
    const inv = 1 / Math.sqrt(ss / width + eps);
    for (let c = 0; c < width; c++) o[ob + c] = x[xb + c] * inv * w[wo + c];
  }
}

export function cpuRmsnorm(out: Tensor, x: Tensor, w: Tensor, eps: number): void {
  const C = w.shape[0];
  checkShape(x, [-1, C], 'rmsnorm x');
  checkShape(out, x.shape, 'rmsnorm out');
  const o = f32Data(out), xv = f32Data(x), wv = f32Data(w);
  normRows(o.data, o.off, xv.data, xv.off, wv.data, wv.off, x.shape[0], C, eps);
}

export function cpuAddRmsnorm(out: Tensor, residual: Tensor, x: Tensor, w: Tensor, eps: number): void {
  const C = w.shape[0];
  checkShape(residual, [-1, C], 'addRmsnorm residual');
  checkShape(x, residual.shape, 'addRmsnorm x');
  checkShape(out, residual.shape, 'addRmsnorm out');
  const r = f32Data(residual), xv = f32Data(x);
  for (let i = 0; i < residual.numel; i++) r.data[r.off + i] += xv.data[xv.off + i];
  cpuRmsnorm(out, residual, w, eps);
}

export function cpuHeadRmsnorm(out: Tensor, x: Tensor, w: Tensor, headDim: number, eps: number): void {
  checkShape(w, [headDim], 'headRmsnorm w');
  checkShape(out, x.shape, 'headRmsnorm out');
  assert(x.numel % headDim === 0, () => `headRmsnorm: ${x} not a multiple of head dim ${headDim}`);
  const o = f32Data(out), xv = f32Data(x), wv = f32Data(w);
  normRows(o.data, o.off, xv.data, xv.off, wv.data, wv.off, x.numel / headDim, headDim, eps);
}
