/**
 * Per-request sampling: parameters with defaults and validation, and a Sampler that turns one
 * row of logits [V] into a token, keeping the request's state (its Prng, and the tokens the
 * penalties look at). The row algorithm itself (order of penalties, temperature, top-k, top-p,
 * min-p, the draw, logprobs) is ops/sample/sample.ts sampleRowHost; a backend with sampleRows
 * runs the same algorithm on the device from deviceRow() and hands the result to acceptDevice().
 */
import { InvalidRequestError } from '../util/errors.js';
import { Prng } from '../util/prng.js';
import { MAX_TOP_LOGPROBS, SampleScratch, isGreedy, sampleRowHost, type SampleResult, type SampleRow } from '../ops/sample/sample.js';

export { MAX_TOP_LOGPROBS, topIndices, type SampleResult, type SampleRow, type TokenLogprob } from '../ops/sample/sample.js';
/** Vocabulary-size scratch (one per sampler, or one shared by an engine's samplers). */
export { SampleScratch as SamplerScratch };

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

export interface SamplerOptions {
  /** Prompt token ids (repetition penalty context). */
  promptIds?: readonly number[];
  /** Seed used when params.seed is null (e.g. from the engine's own Prng). */
  fallbackSeed?: number;
  scratch?: SampleScratch;
}

/** Samples one request's tokens. sample() records each chosen token for the penalties. */
export class Sampler {
  private readonly prng: Prng;
  private readonly scratch: SampleScratch;
  /** Tokens of prompt + output (repetition penalty); only kept when that penalty is on. */
  private readonly seen: Set<number> | null;
  /** Output token counts (presence/frequency penalties). */
  private readonly counts = new Map<number, number>();
  private readonly countsUsed: boolean;
  private generated = 0;

  constructor(
    readonly params: SamplingParams,
    opts: SamplerOptions = {},
  ) {
    this.prng = new Prng(foldSeed(params.seed ?? opts.fallbackSeed ?? 0));
    this.scratch = opts.scratch ?? new SampleScratch();
    this.seen = params.repetitionPenalty !== 1 ? new Set(opts.promptIds ?? []) : null;
    this.countsUsed = params.frequencyPenalty !== 0 || params.presencePenalty !== 0;
  }

  /** Number of tokens sampled so far. */
  get generatedCount(): number {
    return this.generated;
  }

  /** Chooses the next token from `logits` [V] (not modified) and records it. */
  sample(logits: Float32Array): SampleResult {
    const res = sampleRowHost(logits, this.nextRow(), this.scratch);
    this.record(res.token);
    return res;
  }

  /**
   * The next token's row for a device sampler (Backend.sampleRows): parameters, penalty state and
   * the uniform draw, taken from the Prng here exactly as sample() takes it. Pair each call with
   * acceptDevice() (or drop the request: its stream ends there). The penalty lists are live views
   * of this sampler's state: pack them before the next acceptDevice().
   */
  deviceRow(): SampleRow {
    return this.nextRow();
  }

  /** Records the token a device chose from deviceRow()'s row, as sample() records its own. */
  acceptDevice(res: SampleResult): SampleResult {
    this.record(res.token);
    return res;
  }

  private nextRow(): SampleRow {
    const p = this.params;
    return {
      temperature: p.temperature,
      topK: p.topK,
      topP: p.topP,
      minP: p.minP,
      repetitionPenalty: p.repetitionPenalty,
      presencePenalty: p.presencePenalty,
      frequencyPenalty: p.frequencyPenalty,
      logprobs: p.logprobs,
      // One draw per sampled token, none when greedy (the host algorithm's only use of randomness).
      u: isGreedy(p.temperature) ? 0 : this.prng.next(),
      seen: this.seen,
      counts: this.countsUsed ? this.counts : null,
    };
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
