/**
 * `--load-format dummy` (benchmarks of real geometries without checkpoints): the model directory
 * needs only a config.json; the weights are random values of the real shapes made on the GPU
 * (CudaBackend's dummyWeights), and when the directory has no tokenizer a byte-level one (the
 * shipped tiny-random's) stands in, with ids past its vocabulary folded into it when decoding so
 * every generated token streams some text.
 */
import type { Backend } from '../backend/backend.js';
import { buildSpec, loadConfig, type Compat } from '../model/config.js';
import { dummySource } from '../model/dummy-source.js';
import type { LoadedModel } from '../model/load.js';
import { SINGLE, type Shard } from '../model/shard.js';
import { loadWeights } from '../model/weights.js';
import type { DecodeOptions, Tokenizer } from '../tokenizer/tokenizer.js';

export type LoadFormat = 'auto' | 'dummy';

export function loadDummyDir(dir: string, be: Backend, compat: Compat = 'default', onProgress?: (done: number, total: number) => void, shard: Shard = SINGLE): LoadedModel {
  const { config, naming } = loadConfig(dir);
  const spec = buildSpec(config, naming, compat, shard);
  return { dir, spec, weights: loadWeights(spec, dummySource(spec), be, onProgress) };
}

/** The same tokenizer, decoding id i as i mod its vocabulary (a random model's ids span the real vocabulary). */
export function foldedTokenizer(t: Tokenizer): Tokenizer {
  const n = t.vocabSize;
  const decode = (ids: readonly number[], opts?: DecodeOptions): string => t.decode(ids.map((i) => i % n), opts);
  return new Proxy(t, { get: (target, prop, recv) => (prop === 'decode' ? decode : Reflect.get(target, prop, recv)) });
}
