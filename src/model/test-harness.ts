/** Helpers for model-level tests: load a tiny model on a backend and run prompts through it. */
import type { Backend } from '../backend/backend.js';
import { CacheSeq, HybridCache } from '../cache/hybrid-cache.js';
import { toF64 } from '../tensor/tensor.js';
import type { Compat } from './config.js';
import { cacheGeometry } from './cache-spec.js';
import { Model } from './forward.js';
import { loadModelDir } from './load.js';
import type { Shard } from './shard.js';

export interface Harness {
  readonly model: Model;
  readonly cache: HybridCache;
}

export function harness(dir: string, be: Backend, compat: Compat = 'default', maxTokens = 512, blockSize = 16, shard?: Shard): Harness {
  const { spec, weights } = loadModelDir(dir, be, compat, undefined, shard);
  const model = new Model(be, spec, weights, maxTokens, maxTokens, blockSize);
  const cache = new HybridCache(
    be,
    cacheGeometry(spec),
    { maxSeqs: 8, numBlocks: Math.ceil((8 * 1024) / blockSize), blockSize },
  );
  return { model, cache };
}

/** Run ids through one new sequence in chunks; returns the logits of every position (float64) and the sequence. */
export function runPrompt(h: Harness, ids: readonly number[], chunk: number, seq?: CacheSeq): { logits: Float64Array[]; seq: CacheSeq } {
  const s = seq ?? h.cache.allocSeq()!;
  const start0 = s.length;
  if (!h.cache.reserve(s, start0 + ids.length)) throw new Error('cache full');
  const out: Float64Array[] = [];
  for (let i = 0; i < ids.length; i += chunk) {
    const len = Math.min(chunk, ids.length - i);
    const ctx = start0 + i;
    const logits = h.model.forward(
      {
        ids: Int32Array.from(ids.slice(i, i + len)),
        positions: Int32Array.from({ length: len }, (_, j) => ctx + j),
        seqs: [{ seq: s, start: 0, len, ctxStart: ctx }],
        sampleRows: Int32Array.from({ length: len }, (_, j) => j),
      },
      h.cache,
    );
    // Host tensors in full precision (the float64 reference); device tensors through download.
    const all = logits.storage.kind === 'host' ? toF64(logits) : Float64Array.from(h.model.be.download(logits));
    const V = logits.shape[1];
    for (let j = 0; j < len; j++) out.push(all.slice(j * V, (j + 1) * V));
  }
  return { logits: out, seq: s };
}

/** Float64 copy of a sequence's lightning states, per linear layer. */
export function stateOf(h: Harness, seq: CacheSeq): Float64Array[] {
  return [...h.cache.states.values()].map((st) => toF64(st.rows(seq.slot, 1)));
}

/** Float64 copy of a sequence's latent rows (positions 0..len-1), per MLA layer. */
export function latentsOf(h: Harness, seq: CacheSeq): Float64Array[] {
  const bs = h.cache.blockSize;
  return [...h.cache.latents.values()].map((lat) => {
    const W = lat.shape[1];
    const all = toF64(lat);
    const o = new Float64Array(seq.length * W);
    for (let p = 0; p < seq.length; p++) {
      const row = seq.blocks[Math.floor(p / bs)] * bs + (p % bs);
      o.set(all.subarray(row * W, (row + 1) * W), p * W);
    }
    return o;
  });
}

/** Float64 copy of a sequence's [k | v] rows (positions 0..len-1), per GQA layer. */
export function kvOf(h: Harness, seq: CacheSeq): Float64Array[] {
  const bs = h.cache.blockSize;
  return [...h.cache.kv.values()].map((kv) => {
    const W = kv.shape[1];
    const all = toF64(kv);
    const o = new Float64Array(seq.length * W);
    for (let p = 0; p < seq.length; p++) {
      const row = seq.blocks[Math.floor(p / bs)] * bs + (p % bs);
      o.set(all.subarray(row * W, (row + 1) * W), p * W);
    }
    return o;
  });
}

/**
 * One forward over a mixed batch: part i continues sequence seqs[i] at position ctx[i] with
 * parts[i] (reserving its cache). Returns the logits of each part's last row (float64).
 */
export function forwardMixed(h: Harness, seqs: readonly CacheSeq[], parts: readonly (readonly number[])[], ctx: readonly number[]): Float64Array[] {
  let start = 0;
  const stepSeqs = parts.map((p, i) => {
    if (!h.cache.reserve(seqs[i], ctx[i] + p.length)) throw new Error('cache full');
    const s = { seq: seqs[i], start, len: p.length, ctxStart: ctx[i] };
    start += p.length;
    return s;
  });
  const logits = h.model.forward(
    {
      ids: Int32Array.from(parts.flat()),
      positions: Int32Array.from(parts.flatMap((p, i) => p.map((_, j) => ctx[i] + j))),
      seqs: stepSeqs,
      sampleRows: Int32Array.from(stepSeqs.map((s) => s.start + s.len - 1)),
    },
    h.cache,
  );
  const all = toF64(logits);
  const V = logits.shape[1];
  return parts.map((_, i) => all.slice(i * V, (i + 1) * V));
}
