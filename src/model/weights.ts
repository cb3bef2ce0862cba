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
import { piece } from './shard.js';

/** What weights.ts needs from a checkpoint (loader/checkpoint.ts provides it). */
export interface TensorSource {
  names(): string[];
  info(name: string): { dtype: string; shape: readonly number[] };
  read(name: string): Uint8Array;
  /** Dummy weights (the backend fills them itself): slices skip reading and cutting bytes. */
  readonly dummy?: boolean;
  /** Bytes [start, start+length) of one tensor; absent: read() and cut (tensor-parallel slices use it). */
  readRange?(name: string, byteStart: number, byteLength: number): Uint8Array;
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

/**
 * A tensor-parallel piece of a checkpoint tensor seen as 2-D [rows, cols] (1-D: [n, 1]; N-D:
 * leading dims flattened): the listed row ranges, each cut to columns [cols[0], cols[0]+cols[1]).
 * Column-parallel weights take row ranges, row-parallel ones a column range.
 */
export interface Slice {
  readonly rows?: readonly (readonly [number, number])[];
  readonly cols?: readonly [number, number];
  /** Zero rows appended (the padded vocabulary piece of the last rank, the embedding's zero row). */
  readonly padRows?: number;
}

/** Largest single read while cutting a column slice (whole rows are read, then cut). */
const CHUNK_BYTES = 16 << 20;

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
  get(names: readonly string[], shape: readonly number[], use: WeightUse, required = true, slice: Slice | null = null): Tensor | null {
    const name = this.has(names);
    if (name === null) {
      if (required) this.problems.push(`missing tensor ${names[0]}${names.length > 1 ? ` (or ${names.slice(1).join(', ')})` : ''} [${shape.join(', ')}]`);
      return null;
    }
    this.used.add(name);
    const dtype = this.check(name, shape);
    if (!dtype) return null;
    if (!slice) return this.be.loadWeight({ dtype, shape, parts: [this.src.read(name)] }, use);
    const { parts, shape: out } = this.readSlice(name, shape, dtype, slice);
    return this.be.loadWeight({ dtype, shape: out, parts }, use);
  }

  /**
   * This rank's piece of one tensor, read with readRange: row ranges directly, column slices in
   * chunks of whole rows cut on the host, so no buffer ever holds the whole tensor.
   */
  readSlice(name: string, shape: readonly number[], dtype: WeightSource['dtype'], slice: Slice): { parts: Uint8Array[]; shape: number[] } {
    const el = dtype === 'f32' ? 4 : 2;
    const cols = shape.length <= 1 ? 1 : shape[shape.length - 1];
    const rows = shape.length === 0 ? 1 : shape.reduce((a, b) => a * b, 1) / cols;
    const ranges = slice.rows ?? [[0, rows] as const];
    const [c0, cn] = slice.cols ?? [0, cols];
    const range = (start: number, length: number): Uint8Array =>
      this.src.readRange ? this.src.readRange(name, start, length) : this.src.read(name).subarray(start, start + length);
    const parts: Uint8Array[] = [];
    for (const [r0, rn] of this.src.dummy ? [] : ranges) {
      if (cn === cols) {
        const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / (cols * el)));
        for (let r = r0; r < r0 + rn; r += perChunk) parts.push(range(r * cols * el, Math.min(perChunk, r0 + rn - r) * cols * el));
        continue;
      }
      const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / (cols * el)));
      for (let r = r0; r < r0 + rn; r += perChunk) {
        const n = Math.min(perChunk, r0 + rn - r);
        const whole = range(r * cols * el, n * cols * el);
        const cut = new Uint8Array(n * cn * el);
        for (let i = 0; i < n; i++) cut.set(whole.subarray((i * cols + c0) * el, (i * cols + c0 + cn) * el), i * cn * el);
        parts.push(cut);
      }
    }
    const pad = slice.padRows ?? 0;
    if (pad > 0) parts.push(new Uint8Array(pad * cn * el));
    const nRows = ranges.reduce((a, [, n]) => a + n, 0) + pad;
    return { parts, shape: shape.length <= 1 ? [nRows] : [nRows, cn] };
  }

  /** Several tensors concatenated along dim 0 (gate+up stacking, per-expert stacking). */
  stack(parts: { names: readonly string[]; shape: readonly number[]; slice?: Slice }[], use: WeightUse): Tensor | null {
    const bufs: Uint8Array[] = [];
    let outRows = 0;
    let outCols: number[] = [];
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
        if (!ok) continue;
        if (p.slice) {
          const got = this.readSlice(name, p.shape, d, p.slice);
          bufs.push(...got.parts);
          outRows += got.shape[0];
          outCols = got.shape.slice(1);
        } else {
          bufs.push(this.src.read(name));
          outRows += p.shape[0];
          outCols = p.shape.slice(1);
        }
      }
    }
    if (!ok || dtype === null) return null;
    // Parts go to the backend as they are: no single host buffer for a whole stacked tensor.
    return this.be.loadWeight({ dtype, shape: [outRows, ...outCols], parts: bufs }, use);
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
    ? {
        names: () => source.names(),
        info: (n) => source.info(n),
        location: source.location,
        read: (n) => {
          const b = source.read(n);
          onProgress(++done, total);
          return b;
        },
        readRange: source.readRange ? (n, start, len) => source.readRange!(n, start, len) : undefined,
      }
    : source;
  const c = spec.config;
  const r = new WeightReader(src, be);
  const C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim, V = c.vocab_size;
  const HD = H * D;
  const nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vDim = c.v_head_dim, Lr = c.kv_lora_rank;
  const E = c.num_experts, F = c.moe_intermediate_size;
  const must = <T>(t: T | null): T => t as T; // problems are collected and thrown below

  // Tensor parallelism (spec §7, shard.ts): column-parallel weights take this rank's rows,
  // row-parallel ones its columns; at tp 1 nothing is sliced.
  const shard = spec.shard, loc = spec.local, tp = shard.size;
  const sl = (s: Slice): Slice | null => (tp > 1 ? s : null);
  const [h0, Hl] = piece(H, shard);
  const HDl = Hl * D;
  /** The bias of a row-parallel matmul is added by rank 0 only (the all-reduce sums the ranks). */
  const once = (t: Tensor | null): Tensor | null => (shard.rank === 0 ? t : null);

  // Vocab-parallel: rank r holds rows [vocabStart, +vocabCount) padded to loc.vocab rows; the
  // embedding piece has one more zero row that ids outside the piece are mapped to.
  const vocabRows = (extra: number): Slice | null => sl({ rows: [[loc.vocabStart, loc.vocabCount]], padRows: loc.vocab - loc.vocabCount + extra });
  const embed = r.get(['model.word_embeddings.weight', 'model.embed_tokens.weight'], [V, C], 'matrix', true, vocabRows(1));
  const finalNorm = r.get(['model.norm.weight'], [C], 'vector');
  let lmHead = r.get(['lm_head.weight'], [V, C], 'matrix', !c.tie_word_embeddings, vocabRows(0));
  if (!lmHead) lmHead = embed && tp > 1 ? embed.rows(0, loc.vocab) : embed;

  const dense = (p: string, width: number, bias: boolean): DenseFfnWeights => {
    if (width % tp !== 0) r.problems.push(`${p}gate_proj.weight: width ${width} is not divisible by the tensor parallel size ${tp}`);
    const [f0, Fl] = piece(width - (width % tp), shard);
    const rows = sl({ rows: [[f0, Fl]] }) ?? undefined;
    return {
      kind: 'dense',
      ffn: Fl,
      gateUp: must(r.stack([{ names: [p + 'gate_proj.weight'], shape: [width, C], slice: rows }, { names: [p + 'up_proj.weight'], shape: [width, C], slice: rows }], 'matrix')),
      gateUpBias: bias ? r.stack([{ names: [p + 'gate_proj.bias'], shape: [width], slice: rows }, { names: [p + 'up_proj.bias'], shape: [width], slice: rows }], 'vector') : null,
      down: must(r.get([p + 'down_proj.weight'], [C, width], 'matrix', true, sl({ cols: [f0, Fl] }))),
      downBias: bias ? once(r.get([p + 'down_proj.bias'], [C], 'vector')) : null,
    };
  };
  const optBias = (names: string[], n: number, required: boolean, slice: Slice | null = null): Tensor | null => (required || r.has(names) ? r.get(names, [n], 'vector', true, slice) : null);

  const layers: LayerWeights[] = spec.layers.map((plan) => {
    const p = `model.layers.${plan.index}.`;
    const lin = (official: string, port: string): string[] => alt(p, 'attention.' + official, 'linear_attn.' + port);
    const mla = (official: string, port: string): string[] => alt(p, 'attention.' + official, 'self_attn.' + port);
    let mixer: LightningWeights | MlaWeights | GqaWeights;
    if (plan.mixer === 'gqa') {
      // Same attention.* names as the lightning layers (SGLang BailingMoEAttention, mlx-lm), with
      // a (H + 2·KVH)·D wide query_key_value and no g_proj / g_norm.
      const a = p + 'attention.';
      const KVH = c.num_key_value_heads;
      const qkvRows = (H + 2 * KVH) * D;
      const [k0, KVl] = piece(KVH, shard);
      const heads = sl({ rows: [[h0 * D, HDl], [HD + k0 * D, KVl * D], [HD + KVH * D + k0 * D, KVl * D]] });
      mixer = {
        kind: 'gqa',
        qkv: must(r.get([a + 'query_key_value.weight'], [qkvRows, C], 'matrix', true, heads)),
        qkvBias: optBias([a + 'query_key_value.bias'], qkvRows, c.use_qkv_bias || c.use_bias, heads),
        qNorm: c.use_qk_norm ? r.get([a + 'query_layernorm.weight'], [D], 'vector') : null,
        kNorm: c.use_qk_norm ? r.get([a + 'key_layernorm.weight'], [D], 'vector') : null,
        dense: must(r.get([a + 'dense.weight'], [C, HD], 'matrix', true, sl({ cols: [h0 * D, HDl] }))),
        denseBias: once(optBias([a + 'dense.bias'], C, c.use_bias)),
      };
    } else if (plan.mixer === 'lightning') {
      // Rows [Q ; K ; V] each head-major: this rank's heads from each third (spec §4.1).
      const qkvHeads = sl({ rows: [[h0 * D, HDl], [HD + h0 * D, HDl], [2 * HD + h0 * D, HDl]] });
      const heads = sl({ rows: [[h0 * D, HDl]] }); // g_proj rows and the contiguous g_norm slice
      mixer = {
        kind: 'lightning',
        qkv: must(r.get(lin('query_key_value.weight', 'query_key_value.weight'), [3 * HD, C], 'matrix', true, qkvHeads)),
        qkvBias: optBias(lin('query_key_value.bias', 'query_key_value.bias'), 3 * HD, c.use_qkv_bias || c.use_bias, qkvHeads),
        qNorm: c.use_qk_norm ? r.get(lin('query_layernorm.weight', 'query_layernorm.weight'), [D], 'vector') : null,
        kNorm: c.use_qk_norm ? r.get(lin('key_layernorm.weight', 'key_layernorm.weight'), [D], 'vector') : null,
        gProj: must(r.get(lin('g_proj.weight', 'g_proj.weight'), [HD, C], 'matrix', true, heads)),
        gProjBias: optBias(lin('g_proj.bias', 'g_proj.bias'), HD, false, heads),
        gNorm: must(r.get(lin('g_norm.weight', 'g_norm.weight'), [HD], 'vector', true, heads)),
        dense: must(r.get(lin('dense.weight', 'o_proj.weight'), [C, HD], 'matrix', true, sl({ cols: [h0 * D, HDl] }))),
        denseBias: once(optBias(lin('dense.bias', 'o_proj.bias'), C, c.use_bias)),
      };
    } else {
      const qk = H * (nope + rope);
      const ql = c.q_lora_rank;
      const qHeads = sl({ rows: [[h0 * (nope + rope), Hl * (nope + rope)]] });
      mixer = {
        kind: 'mla',
        qA: ql ? r.get(mla('q_a_proj.weight', 'q_a_proj.weight'), [ql, C], 'matrix') : null,
        qABias: ql ? optBias(mla('q_a_proj.bias', 'q_a_proj.bias'), ql, c.use_qkv_bias) : null,
        qANorm: ql ? r.get(mla('q_a_layernorm.weight', 'q_a_layernorm.weight'), [ql], 'vector') : null,
        qB: ql ? r.get(mla('q_b_proj.weight', 'q_b_proj.weight'), [qk, ql], 'matrix', true, qHeads) : null,
        q: ql ? null : r.get(mla('q_proj.weight', 'q_proj.weight'), [qk, C], 'matrix', true, qHeads),
        kvA: must(r.get(mla('kv_a_proj_with_mqa.weight', 'kv_a_proj_with_mqa.weight'), [Lr + rope, C], 'matrix')),
        kvABias: optBias(mla('kv_a_proj_with_mqa.bias', 'kv_a_proj_with_mqa.bias'), Lr + rope, c.use_qkv_bias),
        kvANorm: must(r.get(mla('kv_a_layernorm.weight', 'kv_a_layernorm.weight'), [Lr], 'vector')),
        kvB: must(r.get(mla('kv_b_proj.weight', 'kv_b_proj.weight'), [H * (nope + vDim), Lr], 'vector', true, sl({ rows: [[h0 * (nope + vDim), Hl * (nope + vDim)]] }))),
        o: must(r.get(mla('dense.weight', 'o_proj.weight'), [C, H * vDim], 'matrix', true, sl({ cols: [h0 * vDim, Hl * vDim] }))),
        oBias: once(optBias(mla('dense.bias', 'o_proj.bias'), C, c.use_qkv_bias)),
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
      // TP over each expert's intermediate dim: every rank holds every expert's F/tp slice.
      const [f0, Fl] = piece(F, shard);
      const fRows = sl({ rows: [[f0, Fl]] }) ?? undefined;
      const fCols = sl({ cols: [f0, Fl] }) ?? undefined;
      if (r.has([m + 'experts.gate_up_proj'])) {
        // transformers port: stacked [E, 2F, C] and [E, C, F], same row order as ours.
        const gu = sl({ rows: Array.from({ length: 2 * E }, (_, i) => [Math.floor(i / 2) * 2 * F + (i % 2) * F + f0, Fl] as const) }) ?? undefined;
        w13 = r.stack([{ names: [m + 'experts.gate_up_proj'], shape: [E, 2 * F, C], slice: gu }], 'matrix')?.reshape([E * 2 * Fl, C]) ?? null;
        w2 = r.stack([{ names: [m + 'experts.down_proj'], shape: [E, C, F], slice: fCols }], 'matrix')?.reshape([E * C, Fl]) ?? null;
      } else {
        const parts13: { names: string[]; shape: number[]; slice?: Slice }[] = [];
        const parts2: { names: string[]; shape: number[]; slice?: Slice }[] = [];
        for (let e = 0; e < E; e++) {
          parts13.push({ names: [`${m}experts.${e}.gate_proj.weight`], shape: [F, C], slice: fRows }, { names: [`${m}experts.${e}.up_proj.weight`], shape: [F, C], slice: fRows });
          parts2.push({ names: [`${m}experts.${e}.down_proj.weight`], shape: [C, F], slice: fCols });
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
