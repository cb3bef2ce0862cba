/**
 * Benchmark geometries with dummy weights: the Ling-2.6-flash 8-layer cut of issue 4 and the exact
 * Ring-mini-linear-2.0 geometry of issue 7 (spec §3.1), their official tensor names and shapes,
 * and the floors: bytes a decode step must move, FLOPs a prefill must do.
 */
import type { ModelSpec } from '../src/model/config.js';
import { lingFlashConfig, ringMiniConfig } from '../src/model/known-configs.js';
import type { TensorSource } from '../src/model/weights.js';

/** Ling-2.6-flash cut to 8 layers (7 lightning + 1 MLA, first layer dense), per issue 4. */
export const flashCutConfig = (): Record<string, unknown> => lingFlashConfig(8);
export { ringMiniConfig };

/** Parameter counts a token touches, by layer part (bf16 matrices unless noted). */
interface Touch {
  attn: number; // attention projections
  dense: number; // dense FFN
  routed: number; // one routed expert (3·C·F)
  routedLayers: number;
  shared: number; // shared experts, all MoE layers
  routerF32: number; // router weights (f32 storage), all MoE layers
  lmHead: number;
}

function touch(spec: ModelSpec): Touch {
  const c = spec.config;
  const C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim, HD = H * D;
  const t: Touch = { attn: 0, dense: 0, routed: 3 * C * c.moe_intermediate_size, routedLayers: 0, shared: 0, routerF32: 0, lmHead: c.vocab_size * C };
  for (const l of spec.layers) {
    if (l.mixer === 'lightning') t.attn += 5 * HD * C;
    else if (l.mixer === 'gqa') t.attn += (H + 2 * (c.num_key_value_heads ?? H)) * D * C + C * HD;
    else {
      const ql = c.q_lora_rank ?? 0, L = c.kv_lora_rank, Dr = c.qk_rope_head_dim;
      t.attn += ql * C + H * (c.qk_nope_head_dim + Dr) * ql + (L + Dr) * C + C * H * c.v_head_dim + H * (c.qk_nope_head_dim + c.v_head_dim) * L;
    }
    if (l.ffn === 'dense') t.dense += 3 * (c.intermediate_size ?? 0) * C;
    else {
      t.routedLayers++;
      t.shared += 3 * C * spec.sharedFfn;
      t.routerF32 += c.num_experts * C;
    }
  }
  return t;
}

/**
 * Bytes a decode step of B sequences at context ctx must move in this backend's storage: every
 * weight touched once (routed experts: the expected number of distinct experts hit by B·K uniform
 * picks), each sequence's lightning state read + written (f32), its MLA latent / GQA KV cache read (f32).
 */
export function decodeBytes(spec: ModelSpec, B: number, ctx: number, kvBytes = 4): number {
  const c = spec.config;
  const t = touch(spec);
  const E = c.num_experts, K = c.num_experts_per_tok;
  const experts = E * (1 - Math.pow(1 - K / E, B));
  let bytes = 2 * (t.attn + t.dense + t.shared + t.lmHead + t.routedLayers * experts * t.routed) + 4 * t.routerF32;
  for (const l of spec.layers) {
    if (l.mixer === 'lightning') bytes += B * 2 * 4 * c.num_attention_heads * c.head_dim * c.head_dim;
    else if (l.mixer === 'gqa') bytes += B * kvBytes * ctx * 2 * (c.num_key_value_heads ?? c.num_attention_heads) * c.head_dim;
    else bytes += B * kvBytes * ctx * (c.kv_lora_rank + c.qk_rope_head_dim);
  }
  return bytes;
}

/** FLOPs of a prefill of n tokens from an empty cache (one sampled row): matmuls + attention. */
export function prefillFlops(spec: ModelSpec, n: number): number {
  const c = spec.config;
  const t = touch(spec);
  const K = c.num_experts_per_tok;
  let f = 2 * n * (t.attn + t.dense + t.shared + t.routerF32 + t.routedLayers * K * t.routed) + 2 * t.lmHead;
  const H = c.num_attention_heads, D = c.head_dim;
  for (const l of spec.layers) {
    if (l.mixer === 'lightning') f += n * H * 4 * D * D; // chunked form: state update + output per token
    else if (l.mixer === 'gqa') f += (n * n / 2) * H * 4 * D; // causal q·k and p·v
    else f += (n * n / 2) * H * 2 * (c.qk_nope_head_dim + c.qk_rope_head_dim + c.v_head_dim);
  }
  return f;
}

/** Official tensor names and shapes of a spec, with no data (dummy weights ignore the bytes). */
export function dummySource(spec: ModelSpec): TensorSource {
  const c = spec.config;
  const C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim, HD = H * D, E = c.num_experts, F = c.moe_intermediate_size;
  const shapes = new Map<string, number[]>();
  const mlp = (p: string, w: number): void => {
    shapes.set(p + 'gate_proj.weight', [w, C]).set(p + 'up_proj.weight', [w, C]).set(p + 'down_proj.weight', [C, w]);
  };
  shapes.set('model.word_embeddings.weight', [c.vocab_size, C]).set('model.norm.weight', [C]).set('lm_head.weight', [c.vocab_size, C]);
  for (const l of spec.layers) {
    const p = `model.layers.${l.index}.`, a = p + 'attention.';
    shapes.set(p + 'input_layernorm.weight', [C]).set(p + 'post_attention_layernorm.weight', [C]);
    if (l.mixer === 'lightning') {
      shapes.set(a + 'query_key_value.weight', [3 * HD, C]).set(a + 'query_layernorm.weight', [D]).set(a + 'key_layernorm.weight', [D]);
      shapes.set(a + 'g_proj.weight', [HD, C]).set(a + 'g_norm.weight', [HD]).set(a + 'dense.weight', [C, HD]);
    } else if (l.mixer === 'gqa') {
      const KVH = c.num_key_value_heads ?? H;
      shapes.set(a + 'query_key_value.weight', [(H + 2 * KVH) * D, C]).set(a + 'query_layernorm.weight', [D]).set(a + 'key_layernorm.weight', [D]);
      shapes.set(a + 'dense.weight', [C, HD]);
    } else {
      const ql = c.q_lora_rank ?? 0, L = c.kv_lora_rank, Dr = c.qk_rope_head_dim;
      shapes.set(a + 'q_a_proj.weight', [ql, C]).set(a + 'q_a_layernorm.weight', [ql]).set(a + 'q_b_proj.weight', [H * (c.qk_nope_head_dim + Dr), ql]);
      shapes.set(a + 'kv_a_proj_with_mqa.weight', [L + Dr, C]).set(a + 'kv_a_layernorm.weight', [L]);
      shapes.set(a + 'kv_b_proj.weight', [H * (c.qk_nope_head_dim + c.v_head_dim), L]).set(a + 'dense.weight', [C, H * c.v_head_dim]);
    }
    if (l.ffn === 'dense') mlp(p + 'mlp.', c.intermediate_size ?? 0);
    else {
      shapes.set(p + 'mlp.gate.weight', [E, C]).set(p + 'mlp.gate.expert_bias', [E]);
      for (let e = 0; e < E; e++) mlp(`${p}mlp.experts.${e}.`, F);
      mlp(p + 'mlp.shared_experts.', spec.sharedFfn);
    }
  }
  const empty = new Uint8Array(0);
  return { names: () => [...shapes.keys()], info: (n) => ({ dtype: 'BF16', shape: shapes.get(n)! }), read: () => empty, location: '(dummy weights)' };
}
