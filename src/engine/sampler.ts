/**
 * Per-request sampling: parameters with defaults and validation, and a Sampler that turns one
 * row of logits [V] into a token.
 *
 * Order (HF generate's, and vLLM's for the penalties):
 *   1. repetition penalty over prompt + generated tokens (positive logits divided, negative
 *      multiplied), then frequency (× count) and presence (× [count>0]) penalties subtracted, over
 *      generated tokens only (OpenAI);
 *   2. temperature < 1e-5 → greedy argmax (lowest index on ties); else logits / temperature;
 *   3. top-k, then top-p on the renormalised top-k distribution (smallest prefix whose mass
 *      ≥ top_p, at least one token), then min-p (drop p < min_p · p_max);
 *   4. draw from the renormalised survivors with the request's Prng.
 * vLLM applies min-p before top-k/top-p; the two orders differ only when top_p < 1 and min_p > 0.
 *
 * Logprobs come from the distribution after penalties and temperature and before truncation
 * (log_softmax(z)), so they describe the model's preference, not the truncated support; with
 * greedy decoding the temperature is taken as 1.
 */
import { InternalError, InvalidRequestError } from '../util/errors.js';
import { Prng } from '../util/prng.js';

export interface SamplingParams {
  /** ≥ 0; 0 (below 1e-5) means greedy. */
  temperature: number;
  /** Keep the k most likely tokens; 0 or -1 means off (vLLM accepts both). */
  topK: number;
  /** In (0, 1]; 1 means off. */
  topP: number;
  /** In [0, 1]; 0 means off. */
  minP: number;
  /** > 0; 1 means off. */
  repetitionPenalty: number;
  /** In [-2, 2]. */
  presencePenalty: number;
  /** In [-2, 2]. */
  frequencyPenalty: number;
  /** Integer; null: the engine supplies one (a run is then not reproducible by the user). */
  seed: number | null;
  /** Integer ≥ 1; null: until the context is full. */
  maxTokens: number | null;
  stop: readonly string[];
  stopTokenIds: readonly number[];
  ignoreEos: boolean;
  /** How many top logprobs to return per token (0..20); null: no logprobs at all. */
  logprobs: number | null;
}

export const DEFAULT_SAMPLING_PARAMS: Readonly<SamplingParams> = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  seed: null,
  maxTokens: null,
  stop: [],
  stopTokenIds: [],
  ignoreEos: false,
  logprobs: null,
});

/** Request fields as they arrive (already mapped to camelCase); null or absent means default. */
export type SamplingParamsInput = { [K in keyof SamplingParams]?: unknown };

/** OpenAI / vLLM field names, used in error messages and InvalidRequestError.param. */
const PARAM_NAMES: Readonly<Record<keyof SamplingParams, string>> = {
  temperature: 'temperature',
  topK: 'top_k',
  topP: 'top_p',
  minP: 'min_p',
  repetitionPenalty: 'repetition_penalty',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  seed: 'seed',
  maxTokens: 'max_tokens',
  stop: 'stop',
  stopTokenIds: 'stop_token_ids',
  ignoreEos: 'ignore_eos',
  logprobs: 'logprobs',
};

export const MAX_TOP_LOGPROBS = 20;

/**
 * Fills defaults and validates; throws InvalidRequestError naming the offending field.
 * `stop` may be a string or a list of strings. `vocabSize` (when known) bounds stop_token_ids.
 */
export function resolveSamplingParams(input: SamplingParamsInput, limits: { vocabSize?: number } = {}): SamplingParams {
  const d = DEFAULT_SAMPLING_PARAMS;
  const num = (key: keyof SamplingParams, def: number, ok: (v: number) => boolean, range: string, integer = false): number => {
    const v = input[key];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || !ok(v)) {
      const found = typeof v === 'number' ? String(v) : JSON.stringify(v);
      throw new InvalidRequestError(`${PARAM_NAMES[key]} must be ${range}, found ${found}`, PARAM_NAMES[key]);
    }
    return v;
  };
  const nullableInt = (key: keyof SamplingParams, ok: (v: number) => boolean, range: string): number | null =>
    input[key] === undefined || input[key] === null ? null : num(key, 0, ok, range, true);

  const p: SamplingParams = {
    temperature: num('temperature', d.temperature, (v) => v >= 0, 'a number ≥ 0'),
    topK: num('topK', d.topK, (v) => v >= -1, 'an integer ≥ 1, or 0 or -1 to disable', true),
    topP: num('topP', d.topP, (v) => v > 0 && v <= 1, 'a number in (0, 1]'),
    minP: num('minP', d.minP, (v) => v >= 0 && v <= 1, 'a number in [0, 1]'),
    repetitionPenalty: num('repetitionPenalty', d.repetitionPenalty, (v) => v > 0, 'a number > 0'),
    presencePenalty: num('presencePenalty', d.presencePenalty, (v) => v >= -2 && v <= 2, 'a number in [-2, 2]'),
    frequencyPenalty: num('frequencyPenalty', d.frequencyPenalty, (v) => v >= -2 && v <= 2, 'a number in [-2, 2]'),
    seed: nullableInt('seed', (v) => Number.isSafeInteger(v), 'a safe integer'),
    maxTokens: nullableInt('maxTokens', (v) => v >= 1, 'an integer ≥ 1'),
    stop: stopStrings(input.stop),
    stopTokenIds: tokenIds(input.stopTokenIds, limits.vocabSize),
    ignoreEos: bool(input.ignoreEos, 'ignoreEos'),
    logprobs: nullableInt('logprobs', (v) => v >= 0 && v <= MAX_TOP_LOGPROBS, `an integer in [0, ${MAX_TOP_LOGPROBS}]`),
  };
  return p;
}

function stopStrings(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((s): s is string => typeof s === 'string' && s.length > 0)) {
    throw new InvalidRequestError('stop must be a non-empty string or a list of non-empty strings', 'stop');
  }
  return list;
}

function tokenIds(v: unknown, vocabSize: number | undefined): number[] {
  if (v === undefined || v === null) return [];
  const ok = (t: unknown): t is number => Number.isInteger(t) && (t as number) >= 0 && (vocabSize === undefined || (t as number) < vocabSize);
  if (!Array.isArray(v) || !v.every(ok)) {
    const range = vocabSize === undefined ? 'integers ≥ 0' : `integers in [0, ${vocabSize})`;
    throw new InvalidRequestError(`stop_token_ids must be a list of ${range}`, 'stop_token_ids');
  }
  return v;
}

function bool(v: unknown, key: keyof SamplingParams): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw new InvalidRequestError(`${PARAM_NAMES[key]} must be a boolean`, PARAM_NAMES[key]);
  return v;
}

export interface TokenLogprob {
  token: number;
  logprob: number;
}

export interface SampleResult {
  token: number;
  /** Logprob of `token`; null unless params.logprobs !== null. */
  logprob: number | null;
  /** The params.logprobs most likely tokens, best first; null unless asked. */
  topLogprobs: TokenLogprob[] | null;
}

/** Below this temperature sampling is greedy (vLLM's _SAMPLING_EPS), avoiding logits/0 overflow. */
const GREEDY_EPS = 1e-5;
/** Top-p without top-k buckets tokens by z − max z into bins this wide (nats); the last is open. */
const NUCLEUS_BIN_WIDTH = 0.5;
const NUCLEUS_BINS = 128;

/**
 * Scratch buffers of vocabulary size. One per sampler by default; an engine that samples
 * requests one after another can share one across all of them.
 */
export class SamplerScratch {
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

export interface SamplerOptions {
  /** Prompt token ids (repetition penalty context). */
  promptIds?: readonly number[];
  /** Seed used when params.seed is null (e.g. from the engine's own Prng). */
  fallbackSeed?: number;
  scratch?: SamplerScratch;
}

/** Samples one request's tokens. sample() records each chosen token for the penalties. */
export class Sampler {
  private readonly prng: Prng;
  private readonly scratch: SamplerScratch;
  /** Tokens of prompt + output (repetition penalty); only kept when that penalty is on. */
  private readonly seen: Set<number> | null;
  /** Output token counts (presence/frequency penalties). */
  private readonly counts = new Map<number, number>();
  private generated = 0;

  constructor(
    readonly params: SamplingParams,
    opts: SamplerOptions = {},
  ) {
    this.prng = new Prng(foldSeed(params.seed ?? opts.fallbackSeed ?? 0));
    this.scratch = opts.scratch ?? new SamplerScratch();
    this.seen = params.repetitionPenalty !== 1 ? new Set(opts.promptIds ?? []) : null;
  }

  /** Number of tokens sampled so far. */
  get generatedCount(): number {
    return this.generated;
  }

  /** Chooses the next token from `logits` [V] (not modified) and records it. */
  sample(logits: Float32Array): SampleResult {
    const V = logits.length;
    if (V === 0) throw new InternalError('sampler: empty logits row');
    this.scratch.ensure(V);
    const z = this.scratch.z.subarray(0, V);
    z.set(logits);
    this.applyPenalties(z);

    const p = this.params;
    const greedy = p.temperature < GREEDY_EPS;
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
      const e = this.scratch.e;
      sumExp = 0;
      for (let i = 0; i < V; i++) sumExp += e[i] = Math.exp(z[i] - m);
      if (!(sumExp >= 1)) throw new InternalError(`sampler: logits contain NaN (sum of exp ${sumExp})`);
    }
    const token = greedy ? argmax : this.draw(z, m, sumExp, topK);

    let logprob: number | null = null;
    let topLogprobs: TokenLogprob[] | null = null;
    if (p.logprobs !== null) {
      const lse = m + Math.log(sumExp);
      logprob = z[token] - lse;
      const top = topIndices(z, Math.min(p.logprobs, V), this.scratch.idx);
      topLogprobs = Array.from(top, (t) => ({ token: t, logprob: z[t] - lse }));
    }
    this.record(token);
    return { token, logprob, topLogprobs };
  }

  private applyPenalties(z: Float32Array): void {
    const p = this.params;
    if (this.seen !== null) {
      const r = p.repetitionPenalty;
      for (const t of this.seen) if (t < z.length) z[t] = z[t] > 0 ? z[t] / r : z[t] * r;
    }
    if (p.frequencyPenalty !== 0 || p.presencePenalty !== 0) {
      for (const [t, c] of this.counts) if (t < z.length) z[t] -= p.frequencyPenalty * c + p.presencePenalty;
    }
  }

  /**
   * Top-k → top-p → min-p, then one draw. z is tempered, m = max z; e[i] = exp(z[i] − m) and
   * sumExp = Σ e are filled unless only top-k is needed.
   */
  private draw(z: Float32Array, m: number, sumExp: number, topK: boolean): number {
    const p = this.params;
    const { e, idx } = this.scratch;
    let n = -1; // candidates idx[0..n); -1: all of V
    if (topK) {
      n = topIndices(z, p.topK, idx).length; // best first
      let mass = 0;
      for (let j = 0; j < n; j++) mass += e[idx[j]] = Math.exp(z[idx[j]] - m);
      if (p.topP < 1) n = nucleusCut(idx, 0, n, e, 0, p.topP * mass);
    } else if (p.topP < 1) {
      n = this.nucleus(z, m, sumExp);
    }
    // min-p: p_i ≥ min_p·p_max ⇔ e_i ≥ min_p (p_max has e = 1, so the best token always stays).
    const floor = p.minP;
    const count = n < 0 ? z.length : n;
    let total = 0;
    for (let j = 0; j < count; j++) {
      const w = e[n < 0 ? j : idx[j]];
      if (w >= floor) total += w;
    }
    const u = this.prng.next() * total;
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
  private nucleus(z: Float32Array, m: number, sumExp: number): number {
    const { e, idx, bins } = this.scratch;
    const V = z.length;
    const scale = 1 / NUCLEUS_BIN_WIDTH;
    const binOf = (i: number): number => {
      const d = (m - z[i]) * scale; // -inf logits give Infinity: last bin
      return d < NUCLEUS_BINS - 1 ? d | 0 : NUCLEUS_BINS - 1;
    };
    bins.fill(0);
    for (let i = 0; i < V; i++) bins[binOf(i)] += e[i];
    const target = this.params.topP * sumExp;
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

  private record(token: number): void {
    this.generated++;
    this.seen?.add(token);
    this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
  }
}

/** Any safe-integer seed to the 32 bits the Prng takes (high bits folded in, so 2^32 ≠ 0). */
export function foldSeed(seed: number): number {
  const lo = ((seed % 4294967296) + 4294967296) % 4294967296;
  const hi = Math.floor(seed / 4294967296);
  return (lo ^ Math.imul(hi | 0, 0x9e3779b1)) >>> 0;
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
