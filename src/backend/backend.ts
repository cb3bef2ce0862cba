/**
 * The Backend interface: memory (alloc / upload / download / sync / dispose) plus the op table.
 * Ops are destination-passing, outputs first, and never allocate tensors visible to the caller.
 * Shape glossary (DESIGN §3): T tokens, C hidden, H heads, D head dim, Dn/Dr MLA nope/rope dims,
 * L kv_lora_rank, E experts, K experts per token, F FFN width, V vocab, KVH key/value heads (GQA).
 */
import type { Dtype, HostArray, Tensor } from '../tensor/tensor.js';

export type BackendName = 'cpu' | 'reference' | 'cuda';

/**
 * What the weight matmuls (ops.matmul, and the routed experts' projections inside moeExperts) take
 * as input. 'f32': the activations as they are (the GPU splits them into bf16 hi + lo so its tensor
 * cores stay f32-faithful). 'bf16': each input rounded to bf16 (nearest even) first and the products
 * accumulated in fp32 — what a bf16 engine computes at its GEMMs, at half the tensor-core work;
 * prefill attention then takes bf16 operands too: mlaPrefillExpanded's q, latent rows, k_nope and
 * v as expanded and k_pe (probabilities kept f32), lightningPrefill's q, k and v (the decayed
 * scores and values and the state kept f32). Norms, decode attention, recurrent states and the
 * residual stream stay f32 either way. Every backend implements both exactly, so the CPU stays the
 * GPU's reference in either mode.
 */
export type MatmulInputs = 'f32' | 'bf16';

/**
 * Source of a weight: raw little-endian bytes of checkpoint tensors, concatenated along dim 0
 * (one part, or several when gate/up or experts are stacked; no part is over 2 GiB).
 */
export interface WeightSource {
  readonly dtype: 'f32' | 'bf16' | 'f16';
  readonly shape: readonly number[];
  readonly parts: readonly Uint8Array[];
}

/**
 * How a weight is used decides its storage: 'matrix' weights (matmul right-hand sides, embedding
 * tables, stacked experts) may stay in bf16; 'vector' weights (norms, biases, small matrices read
 * inside attention ops) are stored in the activation dtype.
 */
export type WeightUse = 'matrix' | 'vector';

export interface RopeSpec {
  readonly style: 'neox' | 'gptj';
  /** Heads per row, distance between heads (elements), offset of the rotary part inside a head. */
  readonly nHeads: number;
  readonly headStride: number;
  readonly offset: number;
  /** Rotated dims (even); pairs are (i, i+rotaryDim/2) for neox, (2i, 2i+1) for gptj. */
  readonly rotaryDim: number;
  /** rotaryDim/2 inverse frequencies; angle = position · invFreq[i]. */
  readonly invFreq: Float64Array;
}

export interface LightningParams {
  readonly nHeads: number;
  readonly headDim: number;
  /** Per-token log-decay rate s_h > 0 per head (λ_h = exp(-s_h)), layer factor already applied. */
  readonly decay: Float64Array;
  /** Multiplies q (D^-0.5). */
  readonly scale: number;
  /** Prefill chunk length (any ≥ 1; 1 is the plain recurrence). */
  readonly chunk: number;
  /**
   * vLLM's lightning prefill (spec §4.6): 256-token blocks aligned to the call's first token, the
   * inter-block term decayed by exp(-s·t) instead of exp(-s·(t+1)). Requires chunk = 256.
   */
  readonly vllmPrefillQuirk: boolean;
  /** Round the state to bf16 after each prefill call / decode step (vLLM's default state dtype). */
  readonly stateBf16: boolean;
}

export interface MlaParams {
  readonly nHeads: number;
  readonly qkNope: number; // Dn
  readonly qkRope: number; // Dr
  readonly vHead: number; // Dv
  readonly kvLora: number; // L
  /** Softmax scale ((Dn+Dr)^-0.5). */
  readonly scale: number;
  /** Tokens per latent-cache block. */
  readonly blockSize: number;
}

/** One sequence's view of a paged MLA latent cache. */
export interface MlaSeq {
  /** Physical block ids; token p lives in row blockTable[p/blockSize]*blockSize + p%blockSize. */
  readonly blockTable: Int32Array;
  /** Tokens already in the cache before this call's tokens (their positions start here). */
  readonly ctxStart: number;
}

export interface GqaParams {
  readonly nHeads: number; // H query heads
  readonly nKvHeads: number; // KVH; query head h reads KV head floor(h / (H/KVH))
  readonly headDim: number; // D
  /** Softmax scale (D^-0.5). */
  readonly scale: number;
  /** Tokens per KV-cache block. */
  readonly blockSize: number;
}

/** One sequence's view of a paged GQA KV cache (same paging as the MLA latent cache). */
export type KvSeq = MlaSeq;

export interface RouterParams {
  readonly nExperts: number; // E
  readonly topK: number; // K
  /** Group-limited selection when both are set (E % nGroup == 0); else plain top-k. */
  readonly nGroup: number | null;
  readonly topkGroup: number | null;
  readonly scoreFunction: 'sigmoid' | 'softmax';
  readonly renormalize: boolean;
  /** Added to the sum when renormalising (official code: 1e-20; vLLM: 0). */
  readonly renormEps: number;
  readonly routedScalingFactor: number;
}

/** This rank's piece of a vocab-parallel embedding table. */
export interface VocabPiece {
  readonly start: number;
  readonly count: number;
  /** Local row of zeros that ids outside the piece read (their sum over ranks is the full row). */
  readonly zeroRow: number;
}

export interface Ops {
  /**
   * out [T,C] = table [V,C] rows ids[t]. `piece` (vocab-parallel TP): ids are global and the table
   * holds only rows [start, start + count) and a zero row (pieceIds).
   */
  embedding(out: Tensor, table: Tensor, ids: Int32Array, piece?: VocabPiece): void;
  /** out [T,C] = x · rsqrt(mean(x²)+eps) · w [C]. out may alias x. */
  rmsnorm(out: Tensor, x: Tensor, w: Tensor, eps: number): void;
  /** residual [T,C] += x (in place); out = rmsnorm(residual)·w. */
  addRmsnorm(out: Tensor, residual: Tensor, x: Tensor, w: Tensor, eps: number): void;
  /** out [T,N] = x [T,K] · w [N,K]ᵀ (+ bias [N]). w may be bf16. */
  matmul(out: Tensor, x: Tensor, w: Tensor, bias: Tensor | null): void;
  /** Per-head RMSNorm: x, out [T, H·D] normalised over each D-slice, times w [D]. out may alias x. */
  headRmsnorm(out: Tensor, x: Tensor, w: Tensor, headDim: number, eps: number): void;
  /** Rotary embedding in place on x [T, W]; positions[t] is row t's absolute position. */
  rope(x: Tensor, positions: Int32Array, spec: RopeSpec): void;
  /** out = silu(x), elementwise. out may alias x. */
  silu(out: Tensor, x: Tensor): void;
  /** out [T,F] = silu(gu[:, :F]) ⊙ gu[:, F:]  with gu [T, 2F]. */
  siluMul(out: Tensor, gu: Tensor): void;
  /** out = a + b, elementwise. out may alias a or b. */
  add(out: Tensor, a: Tensor, b: Tensor): void;
  /** out [R, W] = x [·, W] rows idx[r]. */
  gatherRows(out: Tensor, x: Tensor, idx: Int32Array): void;
  /** Round every element through bf16 in place (vLLM compat: router logits). */
  roundBf16(x: Tensor): void;
  /**
   * Lightning attention prefill for one sequence segment: q, k, v, o [n, H·D]; state [H, D, D]
   * (k-major, fp32) carries in and out. Canonical math: S = λ·S + kᵀv, o = scale·q·S.
   */
  lightningPrefill(o: Tensor, q: Tensor, k: Tensor, v: Tensor, state: Tensor, p: LightningParams): void;
  /**
   * Lightning attention decode, one token for each of B sequences: q, k, v, o [B, H·D];
   * states [slots, H, D, D]; slots[b] is row b's state slot.
   */
  lightningDecode(o: Tensor, q: Tensor, k: Tensor, v: Tensor, states: Tensor, slots: Int32Array, p: LightningParams): void;
  /** out [T, H·D] = rmsnorm over `groups` contiguous channel groups of x, ·w [H·D], ·sigmoid(gate). */
  groupRmsnormGate(out: Tensor, x: Tensor, gate: Tensor, w: Tensor, groups: number, eps: number): void;
  /** Write n latent entries ([ckv (L) | kpe (Dr)] per token) of one sequence at positions ctxStart.. into cache [rows, L+Dr]. */
  mlaCacheWrite(cache: Tensor, ckv: Tensor, kpe: Tensor, seq: MlaSeq, p: MlaParams): void;
  /**
   * MLA attention, expanded form (prefill): q [n, H·(Dn+Dr)] (rope applied), cache holds
   * ctxStart+n tokens; kvB [H·(Dn+Dv), L]; out [n, H·Dv]. Query i attends to tokens ≤ ctxStart+i.
   */
  mlaPrefillExpanded(out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seq: MlaSeq, p: MlaParams): void;
  /** Same contract as mlaPrefillExpanded, absorbed form (decode): W_UK folded into q, W_UV applied after. */
  mlaDecodeAbsorbed(out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seq: MlaSeq, p: MlaParams): void;
  /**
   * Decode of several sequences at once: row i of q [n, H·(Dn+Dr)] is the one new token of seqs[i]
   * (at position seqs[i].ctxStart, already in the cache), out [n, H·Dv]; each row equals
   * mlaDecodeAbsorbed of that sequence alone (a GPU does all of them in one launch per kernel).
   */
  mlaDecodeBatch(out: Tensor, q: Tensor, cache: Tensor, kvB: Tensor, seqs: readonly MlaSeq[], p: MlaParams): void;
  /** Write n tokens' k, v [n, KVH·D] of one sequence at positions ctxStart.. into cache [rows, 2·KVH·D] (row = [k | v]). */
  gqaCacheWrite(cache: Tensor, k: Tensor, v: Tensor, seq: KvSeq, p: GqaParams): void;
  /**
   * Causal softmax attention of one sequence over its paged KV cache: q [n, H·D] (rope applied),
   * cache holds ctxStart+n tokens; out [n, H·D]. Query i attends to tokens ≤ ctxStart+i.
   */
  gqaAttention(out: Tensor, q: Tensor, cache: Tensor, seq: KvSeq, p: GqaParams): void;
  /**
   * MoE router: logits [T,E] (fp32), bias [E] or null (selection only) → ids [T,K] i32 and
   * weights [T,K] (renormalised per p, times routedScalingFactor).
   */
  moeRoute(ids: Tensor, weights: Tensor, logits: Tensor, bias: Tensor | null, p: RouterParams): void;
  /**
   * Routed experts: out [T,C] = Σ_k weights[t,k] · W2_e(silu(G_e x_t) ⊙ U_e x_t), e = ids[t,k].
   * w13 [E·2F, C] (per expert F gate rows then F up rows), w2 [E·C, F]. out is overwritten.
   */
  moeExperts(out: Tensor, x: Tensor, ids: Tensor, weights: Tensor, w13: Tensor, w2: Tensor, ffn: number): void;
  /**
   * Tensor parallelism (spec §7): x [T, W] ← the sum of every rank's x, in place. The identity on
   * a backend with one rank.
   */
  allReduceSum(x: Tensor): void;
  /**
   * out [R, W] = every rank's x [R, w] side by side (rank r's at columns r·w ..), cut to W ≤ ranks·w
   * columns (the vocabulary padding of the last rank). With one rank: the first W columns of x.
   */
  allGatherCols(out: Tensor, x: Tensor): void;
}

/**
 * Host-memory collectives among tensor-parallel ranks (the CPU backend's; the CUDA backend uses
 * NCCL). Every rank calls each method in the same order with the same lengths.
 */
export interface HostComm {
  readonly rank: number;
  readonly size: number;
  /** data ← Σ over ranks of data, summed in rank order so every rank gets identical bits. */
  allReduceSum(data: Float32Array): void;
  /** out (size·x.length) = the ranks' x concatenated in rank order. */
  allGather(out: Float32Array, x: Float32Array): void;
}

/** A sequence's cache state as a step sees it (cache/hybrid-cache.ts CacheSeq has this shape). */
export interface StepSeqState {
  /** Tokens whose cache entries exist; a step advances it to ctxStart + len. */
  length: number;
  readonly slot: number;
  readonly blockTable: Int32Array;
}

/**
 * What a backend may look at of a model step (model/step.ts StepBatch has this shape): enough to
 * replay a captured step without running the model's host code (cuda/step-args.ts).
 */
export interface StepShape {
  readonly ids: Int32Array;
  readonly positions: Int32Array;
  readonly sampleRows: Int32Array;
  readonly seqs: readonly { readonly start: number; readonly len: number; readonly ctxStart: number; readonly seq: StepSeqState }[];
}

export interface Backend {
  readonly name: BackendName;
  /** Activation dtype (f64 for the reference backend, f32 on CPU). */
  readonly actDtype: Dtype;
  readonly ops: Ops;
  /** Zero-filled tensor. */
  alloc(dtype: Dtype, shape: readonly number[]): Tensor;
  /** A weight in the storage this backend chooses for its use. */
  loadWeight(src: WeightSource, use: WeightUse): Tensor;
  /** Copy host values into t (converting to t's dtype). */
  upload(t: Tensor, src: ArrayLike<number>): void;
  /** Copy t out as float32 (float64 values are rounded). */
  download(t: Tensor): Float32Array;
  /** Wait for queued work (no-op on host backends). */
  sync(): void;
  /** Release threads and memory; the backend is unusable afterwards. */
  dispose(): void;
  /**
   * Run one model step (`forward` enqueues it). Backends that can replay a captured step (CUDA
   * graphs for pure decode steps) do so here; absent: callers run forward() directly. `scope`
   * names what the captured launches point into (the model and its cache): replays never cross scopes.
   * `tp`: under tensor parallelism every rank must run a step the same way (see StepSync).
   */
  runStep?(batch: StepShape, forward: () => Tensor, scope: readonly object[], tp?: StepSync): Tensor;
  /**
   * Optional: sample every row of logits [R, V] (f32, left unmodified) where they are, exactly as
   * ops/sample/sample.ts sampleRowHost would with the same rows (ties and rounding included; only
   * a draw or cut within ~1e-7 relative of a mass boundary may differ), and return only the result
   * (synchronous). Absent: callers download the logits and sample on the host.
   */
  sampleRows?(logits: Tensor, args: SampleRowsArgs): SampleRowsResult;
}

/** Rows for Backend.sampleRows; layout and packing in ops/sample/sample.ts (packSampleRows). */
export interface SampleRowsArgs {
  /** [R, SAMPLE_PARAM_WORDS] f64: each row's parameters, u and penalty-list segments. */
  readonly params: Float64Array;
  /** Penalty token ids and counts (the rows' segments). */
  readonly penTokens: Int32Array;
  readonly penCounts: Int32Array;
  /** Whether any row asks for logprobs. */
  readonly logprobs: boolean;
}

export interface SampleRowsResult {
  /** [R] token ids (negative: an error code, see ops/sample/sample.ts). */
  readonly tokens: Int32Array;
  /** [R, SAMPLE_LP_STRIDE] when args.logprobs: the token's logprob, then (token, logprob) best first. */
  readonly logprobs: Float64Array | null;
}

/** How a step ran: eagerly, captured as a graph (and launched), or a captured graph replayed. */
export type StepMode = 'eager' | 'capture' | 'replay';

/**
 * Tensor parallelism: whether an NCCL call is graph-captured must be the same on every rank, and a
 * graph launch must pair with the graphs the other ranks captured in the same step. Rank 0 decides
 * and announces its mode before enqueueing any GPU work (the other ranks get it with the step's
 * inputs); the others follow it and fail loudly where they cannot.
 */
export type StepSync = { readonly announce: (mode: StepMode) => void } | { readonly follow: StepMode };

export type { HostArray };
