/** Messages the CPU thread pool sends to its workers (structured-cloned; arrays over SharedArrayBuffers). */
import type { MatmulArgs } from '../../ops/matmul/cpu.js';

export type WorkerJob =
  | { kind: 'noop' }
  | { kind: 'matmul'; args: MatmulArgs; n0: number; n1: number };
