/**
 * Tiny config variants that together cover every config branch the engine supports. Shared by
 * the model tests (and the oracle fixtures of the oracle issue).
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
];

/**
 * Ring-linear-2.0 (BailingMoeLinearV2ForCausalLM, GQA full attention) variants, kept apart from
 * tinyVariants until the oracle covers this architecture.
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
