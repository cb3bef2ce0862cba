/**
 * Tensor handle: contiguous row-major data owned by a backend, with row-range views over dim 0.
 * The handle never allocates; backends create tensors over their storage.
 */
import { assert } from '../util/assert.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../util/numeric.js';

export type Dtype = 'f64' | 'f32' | 'bf16' | 'f16' | 'i32';

export type HostArray = Float64Array | Float32Array | Uint16Array | Int32Array;

/** Where a tensor's bytes live. Host storage is a typed array of the dtype's element type. */
export type Storage =
  | { readonly kind: 'host'; readonly data: HostArray }
  | { readonly kind: 'device'; readonly ptr: bigint; readonly bytes: number };

export const dtypeBytes: Record<Dtype, number> = { f64: 8, f32: 4, bf16: 2, f16: 2, i32: 4 };

export class Tensor {
  readonly numel: number;

  constructor(
    readonly dtype: Dtype,
    readonly shape: readonly number[],
    readonly storage: Storage,
    /** Element offset of this view into storage. */
    readonly offset = 0,
  ) {
    let n = 1;
    for (const d of shape) {
      assert(Number.isInteger(d) && d >= 0, () => `bad tensor dim ${d} in [${shape.join(', ')}]`);
      n *= d;
    }
    this.numel = n;
    if (storage.kind === 'host') {
      assert(offset + n <= storage.data.length, () => `view [${shape.join(', ')}] at ${offset} overruns storage of ${storage.data.length}`);
    }
  }

  /** Elements per index of dim 0. */
  get rowSize(): number {
    return this.shape.length === 0 ? 1 : this.numel / Math.max(1, this.shape[0]);
  }

  /** View of rows [start, start+count) of dim 0 (no copy). */
  rows(start: number, count: number): Tensor {
    assert(this.shape.length >= 1, 'rows() on a scalar');
    assert(start >= 0 && count >= 0 && start + count <= this.shape[0], () => `rows(${start}, ${count}) outside dim 0 of [${this.shape.join(', ')}]`);
    const rs = this.rowSize;
    return new Tensor(this.dtype, [count, ...this.shape.slice(1)], this.storage, this.offset + start * rs);
  }

  /** Same elements, another shape (contiguous, so always valid when numel matches). */
  reshape(shape: readonly number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    assert(n === this.numel, () => `reshape [${this.shape.join(', ')}] -> [${shape.join(', ')}]`);
    return new Tensor(this.dtype, shape, this.storage, this.offset);
  }

  /**
   * View of the first numel(shape) elements under a new shape: scratch buffers are allocated at
   * their largest use and viewed at the size of the current one.
   */
  prefix(shape: readonly number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    assert(n <= this.numel, () => `prefix [${shape.join(', ')}] larger than ${this}`);
    return new Tensor(this.dtype, shape, this.storage, this.offset);
  }

  toString(): string {
    return `Tensor<${this.dtype}>[${this.shape.join(', ')}]`;
  }
}

export function shapeEq(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Assert a tensor has the given shape (-1 = any). Names the tensor in the message. */
export function checkShape(t: Tensor, shape: readonly number[], name: string): void {
  const ok = t.shape.length === shape.length && shape.every((d, i) => d === -1 || d === t.shape[i]);
  assert(ok, () => `${name}: expected shape [${shape.join(', ')}], found [${t.shape.join(', ')}]`);
}

/** Host typed array of a tensor plus its element offset (throws for device tensors). */
export function hostView(t: Tensor): { data: HostArray; off: number } {
  assert(t.storage.kind === 'host', () => `${t} is not in host memory`);
  return { data: t.storage.data, off: t.offset };
}

/** Float32 data of an f32 host tensor. */
export function f32Data(t: Tensor): { data: Float32Array; off: number } {
  assert(t.dtype === 'f32' && t.storage.kind === 'host', () => `expected a host f32 tensor, found ${t}`);
  return { data: t.storage.data as Float32Array, off: t.offset };
}

/** Copy any host tensor's values out as float64 (slow path for references and tests). */
export function toF64(t: Tensor): Float64Array {
  const { data, off } = hostView(t);
  const out = new Float64Array(t.numel);
  if (t.dtype === 'bf16') for (let i = 0; i < out.length; i++) out[i] = bf16ToF32(data[off + i]);
  else if (t.dtype === 'f16') for (let i = 0; i < out.length; i++) out[i] = f16ToF32(data[off + i]);
  else for (let i = 0; i < out.length; i++) out[i] = data[off + i];
  return out;
}

/** Write float64 values into a host tensor, rounding to its dtype. */
export function fromF64(t: Tensor, src: ArrayLike<number>): void {
  assert(src.length === t.numel, () => `fromF64: ${src.length} values for ${t}`);
  const { data, off } = hostView(t);
  if (t.dtype === 'bf16') for (let i = 0; i < src.length; i++) data[off + i] = f32ToBf16(src[i]);
  else if (t.dtype === 'f16') for (let i = 0; i < src.length; i++) data[off + i] = f32ToF16(src[i]);
  else for (let i = 0; i < src.length; i++) data[off + i] = src[i];
}

export function hostArrayFor(dtype: Dtype, n: number, shared: boolean): HostArray {
  const bytes = n * dtypeBytes[dtype];
  const buf = shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
  switch (dtype) {
    case 'f64':
      return new Float64Array(buf);
    case 'f32':
      return new Float32Array(buf);
    case 'bf16':
    case 'f16':
      return new Uint16Array(buf);
    case 'i32':
      return new Int32Array(buf);
  }
}

/** A standalone host tensor (tests, references); backends allocate their own. */
export function hostTensor(dtype: Dtype, shape: readonly number[], values?: ArrayLike<number>): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = new Tensor(dtype, shape, { kind: 'host', data: hostArrayFor(dtype, n, false) });
  if (values) fromF64(t, values);
  return t;
}
