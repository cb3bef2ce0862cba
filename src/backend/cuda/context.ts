/**
 * What the CUDA op launchers share: the driver, the one stream everything is ordered on, kernels,
 * grow-only scratch buffers, small host-argument uploads and the cuBLASLt GEMM. Owned by
 * CudaBackend and passed to every launcher (no globals).
 */
import { dtypeBytes, type Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { KernelCache, type Kernel } from './compile.js';
import { CUDA_R_16BF, CUDA_R_32F, alignmentOf, type CudaDriver, type DeviceInfo, type Handle, type LtPlan } from './driver.js';
import { DeviceAllocator, type DeviceBuffer } from './memory.js';
import type { ArgHint, StagedArg } from './step-args.js';

const LT_WORKSPACE = 32 << 20;
/** Step-argument arena (graph staging): every host argument of one decode step, 16-byte aligned. */
const STAGE_BYTES = 8 << 20;

/**
 * How host-side launchers behave (see step-graph.ts):
 * - 'eager': launches run, hostArg uploads at once (the plain path);
 * - 'record': launches are being captured into a graph; hostArg writes into the step-argument
 *   arena, whose device copy the graph reads;
 * - 'fill': a replay's host pass — launches and GEMMs are skipped, hostArg refills the arena.
 */
export type LaunchMode = 'eager' | 'record' | 'fill';

/** A staging pass hit something only an eager step may do (scratch growth, a new GEMM plan, a full arena). */
export class StagingMiss extends Error {}

/** Per-kernel device time from events recorded around each launch (benchmarks only). */
export interface KernelProfile {
  readonly totals: Map<string, { ms: number; launches: number }>;
  /** Events in flight: name, start, end. */
  readonly pending: { name: string; a: Handle; b: Handle }[];
  readonly pool: Handle[];
}

export type MlaPrefillMode = 'flash-split' | 'flash-bf16' | 'absorbed';
export type LightningPrefillMode = 'tc-split' | 'tc-bf16' | 'recurrent';
export type MoePrefillMode = 'cublas' | 'grouped';
export type MlaDecodeMode = 'tc' | 'cuda-core';

/** The mode environment variable `name` names (unset or empty: the first of `modes`, the default). */
function envMode<M extends string>(name: string, modes: readonly M[]): M {
  const v = process.env[name];
  const m = modes.find((x) => x === (v || modes[0]));
  assert(m !== undefined, () => `${name}=${v}: expected one of ${modes.join(', ')}`);
  return m;
}

function positiveInt(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  assert(Number.isInteger(n) && n > 0, () => `${name}=${v}: expected a positive integer`);
  return n;
}

export class CudaContext {
  readonly ctx: Handle;
  readonly stream: Handle;
  readonly info: DeviceInfo;
  readonly mem: DeviceAllocator;
  readonly kernels: KernelCache;
  private readonly lt: Handle;
  private readonly plans = new Map<string, LtPlan | null>();
  private readonly scratchBufs = new Map<string, DeviceBuffer>();
  private readonly smemSet = new Map<Kernel, number>();
  /**
   * bf16-weight GEMMs split the f32 activations into bf16 hi + lo and run two GEMMs, so the large-T
   * path computes what the GEMV path and the CPU backend compute (f32-faithful); false: one GEMM
   * on bf16-rounded activations (twice as fast, NMSE ~1e-6 per matmul).
   */
  gemmSplit = process.env.BAILING_GEMM_SPLIT !== '0';
  /**
   * MatmulInputs 'bf16' (backend.ts): weight-matmul inputs rounded to bf16, one bf16 GEMM (no split);
   * set through CudaBackendOptions.matmulInputs, which also clears gemmSplit and moeSplit.
   */
  bf16Inputs = false;
  /** The routed-expert prefill GEMMs' split (as gemmSplit; the op tests run both variants). */
  moeSplit = this.gemmSplit;
  /**
   * MLA prefill (mlaPrefillExpanded): 'flash-split' expands K/V with an f32 GEMM and runs the
   * tensor-core flash kernel on bf16 hi + lo operands (three MMAs per product, near f32), or with
   * bf16Inputs on bf16 q, k, v and hi + lo probabilities (the CPU's numbers in that mode);
   * 'flash-bf16' on bf16 operands and probabilities (one MMA, ~1e-5 NMSE per call, measurement
   * only); 'absorbed' the CUDA-core absorbed kernels decode uses. BAILING_MLA_PREFILL overrides.
   */
  mlaPrefill: MlaPrefillMode = envMode<MlaPrefillMode>('BAILING_MLA_PREFILL', ['flash-split', 'flash-bf16', 'absorbed']);
  /**
   * MoE prefill (steps of at least moeGemmMinT tokens, tokens permuted by expert): 'grouped'
   * (default) one launch of our grouped GEMM per projection (moe-grouped.cu) with SiLU·mul in the
   * gate/up epilogue; 'cublas' one cuBLASLt GEMM per expert and projection (host-bound: ~2·E calls
   * a layer). Both honour moeSplit. BAILING_MOE_PREFILL overrides.
   */
  moePrefill: MoePrefillMode = envMode<MoePrefillMode>('BAILING_MOE_PREFILL', ['grouped', 'cublas']);
  /**
   * Lightning prefill at D = 128, canonical semantics: 'tc-split' (default) the chunked tensor-core
   * kernel on bf16 hi + lo operands (three MMAs per product, near f32), or with bf16Inputs on bf16
   * q, k, v and hi + lo for everything made from them (the CPU's numbers in that mode); 'tc-bf16' one
   * MMA on bf16 operands (benchmarks only); 'recurrent' the token-by-token CUDA-core kernel (which
   * rounds q, k, v with bf16Inputs too). BAILING_LIGHTNING_PREFILL overrides.
   */
  lightningPrefill: LightningPrefillMode = envMode<LightningPrefillMode>('BAILING_LIGHTNING_PREFILL', ['tc-split', 'tc-bf16', 'recurrent']);
  /** MLA decode kernel (BAILING_MLA_DECODE): 'tc' (tensor cores, when mlaDecodeTc allows) or 'cuda-core'. */
  mlaDecode: MlaDecodeMode = envMode<MlaDecodeMode>('BAILING_MLA_DECODE', ['tc', 'cuda-core']);
  /**
   * Smallest step (> 8 tokens) that takes the grouped expert GEMMs (BAILING_MOE_GEMM_MIN_T; tests
   * lower it) instead of the segmented GEMVs: 16. Flash cut, H100, decode with graphs: batch 64
   * 28.0 → 21.4 ms, batch 256 91.1 → 52.7 ms (each expert's weights read once a step, not once per
   * 8-pair segment); batch 32 15.2 → 13.4 ms, batch 16 9.50 → 9.32 ms. moePrefill 'cublas' sorts
   * on the host: inside a decode graph it runs segmented.
   */
  moeGemmMinT: number = positiveInt('BAILING_MOE_GEMM_MIN_T', process.env.BAILING_MOE_GEMM_MIN_T, 16);
  /**
   * Largest step of a dense matmul on the GEMV kernels (BAILING_GEMV_MAX_T, ≤ 8; null: gemvRows()'s
   * default); larger steps use cuBLASLt.
   */
  gemvMaxT: number | null = process.env.BAILING_GEMV_MAX_T ? Math.min(8, positiveInt('BAILING_GEMV_MAX_T', process.env.BAILING_GEMV_MAX_T, 8)) : null;
  /**
   * Tokens per pass of the MoE prefill GEMMs (BAILING_MOE_CHUNK): each pass reads every hit expert's
   * weights once, and its permuted scratch grows with it (~0.15 MB a token at K = 8). 8192, the
   * engine's whole default CUDA step: an 8k prefill of the flash cut took 84.0 ms against 92.4 ms in
   * passes of 4096 (bf16 inputs; f32 138.2 vs 149.1 ms; H100, bench/RESULTS.md).
   */
  moeChunk: number = positiveInt('BAILING_MOE_CHUNK', process.env.BAILING_MOE_CHUNK, 8192);
  /** When set, every launch is bracketed by events and timed per kernel name (costs ~µs a launch). */
  profile: KernelProfile | null = null;
  mode: LaunchMode = 'eager';
  /**
   * Counts everything that may write device memory: launches, GEMMs, collectives, host-to-device
   * copies (noteWrite), counted the same way in every LaunchMode, so that a value derived from device
   * memory (castMemo) can tell it is still current and every staging pass makes the same choices.
   */
  writes = 0;
  /**
   * The last activation cudaMatmul converted to bf16 ('x': hi in scratch matmul-xhi; 'split': hi
   * and lo in matmul-xhi / matmul-xlo), valid while `writes` is still `at`: consecutive matmuls of
   * one input (q, k, v and g of a lightning layer) convert it once.
   */
  castMemo: { key: string; at: number } | null = null;
  /** Bumped whenever a scratch buffer is replaced: captured graphs holding the old address are stale. */
  scratchGeneration = 0;
  private stageHost: Uint8Array | null = null;
  private stageDev: DeviceBuffer | null = null;
  private stageUsed = 0;
  /** (key, bytes) of each staged argument in order: a graph is only valid for the same layout. */
  private stageLayout: string[] = [];
  /** Where each argument of the current staging pass sits and how it follows from the step. */
  private stagedArgs: StagedArg[] = [];

  constructor(
    readonly driver: CudaDriver,
    ordinal: number,
    cacheDir?: string,
  ) {
    const n = driver.deviceCount();
    assert(ordinal >= 0 && ordinal < n, () => `CUDA device ${ordinal} requested, ${n} present`);
    this.info = driver.deviceInfo(ordinal);
    this.ctx = driver.contextRetain(ordinal);
    this.stream = driver.streamCreate();
    this.mem = new DeviceAllocator(driver);
    // sm_90 builds as sm_90a (arch-specific features: wgmma in moe-grouped.cu); such cubins run on 9.0 only.
    this.kernels = new KernelCache(driver, `sm_${this.info.major}${this.info.minor}${this.info.major === 9 && this.info.minor === 0 ? 'a' : ''}`, cacheDir);
    this.lt = driver.ltCreate();
  }

  kernel(file: string, name: string, sig: string): Kernel {
    return this.kernels.get(file, name, sig);
  }

  /** Something outside launch / gemm / hostArg is about to write device memory (see `writes`). */
  noteWrite(): void {
    this.writes++;
  }

  launch(k: Kernel, grid: readonly [number, number, number], block: number, smem: number, args: readonly (number | bigint)[]): void {
    this.writes++;
    if (this.mode === 'fill') return;
    if (smem > 48 * 1024 && (this.smemSet.get(k) ?? 0) < smem) {
      assert(smem <= this.info.smemOptin, () => `${k.name}: ${smem} bytes of shared memory, the device allows ${this.info.smemOptin}`);
      this.driver.funcMaxDynamicSmem(k.fn, smem);
      this.smemSet.set(k, smem);
    }
    this.timed(k.name, () => this.driver.launch(k.fn, k.name, grid, [block, 1, 1], smem, this.stream, k.sig, args));
  }

  /** Enqueue through `enqueue`, bracketed by events when profiling (launches, GEMMs, collectives). */
  timed(name: string, enqueue: () => void): void {
    const p = this.profile;
    if (!p) return enqueue();
    const ev = (): Handle => p.pool.pop() ?? this.driver.eventCreate();
    const a = ev(), b = ev();
    this.driver.eventRecord(a, this.stream);
    enqueue();
    this.driver.eventRecord(b, this.stream);
    p.pending.push({ name, a, b });
  }

  /** Wait for the stream and add the pending launches' times into profile.totals. */
  flushProfile(): void {
    const p = this.profile;
    if (!p) return;
    this.sync();
    for (const { name, a, b } of p.pending) {
      const t = p.totals.get(name) ?? { ms: 0, launches: 0 };
      t.ms += this.driver.eventElapsed(a, b);
      t.launches++;
      p.totals.set(name, t);
      p.pool.push(a, b);
    }
    p.pending.length = 0;
  }

  startProfile(): void {
    this.profile = { totals: new Map(), pending: [], pool: this.profile?.pool ?? [] };
  }

  stopProfile(): Map<string, { ms: number; launches: number }> {
    this.flushProfile();
    const p = this.profile;
    this.profile = null;
    if (p) for (const e of p.pool) this.driver.eventDestroy(e);
    return p?.totals ?? new Map();
  }

  /**
   * bf16 copies of f32 weights whose values are bf16 (matrices loaded for f32 use from a bf16
   * checkpoint: the router, MLA's kv_b): with bf16Inputs both operands of their GEMMs are then
   * bf16 values, so a bf16 tensor-core GEMM forms exactly the f32 GEMM's products.
   */
  private readonly twins: { base: bigint; bytes: number; twin: bigint }[] = [];

  /** Record `twin` (bf16) as holding exactly the values of `f32`. */
  addBf16Twin(f32: Tensor, twin: Tensor): void {
    assert(f32.dtype === 'f32' && twin.dtype === 'bf16' && f32.numel === twin.numel, () => `bf16 twin ${twin} of ${f32}`);
    this.twins.push({ base: this.ptr(f32), bytes: f32.numel * 4, twin: this.ptr(twin) });
  }

  /** The bf16 copy of f32 tensor view t (of a weight with a twin), or null. */
  bf16Twin(t: Tensor): bigint | null {
    if (t.dtype !== 'f32') return null;
    const p = this.ptr(t);
    const e = this.twins.find((x) => p >= x.base && p + BigInt(t.numel * 4) <= x.base + BigInt(x.bytes));
    return e ? e.twin + (p - e.base) / 2n : null;
  }

  /** Device address of a tensor view (storage base + element offset). */
  ptr(t: Tensor): bigint {
    assert(t.storage.kind === 'device', () => `${t} is not in device memory`);
    return t.storage.ptr + BigInt(t.offset * dtypeBytes[t.dtype]);
  }

  /**
   * Rows up to which a dense matmul runs on the GEMV kernels: gemvMaxT when set; else 1 with bf16
   * inputs, where from 2 rows cuBLASLt reads the weights at a better rate than the GEMV kernels,
   * which re-read x per weight row (H100 flash cut, decode with graphs: batch 2 2.97 → 2.87 ms,
   * batch 4 4.76 → 3.97, batch 8 9.11 → 6.17), and all 8 with f32 inputs, where the GEMV multiplies
   * the f32 values exactly and cuBLASLt would take them as bf16 hi + lo (16 significant bits).
   */
  gemvRows(): number {
    return this.gemvMaxT ?? (this.bf16Inputs ? 1 : 8);
  }

  /** A device buffer of at least `bytes` under `key`, grown (never shrunk) on demand. */
  scratch(key: string, bytes: number): bigint {
    const cur = this.scratchBufs.get(key);
    if (cur && cur.bytes >= bytes) return cur.ptr;
    if (this.mode !== 'eager') throw new StagingMiss(`scratch ${key} grows to ${bytes} bytes`);
    if (cur) {
      this.driver.streamSync(this.stream); // queued work may still read the old buffer
      this.mem.free(cur);
      this.scratchGeneration++;
    }
    const buf = this.mem.alloc(Math.max(bytes, 4096), 'scratch');
    this.scratchBufs.set(key, buf);
    return buf.ptr;
  }

  /**
   * Upload a small host array (ids, positions, block rows, decay rates) to a scratch buffer;
   * stream-ordered. `hint` says how the value follows from the step, so a captured graph can be
   * replayed by writing it directly (step-args.ts); null: only through the staging pass.
   */
  hostArg(key: string, a: Int32Array | Float64Array, hint: ArgHint = null): bigint {
    this.writes++;
    if (this.mode !== 'eager') return this.stage(key, a, hint);
    const p = this.scratch(key, a.byteLength);
    this.driver.htod(p, a, this.stream);
    return p;
  }

  /** Start a staging pass ('record' or 'fill'): the arena is refilled from its start. */
  beginStaging(mode: 'record' | 'fill'): void {
    if (!this.stageDev) {
      // Allocated once, before any graph exists (graphs hold its address).
      this.stageDev = this.mem.alloc(STAGE_BYTES, 'graph-args');
      this.stageHost = new Uint8Array(STAGE_BYTES);
    }
    this.mode = mode;
    this.castMemo = null; // every pass starts from the same state
    this.stageUsed = 0;
    this.stageLayout = [];
    this.stagedArgs = [];
  }

  /** The arguments of the last staging pass, in order. */
  staged(): readonly StagedArg[] {
    return this.stagedArgs;
  }

  /** A copy of the arena bytes the last staging pass wrote. */
  stagedImage(): Uint8Array {
    return this.stageHost!.slice(0, this.stageUsed);
  }

  /** One HtoD copy of a graph's own argument image into the arena (direct replay). */
  uploadImage(img: Uint8Array): void {
    this.writes++; // a graph launch follows: it writes device memory outside launch / gemm
    if (img.byteLength > 0) this.driver.htod(this.stageDev!.ptr, img, this.stream);
  }

  /** Back to eager launches; the staged layout's signature. */
  endStaging(): string {
    this.mode = 'eager';
    this.castMemo = null;
    return this.stageLayout.join(';');
  }

  /** One HtoD copy of the staged step arguments, stream-ordered before the graph that reads them. */
  uploadStaged(): void {
    this.writes++; // as uploadImage
    if (this.stageUsed > 0) this.driver.htod(this.stageDev!.ptr, this.stageHost!.subarray(0, this.stageUsed), this.stream);
  }

  private stage(key: string, a: Int32Array | Float64Array, hint: ArgHint): bigint {
    const off = this.stageUsed;
    const end = off + Math.ceil(a.byteLength / 16) * 16;
    if (end > STAGE_BYTES) throw new StagingMiss(`step arguments exceed the ${STAGE_BYTES}-byte arena`);
    this.stageHost!.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), off);
    this.stageUsed = end;
    this.stageLayout.push(`${key}:${a.byteLength}`);
    this.stagedArgs.push({ key, off, bytes: a.byteLength, hint });
    return this.stageDev!.ptr + BigInt(off);
  }

  /**
   * D [T,N] f32 = B [T,K] · A [N,K]ᵀ (+ beta·D), A and B both bf16 or both f32, fp32 accumulation,
   * through cuBLASLt. False when cuBLASLt has no algorithm for these shapes and alignments.
   */
  gemm(abDtype: 'bf16' | 'f32', D: bigint, A: bigint, B: bigint, T: number, N: number, K: number, beta = 0): boolean {
    this.writes++;
    const align = [alignmentOf(A), alignmentOf(B), alignmentOf(D), alignmentOf(D)] as const;
    const key = `${abDtype}:${T}:${N}:${K}:${align.join(',')}`;
    let plan = this.plans.get(key);
    if (plan === undefined) {
      if (this.mode !== 'eager') throw new StagingMiss(`no cuBLASLt plan yet for ${key}`);
      plan = this.driver.ltPlan(this.lt, abDtype === 'bf16' ? CUDA_R_16BF : CUDA_R_32F, CUDA_R_32F, N, T, K, align, LT_WORKSPACE);
      this.plans.set(key, plan);
    }
    if (plan === null) return false;
    const ws = this.scratch('lt-workspace', LT_WORKSPACE);
    if (this.mode === 'fill') return true;
    this.timed(`cublasLt_${abDtype}`, () => this.driver.ltMatmul(this.lt, plan, A, B, D, beta, ws, LT_WORKSPACE, this.stream));
    return true;
  }

  sync(): void {
    this.driver.streamSync(this.stream);
  }

  dispose(): void {
    this.driver.streamSync(this.stream);
    for (const p of this.plans.values()) if (p) this.driver.ltPlanDestroy(p);
    this.plans.clear();
    this.driver.ltDestroy(this.lt);
    this.kernels.dispose();
    this.scratchBufs.clear();
    this.mem.dispose();
    this.driver.streamDestroy(this.stream);
    this.driver.contextRelease(this.info.ordinal);
  }
}
