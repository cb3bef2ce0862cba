import type { StepMode } from '../backend/backend.js';
import type { CacheSeq } from '../cache/hybrid-cache.js';

/** One sequence's slice of a step: rows [start, start+len) of the batch. */
export interface StepSeq {
  readonly seq: CacheSeq;
  readonly start: number;
  readonly len: number;
  /** Tokens of this sequence already in the cache (the first row's position). */
  readonly ctxStart: number;
}

/**
 * Rank 0 of a tensor-parallel group of processes: the other ranks run every step rank 0 runs.
 * send() hands them the batch, and how rank 0 runs it (eagerly or as a CUDA graph: the other ranks
 * must do the same), before rank 0's first op; wait() returns once rank 0's queued work
 * (collectives included) is done and throws if a peer died instead of waiting forever.
 */
export interface StepPeers {
  send(batch: StepBatch, mode: StepMode): void;
  wait(): void;
}

/** A mixed batch: prefill chunks and decode tokens of several sequences in one forward. */
export interface StepBatch {
  readonly ids: Int32Array; // [T]
  readonly positions: Int32Array; // [T]
  readonly seqs: readonly StepSeq[];
  /** Batch rows whose logits are wanted (usually each sequence's last row). */
  readonly sampleRows: Int32Array;
}
