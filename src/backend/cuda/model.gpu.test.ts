/**
 * Whole-model parity of the CUDA backend with the CPU backend on every tiny config variant (v2.5
 * and the Ring-linear GQA variants) and
 * on the embedded model: logits NMSE ≤ 1e-4 at every prompt position, greedy tokens identical for
 * 32 steps; on the GPU alone, chunked prefill equals one prefill. Skips without a CUDA device.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CpuBackend } from '../cpu/cpu-backend.js';
import { harness, runPrompt } from '../../model/test-harness.js';
import { writeTinyModel } from '../../model/tiny-checkpoint.js';
import { ringLinearVariants, tinyVariants } from '../../model/tiny-configs.js';
import { compare, fmtStats } from '../../util/compare.js';
import { Prng } from '../../util/prng.js';
import { CudaBackend, cudaUnavailableReason } from './cuda-backend.js';

const reason = cudaUnavailableReason();
const skip = reason === null ? false : `no CUDA device: ${reason}`;
const NMSE_MAX = 1e-4;
const GREEDY_STEPS = 32;

/** The shipped models (the package root is the first folder above this file with a package.json). */
function embeddedModels(): { name: string; dir: string }[] {
  let root = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(root, 'package.json')) && dirname(root) !== root) root = dirname(root);
  return ['tiny-random', 'tiny-brown'].map((n) => ({ name: n, dir: join(root, 'models', n) })).filter((m) => existsSync(join(m.dir, 'config.json')));
}

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/** Gap between the best and second-best logit (how close a greedy choice was to a tie). */
function margin(v: ArrayLike<number>): number {
  const s = Array.from(v).sort((a, b) => b - a);
  return s[0] - s[1];
}

function prompt(n: number, vocab: number, seed: number): number[] {
  const rng = new Prng(seed);
  return Array.from({ length: n }, () => rng.int(vocab));
}

describe('cuda model parity vs cpu', { skip }, () => {
  let cpu: CpuBackend;
  let gpu: CudaBackend;
  const root = mkdtempSync(join(tmpdir(), 'bailing-gpu-model-'));
  before(() => {
    cpu = new CpuBackend({ threads: 4 });
    gpu = new CudaBackend();
  });
  after(() => {
    cpu?.dispose();
    gpu?.dispose();
    rmSync(root, { recursive: true, force: true });
  });

  const models = [...[...tinyVariants, ...ringLinearVariants].map((v) => ({ name: v.name, dir: join(root, v.name), write: () => writeTinyModel(join(root, v.name), v.config, v.opts), promptLen: v.name === 'base' ? 300 : 40 })), ...embeddedModels().map((m) => ({ name: `${m.name} (shipped)`, dir: m.dir, write: () => undefined, promptLen: 64 }))];

  for (const m of models)
    test(`${m.name}: prompt logits NMSE ≤ ${NMSE_MAX}, ${GREEDY_STEPS} greedy tokens identical`, (t) => {
      m.write();
      const hc = harness(m.dir, cpu);
      const hg = harness(m.dir, gpu);
      const V = hc.model.spec.config.vocab_size;
      const ids = prompt(m.promptLen, Math.min(V, 90), 11);
      const rc = runPrompt(hc, ids, 64);
      const rg = runPrompt(hg, ids, 64);
      // Per position (a routing flip shows as one bad row) and over the whole prompt's logits.
      let worst = 0, at = 0, num = 0, den = 0;
      for (let i = 0; i < ids.length; i++) {
        const s = compare(rg.logits[i], rc.logits[i]);
        if (s.nmse > worst) [worst, at] = [s.nmse, i];
        for (let j = 0; j < rc.logits[i].length; j++) {
          num += (rg.logits[i][j] - rc.logits[i][j]) ** 2;
          den += rc.logits[i][j] ** 2;
        }
      }
      const whole = num / den;
      t.diagnostic(`prompt of ${ids.length}: worst position NMSE ${worst.toExponential(2)} (position ${at}), whole prompt ${whole.toExponential(2)}`);
      assert.ok(worst <= NMSE_MAX, `${m.name} prompt position ${at}: ${fmtStats(compare(rg.logits[at], rc.logits[at]))}; whole prompt NMSE ${whole.toExponential(2)}`);
      const tc: number[] = [], tg: number[] = [];
      let lc = rc.logits[rc.logits.length - 1], lg = rg.logits[rg.logits.length - 1];
      let worstDecode = 0, minMargin = Infinity;
      for (let step = 0; step < GREEDY_STEPS; step++) {
        tc.push(argmax(lc));
        tg.push(argmax(lg));
        minMargin = Math.min(minMargin, margin(lc));
        assert.deepEqual(tg, tc, `${m.name}: greedy tokens diverge at step ${step} (cpu margin ${margin(lc).toExponential(2)})`);
        lc = runPrompt(hc, [tc[step]], 1, rc.seq).logits[0];
        lg = runPrompt(hg, [tg[step]], 1, rg.seq).logits[0];
        worstDecode = Math.max(worstDecode, compare(lg, lc).nmse);
      }
      t.diagnostic(`greedy ${GREEDY_STEPS} tokens identical; decode logits worst NMSE ${worstDecode.toExponential(2)}; smallest top-2 margin ${minMargin.toExponential(2)}`);
      assert.ok(worstDecode <= NMSE_MAX, `${m.name}: decode logits NMSE ${worstDecode}`);
    });

  test('GPU: chunked prefill (7, 64) equals one prefill (base, 300 tokens)', (t) => {
    const dir = join(root, 'base');
    const ids = prompt(300, 90, 6);
    const whole = runPrompt(harness(dir, gpu), ids, 300);
    for (const chunk of [7, 64]) {
      const chunked = runPrompt(harness(dir, gpu), ids, chunk);
      let worst = 0;
      for (let i = 0; i < ids.length; i++) worst = Math.max(worst, compare(chunked.logits[i], whole.logits[i]).nmse);
      t.diagnostic(`chunk ${chunk}: worst NMSE ${worst.toExponential(2)}`);
      assert.ok(worst <= NMSE_MAX, `chunk ${chunk}: NMSE ${worst}`);
    }
  });
});
