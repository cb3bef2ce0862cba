import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../backend/cpu/cpu-backend.js';
import { ReferenceBackend } from '../backend/reference/reference-backend.js';
import { HybridCache, resolveKvCacheDtype, type CacheGeometry } from './hybrid-cache.js';

const geom: CacheGeometry = { lightningLayers: [0], mlaLayers: [1], nHeads: 2, headDim: 4, latentWidth: 12, gqaLayers: [2], kvWidth: 16 };
const opts = { maxSeqs: 2, numBlocks: 4, blockSize: 8 };

test('kvCacheDtype: auto is bf16 on CUDA and f32 on host backends; unknown names throw', () => {
  assert.equal(resolveKvCacheDtype({ name: 'cuda' }), 'bf16');
  assert.equal(resolveKvCacheDtype({ name: 'cuda' }, 'auto'), 'bf16');
  assert.equal(resolveKvCacheDtype({ name: 'cpu' }), 'f32');
  assert.equal(resolveKvCacheDtype({ name: 'reference' }), 'f32');
  assert.equal(resolveKvCacheDtype({ name: 'cuda' }, 'f32'), 'f32');
  assert.equal(resolveKvCacheDtype({ name: 'cpu' }, 'bf16'), 'bf16');
  assert.throws(() => resolveKvCacheDtype({ name: 'cpu' }, 'fp8' as 'bf16'), /kv cache dtype "fp8"/);
});

test('host backends keep the paged caches in their activation dtype; bf16 rounds on write', () => {
  const cpu = new CpuBackend({ threads: 1 });
  try {
    for (const [be, act] of [[cpu, 'f32'], [new ReferenceBackend(), 'f64']] as const) {
      const def = new HybridCache(be, geom, opts);
      assert.equal(def.kvDtype, 'f32');
      assert.equal(def.roundsKvOnWrite, false);
      const b = new HybridCache(be, geom, { ...opts, kvCacheDtype: 'bf16' });
      assert.equal(b.kvDtype, 'bf16');
      assert.equal(b.roundsKvOnWrite, true);
      for (const t of [b.latents.get(1)!, b.kv.get(2)!]) assert.equal(t.dtype, act);
      assert.deepEqual(b.latents.get(1)!.shape, [32, 12]);
      assert.deepEqual(b.kv.get(2)!.shape, [32, 16]);
      assert.equal(b.states.get(0)!.dtype, 'f32'); // lightning states are not paged: always f32
    }
  } finally {
    cpu.dispose();
  }
});

test('HybridCache.bytes counts the paged caches at their element size', () => {
  assert.deepEqual(HybridCache.bytes(geom, 2), { perToken: (12 + 16) * 2, perSeq: 2 * 4 * 4 * 4 });
  assert.deepEqual(HybridCache.bytes(geom, 4), { perToken: (12 + 16) * 4, perSeq: 2 * 4 * 4 * 4 });
});
