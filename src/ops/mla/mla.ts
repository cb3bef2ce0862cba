/**
 * MLA (multi-head latent attention, spec §5) contract and float64 references.
 *
 * Latent cache of one layer: [rows, L+Dr], per token [c_kv (L, RMS-normalised) | k_pe (Dr, rotated)],
 * paged: position pos of a sequence lives at row blockTable[floor(pos/bs)]·bs + pos%bs.
 * kvB = W_kvb [H·(Dn+Dv), L], per head [Dn nope rows ; Dv value rows].
 * q [n, H·(Dn+Dr)], per head [q_nope (Dn) | q_pe (Dr)], rope applied; query i sits at position
 * ctxStart+i and attends causally to positions 0..ctxStart+i, all already in the cache.
 * out [n, H·Dv].
 */
import type { MlaParams, MlaSeq, Ops } from '../../backend/backend.js';
import { checkShape, fromF64, toF64, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { roundBf16 } from '../../util/numeric.js';

/** Cache row of token position pos (shared by the reference and the CPU kernels). */
export function mlaCacheRow(seq: MlaSeq, blockSize: number, pos: number): number {
  const b = Math.floor(pos / blockSize);
  assert(b < seq.blockTable.length, () => `MLA position ${pos} beyond block table of ${seq.blockTable.length} blocks of ${blockSize}`);
  return seq.blockTable[b] * blockSize + (pos % blockSize);
}

/** Shape checks common to the attention ops; returns n (query tokens). */
export function checkMlaShapes(out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, p: MlaParams): number {
  const { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv, kvLora: L } = p;
  const n = q.shape[0];
  checkShape(q, [n, H * (Dn + Dr)], 'mla q');
  checkShape(out, [n, H * Dv], 'mla out');
  checkShape(cache, [-1, L + Dr], 'mla cache');
  checkShape(kvB, [H * (Dn + Dv), L], 'mla kvB');
  return n;
}

export function refMlaCacheWrite(cache: Tensor, ckv: Tensor, kpe: Tensor, seq: MlaSeq, p: MlaParams): void {
  const L = p.kvLora, Dr = p.qkRope, W = L + Dr;
  const n = ckv.shape[0];
  checkShape(ckv, [n, L], 'mlaCacheWrite ckv');
  checkShape(kpe, [n, Dr], 'mlaCacheWrite kpe');
  checkShape(cache, [-1, W], 'mlaCacheWrite cache');
  const c = toF64(ckv), k = toF64(kpe);
  for (let i = 0; i < n; i++) {
    const row = new Float64Array(W);
    row.set(c.subarray(i * L, (i + 1) * L), 0);
    row.set(k.subarray(i * Dr, (i + 1) * Dr), L);
    const r = mlaCacheRow(seq, p.blockSize, seq.ctxStart + i);
    assert(r >= 0 && r < cache.shape[0], () => `MLA cache row ${r} outside ${cache}`);
    fromF64(cache.rows(r, 1), row);
  }
}

/**
 * The one float64 reference for both MLA forms: the expanded math of spec §5.2, written plainly.
 * Every context token is expanded to per-head k_nope and v, scores are materialised in full and
 * softmaxed with the max subtracted. The absorbed form is the same function of the inputs
 * (matrix associativity), so refMlaDecodeAbsorbed deliberately uses this too.
 * bf16Operands (the prefill of MatmulInputs 'bf16', backend.ts): c_kv, k_pe and q rounded to bf16,
 * and k_nope, v rounded after their expansion; the probabilities stay exact.
 */
function refMlaExpandedF64(out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seq: MlaSeq, p: MlaParams, bf16Operands = false): void {
  const { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv, kvLora: L, scale } = p;
  const n = checkMlaShapes(out, q, cache, kvB, p);
  const ctx = seq.ctxStart + n; // tokens in the cache for this call
  const rd = bf16Operands ? roundBf16 : (x: number): number => x;
  const qs = toF64(q).map(rd), w = toF64(kvB), cs = toF64(cache).map(rd);
  const Dqk = Dn + Dr, Dkv = Dn + Dv, W = L + Dr;
  // k [ctx, H, Dqk] = [W_kvb nope rows · c_kv | k_pe];  v [ctx, H, Dv] = W_kvb value rows · c_kv
  const k = new Float64Array(ctx * H * Dqk);
  const v = new Float64Array(ctx * H * Dv);
  for (let s = 0; s < ctx; s++) {
    const r = mlaCacheRow(seq, p.blockSize, s) * W;
    for (let h = 0; h < H; h++) {
      const kb = (s * H + h) * Dqk;
      for (let d = 0; d < Dkv; d++) {
        let acc = 0;
        for (let l = 0; l < L; l++) acc += w[(h * Dkv + d) * L + l] * cs[r + l];
        if (d < Dn) k[kb + d] = rd(acc);
        else v[(s * H + h) * Dv + d - Dn] = rd(acc);
      }
      for (let d = 0; d < Dr; d++) k[kb + Dn + d] = cs[r + L + d];
    }
  }
  const o = new Float64Array(n * H * Dv);
  for (let i = 0; i < n; i++) {
    const last = seq.ctxStart + i; // causal: attends to 0..last
    for (let h = 0; h < H; h++) {
      const qb = (i * H + h) * Dqk;
      const sc = new Float64Array(last + 1);
      let max = -Infinity;
      for (let s = 0; s <= last; s++) {
        let dot = 0;
        for (let d = 0; d < Dqk; d++) dot += qs[qb + d] * k[(s * H + h) * Dqk + d];
        sc[s] = dot * scale;
        max = Math.max(max, sc[s]);
      }
      let sum = 0;
      for (let s = 0; s <= last; s++) sum += sc[s] = Math.exp(sc[s] - max);
      const ob = (i * H + h) * Dv;
      for (let s = 0; s <= last; s++)
        for (let j = 0; j < Dv; j++) o[ob + j] += (sc[s] / sum) * v[(s * H + h) * Dv + j];
    }
  }
  fromF64(out, o);
}

export function refMlaPrefillExpanded(out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seq: MlaSeq, p: MlaParams, bf16Operands = false): void {
  refMlaExpandedF64(out, q, cache, kvB, seq, p, bf16Operands);
}

/** Same result as the expanded form by definition; see refMlaExpandedF64. */
export function refMlaDecodeAbsorbed(out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seq: MlaSeq, p: MlaParams): void {
  refMlaExpandedF64(out, q, cache, kvB, seq, p);
}

/** Ops.mlaDecodeBatch on a backend without a batched kernel: row i through `single` alone (the definition). */
export function mlaDecodeEach(single: Ops['mlaDecodeAbsorbed'], out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seqs: readonly MlaSeq[], p: MlaParams): void {
  checkShape(q, [seqs.length, -1], 'mlaDecodeBatch q');
  checkShape(out, [seqs.length, -1], 'mlaDecodeBatch out');
  seqs.forEach((s, i) => single(out.rows(i, 1), q.rows(i, 1), cache, kvB, s, p));
}

export function refMlaDecodeBatch(out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seqs: readonly MlaSeq[], p: MlaParams): void {
  mlaDecodeEach(refMlaDecodeAbsorbed, out, q, cache, kvB, seqs, p);
}
