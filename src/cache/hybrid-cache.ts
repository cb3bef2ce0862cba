/**
 * Hybrid cache (CPU-side bookkeeping, storage on the backend): one fixed pool of lightning state
 * slots ([slots, H, D, D] per linear layer, fp32) and paged pools of per-token rows sharing one
 * block table: MLA latents ([blocks·blockSize, kv_lora_rank + qk_rope_head_dim] per MLA layer)
 * and GQA keys/values ([blocks·blockSize, 2·KVH·D] per GQA layer). A sequence owns one slot and
 * a block table; everything returns to the pools when it is freed.
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

export interface CacheOptions {
  readonly maxSeqs: number;
  readonly numBlocks: number;
  readonly blockSize: number;
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

  constructor(
    private readonly be: Backend,
    readonly geom: CacheGeometry,
    readonly opts: CacheOptions,
  ) {
    assert(opts.maxSeqs >= 1 && opts.blockSize >= 1 && opts.numBlocks >= 0, 'bad cache options');
    const { nHeads: H, headDim: D } = geom;
    for (const l of geom.lightningLayers) this.states.set(l, be.alloc('f32', [opts.maxSeqs, H, D, D]));
    for (const l of geom.mlaLayers) this.latents.set(l, be.alloc(be.actDtype, [opts.numBlocks * opts.blockSize, geom.latentWidth]));
    for (const l of geom.gqaLayers ?? []) this.kv.set(l, be.alloc(be.actDtype, [opts.numBlocks * opts.blockSize, geom.kvWidth ?? 0]));
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

  /** Bytes of cache per token (MLA latent, GQA k/v) and per sequence (lightning states). */
  static bytes(geom: CacheGeometry, actBytes: number): { perToken: number; perSeq: number } {
    return {
      perToken: (geom.mlaLayers.length * geom.latentWidth + (geom.gqaLayers?.length ?? 0) * (geom.kvWidth ?? 0)) * actBytes,
      perSeq: geom.lightningLayers.length * geom.nHeads * geom.headDim * geom.headDim * 4,
    };
  }
}
