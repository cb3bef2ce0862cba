/**
 * Activation buffers preallocated for maxBatchTokens and viewed per step with Tensor.prefix (no
 * allocation in the step loop). Each is flat, sized for its widest use over the layer kinds; the
 * shape comments give that use.
 */
import type { Backend } from '../backend/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import type { ModelSpec } from './config.js';

export interface Activations {
  readonly maxTokens: number;
  readonly maxSample: number;
  readonly x: Tensor; // [T, C] normed input of the current block
  readonly residual: Tensor; // [T, C]
  readonly mix: Tensor; // [T, C] mixer / FFN output
  readonly q: Tensor; // [T, max(H·D, H·(Dn+Dr))]
  readonly k: Tensor; // [T, H·D] (GQA: [T, KVH·D])
  readonly v: Tensor; // [T, H·D] (GQA: [T, KVH·D])
  readonly g: Tensor; // [T, H·D]
  readonly o: Tensor; // [T, max(H·D, H·Dv)]
  readonly o2: Tensor; // [T, H·D]
  readonly cq: Tensor; // [T, q_lora_rank]
  readonly ckv: Tensor; // [T, L]
  readonly kpe: Tensor; // [T, Dr]
  readonly gu: Tensor; // [T, 2·max F]
  readonly hmid: Tensor; // [T, max F]
  readonly shared: Tensor; // [T, C]
  readonly routerLogits: Tensor; // [T, E]
  readonly topIds: Tensor; // [T, K] i32
  readonly topW: Tensor; // [T, K]
  readonly sel: Tensor; // [S, C] rows that sample
  readonly logits: Tensor; // [S, V]
  /** Tensor parallel: this rank's vocabulary piece of the logits [S, V/tp padded] (else a 1-element stub). */
  readonly logitsLocal: Tensor;
}

export function allocActivations(be: Backend, spec: ModelSpec, maxTokens: number, maxSample: number): Activations {
  const c = spec.config;
  const a = be.actDtype;
  // Sharded widths are this rank's (spec §7): heads and FFN widths divided by tp.
  const loc = spec.local, tp = spec.shard.size;
  const C = c.hidden_size, H = loc.heads, HD = H * c.head_dim;
  const hasMla = spec.layers.some((l) => l.mixer === 'mla');
  const hasLin = spec.layers.some((l) => l.mixer === 'lightning');
  const hasGqa = spec.layers.some((l) => l.mixer === 'gqa');
  const qW = Math.max(hasLin || hasGqa ? HD : 0, hasMla ? H * (c.qk_nope_head_dim + c.qk_rope_head_dim) : 0);
  const oW = Math.max(hasLin || hasGqa ? HD : 0, hasMla ? H * c.v_head_dim : 0);
  const dense = spec.layers.some((l) => l.ffn === 'dense') ? loc.ffn : 0;
  const moe = spec.layers.some((l) => l.ffn === 'moe');
  const F = Math.max(dense, moe ? Math.ceil(spec.sharedFfn / tp) : 0, 1);
  const T = maxTokens;
  const lin = hasLin ? HD : 1;
  const kvW = Math.max(lin, hasGqa ? loc.kvHeads * c.head_dim : 1);
  return {
    maxTokens,
    maxSample,
    x: be.alloc(a, [T * C]),
    residual: be.alloc(a, [T * C]),
    mix: be.alloc(a, [T * C]),
    q: be.alloc(a, [T * qW]),
    k: be.alloc(a, [T * kvW]),
    v: be.alloc(a, [T * kvW]),
    g: be.alloc(a, [T * lin]),
    o: be.alloc(a, [T * oW]),
    o2: be.alloc(a, [T * lin]),
    cq: be.alloc(a, [T * (hasMla && c.q_lora_rank ? c.q_lora_rank : 1)]),
    ckv: be.alloc(a, [T * (hasMla ? c.kv_lora_rank : 1)]),
    kpe: be.alloc(a, [T * (hasMla ? c.qk_rope_head_dim : 1)]),
    gu: be.alloc(a, [T * (2 * F)]),
    hmid: be.alloc(a, [T * F]),
    shared: be.alloc(a, [T * C]),
    routerLogits: be.alloc(a, [T * (moe ? c.num_experts : 1)]),
    topIds: be.alloc('i32', [T * (moe ? c.num_experts_per_tok : 1)]),
    topW: be.alloc(a, [T * (moe ? c.num_experts_per_tok : 1)]),
    sel: be.alloc(a, [maxSample * C]),
    logits: be.alloc(a, [maxSample * c.vocab_size]),
    logitsLocal: be.alloc(a, [tp > 1 ? maxSample * loc.vocab : 1]),
  };
}
