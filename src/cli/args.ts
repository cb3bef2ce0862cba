/** Shared CLI flags: model location, device, semantics, sampling. */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DeviceName } from '../backend/select.js';
import type { SamplingParamsInput } from '../engine/sampler.js';
import type { Compat } from '../model/config.js';
import { InvalidRequestError } from '../util/errors.js';

/** The model shipped in the package (used when --model is not given): tiny-brown, trained on the Brown corpus. */
export function embeddedModelDir(): string {
  // dist/src/cli/args.js → package root
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  return join(root, 'models', 'tiny-brown');
}

export const commonOptions = {
  model: { type: 'string' },
  device: { type: 'string', default: 'cpu' },
  compat: { type: 'string', default: 'default' },
  threads: { type: 'string' },
  'max-model-len': { type: 'string' },
  'max-batch-tokens': { type: 'string' },
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

export function samplingInput(v: Values, defaults: { maxTokens: number; temperature: number }): SamplingParamsInput {
  return {
    maxTokens: num(v, 'max-tokens') ?? defaults.maxTokens,
    temperature: num(v, 'temperature') ?? defaults.temperature,
    topK: num(v, 'top-k'),
    topP: num(v, 'top-p'),
    minP: num(v, 'min-p'),
    repetitionPenalty: num(v, 'repetition-penalty'),
    presencePenalty: num(v, 'presence-penalty'),
    frequencyPenalty: num(v, 'frequency-penalty'),
    seed: num(v, 'seed'),
    stop: v.stop,
    ignoreEos: v['ignore-eos'] === true ? true : undefined,
  };
}
