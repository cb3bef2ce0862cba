/** Shared CLI flags: model location, device, semantics, sampling. */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { embeddedModelDir, type GenerateOptions, type LoadModelOptions } from '../api/model.js';
import type { DeviceName } from '../backend/select.js';
import { KV_CACHE_DTYPES, type KvCacheDtype } from '../cache/hybrid-cache.js';
import type { Compat } from '../model/config.js';
import { InvalidRequestError } from '../util/errors.js';

export { embeddedModelDir };

export const commonOptions = {
  model: { type: 'string' },
  device: { type: 'string', default: 'auto' },
  compat: { type: 'string', default: 'default' },
  threads: { type: 'string' },
  'max-model-len': { type: 'string' },
  'max-batch-tokens': { type: 'string' },
  tp: { type: 'string' },
  'load-format': { type: 'string' },
  'kv-cache-dtype': { type: 'string' },
  'matmul-inputs': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const samplingOptions = {
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  'presence-penalty': { type: 'string' },
  'frequency-penalty': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
  'ignore-eos': { type: 'boolean' },
} as const;

type Values = Record<string, string | boolean | string[] | undefined>;

export function num(v: Values, key: string): number | undefined {
  const s = v[key];
  if (s === undefined) return undefined;
  const n = Number(s);
  if (typeof s !== 'string' || s.trim() === '' || !Number.isFinite(n)) throw new InvalidRequestError(`--${key} expects a number, got "${String(s)}"`, key);
  return n;
}

export function modelDir(v: Values): string {
  const dir = typeof v.model === 'string' ? resolve(v.model) : embeddedModelDir();
  if (!existsSync(dir)) throw new InvalidRequestError(`--model ${dir}: no such directory`, 'model');
  if (!existsSync(join(dir, 'config.json'))) throw new InvalidRequestError(`--model ${dir}: no config.json (expected a Hugging Face model directory)`, 'model');
  return dir;
}

export function device(v: Values): DeviceName {
  const d = String(v.device ?? 'cpu');
  if (d !== 'cpu' && d !== 'cuda' && d !== 'auto') throw new InvalidRequestError(`--device must be cpu, cuda or auto, got "${d}"`, 'device');
  return d;
}

export function compat(v: Values): Compat {
  const c = String(v.compat ?? 'default');
  if (c !== 'default' && c !== 'vllm') throw new InvalidRequestError(`--compat must be default or vllm, got "${c}"`, 'compat');
  return c;
}

export function kvCacheDtype(v: Values): KvCacheDtype | undefined {
  const d = v['kv-cache-dtype'];
  if (d === undefined) return undefined;
  if (!KV_CACHE_DTYPES.includes(d as KvCacheDtype)) throw new InvalidRequestError(`--kv-cache-dtype must be ${KV_CACHE_DTYPES.join(', ')}, got "${String(d)}"`, 'kv-cache-dtype');
  return d as KvCacheDtype;
}

/** The library's generation options from the sampling flags (validated by the library). */
export function samplingOptionsOf(v: Values, defaults: { maxTokens: number; temperature: number }): GenerateOptions {
  const o: { -readonly [K in keyof GenerateOptions]: GenerateOptions[K] } = {
    maxTokens: num(v, 'max-tokens') ?? defaults.maxTokens,
    temperature: num(v, 'temperature') ?? defaults.temperature,
  };
  const set = <K extends keyof GenerateOptions>(k: K, x: GenerateOptions[K] | undefined): void => {
    if (x !== undefined) o[k] = x;
  };
  set('topK', num(v, 'top-k'));
  set('topP', num(v, 'top-p'));
  set('minP', num(v, 'min-p'));
  set('repetitionPenalty', num(v, 'repetition-penalty'));
  set('presencePenalty', num(v, 'presence-penalty'));
  set('frequencyPenalty', num(v, 'frequency-penalty'));
  set('seed', num(v, 'seed'));
  set('stop', v.stop as string[] | undefined);
  if (v['ignore-eos'] === true) o.ignoreEos = true;
  return o;
}

/** The library's load options from the common flags (the CLI is a layer over the public API). */
export function loadOptions(v: Values, extra: Partial<LoadModelOptions> = {}): LoadModelOptions {
  return {
    model: modelDir(v),
    device: device(v),
    compat: compat(v),
    threads: num(v, 'threads'),
    maxModelLen: num(v, 'max-model-len'),
    maxBatchTokens: num(v, 'max-batch-tokens'),
    tp: num(v, 'tp'),
    loadFormat: v['load-format'] as LoadModelOptions['loadFormat'],
    kvCacheDtype: kvCacheDtype(v),
    matmulInputs: v['matmul-inputs'] as LoadModelOptions['matmulInputs'],
    ...extra,
  };
}
