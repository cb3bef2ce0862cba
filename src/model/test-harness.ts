/** Helpers for model-level tests: load a tiny model on a backend and run prompts through it. */
import assert from 'node:assert/strict';
import type { Backend, Ops, RouterParams } from '../backend/backend.js';
import { CacheSeq, HybridCache, type KvCacheDtype } from '../cache/hybrid-cache.js';
import { routeGroups, scoreRow } from '../ops/moe/moe.js';
import { toF64, type Tensor } from '../tensor/tensor.js';
import { compare, fmtStats } from '../util/compare.js';
import { Prng } from '../util/prng.js';
import type { Compat } from './config.js';
import { cacheGeometry } from './cache-spec.js';
import { Model } from './forward.js';
import { loadModelDir } from './load.js';
import type { Shard } from './shard.js';

export interface Harness {
  readonly model: Model;
  readonly cache: HybridCache;
}

export function harness(dir: string, be: Backend, compat: Compat = 'default', maxTokens = 512, blockSize = 16, shard?: Shard, kvCacheDtype?: KvCacheDtype): Harness {
  const { spec, weights } = loadModelDir(dir, be, compat, undefined, shard);
  const model = new Model(be, spec, weights, maxTokens, maxTokens, blockSize);
  const cache = new HybridCache(
    be,
    cacheGeometry(spec),
    { maxSeqs: 8, numBlocks: Math.ceil((8 * 1024) / blockSize), blockSize, kvCacheDtype },
  );
  return { model, cache };
}

/** Index of the largest value (the lowest index on ties): the greedy token of a logits row. */
export function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/** n seeded token ids below vocab. */
export function randomPrompt(n: number, vocab: number, seed: number): number[] {
  const rng = new Prng(seed);
  return Array.from({ length: n }, () => rng.int(vocab));
}

/**
 * Asserts that rows agree: max|a−b| / max|b| ≤ tol per row (error relative to the row's scale:
 * per-element relative error is meaningless for logits that happen to be near zero). `note` ends
 * the failure message. Returns the worst row's error.
 */
export function rowsClose(a: Float64Array[], b: Float64Array[], tol: number, what: string, note = ''): number {
  assert.equal(a.length, b.length, `${what}: ${a.length} vs ${b.length} rows`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const s = compare(a[i], b[i], 1);
    worst = Math.max(worst, s.maxRel);
    assert.ok(s.maxRel <= tol, `${what}: first divergence at row ${i}: ${fmtStats(s)}${note}`);
  }
  return worst;
}

/**
 * Run ids through one new sequence in chunks; returns the logits of every position (float64) and the
 * sequence. `tape` (routing record/replay, below) learns where each step starts.
 */
export function runPrompt(h: Harness, ids: readonly number[], chunk: number, seq?: CacheSeq, tape?: RouteTape): { logits: Float64Array[]; seq: CacheSeq } {
  const s = seq ?? h.cache.allocSeq()!;
  const start0 = s.length;
  if (!h.cache.reserve(s, start0 + ids.length)) throw new Error('cache full');
  const out: Float64Array[] = [];
  for (let i = 0; i < ids.length; i += chunk) {
    const len = Math.min(chunk, ids.length - i);
    const ctx = start0 + i;
    tape?.beginStep(ctx);
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
  const all = logits.storage.kind === 'host' ? toF64(logits) : Float64Array.from(h.model.be.download(logits));
  const V = logits.shape[1];
  return parts.map((_, i) => all.slice(i * V, (i + 1) * V));
}

/** One moeRoute call as the recording backend saw it. */
interface RouteCall {
  /** Position of row 0 (single-sequence steps, as runPrompt makes them). */
  readonly pos0: number;
  /** Which moeRoute call of its step this was (the MoE layer's ordinal). */
  readonly layer: number;
  readonly T: number;
  readonly E: number;
  readonly K: number;
  readonly ids: Int32Array;
  /** Selection scores [T, E] (score + bias), float64 from the backend's own router logits. */
  readonly sel: Float64Array;
}

/** Where a replaying backend's own expert choice differed from the recorded one. */
export interface RouteFlip {
  readonly call: number;
  readonly pos: number;
  /** The recorded backend's own gap between what it chose and what the other took instead (≥ 0). */
  readonly gap: number;
  /** max |Δ selection score| between the two backends on that row (the noise that moved the choice). */
  readonly noise: number;
  /** gap ≤ the largest change the noise can make to it: a near-tie, not a bug. */
  readonly explained: boolean;
}

/**
 * Routing record/replay for parity tests across precisions. MoE routing amplifies rounding: where
 * two experts' scores nearly tie, a change in the last bits picks another expert and moves that
 * row by O(1). `record(be)` keeps every moeRoute call's choice and selection scores; `replay(be)`
 * makes another backend take the recorded experts (weights from its own scores, so only the choice
 * is imposed; `force` false: keep its own) and lists every row where its own choice differed, with
 * the recorded gap and the measured score noise, so a test can tell a near-tie from a bug and still
 * compare the rest strictly. A replay finds each row's record by (MoE layer ordinal in its step,
 * position), so it may cut the same positions into other steps (chunked vs whole prefill); every
 * position it routes must have been recorded.
 */
export class RouteTape {
  readonly calls: RouteCall[] = [];
  readonly flips: RouteFlip[] = [];
  private pos0 = 0;
  private layer = 0;
  /** `${layer}:${pos}` → [call, row] of the recording. */
  private readonly rows = new Map<string, [number, number]>();

  beginStep(pos0: number): void {
    this.pos0 = pos0;
    this.layer = 0;
  }

  /** Smallest gap between the K-th and (K+1)-th selection score over all recorded rows. */
  minMargin(): number {
    let m = Infinity;
    for (const c of this.calls)
      for (let t = 0; t < c.T; t++) {
        if (c.E <= c.K) continue;
        const row = Array.from(c.sel.subarray(t * c.E, (t + 1) * c.E)).sort((a, b) => b - a);
        m = Math.min(m, row[c.K - 1] - row[c.K]);
      }
    return m;
  }

  /** The first flip in position order (the only one whose inputs were not already perturbed by another). */
  firstFlip(): RouteFlip | null {
    return this.flips.reduce<RouteFlip | null>((a, f) => (a === null || f.pos < a.pos || (f.pos === a.pos && f.call < a.call) ? f : a), null);
  }

  record(be: Backend): Backend {
    return withOps(be, {
      ...be.ops,
      moeRoute: (ids, weights, logits, bias, p) => {
        be.ops.moeRoute(ids, weights, logits, bias, p);
        const [T, E] = logits.shape, K = ids.shape[1];
        const layer = this.layer++;
        for (let t = 0; t < T; t++) this.rows.set(`${layer}:${this.pos0 + t}`, [this.calls.length, t]);
        this.calls.push({ pos0: this.pos0, layer, T, E, K, ids: Int32Array.from(down(be, ids)), sel: selection(down(be, logits), bias && down(be, bias), T, E, p) });
      },
    });
  }

  replay(be: Backend, force = true): Backend {
    this.flips.length = 0;
    return withOps(be, {
      ...be.ops,
      moeRoute: (ids, weights, logits, bias, p) => {
        const layer = this.layer++;
        const [T, E] = logits.shape, K = ids.shape[1];
        be.ops.moeRoute(ids, weights, logits, bias, p);
        const own = down(be, ids), lv = down(be, logits);
        const sel = selection(lv, bias && down(be, bias), T, E, p);
        const scores = new Float64Array(E), w = new Float64Array(T * K), recIds = new Int32Array(T * K);
        for (let t = 0; t < T; t++) {
          const at = this.rows.get(`${layer}:${this.pos0 + t}`);
          const rec = at && this.calls[at[0]];
          if (at === undefined || rec === undefined || rec.E !== E || rec.K !== K) throw new Error(`RouteTape: MoE layer ${layer} at position ${this.pos0 + t} ([${E}] top-${K}) was not recorded`);
          const mine = new Set(Array.from(own.subarray(t * K, (t + 1) * K)));
          const theirs = Array.from(rec.ids.subarray(at[1] * K, (at[1] + 1) * K));
          recIds.set(theirs, t * K);
          if (!theirs.every((e) => mine.has(e))) this.flips.push(flipAt(at[0], rec, at[1], mine, sel.subarray(t * E, (t + 1) * E), p));
          if (!force) continue;
          // Their experts, our scores: the weights as this backend's router would give them.
          scoreRow(lv, t * E, E, p.scoreFunction, scores);
          let sum = 0;
          for (const e of theirs) sum += scores[e];
          const denom = p.renormalize ? sum + p.renormEps : 1;
          theirs.forEach((e, k) => (w[t * K + k] = (scores[e] / denom) * p.routedScalingFactor));
        }
        if (!force) return;
        be.upload(ids, recIds);
        be.upload(weights, w);
      },
    });
  }
}

function down(be: Backend, t: Tensor): Float64Array {
  return t.storage.kind === 'host' ? toF64(t) : Float64Array.from(be.download(t));
}

/** Selection scores [T, E]: score function, plus the correction bias when there is one. */
function selection(logits: Float64Array, bias: Float64Array | null, T: number, E: number, p: RouterParams): Float64Array {
  const out = new Float64Array(T * E), row = new Float64Array(E);
  for (let t = 0; t < T; t++) {
    scoreRow(logits, t * E, E, p.scoreFunction, row);
    for (let e = 0; e < E; e++) out[t * E + e] = row[e] + (bias ? bias[e] : 0);
  }
  return out;
}

/**
 * Row t of recorded call `rec` flipped (`ours`: the replaying side's selection scores of that row):
 * the recorded side preferred a (taken) over b (ours instead) by gap; each score moved
 * by at most `noise`, so the choice may legitimately turn when gap ≤ 2·noise (a group choice, a sum
 * of two scores per group, when gap ≤ 4·noise).
 */
function flipAt(call: number, rec: RouteCall, t: number, mine: Set<number>, ours: Float64Array, p: RouterParams): RouteFlip {
  const { E, K } = rec;
  const ref = rec.sel.subarray(t * E, (t + 1) * E);
  let noise = 0;
  for (let e = 0; e < E; e++) noise = Math.max(noise, Math.abs(ours[e] - ref[e]));
  const theirs = new Set(Array.from(rec.ids.subarray(t * K, (t + 1) * K)));
  const lost = [...theirs].filter((e) => !mine.has(e)), gained = [...mine].filter((e) => !theirs.has(e));
  let gap = Infinity, bound = 2 * noise;
  const G = routeGroups(p);
  if (G > 0) {
    // Group-limited routing: if the kept groups differ, the flip happened at the group choice.
    const size = E / G;
    const groupScores = (v: Float64Array): number[] =>
      Array.from({ length: G }, (_, g) => {
        const m = Array.from(v.subarray(g * size, (g + 1) * size)).sort((x, y) => y - x);
        return size === 1 ? m[0] : m[0] + m[1];
      });
    const kept = (gs: number[]): Set<number> => new Set(gs.map((_, g) => g).sort((x, y) => gs[y] - gs[x] || x - y).slice(0, p.topkGroup as number));
    const gRef = groupScores(ref), keptRef = kept(gRef), keptOurs = kept(groupScores(ours));
    for (const a of keptRef) for (const b of keptOurs) if (!keptOurs.has(a) && !keptRef.has(b)) gap = Math.min(gap, gRef[a] - gRef[b]);
    if (gap !== Infinity) bound = 4 * noise;
  }
  if (gap === Infinity) for (const a of lost) for (const b of gained) gap = Math.min(gap, ref[a] - ref[b]);
  gap = Math.abs(gap);
  return { call, pos: rec.pos0 + t, gap, noise, explained: gap <= bound };
}

/** `be` with another op table; everything else is `be` itself (methods bound to it). */
export function withOps(be: Backend, ops: Ops): Backend {
  return new Proxy(be, {
    get(target, key) {
      if (key === 'ops') return ops;
      const v: unknown = Reflect.get(target, key, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
