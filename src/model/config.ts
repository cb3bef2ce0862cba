/**
 * config.json of BailingMoeV2_5ForCausalLM (model_type "bailing_hybrid"), of the transformers
 * port (model_type "bailing2_5_moe") and of Ring-linear-2.0 (BailingMoeLinearV2ForCausalLM,
 * model_type "bailing_moe_linear": GQA full attention, docs/ring-linear.md). Field names are the HF keys verbatim; defaults follow
 * spec §2. Everything the forward pass needs is derived here once (layer plan, slopes, RoPE).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError, UnsupportedError } from '../util/errors.js';
import { SINGLE, localSizes, piece, type LocalSizes, type Shard } from './shard.js';

export type Compat = 'default' | 'vllm';

/** Where implementations disagree (spec §8): the official model code vs vLLM's file. */
export interface Semantics {
  readonly compat: Compat;
  /** Slope layer factor 1 − (l − offset)/(L − 1) + 1e-5: official offset 1, vLLM 0 (spec §4.4). */
  readonly slopeLayerOffset: 0 | 1;
  /** vLLM's 256-block prefill with the exp(−s·t) inter-block decay (spec §4.6). */
  readonly vllmPrefillQuirk: boolean;
  /** Linear-attention state rounded to bf16 after each step (vLLM's default state dtype). */
  readonly stateBf16: boolean;
  /** Router logits rounded to bf16 before scoring (vLLM's BailingMoeV25.forward). */
  readonly routerLogitsBf16: boolean;
  /** Official rule: layers i ≥ ⌊L/G⌋·G are full attention; vLLM: only (i+1) % G == 0. */
  readonly tailLayersFullAttention: boolean;
  /** Renormalisation epsilon (official 1e-20, vLLM 0). */
  readonly renormEps: number;
}

export function semanticsFor(compat: Compat): Semantics {
  return compat === 'vllm'
    ? { compat, slopeLayerOffset: 0, vllmPrefillQuirk: true, stateBf16: true, routerLogitsBf16: true, tailLayersFullAttention: false, renormEps: 0 }
    : { compat, slopeLayerOffset: 1, vllmPrefillQuirk: false, stateBf16: false, routerLogitsBf16: false, tailLayersFullAttention: true, renormEps: 1e-20 };
}

export type Naming = 'bailing' | 'transformers';

export interface RopeScaling {
  readonly rope_type: 'default' | 'linear';
  readonly factor: number;
}

/** The parsed config, HF keys verbatim, defaults filled in. */
export interface BailingConfig {
  readonly architectures: readonly string[];
  readonly model_type: string;
  readonly vocab_size: number;
  readonly hidden_size: number;
  readonly intermediate_size: number | null;
  readonly num_hidden_layers: number;
  readonly num_attention_heads: number;
  /** KV heads of GQA full-attention layers (default num_attention_heads); lightning layers are MHA. */
  readonly num_key_value_heads: number;
  readonly head_dim: number;
  readonly layer_group_size: number;
  readonly group_norm_size: number;
  readonly first_k_dense_replace: number;
  readonly num_experts: number;
  readonly num_experts_per_tok: number;
  readonly n_group: number | null;
  readonly topk_group: number | null;
  readonly routed_scaling_factor: number;
  readonly score_function: 'sigmoid' | 'softmax';
  readonly moe_router_enable_expert_bias: boolean;
  readonly norm_topk_prob: boolean;
  readonly moe_intermediate_size: number;
  readonly moe_shared_expert_intermediate_size: number | null;
  readonly num_shared_experts: number;
  readonly rms_norm_eps: number;
  readonly use_qk_norm: boolean;
  readonly linear_silu: boolean;
  readonly linear_rope: boolean;
  readonly rope_theta: number;
  readonly partial_rotary_factor: number;
  readonly rope_scaling: RopeScaling | null;
  readonly max_position_embeddings: number;
  readonly q_lora_rank: number | null;
  readonly kv_lora_rank: number;
  readonly qk_nope_head_dim: number;
  readonly qk_rope_head_dim: number;
  readonly v_head_dim: number;
  readonly use_bias: boolean;
  readonly use_qkv_bias: boolean;
  readonly tie_word_embeddings: boolean;
  readonly num_nextn_predict_layers: number;
  readonly eos_token_id: readonly number[];
  readonly pad_token_id: number | null;
  readonly bos_token_id: number | null;
  /** transformers port only: explicit per-layer mixer list. */
  readonly layer_types: readonly ('full_attention' | 'linear_attention')[] | null;
  /** Full-attention layers: MLA (v2.5) or grouped-query softmax attention (Ring-linear-2.0; SGLang's key). */
  readonly full_attention_type: 'mla' | 'gqa';
}

export type MixerKind = 'lightning' | 'mla' | 'gqa';
export type FfnKind = 'dense' | 'moe';

export interface LayerPlan {
  readonly index: number;
  readonly mixer: MixerKind;
  readonly ffn: FfnKind;
}

/** Config + semantics + everything derived from them. */
export interface ModelSpec {
  readonly config: BailingConfig;
  readonly semantics: Semantics;
  readonly naming: Naming;
  readonly layers: readonly LayerPlan[];
  /** Per-layer lightning decay rates s_h (λ = exp(−s_h)) of this rank's heads; null for MLA layers. */
  readonly decay: readonly (Float64Array | null)[];
  /** NeoX partial RoPE of the linear layers: rotary dims and inverse frequencies. */
  readonly linearRotaryDim: number;
  readonly linearInvFreq: Float64Array;
  /** GPT-J RoPE of the MLA layers over qk_rope_head_dim. */
  readonly mlaInvFreq: Float64Array;
  /** NeoX partial RoPE of the GQA layers over int(head_dim · partial_rotary_factor) dims (always on). */
  readonly gqaRotaryDim: number;
  readonly gqaInvFreq: Float64Array;
  /** Shared-expert width: (moe_shared_expert_intermediate_size ?? moe_intermediate_size) × num_shared_experts. */
  readonly sharedFfn: number;
  /** Tensor-parallel rank of this process and its share of every sharded dimension (shard.ts). */
  readonly shard: Shard;
  readonly local: LocalSizes;
}

const RING_LINEAR = 'BailingMoeLinearV2ForCausalLM';
const ARCHS = new Set(['BailingMoeV2_5ForCausalLM', RING_LINEAR]);
const MODEL_TYPES: Record<string, Naming> = { bailing_hybrid: 'bailing', bailing2_5_moe: 'transformers', bailing_moe_linear: 'bailing' };

type Json = Record<string, unknown>;

class Reader {
  constructor(
    private readonly raw: Json,
    private readonly file: string,
  ) {}
  fail(key: string, msg: string): never {
    throw new ModelLoadError(msg, this.file, key);
  }
  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }
  num(key: string, dflt?: number, opts: { int?: boolean; min?: number } = {}): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (dflt === undefined) this.fail(key, `required field "${key}" is missing`);
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, `expected a number, found ${JSON.stringify(v)}`);
    if (opts.int && !Number.isInteger(v)) this.fail(key, `expected an integer, found ${v}`);
    if (opts.min !== undefined && v < opts.min) this.fail(key, `expected >= ${opts.min}, found ${v}`);
    return v;
  }
  int(key: string, dflt?: number, min = 1): number {
    return this.num(key, dflt, { int: true, min });
  }
  optInt(key: string, min = 1): number | null {
    return this.has(key) ? this.int(key, undefined, min) : null;
  }
  bool(key: string, dflt: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(key, `expected true/false, found ${JSON.stringify(v)}`);
    return v;
  }
  str(key: string): string | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'string') this.fail(key, `expected a string, found ${JSON.stringify(v)}`);
    return v;
  }
  get(key: string): unknown {
    return this.raw[key];
  }
}

/** Parse and validate a config object (already JSON-decoded). `file` names it in errors. */
export function parseConfig(raw: unknown, file = 'config.json'): { config: BailingConfig; naming: Naming } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ModelLoadError('expected a JSON object', file);
  const r = new Reader(raw as Json, file);
  const archs = r.get('architectures');
  const architectures = Array.isArray(archs) ? archs.map(String) : [];
  const modelType = r.str('model_type') ?? '';
  if (!architectures.some((a) => ARCHS.has(a)) && !(modelType in MODEL_TYPES))
    r.fail('architectures', `unsupported architecture ${JSON.stringify(architectures)} / model_type ${JSON.stringify(modelType)}; expected BailingMoeV2_5ForCausalLM (model_type "bailing_hybrid" or "bailing2_5_moe") or ${RING_LINEAR} ("bailing_moe_linear")`);
  const naming: Naming = MODEL_TYPES[modelType] ?? 'bailing';
  // Ring-linear-2.0 configs carry no full_attention_type; their full layers are GQA (SGLang's
  // BailingMoEAttention, mlx-lm's BailingMoeLinearAttention). SGLang: anything but "mla" is GQA.
  const ringLinear = architectures.includes(RING_LINEAR) || modelType === 'bailing_moe_linear';
  const fullAttention = (r.str('full_attention_type') ?? (ringLinear ? 'gqa' : 'mla')) === 'mla' ? 'mla' : 'gqa';
  if (fullAttention === 'gqa' && naming === 'transformers') r.fail('full_attention_type', 'GQA full attention is not defined for the transformers-port naming');

  const quant = r.get('quantization_config');
  if (quant !== undefined && quant !== null) {
    const method = typeof quant === 'object' ? String((quant as Json).quant_method ?? 'unknown') : String(quant);
    throw new UnsupportedError(`${file} [quantization_config]: quantized checkpoints (${method}) are not supported yet; use a bf16 checkpoint`);
  }

  const hidden = r.int('hidden_size');
  const heads = r.int('num_attention_heads');
  if (naming === 'transformers') {
    const lkv = r.optInt('linear_key_value_heads') ?? r.optInt('num_kv_heads_for_linear_attn');
    if (lkv !== null && lkv !== heads) r.fail('linear_key_value_heads', `linear-attention heads (${lkv}) different from num_attention_heads (${heads}) are not supported`);
  }
  // The transformers port overwrites head_dim with qk_rope_head_dim; its linear head dim is hidden/heads.
  const headDim = naming === 'transformers' ? hidden / heads : r.int('head_dim', hidden / heads);
  if (!Number.isInteger(headDim)) r.fail('head_dim', `hidden_size ${hidden} is not divisible by num_attention_heads ${heads}`);

  // rope: rope_parameters (newer HF) then rope_theta / partial_rotary_factor / rope_scaling (spec §2.1).
  const rp = (r.get('rope_parameters') ?? {}) as Json;
  const ropeTheta = typeof rp.rope_theta === 'number' ? rp.rope_theta : r.num('rope_theta', 10000, { min: 0 });
  const prf = typeof rp.partial_rotary_factor === 'number' ? rp.partial_rotary_factor : r.num('partial_rotary_factor', 1, { min: 0 });
  const rsRaw = (r.get('rope_scaling') ?? (rp.rope_type ? rp : null)) as Json | null;
  let ropeScaling: RopeScaling | null = null;
  if (rsRaw && typeof rsRaw === 'object') {
    const type = String(rsRaw.rope_type ?? rsRaw.type ?? 'default');
    if (type === 'linear') ropeScaling = { rope_type: 'linear', factor: Number(rsRaw.factor ?? 1) };
    else if (type !== 'default') r.fail('rope_scaling', `rope_type "${type}" is not supported yet (supported: default, linear)`);
  }

  const scoreRaw = r.str('score_function') ?? r.str('scoring_func');
  const expertBias = naming === 'transformers' ? true : r.bool('moe_router_enable_expert_bias', false);
  if (scoreRaw !== null && scoreRaw !== 'sigmoid' && scoreRaw !== 'softmax') r.fail('score_function', `expected "sigmoid" or "softmax", found "${scoreRaw}"`);
  const scoreFunction = (scoreRaw ?? (expertBias ? 'sigmoid' : 'softmax')) as 'sigmoid' | 'softmax';
  if ((scoreFunction === 'sigmoid') !== expertBias)
    r.fail('score_function', `score_function "${scoreFunction}" with moe_router_enable_expert_bias ${expertBias}: expected ("sigmoid", true) or ("softmax", false) (spec §6.2)`);

  const eosRaw = r.get('eos_token_id');
  const eos = Array.isArray(eosRaw) ? eosRaw.map(Number) : typeof eosRaw === 'number' ? [eosRaw] : [];
  const layerTypesRaw = r.get('layer_types');
  let layerTypes: BailingConfig['layer_types'] = null;
  const L = r.int('num_hidden_layers');
  if (Array.isArray(layerTypesRaw)) {
    if (layerTypesRaw.length !== L) r.fail('layer_types', `expected ${L} entries, found ${layerTypesRaw.length}`);
    for (const t of layerTypesRaw) if (t !== 'full_attention' && t !== 'linear_attention') r.fail('layer_types', `unknown layer type ${JSON.stringify(t)}`);
    layerTypes = layerTypesRaw as BailingConfig['layer_types'];
  }

  const config: BailingConfig = {
    architectures,
    model_type: modelType,
    vocab_size: r.int('vocab_size'),
    hidden_size: hidden,
    intermediate_size: r.optInt('intermediate_size'),
    num_hidden_layers: L,
    num_attention_heads: heads,
    num_key_value_heads: r.int('num_key_value_heads', heads),
    head_dim: headDim,
    layer_group_size: r.int('layer_group_size', 1, 0),
    group_norm_size: r.int('group_norm_size', 1),
    first_k_dense_replace: r.int('first_k_dense_replace', 0, 0),
    num_experts: r.int('num_experts'),
    num_experts_per_tok: r.int('num_experts_per_tok'),
    n_group: r.optInt('n_group'),
    topk_group: r.optInt('topk_group'),
    routed_scaling_factor: r.num('routed_scaling_factor', 1),
    score_function: scoreFunction,
    moe_router_enable_expert_bias: expertBias,
    norm_topk_prob: r.bool('norm_topk_prob', true),
    moe_intermediate_size: r.int('moe_intermediate_size'),
    moe_shared_expert_intermediate_size: r.optInt('moe_shared_expert_intermediate_size'),
    num_shared_experts: r.int(naming === 'transformers' && !r.has('num_shared_experts') ? 'n_shared_experts' : 'num_shared_experts', naming === 'transformers' ? 1 : undefined, 0),
    rms_norm_eps: r.num('rms_norm_eps', 1e-5, { min: 0 }),
    use_qk_norm: r.bool('use_qk_norm', false),
    linear_silu: r.has('use_linear_silu') ? r.bool('use_linear_silu', false) : r.bool('linear_silu', false),
    linear_rope: r.bool('linear_rope', true),
    rope_theta: ropeTheta,
    partial_rotary_factor: prf,
    rope_scaling: ropeScaling,
    max_position_embeddings: r.int('max_position_embeddings', 8192),
    q_lora_rank: r.optInt('q_lora_rank'),
    kv_lora_rank: r.int('kv_lora_rank', 512),
    qk_nope_head_dim: r.int('qk_nope_head_dim', 128),
    qk_rope_head_dim: r.int('qk_rope_head_dim', 64),
    v_head_dim: r.int('v_head_dim', 128),
    use_bias: naming === 'transformers' ? r.bool('attention_bias', false) : r.bool('use_bias', false),
    use_qkv_bias: naming === 'transformers' ? r.bool('attention_bias', false) : r.bool('use_qkv_bias', false),
    tie_word_embeddings: r.bool('tie_word_embeddings', false),
    num_nextn_predict_layers: r.int('num_nextn_predict_layers', 0, 0),
    eos_token_id: eos,
    pad_token_id: r.optInt('pad_token_id', 0),
    bos_token_id: r.optInt('bos_token_id', 0),
    layer_types: layerTypes,
    full_attention_type: fullAttention,
  };
  validate(config, r);
  return { config, naming };
}

function validate(c: BailingConfig, r: Reader): void {
  if ((c.num_attention_heads * c.head_dim) % c.group_norm_size !== 0 || c.num_attention_heads % c.group_norm_size !== 0)
    r.fail('group_norm_size', `num_attention_heads ${c.num_attention_heads} is not divisible by group_norm_size ${c.group_norm_size}`);
  if ((c.n_group === null) !== (c.topk_group === null))
    r.fail(c.n_group === null ? 'n_group' : 'topk_group', `n_group (${c.n_group}) and topk_group (${c.topk_group}) must both be set or both be null`);
  if (c.n_group !== null && c.topk_group !== null) {
    if (c.num_experts % c.n_group !== 0) r.fail('n_group', `num_experts ${c.num_experts} is not divisible by n_group ${c.n_group}`);
    if (c.topk_group > c.n_group) r.fail('topk_group', `topk_group ${c.topk_group} exceeds n_group ${c.n_group}`);
    if (c.num_experts_per_tok > c.topk_group * (c.num_experts / c.n_group))
      r.fail('num_experts_per_tok', `${c.num_experts_per_tok} experts cannot be chosen from ${c.topk_group} groups of ${c.num_experts / c.n_group}`);
  }
  if (c.num_experts_per_tok > c.num_experts) r.fail('num_experts_per_tok', `${c.num_experts_per_tok} exceeds num_experts ${c.num_experts}`);
  const linRot = Math.floor(c.head_dim * c.partial_rotary_factor);
  if (c.linear_rope && (linRot % 2 !== 0 || linRot > c.head_dim)) r.fail('partial_rotary_factor', `rotary dims ${linRot} of head_dim ${c.head_dim} must be even and ≤ head_dim`);
  if (c.full_attention_type === 'gqa') {
    if (c.num_attention_heads % c.num_key_value_heads !== 0)
      r.fail('num_key_value_heads', `num_attention_heads ${c.num_attention_heads} is not a multiple of num_key_value_heads ${c.num_key_value_heads}`);
    const rot = Math.floor(c.head_dim * c.partial_rotary_factor);
    if (rot % 2 !== 0 || rot > c.head_dim) r.fail('partial_rotary_factor', `GQA rotary dims ${rot} of head_dim ${c.head_dim} must be even and ≤ head_dim`);
  }
  if (c.qk_rope_head_dim % 2 !== 0) r.fail('qk_rope_head_dim', `expected an even number, found ${c.qk_rope_head_dim}`);
  if (c.first_k_dense_replace > 0 && c.intermediate_size === null) r.fail('intermediate_size', 'required when first_k_dense_replace > 0 (dense layers)');
  if (c.rope_scaling && !(c.rope_scaling.factor > 0)) r.fail('rope_scaling', `factor must be > 0, found ${c.rope_scaling.factor}`);
}

/**
 * ALiBi-style head slopes (spec §4.4): for H a power of two, 2^(−8(h+1)/H); otherwise the slopes
 * of the closest lower power of two followed by every other slope of the next power of two.
 */
export function buildSlopes(n: number): number[] {
  const pow2 = (m: number): number[] => {
    const start = 2 ** -(2 ** -(Math.log2(m) - 3));
    return Array.from({ length: m }, (_, i) => start * start ** i);
  };
  if (Number.isInteger(Math.log2(n))) return pow2(n);
  const closest = 2 ** Math.floor(Math.log2(n));
  return [...pow2(closest), ...buildSlopes(2 * closest).filter((_, i) => i % 2 === 0).slice(0, n - closest)];
}

/** Per-layer decay rates s_h = slope_h · layer factor, rounded through f32 like the torch buffers. */
export function layerDecay(c: BailingConfig, layer: number, s: Semantics): Float64Array {
  const L = c.num_hidden_layers;
  const factor = L <= 1 ? 1 + 1e-5 : 1 - (layer - s.slopeLayerOffset) / (L - 1) + 1e-5;
  const slopes = buildSlopes(c.num_attention_heads);
  return Float64Array.from(slopes, (v) => Math.fround(Math.fround(v) * Math.fround(factor)));
}

function invFreq(theta: number, dim: number, posScale: number): Float64Array {
  // torch: 1 / base ** (arange(0, dim, 2).float() / dim), in f32.
  return Float64Array.from({ length: dim / 2 }, (_, i) => Math.fround(1 / Math.fround(theta ** Math.fround((2 * i) / dim))) / posScale);
}

export function layerPlan(c: BailingConfig, s: Semantics): LayerPlan[] {
  const L = c.num_hidden_layers;
  const G = c.layer_group_size;
  return Array.from({ length: L }, (_, i) => {
    // Ring-linear's own rule (official modeling file, mlx-lm): a trailing partial group is full
    // attention under every semantics; vLLM has no rule for it and SGLang requires L % G == 0.
    const tail = s.tailLayersFullAttention || c.full_attention_type === 'gqa';
    let full: boolean;
    if (c.layer_types) full = c.layer_types[i] === 'full_attention';
    else if (G <= 0) full = true;
    else full = (i + 1) % G === 0 || (tail && i >= Math.floor(L / G) * G);
    const moe = c.num_experts > 1 && i >= c.first_k_dense_replace;
    return { index: i, mixer: full ? c.full_attention_type : 'lightning', ffn: moe ? 'moe' : 'dense' } as LayerPlan;
  });
}

export function buildSpec(config: BailingConfig, naming: Naming, compat: Compat = 'default', shard: Shard = SINGLE): ModelSpec {
  const semantics = semanticsFor(compat);
  const layers = layerPlan(config, semantics);
  const sharedFfn = (config.moe_shared_expert_intermediate_size ?? config.moe_intermediate_size) * config.num_shared_experts;
  const kinds = { lightning: layers.some((l) => l.mixer === 'lightning'), gqa: layers.some((l) => l.mixer === 'gqa'), dense: layers.some((l) => l.ffn === 'dense'), moe: layers.some((l) => l.ffn === 'moe') };
  const local = localSizes(config, kinds, sharedFfn, shard);
  // Slopes are built for all H heads, then each rank keeps its own heads' (spec §4.4).
  const [h0, hn] = piece(config.num_attention_heads, shard);
  // Linear RoPE scaling divides positions by `factor`, i.e. the inverse frequencies.
  const posScale = config.rope_scaling?.rope_type === 'linear' ? config.rope_scaling.factor : 1;
  const linearRotaryDim = config.linear_rope ? Math.floor(config.head_dim * config.partial_rotary_factor) : 0;
  const gqaRotaryDim = Math.floor(config.head_dim * config.partial_rotary_factor);
  return {
    config,
    semantics,
    naming,
    layers,
    decay: layers.map((l) => (l.mixer === 'lightning' ? layerDecay(config, l.index, semantics).slice(h0, h0 + hn) : null)),
    linearRotaryDim,
    linearInvFreq: invFreq(config.rope_theta, linearRotaryDim, posScale),
    mlaInvFreq: invFreq(config.rope_theta, config.qk_rope_head_dim, posScale),
    gqaRotaryDim,
    gqaInvFreq: invFreq(config.rope_theta, gqaRotaryDim, posScale),
    sharedFfn,
    shard,
    local,
  };
}

/** Read DIR/config.json (and nothing else). */
export function loadConfig(dir: string): { config: BailingConfig; naming: Naming } {
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ModelLoadError(`cannot read: ${(e as Error).message}`, file);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ModelLoadError(`invalid JSON: ${(e as Error).message}`, file);
  }
  return parseConfig(raw, file);
}
