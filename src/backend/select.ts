/** Backend choice (used by the CLI and the library's loadModel; the model code never picks one). */
import type { Backend } from './backend.js';
import { CpuBackend } from './cpu/cpu-backend.js';
import { CudaBackend } from './cuda/cuda-backend.js';
import { InvalidRequestError } from '../util/errors.js';

export type DeviceName = 'cpu' | 'cuda' | 'auto';

export interface SelectOptions {
  readonly threads?: number;
}

export function selectBackend(device: DeviceName, opts: SelectOptions = {}): Backend {
  switch (device) {
    case 'cpu':
      return new CpuBackend({ threads: opts.threads });
    case 'auto':
      // A usable GPU when there is one, else the CPU; 'cuda' (below) never falls back.
      try {
        return new CudaBackend();
      } catch {
        return new CpuBackend({ threads: opts.threads });
      }
    case 'cuda':
      try {
        return new CudaBackend();
      } catch (e) {
        // Fail at start, naming what is missing (library, device), never fall back silently.
        throw new InvalidRequestError(`--device cuda: no usable CUDA GPU: ${(e as Error).message}`, 'device');
      }
    default:
      throw new InvalidRequestError(`unknown device "${String(device)}" (expected cpu, cuda or auto)`, 'device');
  }
}
