/**
 * CPU MLA kernels (f32 storage, float64 accumulation in locals). Both attention forms walk the
 * context in tiles of TILE cache rows with an online softmax (running max m, running sum l), so
 * scratch depends on n·H and the tile, never on the context length. The heavy products are
 * ctx.matmul calls on gathered tiles, which the backend spreads over its threads.
 */
import type { MlaParams, MlaSeq } from '../../backend/backend.js';
import type { CpuOpContext } from '../cpu-context.js';
import { rescaleAdd, softmaxTile, view } from '../cpu-attention.js';
import { checkShape, f32Data, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { roundBf16 } from '../../util/numeric.js';
import { checkMlaShapes, mlaCacheRow } from './mla.js';

/** Context tokens per tile. */
const TILE = 64;

export function cpuMlaCacheWrite(cache: Tensor, ckv: Tensor, kpe: Tensor, seq: MlaSeq, p: MlaParams): void {
  const L = p.kvLora, Dr = p.qkRope, W = L + Dr;
  const n = ckv.shape[0];
  checkShape(ckv, [n, L], 'mlaCacheWrite ckv');
  checkShape(kpe, [n, Dr], 'mlaCacheWrite kpe');
  checkShape(cache, [-1, W], 'mlaCacheWrite cache');
  const c = f32Data(cache), a = f32Data(ckv), k = f32Data(kpe);
  for (let i = 0; i < n; i++) {
    const r = mlaCacheRow(seq, p.blockSize, seq.ctxStart + i);
    assert(r >= 0 && r < cache.shape[0], () => `MLA cache row ${r} outside ${cache}`);
    const dst = c.off + r * W;
    c.data.set(a.data.subarray(a.off + i * L, a.off + (i + 1) * L), dst);
    c.data.set(k.data.subarray(k.off + i * Dr, k.off + (i + 1) * Dr), dst + L);
  }
}

/** a[0..n) rounded to bf16 values in place. */
function roundRange(a: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) a[i] = roundBf16(a[i]);
}

/** Element offset of position pos's cache row (bounds-checked: a bad block table must not read junk). */
function rowStart(cache: Tensor, seq: MlaSeq, blockSize: number, pos: number): number {
  const r = mlaCacheRow(seq, blockSize, pos);
  assert(r >= 0 && r < cache.shape[0], () => `MLA cache row ${r} outside ${cache}`);
  return cache.offset + r * cache.shape[1];
}




/**
 * Expanded form: per tile, c_kv rows are gathered and expanded for all heads at once
 * (kv [T, H·(Dn+Dv)] = c_kv · W_kvbᵀ); then per head S = q_h · [k_nope_h | k_pe]ᵀ and P · v_h.
 * ctx.bf16Inputs: the operands (q, c_kv, k_pe, and k_nope, v as expanded) are rounded to bf16 as
 * the CUDA flash kernel reads them; the probabilities P stay f32 (refMlaPrefillExpanded's bf16Operands).
 */
export function cpuMlaPrefillExpanded(ctx: CpuOpContext, out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seq: MlaSeq, p: MlaParams): void {
  const { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv, kvLora: L, scale } = p;
  const n = checkMlaShapes(out, q, cache, kvB, p);
  if (n === 0) return;
  const Dqk = Dn + Dr, Dkv = Dn + Dv, W = L + Dr, HDkv = H * Dkv;
  const ctxEnd = seq.ctxStart + n;
  const qv = f32Data(q), cv = f32Data(cache), ov = f32Data(out);

  const qhT = ctx.scratch('mla.qh', [H * n, Dqk]); // per head contiguous: [H, n, Dqk]
  const accT = ctx.scratch('mla.acc', [H * n, Dv]); // unnormalised o: [H, n, Dv]
  const mT = ctx.scratch('mla.m', [H * n]);
  const lT = ctx.scratch('mla.l', [H * n]);
  const alphaT = ctx.scratch('mla.alpha', [n]);
  const ckvT = ctx.scratch('mla.ckv', [TILE, L]);
  const kvT = ctx.scratch('mla.kv', [TILE, HDkv]);
  const khT = ctx.scratch('mla.kh', [TILE, Dqk]);
  const vtT = ctx.scratch('mla.vt', [Dv, TILE]); // v_h transposed, so P·v_h is a matmul
  const sT = ctx.scratch('mla.s', [n, TILE]);
  const pvT = ctx.scratch('mla.pv', [n, Dv]);
  const kpeT = ctx.scratch('mla.kpe', [TILE, Dr]);
  const qh = f32Data(qhT).data, kpe = f32Data(kpeT).data;
  const acc = f32Data(accT).data, m = f32Data(mT).data, l = f32Data(lT).data, alpha = f32Data(alphaT).data;
  const ckv = f32Data(ckvT).data, kv = f32Data(kvT).data, kh = f32Data(khT).data, vt = f32Data(vtT).data;
  const s = f32Data(sT).data, pv = f32Data(pvT).data;

  for (let i = 0; i < n; i++)
    for (let h = 0; h < H; h++) {
      const src = qv.off + i * H * Dqk + h * Dqk;
      qh.set(qv.data.subarray(src, src + Dqk), (h * n + i) * Dqk);
    }
  const rb = ctx.bf16Inputs;
  if (rb) roundRange(qh, H * n * Dqk);
  acc.fill(0, 0, H * n * Dv);
  m.fill(-Infinity, 0, H * n);
  l.fill(0, 0, H * n);

  for (let s0 = 0; s0 < ctxEnd; s0 += TILE) {
    const T = Math.min(TILE, ctxEnd - s0);
    // Queries before i0 cannot see this tile (causal); rows i0..n-1 are contiguous per head.
    const i0 = Math.max(0, s0 - seq.ctxStart), nr = n - i0;
    for (let t = 0; t < T; t++) {
      const src = rowStart(cache, seq, p.blockSize, s0 + t);
      ckv.set(cv.data.subarray(src, src + L), t * L);
      kpe.set(cv.data.subarray(src + L, src + W), t * Dr);
    }
    if (rb) {
      roundRange(ckv, T * L);
      roundRange(kpe, T * Dr);
    }
    ctx.matmul(view(kvT, T, HDkv), view(ckvT, T, L), kvB, null); // kv [T, H·(Dn+Dv)]
    if (rb) roundRange(kv, T * HDkv);
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const kb = t * HDkv + h * Dkv;
        kh.set(kv.subarray(kb, kb + Dn), t * Dqk);
        kh.set(kpe.subarray(t * Dr, (t + 1) * Dr), t * Dqk + Dn);
        for (let j = 0; j < Dv; j++) vt[j * T + t] = kv[kb + Dn + j];
      }
      const qRows = qhT.rows(h * n + i0, nr);
      ctx.matmul(view(sT, nr, T), qRows, view(khT, T, Dqk), null); // S [nr, T]
      softmaxTile(s, nr, T, 1, seq.ctxStart + i0 - s0 + 1, scale, m, l, h * n + i0, alpha);
      ctx.matmul(view(pvT, nr, Dv), view(sT, nr, T), view(vtT, Dv, T), null); // P·v_h [nr, Dv]
      rescaleAdd(acc, (h * n + i0) * Dv, pv, alpha, nr, Dv);
    }
  }

  for (let i = 0; i < n; i++)
    for (let h = 0; h < H; h++) {
      const inv = 1 / l[h * n + i], ab = (h * n + i) * Dv, ob = ov.off + i * H * Dv + h * Dv;
      for (let j = 0; j < Dv; j++) ov.data[ob + j] = acc[ab + j] * inv;
    }
}

/**
 * Absorbed form: ql_h = W_UK_hᵀ q_nope_h is folded into the query once, so the context is read
 * as raw latent rows: S = [ql | q_pe] · [c_kv | k_pe]ᵀ over all n·H query rows at once,
 * o_lat += P · c_kv, and W_UV is applied to o_lat at the end.
 */
export function cpuMlaDecodeAbsorbed(ctx: CpuOpContext, out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seq: MlaSeq, p: MlaParams): void {
  const { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv, kvLora: L, scale } = p;
  const n = checkMlaShapes(out, q, cache, kvB, p);
  if (n === 0) return;
  const Dqk = Dn + Dr, Dkv = Dn + Dv, W = L + Dr, R = n * H;
  const ctxEnd = seq.ctxStart + n;
  const qv = f32Data(q), cv = f32Data(cache), ov = f32Data(out), wv = f32Data(kvB);
  const w = wv.data, wo = wv.off;

  const qcT = ctx.scratch('mla.qc', [R, W]); // rows (i, h): [ql (L) | q_pe (Dr)]
  const accT = ctx.scratch('mla.acc', [R, L]); // unnormalised o_lat
  const mT = ctx.scratch('mla.m', [R]);
  const lT = ctx.scratch('mla.l', [R]);
  const alphaT = ctx.scratch('mla.alpha', [R]);
  const tileT = ctx.scratch('mla.tile', [TILE, W]); // gathered cache rows
  const ctT = ctx.scratch('mla.ckvt', [L, TILE]); // c_kv tile transposed, so P·c_kv is a matmul
  const sT = ctx.scratch('mla.s', [R, TILE]);
  const pvT = ctx.scratch('mla.pv', [R, L]);
  const qc = f32Data(qcT).data, acc = f32Data(accT).data, m = f32Data(mT).data, l = f32Data(lT).data;
  const alpha = f32Data(alphaT).data, tile = f32Data(tileT).data, ct = f32Data(ctT).data;
  const s = f32Data(sT).data, pv = f32Data(pvT).data;

  // ql_h[l] = Σ_d q_nope_h[d] · W_kvb[h·Dkv + d, l], summed in float64 locals four columns at a
  // time (an f32 axpy over rows rounds Dn times and dominated the absorbed error).
  for (let i = 0; i < n; i++)
    for (let h = 0; h < H; h++) {
      const qb = qv.off + i * H * Dqk + h * Dqk, rb = (i * H + h) * W, wh = wo + h * Dkv * L;
      let c = 0;
      for (; c + 4 <= L; c += 4) {
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let d = 0; d < Dn; d++) {
          const x = qv.data[qb + d], wb = wh + d * L + c;
          s0 += x * w[wb];
          s1 += x * w[wb + 1];
          s2 += x * w[wb + 2];
          s3 += x * w[wb + 3];
        }
        qc[rb + c] = s0;
        qc[rb + c + 1] = s1;
        qc[rb + c + 2] = s2;
        qc[rb + c + 3] = s3;
      }
      for (; c < L; c++) {
        let s0 = 0;
        for (let d = 0; d < Dn; d++) s0 += qv.data[qb + d] * w[wh + d * L + c];
        qc[rb + c] = s0;
      }
      qc.set(qv.data.subarray(qb + Dn, qb + Dqk), rb + L);
    }
  acc.fill(0, 0, R * L);
  m.fill(-Infinity, 0, R);
  l.fill(0, 0, R);

  for (let s0 = 0; s0 < ctxEnd; s0 += TILE) {
    const T = Math.min(TILE, ctxEnd - s0);
    const i0 = Math.max(0, s0 - seq.ctxStart), r0 = i0 * H, nr = R - r0;
    for (let t = 0; t < T; t++) {
      const src = rowStart(cache, seq, p.blockSize, s0 + t);
      tile.set(cv.data.subarray(src, src + W), t * W);
      for (let c = 0; c < L; c++) ct[c * T + t] = cv.data[src + c];
    }
    ctx.matmul(view(sT, nr, T), qcT.rows(r0, nr), view(tileT, T, W), null); // S [nr, T]
    softmaxTile(s, nr, T, H, seq.ctxStart + i0 - s0 + 1, scale, m, l, r0, alpha);
    ctx.matmul(view(pvT, nr, L), view(sT, nr, T), view(ctT, L, T), null); // P·c_kv [nr, L]
    rescaleAdd(acc, r0 * L, pv, alpha, nr, L);
  }

  // o_h[j] = Σ_l o_lat_h[l] · W_kvb[h·Dkv + Dn + j, l] / l_h
  for (let i = 0; i < n; i++)
    for (let h = 0; h < H; h++) {
      const r = i * H + h, ab = r * L, inv = 1 / l[r], ob = ov.off + i * H * Dv + h * Dv;
      for (let j = 0; j < Dv; j++) {
        const wb = wo + (h * Dkv + Dn + j) * L;
        let dot = 0;
        for (let c = 0; c < L; c++) dot += acc[ab + c] * w[wb + c];
        ov.data[ob + j] = dot * inv;
      }
    }
}
