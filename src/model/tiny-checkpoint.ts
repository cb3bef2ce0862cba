/**
 * Tiny random checkpoints of this architecture, written in HF layout (config.json +
 * safetensors). Tests use them to cover every config branch; the embedded default model is one.
 * Weights are seeded and scaled so activations stay O(1) through many layers.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeTensor, writeSafetensors, writeShardedCheckpoint, type TensorToWrite, type WritableDtype } from '../loader/writer.js';
import { Prng } from '../util/prng.js';
import { buildSpec, parseConfig, type ModelSpec } from './config.js';

/** A small but complete config; override any field. */
export function tinyConfig(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['BailingMoeV2_5ForCausalLM'],
    model_type: 'bailing_hybrid',
    vocab_size: 96,
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    head_dim: 8,
    layer_group_size: 2,
    group_norm_size: 2,
    first_k_dense_replace: 1,
    num_experts: 8,
    num_experts_per_tok: 2,
    n_group: 4,
    topk_group: 2,
    routed_scaling_factor: 2.5,
    score_function: 'sigmoid',
    moe_router_enable_expert_bias: true,
    norm_topk_prob: true,
    moe_intermediate_size: 16,
    moe_shared_expert_intermediate_size: 16,
    num_shared_experts: 1,
    router_dtype: 'fp32',
    rms_norm_eps: 1e-6,
    use_qk_norm: true,
    linear_silu: false,
    linear_rope: true,
    rope_theta: 10000,
    partial_rotary_factor: 0.5,
    max_position_embeddings: 4096,
    q_lora_rank: 16,
    kv_lora_rank: 12,
    qk_nope_head_dim: 6,
    qk_rope_head_dim: 4,
    v_head_dim: 5,
    use_bias: false,
    use_qkv_bias: false,
    tie_word_embeddings: false,
    num_nextn_predict_layers: 0,
    eos_token_id: 1,
    pad_token_id: 0,
    ...over,
  };
}

/**
 * A small Ring-linear-2.0 config (BailingMoeLinearV2ForCausalLM): the Ring-mini-linear-2.0 key
 * set (spec §3.1) at tiny sizes; GQA full attention with 2 KV heads for 4 query heads.
 */
export function tinyRingLinearConfig(over: Record<string, unknown> = {}): Record<string, unknown> {
  const base = tinyConfig({ architectures: ['BailingMoeLinearV2ForCausalLM'], model_type: 'bailing_moe_linear', num_key_value_heads: 2, use_rmsnorm: true });
  for (const k of ['q_lora_rank', 'kv_lora_rank', 'qk_nope_head_dim', 'qk_rope_head_dim', 'v_head_dim']) delete base[k];
  return { ...base, ...over };
}

export interface TinyOptions {
  seed?: number;
  dtype?: WritableDtype;
  /** Write this many shards with an index (0 or 1: one model.safetensors). */
  shards?: number;
  /** transformers-port tensor names instead of the official ones. */
  portNames?: boolean;
  /** Extra tensors to add (e.g. MTP layers), written as-is. */
  extra?: TensorToWrite[];
}

/** The tensors of a random checkpoint for `spec` (official names unless portNames). */
export function tinyTensors(spec: ModelSpec, opts: TinyOptions = {}): TensorToWrite[] {
  const c = spec.config;
  const rng = new Prng(opts.seed ?? 1234);
  const dtype = opts.dtype ?? 'F32';
  const port = opts.portNames ?? false;
  const out: TensorToWrite[] = [];
  const put = (name: string, shape: number[], gen: (i: number) => number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = new Float64Array(n);
    for (let i = 0; i < n; i++) v[i] = gen(i);
    out.push({ name, dtype, shape, data: encodeTensor(dtype, v) });
  };
  const mat = (name: string, rows: number, cols: number): void => put(name, [rows, cols], () => rng.normal() / Math.sqrt(cols));
  const norm = (name: string, n: number): void => put(name, [n], () => 1 + 0.1 * rng.normal());
  const bias = (name: string, n: number): void => put(name, [n], () => 0.05 * rng.normal());
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

  put(port ? 'model.embed_tokens.weight' : 'model.word_embeddings.weight', [c.vocab_size, C], () => rng.normal());
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
      if (c.moe_router_enable_expert_bias) put(p + (port ? 'mlp.gate.e_score_correction_bias' : 'mlp.gate.expert_bias'), [E], () => 0.1 * rng.normal());
      if (port) {
        put(p + 'mlp.experts.gate_up_proj', [E, 2 * F, C], () => rng.normal() / Math.sqrt(C));
        put(p + 'mlp.experts.down_proj', [E, C, F], () => rng.normal() / Math.sqrt(F));
      } else for (let e = 0; e < E; e++) mlp(`${p}mlp.experts.${e}.`, F, false);
      if (c.num_shared_experts > 0) mlp(p + 'mlp.shared_experts.', spec.sharedFfn, false);
    }
  }
  norm('model.norm.weight', C);
  if (!c.tie_word_embeddings) mat('lm_head.weight', c.vocab_size, C);
  return [...out, ...(opts.extra ?? [])];
}

/** Write config.json and the safetensors of a random model into dir; returns its spec. */
export function writeTinyModel(dir: string, config: Record<string, unknown>, opts: TinyOptions = {}): ModelSpec {
  mkdirSync(dir, { recursive: true });
  const { config: parsed, naming } = parseConfig(config);
  const spec = buildSpec(parsed, naming);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  const tensors = tinyTensors(spec, opts);
  if ((opts.shards ?? 0) > 1) writeShardedCheckpoint(dir, tensors, opts.shards!);
  else writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return spec;
}
