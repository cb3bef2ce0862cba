/**
 * Launchers of the sequence ops: lightning prefill/decode, MLA cache write + attention, GQA cache
 * write + attention, MoE route + experts. Host-side checks mirror the CPU ops; block tables and
 * slots are turned into row/slot arrays on the host and uploaded (small, stream-ordered).
 */
import type { GqaParams, KvSeq, LightningParams, MlaParams, MlaSeq, RouterParams } from '../backend.js';
import { checkShape, Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { checkGqaShapes, kvCacheRow } from '../../ops/gqa/gqa.js';
import { checkLightning, VLLM_PREFILL_BLOCK } from '../../ops/lightning/lightning.js';
import { checkMlaShapes, mlaCacheRow } from '../../ops/mla/mla.js';
import { checkRoute, routeGroups } from '../../ops/moe/moe.js';
import type { CudaContext } from './context.js';
import { f32Act, roundedCopy, rowThreads, strideGrid } from './ops-basic.js';
import { moeExpertsFast } from './ops-moe.js';
import { fillMlaMeta, mlaMetaStride } from './step-args.js';

const F = {
  lightning: 'src/ops/lightning/lightning.cu',
  lightningChunked: 'src/ops/lightning/lightning-chunked.cu',
  mla: 'src/ops/mla/mla.cu',
  mlaFlash: 'src/ops/mla/mla-flash.cu',
  mlaDecodeTc: 'src/ops/mla/mla-decode-tc.cu',
  gqa: 'src/ops/gqa/gqa.cu',
  moe: 'src/ops/moe/moe.cu',
} as const;

/**
 * Context splits of an MLA decode, fixed so that a captured decode step fits every context length:
 * 32 for the per-head CUDA-core kernel; 64 for the tensor-core kernel, whose blocks own every head
 * of a group and so need more splits to fill the SMs (flash cut, 32k context, batch 1: 2.50 ms a
 * step with 32, 2.43 with 64; H100, bench/RESULTS.md).
 */
const MLA_DECODE_SPLITS = 32, MLA_DECODE_TC_SPLITS = 64;

/**
 * Whether an MLA decode runs on the tensor-core kernel (mla-decode-tc.cu: all heads of a group per
 * block, f32-faithful hi + lo products): a bf16 latent cache (exact bf16 B operands), kv_lora_rank
 * 512 (as instantiated; every v2.5 model) and a row width in whole k32 steps, on sm_80+ (bf16
 * mma.sync). BAILING_MLA_DECODE=cuda-core keeps the per-head CUDA-core kernel (mla.cu).
 */
export function mlaDecodeTc(c: CudaContext, cd: 'f32' | 'bf16', L: number, Dr: number): boolean {
  return c.mlaDecode === 'tc' && cd === 'bf16' && L === 512 && (L + Dr) % 32 === 0 && c.info.major >= 8;
}

function checkHeadDim(D: number, what: string): void {
  // One thread per value column.
  assert(D >= 1 && D <= 1024, () => `${what}: head dim ${D} outside [1, 1024]`);
}

/** Whether two device views share any byte. */
function overlaps(c: CudaContext, a: Tensor, b: Tensor): boolean {
  const pa = c.ptr(a), pb = c.ptr(b);
  return pa < pb + BigInt(b.numel * 4) && pb < pa + BigInt(a.numel * 4);
}

export function cudaLightningPrefill(c: CudaContext, o: Tensor, q: Tensor, k: Tensor, v: Tensor, state: Tensor, p: LightningParams): void {
  const n = checkLightning(o, q, k, v, p, 'lightningPrefill');
  const H = p.nHeads, D = p.headDim;
  checkShape(state, [H, D, D], 'lightningPrefill state');
  for (const t of [o, q, k, v, state]) f32Act(t, 'lightningPrefill');
  checkHeadDim(D, 'lightningPrefill');
  if (p.vllmPrefillQuirk) assert(p.chunk === VLLM_PREFILL_BLOCK, () => `lightningPrefill: vllmPrefillQuirk needs chunk ${VLLM_PREFILL_BLOCK}, found ${p.chunk}`);
  if (n === 0) return;
  const quirk = p.vllmPrefillQuirk ? VLLM_PREFILL_BLOCK : 0;
  const disjoint = [q, k, v].every((t) => !overlaps(c, o, t));
  if (D === 128 && !quirk && disjoint && c.lightningPrefill !== 'recurrent' && [o, q, k, v].every((t) => c.ptr(t) % 16n === 0n)) {
    // Chunked on tensor cores (lightning-chunked.cu): grid (head, 32-column slice of the state).
    // 'tc-split' on f32 operands; with bf16Inputs on bf16 q, k, v ('bf16ops', as the CPU computes
    // that mode); 'tc-bf16' rounds everything (benchmarks).
    const variant = c.lightningPrefill === 'tc-bf16' ? 'bf16' : c.bf16Inputs ? 'bf16ops' : 'split';
    const NP = variant === 'split' ? 2 : 1, ND = variant === 'bf16' ? 1 : 2, C = 64, N = 32;
    const smem = 4 * (2 * C * D + C * N) + 2 * NP * (2 * C * (D + 8) + C * (N + 8)) + 2 * ND * (C * (N + 8) + D * (N + 8)) + 4 * (C + 1);
    const kern = c.kernel(F.lightningChunked, `lightning_chunked_d128_${variant}`, 'ppppppfiii');
    c.launch(kern, [H, D / N, 1], 256, smem, [c.ptr(o), c.ptr(q), c.ptr(k), c.ptr(v), c.ptr(state), c.hostArg('lightning-decay', p.decay, 'const'), p.scale, n, H, p.stateBf16 ? 1 : 0]);
    return;
  }
  // The recurrent kernels' flags (lightning.cu): 1 the stored state in bf16, 2 q, k, v read as bf16 (bf16Inputs).
  const flags = (p.stateBf16 ? 1 : 0) | (c.bf16Inputs ? 2 : 0);
  if (D === 128 && !quirk && disjoint) {
    const fast = c.kernel(F.lightning, 'lightning_prefill_d128_f32', 'ppppppfiii');
    c.launch(fast, [H, D / 32, 1], 32, 0, [c.ptr(o), c.ptr(q), c.ptr(k), c.ptr(v), c.ptr(state), c.hostArg('lightning-decay', p.decay, 'const'), p.scale, n, H, flags]);
    return;
  }
  const smem = 4 * (2 * D + D * D * (quirk ? 2 : 1));
  const kern = c.kernel(F.lightning, 'lightning_prefill_f32', 'ppppppfiiiii');
  const args = [c.ptr(o), c.ptr(q), c.ptr(k), c.ptr(v), c.ptr(state), c.hostArg('lightning-decay', p.decay, 'const'), p.scale, n, H, D, quirk, flags];
  c.launch(kern, [H, 1, 1], D, smem, args);
}

export function cudaLightningDecode(c: CudaContext, o: Tensor, q: Tensor, k: Tensor, v: Tensor, states: Tensor, slots: Int32Array, p: LightningParams): void {
  const B = checkLightning(o, q, k, v, p, 'lightningDecode');
  const H = p.nHeads, D = p.headDim;
  checkShape(states, [-1, H, D, D], 'lightningDecode states');
  assert(slots.length === B, () => `lightningDecode: ${slots.length} slots for ${B} rows`);
  for (const s of slots) assert(s >= 0 && s < states.shape[0], () => `lightningDecode: slot ${s} outside [0, ${states.shape[0]})`);
  for (const t of [o, q, k, v, states]) f32Act(t, 'lightningDecode');
  checkHeadDim(D, 'lightningDecode');
  if (B === 0) return;
  // R row groups per block so each head's state is read by up to 1024 threads (latency-bound otherwise).
  const R = Math.max(1, Math.min(8, Math.floor(1024 / D)));
  const kern = c.kernel(F.lightning, 'lightning_decode_f32', 'pppppppfiiii');
  const args = [c.ptr(o), c.ptr(q), c.ptr(k), c.ptr(v), c.ptr(states), c.hostArg('lightning-slots', slots, 'slots'), c.hostArg('lightning-decay', p.decay, 'const'), p.scale, H, D, R, p.stateBf16 ? 1 : 0];
  c.launch(kern, [H, B, 1], D * R, 4 * (2 * D + R * D), args);
}

/**
 * Element type of a paged cache (MLA latent, GQA k/v): f32, or bf16 (HybridCache's bf16 cache). The
 * kernels that write or read it are named by it (_f32, _bf16).
 */
function cacheDtype(cache: Tensor, what: string): 'f32' | 'bf16' {
  assert(cache.dtype === 'f32' || cache.dtype === 'bf16', () => `${what}: cache must be f32 or bf16, found ${cache}`);
  return cache.dtype;
}

/** Cache rows of positions [from, to) of a paged sequence. */
function cacheRows(seq: MlaSeq, blockSize: number, from: number, to: number, cacheRowsCount: number, row: (s: MlaSeq, bs: number, pos: number) => number): Int32Array {
  const r = new Int32Array(to - from);
  for (let i = 0; i < r.length; i++) {
    r[i] = row(seq, blockSize, from + i);
    assert(r[i] >= 0 && r[i] < cacheRowsCount, () => `cache row ${r[i]} of position ${from + i} outside [0, ${cacheRowsCount})`);
  }
  return r;
}

export function cudaMlaCacheWrite(c: CudaContext, cache: Tensor, ckv: Tensor, kpe: Tensor, seq: MlaSeq, p: MlaParams): void {
  const L = p.kvLora, Dr = p.qkRope;
  const n = ckv.shape[0];
  checkShape(ckv, [n, L], 'mlaCacheWrite ckv');
  checkShape(kpe, [n, Dr], 'mlaCacheWrite kpe');
  checkShape(cache, [-1, L + Dr], 'mlaCacheWrite cache');
  for (const t of [ckv, kpe]) f32Act(t, 'mlaCacheWrite');
  const cd = cacheDtype(cache, 'mlaCacheWrite');
  if (n === 0) return;
  const rows = cacheRows(seq, p.blockSize, seq.ctxStart, seq.ctxStart + n, cache.shape[0], mlaCacheRow);
  const kern = c.kernel(F.mla, `mla_cachewrite_${cd}`, 'ppppii');
  c.launch(kern, [n, 1, 1], rowThreads(L + Dr), 0, [c.ptr(cache), c.ptr(ckv), c.ptr(kpe), c.hostArg('mla-write-rows', rows, { kind: 'cacheRows', table: seq.blockTable, blockSize: p.blockSize, from: seq.ctxStart }), L, Dr]);
}

/** Padded head widths (DN, DR, DV) of the flash prefill instantiations in mla-flash.cu, smallest first. */
const MLA_FLASH_DIMS: readonly (readonly [number, number, number])[] = [
  [64, 64, 64],
  [128, 64, 128],
];
/** Context rows per kv_b expansion GEMM (bounds its f32 output: 4096 × H·(Dn+Dv) × 4 bytes). */
const MLA_EXPAND_ROWS = 4096;

/**
 * MLA prefill in the expanded form on tensor cores (spec §5.2): kv_b applied to every context row
 * by cuBLASLt, repacked per head as bf16, then the flash kernel of mla-flash.cu, in one of three
 * precisions: 'split' (default: f32 expansion GEMM, every operand and P as bf16 hi + lo, the CPU's
 * f32 numbers), 'bf16ops' (MatmulInputs 'bf16': expansion of bf16-rounded latents — a bf16 GEMM
 * against kv_b's bf16 twin, else an f32 GEMM —, q, k, v bf16, P hi + lo: what the CPU computes in
 * that mode), 'bf16' (mode 'flash-bf16', measurement only: bf16 expansion GEMM, P bf16, no CPU
 * counterpart). False when the shapes fit no instantiation or cuBLASLt has no plan; the caller then
 * runs the absorbed kernels (f32 operands in every mode).
 */
function cudaMlaPrefillFlash(c: CudaContext, out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seq: MlaSeq, p: MlaParams, n: number): boolean {
  const { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv, kvLora: L, scale } = p;
  const dims = MLA_FLASH_DIMS.find(([a, b, d]) => Dn <= a && Dr <= b && Dv <= d);
  if (c.mlaPrefill === 'absorbed' || !dims) return false;
  const [DN, DR, DV] = dims;
  const variant = c.mlaPrefill === 'flash-bf16' ? 'bf16' : c.bf16Inputs ? 'bf16ops' : 'split';
  // bf16ops expands on tensor cores when kv_b has a bf16 twin (its values are bf16): bf16 latents
  // times bf16 weights are the f32 GEMM's products exactly.
  const twin = variant === 'bf16ops' ? c.bf16Twin(kvB) : null;
  const split = variant === 'split', f32Gemm = variant === 'split' || (variant === 'bf16ops' && twin === null);
  const NP = split ? 2 : 1;
  const BN = split && DN === 128 ? 32 : 64; // as instantiated (the split 128 kernel's tile fits shared memory)
  const ctx = seq.ctxStart + n, N = H * (Dn + Dv);
  const ab = f32Gemm ? 'f32' : 'bf16', eb = f32Gemm ? 4 : 2;
  const rows = cacheRows(seq, p.blockSize, 0, ctx, cache.shape[0], mlaCacheRow);
  // A operand: kv_b as is (f32 GEMM) or a bf16 copy (4·N·L bytes read, small next to the attention).
  let A = twin ?? c.ptr(kvB);
  if (!f32Gemm && twin === null) {
    A = c.scratch('mla-kvb-bf16', N * L * 2);
    c.launch(c.kernel(F.mlaFlash, 'mla_flash_tobf16', 'ppl'), strideGrid(N * L), 256, 0, [A, c.ptr(kvB), N * L]);
  }
  const ckv = c.scratch('mla-ckv', ctx * L * eb);
  const krH = c.scratch('mla-kr-hi', ctx * DR * 2), krL = split ? c.scratch('mla-kr-lo', ctx * DR * 2) : 0n;
  const gather = cache.dtype === 'bf16' ? 'mla_flash_gather_bf16' : 'mla_flash_gather';
  const roundF = f32Gemm && variant === 'bf16ops' && cache.dtype !== 'bf16' ? 1 : 0; // a bf16 cache's latents are bf16 already
  c.launch(c.kernel(F.mlaFlash, gather, 'ppppppiiii'), [ctx, 1, 1], 128, 0, [f32Gemm ? ckv : 0n, f32Gemm ? 0n : ckv, krH, krL, c.ptr(cache), c.hostArg('mla-rows', rows), L, Dr, DR, roundF]);
  const knH = c.scratch('mla-kn-hi', H * ctx * DN * 2), vH = c.scratch('mla-v-hi', H * ctx * DV * 2);
  const knL = split ? c.scratch('mla-kn-lo', H * ctx * DN * 2) : 0n, vL = split ? c.scratch('mla-v-lo', H * ctx * DV * 2) : 0n;
  const chunk = Math.min(ctx, MLA_EXPAND_ROWS);
  const kv = c.scratch('mla-kv', chunk * N * 4);
  const pack = c.kernel(F.mlaFlash, 'mla_flash_pack_kv', 'pppppiiiiiii');
  for (let r0 = 0; r0 < ctx; r0 += chunk) {
    const rc = Math.min(chunk, ctx - r0);
    if (!c.gemm(ab, kv, A, ckv + BigInt(r0 * L * eb), rc, N, L)) return false;
    c.launch(pack, [rc, H, 1], 128, 0, [knH, knL, vH, vL, kv, r0, ctx, H, Dn, Dv, DN, DV]);
  }
  const smem = 2 * (NP * 64 * (DN + DR + 16) + 2 * NP * BN * (DN + DR + 16) + 2 * NP * BN * (DV + 8));
  const kern = c.kernel(F.mlaFlash, `mla_flash_${DN}_${DR}_${DV}_${variant}`, 'ppppppppiiiiiiif');
  c.launch(kern, [H, Math.ceil(n / 64), 1], 128, smem, [c.ptr(out), c.ptr(q), knH, knL, krH, krL, vH, vL, n, seq.ctxStart, ctx, H, Dn, Dr, Dv, scale * Math.LOG2E]);
  return true;
}

/** mlaPrefillExpanded: the tensor-core flash path when it applies, else the absorbed kernels. */
export function cudaMlaPrefill(c: CudaContext, out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seq: MlaSeq, p: MlaParams): void {
  const n = checkMlaShapes(out, q, cache, kvB, p);
  for (const t of [out, q, kvB]) f32Act(t, 'mla prefill');
  cacheDtype(cache, 'mla prefill');
  if (n > 0 && cudaMlaPrefillFlash(c, out, q, cache, kvB, seq, p, n)) return;
  cudaMlaAttention(c, out, q, cache, kvB, seq, p);
}

/**
 * Decode (and prefill in the 'absorbed' mode) run the absorbed kernels (the same function of the inputs): q_nope·W_UK → latent
 * query, online-softmax attention over the latent cache, then W_UV. kvB is f32 ('vector' weight).
 */
export function cudaMlaAttention(c: CudaContext, out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seq: MlaSeq, p: MlaParams): void {
  const { nHeads: H, qkNope: Dn, qkRope: Dr, kvLora: L, scale } = p;
  const n = checkMlaShapes(out, q, cache, kvB, p);
  const cd = mlaChecks(c, out, q, cache, kvB, p);
  if (n === 0) return;
  const ctx = seq.ctxStart + n;
  // Decode (n = 1): a fixed split count and the block table padded to a power of two (≥ 64
  // blocks), so the arguments keep their shape as the context grows and a captured graph replays.
  const decode = n === 1 && H < 2 * c.info.sms;
  if (decode && mlaDecodeTc(c, cd, L, Dr)) return mlaDecodeTcRows(c, out, q, cache, kvB, [seq], p);
  // Split the context over more blocks when (query, head) pairs alone cannot fill the GPU.
  const S = decode ? MLA_DECODE_SPLITS : n * H >= 2 * c.info.sms ? 1 : Math.min(32, Math.max(1, Math.ceil(ctx / 64)));
  const { qlat, olat, part } = mlaScratch(c, n, S, p);
  mlaAbsorbQ(c, qlat, q, kvB, n, p);
  if (decode) {
    const { arg: metaArg } = mlaDecodeMeta(c, [seq], p.blockSize);
    const paged = c.kernel(F.mla, `mla_attend_paged_${cd}`, 'pppppiiiifi');
    c.launch(paged, [H, n, S], 128, 4 * (L + Dr), [part, qlat, c.ptr(q), c.ptr(cache), metaArg, H, Dn, Dr, L, scale, p.blockSize]);
  } else {
    const rows = cacheRows(seq, p.blockSize, 0, ctx, cache.shape[0], mlaCacheRow);
    const attend = c.kernel(F.mla, `mla_attend_${cd}`, 'pppppiiiiifi');
    c.launch(attend, [H, n, S], 128, 4 * (L + Dr), [part, qlat, c.ptr(q), c.ptr(cache), c.hostArg('mla-rows', rows), seq.ctxStart, H, Dn, Dr, L, scale, Math.ceil(ctx / S)]);
  }
  mlaMergeOut(c, out, olat, part, kvB, n, S, p);
}

/**
 * Ops.mlaDecodeBatch: one query per sequence (row i: seqs[i]). On the tensor-core kernel every
 * kernel is one launch for the whole batch; otherwise (f32 cache, other ranks) each row alone.
 */
export function cudaMlaDecodeBatch(c: CudaContext, out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seqs: readonly MlaSeq[], p: MlaParams): void {
  const n = checkMlaShapes(out, q, cache, kvB, p);
  assert(n === seqs.length, () => `mlaDecodeBatch: ${n} query rows for ${seqs.length} sequences`);
  const cd = mlaChecks(c, out, q, cache, kvB, p);
  if (n === 0) return;
  if (p.nHeads < 2 * c.info.sms && mlaDecodeTc(c, cd, p.kvLora, p.qkRope)) return mlaDecodeTcRows(c, out, q, cache, kvB, seqs, p);
  seqs.forEach((s, i) => cudaMlaAttention(c, out.rows(i, 1), q.rows(i, 1), cache, kvB, s, p));
}

/** Shape-independent checks of an MLA attention call; the cache's element type. */
function mlaChecks(c: CudaContext, out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, p: MlaParams): 'f32' | 'bf16' {
  for (const t of [out, q, kvB]) f32Act(t, 'mla attention');
  const cd = cacheDtype(cache, 'mla attention');
  // The bf16 kernels read a row's values in pairs: even-width rows keep them 4-byte aligned.
  if (cd === 'bf16') assert(c.ptr(cache) % 4n === 0n, () => `mla attention: bf16 cache at an address not 4-byte aligned`);
  assert(p.kvLora <= 1024, () => `mla: kv_lora_rank ${p.kvLora} over 1024 (the kernel's per-thread accumulators)`);
  return cd;
}

function mlaScratch(c: CudaContext, n: number, S: number, p: MlaParams): { qlat: bigint; olat: bigint; part: bigint } {
  const { nHeads: H, kvLora: L } = p;
  return { qlat: c.scratch('mla-qlat', n * H * L * 4), olat: c.scratch('mla-olat', n * H * L * 4), part: c.scratch('mla-part', n * H * S * (L + 2) * 4) };
}

/**
 * qlat [n, H, L] = each query's q_nope · W_UK: one output column a thread (H·n·ceil(L / 128)
 * blocks; at batch 1, 32 blocks left the GPU idle), from kv_b's bf16 twin where it has one (the
 * same values, half the bytes).
 */
function mlaAbsorbQ(c: CudaContext, qlat: bigint, q: Tensor, kvB: Tensor, n: number, p: MlaParams): void {
  const { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv, kvLora: L } = p;
  const kvB16 = c.bf16Twin(kvB), Z = Math.ceil(L / 128);
  if (kvB16 !== null) c.launch(c.kernel(F.mla, 'mla_absorbq_bf16', 'pppiiiii'), [H, n, Z], 128, 0, [qlat, c.ptr(q), kvB16, H, Dn, Dr, Dv, L]);
  else c.launch(c.kernel(F.mla, 'mla_absorbq_f32', 'pppiiiii'), [H, n, Z], 128, 0, [qlat, c.ptr(q), c.ptr(kvB), H, Dn, Dr, Dv, L]);
}

/** Merge the S split partials into olat, then out [n, H·Dv] = W_UV · olat per head. */
function mlaMergeOut(c: CudaContext, out: Tensor, olat: bigint, part: bigint, kvB: Tensor, n: number, S: number, p: MlaParams): void {
  const { nHeads: H, qkNope: Dn, vHead: Dv, kvLora: L } = p;
  c.launch(c.kernel(F.mla, 'mla_combine_f32', 'ppiii'), [H, n, Math.ceil(L / 128)], 128, 0, [olat, part, H, L, S]);
  const outs = n * H * Dv;
  c.launch(c.kernel(F.mla, 'mla_outproj_f32', 'pppiiiii'), [Math.ceil(outs / 8), 1, 1], 256, 0, [c.ptr(out), olat, c.ptr(kvB), n, H, Dn, Dv, L]);
}

/** The decode metadata of one-token sequences (step-args.ts fillMlaMeta), staged for the kernels. */
function mlaDecodeMeta(c: CudaContext, seqs: readonly MlaSeq[], bs: number): { arg: bigint; stride: number } {
  const stride = mlaMetaStride(seqs, bs), meta = new Int32Array(seqs.length * stride);
  for (const s of seqs) assert(Math.ceil((s.ctxStart + 1) / bs) <= s.blockTable.length, () => `MLA position ${s.ctxStart} beyond block table of ${s.blockTable.length} blocks of ${bs}`);
  fillMlaMeta(meta, 0, seqs, bs, stride);
  return { arg: c.hostArg('mla-meta', meta, { kind: 'mlaMeta', tables: seqs.map((s) => s.blockTable), blockSize: bs }), stride };
}

/**
 * Absorbed decode of n sequences, one query each, on the tensor-core kernel (mla-decode-tc.cu:
 * every head of a group of 32 per block, grid z = the sequence; metadata as mlaDecodeMeta).
 */
function mlaDecodeTcRows(c: CudaContext, out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seqs: readonly MlaSeq[], p: MlaParams): void {
  const { nHeads: H, qkNope: Dn, qkRope: Dr, kvLora: L, scale, blockSize: bs } = p;
  const n = seqs.length, S = MLA_DECODE_TC_SPLITS;
  const { qlat, olat, part } = mlaScratch(c, n, S, p);
  mlaAbsorbQ(c, qlat, q, kvB, n, p);
  const { arg: metaArg, stride } = mlaDecodeMeta(c, seqs, bs);
  // Shared memory: q hi + lo and 3 cache tiles of 32 rows (pitch P), scores, P hi + lo, stats.
  const P = L + Dr + 8, smem = (2 + 3) * 32 * P * 2 + 32 * 33 * 4 + 2 * 32 * 40 * 2 + 3 * 32 * 4;
  c.launch(c.kernel(F.mlaDecodeTc, 'mla_decode_tc_bf16', 'pppppiiiifi'), [S, Math.ceil(H / 32), n], 128, smem, [part, qlat, c.ptr(q), c.ptr(cache), metaArg, stride, H, Dn, Dr, scale, bs]);
  mlaMergeOut(c, out, olat, part, kvB, n, S, p);
}

export function cudaGqaCacheWrite(c: CudaContext, cache: Tensor, k: Tensor, v: Tensor, seq: KvSeq, p: GqaParams): void {
  const KD = p.nKvHeads * p.headDim;
  const n = k.shape[0];
  checkShape(k, [n, KD], 'gqaCacheWrite k');
  checkShape(v, [n, KD], 'gqaCacheWrite v');
  checkShape(cache, [-1, 2 * KD], 'gqaCacheWrite cache');
  for (const t of [k, v]) f32Act(t, 'gqaCacheWrite');
  const cd = cacheDtype(cache, 'gqaCacheWrite');
  if (n === 0) return;
  const rows = cacheRows(seq, p.blockSize, seq.ctxStart, seq.ctxStart + n, cache.shape[0], kvCacheRow);
  c.launch(c.kernel(F.gqa, `gqa_cachewrite_${cd}`, 'ppppi'), [n, 1, 1], rowThreads(2 * KD), 0, [c.ptr(cache), c.ptr(k), c.ptr(v), c.hostArg('gqa-write-rows', rows), KD]);
}

export function cudaGqaAttention(c: CudaContext, out: Tensor, q: Tensor, cache: Tensor, seq: KvSeq, p: GqaParams): void {
  const n = checkGqaShapes(out, q, cache, p);
  for (const t of [out, q]) f32Act(t, 'gqaAttention');
  const cd = cacheDtype(cache, 'gqaAttention');
  assert(p.headDim <= 1024, () => `gqa: head dim ${p.headDim} over 1024`);
  if (n === 0) return;
  const rows = cacheRows(seq, p.blockSize, 0, seq.ctxStart + n, cache.shape[0], kvCacheRow);
  const ctx = seq.ctxStart + n;
  const S = n * p.nHeads >= 2 * c.info.sms ? 1 : Math.min(128, Math.max(1, Math.ceil(ctx / 64)));
  if (S > 1) {
    // Decode: split the context so a few (head, query) pairs still fill the GPU; merged by mla_combine_f32.
    const part = c.scratch('gqa-part', n * p.nHeads * S * (p.headDim + 2) * 4);
    const split = c.kernel(F.gqa, `gqa_attend_split_${cd}`, 'ppppiiiifi');
    c.launch(split, [p.nHeads, n, S], 128, 4 * p.headDim, [part, c.ptr(q), c.ptr(cache), c.hostArg('gqa-rows', rows), seq.ctxStart, p.nHeads, p.nKvHeads, p.headDim, p.scale, Math.ceil(ctx / S)]);
    c.launch(c.kernel(F.mla, 'mla_combine_f32', 'ppiii'), [p.nHeads, n, Math.ceil(p.headDim / 128)], 128, 0, [c.ptr(out), part, p.nHeads, p.headDim, S]);
    return;
  }
  const kern = c.kernel(F.gqa, `gqa_attend_${cd}`, 'ppppiiiif');
  c.launch(kern, [p.nHeads, n, 1], 128, 4 * p.headDim, [c.ptr(out), c.ptr(q), c.ptr(cache), c.hostArg('gqa-rows', rows), seq.ctxStart, p.nHeads, p.nKvHeads, p.headDim, p.scale]);
}

export function cudaMoeRoute(c: CudaContext, ids: Tensor, weights: Tensor, logits: Tensor, bias: Tensor | null, p: RouterParams): void {
  const [T, E, K] = checkRoute(ids, weights, logits, bias, p);
  f32Act(weights, 'moeRoute weights');
  f32Act(logits, 'moeRoute logits');
  if (bias) f32Act(bias, 'moeRoute bias');
  const G = routeGroups(p);
  assert(G <= 128, () => `moeRoute: ${G} expert groups (the kernel handles up to 128)`);
  if (T === 0) return;
  const kern = c.kernel(F.moe, 'moe_route_f32', 'ppppiiiiiiff');
  const args = [c.ptr(ids), c.ptr(weights), c.ptr(logits), bias ? c.ptr(bias) : 0n, E, K, G, G > 0 ? (p.topkGroup as number) : 0, p.scoreFunction === 'softmax' ? 1 : 0, p.renormalize ? 1 : 0, p.renormEps, p.routedScalingFactor];
  c.launch(kern, [T, 1, 1], 128, 16 * E + 4 * E, args);
}

/**
 * Routed experts as gathered GEMVs: h = silu(G_e x)⊙(U_e x) per (token, k), y = W2_e h, then a
 * weighted sum over k in order. Expert ids are trusted (they come from moeRoute on the device).
 * Tokens go in chunks so the h/y scratch stays bounded.
 */
export function cudaMoeExperts(c: CudaContext, out: Tensor, x: Tensor, ids: Tensor, weights: Tensor, w13: Tensor, w2: Tensor, ffn: number): void {
  const [T, C] = x.shape;
  const K = ids.shape[1];
  const Fw = ffn;
  checkShape(out, [T, C], 'moeExperts out');
  checkShape(ids, [T, K], 'moeExperts ids');
  checkShape(weights, [T, K], 'moeExperts weights');
  assert(ids.dtype === 'i32', () => `moeExperts ids must be i32, found ${ids.dtype}`);
  assert(Fw > 0 && w13.shape[0] % (2 * Fw) === 0, () => `moeExperts: w13 rows ${w13.shape[0]} not a multiple of 2·${Fw}`);
  const E = w13.shape[0] / (2 * Fw);
  checkShape(w13, [E * 2 * Fw, C], 'moeExperts w13');
  checkShape(w2, [E * C, Fw], 'moeExperts w2');
  assert(w13.dtype === w2.dtype && (w13.dtype === 'bf16' || w13.dtype === 'f32'), () => `moeExperts: weights ${w13.dtype}/${w2.dtype}`);
  for (const t of [out, x, weights]) f32Act(t, 'moeExperts');
  // bf16 inputs: every path below reads x through a rounded copy and rounds silu(g)·u before the down projection.
  if (c.bf16Inputs) x = new Tensor('f32', x.shape, { kind: 'device', ptr: roundedCopy(c, 'moe-xr', c.ptr(x), T * C), bytes: T * C * 4 });
  if (moeExpertsFast(c, out, x, ids, weights, w13, w2, Fw)) return;
  const chunk = Math.max(1, Math.min(T, Math.floor(4096 / K)));
  const h = c.scratch('moe-h', chunk * K * Fw * 4);
  const y = c.scratch('moe-y', chunk * K * C * 4);
  const up = c.kernel(F.moe, `moe_up_${w13.dtype}`, 'ppppiii');
  const down = c.kernel(F.moe, `moe_down_${w2.dtype}`, 'ppppii');
  const combine = c.kernel(F.moe, 'moe_combine_f32', 'ppplii');
  for (let t0 = 0; t0 < T; t0 += chunk) {
    const tc = Math.min(chunk, T - t0);
    const idp = c.ptr(ids.rows(t0, tc));
    c.launch(up, [Math.ceil(Fw / 8), tc * K, 1], 256, 0, [h, c.ptr(x.rows(t0, tc)), idp, c.ptr(w13), K, C, Fw]);
    if (c.bf16Inputs) roundedCopy(c, null, h, tc * K * Fw);
    c.launch(down, [Math.ceil(C / 8), tc * K, 1], 256, 0, [y, h, idp, c.ptr(w2), C, Fw]);
    c.launch(combine, strideGrid(tc * C), 256, 0, [c.ptr(out.rows(t0, tc)), y, c.ptr(weights.rows(t0, tc)), tc, K, C]);
  }
}
