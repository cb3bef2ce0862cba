/**
 * Routed-expert paths of the CUDA backend, by step size (bf16 expert weights with K % 8 == 0 and
 * 16-byte aligned rows; anything else keeps the v1 gathered kernels in ops-attention.ts):
 * - T ≤ 8 (decode): gathered GEMVs, gate and up rows streamed together, no host round trip;
 * - 8 < T < c.moeGemmMinT (small batched decode): pairs are sorted by expert on the device and cut
 *   into segments of ≤ 8 pairs, so each expert's rows are read once per segment, not per pair;
 * - T ≥ c.moeGemmMinT (batched decode from 64 rows, prefill), in passes of c.moeChunk tokens (each reads the experts' weights
 *   once): tokens permuted by expert, f32-faithful hi/lo split when
 *   c.moeSplit, then a weighted combine; c.moePrefill picks the GEMMs: 'cublas' one cuBLASLt call
 *   per expert (up, then down) on contiguous rows (sorted on the host), 'grouped' (default) one
 *   launch per projection of moe-grouped.cu over all experts (SiLU·mul in the gate/up epilogue),
 *   with the permutation and tile schedule built on the device (no host round trip).
 * Every output row is a fixed-order function of its own pair, so results do not depend on the path's
 * ordering (the batch-invariance tests rely on that).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { CudaContext } from './context.js';
import { roundedCopy, strideGrid } from './ops-basic.js';

const MOE = 'src/ops/moe/moe.cu';
const MOE_GG = 'src/ops/moe/moe-grouped.cu';
/**
 * Tile of moe-grouped.cu: 128 token rows × GG_BN weight rows (GG_BN / 2 features of gate + up),
 * GG_BN threads, 32-deep k steps in a 3-stage (split) or 4-stage (bf16) cp.async pipeline of 80-byte
 * rows: 90 / 80 KB of shared memory, two blocks an SM.
 */
const GG_BM = 128, GG_BN = 128;
const ggSmem = (split: boolean): number => (split ? 3 : 4) * ((split ? 2 : 1) * GG_BM + GG_BN) * 40 * 2;
/**
 * Hopper (sm_90a): the wgmma kernels of the same file, 128 token rows × 256 weight rows, 256
 * threads, 64-deep k steps of 128-byte swizzled rows, 3 (split) or 4 (bf16) stages: 192 KB + 1 KB.
 */
const GW_BN = 256;
const gwSmem = (split: boolean): number => (split ? 3 : 4) * ((split ? 2 : 1) * GG_BM + GW_BN) * 128 + 1024;
const SEG_MAX = 8;

interface Sorted {
  pairs: Int32Array; // pair ids p = t·K + k, grouped by expert (stable)
  inv: Int32Array; // position of pair p in `pairs`
  start: Int32Array; // [E + 1] offsets per expert
}

function sortByExpert(ids: Int32Array, E: number): Sorted {
  const n = ids.length;
  const start = new Int32Array(E + 1);
  for (let p = 0; p < n; p++) start[ids[p] + 1]++;
  for (let e = 0; e < E; e++) start[e + 1] += start[e];
  const at = start.slice(0, E);
  const pairs = new Int32Array(n), inv = new Int32Array(n);
  for (let p = 0; p < n; p++) {
    const i = at[ids[p]]++;
    pairs[i] = p;
    inv[p] = i;
  }
  return { pairs, inv, start };
}

function readIds(c: CudaContext, ids: Tensor, n: number): Int32Array {
  const h = new Int32Array(n);
  c.driver.dtoh(h, c.ptr(ids), c.stream); // waits for the router on the stream
  return h;
}

/** True when it ran the experts; false when the shapes need the v1 kernels. */
export function moeExpertsFast(c: CudaContext, out: Tensor, x: Tensor, ids: Tensor, weights: Tensor, w13: Tensor, w2: Tensor, Fw: number): boolean {
  const [T, C] = x.shape;
  const K = ids.shape[1];
  const E = w13.shape[0] / (2 * Fw);
  const ok = w13.dtype === 'bf16' && C % 8 === 0 && Fw % 8 === 0 && [w13, w2, x].every((t) => c.ptr(t) % 16n === 0n);
  if (!ok) return false;
  if (T <= 8) {
    const h = c.scratch('moe-h', T * K * Fw * 4), y = c.scratch('moe-y', T * K * C * 4);
    c.launch(c.kernel(MOE, 'moe_up2_bf16', 'ppppiii'), [Math.ceil(Fw / 8), T * K, 1], 256, 0, [h, c.ptr(x), c.ptr(ids), c.ptr(w13), K, C, Fw]);
    if (c.bf16Inputs) roundedCopy(c, null, h, T * K * Fw);
    c.launch(c.kernel(MOE, 'moe_down2_bf16', 'ppppii'), [Math.ceil(C / 8), T * K, 1], 256, 0, [y, h, c.ptr(ids), c.ptr(w2), C, Fw]);
    c.launch(c.kernel(MOE, 'moe_combine_f32', 'ppplii'), strideGrid(T * C), 256, 0, [c.ptr(out), y, c.ptr(weights), T, K, C]);
    return true;
  }
  // The per-expert cuBLASLt mode sorts on the host, which a captured decode graph cannot: segmented there.
  if (T < c.moeGemmMinT || (c.moePrefill === 'cublas' && c.mode !== 'eager')) {
    segmented(c, out, x, ids, weights, w13, w2, E, K, C, Fw);
    return true;
  }
  for (let t0 = 0; t0 < T; t0 += c.moeChunk) {
    const tc = Math.min(c.moeChunk, T - t0);
    const gemms = c.moePrefill === 'grouped' ? groupedGemm : perExpertGemm;
    gemms(c, out.rows(t0, tc), x.rows(t0, tc), ids.rows(t0, tc), weights.rows(t0, tc), w13, w2, E, K, C, Fw);
  }
  return true;
}

function segmented(c: CudaContext, out: Tensor, x: Tensor, ids: Tensor, weights: Tensor, w13: Tensor, w2: Tensor, E: number, K: number, C: number, Fw: number): void {
  const T = x.shape[0], n = T * K;
  // Sorted on the device (no host round trip, graph-capturable); at most n/8 full segments plus
  // one partial segment per expert hit.
  const maxSeg = Math.floor(n / SEG_MAX) + Math.min(E, n);
  const pairs = c.scratch('moe-pairs', n * 4), segp = c.scratch('moe-segs', (1 + 3 * maxSeg) * 4);
  c.launch(c.kernel(MOE, 'moe_sort_seg_i32', 'pppii'), [1, 1, 1], 1024, 4 * (n + 2 * (E + 1)), [pairs, segp, c.ptr(ids), n, E]);
  const h = c.scratch('moe-h', n * Fw * 4), y = c.scratch('moe-y', n * C * 4);
  c.launch(c.kernel(MOE, 'moe_up_seg_bf16', 'pppppiii'), [Math.ceil(Fw / 8), maxSeg, 1], 256, 0, [h, c.ptr(x), pairs, segp, c.ptr(w13), K, C, Fw]);
  if (c.bf16Inputs) roundedCopy(c, null, h, n * Fw);
  c.launch(c.kernel(MOE, 'moe_down_seg_bf16', 'pppppii'), [Math.ceil(C / 8), maxSeg, 1], 256, 0, [y, h, pairs, segp, c.ptr(w2), C, Fw]);
  c.launch(c.kernel(MOE, 'moe_combine_f32', 'ppplii'), strideGrid(T * C), 256, 0, [c.ptr(out), y, c.ptr(weights), T, K, C]);
}

function perExpertGemm(c: CudaContext, out: Tensor, x: Tensor, ids: Tensor, weights: Tensor, w13: Tensor, w2: Tensor, E: number, K: number, C: number, Fw: number): void {
  const T = x.shape[0], n = T * K;
  const s = sortByExpert(readIds(c, ids, n), E);
  const split = c.moeSplit;
  const pairs = c.hostArg('moe-pairs', s.pairs), inv = c.hostArg('moe-inv', s.inv);
  const xh = c.scratch('moe-xh', n * C * 2), xl = split ? c.scratch('moe-xl', n * C * 2) : 0n;
  const gu = c.scratch('moe-gu', n * 2 * Fw * 4);
  const hh = c.scratch('moe-hh', n * Fw * 2), hl = split ? c.scratch('moe-hl', n * Fw * 2) : 0n;
  const yp = c.scratch('moe-yp', n * C * 4);
  c.launch(c.kernel(MOE, 'moe_gather_split_bf16', 'ppppiil'), strideGrid(n * C), 256, 0, [xh, xl, c.ptr(x), pairs, K, C, n]);
  const w13p = c.ptr(w13), w2p = c.ptr(w2);
  const gemm = (D: bigint, A: bigint, Bh: bigint, Bl: bigint, rows: number, N: number, Kd: number): void => {
    const okh = c.gemm('bf16', D, A, Bh, rows, N, Kd);
    const okl = !split || c.gemm('bf16', D, A, Bl, rows, N, Kd, 1);
    if (!okh || !okl) throw new Error(`moe: cuBLASLt has no algorithm for ${rows}×${N}×${Kd}`);
  };
  for (let e = 0; e < E; e++) {
    const r0 = s.start[e], rows = s.start[e + 1] - r0;
    if (rows === 0) continue;
    const A = w13p + BigInt(e * 2 * Fw * C * 2);
    gemm(gu + BigInt(r0 * 2 * Fw * 4), A, xh + BigInt(r0 * C * 2), xl + BigInt(r0 * C * 2), rows, 2 * Fw, C);
  }
  c.launch(c.kernel(MOE, 'moe_silumul_split_bf16', 'pppil'), strideGrid(n * Fw), 256, 0, [hh, hl, gu, Fw, n]);
  for (let e = 0; e < E; e++) {
    const r0 = s.start[e], rows = s.start[e + 1] - r0;
    if (rows === 0) continue;
    const A = w2p + BigInt(e * C * Fw * 2);
    gemm(yp + BigInt(r0 * C * 4), A, hh + BigInt(r0 * Fw * 2), hl + BigInt(r0 * Fw * 2), rows, C, Fw);
  }
  c.launch(c.kernel(MOE, 'moe_combine_perm_f32', 'pppplii'), strideGrid(T * C), 256, 0, [c.ptr(out), yp, c.ptr(weights), inv, T, K, C]);
}

function groupedGemm(c: CudaContext, out: Tensor, x: Tensor, ids: Tensor, weights: Tensor, w13: Tensor, w2: Tensor, E: number, K: number, C: number, Fw: number): void {
  const T = x.shape[0], n = T * K;
  const split = c.moeSplit;
  const hopper = c.info.major === 9 && c.info.minor === 0, bn = hopper ? GW_BN : GG_BN;
  const colUp = Math.ceil(Fw / (bn / 2)), colDown = Math.ceil(C / bn);
  // Permutation by expert on the device (moe_gg_count / plan / scatter): the host never waits for
  // the router. The schedules list every expert (empty ones own no blocks), and the grids cover the
  // most tiles any routing can need (Σ ceil(rows_e / BM) ≤ n / BM + min(E, n)); spare blocks exit.
  // The gate/up GEMM reads x's rows through tok (permuted row → token): x is converted to bf16
  // hi (+ lo) once per token, not gathered into a [n, C] copy.
  const counts = c.scratch('moe-gg-counts', E * 4), cursor = c.scratch('moe-gg-cursor', E * 4);
  const upS = c.scratch('moe-gg-up', 16 * E), downS = c.scratch('moe-gg-down', 16 * E);
  const tok = c.scratch('moe-gg-tok', n * 4), inv = c.scratch('moe-gg-inv', n * 4);
  c.noteWrite();
  c.driver.memsetD8(counts, 0, E * 4, c.stream);
  c.launch(c.kernel(MOE_GG, 'moe_gg_count', 'ppi'), strideGrid(n), 256, 0, [counts, c.ptr(ids), n]);
  c.launch(c.kernel(MOE_GG, 'moe_gg_plan', 'ppppiiii'), [1, 1, 1], 32, 0, [cursor, upS, downS, counts, E, colUp, colDown, GG_BM]);
  c.launch(c.kernel(MOE_GG, 'moe_gg_scatter', 'ppppii'), strideGrid(n), 256, 0, [tok, inv, cursor, c.ptr(ids), n, K]);
  const tiles = Math.ceil(n / GG_BM) + Math.min(E, n);
  const up = { blocks: colUp * tiles, groups: E }, down = { blocks: colDown * tiles, groups: E };
  const xh = c.scratch('moe-gg-xh', T * C * 2), xl = split ? c.scratch('moe-gg-xl', T * C * 2) : 0n;
  const hh = c.scratch('moe-hh', n * Fw * 2), hl = split ? c.scratch('moe-hl', n * Fw * 2) : 0n;
  const yp = c.scratch('moe-yp', n * C * 4);
  c.launch(c.kernel(MOE_GG, 'moe_gg_split_rows', 'pppl'), strideGrid(T * C), 256, 0, [xh, xl, c.ptr(x), T * C]);
  const v = split ? 'split' : 'bf16', smem = hopper ? gwSmem(split) : ggSmem(split), pre = hopper ? 'moe_gw' : 'moe_gg', threads = hopper ? 256 : GG_BN, sig = 'ppppppppiii';
  c.launch(c.kernel(MOE_GG, `${pre}_glu_${v}`, sig), [up.blocks, 1, 1], threads, smem, [0n, hh, hl, xh, xl, tok, c.ptr(w13), upS, up.groups, Fw, C]);
  c.launch(c.kernel(MOE_GG, `${pre}_down_${v}`, sig), [down.blocks, 1, 1], threads, smem, [yp, 0n, 0n, hh, hl, 0n, c.ptr(w2), downS, down.groups, C, Fw]);
  c.launch(c.kernel(MOE, 'moe_combine_perm_f32', 'pppplii'), strideGrid(T * C), 256, 0, [c.ptr(out), yp, c.ptr(weights), inv, T, K, C]);
}
