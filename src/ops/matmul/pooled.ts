/** Multi-threaded CPU matmul: splits output columns across the pool when the work is large enough. */
import { f32Data, hostView, type Tensor, checkShape } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import type { MatmulArgs } from './cpu.js';
import { matmulRange } from './cpu.js';

/** What the kernel needs from a thread pool (kept structural so ops do not import backends). */
export interface SliceRunner {
  readonly threads: number;
  run(jobs: { kind: 'matmul'; args: MatmulArgs; n0: number; n1: number }[], local: (job: { kind: 'matmul'; args: MatmulArgs; n0: number; n1: number }) => void): void;
}

/** Below this many multiply-adds a single thread wins (wake-up costs ~10-20 µs). */
const PARALLEL_MIN_MACS = 1 << 17;

export function cpuMatmul(pool: SliceRunner | null, scratch: { row: Float32Array }, out: Tensor, x: Tensor, w: Tensor, bias: Tensor | null): void {
  const [T, K] = x.shape;
  const N = w.shape[0];
  checkShape(w, [N, K], 'matmul w');
  checkShape(out, [T, N], 'matmul out');
  assert(w.dtype === 'f32' || w.dtype === 'bf16', () => `matmul weight dtype ${w.dtype} not supported on cpu`);
  const o = f32Data(out);
  const xv = f32Data(x);
  const wv = hostView(w);
  const bv = bias ? f32Data(bias) : null;
  const args: MatmulArgs = {
    out: o.data,
    outOff: o.off,
    x: xv.data,
    xOff: xv.off,
    w: wv.data as Float32Array | Uint16Array,
    wOff: wv.off,
    wBf16: w.dtype === 'bf16',
    bias: bv ? bv.data : null,
    biasOff: bv ? bv.off : 0,
    T,
    N,
    K,
  };
  if (scratch.row.length < K) scratch.row = new Float32Array(K);
  const threads = pool ? Math.min(pool.threads, Math.floor(N / 8)) : 1;
  if (!pool || threads <= 1 || T * N * K < PARALLEL_MIN_MACS) {
    matmulRange(args, 0, N, scratch.row);
    return;
  }
  for (const arr of [args.out, args.x, args.w, args.bias])
    assert(arr === null || arr.buffer instanceof SharedArrayBuffer, 'pooled matmul needs SharedArrayBuffer-backed tensors');
  const jobs = [];
  for (let i = 0; i < threads; i++) {
    const n0 = Math.floor((N * i) / threads);
    const n1 = Math.floor((N * (i + 1)) / threads);
    jobs.push({ kind: 'matmul' as const, args, n0, n1 });
  }
  pool.run(jobs, (job) => matmulRange(job.args, job.n0, job.n1, scratch.row));
}
