/** Timing on the GPU for the bench drivers: CUDA events around a callback on one stream. */
import type { CudaDriver, Handle } from '../src/backend/cuda/driver.js';

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** Median ms of `reps` runs of f after `warm` unrecorded ones, each bracketed by events on `stream`. */
export function eventTimer(d: CudaDriver, stream: Handle): (f: () => void, reps: number, warm?: number) => number {
  const e0 = d.eventCreate(), e1 = d.eventCreate();
  return (f, reps, warm = 2) => {
    const ms: number[] = [];
    for (let i = 0; i < reps + warm; i++) {
      d.eventRecord(e0, stream);
      f();
      d.eventRecord(e1, stream);
      d.eventSync(e1);
      if (i >= warm) ms.push(d.eventElapsed(e0, e1));
    }
    return median(ms);
  };
}
