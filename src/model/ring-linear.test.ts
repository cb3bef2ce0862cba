/**
 * Ring-linear-2.0 (BailingMoeLinearV2ForCausalLM, GQA full attention): config parsing and layer
 * rule on the verbatim Ring-mini-linear-2.0 config, weights, the CPU forward vs the float64
 * reference, the formulation equivalences (prefill = decodes, chunked = one call, batch = runs of
 * one) and `bailing inspect` on the real geometry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../backend/cpu/cpu-backend.js';
import { ReferenceBackend } from '../backend/reference/reference-backend.js';
import { compare, fmtStats } from '../util/compare.js';
import { ModelLoadError } from '../util/errors.js';
import { buildSpec, parseConfig, type Compat, type ModelSpec } from './config.js';
import { cacheGeometry } from './cache-spec.js';
import { formatInspect, inspectModel } from './inspect.js';
import { ringMiniConfig } from './known-configs.js';
import { forwardMixed, harness, kvOf, randomPrompt, rowsClose, runPrompt, stateOf, type Harness } from './test-harness.js';
import { tinyRingLinearConfig, tinyTensors, writeTinyModel } from './tiny-checkpoint.js';
import { ringLinearVariants } from './tiny-configs.js';
import { loadWeights } from './weights.js';

const root = mkdtempSync(join(tmpdir(), 'bailing-ring-linear-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const RING_MINI = ringMiniConfig();

const specOf = (raw: Record<string, unknown>, compat: Compat = 'default'): ModelSpec => {
  const { config, naming } = parseConfig(raw);
  return buildSpec(config, naming, compat);
};



test('Ring-mini-linear-2.0 config: GQA at layers 4, 9, 14, 19, partial NeoX RoPE over 64 dims, slopes', () => {
  const spec = specOf(RING_MINI);
  const c = spec.config;
  assert.equal(c.full_attention_type, 'gqa');
  assert.equal(c.num_key_value_heads, 4);
  assert.deepEqual(spec.layers.filter((l) => l.mixer === 'gqa').map((l) => l.index), [4, 9, 14, 19]);
  assert.equal(spec.layers.filter((l) => l.mixer === 'lightning').length, 16);
  assert.ok(spec.layers.every((l) => l.mixer !== 'mla'));
  assert.deepEqual(spec.layers.map((l) => l.ffn).slice(0, 2), ['dense', 'moe']);
  assert.equal(spec.gqaRotaryDim, 64);
  assert.equal(spec.gqaInvFreq.length, 32);
  assert.equal(spec.gqaInvFreq[1], Math.fround(1 / Math.fround(1e6 ** Math.fround(2 / 64))));
  assert.equal(spec.decay[4], null);
  // Official factor 1 − (l−1)/(L−1) + 1e-5 (layer 0: 1 + 1/19, not mlx-lm's clamped 1); vLLM/SGLang: 1 − l/(L−1).
  const slope0 = 2 ** -0.5;
  assert.ok(Math.abs(spec.decay[0]![0] - slope0 * (1 + 1 / 19 + 1e-5)) < 1e-6);
  assert.ok(Math.abs(specOf(RING_MINI, 'vllm').decay[0]![0] - slope0 * (1 + 1e-5)) < 1e-6);
  assert.ok(Math.abs(spec.decay[18]![15] - 2 ** -8 * (1 - 17 / 19 + 1e-5)) < 1e-8);
  const g = cacheGeometry(spec);
  assert.deepEqual(g.gqaLayers, [4, 9, 14, 19]);
  assert.equal(g.kvWidth, 2 * 4 * 128);
  assert.deepEqual(g.mlaLayers, []);
});

test('Ring-linear layer rule: a trailing partial group is GQA under both semantics', () => {
  for (const compat of ['default', 'vllm'] as const) {
    const spec = specOf(tinyRingLinearConfig({ num_hidden_layers: 5, layer_group_size: 2 }), compat);
    assert.deepEqual(spec.layers.map((l) => l.mixer), ['lightning', 'gqa', 'lightning', 'gqa', 'gqa'], compat);
  }
  // model_type alone is enough; SGLang's full_attention_type key also selects GQA on a v2.5 config.
  assert.equal(specOf(tinyRingLinearConfig({ architectures: [] })).config.full_attention_type, 'gqa');
  assert.equal(specOf({ ...tinyRingLinearConfig(), model_type: 'bailing_hybrid', architectures: ['BailingMoeV2_5ForCausalLM'] }).config.full_attention_type, 'mla');
  assert.throws(() => parseConfig(tinyRingLinearConfig({ num_key_value_heads: 3 })), (e: unknown) => e instanceof ModelLoadError && /num_key_value_heads/.test(e.message));
});

test('Ring-linear weights: (H + 2·KVH)·D query_key_value is shape-checked and named in the error', () => {
  const spec = specOf(tinyRingLinearConfig());
  const tensors = tinyTensors(spec);
  const bad = tensors.map((t) =>
    t.name === 'model.layers.1.attention.query_key_value.weight' ? { ...t, shape: [3 * 4 * 8, 32], data: new Uint8Array(3 * 4 * 8 * 32 * 4) } : t,
  );
  const src = (list: typeof tensors) => ({
    names: () => list.map((t) => t.name),
    info: (n: string) => {
      const t = list.find((x) => x.name === n)!;
      return { dtype: t.dtype, shape: t.shape };
    },
    read: (n: string) => list.find((x) => x.name === n)!.data,
    location: 'mem',
  });
  const ref = new ReferenceBackend();
  const w = loadWeights(spec, src(tensors), ref);
  const mixer = w.layers[1].mixer;
  assert.equal(mixer.kind, 'gqa');
  assert.deepEqual(mixer.kind === 'gqa' ? mixer.qkv.shape : [], [(4 + 2 * 2) * 8, 32]);
  assert.throws(
    () => loadWeights(spec, src(bad), ref),
    (e: unknown) => e instanceof ModelLoadError && e.message.includes('model.layers.1.attention.query_key_value.weight: expected shape [64, 32], found [96, 32]'),
  );
});

for (const v of ringLinearVariants) {
  const dir = join(root, v.name);
  writeTinyModel(dir, v.config, v.opts);

  test(`${v.name}: CPU f32 forward matches the float64 reference (logits at every position, states, k/v cache)`, () => {
    const cpu = new CpuBackend({ threads: 2 });
    try {
      const hr = harness(dir, new ReferenceBackend());
      const hc = harness(dir, cpu);
      const ids = randomPrompt(v.name === 'ring-linear' ? 200 : 40, 90, 21);
      const r = runPrompt(hr, ids, 64);
      const c = runPrompt(hc, ids, 64);
      rowsClose(c.logits, r.logits, 1e-5, `${v.name} logits`);
      rowsClose(stateOf(hc, c.seq), stateOf(hr, r.seq), 1e-5, `${v.name} lightning states`);
      const kv = kvOf(hc, c.seq);
      assert.equal(kv.length, hc.model.spec.layers.filter((l) => l.mixer === 'gqa').length);
      rowsClose(kv, kvOf(hr, r.seq), 1e-5, `${v.name} GQA k/v`);
    } finally {
      cpu.dispose();
    }
  });

  test(`${v.name}: prefill(T) equals T single-token decodes; chunked prefill equals one prefill`, () => {
    const be = new CpuBackend({ threads: 2 });
    try {
      const ids = randomPrompt(70, 90, 5);
      const a = harness(dir, be);
      const whole = runPrompt(a, ids, ids.length);
      const b = harness(dir, be);
      const steps = runPrompt(b, ids, 1);
      rowsClose(steps.logits, whole.logits, 1e-5, 'decode vs prefill logits');
      rowsClose(stateOf(b, steps.seq), stateOf(a, whole.seq), 1e-5, 'decode vs prefill states');
      rowsClose(kvOf(b, steps.seq), kvOf(a, whole.seq), 1e-5, 'decode vs prefill k/v');
      for (const chunk of [7, 32]) {
        const h = harness(dir, be);
        const chunked = runPrompt(h, ids, chunk);
        rowsClose(chunked.logits, whole.logits, 1e-5, `chunks of ${chunk}`);
        rowsClose(kvOf(h, chunked.seq), kvOf(a, whole.seq), 1e-5, `chunks of ${chunk} k/v`);
      }
    } finally {
      be.dispose();
    }
  });

  test(`${v.name}: a batch of N sequences (mixed prefill and decode) equals N runs of one`, () => {
    const be = new CpuBackend({ threads: 2 });
    try {
      const prompts = [randomPrompt(5, 90, 1), randomPrompt(17, 90, 2), randomPrompt(1, 90, 3), randomPrompt(40, 90, 4)];
      const alone = prompts.map((p) => runPrompt(harness(dir, be), p, p.length).logits);
      // Sequence 0 first gets 4 tokens alone, then decodes its 5th in the same step as 1..3 prefill.
      const h: Harness = harness(dir, be);
      const s0 = runPrompt(h, prompts[0].slice(0, 4), 4);
      const seqs = [s0.seq, h.cache.allocSeq()!, h.cache.allocSeq()!, h.cache.allocSeq()!];
      const parts = [prompts[0].slice(4), prompts[1], prompts[2], prompts[3]];
      const got = forwardMixed(h, seqs, parts, [4, 0, 0, 0]);
      for (let i = 0; i < prompts.length; i++) {
        const s = compare(got[i], alone[i][alone[i].length - 1], 1);
        assert.ok(s.maxRel < 1e-5, `sequence ${i}: ${fmtStats(s)}`);
      }
    } finally {
      be.dispose();
    }
  });
}

test('inspect: Ring-mini-linear-2.0 geometry gives 16.4B total / 1.6B active (model card), 957M non-embedding', () => {
  const spec = specOf(RING_MINI);
  const r = inspectModel(spec, { batch: 1, context: 8192, weightBytes: 2 });
  assert.deepEqual(r.counts, { lightning: 16, mla: 0, gqa: 4, dense: 1, moe: 19 });
  const near = (x: number, want: number): boolean => Math.abs(x / want - 1) < 0.01;
  assert.ok(near(r.params.total, 16.4e9), `total ${r.params.total}`);
  assert.ok(near(r.params.activeWithEmbedding, 1.6e9), `active + embedding ${r.params.activeWithEmbedding}`);
  // ecosystem.md: "16B total / 957M active" = active without the embedding table and lm_head.
  assert.ok(near(r.params.active - r.components.lm_head.active, 957e6), `active w/o lm_head ${r.params.active}`);
  // Exact per-component counts derived from the shapes.
  const C = 2048, D = 128;
  assert.equal(r.components['attention.gqa'].total, 4 * ((16 + 2 * 4) * D * C + C * 16 * D));
  assert.equal(r.components['attention.lightning'].total, 16 * 5 * 16 * D * C);
  assert.equal(r.components['attention.mla'].total, 0);
  assert.equal(r.components['moe.routed_experts'].total, 19 * 256 * 3 * 512 * C);
  assert.equal(r.components['moe.routed_experts'].active, 19 * 8 * 3 * 512 * C);
  assert.equal(r.cache.kvBytesPerToken, 4 * 2 * 4 * 128 * 2); // 8 KiB: 4 layers × [k | v] of 4 heads × 128
  assert.equal(r.cache.latentBytesPerToken, 0);
  assert.equal(r.cache.stateBytesPerSeq, 16 * 16 * 128 * 128 * 4); // 16 MiB
  assert.equal(r.memory.kv, 8192 * r.cache.kvBytesPerToken);
  assert.equal(r.memory.total, r.params.total * 2 + r.memory.states + r.memory.kv);
  const text = formatInspect(r);
  assert.match(text, /layers: 20 \(lightning 16, gqa 4; dense ffn 1, moe 19\)/);
  assert.match(text, /attention\.gqa/);
  assert.match(text, /GQA k\/v per token\s+8\.00 KiB/);
  assert.doesNotMatch(text, /MLA/);
});

test('inspect: Ring-linear tiny variants count exactly the numel of their checkpoint tensors', () => {
  for (const v of ringLinearVariants) {
    const spec = specOf(v.config);
    const total = tinyTensors(spec, v.opts).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
    const gqa = tinyTensors(spec, v.opts)
      .filter((t) => /\.attention\.(query_key_value|dense)\./.test(t.name) && spec.layers[Number(t.name.split('.')[2])].mixer === 'gqa')
      .reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
    const r = inspectModel(spec, { batch: 1, context: 10, weightBytes: 2 });
    assert.equal(r.params.total, total, v.name);
    assert.equal(r.components['attention.gqa'].total, gqa, v.name);
  }
});
