import { matmulRange } from '../../ops/matmul/cpu.js';
import type { WorkerJob } from './worker-job.js';

/** Per-thread scratch, grown on demand (one row of widened bf16 weights). */
let scratch = new Float32Array(1024);

export function runJob(job: WorkerJob): void {
  switch (job.kind) {
    case 'noop':
      return;
    case 'matmul':
      if (scratch.length < job.args.K) scratch = new Float32Array(job.args.K);
      matmulRange(job.args, job.n0, job.n1, scratch);
      return;
  }
}
