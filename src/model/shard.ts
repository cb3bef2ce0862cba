/**
 * Tensor parallelism as data (spec §7, DESIGN §4): which rank of how many this process is, and the
 * sizes every sharded dimension has on it. Heads (lightning, MLA, GQA) and FFN widths (dense,
 * shared expert, each routed expert's intermediate dim: TP over F, every rank holds every expert)
 * are split evenly; the vocabulary is split into ⌈V/tp⌉-row pieces, the last one padded with zero
 * rows. Norms, router, expert bias and the MLA down-projections (q_a, kv_a) are replicated.
 */
import { ModelLoadError } from '../util/errors.js';

export interface Shard {
  readonly rank: number;
  readonly size: number;
}

export const SINGLE: Shard = { rank: 0, size: 1 };

/** This rank's share of each sharded dimension (equal to the config's at tp 1). */
export interface LocalSizes {
  readonly heads: number; // H / tp
  readonly kvHeads: number; // KVH / tp (GQA)
  readonly groups: number; // group_norm_size / tp: g_norm groups over this rank's H·D / tp channels
  readonly ffn: number; // intermediate_size / tp (dense layers)
  readonly moeFfn: number; // moe_intermediate_size / tp (each routed expert)
  /** ⌈V / tp⌉: rows of this rank's embedding / lm_head piece (zero-padded past V). */
  readonly vocab: number;
  /** First vocabulary row of this rank's piece, and how many real rows it holds. */
  readonly vocabStart: number;
  readonly vocabCount: number;
}

/**
 * Check that tp divides what it must (spec §4.3, §7) and return this rank's sizes. Throws a
 * ModelLoadError naming the config key whose value tp does not divide.
 */
export interface ShardedDims {
  readonly num_attention_heads: number;
  readonly num_key_value_heads: number;
  readonly group_norm_size: number;
  readonly intermediate_size: number | null;
  readonly moe_intermediate_size: number;
  readonly vocab_size: number;
}

/** Which layer kinds the model has (config.ts's layer plan). */
export interface LayerKinds {
  readonly lightning: boolean;
  readonly gqa: boolean;
  readonly dense: boolean;
  readonly moe: boolean;
}

export function localSizes(c: ShardedDims, kinds: LayerKinds, sharedFfn: number, shard: Shard, file = 'config.json'): LocalSizes {
  const { rank, size: tp } = shard;
  if (!Number.isInteger(tp) || tp < 1 || !Number.isInteger(rank) || rank < 0 || rank >= tp) throw new ModelLoadError(`bad tensor-parallel rank ${rank} of ${tp}`, file);
  const need = (key: string, value: number, what: string): void => {
    if (value % tp !== 0) throw new ModelLoadError(`tensor parallel size ${tp} does not divide ${key} = ${value} (${what}); pick a tp that divides it`, file, key);
  };
  need('num_attention_heads', c.num_attention_heads, 'attention heads are split over the ranks');
  if (kinds.lightning && tp > 1) {
    // Each rank normalises its own H·D/tp channels: groups must not straddle ranks (vLLM asserts the same).
    if (tp > c.group_norm_size)
      throw new ModelLoadError(`tensor parallel size ${tp} exceeds group_norm_size ${c.group_norm_size}: the gated group norm needs tp <= group_norm_size and group_norm_size % tp == 0 (spec §4.3)`, file, 'group_norm_size');
    need('group_norm_size', c.group_norm_size, 'g_norm groups are split over the ranks (spec §4.3)');
  }
  if (kinds.gqa) need('num_key_value_heads', c.num_key_value_heads, 'key/value heads are split over the ranks');
  if (kinds.dense) need('intermediate_size', c.intermediate_size ?? 0, 'dense FFN width is split over the ranks');
  if (kinds.moe) {
    need('moe_intermediate_size', c.moe_intermediate_size, "each expert's intermediate dim is split over the ranks");
    need('moe_shared_expert_intermediate_size', sharedFfn, 'the shared expert width is split over the ranks');
  }
  const V = c.vocab_size;
  const vocab = Math.ceil(V / tp);
  const vocabStart = Math.min(V, rank * vocab);
  return {
    heads: c.num_attention_heads / tp,
    kvHeads: c.num_key_value_heads % tp === 0 ? c.num_key_value_heads / tp : c.num_key_value_heads,
    groups: tp > 1 ? c.group_norm_size / tp : c.group_norm_size,
    ffn: (c.intermediate_size ?? 0) / tp,
    moeFfn: c.moe_intermediate_size / tp,
    vocab,
    vocabStart,
    vocabCount: Math.min(V, vocabStart + vocab) - vocabStart,
  };
}

/** [start, count) of rank's piece when `total` is split evenly over shard.size ranks. */
export function piece(total: number, shard: Shard): readonly [number, number] {
  const n = total / shard.size;
  return [shard.rank * n, n];
}
