/**
 * Tensor-parallel collectives (spec §7) with one rank: allReduceSum is the identity and
 * allGatherCols keeps the first W columns. The reference backend has no peers, so this is its
 * whole contract; cpu.ts gives the multi-rank version over a HostComm.
 */
import { checkShape, hostView, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';

export function refAllReduceSum(_x: Tensor): void {}

/** Shapes of allGatherCols: out [R, W], x [R, w] with W ≤ ranks·w. Returns [R, W, w]. */
export function checkGatherCols(out: Tensor, x: Tensor, ranks: number): [number, number, number] {
  const [R, w] = x.shape;
  assert(out.shape.length === 2 && x.shape.length === 2, () => `allGatherCols: 2-D tensors expected, found ${out} and ${x}`);
  checkShape(out, [R, -1], 'allGatherCols out');
  const W = out.shape[1];
  assert(W <= ranks * w, () => `allGatherCols: ${W} columns from ${ranks} ranks of ${w}`);
  return [R, W, w];
}

export function refAllGatherCols(out: Tensor, x: Tensor): void {
  const [R, W, w] = checkGatherCols(out, x, 1);
  const o = hostView(out), s = hostView(x);
  for (let r = 0; r < R; r++) for (let j = 0; j < W; j++) o.data[o.off + r * W + j] = s.data[s.off + r * w + j];
}
