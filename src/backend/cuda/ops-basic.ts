/**
 * Launchers of the row-wise ops: matmul, embedding, the RMSNorm family, rope, elementwise, gather,
 * group norm gate. Each checks shapes on the host like the CPU op, then enqueues its kernel
 * (src/ops/<op>/<op>.cu) on the context's stream. Activations are f32 (see cuda-backend.ts).
 */
import type { RopeSpec, VocabPiece } from '../backend.js';
import { checkShape, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { checkIds, pieceIds } from '../../ops/embedding/embedding.js';
import { checkGather } from '../../ops/elementwise/elementwise.js';
import { checkGroupNormGate } from '../../ops/group-norm-gate/group-norm-gate.js';
import { checkRope } from '../../ops/rope/rope.js';
import type { CudaContext } from './context.js';
import type { ArgHint } from './step-args.js';

/** The GEMV kernels' largest step (matmul_gemv2_*_t1..t8); CudaContext.gemvRows() picks how many rows use them. */
export const GEMV_MAX_T = 8;

const F = {
  matmul: 'src/ops/matmul/matmul.cu',
  embedding: 'src/ops/embedding/embedding.cu',
  rmsnorm: 'src/ops/rmsnorm/rmsnorm.cu',
  rope: 'src/ops/rope/rope.cu',
  elementwise: 'src/ops/elementwise/elementwise.cu',
  gng: 'src/ops/group-norm-gate/group-norm-gate.cu',
} as const;

/** Threads for a row of `width` elements: a multiple of 32, at most 256. */
export function rowThreads(width: number): number {
  return Math.min(256, Math.max(32, Math.ceil(width / 32) * 32));
}

/** Blocks of 256 threads for a grid-stride loop over n elements. */
export function strideGrid(n: number): [number, number, number] {
  return [Math.max(1, Math.min(Math.ceil(n / 256), 8192)), 1, 1];
}

export function f32Act(t: Tensor, what: string): void {
  assert(t.dtype === 'f32', () => `${what}: the CUDA backend keeps activations in f32, found ${t}`);
}

export function cudaMatmul(c: CudaContext, out: Tensor, x: Tensor, w: Tensor, bias: Tensor | null): void {
  const [T, K] = x.shape;
  const N = w.shape[0];
  checkShape(w, [N, K], 'matmul w');
  checkShape(out, [T, N], 'matmul out');
  if (bias) checkShape(bias, [N], 'matmul bias');
  f32Act(x, 'matmul x');
  f32Act(out, 'matmul out');
  assert(w.dtype === 'bf16' || w.dtype === 'f32', () => `matmul: weight dtype ${w.dtype}`);
  if (T === 0 || N === 0) return;
  const pb = bias ? c.ptr(bias) : 0n;
  const gemm = T > c.gemvRows() && K > 0;
  const V = w.dtype === 'bf16' ? 8 : 4; // elements per 16-byte load
  const gemv2 = !gemm && T <= 8 && K % V === 0 && c.ptr(w) % 16n === 0n && c.ptr(x) % 16n === 0n;
  // bf16 inputs: the bf16-weight GEMM casts x itself; the v2 GEMV rounds x as it reads it at T = 1
  // and reads a rounded copy at T ≥ 2, made once for consecutive GEMVs of the same x (castMemo; at
  // T = 8 rounding each x value once per weight row made the GEMV ALU-bound: batch-8 decode steps
  // took 11.5 ms against 9.5 with f32 inputs); the f32-weight GEMM and the v1 GEMV read a rounded copy.
  const rounded = (): bigint => (c.bf16Inputs ? roundedCopy(c, 'matmul-xr', c.ptr(x), T * K) : c.ptr(x));
  // bf16 inputs and an f32 weight with a bf16 twin (a bf16 checkpoint's router): the bf16 GEMM of
  // the twin forms the same products as the f32 GEMM of the rounded input, on tensor cores.
  const twin = gemm && w.dtype === 'f32' && c.bf16Inputs ? c.bf16Twin(w) : null;
  if (gemm) {
    let ok: boolean, cast: string | null = null;
    // x as bf16 (hi, and lo when split) in the matmul-x scratch, converted once for consecutive
    // matmuls of the same x (CudaContext.castMemo).
    const castX = (split: boolean): { hi: bigint; lo: bigint } => {
      cast = `${split ? 'split' : 'x'}:${c.ptr(x)}:${T * K}`;
      const hi = c.scratch('matmul-xhi', T * K * 2), lo = split ? c.scratch('matmul-xlo', T * K * 2) : 0n;
      if (c.castMemo?.key === cast && c.castMemo.at === c.writes) return { hi, lo };
      if (split) c.launch(c.kernel(F.matmul, 'matmul_castsplit_bf16', 'pppl'), strideGrid(T * K), 256, 0, [hi, lo, c.ptr(x), T * K]);
      else c.launch(c.kernel(F.matmul, 'matmul_castx_bf16', 'ppl'), strideGrid(T * K), 256, 0, [hi, c.ptr(x), T * K]);
      return { hi, lo };
    };
    if (twin !== null) ok = c.gemm('bf16', c.ptr(out), twin, castX(false).hi, T, N, K);
    else if (w.dtype === 'f32') ok = c.gemm('f32', c.ptr(out), c.ptr(w), rounded(), T, N, K);
    else if (c.gemmSplit) {
      // cuBLASLt wants A and B in one dtype: x = hi + lo in bf16, two GEMMs accumulate in fp32.
      const { hi, lo } = castX(true);
      ok = c.gemm('bf16', c.ptr(out), c.ptr(w), hi, T, N, K) && c.gemm('bf16', c.ptr(out), c.ptr(w), lo, T, N, K, 1);
    } else ok = c.gemm('bf16', c.ptr(out), c.ptr(w), castX(false).hi, T, N, K);
    if (ok) {
      if (bias) c.launch(c.kernel(F.matmul, 'matmul_bias_f32', 'ppli'), strideGrid(T * N), 256, 0, [c.ptr(out), pb, T, N]);
      // Nothing since the conversion wrote x's memory unless out overlaps it.
      c.castMemo = cast !== null && apart(c, out, x, T, N, K) ? { key: cast, at: c.writes } : null;
      return;
    }
  }
  if (gemv2) {
    // Split K over wpr warps when N rows alone give under ~32 warps per SM, keeping ≥ 2 loads a lane.
    let wpr = 1;
    while (wpr < 8 && N * wpr * 2 <= 32 * c.info.sms && (K / V) / (64 * wpr * 2) >= 1) wpr *= 2;
    const copy = c.bf16Inputs && T > 1, key = copy ? `round:${c.ptr(x)}:${T * K}` : null;
    let xr = c.ptr(x);
    if (copy) xr = c.castMemo?.key === key && c.castMemo.at === c.writes ? c.scratch('matmul-xr', T * K * 4) : roundedCopy(c, 'matmul-xr', c.ptr(x), T * K);
    const k2 = c.kernel(F.matmul, `matmul_gemv2_${w.dtype}_t${T}`, 'ppppiiii');
    c.launch(k2, [Math.ceil((N * wpr) / 8), 1, 1], 256, 0, [c.ptr(out), xr, c.ptr(w), pb, N, K, wpr, c.bf16Inputs && !copy ? 1 : 0]);
    c.castMemo = key !== null && apart(c, out, x, T, N, K) ? { key, at: c.writes } : null;
    return;
  }
  const k = c.kernel(F.matmul, `matmul_gemv_${w.dtype}`, 'ppppiii');
  c.launch(k, [Math.ceil(N / 8), 1, 1], 256, 0, [c.ptr(out), rounded(), c.ptr(w), pb, T, N, K]);
}

/** Whether out [T, N] and x [T, K] (f32) share no byte. */
function apart(c: CudaContext, out: Tensor, x: Tensor, T: number, N: number, K: number): boolean {
  const o0 = c.ptr(out), x0 = c.ptr(x);
  return o0 + BigInt(T * N * 4) <= x0 || x0 + BigInt(T * K * 4) <= o0;
}

/** n f32 values at src rounded to bf16 values into the scratch `key` (or in place when key is null). */
export function roundedCopy(c: CudaContext, key: string | null, src: bigint, n: number): bigint {
  const dst = key === null ? src : c.scratch(key, n * 4);
  c.launch(c.kernel(F.matmul, 'matmul_round_f32', 'ppl'), strideGrid(n), 256, 0, [dst, src, n]);
  return dst;
}

export function cudaEmbedding(c: CudaContext, out: Tensor, table: Tensor, global: Int32Array, piece?: VocabPiece): void {
  const [V, C] = table.shape;
  // A graph replay writes the rows from the step's global ids (step-args.ts), so the hint says how.
  const ids = piece ? pieceIds(global, piece) : global;
  const hint: ArgHint = piece ? { kind: 'vocabPiece', ...piece } : 'ids';
  checkShape(out, [ids.length, C], 'embedding out');
  f32Act(out, 'embedding out');
  checkIds(ids, V);
  if (ids.length === 0) return;
  assert(table.dtype === 'bf16' || table.dtype === 'f32', () => `embedding: table dtype ${table.dtype}`);
  const k = c.kernel(F.embedding, `embedding_gather_${table.dtype}`, 'pppi');
  c.launch(k, [ids.length, 1, 1], rowThreads(C), 0, [c.ptr(out), c.ptr(table), c.hostArg('embedding-ids', ids, hint), C]);
}

/** Float4 row kernels apply: width % 4 == 0 and every row base 16-byte aligned. */
function vec4(c: CudaContext, width: number, ...ts: Tensor[]): boolean {
  return width % 4 === 0 && ts.every((t) => c.ptr(t) % 16n === 0n);
}

/** One float4 per thread where the row allows (≤ 1024 threads), a multiple of 32. */
function v4Threads(width: number): number {
  return Math.min(1024, Math.max(32, Math.ceil(width / 4 / 32) * 32));
}

function normRows(c: CudaContext, out: Tensor, x: Tensor, w: Tensor, width: number, eps: number): void {
  f32Act(x, 'rmsnorm x');
  f32Act(out, 'rmsnorm out');
  f32Act(w, 'rmsnorm w');
  const rows = x.numel / width;
  if (rows === 0) return;
  if (vec4(c, width, out, x, w)) {
    c.launch(c.kernel(F.rmsnorm, 'rmsnorm_rows_v4_f32', 'pppif'), [rows, 1, 1], v4Threads(width), 0, [c.ptr(out), c.ptr(x), c.ptr(w), width, eps]);
    return;
  }
  c.launch(c.kernel(F.rmsnorm, 'rmsnorm_rows_f32', 'pppif'), [rows, 1, 1], rowThreads(width), 0, [c.ptr(out), c.ptr(x), c.ptr(w), width, eps]);
}

export function cudaRmsnorm(c: CudaContext, out: Tensor, x: Tensor, w: Tensor, eps: number): void {
  const C = w.shape[0];
  checkShape(x, [-1, C], 'rmsnorm x');
  checkShape(out, x.shape, 'rmsnorm out');
  normRows(c, out, x, w, C, eps);
}

export function cudaHeadRmsnorm(c: CudaContext, out: Tensor, x: Tensor, w: Tensor, headDim: number, eps: number): void {
  checkShape(w, [headDim], 'headRmsnorm w');
  checkShape(out, x.shape, 'headRmsnorm out');
  assert(x.numel % headDim === 0, () => `headRmsnorm: ${x} is not made of ${headDim}-wide heads`);
  normRows(c, out, x, w, headDim, eps);
}

export function cudaAddRmsnorm(c: CudaContext, out: Tensor, residual: Tensor, x: Tensor, w: Tensor, eps: number): void {
  const C = w.shape[0];
  checkShape(residual, [-1, C], 'addRmsnorm residual');
  checkShape(x, residual.shape, 'addRmsnorm x');
  checkShape(out, residual.shape, 'addRmsnorm out');
  for (const [t, n] of [[out, 'out'], [residual, 'residual'], [x, 'x'], [w, 'w']] as const) f32Act(t, `addRmsnorm ${n}`);
  const rows = residual.shape[0];
  if (rows === 0) return;
  const po = c.ptr(out), pr = c.ptr(residual), px = c.ptr(x);
  if (vec4(c, C, out, residual, x, w) && po !== pr && po !== px) {
    c.launch(c.kernel(F.rmsnorm, 'rmsnorm_add_v4_f32', 'ppppif'), [rows, 1, 1], v4Threads(C), 0, [po, pr, px, c.ptr(w), C, eps]);
    return;
  }
  c.launch(c.kernel(F.rmsnorm, 'rmsnorm_add_f32', 'ppppif'), [rows, 1, 1], rowThreads(C), 0, [c.ptr(out), c.ptr(residual), c.ptr(x), c.ptr(w), C, eps]);
}

export function cudaRope(c: CudaContext, x: Tensor, positions: Int32Array, s: RopeSpec): void {
  checkRope(x, positions, s);
  f32Act(x, 'rope x');
  const T = positions.length;
  if (T === 0 || s.rotaryDim === 0) return;
  const k = c.kernel(F.rope, 'rope_rotate_f32', 'pppiiiiii');
  const args = [c.ptr(x), c.hostArg('rope-positions', positions, 'positions'), c.hostArg('rope-invfreq', s.invFreq, 'const'), x.shape[1], s.nHeads, s.headStride, s.offset, s.rotaryDim, s.style === 'gptj' ? 1 : 0];
  c.launch(k, [T, 1, 1], rowThreads((s.nHeads * s.rotaryDim) / 2), 0, args);
}

export function cudaSilu(c: CudaContext, out: Tensor, x: Tensor): void {
  checkShape(out, x.shape, 'silu out');
  f32Act(x, 'silu x');
  f32Act(out, 'silu out');
  if (x.numel > 0) c.launch(c.kernel(F.elementwise, 'elementwise_silu_f32', 'ppl'), strideGrid(x.numel), 256, 0, [c.ptr(out), c.ptr(x), x.numel]);
}

export function cudaSiluMul(c: CudaContext, out: Tensor, gu: Tensor): void {
  const [T, F2] = gu.shape;
  const Fw = F2 / 2;
  checkShape(out, [T, Fw], 'siluMul out');
  f32Act(gu, 'siluMul gu');
  f32Act(out, 'siluMul out');
  if (T * Fw > 0) c.launch(c.kernel(F.elementwise, 'elementwise_silumul_f32', 'ppli'), strideGrid(T * Fw), 256, 0, [c.ptr(out), c.ptr(gu), T, Fw]);
}

export function cudaAdd(c: CudaContext, out: Tensor, a: Tensor, b: Tensor): void {
  checkShape(b, a.shape, 'add b');
  checkShape(out, a.shape, 'add out');
  for (const t of [out, a, b]) f32Act(t, 'add');
  if (a.numel > 0) c.launch(c.kernel(F.elementwise, 'elementwise_add_f32', 'pppl'), strideGrid(a.numel), 256, 0, [c.ptr(out), c.ptr(a), c.ptr(b), a.numel]);
}

export function cudaGatherRows(c: CudaContext, out: Tensor, x: Tensor, idx: Int32Array): void {
  checkGather(out, x, idx);
  assert(out.dtype === x.dtype && (x.dtype === 'f32' || x.dtype === 'i32'), () => `gatherRows: ${x} → ${out} (4-byte dtypes only)`);
  const W = x.rowSize;
  if (idx.length * W === 0) return;
  const k = c.kernel(F.elementwise, 'elementwise_gather_b32', 'pppll');
  c.launch(k, strideGrid(idx.length * W), 256, 0, [c.ptr(out), c.ptr(x), c.hostArg('gather-idx', idx, 'sampleRows'), idx.length, W]);
}

export function cudaRoundBf16(c: CudaContext, x: Tensor): void {
  f32Act(x, 'roundBf16 x');
  if (x.numel > 0) c.launch(c.kernel(F.elementwise, 'elementwise_roundbf16_f32', 'pl'), strideGrid(x.numel), 256, 0, [c.ptr(x), x.numel]);
}

export function cudaGroupRmsnormGate(c: CudaContext, out: Tensor, x: Tensor, gate: Tensor, w: Tensor, groups: number, eps: number): void {
  const [T, C, G] = checkGroupNormGate(out, x, gate, w, groups);
  for (const t of [out, x, gate, w]) f32Act(t, 'groupRmsnormGate');
  if (T === 0) return;
  const k = c.kernel(F.gng, 'group_norm_gate_f32', 'ppppiif');
  c.launch(k, [groups, T, 1], rowThreads(G), 0, [c.ptr(out), c.ptr(x), c.ptr(gate), c.ptr(w), C, G, eps]);
}
