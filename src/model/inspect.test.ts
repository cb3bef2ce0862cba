import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildSpec, parseConfig, type ModelSpec } from './config.js';
import { fmtBytes, fmtCount, formatInspect, inspectModel, type Component } from './inspect.js';
import { lingFlashConfig } from './known-configs.js';
import { tinyConfig, tinyTensors } from './tiny-checkpoint.js';
import { tinyVariants } from './tiny-configs.js';

const specOf = (raw: Record<string, unknown>): ModelSpec => {
  const { config, naming } = parseConfig(raw);
  return buildSpec(config, naming);
};
const opts = { batch: 2, context: 100, weightBytes: 2 };

/** Component of a checkpoint tensor, decided from its name alone (independent of inspect.ts). */
function classify(spec: ModelSpec, name: string): Component {
  if (/word_embeddings|embed_tokens/.test(name)) return 'embedding';
  if (name.startsWith('lm_head')) return 'lm_head';
  if (/(layernorm|g_norm|model\.norm)\.weight$/.test(name)) return 'norms';
  if (name.includes('.mlp.shared_experts.')) return 'moe.shared_experts';
  if (name.includes('.mlp.experts.')) return 'moe.routed_experts';
  if (name.includes('.mlp.gate.')) return 'moe.router';
  if (name.includes('.mlp.')) return 'ffn.dense';
  const layer = Number(/^model\.layers\.(\d+)\./.exec(name)?.[1]);
  return `attention.${spec.layers[layer].mixer}` as Component;
}

const variants = [...tinyVariants, { name: 'tied', config: tinyConfig({ tie_word_embeddings: true }), opts: {} }];

for (const v of variants) {
  test(`inspect: ${v.name} counts equal the numel of the checkpoint tensors`, () => {
    const spec = specOf(v.config);
    const c = spec.config;
    const byComp = new Map<Component, number>();
    let total = 0;
    for (const t of tinyTensors(spec, { ...v.opts, shards: 0 })) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      total += n;
      const k = classify(spec, t.name);
      byComp.set(k, (byComp.get(k) ?? 0) + n);
    }
    const r = inspectModel(spec, opts);
    assert.equal(r.params.total, total);
    for (const [k, p] of Object.entries(r.components)) assert.equal(p.total, byComp.get(k as Component) ?? 0, k);
    // Active: everything but the embedding table and the unrouted experts; lm_head read even when tied.
    const routed = byComp.get('moe.routed_experts') ?? 0;
    const embed = c.vocab_size * c.hidden_size;
    const expectActive = total - embed - routed + (routed * c.num_experts_per_tok) / c.num_experts + (c.tie_word_embeddings ? embed : 0);
    assert.equal(r.params.active, expectActive);
    assert.equal(r.counts.lightning + r.counts.mla + r.counts.gqa, c.num_hidden_layers);
    assert.equal(r.counts.dense + r.counts.moe, c.num_hidden_layers);
  });
}

test('inspect: base tiny config layer plan and cache sizes', () => {
  const spec = specOf(tinyConfig());
  const r = inspectModel(spec, opts);
  // 4 layers, G = 2 → layers 1 and 3 MLA; first_k_dense_replace 1 → layer 0 dense.
  assert.deepEqual(r.counts, { lightning: 2, mla: 2, gqa: 0, dense: 1, moe: 3 });
  assert.deepEqual(r.layers.map((l) => `${l.mixer}/${l.ffn}`), ['lightning/dense', 'mla/moe', 'lightning/moe', 'mla/moe']);
  assert.equal(r.cache.latentBytesPerToken, 2 * (12 + 4) * 2);
  assert.equal(r.cache.stateBytesPerSeq, 2 * 4 * 8 * 8 * 4);
  assert.equal(r.memory.states, 2 * r.cache.stateBytesPerSeq);
  assert.equal(r.memory.latent, 2 * 100 * r.cache.latentBytesPerToken);
  assert.equal(r.memory.total, r.params.total * 2 + r.memory.states + r.memory.latent);
});

test('inspect: Ling-2.6-flash geometry gives 104.2B total / 7.45B active (ecosystem §6.2)', () => {
  const spec = specOf(lingFlashConfig());
  const r = inspectModel(spec, { batch: 1, context: 8192, weightBytes: 2 });
  assert.deepEqual(r.counts, { lightning: 28, mla: 4, gqa: 0, dense: 1, moe: 31 });
  const near = (x: number, want: number): boolean => Math.abs(x / want - 1) < 0.01;
  assert.ok(near(r.params.total, 104.2e9), `total ${r.params.total}`);
  assert.ok(near(r.params.activeWithEmbedding, 7.45e9), `active + embedding ${r.params.activeWithEmbedding}`);
  assert.ok(near(r.params.active, 6.81e9), `active ${r.params.active}`);
  assert.ok(near(r.cache.stateBytesPerSeq, 56 * 2 ** 20), `state ${r.cache.stateBytesPerSeq}`);
  assert.equal(r.cache.latentBytesPerToken, 4 * 576 * 2); // 4.6 KB
  // B = 1 decode reads ≈ 13.75 GB (ecosystem §6.2 table; context there is negligible).
  const b1 = inspectModel(spec, { batch: 1, context: 0, weightBytes: 2 });
  assert.ok(Math.abs(b1.decodeStepBytes / 13.75e9 - 1) < 0.01, `decode bytes ${b1.decodeStepBytes}`);
  const text = formatInspect(r);
  assert.match(text, /lightning 28, mla 4/);
  assert.match(text, /moe\.routed_experts/);
});

test('inspect: human units', () => {
  assert.equal(fmtCount(7.45e9), '7.45 B');
  assert.equal(fmtCount(3400000), '3.40 M');
  assert.equal(fmtCount(12), '12');
  assert.equal(fmtBytes(1536), '1.50 KiB');
  assert.equal(fmtBytes(1.2 * 2 ** 30), '1.20 GiB');
  assert.equal(fmtBytes(100), '100 B');
});
