/**
 * Test helper of the GPU op suites (ops.gpu.test.ts, mla.gpu.test.ts): the same seeded values on a
 * CPU and a CUDA backend, GPU outputs poisoned with NaN first (an unwritten element fails), and a
 * CPU-vs-GPU check that reports NMSE and max-abs per case. The backends come from the suite's
 * before(), so they are read through `backends` when a helper runs.
 */
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Dtype, Tensor } from '../../tensor/tensor.js';
import { compare, fmtStats } from '../../util/compare.js';
import type { Prng } from '../../util/prng.js';
import type { CpuBackend } from '../cpu/cpu-backend.js';
import type { CudaBackend } from './cuda-backend.js';

/** f32 math on both sides: only accumulation order differs. */
export const TOL_F32 = 1e-8;

/** One tensor on each backend. */
export interface Pair {
  readonly c: Tensor;
  readonly g: Tensor;
}

export interface OpPairs {
  /** n normal draws × scale from the suite's generator. */
  randn(n: number, scale?: number): Float64Array;
  /** The same values on both backends. */
  both(shape: readonly number[], values: ArrayLike<number>, dtype?: Dtype): Pair;
  rand(shape: readonly number[], scale?: number, dtype?: Dtype): Pair;
  /** Output pair: zeros on the CPU, NaN on the GPU. */
  out(shape: readonly number[], dtype?: Dtype): Pair;
  /** GPU vs CPU: every element finite and NMSE ≤ tol (default TOL_F32), reported as a diagnostic. */
  check(t: TestContext, what: string, p: Pair, tol?: number): void;
}

export function opPairs(backends: () => { cpu: CpuBackend; gpu: CudaBackend }, rng: Prng): OpPairs {
  const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
  const randn = (n: number, scale = 1): Float64Array => Float64Array.from({ length: n }, () => rng.normal() * scale);
  const both = (shape: readonly number[], values: ArrayLike<number>, dtype: Dtype = 'f32'): Pair => {
    const { cpu, gpu } = backends();
    const c = cpu.alloc(dtype, shape);
    cpu.upload(c, values);
    const g = gpu.alloc(dtype, shape);
    gpu.upload(g, values);
    return { c, g };
  };
  return {
    randn,
    both,
    rand: (shape, scale = 1, dtype = 'f32') => both(shape, randn(numel(shape), scale), dtype),
    out: (shape, dtype = 'f32') => {
      const { cpu, gpu } = backends();
      const c = cpu.alloc(dtype, shape);
      const g = gpu.alloc(dtype, shape);
      if (dtype !== 'i32') gpu.upload(g, new Float64Array(numel(shape)).fill(NaN));
      return { c, g };
    },
    check: (t, what, p, tol = TOL_F32) => {
      const { cpu, gpu } = backends();
      const got = gpu.download(p.g);
      const want = cpu.download(p.c);
      const s = compare(got, want);
      t.diagnostic(`${what}: ${fmtStats(s)}`);
      assert.ok(got.every(Number.isFinite), `${what}: non-finite output (unwritten element?)`);
      assert.ok(s.nmse <= tol, `${what}: NMSE ${s.nmse.toExponential(2)} > ${tol} (${fmtStats(s)})`);
    },
  };
}
