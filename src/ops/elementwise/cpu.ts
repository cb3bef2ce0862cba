import { checkShape, f32Data, type Tensor } from '../../tensor/tensor.js';
import { roundBf16, sigmoid } from '../../util/numeric.js';
import { checkGather } from './elementwise.js';

export function cpuSilu(out: Tensor, x: Tensor): void {
  checkShape(out, x.shape, 'silu out');
  const o = f32Data(out), xv = f32Data(x);
  for (let i = 0; i < x.numel; i++) {
    const v = xv.data[xv.off + i];
    o.data[o.off + i] = v * sigmoid(v);
  }
}

export function cpuSiluMul(out: Tensor, gu: Tensor): void {
  const [T, F2] = gu.shape;
  const F = F2 / 2;
  checkShape(out, [T, F], 'siluMul out');
  const o = f32Data(out), g = f32Data(gu);
  for (let t = 0; t < T; t++) {
    const gb = g.off + t * F2, ob = o.off + t * F;
    for (let f = 0; f < F; f++) {
      const a = g.data[gb + f];
      o.data[ob + f] = a * sigmoid(a) * g.data[gb + F + f];
    }
  }
}

export function cpuAdd(out: Tensor, a: Tensor, b: Tensor): void {
  checkShape(b, a.shape, 'add b');
  checkShape(out, a.shape, 'add out');
  const o = f32Data(out), av = f32Data(a), bv = f32Data(b);
  for (let i = 0; i < a.numel; i++) o.data[o.off + i] = av.data[av.off + i] + bv.data[bv.off + i];
}

export function cpuGatherRows(out: Tensor, x: Tensor, idx: Int32Array): void {
  checkGather(out, x, idx);
  const W = x.rowSize;
  const o = f32Data(out), xv = f32Data(x);
  for (let i = 0; i < idx.length; i++) o.data.set(xv.data.subarray(xv.off + idx[i] * W, xv.off + (idx[i] + 1) * W), o.off + i * W);
}

export function cpuRoundBf16(x: Tensor): void {
  const xv = f32Data(x);
  for (let i = 0; i < x.numel; i++) xv.data[xv.off + i] = roundBf16(xv.data[xv.off + i]);
}
