import { matmulRange } from '../../ops/matmul/cpu.js';
import type { WorkerJob } from './worker-job.js';

/** Per-thread scratch owned by the worker loop (one widened bf16 weight row), grown on demand. */
export interface JobScratch {
  row: Float32Array;
}

export function runJob(job: WorkerJob, scratch: JobScratch): void {
  switch (job.kind) {
    case 'noop':
      return;
    case 'matmul':
      if (scratch.row.length < job.args.K) scratch.row = new Float32Array(job.args.K);
      matmulRange(job.args, job.n0, job.n1, scratch.row);
      return;
  }
}
