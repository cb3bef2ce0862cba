/**
 * Grouped-query softmax attention over a paged KV cache (Ring-linear-2.0 full-attention layers)
 * and its float64 reference.
 *
 * KV cache of one layer: [rows, 2·KVH·D], per token [k (KVH·D, normed + rotated) | v (KVH·D)],
 * paged like the MLA latent cache: position pos lives at row blockTable[floor(pos/bs)]·bs + pos%bs.
 * q [n, H·D] (normed, rotated); query i sits at position ctxStart+i and attends causally to
 * positions 0..ctxStart+i, all already in the cache. Query head h reads KV head floor(h/(H/KVH))
 * (consecutive query heads share a KV head, as QKVParallelLinear / mx.repeat lay them out).
 * out [n, H·D].
 */
import type { GqaParams, KvSeq } from '../../backend/backend.js';
import { checkShape, fromF64, toF64, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';

/** Cache row of token position pos (shared by the reference and the CPU kernels). */
export function kvCacheRow(seq: KvSeq, blockSize: number, pos: number): number {
  const b = Math.floor(pos / blockSize);
  assert(b < seq.blockTable.length, () => `KV position ${pos} beyond block table of ${seq.blockTable.length} blocks of ${blockSize}`);
  return seq.blockTable[b] * blockSize + (pos % blockSize);
}

/** Shape checks of gqaAttention; returns n (query tokens). */
export function checkGqaShapes(out: Tensor, q: Tensor, cache: Tensor, p: GqaParams): number {
  const { nHeads: H, nKvHeads: KVH, headDim: D } = p;
  assert(KVH >= 1 && H % KVH === 0, () => `gqa: ${H} query heads are not a multiple of ${KVH} KV heads`);
  const n = q.shape[0];
  checkShape(q, [n, H * D], 'gqa q');
  checkShape(out, [n, H * D], 'gqa out');
  checkShape(cache, [-1, 2 * KVH * D], 'gqa cache');
  return n;
}

export function refGqaCacheWrite(cache: Tensor, k: Tensor, v: Tensor, seq: KvSeq, p: GqaParams): void {
  const KD = p.nKvHeads * p.headDim;
  const n = k.shape[0];
  checkShape(k, [n, KD], 'gqaCacheWrite k');
  checkShape(v, [n, KD], 'gqaCacheWrite v');
  checkShape(cache, [-1, 2 * KD], 'gqaCacheWrite cache');
  const ks = toF64(k), vs = toF64(v);
  for (let i = 0; i < n; i++) {
    const row = new Float64Array(2 * KD);
    row.set(ks.subarray(i * KD, (i + 1) * KD), 0);
    row.set(vs.subarray(i * KD, (i + 1) * KD), KD);
    const r = kvCacheRow(seq, p.blockSize, seq.ctxStart + i);
    assert(r >= 0 && r < cache.shape[0], () => `KV cache row ${r} outside ${cache}`);
    fromF64(cache.rows(r, 1), row);
  }
}

/** Plain float64 attention: full score rows, max subtracted, normalised, then P·V. */
export function refGqaAttention(out: Tensor, q: Tensor, cache: Tensor, seq: KvSeq, p: GqaParams): void {
  const { nHeads: H, nKvHeads: KVH, headDim: D, scale } = p;
  const n = checkGqaShapes(out, q, cache, p);
  const group = H / KVH, KD = KVH * D, W = 2 * KD;
  const qs = toF64(q), cs = toF64(cache);
  const ctx = seq.ctxStart + n;
  const rows = Array.from({ length: ctx }, (_, s) => kvCacheRow(seq, p.blockSize, s) * W);
  const o = new Float64Array(n * H * D);
  for (let i = 0; i < n; i++) {
    const last = seq.ctxStart + i;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / group);
      const qb = (i * H + h) * D;
      const sc = new Float64Array(last + 1);
      let max = -Infinity;
      for (let s = 0; s <= last; s++) {
        const kb = rows[s] + g * D;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += qs[qb + d] * cs[kb + d];
        sc[s] = dot * scale;
        max = Math.max(max, sc[s]);
      }
      let sum = 0;
      for (let s = 0; s <= last; s++) sum += sc[s] = Math.exp(sc[s] - max);
      for (let s = 0; s <= last; s++) {
        const vb = rows[s] + KD + g * D, w = sc[s] / sum;
        for (let d = 0; d < D; d++) o[qb + d] += w * cs[vb + d];
      }
    }
  }
  fromF64(out, o);
}
