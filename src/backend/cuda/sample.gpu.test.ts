/**
 * Device sampling (CudaBackend.sampleRows, src/ops/sample/sample.cu) against the host algorithm
 * (ops/sample/sample.ts sampleRowHost, which the CPU Sampler runs): random rows at V = 1000 and
 * V = 157184 with ties and -inf entries, every parameter kind, seeded draws. Greedy rows and
 * logprobs must match exactly (logprobs to 1e-9); a sampled token may differ only where the host
 * itself picks the device's token after moving u, top_p or min_p by 1e-6 relative (a draw or cut
 * on a mass boundary), and each such case is counted and printed. Then the engine on the embedded
 * model: device sampling gives the host path's tokens on the same GPU exactly; teacher-forced, each
 * token is the host algorithm's choice on CUDA's logits, and where the CPU's logits choose otherwise
 * (forward differences) the positions are reported.
 * Skips without CUDA.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../cpu/cpu-backend.js';
import { CudaBackend, cudaUnavailableReason } from './cuda-backend.js';
import { embeddedModelDir } from '../../api/model.js';
import { openModel } from '../../engine/open.js';
import { resolveSamplingParams, Sampler, type SamplingParamsInput } from '../../engine/sampler.js';
import { harness, runPrompt } from '../../model/test-harness.js';
import type { GenerateResult } from '../../engine/engine.js';
import { packSampleRows, sampleRowHost, SampleScratch, unpackSampleRow, type SampleResult, type SampleRow } from '../../ops/sample/sample.js';
import { InternalError } from '../../util/errors.js';
import { Prng } from '../../util/prng.js';
import type { Backend } from '../backend.js';

const reason = cudaUnavailableReason();
const skip = reason === null ? false : `no CUDA device: ${reason}`;

type Kind = 'normal' | 'ties' | 'masked';

function makeRow(rng: Prng, V: number, kind: Kind): Float32Array {
  const x = new Float32Array(V);
  const scale = 1 + rng.next() * 4;
  for (let i = 0; i < V; i++) x[i] = rng.normal() * scale;
  if (kind === 'ties') for (let i = 0; i < V; i++) x[i] = Math.round(x[i] * 2) / 2; // many equal values, equal maxima
  if (kind === 'masked') for (let i = 0; i < V; i++) if (rng.next() < 0.3) x[i] = -Infinity;
  return x;
}

/** Parameter sets cycled over rows (penalty lists are filled per row). */
const SETS: readonly Omit<SampleRow, 'u' | 'seen' | 'counts'>[] = (() => {
  const base = { temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, logprobs: null };
  return [
    { ...base, temperature: 0 },
    { ...base, temperature: 0, logprobs: 20 },
    { ...base },
    { ...base, temperature: 0.7, logprobs: 5 },
    { ...base, temperature: 1.3, topK: 1, logprobs: 5 },
    { ...base, topK: 50 },
    { ...base, temperature: 0.8, topK: 50, logprobs: 0 },
    { ...base, topP: 0.9 },
    { ...base, temperature: 0.6, topP: 0.9, logprobs: 5 },
    { ...base, minP: 0.1 },
    { ...base, topK: 50, topP: 0.9 },
    { ...base, topP: 0.9, minP: 0.1 },
    { ...base, temperature: 0.9, topK: 50, topP: 0.9, minP: 0.1, logprobs: 20 },
    { ...base, repetitionPenalty: 1.3, presencePenalty: 0.4, frequencyPenalty: 0.3 },
    { ...base, temperature: 0, repetitionPenalty: 1.5, frequencyPenalty: 0.5, logprobs: 5 },
    { ...base, temperature: 0.7, topP: 0.9, repetitionPenalty: 0.8, presencePenalty: -0.5 },
    { ...base, temperature: 1.1, topK: 1000, minP: 0.05 },
    // Above the kernel's shared-memory top-k (1024): the radix-search path (at V = 1000: top-k off).
    { ...base, topK: 2000, topP: 0.9, logprobs: 5 },
    { ...base, temperature: 0.8, topK: 5000, minP: 0.02 },
  ];
})();

function rowParams(rng: Prng, k: number, V: number): SampleRow {
  const s = SETS[k % SETS.length];
  const seen = s.repetitionPenalty !== 1 ? new Set(Array.from({ length: 200 }, () => rng.int(V))) : null;
  const counts = s.presencePenalty !== 0 || s.frequencyPenalty !== 0 ? new Map(Array.from({ length: 50 }, () => [rng.int(V), 1 + rng.int(5)] as [number, number])) : null;
  return { ...s, u: s.temperature < 1e-5 ? 0 : rng.next(), seen, counts };
}

const sameLp = (a: number, b: number): boolean => a === b || Math.abs(a - b) <= 1e-9;

describe('device sampling vs the host algorithm', { skip }, () => {
  let be: CudaBackend;
  before(() => {
    be = new CudaBackend({ graphs: false });
  });
  after(() => be?.dispose());

  /** Host result of `row` with one parameter moved; the device token when a nudge reaches it. */
  function boundaryNudge(x: Float32Array, row: SampleRow, token: number, scratch: SampleScratch): string | null {
    const nudges: [string, Partial<SampleRow>][] = [];
    for (const f of [1 - 1e-6, 1 + 1e-6]) {
      nudges.push([`u×${f}`, { u: Math.min(row.u * f, 1 - 2 ** -53) }]);
      if (row.topP < 1) nudges.push([`top_p×${f}`, { topP: Math.min(row.topP * f, 1 - 1e-12) }]);
      if (row.minP > 0) nudges.push([`min_p×${f}`, { minP: row.minP * f }]);
    }
    for (const [what, n] of nudges) if (sampleRowHost(x, { ...row, ...n }, scratch).token === token) return what;
    return null;
  }

  function run(V: number, rows: number, calls: number, seed: number): { draws: number; boundary: string[] } {
    const rng = new Prng(seed);
    const scratch = new SampleScratch();
    const boundary: string[] = [];
    const kinds: Kind[] = ['normal', 'ties', 'masked'];
    const t = be.alloc('f32', [rows, V]);
    let draws = 0;
    for (let call = 0; call < calls; call++) {
      const xs = Array.from({ length: rows }, (_, r) => makeRow(rng, V, kinds[(call + r) % 3]));
      const ps = xs.map((_, r) => rowParams(rng, call * rows + r, V));
      const host = new Float32Array(rows * V);
      xs.forEach((x, r) => host.set(x, r * V));
      be.upload(t, host);
      const res = be.sampleRows(t, packSampleRows(ps));
      for (let r = 0; r < rows; r++) {
        const p = ps[r];
        const want = sampleRowHost(xs[r], p, scratch);
        const got: SampleResult = unpackSampleRow(res, r, p.logprobs, V);
        const where = `V ${V} call ${call} row ${r} (${kinds[(call + r) % 3]}, ${JSON.stringify({ ...p, seen: p.seen && 'set', counts: p.counts && 'map' })})`;
        draws++;
        if (got.token !== want.token) {
          assert.ok(p.temperature >= 1e-5, `greedy row differs: device ${got.token}, host ${want.token} at ${where}`);
          const why = boundaryNudge(xs[r], p, got.token, scratch);
          assert.ok(why !== null, `device token ${got.token}, host ${want.token}, and no 1e-6 nudge of u/top_p/min_p gives the device's: ${where}`);
          boundary.push(`${where}: device ${got.token}, host ${want.token}; host gives the device's with ${why}`);
        } else if (want.logprob !== null) {
          assert.ok(sameLp(got.logprob!, want.logprob), `logprob ${got.logprob} vs ${want.logprob} at ${where}`);
        }
        if (want.topLogprobs !== null) {
          assert.deepEqual(got.topLogprobs!.map((x) => x.token), want.topLogprobs.map((x) => x.token), `top logprob tokens at ${where}`);
          got.topLogprobs!.forEach((x, j) => assert.ok(sameLp(x.logprob, want.topLogprobs![j].logprob), `top logprob ${j}: ${x.logprob} vs ${want.topLogprobs![j].logprob} at ${where}`));
        } else assert.equal(got.topLogprobs, null);
      }
    }
    return { draws, boundary };
  }

  test('V = 1000: 13,056 rows, every parameter kind', () => {
    const { draws, boundary } = run(1000, 64, 204, 11);
    console.log(`V=1000: ${draws} draws, ${boundary.length} boundary cases${boundary.length ? '\n  ' + boundary.join('\n  ') : ''}`);
  });

  test('V = 157184: 2,040 rows, every parameter kind', () => {
    const { draws, boundary } = run(157184, 34, 60, 12);
    console.log(`V=157184: ${draws} draws, ${boundary.length} boundary cases${boundary.length ? '\n  ' + boundary.join('\n  ') : ''}`);
  });

  test('one row many ways: R = 1 and R = 3 with mixed greedy / sampled rows', () => {
    const { draws } = run(5000, 1, 40, 13);
    assert.equal(draws, 40);
    run(777, 3, 40, 14);
  });

  test('rows without a finite maximum or with NaN fail loudly, like the host', () => {
    const V = 64;
    const t = be.alloc('f32', [2, V]);
    const bad = new Float32Array(2 * V).fill(-Infinity);
    bad.fill(0.5, V);
    bad[V + 3] = NaN;
    be.upload(t, bad);
    const p: SampleRow = { ...SETS[2], u: 0.5, seen: null, counts: null };
    const res = be.sampleRows(t, packSampleRows([p, p]));
    assert.throws(() => unpackSampleRow(res, 0, null, V), (e: unknown) => e instanceof InternalError && /no finite maximum/.test((e as Error).message));
    assert.throws(() => unpackSampleRow(res, 1, null, V), (e: unknown) => e instanceof InternalError && /NaN/.test((e as Error).message));
    assert.throws(() => sampleRowHost(bad.subarray(0, V), p, new SampleScratch()), InternalError);
    assert.throws(() => sampleRowHost(bad.subarray(V), p, new SampleScratch()), InternalError);
  });
});

describe('engine on the embedded model: device sampling', { skip }, () => {
  const requests: SamplingParamsInput[] = [
    { temperature: 0, logprobs: 3 },
    { temperature: 0.8, seed: 1 },
    { temperature: 1, topK: 20, seed: 2, logprobs: 5 },
    { temperature: 0.7, topP: 0.9, seed: 3 },
    { temperature: 1.2, minP: 0.1, seed: 4 },
    { temperature: 0.9, topK: 40, topP: 0.95, minP: 0.05, repetitionPenalty: 1.3, seed: 5 },
    { temperature: 1, presencePenalty: 0.5, frequencyPenalty: 0.5, seed: 6, logprobs: 2 },
    { temperature: 0, repetitionPenalty: 1.5 },
  ];
  let promptIds: number[][] = [];
  const prompts = ['The jury said', 'In the morning the', 'He was not', 'Mrs. Grant', 'The city of', 'It is a', 'They went to the', 'Every year'];

  async function generate(be: Backend, hideDevice = false): Promise<GenerateResult[]> {
    if (hideDevice) (be as { sampleRows?: unknown }).sampleRows = undefined;
    const m = await openModel(embeddedModelDir(), be, { maxSeqs: 8, seed: 9 });
    promptIds = prompts.map((p) => m.tokenizer.encode(p, { addSpecialTokens: false }));
    const ps = requests.map((r, i) => m.engine.submit({ promptIds: promptIds[i], params: resolveSamplingParams({ maxTokens: 32, ignoreEos: true, ...r }) }));
    m.engine.runUntilIdle();
    return Promise.all(ps);
  }

  function same(a: GenerateResult[], b: GenerateResult[], what: string, tol: number): void {
    let worst = 0;
    a.forEach((x, i) => {
      assert.deepEqual(x.tokenIds, b[i].tokenIds, `${what}: request ${i} (${JSON.stringify(requests[i])})`);
      x.logprobs?.forEach((e, j) => {
        const d = Math.abs(e.logprob - b[i].logprobs![j].logprob);
        worst = Math.max(worst, d);
        assert.ok(d <= tol, `${what}: request ${i} token ${j} logprob ${e.logprob} vs ${b[i].logprobs![j].logprob}`);
      });
    });
    console.log(`${what}: tokens identical, largest logprob difference ${worst.toExponential(2)}`);
  }

  /**
   * Replays each CUDA stream teacher-forced on both backends' models (one prefill of the whole
   * stream each): at every position the host algorithm on CUDA's own logits must pick CUDA's token
   * (a 1e-6 nudge of u allowed: this prefill and the engine's steps round differently); positions
   * where the CPU's logits pick another token are forward differences, counted and returned.
   */
  function teacherForced(cuda: Backend, cpu: Backend, dev: GenerateResult[]): { positions: number; flips: string[] } {
    const hc = harness(embeddedModelDir(), cuda, 'default', 512), hp = harness(embeddedModelDir(), cpu, 'default', 512);
    const flips: string[] = [];
    const scratch = new SampleScratch();
    let positions = 0;
    dev.forEach((r, i) => {
      const prompt = promptIds[i];
      const ids = [...prompt, ...r.tokenIds].slice(0, -1);
      const [lc, lp] = [hc, hp].map((h) => {
        const { logits, seq } = runPrompt(h, ids, ids.length);
        h.cache.free(seq);
        return logits;
      });
      const smp = new Sampler(resolveSamplingParams({ maxTokens: 32, ignoreEos: true, ...requests[i] }), { promptIds: prompt });
      r.tokenIds.forEach((got, j) => {
        const xc = Float32Array.from(lc[prompt.length - 1 + j]), xp = Float32Array.from(lp[prompt.length - 1 + j]);
        const row = smp.deviceRow();
        const onCuda = [1, 1 - 1e-6, 1 + 1e-6].some((f) => sampleRowHost(xc, { ...row, u: Math.min(row.u * f, 1 - 2 ** -53) }, scratch).token === got);
        assert.ok(onCuda, `request ${i} (${JSON.stringify(requests[i])}) token ${j}: the host algorithm on CUDA's logits does not pick CUDA's ${got}`);
        const onCpu = sampleRowHost(xp, row, scratch).token;
        if (onCpu !== got) {
          let num = 0, den = 0;
          for (let v = 0; v < xc.length; v++) (num += (xc[v] - xp[v]) ** 2), (den += xp[v] ** 2);
          flips.push(`request ${i} token ${j}: cuda ${got}, cpu ${onCpu} (u ${row.u.toFixed(4)}; cuda vs cpu logits NMSE ${(num / den).toExponential(1)})`);
        }
        smp.acceptDevice({ token: got, logprob: null, topLogprobs: null });
        positions++;
      });
    });
    return { positions, flips };
  }

  test('cuda with device sampling = cuda with host sampling; cpu teacher-forced', async () => {
    const cuda = new CudaBackend();
    const cudaHost = new CudaBackend();
    const cpu = new CpuBackend({ threads: 2 });
    try {
      const dev = await generate(cuda);
      const host = await generate(cudaHost, true);
      const ref = await generate(cpu);
      same(dev, host, 'cuda device sampling vs cuda host sampling', 1e-9); // same logits: exact
      // The two backends' forwards agree to logits NMSE ≤ 1e-4 (model.gpu.test.ts), not bit for bit,
      // so a seeded draw can flip where the forwards differ and the streams part from there: the
      // CPU comparison is teacher-forced and its flips reported (forward parity is tested elsewhere).
      const same1 = ref.filter((r, i) => r.tokenIds.join() === dev[i].tokenIds.join()).length;
      const { positions, flips } = teacherForced(cuda, cpu, dev);
      console.log(`engine: cpu streams identical to cuda for ${same1} of ${dev.length} requests; teacher-forced over ${positions} positions: the host algorithm on cuda's logits gives every cuda token; cpu's logits pick another at ${flips.length}${flips.length ? '\n  ' + flips.join('\n  ') : ''}`);
    } finally {
      cuda.dispose();
      cudaHost.dispose();
      cpu.dispose();
    }
  });
});
