/** Backend choice for the CLI (the only place that picks one). */
import type { Backend } from './backend.js';
import { CpuBackend } from './cpu/cpu-backend.js';
import { InvalidRequestError } from '../util/errors.js';

export type DeviceName = 'cpu' | 'cuda' | 'auto';

export interface SelectOptions {
  readonly threads?: number;
}

export function selectBackend(device: DeviceName, opts: SelectOptions = {}): Backend {
  switch (device) {
    case 'cpu':
    case 'auto':
      return new CpuBackend({ threads: opts.threads });
    case 'cuda':
      // The CUDA backend is its own issue; until it lands, say so instead of silently using the CPU.
      throw new InvalidRequestError('--device cuda: this build has no CUDA backend yet; use --device cpu', 'device');
    default:
      throw new InvalidRequestError(`unknown device "${String(device)}" (expected cpu, cuda or auto)`, 'device');
  }
}
