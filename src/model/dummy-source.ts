/**
 * A checkpoint with names and shapes but no bytes (`--load-format dummy`, benchmarks): the official
 * tensor names of a spec's full (unsharded) model. Only a backend that fills dummy weights itself
 * (CudaBackend's dummyWeights) can load it.
 */
import { checkpointLayout } from './checkpoint-layout.js';
import type { ModelSpec } from './config.js';
import type { TensorSource } from './weights.js';

export function dummySource(spec: ModelSpec): TensorSource {
  const shapes = new Map(checkpointLayout(spec).map((t) => [t.name, t.shape]));
  const empty = new Uint8Array(0);
  return {
    names: () => [...shapes.keys()],
    // Norms, biases and the router are f32 in real checkpoints; everything else bf16.
    info: (n) => ({ dtype: /norm|bias|gate\.weight$/.test(n) ? 'F32' : 'BF16', shape: shapes.get(n)! }),
    read: () => empty,
    dummy: true,
    location: '(dummy weights)',
  };
}
