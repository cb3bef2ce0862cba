/**
 * Hybrid cache (CPU-side bookkeeping, storage on the backend): one fixed pool of lightning state
 * slots ([slots, H, D, D] per linear layer, fp32) and paged pools of per-token rows sharing one
 * block table: MLA latents ([blocks·blockSize, kv_lora_rank + qk_rope_head_dim] per MLA layer)
 * and GQA keys/values ([blocks·blockSize, 2·KVH·D] per GQA layer). A sequence owns one slot and
 * a block table; everything returns to the pools when it is freed.
 *
 * The paged pools hold bf16 or f32 values (kvCacheDtype). bf16 on CUDA is a bf16 tensor (the kernels
 * write and read bf16); on host backends it is the activation-dtype tensor holding values rounded
 * to bf16 as they are written (roundsKvOnWrite), the very values the GPU stores, so the CPU stays
 * the reference for a bf16 cache too.
 */
import type { Backend } from '../backend/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import { assert } from '../util/assert.js';

export interface CacheGeometry {
  readonly lightningLayers: readonly number[]; // layer indices
  readonly mlaLayers: readonly number[];
  readonly nHeads: number;
  readonly headDim: number;
  /** kv_lora_rank + qk_rope_head_dim */
  readonly latentWidth: number;
  /** GQA full-attention layers (Ring-linear) and their row width 2·KVH·D ([k | v]); absent: none. */
  readonly gqaLayers?: readonly number[];
  readonly kvWidth?: number;
}

/** Element type of the paged MLA latent / GQA KV caches; 'auto': bf16 on CUDA, f32 elsewhere. */
export type KvCacheDtype = 'auto' | 'bf16' | 'f32';
export const KV_CACHE_DTYPES: readonly KvCacheDtype[] = ['auto', 'bf16', 'f32'];

export interface CacheOptions {
  readonly maxSeqs: number;
  readonly numBlocks: number;
  readonly blockSize: number;
  /** Default 'auto'. */
  readonly kvCacheDtype?: KvCacheDtype;
}

/** The cache dtype 'auto' stands for on a backend. */
export function resolveKvCacheDtype(be: Pick<Backend, 'name'>, d: KvCacheDtype = 'auto'): 'bf16' | 'f32' {
  assert(KV_CACHE_DTYPES.includes(d), () => `kv cache dtype "${String(d)}" (expected ${KV_CACHE_DTYPES.join(', ')})`);
  return d === 'auto' ? (be.name === 'cuda' ? 'bf16' : 'f32') : d;
}

export class CacheSeq {
  readonly blocks: number[] = [];
  private table = new Int32Array(0);
  /** Tokens whose cache entries exist. */
  length = 0;
  constructor(
    readonly id: number,
    readonly slot: number,
  ) {}
  get blockTable(): Int32Array {
    if (this.table.length !== this.blocks.length) this.table = Int32Array.from(this.blocks);
    return this.table;
  }
}

export class HybridCache {
  /** Per layer index: its state pool (lightning) or latent pool (MLA). */
  readonly states = new Map<number, Tensor>();
  readonly latents = new Map<number, Tensor>();
  /** Per GQA layer index: its paged [k | v] pool. */
  readonly kv = new Map<number, Tensor>();
  private readonly freeSlots: number[];
  private readonly freeBlockList: number[];
  private readonly live = new Map<number, CacheSeq>();
  private nextId = 0;
  /** Values the paged caches hold. */
  readonly kvDtype: 'bf16' | 'f32';
  /**
   * bf16 values in a wider tensor (host backends): the model rounds keys/latents through bf16 before
   * they are written (ops.roundBf16), as the CUDA kernels do when they store into a bf16 tensor.
   */
  readonly roundsKvOnWrite: boolean;

  constructor(
    private readonly be: Backend,
    readonly geom: CacheGeometry,
    readonly opts: CacheOptions,
  ) {
    assert(opts.maxSeqs >= 1 && opts.blockSize >= 1 && opts.numBlocks >= 0, 'bad cache options');
    const { nHeads: H, headDim: D } = geom;
    this.kvDtype = resolveKvCacheDtype(be, opts.kvCacheDtype);
    // Only the CUDA backend has bf16 cache kernels; host backends keep their activation dtype.
    const storage = this.kvDtype === 'bf16' && be.name === 'cuda' ? 'bf16' : be.actDtype;
    this.roundsKvOnWrite = this.kvDtype === 'bf16' && storage !== 'bf16';
    const rows = opts.numBlocks * opts.blockSize;
    for (const l of geom.lightningLayers) this.states.set(l, be.alloc('f32', [opts.maxSeqs, H, D, D]));
    for (const l of geom.mlaLayers) this.latents.set(l, be.alloc(storage, [rows, geom.latentWidth]));
    for (const l of geom.gqaLayers ?? []) this.kv.set(l, be.alloc(storage, [rows, geom.kvWidth ?? 0]));
    this.freeSlots = Array.from({ length: opts.maxSeqs }, (_, i) => opts.maxSeqs - 1 - i);
    this.freeBlockList = Array.from({ length: opts.numBlocks }, (_, i) => opts.numBlocks - 1 - i);
  }

  get blockSize(): number {
    return this.opts.blockSize;
  }
  get freeSlotCount(): number {
    return this.freeSlots.length;
  }
  get freeBlockCount(): number {
    return this.freeBlockList.length;
  }
  get liveCount(): number {
    return this.live.size;
  }

  /** Blocks needed to hold `tokens` tokens (0 when the model has no paged (MLA or GQA) layer). */
  blocksFor(tokens: number): number {
    return this.geom.mlaLayers.length + (this.geom.gqaLayers?.length ?? 0) === 0 ? 0 : Math.ceil(tokens / this.opts.blockSize);
  }

  /** A new sequence with a zeroed state slot, or null when no slot is free. */
  allocSeq(): CacheSeq | null {
    const slot = this.freeSlots.pop();
    if (slot === undefined) return null;
    for (const st of this.states.values()) this.be.upload(st.rows(slot, 1), new Float64Array(st.rowSize));
    const seq = new CacheSeq(this.nextId++, slot);
    this.live.set(seq.id, seq);
    return seq;
  }

  /** Make room for `tokens` total tokens; false (and no change) when blocks run out. */
  reserve(seq: CacheSeq, tokens: number): boolean {
    const need = this.blocksFor(tokens) - seq.blocks.length;
    if (need <= 0) return true;
    if (need > this.freeBlockList.length) return false;
    for (let i = 0; i < need; i++) seq.blocks.push(this.freeBlockList.pop()!);
    return true;
  }

  free(seq: CacheSeq): void {
    if (!this.live.delete(seq.id)) return;
    this.freeSlots.push(seq.slot);
    for (const b of seq.blocks) this.freeBlockList.push(b);
    seq.blocks.length = 0;
    seq.length = 0;
  }

  /** Bytes of cache per token (MLA latent, GQA k/v, `kvBytes` per value) and per sequence (lightning states). */
  static bytes(geom: CacheGeometry, kvBytes: number): { perToken: number; perSeq: number } {
    return {
      perToken: (geom.mlaLayers.length * geom.latentWidth + (geom.gqaLayers?.length ?? 0) * (geom.kvWidth ?? 0)) * kvBytes,
      perSeq: geom.lightningLayers.length * geom.nHeads * geom.headDim * geom.headDim * 4,
    };
  }
}
