/** CPU collectives over a HostComm (in-process ranks in tests); one rank without a comm. */
import { f32Data, type Tensor } from '../../tensor/tensor.js';
import type { HostComm } from '../../backend/backend.js';
import { checkGatherCols, refAllGatherCols } from './collective.js';

export function cpuAllReduceSum(comm: HostComm | null, x: Tensor): void {
  if (!comm || comm.size === 1) return;
  const v = f32Data(x);
  comm.allReduceSum(v.data.subarray(v.off, v.off + x.numel));
}

/** Gather [size, R, w] from the ranks, then lay rank r's block at columns r·w of out [R, W]. */
export function cpuAllGatherCols(comm: HostComm | null, out: Tensor, x: Tensor): void {
  if (!comm || comm.size === 1) return refAllGatherCols(out, x);
  const [R, W, w] = checkGatherCols(out, x, comm.size);
  const s = f32Data(x), o = f32Data(out);
  const all = new Float32Array(comm.size * R * w);
  comm.allGather(all, s.data.subarray(s.off, s.off + R * w));
  for (let k = 0; k < comm.size; k++)
    for (let r = 0; r < R; r++) {
      const n = Math.min(w, W - k * w);
      if (n <= 0) continue;
      o.data.set(all.subarray((k * R + r) * w, (k * R + r) * w + n), o.off + r * W + k * w);
    }
}
