/** Shared helpers for op conformance tests: seeded random tensors on the reference and CPU backends. */
import { Tensor, fromF64, hostArrayFor, hostTensor, toF64, type Dtype } from '../tensor/tensor.js';
import { Prng } from '../util/prng.js';

export function randn(rng: Prng, n: number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

/** Seeded normals already representable in f32, so the reference and the CPU see identical inputs. */
export function randf(rng: Prng, n: number, scale = 1): Float64Array {
  return randn(rng, n, scale).map(Math.fround);
}

/** One op input or output on both backends. */
export type Pair = { ref: Tensor; cpu: Tensor };

/** The same values as an f64 reference tensor and an f32 (SharedArrayBuffer-backed) CPU tensor. */
export function pair(shape: readonly number[], values: ArrayLike<number>, cpuDtype: Dtype = 'f32'): Pair {
  const ref = hostTensor('f64', shape, values);
  const cpu = sharedTensor(cpuDtype, shape, values);
  // Low-precision CPU weights: the reference must see exactly the rounded values.
  if (cpuDtype !== 'f32') return { ref: hostTensor('f64', shape, toF64(cpu)), cpu };
  return { ref, cpu };
}

export function sharedTensor(dtype: Dtype, shape: readonly number[], values?: ArrayLike<number>): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = new Tensor(dtype, shape, { kind: 'host', data: hostArrayFor(dtype, n, true) });
  if (values) fromF64(t, values);
  return t;
}
