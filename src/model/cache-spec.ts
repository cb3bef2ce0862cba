/** The hybrid cache this model needs: which layers hold lightning states, MLA latents or GQA k/v. */
import type { CacheGeometry } from '../cache/hybrid-cache.js';
import type { ModelSpec } from './config.js';

export function cacheGeometry(spec: ModelSpec): CacheGeometry {
  const c = spec.config;
  return {
    lightningLayers: spec.layers.filter((l) => l.mixer === 'lightning').map((l) => l.index),
    mlaLayers: spec.layers.filter((l) => l.mixer === 'mla').map((l) => l.index),
    nHeads: spec.local.heads, // each rank keeps the lightning states of its own heads
    headDim: c.head_dim,
    latentWidth: c.kv_lora_rank + c.qk_rope_head_dim,
    gqaLayers: spec.layers.filter((l) => l.mixer === 'gqa').map((l) => l.index),
    kvWidth: 2 * spec.local.kvHeads * c.head_dim,
  };
}
