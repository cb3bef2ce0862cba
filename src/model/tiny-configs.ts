/**
 * Tiny config variants that together cover every config branch the engine supports. Shared by
 * the model tests; `oracleVariants` (all of them, compacted) are the inputs of the PyTorch oracle
 * fixtures (tools/oracle, src/model/oracle.test.ts).
 */
import { tinyConfig, tinyRingLinearConfig, type TinyOptions } from './tiny-checkpoint.js';

export interface TinyVariant {
  readonly name: string;
  readonly config: Record<string, unknown>;
  readonly opts: TinyOptions;
}

export const tinyVariants: readonly TinyVariant[] = [
  // q_lora_rank set, group_norm_size > 1, first layer dense, grouped routing, L % G == 0.
  { name: 'base', config: tinyConfig(), opts: { seed: 1 } },
  // q_lora_rank null, group_norm_size 1, no dense layer, plain top-k, no qk-norm, no linear RoPE.
  {
    name: 'plain',
    config: tinyConfig({ q_lora_rank: null, group_norm_size: 1, first_k_dense_replace: 0, n_group: null, topk_group: null, use_qk_norm: false, linear_rope: false, num_hidden_layers: 3, layer_group_size: 3 }),
    opts: { seed: 2 },
  },
  // Non-power-of-two heads, L % G != 0 (tail layer), bias flags on, bf16 weights.
  {
    name: 'odd',
    config: tinyConfig({ hidden_size: 24, num_attention_heads: 3, head_dim: 8, group_norm_size: 3, num_hidden_layers: 5, layer_group_size: 2, use_bias: true, use_qkv_bias: true, num_experts: 6, n_group: 2, topk_group: 1, num_experts_per_tok: 2 }),
    opts: { seed: 3, dtype: 'BF16' },
  },
  // transformers-port names, stacked experts, sharded checkpoint.
  {
    name: 'port',
    config: {
      ...tinyConfig({ model_type: 'bailing2_5_moe', attention_bias: false, head_dim: 4 }),
      moe_router_enable_expert_bias: undefined,
      score_function: undefined,
      use_bias: undefined,
      use_qkv_bias: undefined,
    },
    opts: { seed: 4, portNames: true, shards: 3 },
  },
  // Softmax scoring without expert bias, no renormalisation, linear_silu, rsf 1.
  {
    name: 'softmax',
    config: tinyConfig({ score_function: 'softmax', moe_router_enable_expert_bias: false, norm_topk_prob: false, linear_silu: true, routed_scaling_factor: 1, num_shared_experts: 0 }),
    opts: { seed: 5 },
  },
  // Linear RoPE scaling (the "type" key), first_k_dense_replace 2 (an MLA layer with a dense FFN),
  // norm_topk_prob absent (→ true), q_lora_rank null with group_norm_size 4, tied embeddings,
  // use_linear_silu false taking precedence over linear_silu true, two shared experts without
  // moe_shared_expert_intermediate_size, bf16 weights in a sharded checkpoint with official names.
  {
    name: 'lean',
    config: tinyConfig({ rope_scaling: { type: 'linear', factor: 4 }, first_k_dense_replace: 2, norm_topk_prob: undefined, q_lora_rank: null, group_norm_size: 4, tie_word_embeddings: true, use_linear_silu: false, linear_silu: true, num_shared_experts: 2, moe_shared_expert_intermediate_size: undefined }),
    opts: { seed: 26, dtype: 'BF16', shards: 2 },
  },
];

/**
 * Ring-linear-2.0 (BailingMoeLinearV2ForCausalLM, GQA full attention) variants: the tests of
 * ring-linear.test.ts, and oracle fixtures through `oracleVariants`.
 */
export const ringLinearVariants: readonly TinyVariant[] = [
  // KVH < H (2 query heads per KV head), qk-norm, partial RoPE 0.5, first layer dense, grouped routing.
  { name: 'ring-linear', config: tinyRingLinearConfig(), opts: { seed: 11 } },
  // KVH = H (MHA), non-power-of-two heads, L % G != 0 (tail layer is GQA), full rotary, no qk-norm,
  // bias flags on, bf16 weights.
  {
    name: 'ring-linear-mha',
    config: tinyRingLinearConfig({ hidden_size: 24, num_attention_heads: 3, num_key_value_heads: 3, group_norm_size: 3, num_hidden_layers: 5, layer_group_size: 2, partial_rotary_factor: 1, use_qk_norm: false, use_bias: true, use_qkv_bias: true, num_experts: 6, n_group: 2, topk_group: 1 }),
    opts: { seed: 12, dtype: 'BF16' },
  },
  // KVH = 1 (MQA), no linear RoPE (the GQA layers still rotate), group_norm_size 1, no dense
  // layer, plain top-k, softmax scoring without bias, no shared expert.
  {
    name: 'ring-linear-mqa',
    config: tinyRingLinearConfig({ num_key_value_heads: 1, linear_rope: false, group_norm_size: 1, first_k_dense_replace: 0, n_group: null, topk_group: null, score_function: 'softmax', moe_router_enable_expert_bias: false, num_shared_experts: 0, num_hidden_layers: 3, layer_group_size: 3 }),
    opts: { seed: 13 },
  },
];

/**
 * The real attention head dims (lightning head_dim 128; MLA nope 128, rope 64, v 128, kv_lora 512)
 * in a small model: the CUDA kernels specialised to them (tensor-core lightning prefill, flash MLA)
 * take part in whole-model parity. Not an oracle input (its fixtures would not stay small).
 */
export const realHeadVariant: TinyVariant = {
  name: 'real-heads',
  config: tinyConfig({ hidden_size: 256, num_attention_heads: 2, head_dim: 128, group_norm_size: 2, q_lora_rank: 64, kv_lora_rank: 512, qk_nope_head_dim: 128, qk_rope_head_dim: 64, v_head_dim: 128, moe_intermediate_size: 32, moe_shared_expert_intermediate_size: 32, intermediate_size: 64 }),
  opts: { seed: 31 },
};

/** Dims of the oracle's copies: the stored outputs scale with hidden·layers + vocab per position. */
const ORACLE_DIMS = { hidden_size: 16, vocab_size: 48 } as const;

/**
 * The PyTorch oracle's inputs (test/fixtures/oracle/<name>/): every variant above, both
 * architectures, with hidden_size 16 and vocab_size 48 so that the fixtures of all of them (taps
 * and logits at 300 positions, both semantics) stay under 4 MB. Every branch flag is kept as is.
 */
export const oracleVariants: readonly TinyVariant[] = [...tinyVariants, ...ringLinearVariants].map((v) => ({
  ...v,
  config: { ...v.config, ...ORACLE_DIMS },
}));
