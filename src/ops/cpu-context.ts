import type { Tensor } from '../tensor/tensor.js';

/** What CPU kernels that compose other kernels get from the CPU backend. */
export interface CpuOpContext {
  /** The backend's (multi-threaded) matmul. */
  matmul(out: Tensor, x: Tensor, w: Tensor, bias: Tensor | null): void;
  /**
   * An f32 scratch tensor kept by the backend under `key` and grown on demand (SharedArrayBuffer
   * backed, so it may be passed to matmul). Contents are undefined; valid until the next call
   * with the same key.
   */
  scratch(key: string, shape: readonly number[]): Tensor;
  /** MatmulInputs 'bf16': ops that run weight matmuls through `matmul` round those inputs first. */
  readonly bf16Inputs: boolean;
}
