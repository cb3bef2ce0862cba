/**
 * The public library API: loadModel() → a BailingModel that owns its memory and runs every call
 * (and a server, if one is attached) on one engine, so concurrent calls are batched together.
 * generate() / chat() return a ChunkStream: iterate it for streamed chunks, or await .result.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend, MatmulInputs } from '../backend/backend.js';
import { defaultMatmulInputs, selectBackend, type DeviceName } from '../backend/select.js';
import { EngineDriver } from '../engine/driver.js';
import type { Engine, FinishReason, GenerateResult, LogprobEntry } from '../engine/engine.js';
import { openModel, type OpenedModel } from '../engine/open.js';
import { resolveSamplingParams, type SamplingParams, type SamplingParamsInput } from '../engine/sampler.js';
import { KV_CACHE_DTYPES, type KvCacheDtype } from '../cache/hybrid-cache.js';
import type { Compat, LayerPlan } from '../model/config.js';
import { inspectModel, type InspectResult } from '../model/inspect.js';
import type { ChatMessage, Tokenizer } from '../tokenizer/tokenizer.js';
import { BailingError, InvalidRequestError } from '../util/errors.js';
import { renderChat } from './chat.js';
import { ChatOutputParser, type ParsedToolCall } from './chat-output.js';
import { TpGroup } from './tp.js';
import { parseMessages, parseToolChoice, parseTools, type ToolChoice } from './schema.js';
import { ChunkStream } from './stream.js';

/** The model shipped in the package: what loadModel() and the CLI use without a model directory. */
export function embeddedModelDir(): string {
  // dist/src/api/model.js → package root
  return join(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..'), 'models', 'tiny-brown');
}

export interface LoadProgress {
  readonly phase: 'tokenizer' | 'weights' | 'ready';
  readonly done: number;
  readonly total: number;
}

export interface LoadModelOptions {
  /** A Hugging Face model directory (config.json, safetensors, tokenizer). Default: the embedded model. */
  readonly model?: string;
  /** 'auto' (default) takes a CUDA GPU when one is usable, else the CPU. */
  readonly device?: DeviceName;
  /** 'default' follows the official model code; 'vllm' reproduces vLLM's numerics (README). */
  readonly compat?: Compat;
  /** Tensor-parallel degree (GPUs). Only 1 in this release. */
  readonly tp?: number;
  /** CPU threads (default: all cores). */
  readonly threads?: number;
  /** Context length (default min(max_position_embeddings, 4096)). */
  readonly maxModelLen?: number;
  /** Sequences batched together (default 8). */
  readonly maxNumSeqs?: number;
  /**
   * Tokens per engine step: the prefill chunk plus the decodes batched with it (default 8192 on a
   * GPU, where long chunks keep the expert GEMMs on tensor cores and read each expert once per chunk;
   * 256 on the CPU, where a step's latency is what shorter chunks buy).
   */
  readonly maxBatchTokens?: number;
  /**
   * Weight-matmul inputs (backend.ts MatmulInputs): 'bf16' (default on CUDA, with or without tensor
   * parallelism: rounded to bf16 first, fp32 accumulation, a bf16 engine's numerics at half the
   * tensor-core work of 'f32') or 'f32' (default on the CPU; on a GPU an f32-faithful bf16 hi + lo
   * split, equal to the CPU to ~1e-10).
   */
  readonly matmulInputs?: MatmulInputs;
  /** Latent-cache capacity in tokens over all sequences (default maxNumSeqs × maxModelLen). */
  readonly cacheTokens?: number;
  /**
   * Values of the paged MLA latent / GQA KV cache: 'auto' (default) bf16 on CUDA (half the bytes of
   * f32 to keep and to read per decode step, as vLLM and SGLang keep it), f32 on the CPU; 'bf16' on
   * the CPU rounds what it stores exactly as the GPU does.
   */
  readonly kvCacheDtype?: KvCacheDtype;
  /** Seeds requests that give no seed. */
  readonly seed?: number;
  /**
   * 'dummy': random weights of the config's shapes made on the GPU (benchmarks; needs device cuda,
   * the directory needs only config.json; without a tokenizer the shipped tiny-random's is used).
   */
  readonly loadFormat?: 'auto' | 'dummy';
  readonly onProgress?: (p: LoadProgress) => void;
}

/** Sampling and stopping options (the same validation as the server's request fields). */
export interface GenerateOptions {
  /** Tokens to generate at most (default: until the context is full). */
  readonly maxTokens?: number | null;
  /** 0 is greedy (default 1). */
  readonly temperature?: number;
  readonly topK?: number;
  readonly topP?: number;
  readonly minP?: number;
  readonly repetitionPenalty?: number;
  readonly presencePenalty?: number;
  readonly frequencyPenalty?: number;
  readonly seed?: number | null;
  readonly stop?: string | readonly string[];
  readonly stopTokenIds?: readonly number[];
  readonly ignoreEos?: boolean;
  /** Return each token's logprob and this many alternatives (0..20); null/absent: none. */
  readonly logprobs?: number | null;
  /** Aborting stops generation at once, frees its cache, and rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** For text prompts: run the tokenizer's post-processor (BOS etc.; default true). */
  readonly addSpecialTokens?: boolean;
}

export interface ChatOptions extends GenerateOptions {
  /** OpenAI-style tool definitions, rendered by the chat template. */
  readonly tools?: readonly Record<string, unknown>[];
  readonly toolChoice?: 'none' | 'auto' | 'required' | { readonly type: 'function'; readonly function: { readonly name: string } };
  /** Extra variables for the chat template (e.g. enable_thinking). */
  readonly templateKwargs?: Readonly<Record<string, unknown>>;
}

export interface GenerateChunk {
  readonly text: string;
  readonly tokenIds: readonly number[];
  readonly logprobs: readonly LogprobEntry[] | null;
}

export interface GenerateOutput {
  readonly text: string;
  readonly tokenIds: readonly number[];
  readonly finishReason: 'stop' | 'length';
  /** The stop string or stop token id that ended generation, when one did. */
  readonly stoppedBy: string | number | null;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly logprobs: readonly LogprobEntry[] | null;
}

export interface ChatChunk {
  readonly content: string;
  readonly reasoning: string;
  readonly toolCalls: readonly ParsedToolCall[];
  readonly tokenIds: readonly number[];
  readonly logprobs: readonly LogprobEntry[] | null;
}

export interface ChatOutput {
  readonly content: string;
  /** Text inside `<think>…</think>` (thinking models). */
  readonly reasoning: string;
  readonly toolCalls: readonly ParsedToolCall[];
  readonly finishReason: 'stop' | 'length' | 'tool_calls';
  readonly stoppedBy: string | number | null;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly logprobs: readonly LogprobEntry[] | null;
}

export interface ModelInfo {
  readonly dir: string;
  readonly device: Backend['name'];
  readonly compat: Compat;
  readonly architecture: string;
  readonly modelType: string;
  readonly layers: readonly LayerPlan[];
  readonly vocabSize: number;
  readonly maxModelLen: number;
  readonly maxNumSeqs: number;
  /** Parameters, cache bytes and the memory estimate at maxNumSeqs × maxModelLen. */
  readonly inspect: InspectResult;
}

export type { ChatMessage, LogprobEntry, ParsedToolCall };

const OPTION_KEYS = new Set([
  'maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'presencePenalty', 'frequencyPenalty',
  'seed', 'stop', 'stopTokenIds', 'ignoreEos', 'logprobs', 'signal', 'addSpecialTokens', 'tools', 'toolChoice', 'templateKwargs',
]);

/** Thrown into streams of a model that was disposed while they ran. */
export class ModelDisposedError extends BailingError {}

export class BailingModel {
  /** @internal The engine driver shared by every call and an attached server. */
  readonly driver: EngineDriver;
  readonly info: ModelInfo;
  private disposed = false;

  /** @internal Use loadModel(). */
  constructor(
    private readonly opened: OpenedModel,
    private readonly backend: Backend,
  ) {
    this.driver = new EngineDriver(opened.engine);
    const spec = opened.loaded.spec;
    const c = spec.config;
    const maxNumSeqs = opened.engine.cache.opts.maxSeqs;
    this.info = {
      dir: opened.loaded.dir,
      device: backend.name,
      compat: spec.semantics.compat,
      architecture: c.architectures[0] ?? 'BailingMoeV2_5ForCausalLM',
      modelType: c.model_type,
      layers: spec.layers,
      vocabSize: c.vocab_size,
      maxModelLen: opened.maxModelLen,
      maxNumSeqs,
      inspect: inspectModel(spec, { batch: maxNumSeqs, context: opened.maxModelLen, weightBytes: 2 }),
    };
  }

  /** @internal */
  get engine(): Engine {
    return this.opened.engine;
  }
  get tokenizer(): Tokenizer {
    return this.opened.tokenizer;
  }
  get maxModelLen(): number {
    return this.opened.maxModelLen;
  }

  tokenize(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    this.live();
    return this.tokenizer.encode(text, opts);
  }

  detokenize(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    this.live();
    return this.tokenizer.decode(ids, opts);
  }

  /** Complete a text prompt or token ids. Iterate for chunks; await `.result` for the whole output. */
  generate(prompt: string | readonly number[], options: GenerateOptions = {}): ChunkStream<GenerateChunk, GenerateOutput> {
    this.live();
    const params = this.params(options);
    const ids = typeof prompt === 'string' ? this.tokenizer.encode(prompt, { addSpecialTokens: options.addSpecialTokens ?? true }) : this.ids(prompt);
    const stream = new ChunkStream<GenerateChunk, GenerateOutput>(() => cancel());
    const cancel = this.run(ids, params, options.signal, {
      delta: (text, tokenIds, logprobs) => stream.push({ text, tokenIds, logprobs }),
      done: (r) => stream.end({ ...common(r), text: r.text, finishReason: r.finishReason as 'stop' | 'length' }),
      fail: (e) => stream.fail(e),
    });
    return stream;
  }

  /** Chat with the model's template; reasoning and tool calls come out separated. */
  chat(messages: readonly ChatMessage[], options: ChatOptions = {}): ChunkStream<ChatChunk, ChatOutput> {
    this.live();
    const params = this.params(options);
    const msgs = parseMessages(messages);
    const tools = options.tools === undefined ? null : parseTools(options.tools);
    const toolChoice: ToolChoice = parseToolChoice(options.toolChoice, tools !== null && tools.length > 0);
    const { promptIds, parse } = renderChat(this.tokenizer, msgs, { tools, toolChoice, addGenerationPrompt: true, templateKwargs: options.templateKwargs ?? {} });
    const parser = new ChatOutputParser(parse);
    const acc = { content: '', reasoning: '', toolCalls: [] as ParsedToolCall[] };
    const stream = new ChunkStream<ChatChunk, ChatOutput>(() => cancel());
    const emit = (p: { content: string; reasoning: string; toolCalls: ParsedToolCall[] }, tokenIds: readonly number[], logprobs: readonly LogprobEntry[] | null): void => {
      acc.content += p.content;
      acc.reasoning += p.reasoning;
      acc.toolCalls.push(...p.toolCalls);
      if (p.content || p.reasoning || p.toolCalls.length > 0 || tokenIds.length > 0) stream.push({ ...p, tokenIds, logprobs });
    };
    const cancel = this.run(this.ids(promptIds), params, options.signal, {
      delta: (text, tokenIds, logprobs) => emit(parser.push(text), tokenIds, logprobs),
      done: (r) => {
        emit(parser.flush(), [], null);
        const finishReason = r.finishReason === 'stop' && acc.toolCalls.length > 0 ? 'tool_calls' : (r.finishReason as 'stop' | 'length');
        stream.end({ ...common(r), ...acc, finishReason });
      },
      fail: (e) => stream.fail(e),
    });
    return stream;
  }

  /** Stop every running call (they reject), release threads and device memory. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.driver.stop();
    this.backend.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  private live(): void {
    if (this.disposed) throw new ModelDisposedError('this model was disposed');
  }

  private params(o: GenerateOptions): SamplingParams {
    for (const k of Object.keys(o)) if (!OPTION_KEYS.has(k)) throw new InvalidRequestError(`unknown option "${k}"`, k);
    const input: SamplingParamsInput = {
      maxTokens: o.maxTokens,
      temperature: o.temperature,
      topK: o.topK,
      topP: o.topP,
      minP: o.minP,
      repetitionPenalty: o.repetitionPenalty,
      presencePenalty: o.presencePenalty,
      frequencyPenalty: o.frequencyPenalty,
      seed: o.seed,
      stop: o.stop,
      stopTokenIds: o.stopTokenIds,
      ignoreEos: o.ignoreEos,
      logprobs: o.logprobs,
    };
    return resolveSamplingParams(input, { vocabSize: this.info.vocabSize });
  }

  private ids(ids: readonly number[]): number[] {
    if (ids.length === 0) throw new InvalidRequestError('the prompt is empty', 'prompt');
    if (ids.length >= this.maxModelLen) throw new InvalidRequestError(`the prompt has ${ids.length} tokens; the context is ${this.maxModelLen}`, 'prompt');
    return [...ids];
  }

  /** Submit to the shared engine; returns a cancel function (idempotent). */
  private run(
    promptIds: number[],
    params: SamplingParams,
    signal: AbortSignal | undefined,
    on: { delta: (text: string, ids: readonly number[], lps: readonly LogprobEntry[] | null) => void; done: (r: GenerateResult) => void; fail: (e: unknown) => void },
  ): () => void {
    if (signal?.aborted) throw signal.reason ?? new DOMException('aborted', 'AbortError');
    const maxTokens = params.maxTokens ?? this.maxModelLen - promptIds.length;
    const h = this.driver.submit({ promptIds, params: { ...params, maxTokens }, onDelta: (t, i, l) => on.delta(t, i, l) });
    let cancelled = false;
    const cancel = (): void => {
      if (cancelled) return;
      cancelled = true;
      this.driver.abort(h.id);
    };
    const onAbort = (): void => cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    h.result.then(
      (r) => {
        signal?.removeEventListener('abort', onAbort);
        if (r.finishReason === 'abort')
          on.fail(signal?.aborted ? (signal.reason ?? new DOMException('aborted', 'AbortError')) : this.disposed ? new ModelDisposedError('the model was disposed during generation') : new DOMException('cancelled', 'AbortError'));
        else on.done(r);
      },
      (e: unknown) => {
        signal?.removeEventListener('abort', onAbort);
        on.fail(e);
      },
    );
    return cancel;
  }
}

function common(r: GenerateResult): { tokenIds: readonly number[]; stoppedBy: string | number | null; promptTokens: number; completionTokens: number; logprobs: readonly LogprobEntry[] | null } {
  return { tokenIds: r.tokenIds, stoppedBy: r.stoppedBy, promptTokens: r.promptTokens, completionTokens: r.tokenIds.length, logprobs: r.logprobs };
}

/** Default tokens per step (LoadModelOptions.maxBatchTokens). */
const GPU_BATCH_TOKENS = 8192, CPU_BATCH_TOKENS = 256;

/** Load a model and start its engine. The returned model owns its memory: call dispose() (or `await using`). */
export async function loadModel(options: LoadModelOptions = {}): Promise<BailingModel> {
  const dir = options.model === undefined ? embeddedModelDir() : resolve(options.model);
  if (options.loadFormat !== undefined && options.loadFormat !== 'auto' && options.loadFormat !== 'dummy') throw new InvalidRequestError(`load format "${String(options.loadFormat)}" (expected auto or dummy)`, 'load_format');
  if (!existsSync(join(dir, 'config.json'))) throw new InvalidRequestError(`model ${dir}: no config.json (expected a Hugging Face model directory)`, 'model');
  if (options.kvCacheDtype !== undefined && !KV_CACHE_DTYPES.includes(options.kvCacheDtype)) throw new InvalidRequestError(`kv cache dtype "${String(options.kvCacheDtype)}" (expected ${KV_CACHE_DTYPES.join(', ')})`, 'kv_cache_dtype');
  const tp = options.tp ?? 1;
  if (!Number.isInteger(tp) || tp < 1) throw new InvalidRequestError(`tp must be a positive integer, got ${tp}`, 'tp');
  if (options.matmulInputs !== undefined && options.matmulInputs !== 'f32' && options.matmulInputs !== 'bf16') throw new InvalidRequestError(`matmul inputs "${String(options.matmulInputs)}" (expected f32 or bf16)`, 'matmul_inputs');
  if (tp > 1 && options.device !== 'cuda') throw new InvalidRequestError(`tp ${tp}: tensor parallelism needs --device cuda (one process per GPU over NCCL)`, 'tp');
  // tp > 1: this process is rank 0 on GPU 0; tp.ts forks the other ranks (issue 6).
  const dummySeed = options.loadFormat === 'dummy' ? (options.seed ?? 0) : undefined;
  const group = tp > 1 ? await TpGroup.start(tp, { dir, dummySeed, matmulInputs: options.matmulInputs ?? defaultMatmulInputs('cuda') }, { compat: options.compat, maxModelLen: options.maxModelLen, maxSeqs: options.maxNumSeqs, maxBatchTokens: options.maxBatchTokens ?? GPU_BATCH_TOKENS, cacheTokens: options.cacheTokens, kvCacheDtype: options.kvCacheDtype }) : null;
  const be = group ? group.backend() : selectBackend(options.device ?? 'auto', { threads: options.threads, dummySeed, matmulInputs: options.matmulInputs });
  const maxBatchTokens = options.maxBatchTokens ?? (be.name === 'cuda' ? GPU_BATCH_TOKENS : CPU_BATCH_TOKENS);
  try {
    options.onProgress?.({ phase: 'tokenizer', done: 0, total: 1 });
    const opened = await openModel(dir, be, {
      shard: group ? { rank: 0, size: tp } : undefined,
      peers: group ?? undefined,
      compat: options.compat,
      maxModelLen: options.maxModelLen,
      maxSeqs: options.maxNumSeqs,
      maxBatchTokens,
      cacheTokens: options.cacheTokens,
      kvCacheDtype: options.kvCacheDtype,
      loadFormat: options.loadFormat,
      tokenizerDir: join(dirname(embeddedModelDir()), 'tiny-random'),
      seed: options.seed ?? Date.now() >>> 0,
      onProgress: options.onProgress ? (done, total) => options.onProgress!({ phase: 'weights', done, total }) : undefined,
    });
    options.onProgress?.({ phase: 'ready', done: 1, total: 1 });
    return new BailingModel(opened, be);
  } catch (e) {
    be.dispose();
    throw e;
  }
}

export type { FinishReason };
