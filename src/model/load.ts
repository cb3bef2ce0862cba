/** Load a model directory: config.json + safetensors → spec and typed weights on a backend. */
import type { Backend } from '../backend/backend.js';
import { Checkpoint } from '../loader/checkpoint.js';
import { buildSpec, loadConfig, type Compat, type ModelSpec } from './config.js';
import { SINGLE, type Shard } from './shard.js';
import { loadWeights, type ModelWeights } from './weights.js';

export interface LoadedModel {
  readonly dir: string;
  readonly spec: ModelSpec;
  readonly weights: ModelWeights;
}

export function loadModelDir(dir: string, be: Backend, compat: Compat = 'default', onProgress?: (done: number, total: number) => void, shard: Shard = SINGLE): LoadedModel {
  const { config, naming } = loadConfig(dir);
  const spec = buildSpec(config, naming, compat, shard);
  const ck = Checkpoint.open(dir);
  try {
    const weights = loadWeights(spec, { names: () => ck.names(), info: (n) => ck.info(n), read: (n) => ck.read(n), readRange: (n, s, l) => ck.readRange(n, s, l), location: dir }, be, onProgress);
    return { dir, spec, weights };
  } finally {
    ck.close();
  }
}
