/**
 * The step loop: requests in, tokens out. Every step packs decode tokens (one per running
 * request) and prefill chunks of waiting/partial requests into one mixed batch under a token
 * budget (planned by the pure `planStep`), runs one forward, samples the rows that finished
 * their input, and streams text. When the latent cache runs out, the newest request is
 * preempted and later recomputed. Requests can be aborted by id at any time; an abort frees the
 * request's state slot and blocks at once (or at the end of the step it arrives in).
 */
import type { CacheSeq, HybridCache } from '../cache/hybrid-cache.js';
import type { Model } from '../model/forward.js';
import type { StepSeq } from '../model/step.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { assert } from '../util/assert.js';
import { InvalidRequestError } from '../util/errors.js';
import { Prng } from '../util/prng.js';
import { StreamDecoder } from './detokenizer.js';
import { packSampleRows, unpackSampleRow } from '../ops/sample/sample.js';
import { Sampler, SamplerScratch, type SampleResult, type SamplingParams, type TokenLogprob } from './sampler.js';
import { planStep, type SchedRequest } from './scheduler.js';
import { StopMatcher } from './stop.js';

export type FinishReason = 'stop' | 'length' | 'abort';

export interface LogprobEntry {
  readonly token: number;
  readonly logprob: number;
  readonly top: readonly TokenLogprob[];
}

export interface GenerateRequest {
  readonly promptIds: readonly number[];
  readonly params: SamplingParams;
  /**
   * Streaming callback: new text (never a split UTF-8 character), the new token ids, and their
   * logprobs when asked for (same order as tokenIds).
   */
  readonly onDelta?: (text: string, tokenIds: readonly number[], logprobs: readonly LogprobEntry[] | null) => void;
}

/** Counters and gauges for metrics; a plain snapshot. */
export interface EngineStats {
  readonly running: number;
  readonly waiting: number;
  readonly totalBlocks: number;
  readonly freeBlocks: number;
  readonly totalSlots: number;
  readonly freeSlots: number;
  /** Used latent blocks / total (0 when the model has no paged layer). */
  readonly cacheUsage: number;
  readonly preemptions: number;
  /** Prompt tokens of accepted requests. */
  readonly promptTokens: number;
  /** Tokens sampled (every request, including aborted ones). */
  readonly generationTokens: number;
  readonly steps: number;
}

export interface GenerateResult {
  readonly promptTokens: number;
  readonly tokenIds: readonly number[];
  readonly text: string;
  readonly finishReason: FinishReason;
  /** The stop string or stop token id that ended generation, when one did. */
  readonly stoppedBy: string | number | null;
  readonly logprobs: readonly LogprobEntry[] | null;
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
  /** Set when the request is finished or aborted; it leaves the queues at the end of the step. */
  finish: FinishReason | null = null;
  stoppedBy: string | number | null = null;
  readonly logprobs: LogprobEntry[] | null;

  constructor(
    readonly id: number,
    readonly req: GenerateRequest,
    readonly sampler: Sampler,
    readonly decoder: StreamDecoder,
    readonly stop: StopMatcher,
    readonly resolve: (r: GenerateResult) => void,
    readonly reject: (e: unknown) => void,
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
  /** True while step() runs: aborts then wait for the step's end. */
  private stepping = false;
  /** Preemptions so far (metrics). */
  preemptions = 0;
  private promptTokens = 0;
  private generationTokens = 0;
  private steps = 0;

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
    return this.enqueue(req).result;
  }

  /**
   * Queue a request and get its id (for abort). Throws InvalidRequestError at once for a
   * request that can never run; the promise rejects only if the step loop fails (failAll).
   */
  enqueue(req: GenerateRequest): { id: number; result: Promise<GenerateResult> } {
    if (req.promptIds.length === 0) throw new InvalidRequestError('the prompt is empty', 'prompt');
    if (req.promptIds.length >= this.opts.maxModelLen)
      throw new InvalidRequestError(`the prompt has ${req.promptIds.length} tokens; the context is ${this.opts.maxModelLen}`, 'prompt');
    const V = this.model.spec.config.vocab_size;
    for (const t of req.promptIds) if (!Number.isInteger(t) || t < 0 || t >= V) throw new InvalidRequestError(`token id ${t} is outside [0, ${V})`, 'prompt');
    // A request must fit the whole cache on its own, or preemption could never make room for it.
    const longest = Math.min(this.opts.maxModelLen, req.promptIds.length + (req.params.maxTokens ?? Infinity));
    if (this.cache.blocksFor(longest) > this.cache.opts.numBlocks)
      throw new InvalidRequestError(`prompt + max_tokens (${longest} tokens) exceeds the cache (${this.cache.opts.numBlocks * this.cache.blockSize} tokens)`, 'max_tokens');
    const id = this.nextId++;
    const result = new Promise<GenerateResult>((resolve, reject) => {
      const sampler = new Sampler(req.params, { promptIds: req.promptIds, fallbackSeed: this.seeds.nextU32(), scratch: this.scratch });
      const decoder = new StreamDecoder(this.tokenizer, { promptIds: req.promptIds, skipSpecialTokens: true });
      this.waiting.push(new Request(id, req, sampler, decoder, new StopMatcher(req.params.stop), resolve, reject));
    });
    this.promptTokens += req.promptIds.length;
    return { id, result };
  }

  /**
   * Abort a queued or running request: it resolves with finishReason 'abort' and its slot and
   * blocks return to the pools (at once, or at the end of the current step when called from a
   * streaming callback). False when the id is unknown or already finished.
   */
  abort(id: number): boolean {
    const r = this.running.find((x) => x.id === id) ?? this.waiting.find((x) => x.id === id);
    if (!r || r.finish) return false;
    r.finish = 'abort';
    if (!this.stepping) this.reap();
    return true;
  }

  stats(): EngineStats {
    const c = this.cache;
    const totalBlocks = c.opts.numBlocks;
    return {
      running: this.running.length,
      waiting: this.waiting.length,
      totalBlocks,
      freeBlocks: c.freeBlockCount,
      totalSlots: c.opts.maxSeqs,
      freeSlots: c.freeSlotCount,
      cacheUsage: totalBlocks === 0 ? 0 : (totalBlocks - c.freeBlockCount) / totalBlocks,
      preemptions: this.preemptions,
      promptTokens: this.promptTokens,
      generationTokens: this.generationTokens,
      steps: this.steps,
    };
  }

  /** Run steps until no request is left. */
  runUntilIdle(): void {
    while (this.pending > 0) this.step();
  }

  /** One forward over a mixed batch. Returns the number of tokens processed. */
  step(): number {
    this.stepping = true;
    try {
      return this.runStep();
    } finally {
      this.stepping = false;
      this.reap();
    }
  }

  private runStep(): number {
    const c = this.cache;
    const view = (r: Request): SchedRequest => ({ id: r.id, done: r.done, total: r.tokens.length, blocks: r.seq ? r.seq.blocks.length : 0 });
    const plan = planStep({
      running: this.running.map(view),
      waiting: this.waiting.map(view),
      freeBlocks: c.freeBlockCount,
      freeSlots: c.freeSlotCount,
      tokenBudget: this.model.maxBatchTokens,
      maxSeqs: this.model.maxSampleRows,
      blockSize: c.blocksFor(1) === 0 ? 0 : c.blockSize,
    });
    // Victims come newest first; each goes to the queue's front, so they end up oldest first.
    for (const id of plan.preempt) this.preempt(this.running.find((r) => r.id === id)!);
    for (const id of plan.admit) {
      const i = this.waiting.findIndex((r) => r.id === id);
      const r = this.waiting[i];
      const seq = c.allocSeq();
      assert(seq !== null, 'scheduler admitted a request without a free state slot');
      r.seq = seq;
      this.waiting.splice(i, 1);
      this.running.push(r);
    }
    const byId = new Map(this.running.map((r) => [r.id, r]));
    const parts = plan.parts.map(({ id, len }) => ({ r: byId.get(id)!, len }));
    for (const { r, len } of parts) assert(c.reserve(r.seq!, r.done + len), 'scheduler planned more blocks than are free');
    const used = plan.tokens;
    if (parts.length === 0) {
      // submit() guarantees a lone request fits the cache, so an idle step with work queued is a bug.
      assert(this.waiting.length === 0 || plan.preempt.length > 0, 'no progress possible with requests waiting');
      return 0;
    }
    this.steps++;

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
    const batch = { ids, positions, seqs, sampleRows: Int32Array.from(sampleRows) };
    const logits = this.model.step(batch, this.cache);
    for (const { r, len } of parts) r.done += len;
    const be = this.model.be;
    const V = logits.shape[1];
    // A callback may abort another request mid-loop; it gets no more tokens.
    if (be.sampleRows && logits.storage.kind === 'device' && sampled.length > 0) {
      // Sampled where the logits are; only tokens (and asked-for logprobs) come back.
      const res = be.sampleRows(logits, packSampleRows(sampled.map((r) => r.sampler.deviceRow())));
      sampled.forEach((r, i) => r.finish === null && this.accept(r, r.sampler.acceptDevice(unpackSampleRow(res, i, r.req.params.logprobs, V))));
    } else {
      const host = be.download(logits);
      sampled.forEach((r, i) => r.finish === null && this.accept(r, r.sampler.sample(host.subarray(i * V, (i + 1) * V))));
    }
    return used;
  }

  /** Abort everything (e.g. on shutdown): pending requests resolve with finishReason 'abort'. */
  abortAll(): void {
    for (const r of [...this.running, ...this.waiting]) if (!r.finish) r.finish = 'abort';
    if (!this.stepping) this.reap();
  }

  /**
   * The step loop failed (a broken invariant or a device error): every pending request rejects
   * with `err` and all cache returns to the pools, so the caller can report and go on or stop.
   */
  failAll(err: unknown): void {
    for (const r of [...this.running, ...this.waiting]) {
      if (r.seq) this.cache.free(r.seq);
      r.seq = null;
      r.reject(err);
    }
    this.running.length = 0;
    this.waiting.length = 0;
  }

  /** Remove finished and aborted requests from both queues, free their cache, resolve them. */
  private reap(): void {
    for (let i = this.running.length - 1; i >= 0; i--) if (this.running[i].finish) this.finish(this.running[i], i);
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      const r = this.waiting[i];
      if (!r.finish) continue;
      this.waiting.splice(i, 1);
      this.resolveResult(r);
    }
  }

  private accept(r: Request, res: SampleResult): void {
    const t = res.token;
    r.generated.push(t);
    r.tokens.push(t);
    this.generationTokens++;
    const lp = res.logprob !== null ? [{ token: t, logprob: res.logprob, top: res.topLogprobs ?? [] }] : null;
    if (r.logprobs && lp) r.logprobs.push(lp[0]);
    const p = r.req.params;
    const isEos = !p.ignoreEos && this.opts.eosIds.includes(t);
    const isStopId = p.stopTokenIds.includes(t);
    if (isEos || isStopId) {
      r.finish = 'stop';
      r.stoppedBy = t;
      this.emit(r, r.stop.push(r.decoder.flush()).text + r.stop.flush(), [t], lp);
      return;
    }
    const piece = r.decoder.push(t);
    const s = r.stop.push(piece);
    this.emit(r, s.text, [t], lp);
    if (s.stop !== null) {
      r.finish = 'stop';
      r.stoppedBy = s.stop;
    } else if ((p.maxTokens !== null && r.generated.length >= p.maxTokens) || r.tokens.length >= this.opts.maxModelLen) {
      r.finish = 'length';
      const tail = r.decoder.flush();
      this.emit(r, r.stop.push(tail).text + r.stop.flush(), [], null);
    }
  }

  private emit(r: Request, text: string, ids: readonly number[], lp: readonly LogprobEntry[] | null): void {
    r.text += text;
    if (r.req.onDelta && (text.length > 0 || ids.length > 0)) r.req.onDelta(text, ids, lp);
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
