/** Build a ready engine from a model directory: weights, tokenizer, cache sized to the budget. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { HybridCache, type KvCacheDtype } from '../cache/hybrid-cache.js';
import type { BailingConfig, Compat } from '../model/config.js';
import type { Shard } from '../model/shard.js';
import type { StepPeers } from '../model/step.js';
import { cacheGeometry } from '../model/cache-spec.js';
import { Model } from '../model/forward.js';
import { loadModelDir, type LoadedModel } from '../model/load.js';
import { foldedTokenizer, loadDummyDir, type LoadFormat } from './open-dummy.js';
import { loadTokenizer, type Tokenizer } from '../tokenizer/tokenizer.js';
import { ModelLoadError } from '../util/errors.js';
import { Engine } from './engine.js';

export interface OpenOptions {
  readonly compat?: Compat;
  /** Tokens per forward step (prefill chunk + decodes). */
  readonly maxBatchTokens?: number;
  /** Concurrent sequences (lightning state slots). */
  readonly maxSeqs?: number;
  /** Context length; default min(max_position_embeddings, 4096). */
  readonly maxModelLen?: number;
  /** Latent-cache tokens over all sequences; default maxSeqs × maxModelLen. */
  readonly cacheTokens?: number;
  readonly blockSize?: number;
  /** Paged MLA latent / GQA KV cache values: 'auto' (default) bf16 on CUDA, f32 on the CPU. */
  readonly kvCacheDtype?: KvCacheDtype;
  readonly seed?: number;
  /** 'dummy': random weights of the config's shapes (the backend must make them; open-dummy.ts). */
  readonly loadFormat?: LoadFormat;
  /** Tokenizer used by 'dummy' when the directory has none. */
  readonly tokenizerDir?: string;
  /** Weight-loading progress: tensors read so far of the checkpoint's total. */
  readonly onProgress?: (done: number, total: number) => void;
  /** Tensor parallel: this process's rank (default: the only one) and, on rank 0, its peers. */
  readonly shard?: Shard;
  readonly peers?: StepPeers;
}

/** Step and cache sizes every rank of a model must agree on, from the options and the config. */
export interface EngineSizes {
  readonly maxModelLen: number;
  readonly maxSeqs: number;
  readonly blockSize: number;
  readonly maxBatchTokens: number;
  readonly maxSampleRows: number;
  readonly numBlocks: number;
  readonly kvCacheDtype: KvCacheDtype;
}

export function engineSizes(c: BailingConfig, opts: OpenOptions): EngineSizes {
  const maxModelLen = opts.maxModelLen ?? Math.min(c.max_position_embeddings, 4096);
  const maxSeqs = opts.maxSeqs ?? 8;
  const blockSize = opts.blockSize ?? 16;
  const maxBatchTokens = opts.maxBatchTokens ?? 256;
  const cacheTokens = opts.cacheTokens ?? maxSeqs * maxModelLen;
  return { maxModelLen, maxSeqs, blockSize, maxBatchTokens, maxSampleRows: Math.min(maxSeqs, maxBatchTokens), numBlocks: Math.ceil(cacheTokens / blockSize), kvCacheDtype: opts.kvCacheDtype ?? 'auto' };
}

export interface OpenedModel {
  readonly loaded: LoadedModel;
  readonly tokenizer: Tokenizer;
  readonly engine: Engine;
  readonly eosIds: readonly number[];
  readonly maxModelLen: number;
}

/** eos ids from generation_config.json (optional file), merged with config and tokenizer ones. */
export function generationEosIds(dir: string): number[] {
  const file = join(dir, 'generation_config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ModelLoadError(`invalid JSON: ${(e as Error).message}`, file);
  }
  const eos = (raw as { eos_token_id?: unknown }).eos_token_id;
  if (typeof eos === 'number') return [eos];
  if (Array.isArray(eos)) return eos.filter((x): x is number => typeof x === 'number');
  return [];
}

export async function openModel(dir: string, be: Backend, opts: OpenOptions = {}): Promise<OpenedModel> {
  const dummy = opts.loadFormat === 'dummy';
  const tokDir = dummy && opts.tokenizerDir !== undefined && !existsSync(join(dir, 'tokenizer.json')) ? opts.tokenizerDir : dir;
  const tokenizer = tokDir === dir ? await loadTokenizer(dir) : foldedTokenizer(await loadTokenizer(tokDir));
  const loaded = (dummy ? loadDummyDir : loadModelDir)(dir, be, opts.compat ?? 'default', opts.onProgress, opts.shard);
  const c = loaded.spec.config;
  const { maxModelLen, maxSeqs, blockSize, maxBatchTokens, maxSampleRows, numBlocks, kvCacheDtype } = engineSizes(c, opts);
  const model = new Model(be, loaded.spec, loaded.weights, maxBatchTokens, maxSampleRows, blockSize, opts.peers ?? null);
  const cache = new HybridCache(be, cacheGeometry(loaded.spec), { maxSeqs, numBlocks, blockSize, kvCacheDtype });
  const eos = new Set<number>([...c.eos_token_id, ...generationEosIds(dir)]);
  if (tokenizer.specialIds.eos !== null) eos.add(tokenizer.specialIds.eos);
  const eosIds = [...eos];
  const engine = new Engine(model, cache, tokenizer, { maxModelLen, eosIds, seed: opts.seed });
  return { loaded, tokenizer, engine, eosIds, maxModelLen };
}
