/**
 * Sampling one row of logits: the host algorithm (the reference every device path must match;
 * engine/sampler.ts's Sampler runs it with a request's state) and the packing of rows for a
 * device that samples them itself (Backend.sampleRows; CUDA: sample.cu).
 *
 * A row: logits [V] plus SampleRow (parameters, penalty state, and u ∈ [0, 1): the request's one
 * Prng draw for this token, 0 when greedy, where nothing is drawn). Order (HF generate's, and
 * vLLM's for the penalties):
 *   1. repetition penalty over prompt + generated tokens (positive logits divided, negative
 *      multiplied), then frequency (× count) and presence (× [count>0]) penalties subtracted, over
 *      generated tokens only (OpenAI); each rounded to f32 like the logits;
 *   2. temperature < 1e-5 → greedy argmax (lowest index on ties); else logits / temperature;
 *   3. top-k, then top-p on the renormalised top-k distribution (smallest prefix whose mass
 *      ≥ top_p, at least one token), then min-p (drop p < min_p · p_max);
 *   4. the first survivor whose cumulative mass exceeds u · (survivors' mass), in this order:
 *      best first under top-k; index order with neither top-k nor top-p; with top-p alone, index
 *      order over the nucleus's bins above the cut's bin, then that bin best first.
 * vLLM applies min-p before top-k/top-p; the two orders differ only when top_p < 1 and min_p > 0.
 *
 * Logprobs come from the distribution after penalties and temperature and before truncation
 * (log_softmax(z)), so they describe the model's preference, not the truncated support; with
 * greedy decoding the temperature is taken as 1.
 */
import type { SampleRowsArgs, SampleRowsResult } from '../../backend/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { assert } from '../../util/assert.js';
import { InternalError } from '../../util/errors.js';

export const MAX_TOP_LOGPROBS = 20;
/** Below this temperature sampling is greedy (vLLM's _SAMPLING_EPS), avoiding logits/0 overflow. */
export const GREEDY_EPS = 1e-5;
/** Top-p without top-k buckets tokens by z − max z into bins this wide (nats); the last is open. */
const NUCLEUS_BIN_WIDTH = 0.5;
const NUCLEUS_BINS = 128;

export interface TokenLogprob {
  token: number;
  logprob: number;
}

export interface SampleResult {
  token: number;
  /** Logprob of `token`; null unless the row asks for logprobs. */
  logprob: number | null;
  /** The row's `logprobs` most likely tokens, best first; null unless asked. */
  topLogprobs: TokenLogprob[] | null;
}

/** Everything that decides one row's token besides its logits. */
export interface SampleRow {
  readonly temperature: number;
  /** ≤ 0 or ≥ V: off. */
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  readonly repetitionPenalty: number;
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
  /** Top logprobs to return (0..20); null: none at all. */
  readonly logprobs: number | null;
  /** The uniform draw in [0, 1) (ignored when greedy). */
  readonly u: number;
  /** Prompt + output tokens, each once (repetition penalty); null when that penalty is off. */
  readonly seen: Iterable<number> | null;
  /** Output token → count (frequency/presence penalties); null when both are off. */
  readonly counts: Iterable<readonly [number, number]> | null;
}

export function isGreedy(temperature: number): boolean {
  return temperature < GREEDY_EPS;
}

/**
 * Scratch buffers of vocabulary size. One per sampler by default; an engine that samples
 * requests one after another can share one across all of them.
 */
export class SampleScratch {
  /** Penalised, tempered logits. */
  z = new Float32Array(0);
  /** exp(z - max z): unnormalised probabilities. */
  e = new Float32Array(0);
  idx = new Int32Array(0);
  readonly bins = new Float64Array(NUCLEUS_BINS);

  ensure(v: number): void {
    if (this.z.length < v) {
      this.z = new Float32Array(v);
      this.e = new Float32Array(v);
      this.idx = new Int32Array(v);
    }
  }
}

/** The host algorithm: one row's token and logprobs. `logits` is not modified. */
export function sampleRowHost(logits: Float32Array, p: SampleRow, scratch: SampleScratch): SampleResult {
  const V = logits.length;
  if (V === 0) throw new InternalError('sampler: empty logits row');
  scratch.ensure(V);
  const z = scratch.z.subarray(0, V);
  z.set(logits);
  applyPenalties(z, p);

  const greedy = isGreedy(p.temperature);
  if (!greedy && p.temperature !== 1) for (let i = 0; i < V; i++) z[i] = z[i] / p.temperature;

  let m = -Infinity;
  let argmax = -1;
  for (let i = 0; i < V; i++) {
    if (z[i] > m) {
      m = z[i];
      argmax = i;
    }
  }
  if (argmax < 0 || m === Infinity) throw new InternalError(`sampler: logits have no finite maximum (max ${m})`);

  // exp over all of V is the main cost; top-k alone needs it only for its k candidates.
  const topK = p.topK > 0 && p.topK < V;
  let sumExp = NaN;
  if (p.logprobs !== null || (!greedy && !topK)) {
    const e = scratch.e;
    sumExp = 0;
    for (let i = 0; i < V; i++) sumExp += e[i] = Math.exp(z[i] - m);
    if (!(sumExp >= 1)) throw new InternalError(`sampler: logits contain NaN (sum of exp ${sumExp})`);
  }
  const token = greedy ? argmax : draw(z, m, sumExp, topK, p, scratch);

  let logprob: number | null = null;
  let topLogprobs: TokenLogprob[] | null = null;
  if (p.logprobs !== null) {
    const lse = m + Math.log(sumExp);
    logprob = z[token] - lse;
    const top = topIndices(z, Math.min(p.logprobs, V), scratch.idx);
    topLogprobs = Array.from(top, (t) => ({ token: t, logprob: z[t] - lse }));
  }
  return { token, logprob, topLogprobs };
}

function applyPenalties(z: Float32Array, p: SampleRow): void {
  if (p.seen !== null) {
    const r = p.repetitionPenalty;
    for (const t of p.seen) if (t < z.length) z[t] = z[t] > 0 ? z[t] / r : z[t] * r;
  }
  if (p.counts !== null) {
    for (const [t, c] of p.counts) if (t < z.length) z[t] -= p.frequencyPenalty * c + p.presencePenalty;
  }
}

/**
 * Top-k → top-p → min-p, then one draw. z is tempered, m = max z; e[i] = exp(z[i] − m) and
 * sumExp = Σ e are filled unless only top-k is needed.
 */
function draw(z: Float32Array, m: number, sumExp: number, topK: boolean, p: SampleRow, scratch: SampleScratch): number {
  const { e, idx } = scratch;
  let n = -1; // candidates idx[0..n); -1: all of V
  if (topK) {
    n = topIndices(z, p.topK, idx).length; // best first
    let mass = 0;
    for (let j = 0; j < n; j++) mass += e[idx[j]] = Math.exp(z[idx[j]] - m);
    if (p.topP < 1) n = nucleusCut(idx, 0, n, e, 0, p.topP * mass);
  } else if (p.topP < 1) {
    n = nucleus(z, m, sumExp, p.topP, scratch);
  }
  // min-p: p_i ≥ min_p·p_max ⇔ e_i ≥ min_p (p_max has e = 1, so the best token always stays).
  const floor = p.minP;
  const count = n < 0 ? z.length : n;
  let total = 0;
  for (let j = 0; j < count; j++) {
    const w = e[n < 0 ? j : idx[j]];
    if (w >= floor) total += w;
  }
  const u = p.u * total;
  let cum = 0;
  let last = -1;
  for (let j = 0; j < count; j++) {
    const id = n < 0 ? j : idx[j];
    const w = e[id];
    if (w < floor || w === 0) continue;
    cum += w;
    last = id;
    if (u < cum) return id;
  }
  return last; // float rounding only
}

/**
 * Top-p over all of V without sorting V: bucket tokens by z − m, find the bin where the mass
 * (from the top) crosses top_p, take every token of the bins above it as is, and sort only that
 * bin to place the cut. Writes the nucleus into idx and returns its size.
 */
function nucleus(z: Float32Array, m: number, sumExp: number, topP: number, scratch: SampleScratch): number {
  const { e, idx, bins } = scratch;
  const V = z.length;
  const scale = 1 / NUCLEUS_BIN_WIDTH;
  const binOf = (i: number): number => {
    const d = (m - z[i]) * scale; // -inf logits give Infinity: last bin
    return d < NUCLEUS_BINS - 1 ? d | 0 : NUCLEUS_BINS - 1;
  };
  bins.fill(0);
  for (let i = 0; i < V; i++) bins[binOf(i)] += e[i];
  const target = topP * sumExp;
  let above = 0;
  let B = NUCLEUS_BINS - 1;
  for (let b = 0; b < NUCLEUS_BINS; b++) {
    if (above + bins[b] >= target) {
      B = b;
      break;
    }
    above += bins[b];
  }
  // Bins above B from the front (index order), bin B from the back, then moved next to them.
  let a = 0;
  let back = V;
  for (let i = 0; i < V; i++) {
    const b = binOf(i);
    if (b < B) idx[a++] = i;
    else if (b === B) idx[--back] = i;
  }
  const c = V - back;
  idx.copyWithin(a, back, V);
  sortBestFirst(z, idx.subarray(a, a + c));
  return nucleusCut(idx, a, a + c, e, above, target);
}

/** Better = larger value, then lower index (deterministic ties). */
function better(z: Float32Array, a: number, b: number): boolean {
  return z[a] > z[b] || (z[a] === z[b] && a < b);
}

/**
 * Indices of the k best entries of z, best first, written into out[0..k). Partial selection with a
 * size-k min-heap: O(V log k), no full sort.
 */
export function topIndices(z: Float32Array, k: number, out: Int32Array = new Int32Array(k)): Int32Array {
  const V = z.length;
  k = Math.min(k, V);
  const heap = out.subarray(0, k);
  if (k === 0) return heap;
  // heap[0] is the worst kept index.
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let w = i;
      if (l < k && better(z, heap[w], heap[l])) w = l;
      if (r < k && better(z, heap[w], heap[r])) w = r;
      if (w === i) return;
      const t = heap[i];
      heap[i] = heap[w];
      heap[w] = t;
      i = w;
    }
  };
  for (let i = 0; i < k; i++) heap[i] = i;
  for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(i);
  for (let i = k; i < V; i++) {
    if (better(z, i, heap[0])) {
      heap[0] = i;
      siftDown(0);
    }
  }
  sortBestFirst(z, heap);
  return heap;
}

/**
 * idx[from..to) is best first and `cum` the mass before it: returns the end of the smallest prefix
 * whose cumulative mass reaches target (at least one token past `from`; all if rounding falls short).
 */
function nucleusCut(idx: Int32Array, from: number, to: number, e: Float32Array, cum: number, target: number): number {
  for (let j = from; j < to; j++) {
    cum += e[idx[j]];
    if (cum >= target) return j + 1;
  }
  return to;
}

function sortBestFirst(z: Float32Array, ids: Int32Array): void {
  ids.sort((a, b) => (z[a] !== z[b] ? z[b] - z[a] : a - b));
}

// ---- device packing (sample.cu reads this layout) -------------------------------------------

/** Doubles of parameters per row: temperature, topK, topP, minP, repetition, presence, frequency,
 * u, logprobs (−1: none), repetition-list offset and length, count-list offset and length, 3 spare. */
export const SAMPLE_PARAM_WORDS = 16;
/** Doubles of logprob output per row: the token's, then (token, logprob) × MAX_TOP_LOGPROBS. */
export const SAMPLE_LP_STRIDE = 1 + 2 * MAX_TOP_LOGPROBS;

/** Rows → the device's arguments. Penalty lists go into one token array (counts beside them). */
export function packSampleRows(rows: readonly SampleRow[]): SampleRowsArgs {
  const R = rows.length;
  const params = new Float64Array(R * SAMPLE_PARAM_WORDS);
  const tok: number[] = [];
  const cnt: number[] = [];
  let logprobs = false;
  rows.forEach((p, r) => {
    const o = r * SAMPLE_PARAM_WORDS;
    assert(p.logprobs === null || (Number.isInteger(p.logprobs) && p.logprobs >= 0 && p.logprobs <= MAX_TOP_LOGPROBS), () => `sample row ${r}: logprobs ${p.logprobs}`);
    assert(p.u >= 0 && p.u < 1, () => `sample row ${r}: u ${p.u} outside [0, 1)`);
    params[o] = p.temperature;
    params[o + 1] = Math.max(0, Math.min(p.topK, 2 ** 31 - 1));
    params[o + 2] = p.topP;
    params[o + 3] = p.minP;
    params[o + 4] = p.repetitionPenalty;
    params[o + 5] = p.presencePenalty;
    params[o + 6] = p.frequencyPenalty;
    params[o + 7] = p.u;
    params[o + 8] = p.logprobs ?? -1;
    if (p.logprobs !== null) logprobs = true;
    params[o + 9] = tok.length;
    if (p.seen !== null) for (const t of p.seen) tok.push(t), cnt.push(0);
    params[o + 10] = tok.length - params[o + 9];
    params[o + 11] = tok.length;
    if (p.counts !== null) for (const [t, c] of p.counts) tok.push(t), cnt.push(c);
    params[o + 12] = tok.length - params[o + 11];
  });
  return { params, penTokens: Int32Array.from(tok), penCounts: Int32Array.from(cnt), logprobs };
}

/** Row r of a device result as the host algorithm returns it. */
export function unpackSampleRow(res: SampleRowsResult, r: number, logprobs: number | null, V: number): SampleResult {
  const token = res.tokens[r];
  if (token < 0) throw new InternalError(`device sampler, row ${r}: ${DEVICE_ERRORS[-token] ?? `error ${token}`}`);
  if (logprobs === null) return { token, logprob: null, topLogprobs: null };
  const lp = res.logprobs;
  assert(lp !== null, 'device sampler: logprobs asked for but not returned');
  const o = r * SAMPLE_LP_STRIDE;
  const top: TokenLogprob[] = [];
  for (let j = 0; j < Math.min(logprobs, V); j++) top.push({ token: lp[o + 1 + 2 * j], logprob: lp[o + 2 + 2 * j] });
  return { token, logprob: lp[o], topLogprobs: top };
}

const DEVICE_ERRORS: Record<number, string> = {
  1: 'logits have no finite maximum',
  2: 'logits contain NaN',
  3: 'a truncation search found no token',
};

/** Shapes of a sampleRows call; returns [R, V]. */
export function checkSampleRows(logits: Tensor, a: SampleRowsArgs): [number, number] {
  assert(logits.shape.length === 2 && logits.dtype === 'f32', () => `sampleRows: logits must be f32 [R, V], found ${logits}`);
  const [R, V] = logits.shape;
  assert(a.params.length === R * SAMPLE_PARAM_WORDS, () => `sampleRows: ${a.params.length} parameter words for ${R} rows`);
  assert(a.penTokens.length === a.penCounts.length, 'sampleRows: penalty tokens and counts differ in length');
  assert(V >= 1 && V < 2 ** 24, () => `sampleRows: vocabulary ${V}`);
  return [R, V];
}
