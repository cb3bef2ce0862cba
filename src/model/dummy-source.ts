/**
 * A checkpoint with names and shapes but no bytes (`--load-format dummy`, benchmarks): the official
 * tensor names of a spec's full (unsharded) model. Only a backend that fills dummy weights itself
 * (CudaBackend's dummyWeights) can load it.
 */
import type { ModelSpec } from './config.js';
import type { TensorSource } from './weights.js';

export function dummySource(spec: ModelSpec): TensorSource {
  const c = spec.config;
  const C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim, HD = H * D, E = c.num_experts, F = c.moe_intermediate_size;
  const shapes = new Map<string, number[]>();
  const mlp = (p: string, w: number): void => void shapes.set(p + 'gate_proj.weight', [w, C]).set(p + 'up_proj.weight', [w, C]).set(p + 'down_proj.weight', [C, w]);
  shapes.set('model.word_embeddings.weight', [c.vocab_size, C]).set('model.norm.weight', [C]);
  if (!c.tie_word_embeddings) shapes.set('lm_head.weight', [c.vocab_size, C]);
  for (const l of spec.layers) {
    const p = `model.layers.${l.index}.`, a = p + 'attention.';
    shapes.set(p + 'input_layernorm.weight', [C]).set(p + 'post_attention_layernorm.weight', [C]);
    if (l.mixer === 'lightning') {
      shapes.set(a + 'query_key_value.weight', [3 * HD, C]).set(a + 'g_proj.weight', [HD, C]).set(a + 'g_norm.weight', [HD]).set(a + 'dense.weight', [C, HD]);
      if (c.use_qk_norm) shapes.set(a + 'query_layernorm.weight', [D]).set(a + 'key_layernorm.weight', [D]);
    } else if (l.mixer === 'mla') {
      const ql = c.q_lora_rank, L = c.kv_lora_rank, Dr = c.qk_rope_head_dim, qk = H * (c.qk_nope_head_dim + Dr);
      if (ql) shapes.set(a + 'q_a_proj.weight', [ql, C]).set(a + 'q_a_layernorm.weight', [ql]).set(a + 'q_b_proj.weight', [qk, ql]);
      else shapes.set(a + 'q_proj.weight', [qk, C]);
      shapes.set(a + 'kv_a_proj_with_mqa.weight', [L + Dr, C]).set(a + 'kv_a_layernorm.weight', [L]);
      shapes.set(a + 'kv_b_proj.weight', [H * (c.qk_nope_head_dim + c.v_head_dim), L]).set(a + 'dense.weight', [C, H * c.v_head_dim]);
    } else {
      shapes.set(a + 'query_key_value.weight', [(H + 2 * c.num_key_value_heads) * D, C]).set(a + 'dense.weight', [C, HD]);
      if (c.use_qk_norm) shapes.set(a + 'query_layernorm.weight', [D]).set(a + 'key_layernorm.weight', [D]);
    }
    if (l.ffn === 'dense') mlp(p + 'mlp.', c.intermediate_size ?? 0);
    else {
      shapes.set(p + 'mlp.gate.weight', [E, C]);
      if (c.moe_router_enable_expert_bias) shapes.set(p + 'mlp.gate.expert_bias', [E]);
      for (let e = 0; e < E; e++) mlp(`${p}mlp.experts.${e}.`, F);
      if (c.num_shared_experts > 0) mlp(p + 'mlp.shared_experts.', spec.sharedFfn);
    }
  }
  const empty = new Uint8Array(0);
  return {
    names: () => [...shapes.keys()],
    info: (n) => ({ dtype: /norm|expert_bias|gate\.weight$/.test(n) ? 'F32' : 'BF16', shape: shapes.get(n)! }),
    read: () => empty,
    dummy: true,
    location: '(dummy weights)',
  };
}
