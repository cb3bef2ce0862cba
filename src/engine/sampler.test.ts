import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_SAMPLING_PARAMS, resolveSamplingParams, Sampler, SamplerScratch, topIndices, foldSeed, type SamplingParams, type SamplingParamsInput } from './sampler.js';
import { InvalidRequestError } from '../util/errors.js';
import { Prng } from '../util/prng.js';
import { packSampleRows, sampleRowHost, unpackSampleRow, SAMPLE_LP_STRIDE, SAMPLE_PARAM_WORDS } from '../ops/sample/sample.js';

const params = (p: SamplingParamsInput): SamplingParams => resolveSamplingParams(p);

function randomLogits(seed: number, v: number, scale = 3): Float32Array {
  const rng = new Prng(seed);
  return Float32Array.from({ length: v }, () => rng.normal() * scale);
}

function draws(p: SamplingParamsInput, logits: Float32Array, n: number): number[] {
  const s = new Sampler(params(p));
  return Array.from({ length: n }, () => s.sample(logits).token);
}

function softmax(z: ArrayLike<number>, t = 1): number[] {
  const m = Math.max(...Array.from(z));
  const e = Array.from(z, (x) => Math.exp((x - m) / t));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

test('defaults: every field present, validated input passes through', () => {
  assert.deepEqual(resolveSamplingParams({}), { ...DEFAULT_SAMPLING_PARAMS });
  const p = params({ temperature: 0.7, topK: 40, topP: 0.9, minP: 0.05, seed: 3, maxTokens: 10, stop: 'x', logprobs: 5, stopTokenIds: [1] });
  assert.deepEqual(p.stop, ['x']);
  assert.equal(p.topK, 40);
  // null means "not set", as OpenAI clients send it.
  assert.equal(params({ temperature: null }).temperature, 1);
});

test('validation errors name the parameter', () => {
  const bad: Array<[SamplingParamsInput, string]> = [
    [{ temperature: -0.1 }, 'temperature'],
    [{ temperature: 'hot' }, 'temperature'],
    [{ topP: 0 }, 'top_p'],
    [{ topP: 1.5 }, 'top_p'],
    [{ topK: -2 }, 'top_k'],
    [{ topK: 2.5 }, 'top_k'],
    [{ minP: 1.1 }, 'min_p'],
    [{ repetitionPenalty: 0 }, 'repetition_penalty'],
    [{ presencePenalty: 2.5 }, 'presence_penalty'],
    [{ frequencyPenalty: -3 }, 'frequency_penalty'],
    [{ maxTokens: 0 }, 'max_tokens'],
    [{ maxTokens: 1.5 }, 'max_tokens'],
    [{ seed: 1.5 }, 'seed'],
    [{ stop: [''] }, 'stop'],
    [{ stop: 3 }, 'stop'],
    [{ stopTokenIds: [-1] }, 'stop_token_ids'],
    [{ ignoreEos: 'yes' }, 'ignore_eos'],
    [{ logprobs: 21 }, 'logprobs'],
    [{ temperature: Number.NaN }, 'temperature'],
  ];
  for (const [input, name] of bad) {
    assert.throws(
      () => resolveSamplingParams(input),
      (e: unknown) => e instanceof InvalidRequestError && e.param === name && e.message.includes(name),
      JSON.stringify(input),
    );
  }
  assert.throws(() => resolveSamplingParams({ stopTokenIds: [10] }, { vocabSize: 10 }), InvalidRequestError);
  for (const k of [0, -1, 1]) assert.equal(params({ topK: k }).topK, k);
});

test('greedy: argmax, lowest index on ties, no randomness', () => {
  const logits = Float32Array.from([0.5, 2, -1, 2, 1.9]);
  assert.deepEqual(draws({ temperature: 0 }, logits, 5), [1, 1, 1, 1, 1]);
  const l2 = randomLogits(1, 1000);
  let best = 0;
  for (let i = 1; i < l2.length; i++) if (l2[i] > l2[best]) best = i;
  assert.equal(new Sampler(params({ temperature: 0 })).sample(l2).token, best);
  // Logits are not modified.
  const copy = Float32Array.from(l2);
  new Sampler(params({ temperature: 0.5, repetitionPenalty: 2 }), { promptIds: [1, 2, 3] }).sample(l2);
  assert.deepEqual(l2, copy);
});

test('seeded sampling is reproducible; different seeds differ', () => {
  const logits = randomLogits(2, 500, 1);
  const a = draws({ temperature: 1, seed: 42 }, logits, 50);
  assert.deepEqual(draws({ temperature: 1, seed: 42 }, logits, 50), a);
  assert.notDeepEqual(draws({ temperature: 1, seed: 43 }, logits, 50), a);
  // Without params.seed, the caller's fallback seed decides.
  const f = (s: number): number[] => {
    const smp = new Sampler(params({}), { fallbackSeed: s });
    return Array.from({ length: 20 }, () => smp.sample(logits).token);
  };
  assert.deepEqual(f(9), f(9));
  assert.notEqual(foldSeed(2 ** 32), foldSeed(0));
  assert.notEqual(foldSeed(-1), foldSeed(1));
});

test('top-k = 1 equals greedy, including ties', () => {
  for (let seed = 0; seed < 20; seed++) {
    const logits = randomLogits(seed, 300);
    if (seed % 2) logits[7] = logits[250] = 100;
    const greedy = new Sampler(params({ temperature: 0 })).sample(logits).token;
    assert.deepEqual(draws({ temperature: 1.3, topK: 1, seed }, logits, 5), [greedy, greedy, greedy, greedy, greedy]);
  }
});

test('top-k restricts the support to the k best', () => {
  const logits = randomLogits(5, 200, 0.5);
  const allowed = new Set(topIndices(logits, 10));
  const seen = new Set(draws({ topK: 10, seed: 1 }, logits, 3000));
  for (const t of seen) assert.ok(allowed.has(t), `token ${t} outside top-k`);
  assert.equal(seen.size, 10);
});

test('top-p: only the smallest nucleus with mass ≥ top_p ever appears', () => {
  const logits = Float32Array.from([2, 1, 0.5, 0, -0.5, -1, -3, 1.5]);
  const p = softmax(logits);
  const order = [...p.keys()].sort((a, b) => p[b] - p[a]);
  let cum = 0;
  const nucleus = new Set<number>();
  for (const i of order) {
    nucleus.add(i);
    cum += p[i];
    if (cum >= 0.8) break;
  }
  const seen = new Set(draws({ topP: 0.8, seed: 7 }, logits, 5000));
  assert.deepEqual([...seen].sort(), [...nucleus].sort());
  // top_p tiny keeps exactly the best token.
  assert.deepEqual(new Set(draws({ topP: 1e-9, seed: 1 }, logits, 200)), new Set([0]));
  // Large vocabulary (exercises the pre-filter): excluded tokens never appear.
  const big = randomLogits(8, 50_000, 4);
  const pb = softmax(big);
  const ob = [...pb.keys()].sort((a, b) => pb[b] - pb[a]);
  let c = 0;
  const nb = new Set<number>();
  for (const i of ob) {
    nb.add(i);
    c += pb[i];
    if (c >= 0.5) break;
  }
  for (const t of draws({ topP: 0.5, seed: 3 }, big, 2000)) assert.ok(nb.has(t), `token ${t} outside the nucleus`);
});

test('top-p: the cut inside one histogram bin matches a full sort', () => {
  // 40 logits 0.05 apart: several tokens share each 0.5-nat bin.
  const logits = Float32Array.from({ length: 40 }, (_, i) => ((i * 17) % 40) * 0.05);
  for (const topP of [0.3, 0.5, 0.77]) {
    const p = softmax(logits);
    const order = [...p.keys()].sort((a, b) => p[b] - p[a]);
    const nucleus = new Set<number>();
    let cum = 0;
    for (const i of order) {
      nucleus.add(i);
      cum += p[i];
      if (cum >= topP) break;
    }
    const seen = new Set(draws({ topP, seed: 4 }, logits, 6000));
    assert.deepEqual([...seen].sort((a, b) => a - b), [...nucleus].sort((a, b) => a - b), `top_p ${topP}`);
  }
});

test('top-p after top-k uses the renormalised top-k mass', () => {
  // Probabilities ∝ [4, 2, 1, 1]; top-k=2 → [2/3, 1/3]; top_p=0.6 keeps only token 0.
  const logits = Float32Array.from([Math.log(4), Math.log(2), 0, 0]);
  assert.deepEqual(new Set(draws({ topK: 2, topP: 0.6, seed: 5 }, logits, 500)), new Set([0]));
  // Without top-k, mass of token 0 is 0.5 < 0.6 so token 1 joins.
  assert.deepEqual(new Set(draws({ topP: 0.6, seed: 5 }, logits, 500)), new Set([0, 1]));
});

test('min-p drops tokens below min_p·p_max, with and without other filters', () => {
  const logits = Float32Array.from([0, Math.log(0.5), Math.log(0.2), Math.log(0.05), Math.log(0.3)]);
  // relative p: [1, .5, .2, .05, .3]; min_p=0.25 keeps {0, 1, 4}.
  assert.deepEqual(new Set(draws({ minP: 0.25, seed: 2 }, logits, 3000)), new Set([0, 1, 4]));
  assert.deepEqual(new Set(draws({ minP: 0.25, topK: 4, seed: 2 }, logits, 3000)), new Set([0, 1, 4]));
  assert.deepEqual(new Set(draws({ minP: 1, seed: 2 }, logits, 200)), new Set([0]));
});

test('empirical frequencies follow softmax(logits / T)', () => {
  const logits = Float32Array.from([1, 0, -1, 0.5]);
  const T = 0.7;
  const n = 20000;
  const counts = [0, 0, 0, 0];
  for (const t of draws({ temperature: T, seed: 99 }, logits, n)) counts[t]++;
  softmax(logits, T).forEach((p, i) => assert.ok(Math.abs(counts[i] / n - p) < 0.015, `token ${i}: ${counts[i] / n} vs ${p}`));
});

test('repetition penalty over prompt + output: positive divided, negative multiplied', () => {
  const logits = Float32Array.from([2, -2, 1, 0.5]);
  const s = new Sampler(params({ temperature: 0, repetitionPenalty: 2, logprobs: 4 }), { promptIds: [0, 1] });
  // Effective z = [1, -4, 1, 0.5]: tie between 0 and 2, lowest index wins.
  const r1 = s.sample(logits);
  assert.equal(r1.token, 0);
  const lse = Math.log(Math.exp(1) + Math.exp(-4) + Math.exp(1) + Math.exp(0.5));
  assert.ok(Math.abs((r1.logprob ?? 0) - (1 - lse)) < 1e-6);
  const byToken = new Map(r1.topLogprobs?.map((x) => [x.token, x.logprob]));
  assert.ok(Math.abs((byToken.get(1) ?? 0) - (-4 - lse)) < 1e-6);
  // Generated tokens join the penalised set: after 0 is drawn, 3/10 < 2.9 so 1 wins.
  const s2 = new Sampler(params({ temperature: 0, repetitionPenalty: 10 }), { promptIds: [] });
  assert.equal(s2.sample(Float32Array.from([3, 2.9, 0])).token, 0);
  assert.equal(s2.sample(Float32Array.from([3, 2.9, 0])).token, 1);
});

test('presence and frequency penalties apply to output tokens only, per count', () => {
  const logits = Float32Array.from([1, 0.9, 0.8]);
  const s = new Sampler(params({ temperature: 0, frequencyPenalty: 0.05, presencePenalty: 0.02, logprobs: 0 }), { promptIds: [1, 1, 1] });
  const seq = [0, 1, 2, 0].map(() => s.sample(logits));
  // step1: z=[1,.9,.8]→0; step2: z0=1-.07=.93 → 0; step3: z0=1-.12=.88 <.9 → 1; step4: z=[.88,.83,.8] → 0
  assert.deepEqual(
    seq.map((r) => r.token),
    [0, 0, 1, 0],
  );
  assert.deepEqual(seq[0].topLogprobs, []);
  // Check the exact penalised logit through logprobs: after outputs [0,0,1,0], z0 = 1 - 3·0.05 - 0.02 = 0.83.
  const z = [1 - 0.17, 0.9 - 0.07, 0.8];
  const lse = Math.log(z.reduce((a, b) => a + Math.exp(b), 0));
  const r = s.sample(logits);
  assert.equal(r.token, 0);
  assert.ok(Math.abs((r.logprob ?? 0) - (z[0] - lse)) < 1e-6, `${r.logprob} vs ${z[0] - lse}`);
});

test('logprobs: from the tempered distribution before truncation, top-n best first', () => {
  const logits = randomLogits(4, 100);
  const s = new Sampler(params({ temperature: 0.5, topK: 3, seed: 1, logprobs: 5 }));
  const r = s.sample(logits);
  const ref = softmax(logits, 0.5);
  assert.ok(Math.abs((r.logprob ?? 0) - Math.log(ref[r.token])) < 1e-4);
  const top = r.topLogprobs ?? [];
  assert.equal(top.length, 5);
  const order = [...ref.keys()].sort((a, b) => ref[b] - ref[a]).slice(0, 5);
  assert.deepEqual(
    top.map((x) => x.token),
    order,
  );
  for (const x of top) assert.ok(Math.abs(x.logprob - Math.log(ref[x.token])) < 1e-4);
  assert.equal(new Sampler(params({ seed: 1 })).sample(logits).logprob, null);
});

test('topIndices: partial selection matches a full sort, ties by index', () => {
  const rng = new Prng(12);
  for (let k = 0; k < 50; k++) {
    const v = 1 + rng.int(300);
    const z = Float32Array.from({ length: v }, () => rng.int(20)); // many ties
    const n = rng.int(v + 2);
    const ref = [...z.keys()].sort((a, b) => z[b] - z[a] || a - b).slice(0, n);
    assert.deepEqual([...topIndices(z, n)], ref);
  }
});

test('shared scratch gives the same results as private scratch', () => {
  const scratch = new SamplerScratch();
  const logits = randomLogits(6, 1000);
  const a = new Sampler(params({ seed: 5, topP: 0.9 }), { scratch });
  const b = new Sampler(params({ seed: 5, topP: 0.9 }));
  const small = randomLogits(7, 10);
  for (let i = 0; i < 20; i++) {
    new Sampler(params({ seed: i }), { scratch }).sample(small); // interleaved use of the scratch
    assert.equal(a.sample(logits).token, b.sample(logits).token);
  }
});

test('-inf logits (masked tokens) are never drawn', () => {
  const logits = Float32Array.from([0, -Infinity, 0, -Infinity]);
  for (const p of [{}, { topP: 0.9 }, { topK: 3 }, { minP: 0.1 }]) {
    for (const t of draws({ ...p, seed: 1 }, logits, 500)) assert.ok(t === 0 || t === 2);
  }
});

test('deviceRow + acceptDevice give sample()\'s stream: same draws, penalty state and logprobs', () => {
  const sets: SamplingParamsInput[] = [
    { temperature: 0 },
    { temperature: 0, repetitionPenalty: 1.4, logprobs: 3 },
    { temperature: 0.8, seed: 3 },
    { temperature: 1, topK: 20, topP: 0.9, seed: 4, logprobs: 5 },
    { temperature: 1.2, topP: 0.8, minP: 0.05, seed: 5 },
    { temperature: 0.9, repetitionPenalty: 1.3, presencePenalty: 0.5, frequencyPenalty: 0.4, seed: 6, logprobs: 0 },
    { temperature: 1, frequencyPenalty: -0.5 }, // no seed: the fallback seed decides
  ];
  const rng = new Prng(77);
  const rows = Array.from({ length: 40 }, (_, i) => randomLogits(100 + i, 300, 2));
  for (const r of rows) for (let k = 0; k < 5; k++) r[rng.int(300)] = r[rng.int(300)]; // ties
  for (const s of sets) {
    const opts = { promptIds: [1, 2, 3, 250, 2], fallbackSeed: 99 };
    const a = new Sampler(params(s), opts);
    const b = new Sampler(params(s), opts);
    const scratch = new SamplerScratch();
    for (const [i, logits] of rows.entries()) {
      const want = a.sample(logits);
      const row = b.deviceRow();
      assert.equal(row.u === 0, (s.temperature ?? 1) === 0, 'greedy rows draw nothing');
      const got = b.acceptDevice(sampleRowHost(logits, row, scratch));
      assert.deepEqual(got, want, `${JSON.stringify(s)} step ${i}`);
    }
    assert.equal(b.generatedCount, rows.length);
  }
});

test('packSampleRows: parameters, u and the live penalty lists; unpackSampleRow reads the device layout', () => {
  const s = new Sampler(params({ temperature: 0.5, topK: 7, topP: 0.9, minP: 0.1, repetitionPenalty: 1.2, frequencyPenalty: 0.3, presencePenalty: 0.2, seed: 1, logprobs: 2 }), { promptIds: [4, 4, 9] });
  for (const t of [5, 5, 7]) s.acceptDevice({ token: t, logprob: null, topLogprobs: null });
  const greedy = new Sampler(params({ temperature: 0 }));
  const row = s.deviceRow();
  const a = packSampleRows([greedy.deviceRow(), row]);
  const P = SAMPLE_PARAM_WORDS;
  assert.deepEqual([...a.params.subarray(0, 13)], [0, 0, 1, 0, 1, 0, 0, 0, -1, 0, 0, 0, 0]);
  assert.deepEqual([...a.params.subarray(P, P + 9)], [0.5, 7, 0.9, 0.1, 1.2, 0.2, 0.3, row.u, 2]);
  const [repOff, repLen, cntOff, cntLen] = a.params.subarray(P + 9, P + 13);
  assert.deepEqual([...a.penTokens.subarray(repOff, repOff + repLen)].sort((x, y) => x - y), [4, 5, 7, 9]);
  const counts = new Map([...a.penTokens.subarray(cntOff, cntOff + cntLen)].map((t, j) => [t, a.penCounts[cntOff + j]]));
  assert.deepEqual(counts, new Map([[5, 2], [7, 1]]));
  assert.ok(a.logprobs);
  assert.ok(row.u > 0 && row.u < 1);

  const lp = new Float64Array(2 * SAMPLE_LP_STRIDE);
  lp.set([-0.5, 3, -0.25, 8, -0.5], SAMPLE_LP_STRIDE);
  const res = { tokens: Int32Array.of(-1, 8), logprobs: lp };
  assert.deepEqual(unpackSampleRow(res, 1, 2, 300), { token: 8, logprob: -0.5, topLogprobs: [{ token: 3, logprob: -0.25 }, { token: 8, logprob: -0.5 }] });
  assert.deepEqual(unpackSampleRow(res, 1, null, 300), { token: 8, logprob: null, topLogprobs: null });
  assert.throws(() => unpackSampleRow(res, 0, null, 300), /no finite maximum/);
});
