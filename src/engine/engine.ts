/**
 * The step loop: requests in, tokens out. Every step packs decode tokens (one per running
 * request) and prefill chunks of waiting/partial requests into one mixed batch under a token
 * budget, runs one forward, samples the rows that finished their input, and streams text.
 * When the latent cache runs out, the newest request is preempted and later recomputed.
 */
import type { CacheSeq, HybridCache } from '../cache/hybrid-cache.js';
import type { Model } from '../model/forward.js';
import type { StepSeq } from '../model/step.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { assert } from '../util/assert.js';
import { InvalidRequestError } from '../util/errors.js';
import { Prng } from '../util/prng.js';
import { StreamDecoder } from './detokenizer.js';
import { Sampler, SamplerScratch, type SamplingParams, type TokenLogprob } from './sampler.js';
import { StopMatcher } from './stop.js';

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerateRequest {
  readonly promptIds: readonly number[];
  readonly params: SamplingParams;
  /** Streaming callback: new text (never a split UTF-8 character) and the new token ids. */
  readonly onDelta?: (text: string, tokenIds: readonly number[]) => void;
}

export interface GenerateResult {
  readonly promptTokens: number;
  readonly tokenIds: readonly number[];
  readonly text: string;
  readonly finishReason: FinishReason;
  /** The stop string or stop token id that ended generation, when one did. */
  readonly stoppedBy: string | number | null;
  readonly logprobs: readonly { token: number; logprob: number; top: readonly TokenLogprob[] }[] | null;
}

export interface EngineOptions {
  readonly maxModelLen: number;
  /** End-of-sequence ids (config, generation_config, tokenizer). */
  readonly eosIds: readonly number[];
  /** Seeds requests that give none. */
  readonly seed?: number;
}

class Request {
  readonly tokens: number[];
  /** Tokens whose cache entries exist. */
  done = 0;
  seq: CacheSeq | null = null;
  readonly generated: number[] = [];
  text = '';
  finish: FinishReason | null = null;
  stoppedBy: string | number | null = null;
  readonly logprobs: { token: number; logprob: number; top: readonly TokenLogprob[] }[] | null;

  constructor(
    readonly id: number,
    readonly req: GenerateRequest,
    readonly sampler: Sampler,
    readonly decoder: StreamDecoder,
    readonly stop: StopMatcher,
    readonly resolve: (r: GenerateResult) => void,
  ) {
    this.tokens = [...req.promptIds];
    this.logprobs = req.params.logprobs !== null ? [] : null;
  }
}

export class Engine {
  private readonly waiting: Request[] = [];
  private readonly running: Request[] = [];
  private readonly scratch = new SamplerScratch();
  private readonly seeds: Prng;
  private nextId = 0;
  /** Preemptions so far (metrics). */
  preemptions = 0;

  constructor(
    readonly model: Model,
    readonly cache: HybridCache,
    readonly tokenizer: Tokenizer,
    readonly opts: EngineOptions,
  ) {
    this.seeds = new Prng(opts.seed ?? 0);
  }

  get pending(): number {
    return this.waiting.length + this.running.length;
  }

  /** Queue a request; the promise resolves when it finishes (run step() or runUntilIdle()). */
  submit(req: GenerateRequest): Promise<GenerateResult> {
    if (req.promptIds.length === 0) throw new InvalidRequestError('the prompt is empty', 'prompt');
    if (req.promptIds.length >= this.opts.maxModelLen)
      throw new InvalidRequestError(`the prompt has ${req.promptIds.length} tokens; the context is ${this.opts.maxModelLen}`, 'prompt');
    const V = this.model.spec.config.vocab_size;
    for (const t of req.promptIds) if (!Number.isInteger(t) || t < 0 || t >= V) throw new InvalidRequestError(`token id ${t} is outside [0, ${V})`, 'prompt');
    // A request must fit the whole cache on its own, or preemption could never make room for it.
    const longest = Math.min(this.opts.maxModelLen, req.promptIds.length + (req.params.maxTokens ?? Infinity));
    if (this.cache.blocksFor(longest) > this.cache.opts.numBlocks)
      throw new InvalidRequestError(`prompt + max_tokens (${longest} tokens) exceeds the cache (${this.cache.opts.numBlocks * this.cache.blockSize} tokens)`, 'max_tokens');
    return new Promise((resolve) => {
      const sampler = new Sampler(req.params, { promptIds: req.promptIds, fallbackSeed: this.seeds.nextU32(), scratch: this.scratch });
      const decoder = new StreamDecoder(this.tokenizer, { promptIds: req.promptIds, skipSpecialTokens: true });
      this.waiting.push(new Request(this.nextId++, req, sampler, decoder, new StopMatcher(req.params.stop), resolve));
    });
  }

  /** Run steps until no request is left. */
  runUntilIdle(): void {
    while (this.pending > 0) this.step();
  }

  /** One forward over a mixed batch. Returns the number of tokens processed. */
  step(): number {
    const budget = this.model.maxBatchTokens;
    const parts: { r: Request; len: number }[] = [];
    let used = 0;
    // Running requests first (one decode token, or the next chunk of a long prompt), oldest first.
    for (const r of [...this.running]) {
      if (used >= budget) break;
      if (!r.seq) continue; // preempted earlier in this loop
      const len = Math.min(r.tokens.length - r.done, budget - used);
      while (r.seq && !this.cache.reserve(r.seq, r.done + len)) this.preempt(this.running[this.running.length - 1]);
      if (!r.seq) continue;
      parts.push({ r, len });
      used += len;
    }
    // Admit waiting requests while budget, a state slot and blocks remain.
    while (this.waiting.length > 0 && used < budget && parts.length < this.model.maxSampleRows) {
      const r = this.waiting[0];
      const len = Math.min(r.tokens.length - r.done, budget - used);
      if (this.cache.blocksFor(len) > this.cache.freeBlockCount) break;
      const seq = this.cache.allocSeq();
      if (!seq) break;
      this.cache.reserve(seq, len);
      r.seq = seq;
      this.waiting.shift();
      this.running.push(r);
      parts.push({ r, len });
      used += len;
    }
    if (parts.length === 0) {
      // submit() guarantees a lone request fits the cache, so an idle step with work queued is a bug.
      assert(this.waiting.length === 0, 'no progress possible with requests waiting');
      return 0;
    }

    const ids = new Int32Array(used), positions = new Int32Array(used);
    const seqs: StepSeq[] = [];
    const sampleRows: number[] = [];
    const sampled: Request[] = [];
    let row = 0;
    for (const { r, len } of parts) {
      for (let j = 0; j < len; j++) {
        ids[row + j] = r.tokens[r.done + j];
        positions[row + j] = r.done + j;
      }
      seqs.push({ seq: r.seq!, start: row, len, ctxStart: r.done });
      if (r.done + len === r.tokens.length) {
        sampleRows.push(row + len - 1);
        sampled.push(r);
      }
      row += len;
    }
    const logits = this.model.forward({ ids, positions, seqs, sampleRows: Int32Array.from(sampleRows) }, this.cache);
    for (const { r, len } of parts) r.done += len;
    const host = this.model.be.download(logits);
    const V = logits.shape[1];
    sampled.forEach((r, i) => this.accept(r, host.subarray(i * V, (i + 1) * V)));
    for (let i = this.running.length - 1; i >= 0; i--) if (this.running[i].finish) this.finish(this.running[i], i);
    return used;
  }

  /** Abort everything (e.g. on shutdown): pending requests resolve with finishReason 'abort'. */
  abortAll(): void {
    for (const r of [...this.running, ...this.waiting]) r.finish = 'abort';
    for (let i = this.running.length - 1; i >= 0; i--) this.finish(this.running[i], i);
    for (const r of this.waiting.splice(0)) this.resolveResult(r);
  }

  private accept(r: Request, logits: Float32Array): void {
    const res = r.sampler.sample(logits);
    const t = res.token;
    r.generated.push(t);
    r.tokens.push(t);
    if (r.logprobs && res.logprob !== null) r.logprobs.push({ token: t, logprob: res.logprob, top: res.topLogprobs ?? [] });
    const p = r.req.params;
    const isEos = !p.ignoreEos && this.opts.eosIds.includes(t);
    const isStopId = p.stopTokenIds.includes(t);
    if (isEos || isStopId) {
      r.finish = 'stop';
      r.stoppedBy = t;
      this.emit(r, r.stop.push(r.decoder.flush()).text + r.stop.flush(), [t]);
      return;
    }
    const piece = r.decoder.push(t);
    const s = r.stop.push(piece);
    this.emit(r, s.text, [t]);
    if (s.stop !== null) {
      r.finish = 'stop';
      r.stoppedBy = s.stop;
    } else if ((p.maxTokens !== null && r.generated.length >= p.maxTokens) || r.tokens.length >= this.opts.maxModelLen) {
      r.finish = 'length';
      const tail = r.decoder.flush();
      this.emit(r, r.stop.push(tail).text + r.stop.flush(), []);
    }
  }

  private emit(r: Request, text: string, ids: readonly number[]): void {
    r.text += text;
    if (r.req.onDelta && (text.length > 0 || ids.length > 0)) r.req.onDelta(text, ids);
  }

  private finish(r: Request, index: number): void {
    this.running.splice(index, 1);
    if (r.seq) this.cache.free(r.seq);
    r.seq = null;
    this.resolveResult(r);
  }

  private resolveResult(r: Request): void {
    r.resolve({
      promptTokens: r.req.promptIds.length,
      tokenIds: r.generated,
      text: r.text,
      finishReason: r.finish ?? 'abort',
      stoppedBy: r.stoppedBy,
      logprobs: r.logprobs,
    });
  }

  /** Free a running request's cache; it goes back to the front of the queue and is recomputed. */
  private preempt(v: Request): void {
    this.running.splice(this.running.indexOf(v), 1);
    this.cache.free(v.seq!);
    v.seq = null;
    v.done = 0;
    this.waiting.unshift(v);
    this.preemptions++;
  }
}
