/**
 * The checkpoint tensors a spec's model expects, in one canonical order: name, shape and how a
 * random one is initialised. Tiny test checkpoints and dummy (benchmark) weights both come from
 * this list, so they always agree with what weights.ts loads.
 */
import type { ModelSpec } from './config.js';

/** normal: N(0,1); mat: N(0,1)/√(last dim); norm: 1 + 0.1·N; bias: 0.05·N; expertBias: 0.1·N. */
export type TensorInit = 'normal' | 'mat' | 'norm' | 'bias' | 'expertBias';

export interface TensorLayout {
  readonly name: string;
  readonly shape: readonly number[];
  readonly init: TensorInit;
}

export function checkpointLayout(spec: ModelSpec, opts: { portNames?: boolean } = {}): TensorLayout[] {
  const c = spec.config;
  const port = opts.portNames ?? false;
  const out: TensorLayout[] = [];
  const put = (name: string, shape: number[], init: TensorInit): void => void out.push({ name, shape, init });
  const mat = (name: string, rows: number, cols: number): void => put(name, [rows, cols], 'mat');
  const norm = (name: string, n: number): void => put(name, [n], 'norm');
  const bias = (name: string, n: number): void => put(name, [n], 'bias');
  const C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim, HD = H * D;
  const E = c.num_experts, F = c.moe_intermediate_size;
  const mlp = (p: string, width: number, withBias: boolean): void => {
    mat(p + 'gate_proj.weight', width, C);
    mat(p + 'up_proj.weight', width, C);
    mat(p + 'down_proj.weight', C, width);
    if (withBias) {
      bias(p + 'gate_proj.bias', width);
      bias(p + 'up_proj.bias', width);
      bias(p + 'down_proj.bias', C);
    }
  };

  put(port ? 'model.embed_tokens.weight' : 'model.word_embeddings.weight', [c.vocab_size, C], 'normal');
  for (const l of spec.layers) {
    const p = `model.layers.${l.index}.`;
    norm(p + 'input_layernorm.weight', C);
    norm(p + 'post_attention_layernorm.weight', C);
    if (l.mixer === 'gqa') {
      const a = p + 'attention.';
      const qkv = (H + 2 * c.num_key_value_heads) * D;
      mat(a + 'query_key_value.weight', qkv, C);
      if (c.use_qkv_bias || c.use_bias) bias(a + 'query_key_value.bias', qkv);
      if (c.use_qk_norm) {
        norm(a + 'query_layernorm.weight', D);
        norm(a + 'key_layernorm.weight', D);
      }
      mat(a + 'dense.weight', C, HD);
      if (c.use_bias) bias(a + 'dense.bias', C);
    } else if (l.mixer === 'lightning') {
      const a = p + (port ? 'linear_attn.' : 'attention.');
      mat(a + 'query_key_value.weight', 3 * HD, C);
      if (c.use_qkv_bias || c.use_bias) bias(a + 'query_key_value.bias', 3 * HD);
      if (c.use_qk_norm) {
        norm(a + 'query_layernorm.weight', D);
        norm(a + 'key_layernorm.weight', D);
      }
      mat(a + 'g_proj.weight', HD, C);
      norm(a + 'g_norm.weight', HD);
      mat(a + (port ? 'o_proj.weight' : 'dense.weight'), C, HD);
      if (c.use_bias) bias(a + (port ? 'o_proj.bias' : 'dense.bias'), C);
    } else {
      const a = p + (port ? 'self_attn.' : 'attention.');
      const qk = H * (c.qk_nope_head_dim + c.qk_rope_head_dim);
      if (c.q_lora_rank) {
        mat(a + 'q_a_proj.weight', c.q_lora_rank, C);
        if (c.use_qkv_bias) bias(a + 'q_a_proj.bias', c.q_lora_rank);
        norm(a + 'q_a_layernorm.weight', c.q_lora_rank);
        mat(a + 'q_b_proj.weight', qk, c.q_lora_rank);
      } else mat(a + 'q_proj.weight', qk, C);
      mat(a + 'kv_a_proj_with_mqa.weight', c.kv_lora_rank + c.qk_rope_head_dim, C);
      if (c.use_qkv_bias) bias(a + 'kv_a_proj_with_mqa.bias', c.kv_lora_rank + c.qk_rope_head_dim);
      norm(a + 'kv_a_layernorm.weight', c.kv_lora_rank);
      mat(a + 'kv_b_proj.weight', H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
      mat(a + (port ? 'o_proj.weight' : 'dense.weight'), C, H * c.v_head_dim);
      if (c.use_qkv_bias) bias(a + (port ? 'o_proj.bias' : 'dense.bias'), C);
    }
    if (l.ffn === 'dense') mlp(p + 'mlp.', c.intermediate_size ?? 0, c.use_bias);
    else {
      mat(p + 'mlp.gate.weight', E, C);
      if (c.moe_router_enable_expert_bias) put(p + (port ? 'mlp.gate.e_score_correction_bias' : 'mlp.gate.expert_bias'), [E], 'expertBias');
      if (port) {
        put(p + 'mlp.experts.gate_up_proj', [E, 2 * F, C], 'mat');
        put(p + 'mlp.experts.down_proj', [E, C, F], 'mat');
      } else for (let e = 0; e < E; e++) mlp(`${p}mlp.experts.${e}.`, F, false);
      if (c.num_shared_experts > 0) mlp(p + 'mlp.shared_experts.', spec.sharedFfn, false);
    }
  }
  norm('model.norm.weight', C);
  if (!c.tie_word_embeddings) mat('lm_head.weight', c.vocab_size, C);
  return out;
}
