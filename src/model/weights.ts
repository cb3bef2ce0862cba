/**
 * Checkpoint names → clean typed weights (spec §7). Both naming schemes are accepted: the
 * official one (word_embeddings, attention.*, attention.dense, per-expert tensors, expert_bias /
 * e_score_correction_bias) and the transformers port (embed_tokens, linear_attn.* / self_attn.*,
 * o_proj, stacked experts.gate_up_proj / experts.down_proj). Gate/up pairs and experts are
 * stacked here; MTP tensors are set aside. Every problem is collected into one ModelLoadError.
 */
import type { Backend, WeightSource, WeightUse } from '../backend/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import { ModelLoadError } from '../util/errors.js';
import type { ModelSpec } from './config.js';

/** What weights.ts needs from a checkpoint (loader/checkpoint.ts provides it). */
export interface TensorSource {
  names(): string[];
  info(name: string): { dtype: string; shape: readonly number[] };
  read(name: string): Uint8Array;
  /** Where errors should point (the model directory). */
  readonly location: string;
}

export interface LightningWeights {
  readonly kind: 'lightning';
  readonly qkv: Tensor; // [3·H·D, C] rows Q ; K ; V
  readonly qkvBias: Tensor | null; // [3·H·D]
  readonly qNorm: Tensor | null; // [D]
  readonly kNorm: Tensor | null; // [D]
  readonly gProj: Tensor; // [H·D, C]
  readonly gProjBias: Tensor | null;
  readonly gNorm: Tensor; // [H·D]
  readonly dense: Tensor; // [C, H·D]
  readonly denseBias: Tensor | null;
}

export interface MlaWeights {
  readonly kind: 'mla';
  readonly qA: Tensor | null; // [q_lora, C]
  readonly qABias: Tensor | null;
  readonly qANorm: Tensor | null; // [q_lora]
  readonly qB: Tensor | null; // [H·(Dn+Dr), q_lora]
  readonly q: Tensor | null; // [H·(Dn+Dr), C] when q_lora_rank is null
  readonly kvA: Tensor; // [L+Dr, C]
  readonly kvABias: Tensor | null;
  readonly kvANorm: Tensor; // [L]
  readonly kvB: Tensor; // [H·(Dn+Dv), L], activation dtype (read inside the attention ops)
  readonly o: Tensor; // [C, H·Dv]
  readonly oBias: Tensor | null;
}

/** Ring-linear full-attention layer (grouped-query softmax attention), official names. */
export interface GqaWeights {
  readonly kind: 'gqa';
  readonly qkv: Tensor; // [(H + 2·KVH)·D, C] rows Q (H·D) ; K (KVH·D) ; V (KVH·D)
  readonly qkvBias: Tensor | null; // [(H + 2·KVH)·D]
  readonly qNorm: Tensor | null; // [D]
  readonly kNorm: Tensor | null; // [D]
  readonly dense: Tensor; // [C, H·D]
  readonly denseBias: Tensor | null;
}

export interface DenseFfnWeights {
  readonly kind: 'dense';
  readonly ffn: number; // F
  readonly gateUp: Tensor; // [2F, C] gate rows then up rows
  readonly gateUpBias: Tensor | null;
  readonly down: Tensor; // [C, F]
  readonly downBias: Tensor | null;
}

export interface MoeWeights {
  readonly kind: 'moe';
  readonly router: Tensor; // [E, C] fp32
  readonly expertBias: Tensor | null; // [E]
  readonly w13: Tensor; // [E·2F, C]
  readonly w2: Tensor; // [E·C, F]
  readonly shared: DenseFfnWeights | null;
}

export interface LayerWeights {
  readonly index: number;
  readonly inputNorm: Tensor; // [C]
  readonly postNorm: Tensor; // [C]
  readonly mixer: LightningWeights | MlaWeights | GqaWeights;
  readonly ffn: DenseFfnWeights | MoeWeights;
}

export interface ModelWeights {
  readonly embed: Tensor; // [V, C]
  readonly finalNorm: Tensor; // [C]
  readonly lmHead: Tensor; // [V, C]
  readonly layers: readonly LayerWeights[];
  /** Checkpoint tensors deliberately not loaded (MTP layers), for the load report. */
  readonly setAside: readonly string[];
}

const DTYPES: Record<string, WeightSource['dtype']> = { F32: 'f32', BF16: 'bf16', F16: 'f16' };

/** Loads a checkpoint's tensors into a backend, checking names, shapes and dtypes. */
class WeightReader {
  readonly used = new Set<string>();
  readonly problems: string[] = [];
  private readonly present: Set<string>;

  constructor(
    private readonly src: TensorSource,
    private readonly be: Backend,
  ) {
    this.present = new Set(src.names());
  }

  has(names: readonly string[]): string | null {
    return names.find((n) => this.present.has(n)) ?? null;
  }

  private check(name: string, shape: readonly number[]): WeightSource['dtype'] | null {
    const info = this.src.info(name);
    const dtype = DTYPES[info.dtype];
    if (!dtype) {
      this.problems.push(`${name}: unsupported dtype ${info.dtype} (expected F32, BF16 or F16)`);
      return null;
    }
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      this.problems.push(`${name}: expected shape [${shape.join(', ')}], found [${info.shape.join(', ')}]`);
      return null;
    }
    return dtype;
  }

  /** One tensor under any of `names`; null (and a problem) when absent and required. */
  get(names: readonly string[], shape: readonly number[], use: WeightUse, required = true): Tensor | null {
    const name = this.has(names);
    if (name === null) {
      if (required) this.problems.push(`missing tensor ${names[0]}${names.length > 1 ? ` (or ${names.slice(1).join(', ')})` : ''} [${shape.join(', ')}]`);
      return null;
    }
    this.used.add(name);
    const dtype = this.check(name, shape);
    if (!dtype) return null;
    return this.be.loadWeight({ dtype, shape, parts: [this.src.read(name)] }, use);
  }

  /** Several tensors concatenated along dim 0 (gate+up stacking, per-expert stacking). */
  stack(parts: { names: readonly string[]; shape: readonly number[] }[], use: WeightUse): Tensor | null {
    const bufs: Uint8Array[] = [];
    let dtype: WeightSource['dtype'] | null = null;
    let ok = true;
    for (const p of parts) {
      const name = this.has(p.names);
      if (name === null) {
        this.problems.push(`missing tensor ${p.names[0]} [${p.shape.join(', ')}]`);
        ok = false;
        continue;
      }
      this.used.add(name);
      const d = this.check(name, p.shape);
      if (!d) ok = false;
      else if (dtype !== null && d !== dtype) {
        this.problems.push(`${name}: dtype ${d} differs from the other stacked tensors (${dtype})`);
        ok = false;
      } else {
        dtype = d;
        if (ok) bufs.push(this.src.read(name));
      }
    }
    if (!ok || dtype === null) return null;
    const rows = parts.reduce((a, p) => a + p.shape[0], 0);
    // Parts go to the backend as they are: no single host buffer for a whole stacked tensor.
    return this.be.loadWeight({ dtype, shape: [rows, ...parts[0].shape.slice(1)], parts: bufs }, use);
  }
}

/** Candidate names of one logical tensor under both naming schemes. */
function alt(prefix: string, official: string, port: string): string[] {
  return official === port ? [prefix + official] : [prefix + official, prefix + port];
}

/** onProgress(done, total) is called after each checkpoint tensor is read (total = tensors in the checkpoint). */
export function loadWeights(spec: ModelSpec, source: TensorSource, be: Backend, onProgress?: (done: number, total: number) => void): ModelWeights {
  const total = source.names().length;
  let done = 0;
  const src: TensorSource = onProgress
    ? { names: () => source.names(), info: (n) => source.info(n), location: source.location, read: (n) => { const b = source.read(n); onProgress(++done, total); return b; } }
    : source;
  const c = spec.config;
  const r = new WeightReader(src, be);
  const C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim, V = c.vocab_size;
  const HD = H * D;
  const nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vDim = c.v_head_dim, Lr = c.kv_lora_rank;
  const E = c.num_experts, F = c.moe_intermediate_size;
  const must = <T>(t: T | null): T => t as T; // problems are collected and thrown below

  const embed = r.get(['model.word_embeddings.weight', 'model.embed_tokens.weight'], [V, C], 'matrix');
  const finalNorm = r.get(['model.norm.weight'], [C], 'vector');
  let lmHead = r.get(['lm_head.weight'], [V, C], 'matrix', !c.tie_word_embeddings);
  if (!lmHead) lmHead = embed;

  const dense = (p: string, width: number, bias: boolean): DenseFfnWeights => ({
    kind: 'dense',
    ffn: width,
    gateUp: must(r.stack([{ names: [p + 'gate_proj.weight'], shape: [width, C] }, { names: [p + 'up_proj.weight'], shape: [width, C] }], 'matrix')),
    gateUpBias: bias ? r.stack([{ names: [p + 'gate_proj.bias'], shape: [width] }, { names: [p + 'up_proj.bias'], shape: [width] }], 'vector') : null,
    down: must(r.get([p + 'down_proj.weight'], [C, width], 'matrix')),
    downBias: bias ? r.get([p + 'down_proj.bias'], [C], 'vector') : null,
  });
  const optBias = (names: string[], n: number, required: boolean): Tensor | null => (required || r.has(names) ? r.get(names, [n], 'vector') : null);

  const layers: LayerWeights[] = spec.layers.map((plan) => {
    const p = `model.layers.${plan.index}.`;
    const lin = (official: string, port: string): string[] => alt(p, 'attention.' + official, 'linear_attn.' + port);
    const mla = (official: string, port: string): string[] => alt(p, 'attention.' + official, 'self_attn.' + port);
    let mixer: LightningWeights | MlaWeights | GqaWeights;
    if (plan.mixer === 'gqa') {
      // Same attention.* names as the lightning layers (SGLang BailingMoEAttention, mlx-lm), with
      // a (H + 2·KVH)·D wide query_key_value and no g_proj / g_norm.
      const a = p + 'attention.';
      const qkvRows = (H + 2 * c.num_key_value_heads) * D;
      mixer = {
        kind: 'gqa',
        qkv: must(r.get([a + 'query_key_value.weight'], [qkvRows, C], 'matrix')),
        qkvBias: optBias([a + 'query_key_value.bias'], qkvRows, c.use_qkv_bias || c.use_bias),
        qNorm: c.use_qk_norm ? r.get([a + 'query_layernorm.weight'], [D], 'vector') : null,
        kNorm: c.use_qk_norm ? r.get([a + 'key_layernorm.weight'], [D], 'vector') : null,
        dense: must(r.get([a + 'dense.weight'], [C, HD], 'matrix')),
        denseBias: optBias([a + 'dense.bias'], C, c.use_bias),
      };
    } else if (plan.mixer === 'lightning') {
      mixer = {
        kind: 'lightning',
        qkv: must(r.get(lin('query_key_value.weight', 'query_key_value.weight'), [3 * HD, C], 'matrix')),
        qkvBias: optBias(lin('query_key_value.bias', 'query_key_value.bias'), 3 * HD, c.use_qkv_bias || c.use_bias),
        qNorm: c.use_qk_norm ? r.get(lin('query_layernorm.weight', 'query_layernorm.weight'), [D], 'vector') : null,
        kNorm: c.use_qk_norm ? r.get(lin('key_layernorm.weight', 'key_layernorm.weight'), [D], 'vector') : null,
        gProj: must(r.get(lin('g_proj.weight', 'g_proj.weight'), [HD, C], 'matrix')),
        gProjBias: optBias(lin('g_proj.bias', 'g_proj.bias'), HD, false),
        gNorm: must(r.get(lin('g_norm.weight', 'g_norm.weight'), [HD], 'vector')),
        dense: must(r.get(lin('dense.weight', 'o_proj.weight'), [C, HD], 'matrix')),
        denseBias: optBias(lin('dense.bias', 'o_proj.bias'), C, c.use_bias),
      };
    } else {
      const qk = H * (nope + rope);
      const ql = c.q_lora_rank;
      mixer = {
        kind: 'mla',
        qA: ql ? r.get(mla('q_a_proj.weight', 'q_a_proj.weight'), [ql, C], 'matrix') : null,
        qABias: ql ? optBias(mla('q_a_proj.bias', 'q_a_proj.bias'), ql, c.use_qkv_bias) : null,
        qANorm: ql ? r.get(mla('q_a_layernorm.weight', 'q_a_layernorm.weight'), [ql], 'vector') : null,
        qB: ql ? r.get(mla('q_b_proj.weight', 'q_b_proj.weight'), [qk, ql], 'matrix') : null,
        q: ql ? null : r.get(mla('q_proj.weight', 'q_proj.weight'), [qk, C], 'matrix'),
        kvA: must(r.get(mla('kv_a_proj_with_mqa.weight', 'kv_a_proj_with_mqa.weight'), [Lr + rope, C], 'matrix')),
        kvABias: optBias(mla('kv_a_proj_with_mqa.bias', 'kv_a_proj_with_mqa.bias'), Lr + rope, c.use_qkv_bias),
        kvANorm: must(r.get(mla('kv_a_layernorm.weight', 'kv_a_layernorm.weight'), [Lr], 'vector')),
        kvB: must(r.get(mla('kv_b_proj.weight', 'kv_b_proj.weight'), [H * (nope + vDim), Lr], 'vector')),
        o: must(r.get(mla('dense.weight', 'o_proj.weight'), [C, H * vDim], 'matrix')),
        oBias: optBias(mla('dense.bias', 'o_proj.bias'), C, c.use_qkv_bias),
      };
    }
    let ffn: DenseFfnWeights | MoeWeights;
    if (plan.ffn === 'dense') ffn = dense(p + 'mlp.', c.intermediate_size ?? 0, c.use_bias);
    else {
      const m = p + 'mlp.';
      const router = must(r.get([m + 'gate.weight'], [E, C], 'vector'));
      const biasNames = [m + 'gate.expert_bias', m + 'gate.e_score_correction_bias', m + 'experts.e_score_correction_bias', m + 'experts.expert_bias'];
      const expertBias = c.moe_router_enable_expert_bias ? r.get(biasNames, [E], 'vector') : null;
      let w13: Tensor | null;
      let w2: Tensor | null;
      if (r.has([m + 'experts.gate_up_proj'])) {
        // transformers port: stacked [E, 2F, C] and [E, C, F], same row order as ours.
        w13 = r.stack([{ names: [m + 'experts.gate_up_proj'], shape: [E, 2 * F, C] }], 'matrix')?.reshape([E * 2 * F, C]) ?? null;
        w2 = r.stack([{ names: [m + 'experts.down_proj'], shape: [E, C, F] }], 'matrix')?.reshape([E * C, F]) ?? null;
      } else {
        const parts13: { names: string[]; shape: number[] }[] = [];
        const parts2: { names: string[]; shape: number[] }[] = [];
        for (let e = 0; e < E; e++) {
          parts13.push({ names: [`${m}experts.${e}.gate_proj.weight`], shape: [F, C] }, { names: [`${m}experts.${e}.up_proj.weight`], shape: [F, C] });
          parts2.push({ names: [`${m}experts.${e}.down_proj.weight`], shape: [C, F] });
        }
        w13 = r.stack(parts13, 'matrix');
        w2 = r.stack(parts2, 'matrix');
      }
      let shared: DenseFfnWeights | null = null;
      if (c.num_shared_experts > 0) {
        // The official code sizes the shared expert by moe_intermediate_size, vLLM and the port by
        // moe_shared_expert_intermediate_size (spec §6.3): take the one the checkpoint has.
        const sp = m + 'shared_experts.';
        const found = r.has([sp + 'gate_proj.weight']) ? src.info(sp + 'gate_proj.weight').shape[0] : spec.sharedFfn;
        const width = [spec.sharedFfn, F * c.num_shared_experts].includes(found) ? found : spec.sharedFfn;
        shared = dense(sp, width, false);
      }
      ffn = { kind: 'moe', router, expertBias, w13: must(w13), w2: must(w2), shared };
    }
    return {
      index: plan.index,
      inputNorm: must(r.get([p + 'input_layernorm.weight'], [C], 'vector')),
      postNorm: must(r.get([p + 'post_attention_layernorm.weight'], [C], 'vector')),
      mixer,
      ffn,
    };
  });

  const setAside: string[] = [];
  const unexpected: string[] = [];
  for (const name of src.names()) {
    if (r.used.has(name)) continue;
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (name.startsWith('model.mtp') || (m && Number(m[1]) >= c.num_hidden_layers)) setAside.push(name);
    else if (/\.(slope|rotary_emb\.inv_freq)$/.test(name)) setAside.push(name); // derived buffers some exporters save
    else unexpected.push(name);
  }
  for (const u of unexpected) r.problems.push(`unexpected tensor ${u}`);
  if (r.problems.length > 0) {
    const shown = r.problems.slice(0, 40);
    const more = r.problems.length > shown.length ? `\n  … and ${r.problems.length - shown.length} more` : '';
    throw new ModelLoadError(`checkpoint does not match config.json (${r.problems.length} problems):\n  ${shown.join('\n  ')}${more}`, src.location);
  }
  return { embed: must(embed), finalNorm: must(finalNorm), lmHead: must(lmHead), layers, setAside };
}
