/**
 * Perplexity of a text under a loaded model: exp(−mean log p(token | earlier tokens)).
 *
 * Windowing (the same as tools/oracle/train_tiny.py): the text is tokenized once; windows
 * [0,W), [W,2W), … each run from an empty cache; inside a window every token from the second
 * on is scored given the earlier tokens of its window. Each window is fed in chunks of at most
 * `chunk` tokens with every row sampled; log-softmax in float64.
 */
import type { Backend } from '../backend/backend.js';
import { HybridCache } from '../cache/hybrid-cache.js';
import { cacheGeometry } from '../model/cache-spec.js';
import { Model } from '../model/forward.js';
import type { LoadedModel } from '../model/load.js';
import { toF64 } from '../tensor/tensor.js';
import { InvalidRequestError } from '../util/errors.js';

export interface PerplexityOptions {
  /** Window length in tokens (default 256). */
  readonly window?: number;
  /** Tokens per forward step (default min(window, 256)). */
  readonly chunk?: number;
  /** Called after each step with tokens scored so far and the total to score. */
  readonly onProgress?: (scored: number, total: number) => void;
}

export interface PerplexityResult {
  readonly perplexity: number;
  /** Sum of −log p over the scored tokens (nats). */
  readonly nll: number;
  readonly tokens: number;
  readonly scoredTokens: number;
  readonly windows: number;
  readonly seconds: number;
}

/** Start offsets of the windows that score at least one token. */
export function perplexityWindows(n: number, window: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < n; s += window) if (n - s >= 2) out.push(s);
  return out;
}

/** −log softmax(row)[target] in float64. */
function nllOf(logits: Float64Array, off: number, V: number, target: number): number {
  let max = -Infinity;
  for (let v = 0; v < V; v++) max = Math.max(max, logits[off + v]);
  let sum = 0;
  for (let v = 0; v < V; v++) sum += Math.exp(logits[off + v] - max);
  return max + Math.log(sum) - logits[off + target];
}

/**
 * Scores `ids` (token ids of the whole text) on `loaded`'s weights. Builds its own Model
 * activations (all rows sampled) and a one-sequence cache on `be`; the weights are shared.
 */
export function perplexityOfIds(loaded: LoadedModel, be: Backend, ids: readonly number[], opts: PerplexityOptions = {}): PerplexityResult {
  const window = opts.window ?? 256;
  const chunk = opts.chunk ?? Math.min(window, 256);
  if (!Number.isInteger(window) || window < 2) throw new InvalidRequestError(`window must be an integer ≥ 2, got ${window}`, 'window');
  if (!Number.isInteger(chunk) || chunk < 1) throw new InvalidRequestError(`chunk must be a positive integer, got ${chunk}`, 'chunk');
  const starts = perplexityWindows(ids.length, window);
  if (starts.length === 0) throw new InvalidRequestError(`the text has ${ids.length} token(s); perplexity needs at least 2`, 'file');
  const V = loaded.spec.config.vocab_size;
  for (const id of ids) if (id < 0 || id >= V) throw new InvalidRequestError(`token id ${id} outside the model's vocabulary (${V})`, 'file');

  const t0 = performance.now();
  const blockSize = 16;
  const model = new Model(be, loaded.spec, loaded.weights, chunk, chunk, blockSize);
  const cache = new HybridCache(be, cacheGeometry(loaded.spec), { maxSeqs: 1, numBlocks: Math.ceil(window / blockSize), blockSize });
  const total = starts.reduce((a, s) => a + Math.min(window, ids.length - s) - 1, 0);
  let nll = 0;
  let scored = 0;
  for (const s of starts) {
    const w = ids.slice(s, s + window);
    const seq = cache.allocSeq()!;
    if (!cache.reserve(seq, w.length)) throw new Error('perplexity: cache too small for the window');
    for (let c = 0; c < w.length; c += chunk) {
      const len = Math.min(chunk, w.length - c);
      const logits = toF64(
        model.forward(
          {
            ids: Int32Array.from(w.slice(c, c + len)),
            positions: Int32Array.from({ length: len }, (_, j) => c + j),
            seqs: [{ seq, start: 0, len, ctxStart: c }],
            sampleRows: Int32Array.from({ length: len }, (_, j) => j),
          },
          cache,
        ),
      );
      for (let j = 0; j < len && c + j + 1 < w.length; j++) {
        nll += nllOf(logits, j * V, V, w[c + j + 1]);
        scored++;
      }
      opts.onProgress?.(scored, total);
    }
    cache.free(seq);
  }
  return { perplexity: Math.exp(nll / scored), nll, tokens: ids.length, scoredTokens: scored, windows: starts.length, seconds: (performance.now() - t0) / 1000 };
}
