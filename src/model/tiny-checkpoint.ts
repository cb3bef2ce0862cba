/**
 * Tiny random checkpoints of this architecture, written in HF layout (config.json +
 * safetensors). Tests use them to cover every config branch; the embedded default model is one.
 * Weights are seeded and scaled so activations stay O(1) through many layers.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeTensor, writeSafetensors, writeShardedCheckpoint, type TensorToWrite, type WritableDtype } from '../loader/writer.js';
import { Prng } from '../util/prng.js';
import { checkpointLayout, type TensorInit } from './checkpoint-layout.js';
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
  const rng = new Prng(opts.seed ?? 1234);
  const dtype = opts.dtype ?? 'F32';
  const gen: Record<TensorInit, (lastDim: number) => number> = {
    normal: () => rng.normal(),
    mat: (last) => rng.normal() / Math.sqrt(last),
    norm: () => 1 + 0.1 * rng.normal(),
    bias: () => 0.05 * rng.normal(),
    expertBias: () => 0.1 * rng.normal(),
  };
  const out = checkpointLayout(spec, { portNames: opts.portNames }).map(({ name, shape, init }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = new Float64Array(n);
    for (let i = 0; i < n; i++) v[i] = gen[init](shape[shape.length - 1]);
    return { name, dtype, shape: [...shape], data: encodeTensor(dtype, v) };
  });
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
