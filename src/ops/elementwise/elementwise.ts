/** Elementwise and row-gather references: silu, siluMul (SwiGLU), add, gatherRows, roundBf16. */
import { checkShape, fromF64, toF64, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { roundBf16, silu } from '../../util/numeric.js';

export function refSilu(out: Tensor, x: Tensor): void {
  checkShape(out, x.shape, 'silu out');
  fromF64(out, toF64(x).map(silu));
}

export function refSiluMul(out: Tensor, gu: Tensor): void {
  const [T, F2] = gu.shape;
  const F = F2 / 2;
  checkShape(out, [T, F], 'siluMul out');
  const g = toF64(gu);
  const o = new Float64Array(T * F);
  for (let t = 0; t < T; t++) for (let f = 0; f < F; f++) o[t * F + f] = silu(g[t * F2 + f]) * g[t * F2 + F + f];
  fromF64(out, o);
}

export function refAdd(out: Tensor, a: Tensor, b: Tensor): void {
  checkShape(b, a.shape, 'add b');
  checkShape(out, a.shape, 'add out');
  const av = toF64(a), bv = toF64(b);
  fromF64(out, av.map((v, i) => v + bv[i]));
}

export function checkGather(out: Tensor, x: Tensor, idx: Int32Array): void {
  const W = x.rowSize;
  checkShape(out, [idx.length, W], 'gatherRows out');
  for (const r of idx) assert(r >= 0 && r < x.shape[0], () => `gatherRows: row ${r} outside [0, ${x.shape[0]})`);
}

export function refGatherRows(out: Tensor, x: Tensor, idx: Int32Array): void {
  checkGather(out, x, idx);
  const W = x.rowSize;
  const xv = toF64(x);
  const o = new Float64Array(idx.length * W);
  idx.forEach((r, i) => o.set(xv.subarray(r * W, (r + 1) * W), i * W));
  fromF64(out, o);
}

export function refRoundBf16(x: Tensor): void {
  fromF64(x, toF64(x).map(roundBf16));
}
