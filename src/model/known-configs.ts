/**
 * Real model geometries (config.json contents) for benchmarks with dummy weights and for tests of
 * parameter counts: Ling-2.6-flash (optionally cut to fewer layers) and Ring-mini-linear-2.0.
 */
import { tinyConfig } from './tiny-checkpoint.js';

/**
 * Ling-2.6-flash (spec §3.3, ecosystem.md §6.2): hidden 4096, 32 heads × 128, q_lora 1536,
 * kv_lora 512, 256 experts × 1024 top-8 + 1 shared, first layer dense 9216, vocab 157184, G = 8.
 * `layers` cuts it (issue 4 benchmarks 8 layers: 7 lightning + 1 MLA).
 */
export function lingFlashConfig(layers = 32): Record<string, unknown> {
  return tinyConfig({
    vocab_size: 157184, hidden_size: 4096, intermediate_size: 9216, num_hidden_layers: layers, num_attention_heads: 32, head_dim: 128,
    layer_group_size: 8, group_norm_size: 8, first_k_dense_replace: 1, num_experts: 256, num_experts_per_tok: 8, n_group: 8, topk_group: 4,
    moe_intermediate_size: 1024, moe_shared_expert_intermediate_size: 1024, num_shared_experts: 1, rope_theta: 1e6, max_position_embeddings: 131072,
    q_lora_rank: 1536, kv_lora_rank: 512, qk_nope_head_dim: 128, qk_rope_head_dim: 64, v_head_dim: 128, eos_token_id: 156892, pad_token_id: 156892,
  });
}

/** Ring-mini-linear-2.0, the keys of spec §3.1 verbatim (20 layers: 16 lightning + 4 GQA). */
export function ringMiniConfig(): Record<string, unknown> {
  return {
    architectures: ['BailingMoeLinearV2ForCausalLM'], model_type: 'bailing_moe_linear',
    hidden_size: 2048, intermediate_size: 5120, num_hidden_layers: 20, num_attention_heads: 16, num_key_value_heads: 4,
    head_dim: 128, layer_group_size: 5, group_norm_size: 4, linear_silu: false, first_k_dense_replace: 1,
    num_experts: 256, num_experts_per_tok: 8, num_shared_experts: 1, moe_intermediate_size: 512,
    moe_shared_expert_intermediate_size: 512, n_group: 8, topk_group: 4, norm_topk_prob: true,
    moe_router_enable_expert_bias: true, score_function: 'sigmoid', router_dtype: 'fp32', routed_scaling_factor: 2.5,
    partial_rotary_factor: 0.5, rope_theta: 1000000, rope_scaling: null, max_position_embeddings: 131072,
    rms_norm_eps: 1e-6, use_qk_norm: true, use_bias: false, use_qkv_bias: false, use_rmsnorm: true,
    tie_word_embeddings: false, vocab_size: 157184, eos_token_id: 156892, pad_token_id: 156892,
    num_nextn_predict_layers: 0, transformers_version: '4.56.1',
  };
}
