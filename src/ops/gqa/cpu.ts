/**
 * CPU GQA kernels (f32 storage, float64 sums in locals). Attention walks the context in tiles of
 * TILE cache rows with an online softmax (running max m and sum l per query row), one KV head at a
 * time: the G = H/KVH query heads sharing a KV head are stacked into n·G rows, so a tile's K and V
 * are gathered once per KV head and used by a whole group. Scratch depends on n·H·D and the tile,
 * never on the context length. The products are ctx.matmul calls on gathered tiles.
 */
import type { GqaParams, KvSeq } from '../../backend/backend.js';
import type { CpuOpContext } from '../cpu-context.js';
import { rescaleAdd, softmaxTile, view } from '../cpu-attention.js';
import { checkShape, f32Data, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { checkGqaShapes, kvCacheRow } from './gqa.js';

/** Context tokens per tile. */
const TILE = 64;

export function cpuGqaCacheWrite(cache: Tensor, k: Tensor, v: Tensor, seq: KvSeq, p: GqaParams): void {
  const KD = p.nKvHeads * p.headDim;
  const n = k.shape[0];
  checkShape(k, [n, KD], 'gqaCacheWrite k');
  checkShape(v, [n, KD], 'gqaCacheWrite v');
  checkShape(cache, [-1, 2 * KD], 'gqaCacheWrite cache');
  const c = f32Data(cache), kv = f32Data(k), vv = f32Data(v);
  for (let i = 0; i < n; i++) {
    const r = kvCacheRow(seq, p.blockSize, seq.ctxStart + i);
    assert(r >= 0 && r < cache.shape[0], () => `KV cache row ${r} outside ${cache}`);
    const dst = c.off + r * 2 * KD;
    c.data.set(kv.data.subarray(kv.off + i * KD, kv.off + (i + 1) * KD), dst);
    c.data.set(vv.data.subarray(vv.off + i * KD, vv.off + (i + 1) * KD), dst + KD);
  }
}



export function cpuGqaAttention(ctx: CpuOpContext, out: Tensor, q: Tensor, cache: Tensor, seq: KvSeq, p: GqaParams): void {
  const { nHeads: H, nKvHeads: KVH, headDim: D, scale } = p;
  const n = checkGqaShapes(out, q, cache, p);
  if (n === 0) return;
  const G = H / KVH, R = n * G, KD = KVH * D, W = 2 * KD;
  const ctxEnd = seq.ctxStart + n;
  const qv = f32Data(q), cv = f32Data(cache), ov = f32Data(out);

  const qgT = ctx.scratch('gqa.q', [KVH * R, D]); // rows (g, i, j): query head g·G+j of token i
  const accT = ctx.scratch('gqa.acc', [KVH * R, D]); // unnormalised o, same row order
  const mT = ctx.scratch('gqa.m', [KVH * R]);
  const lT = ctx.scratch('gqa.l', [KVH * R]);
  const alphaT = ctx.scratch('gqa.alpha', [R]);
  const kT = ctx.scratch('gqa.k', [TILE, D]);
  const vtT = ctx.scratch('gqa.vt', [D, TILE]); // v transposed, so P·v is a matmul
  const sT = ctx.scratch('gqa.s', [R, TILE]);
  const pvT = ctx.scratch('gqa.pv', [R, D]);
  const qg = f32Data(qgT).data, acc = f32Data(accT).data, m = f32Data(mT).data, l = f32Data(lT).data;
  const alpha = f32Data(alphaT).data, kt = f32Data(kT).data, vt = f32Data(vtT).data;
  const s = f32Data(sT).data, pv = f32Data(pvT).data;

  // q [n, H·D] → [KVH, n, G, D]: head h = g·G + j sits at row (g·n + i)·G + j.
  for (let i = 0; i < n; i++) {
    const src = qv.off + i * H * D;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / G), j = h % G;
      qg.set(qv.data.subarray(src + h * D, src + (h + 1) * D), ((g * n + i) * G + j) * D);
    }
  }
  acc.fill(0, 0, KVH * R * D);
  m.fill(-Infinity, 0, KVH * R);
  l.fill(0, 0, KVH * R);

  for (let s0 = 0; s0 < ctxEnd; s0 += TILE) {
    const T = Math.min(TILE, ctxEnd - s0);
    // Queries before i0 cannot see this tile (causal); rows from i0·G on are contiguous per group.
    const i0 = Math.max(0, s0 - seq.ctxStart), r0 = i0 * G, nr = R - r0;
    const vis0 = seq.ctxStart + i0 - s0 + 1;
    for (let g = 0; g < KVH; g++) {
      for (let t = 0; t < T; t++) {
        const row = kvCacheRow(seq, p.blockSize, s0 + t);
        assert(row >= 0 && row < cache.shape[0], () => `KV cache row ${row} outside ${cache}`);
        const kb = cv.off + row * W + g * D, vb = kb + KD;
        kt.set(cv.data.subarray(kb, kb + D), t * D);
        for (let d = 0; d < D; d++) vt[d * T + t] = cv.data[vb + d];
      }
      const at = g * R + r0;
      ctx.matmul(view(sT, nr, T), qgT.rows(at, nr), view(kT, T, D), null); // S [nr, T]
      softmaxTile(s, nr, T, G, vis0, scale, m, l, at, alpha);
      ctx.matmul(view(pvT, nr, D), view(sT, nr, T), view(vtT, D, T), null); // P·v [nr, D]
      rescaleAdd(acc, at * D, pv, alpha, nr, D);
    }
  }

  for (let i = 0; i < n; i++)
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / G), r = (g * n + i) * G + (h % G);
      const inv = 1 / l[r], ab = r * D, ob = ov.off + (i * H + h) * D;
      for (let d = 0; d < D; d++) ov.data[ob + d] = acc[ab + d] * inv;
    }
}
