/**
 * The vLLM compatibility profile differs from the default (official) semantics only where spec §8
 * says: the slope layer factor (§4.4), the tail-layer rule when L % G ≠ 0 (§1.1), the 256-block
 * prefill quirk (§4.6), bf16 state and router logits (§4.7, §6.1).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../backend/cpu/cpu-backend.js';
import { HybridCache } from '../cache/hybrid-cache.js';
import { openModel } from '../engine/open.js';
import { resolveSamplingParams } from '../engine/sampler.js';
import { writeTinyTokenizer } from '../tokenizer/make-byte-tokenizer.js';
import { compare, fmtStats } from '../util/compare.js';
import { roundBf16 } from '../util/numeric.js';
import { buildSlopes, buildSpec, layerDecay, layerPlan, loadConfig, parseConfig, semanticsFor, type ModelSpec, type Semantics } from './config.js';
import { Model } from './forward.js';
import { loadModelDir } from './load.js';
import { harness, randomPrompt, runPrompt, stateOf, type Harness } from './test-harness.js';
import { tinyConfig, writeTinyModel } from './tiny-checkpoint.js';

const root = mkdtempSync(join(tmpdir(), 'bailing-compat-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const DEFAULT = semanticsFor('default');
const VLLM = semanticsFor('vllm');


function near(actual: number, expected: number, rel: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= rel * Math.abs(expected), `${what}: ${actual} vs ${expected}`);
}

test('semantics: the two profiles differ in exactly the fields spec §8 lists', () => {
  assert.deepEqual(
    { ...DEFAULT, compat: undefined },
    { compat: undefined, slopeLayerOffset: 1, vllmPrefillQuirk: false, stateBf16: false, routerLogitsBf16: false, tailLayersFullAttention: true, renormEps: 1e-20 },
  );
  assert.deepEqual(
    { ...VLLM, compat: undefined },
    { compat: undefined, slopeLayerOffset: 0, vllmPrefillQuirk: true, stateBf16: true, routerLogitsBf16: true, tailLayersFullAttention: false, renormEps: 0 },
  );
});

test('buildSlopes: H = 16, 32, 64 (closed form 2^(-8(h+1)/H)) and the non-power-of-two H = 12 of spec §4.4', () => {
  for (const H of [16, 32, 64]) {
    const s = buildSlopes(H);
    assert.equal(s.length, H);
    s.forEach((v, h) => near(v, 2 ** ((-8 * (h + 1)) / H), 1e-12, `H=${H} h=${h}`));
    assert.equal(Math.fround(s[H - 1]), 0.00390625); // exact once rounded to f32 like the torch buffer
  }
  const first4: Record<number, number[]> = {
    16: [0.70711, 0.5, 0.35355, 0.25],
    32: [0.8409, 0.70711, 0.5946, 0.5],
    64: [0.917, 0.8409, 0.77111, 0.70711],
  };
  for (const [H, want] of Object.entries(first4)) want.forEach((w, i) => near(buildSlopes(Number(H))[i], w, 1e-4, `H=${H}[${i}]`));
  const s12 = buildSlopes(12);
  const want12 = [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625, 0.70711, 0.35355, 0.17678, 0.08839];
  assert.equal(s12.length, 12);
  want12.forEach((w, i) => near(s12[i], w, 1e-4, `H=12[${i}]`));
});

test('layerDecay: default factor 1 − (l−1)/(L−1) + 1e-5, vLLM 1 − l/(L−1) + 1e-5 (L = 80)', () => {
  const { config } = parseConfig(tinyConfig({ num_hidden_layers: 80, layer_group_size: 8, num_attention_heads: 16, hidden_size: 128, head_dim: 8 }));
  const slopes = buildSlopes(16);
  const factor = (l: number, s: Semantics): number => {
    const d = layerDecay(config, l, s);
    // every head scales by the same factor (up to the f32 rounding of the torch buffers)
    d.forEach((v, h) => near(v / slopes[h], d[0] / slopes[0], 1e-6, `layer ${l} head ${h}`));
    return d[0] / slopes[0];
  };
  for (const l of [0, 1, 7, 40, 78, 79]) {
    near(factor(l, DEFAULT), 1 - (l - 1) / 79 + 1e-5, 1e-6, `default l=${l}`);
    near(factor(l, VLLM), 1 - l / 79 + 1e-5, 1e-6, `vllm l=${l}`);
  }
  // The numbers of spec §4.4.
  near(factor(0, DEFAULT), 1.0127, 1e-4, 'default l=0');
  near(factor(0, VLLM), 1.00001, 1e-6, 'vllm l=0');
  near(factor(78, DEFAULT), 0.02533, 1e-3, 'default l=78');
  near(factor(78, VLLM), 0.01267, 1e-3, 'vllm l=78');
  // L = 1: both 1 + 1e-5.
  const one = parseConfig(tinyConfig({ num_hidden_layers: 1, layer_group_size: 2 })).config;
  assert.deepEqual(layerDecay(one, 0, DEFAULT), layerDecay(one, 0, VLLM));
  near(layerDecay(one, 0, VLLM)[0] / buildSlopes(4)[0], 1 + 1e-5, 1e-6, 'L=1');
});

test('layerPlan: identical when L % G == 0; L = 5, G = 2: official makes layer 4 MLA, vLLM keeps it lightning', () => {
  for (const [L, G] of [[4, 2], [8, 4], [80, 8], [32, 8], [6, 3], [3, 1]]) {
    const { config } = parseConfig(tinyConfig({ num_hidden_layers: L, layer_group_size: G }));
    assert.deepEqual(layerPlan(config, VLLM), layerPlan(config, DEFAULT), `L=${L} G=${G}`);
  }
  const { config } = parseConfig(tinyConfig({ num_hidden_layers: 5, layer_group_size: 2 }));
  const mixers = (s: Semantics): string[] => layerPlan(config, s).map((l) => l.mixer);
  assert.deepEqual(mixers(DEFAULT), ['lightning', 'mla', 'lightning', 'mla', 'mla']);
  assert.deepEqual(mixers(VLLM), ['lightning', 'mla', 'lightning', 'mla', 'lightning']);
  // G = 8, L = 80: MLA at 7, 15, …, 79 under both.
  const big = parseConfig(tinyConfig({ num_hidden_layers: 80, layer_group_size: 8 })).config;
  const mla = layerPlan(big, VLLM).filter((l) => l.mixer === 'mla').map((l) => l.index);
  assert.deepEqual(mla, Array.from({ length: 10 }, (_, i) => 8 * i + 7));
});

// ---- forward level ----

const dir = join(root, 'base');
writeTinyModel(dir, tinyConfig(), { seed: 1 }); // L = 4, G = 2
writeTinyTokenizer(dir);

function cacheFor(be: CpuBackend, spec: ModelSpec): HybridCache {
  const c = spec.config;
  return new HybridCache(
    be,
    {
      lightningLayers: spec.layers.filter((l) => l.mixer === 'lightning').map((l) => l.index),
      mlaLayers: spec.layers.filter((l) => l.mixer === 'mla').map((l) => l.index),
      nHeads: c.num_attention_heads,
      headDim: c.head_dim,
      latentWidth: c.kv_lora_rank + c.qk_rope_head_dim,
    },
    { maxSeqs: 4, numBlocks: 64, blockSize: 16 },
  );
}

/** vLLM semantics except the slope offset (official) and no bf16 rounding: only the prefill quirk differs. */
function quirkOnly(be: CpuBackend): Harness {
  const { config, naming } = loadConfig(dir);
  const base = buildSpec(config, naming, 'vllm');
  const semantics: Semantics = { ...base.semantics, slopeLayerOffset: 1, stateBf16: false, routerLogitsBf16: false };
  const spec: ModelSpec = { ...base, semantics, decay: base.layers.map((l) => (l.mixer === 'lightning' ? layerDecay(config, l.index, semantics) : null)) };
  const { weights } = loadModelDir(dir, be, 'vllm'); // same weights: the layer plan agrees when L % G == 0
  return { model: new Model(be, spec, weights, 512, 512, 16), cache: cacheFor(be, spec) };
}

/** Per-row scale-relative error max|a−b| / max|b|. */
function rowErr(a: Float64Array, b: Float64Array): number {
  return compare(a, b, 1).maxRel;
}

test('prefill quirk only: a fresh prompt of ≤ 256 tokens in one prefill equals the default', () => {
  const be = new CpuBackend({ threads: 2 });
  try {
    for (const n of [1, 37, 256]) {
      const ids = randomPrompt(n, 96, 10 + n);
      const want = runPrompt(harness(dir, be), ids, n).logits;
      const got = runPrompt(quirkOnly(be), ids, n).logits;
      for (let i = 0; i < n; i++) assert.ok(rowErr(got[i], want[i]) <= 1e-5, `n=${n} position ${i}: ${fmtStats(compare(got[i], want[i], 1))}`);
    }
  } finally {
    be.dispose();
  }
});

test('prefill quirk only: 300 tokens in one prefill differ exactly at positions ≥ 256', () => {
  const be = new CpuBackend({ threads: 2 });
  try {
    const ids = randomPrompt(300, 96, 21);
    const want = runPrompt(harness(dir, be), ids, 300).logits;
    const got = runPrompt(quirkOnly(be), ids, 300).logits;
    for (let i = 0; i < 256; i++) assert.ok(rowErr(got[i], want[i]) <= 1e-5, `position ${i} should agree: ${rowErr(got[i], want[i])}`);
    for (let i = 256; i < 300; i++) assert.ok(rowErr(got[i], want[i]) > 1e-4, `position ${i} should differ: ${rowErr(got[i], want[i])}`);
  } finally {
    be.dispose();
  }
});

test('prefill quirk only: a continued prefill differs from its first token on', () => {
  const be = new CpuBackend({ threads: 2 });
  try {
    const ids = randomPrompt(40, 96, 31);
    const hd = harness(dir, be), hq = quirkOnly(be);
    const d1 = runPrompt(hd, ids.slice(0, 20), 20);
    const q1 = runPrompt(hq, ids.slice(0, 20), 20);
    for (let i = 0; i < 20; i++) assert.ok(rowErr(q1.logits[i], d1.logits[i]) <= 1e-5, `first chunk position ${i}`);
    // the state written back after a fresh prefill is canonical
    stateOf(hq, q1.seq).forEach((s, l) => assert.ok(rowErr(s, stateOf(hd, d1.seq)[l]) <= 1e-5, `state ${l}`));
    const d2 = runPrompt(hd, ids.slice(20), 20, d1.seq).logits;
    const q2 = runPrompt(hq, ids.slice(20), 20, q1.seq).logits;
    for (let i = 0; i < 20; i++) assert.ok(rowErr(q2[i], d2[i]) > 1e-4, `continued chunk position ${20 + i} should differ: ${rowErr(q2[i], d2[i])}`);
    // a decode step (one token) after a fresh prefill is canonical under both
    const a = runPrompt(harness(dir, be), ids.slice(0, 21), 21).logits[20];
    const hq2 = quirkOnly(be);
    const s2 = runPrompt(hq2, ids.slice(0, 20), 20);
    const dec = runPrompt(hq2, [ids[20]], 1, s2.seq).logits[0];
    assert.ok(rowErr(dec, a) <= 1e-5, `decode after prefill: ${rowErr(dec, a)}`);
  } finally {
    be.dispose();
  }
});

test("compat 'vllm' runs end to end; its lightning states are bf16 values after every step", async () => {
  const be = new CpuBackend({ threads: 2 });
  try {
    const h = harness(dir, be, 'vllm');
    assert.equal(h.model.spec.semantics.compat, 'vllm');
    const ids = randomPrompt(30, 96, 41);
    const isBf16 = (what: string, seq: Parameters<typeof stateOf>[1]): void => {
      const states = stateOf(h, seq);
      assert.ok(states.length > 0);
      let nonzero = 0;
      for (const s of states)
        for (let i = 0; i < s.length; i++) {
          assert.equal(s[i], roundBf16(s[i]), `${what}: value ${s[i]} at ${i} is not bf16`);
          if (s[i] !== 0) nonzero++;
        }
      assert.ok(nonzero > 0, `${what}: states are all zero`);
    };
    const r = runPrompt(h, ids.slice(0, 29), 29);
    isBf16('after prefill', r.seq);
    const d = runPrompt(h, ids.slice(29), 1, r.seq);
    isBf16('after decode', d.seq);
    for (const row of [...r.logits, ...d.logits]) assert.ok(row.every(Number.isFinite));

    const m = await openModel(dir, be, { compat: 'vllm', maxModelLen: 128 });
    assert.equal(m.loaded.spec.semantics.compat, 'vllm');
    const p = m.engine.submit({ promptIds: ids, params: resolveSamplingParams({ temperature: 0, maxTokens: 8, ignoreEos: true }) });
    m.engine.runUntilIdle();
    const out = await p;
    assert.equal(out.tokenIds.length, 8);
    assert.equal(out.finishReason, 'length');
    // the engine's vLLM tokens equal a hand loop under the same profile
    const hv = harness(dir, be, 'vllm');
    let { logits, seq } = runPrompt(hv, ids, ids.length);
    const want: number[] = [];
    for (let i = 0; i < 8; i++) {
      const row = logits[logits.length - 1];
      let t = 0;
      for (let j = 1; j < row.length; j++) if (row[j] > row[t]) t = j;
      want.push(t);
      logits = runPrompt(hv, [t], 1, seq).logits;
    }
    assert.deepEqual(out.tokenIds, want);
  } finally {
    be.dispose();
  }
});
