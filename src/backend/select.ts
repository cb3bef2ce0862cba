/** Backend choice (used by the CLI and the library's loadModel; the model code never picks one). */
import type { Backend, MatmulInputs } from './backend.js';
import { CpuBackend } from './cpu/cpu-backend.js';
import { CudaBackend } from './cuda/cuda-backend.js';
import { InvalidRequestError } from '../util/errors.js';

export type DeviceName = 'cpu' | 'cuda' | 'auto';

export interface SelectOptions {
  readonly threads?: number;
  /** `--load-format dummy`: the CUDA backend makes the weights (seeded); other devices refuse. */
  readonly dummySeed?: number;
  /** Weight-matmul inputs (backend.ts MatmulInputs; default defaultMatmulInputs of the device). */
  readonly matmulInputs?: MatmulInputs;
}

/**
 * The engine's weight-matmul inputs when none are asked for: bf16 on CUDA (bf16 activations with
 * fp32 accumulation at the GEMMs, what the model's bf16 engines compute, at half the tensor-core
 * work of f32-faithful split GEMMs), f32 on the CPU (the reference; bf16 there is a test mode that
 * rounds where the GPU rounds). `--matmul-inputs f32` keeps a GPU f32-faithful.
 */
export function defaultMatmulInputs(device: 'cpu' | 'cuda'): MatmulInputs {
  return device === 'cuda' ? 'bf16' : 'f32';
}

export function selectBackend(device: DeviceName, opts: SelectOptions = {}): Backend {
  switch (device) {
    case 'cpu':
      if (opts.dummySeed !== undefined) throw new InvalidRequestError('--load-format dummy needs --device cuda (the weights are made on the GPU)', 'load_format');
      return new CpuBackend({ threads: opts.threads, matmulInputs: opts.matmulInputs ?? defaultMatmulInputs('cpu') });
    case 'auto':
      if (opts.dummySeed !== undefined) return selectBackend('cuda', opts);
      // A usable GPU when there is one, else the CPU; 'cuda' (below) never falls back.
      try {
        return new CudaBackend({ matmulInputs: opts.matmulInputs ?? defaultMatmulInputs('cuda') });
      } catch {
        return new CpuBackend({ threads: opts.threads, matmulInputs: opts.matmulInputs ?? defaultMatmulInputs('cpu') });
      }
    case 'cuda':
      try {
        return new CudaBackend({ dummyWeights: opts.dummySeed !== undefined ? { seed: opts.dummySeed } : undefined, matmulInputs: opts.matmulInputs ?? defaultMatmulInputs('cuda') });
      } catch (e) {
        // Fail at start, naming what is missing (library, device), never fall back silently.
        throw new InvalidRequestError(`--device cuda: no usable CUDA GPU: ${(e as Error).message}`, 'device');
      }
    default:
      throw new InvalidRequestError(`unknown device "${String(device)}" (expected cpu, cuda or auto)`, 'device');
  }
}
