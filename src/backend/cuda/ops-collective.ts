/**
 * Tensor-parallel collectives on the backend's stream through NCCL (nccl.ts); one rank: local.
 * Inside a decode-graph capture they are recorded like launches (every rank captures the same
 * sequence, step-graph.ts); in a staging pass (mode 'fill') they are skipped like launches.
 */
import type { Tensor } from '../../tensor/tensor.js';
import { checkGatherCols } from '../../ops/collective/collective.js';
import type { CudaContext } from './context.js';
import type { Handle } from './driver.js';
import type { Nccl } from './nccl.js';
import { f32Act, strideGrid } from './ops-basic.js';

/** This process's place in a tensor-parallel group and its NCCL communicator. */
export interface CudaTp {
  readonly nccl: Nccl;
  readonly comm: Handle;
  readonly rank: number;
  readonly size: number;
}

export function cudaAllReduceSum(c: CudaContext, tp: CudaTp | null, x: Tensor): void {
  if (!tp || tp.size === 1) return;
  f32Act(x, 'allReduceSum');
  c.noteWrite();
  if (c.mode === 'fill') return;
  c.timed('nccl_all_reduce', () => tp.nccl.allReduceSumF32(c.ptr(x), x.numel, tp.comm, c.stream));
}

export function cudaAllGatherCols(c: CudaContext, tp: CudaTp | null, out: Tensor, x: Tensor): void {
  f32Act(x, 'allGatherCols');
  const size = tp?.size ?? 1;
  const [R, W, w] = checkGatherCols(out, x, size);
  let src = c.ptr(x);
  if (tp && size > 1) {
    src = c.scratch('tp-gather', size * R * w * 4);
    c.noteWrite();
    if (c.mode !== 'fill') c.timed('nccl_all_gather', () => tp.nccl.allGatherF32(c.ptr(x), src, R * w, tp.comm, c.stream));
  }
  const k = c.kernel('src/backend/cuda/collective.cu', 'gather_cols_f32', 'pplll');
  c.launch(k, strideGrid(R * W), 256, 0, [c.ptr(out), src, R, W, w]);
}
