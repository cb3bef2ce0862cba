/**
 * What a model costs, from its spec alone (no weights): layer plan, parameter counts (total and
 * active per token), cache sizes and a memory estimate. Counts follow the tensor shapes that
 * weights.ts loads (official names; MTP layers are set aside and not counted).
 *
 * `active` = weights a decode step touches for one token: every non-expert weight, top-k routed
 * experts + the shared experts, and lm_head; the embedding table is excluded (a token reads one
 * row of it). `activeWithEmbedding` adds the whole table, the convention model cards use.
 */
import type { FfnKind, MixerKind, ModelSpec } from './config.js';

export interface InspectOptions {
  readonly batch: number;
  readonly context: number;
  /** Bytes per weight (2 for bf16, 4 for f32). */
  readonly weightBytes: number;
  /** Bytes per MLA latent / GQA k-v cache value (default: weightBytes). */
  readonly actBytes?: number;
}

/** Parameter counts of one component: in the checkpoint, and touched per token. */
export interface ParamCount {
  readonly total: number;
  readonly active: number;
}

export type Component =
  | 'embedding'
  | 'lm_head'
  | 'attention.lightning'
  | 'attention.mla'
  | 'attention.gqa'
  | 'ffn.dense'
  | 'moe.routed_experts'
  | 'moe.shared_experts'
  | 'moe.router'
  | 'norms';

export interface InspectResult {
  readonly layers: readonly { index: number; mixer: MixerKind; ffn: FfnKind }[];
  readonly counts: { lightning: number; mla: number; gqa: number; dense: number; moe: number };
  readonly components: Readonly<Record<Component, ParamCount>>;
  readonly params: {
    readonly total: number;
    /** Excludes the embedding table, includes lm_head (see the file comment). */
    readonly active: number;
    readonly activeWithEmbedding: number;
  };
  readonly cache: {
    /** MLA latent cache: n_mla × (kv_lora_rank + qk_rope_head_dim) × actBytes. */
    readonly latentBytesPerToken: number;
    /** GQA k/v cache (Ring-linear): n_gqa × 2·KVH·D × actBytes. */
    readonly kvBytesPerToken: number;
    /** Lightning state: n_lightning × H × D × D × 4 (fp32). */
    readonly stateBytesPerSeq: number;
  };
  readonly memory: {
    readonly batch: number;
    readonly context: number;
    readonly weightBytes: number;
    readonly states: number;
    readonly latent: number;
    readonly kv: number;
    readonly total: number;
  };
  /**
   * Bytes one decode step of `batch` sequences at `context` reads (ecosystem §6.2): non-expert
   * active weights, distinct routed experts E·(1 − (1 − k/E)^B) under uniform routing, state
   * read + write, latent and k/v cache read.
   */
  readonly decodeStepBytes: number;
}

const zero = (): { total: number; active: number } => ({ total: 0, active: 0 });

export function inspectModel(spec: ModelSpec, opts: InspectOptions): InspectResult {
  const c = spec.config;
  const C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim, HD = H * D, V = c.vocab_size;
  const Dn = c.qk_nope_head_dim, Dr = c.qk_rope_head_dim, Dv = c.v_head_dim, Lr = c.kv_lora_rank;
  const E = c.num_experts, K = c.num_experts_per_tok, F = c.moe_intermediate_size;
  const actBytes = opts.actBytes ?? opts.weightBytes;
  const comp: Record<Component, { total: number; active: number }> = {
    embedding: zero(),
    lm_head: zero(),
    'attention.lightning': zero(),
    'attention.mla': zero(),
    'attention.gqa': zero(),
    'ffn.dense': zero(),
    'moe.routed_experts': zero(),
    'moe.shared_experts': zero(),
    'moe.router': zero(),
    norms: zero(),
  };
  // Non-expert weights are touched in full by every token: total == active.
  const all = (k: Component, n: number): void => {
    comp[k].total += n;
    comp[k].active += n;
  };
  const mlp = (width: number, bias: boolean): number => 3 * width * C + (bias ? 2 * width + C : 0);

  all('embedding', V * C);
  comp.embedding.active = 0; // one row per token, not the table (see the file comment)
  // A tied lm_head adds no parameters but is still read in full every step.
  comp.lm_head.total = c.tie_word_embeddings ? 0 : V * C;
  comp.lm_head.active = V * C;
  all('norms', C); // final norm

  const counts = { lightning: 0, mla: 0, gqa: 0, dense: 0, moe: 0 };
  for (const l of spec.layers) {
    counts[l.mixer]++;
    counts[l.ffn]++;
    all('norms', 2 * C); // input + post-attention
    if (l.mixer === 'lightning') {
      // qkv [3HD, C], g_proj [HD, C], dense [C, HD]; norms: q/k [D] each, g_norm [HD].
      all('attention.lightning', 5 * HD * C + (c.use_qkv_bias || c.use_bias ? 3 * HD : 0) + (c.use_bias ? C : 0));
      all('norms', (c.use_qk_norm ? 2 * D : 0) + HD);
    } else if (l.mixer === 'gqa') {
      // query_key_value [(H + 2·KVH)·D, C], dense [C, H·D]; norms: q/k [D] each.
      const qkv = (H + 2 * c.num_key_value_heads) * D;
      all('attention.gqa', qkv * C + (c.use_qkv_bias || c.use_bias ? qkv : 0) + C * HD + (c.use_bias ? C : 0));
      all('norms', c.use_qk_norm ? 2 * D : 0);
    } else {
      const qk = H * (Dn + Dr);
      const ql = c.q_lora_rank;
      const bias = c.use_qkv_bias;
      let n = ql ? ql * C + qk * ql + (bias ? ql : 0) : qk * C;
      n += (Lr + Dr) * C + (bias ? Lr + Dr : 0); // kv_a_proj_with_mqa
      n += H * (Dn + Dv) * Lr; // kv_b_proj
      n += C * H * Dv + (bias ? C : 0); // dense (o_proj)
      all('attention.mla', n);
      all('norms', (ql ?? 0) + Lr);
    }
    if (l.ffn === 'dense') all('ffn.dense', mlp(c.intermediate_size ?? 0, c.use_bias));
    else {
      comp['moe.routed_experts'].total += E * mlp(F, false);
      comp['moe.routed_experts'].active += K * mlp(F, false);
      if (c.num_shared_experts > 0) all('moe.shared_experts', mlp(spec.sharedFfn, false));
      all('moe.router', E * C + (c.moe_router_enable_expert_bias ? E : 0));
    }
  }

  const comps = Object.values(comp);
  const total = comps.reduce((a, p) => a + p.total, 0);
  const active = comps.reduce((a, p) => a + p.active, 0);
  const latentBytesPerToken = counts.mla * (Lr + Dr) * actBytes;
  const kvBytesPerToken = counts.gqa * 2 * c.num_key_value_heads * D * actBytes;
  const stateBytesPerSeq = counts.lightning * H * D * D * 4;
  const { batch: B, context: ctx } = opts;
  const weightBytes = total * opts.weightBytes;
  const states = B * stateBytesPerSeq;
  const latent = B * ctx * latentBytesPerToken;
  const kv = B * ctx * kvBytesPerToken;

  const expertParams = mlp(F, false);
  const touched = E > 0 ? E * (1 - (1 - K / E) ** B) : 0;
  const nonExpertActive = active - comp['moe.routed_experts'].active + B * C; // + B embedding rows
  const decodeStepBytes =
    (nonExpertActive + counts.moe * touched * expertParams) * opts.weightBytes + 2 * states + latent + kv;

  return {
    layers: spec.layers.map((l) => ({ index: l.index, mixer: l.mixer, ffn: l.ffn })),
    counts,
    components: comp,
    params: { total, active, activeWithEmbedding: active + (c.tie_word_embeddings ? 0 : V * C) },
    cache: { latentBytesPerToken, kvBytesPerToken, stateBytesPerSeq },
    memory: { batch: B, context: ctx, weightBytes, states, latent, kv, total: weightBytes + states + latent + kv },
    decodeStepBytes,
  };
}

/** 1234 → "1.23 K", 7.45e9 → "7.45 B" (parameter counts). */
export function fmtCount(n: number): string {
  const units: [number, string][] = [[1e12, 'T'], [1e9, 'B'], [1e6, 'M'], [1e3, 'K']];
  for (const [v, u] of units) if (Math.abs(n) >= v) return `${(n / v).toPrecision(3)} ${u}`;
  return String(n);
}

/** Binary units: 1536 → "1.50 KiB". */
export function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(2)} ${units[i]}`;
}

/** Compact runs of identical layers: "0 lightning/dense", "1-6 lightning/moe", "7 mla/moe", … */
function planRuns(layers: InspectResult['layers']): string[] {
  const runs: string[] = [];
  let start = 0;
  for (let i = 1; i <= layers.length; i++) {
    const a = layers[start];
    const b = layers[i];
    if (b && b.mixer === a.mixer && b.ffn === a.ffn) continue;
    const range = i - 1 === start ? `${start}` : `${start}-${i - 1}`;
    runs.push(`${range.padStart(7)}  ${a.mixer}/${a.ffn}`);
    start = i;
  }
  return runs;
}

export function formatInspect(r: InspectResult): string {
  const out: string[] = [];
  const table = (rows: string[][]): void => {
    const widths = rows[0].map((_, j) => Math.max(...rows.map((row) => row[j].length)));
    for (const row of rows) out.push('  ' + row.map((cell, j) => (j === 0 ? cell.padEnd(widths[j]) : cell.padStart(widths[j]))).join('  '));
  };
  const { counts } = r;
  const gqa = counts.gqa > 0, mla = counts.mla > 0 || !gqa; // name the full-attention kinds present
  const full = [mla ? `mla ${counts.mla}` : '', gqa ? `gqa ${counts.gqa}` : ''].filter(Boolean).join(', ');
  out.push(`layers: ${r.layers.length} (lightning ${counts.lightning}, ${full}; dense ffn ${counts.dense}, moe ${counts.moe})`);
  out.push(...planRuns(r.layers).map((s) => '  ' + s));
  out.push('', 'parameters (active = touched per token; embedding table excluded, lm_head included):');
  const rows: string[][] = [['component', 'total', 'active']];
  for (const [k, p] of Object.entries(r.components))
    if (p.total > 0 || !k.startsWith('attention.')) rows.push([k, fmtCount(p.total), fmtCount(p.active)]);
  rows.push(['sum', fmtCount(r.params.total), fmtCount(r.params.active)]);
  rows.push(['sum + embedding table', '', fmtCount(r.params.activeWithEmbedding)]);
  table(rows);
  const m = r.memory;
  out.push('', 'cache:');
  table([
    ...(mla ? [['MLA latent per token', fmtBytes(r.cache.latentBytesPerToken)]] : []),
    ...(gqa ? [['GQA k/v per token', fmtBytes(r.cache.kvBytesPerToken)]] : []),
    ['lightning state per sequence (fp32)', fmtBytes(r.cache.stateBytesPerSeq)],
  ]);
  out.push('', `memory at batch ${m.batch}, context ${m.context}:`);
  table([
    ['weights', fmtBytes(m.weightBytes)],
    ['lightning states', fmtBytes(m.states)],
    ...(mla ? [['MLA latent cache', fmtBytes(m.latent)]] : []),
    ...(gqa ? [['GQA k/v cache', fmtBytes(m.kv)]] : []),
    ['total', fmtBytes(m.total)],
    ['bytes read per decode step', fmtBytes(r.decodeStepBytes)],
  ]);
  return out.join('\n') + '\n';
}
