import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../backend/cpu/cpu-backend.js';
import { ReferenceBackend, referenceOps } from '../backend/reference/reference-backend.js';
import type { Ops, RouterParams } from '../backend/backend.js';
import { toF64, type Tensor } from '../tensor/tensor.js';
import { compare, fmtStats } from '../util/compare.js';
import { sigmoid } from '../util/numeric.js';
import { forwardMixed, harness, latentsOf, randomPrompt, rowsClose, runPrompt, stateOf, type Harness } from './test-harness.js';
import { writeTinyModel } from './tiny-checkpoint.js';
import { tinyVariants } from './tiny-configs.js';

const root = mkdtempSync(join(tmpdir(), 'bailing-forward-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));


/**
 * Smallest routing margin seen: the gap between the K-th and (K+1)-th selection score. A
 * CPU/reference mismatch at a position is only excusable when this is ~1e-6 or below.
 */
class MarginProbe extends ReferenceBackend {
  minMargin = Infinity;
  override readonly ops: Ops = {
    ...referenceOps,
    moeRoute: (ids: Tensor, weights: Tensor, logits: Tensor, bias: Tensor | null, p: RouterParams) => {
      const [T, E] = logits.shape;
      const l = toF64(logits);
      const b = bias ? toF64(bias) : null;
      for (let t = 0; t < T; t++) {
        const row = Array.from({ length: E }, (_, e) => (p.scoreFunction === 'sigmoid' ? sigmoid(l[t * E + e]) : l[t * E + e]) + (b ? b[e] : 0));
        row.sort((x, y) => y - x);
        if (E > p.topK) this.minMargin = Math.min(this.minMargin, row[p.topK - 1] - row[p.topK]);
      }
      referenceOps.moeRoute(ids, weights, logits, bias, p);
    },
  };
}


for (const v of tinyVariants) {
  const dir = join(root, v.name);
  writeTinyModel(dir, v.config, v.opts);

  test(`${v.name}: CPU f32 forward matches the float64 reference (logits at every position, final states)`, () => {
    const cpu = new CpuBackend({ threads: 2 });
    try {
      const ref = new MarginProbe();
      const hr = harness(dir, ref);
      const hc = harness(dir, cpu);
      const ids = randomPrompt(v.name === 'base' ? 300 : 40, 90, 11);
      const r = runPrompt(hr, ids, 64);
      const c = runPrompt(hc, ids, 64);
      rowsClose(c.logits, r.logits, 1e-5, `${v.name} logits`, ` (smallest routing margin ${ref.minMargin.toExponential(2)})`);
      rowsClose(stateOf(hc, c.seq), stateOf(hr, r.seq), 1e-5, `${v.name} lightning states`);
      rowsClose(latentsOf(hc, c.seq), latentsOf(hr, r.seq), 1e-5, `${v.name} MLA latents`);
      assert.ok(ref.minMargin > 1e-6 || v.config.num_experts === undefined, `routing margin ${ref.minMargin}`);
    } finally {
      cpu.dispose();
    }
  });
}

test('prefill(T) equals T single-token decodes (logits and final caches)', () => {
  const be = new CpuBackend({ threads: 2 });
  try {
    const dir = join(root, 'base');
    const ids = randomPrompt(70, 90, 5);
    const a = harness(dir, be);
    const whole = runPrompt(a, ids, ids.length);
    const b = harness(dir, be);
    const steps = runPrompt(b, ids, 1);
    rowsClose(steps.logits, whole.logits, 1e-5, 'decode vs prefill logits');
    rowsClose(stateOf(b, steps.seq), stateOf(a, whole.seq), 1e-5, 'decode vs prefill states');
    rowsClose(latentsOf(b, steps.seq), latentsOf(a, whole.seq), 1e-5, 'decode vs prefill latents');
  } finally {
    be.dispose();
  }
});

for (const chunk of [7, 64, 256])
  test(`chunked prefill in chunks of ${chunk} equals one prefill (300 tokens)`, () => {
    const be = new CpuBackend({ threads: 2 });
    try {
      const dir = join(root, 'base');
      const ids = randomPrompt(300, 90, 6);
      const whole = runPrompt(harness(dir, be), ids, 300);
      const h = harness(dir, be);
      const chunked = runPrompt(h, ids, chunk);
      rowsClose(chunked.logits, whole.logits, 1e-5, `chunk ${chunk}`);
    } finally {
      be.dispose();
    }
  });

test('a batch of N sequences (mixed prefill and decode) equals N runs of one', () => {
  const be = new CpuBackend({ threads: 2 });
  try {
    const dir = join(root, 'base');
    const prompts = [randomPrompt(5, 90, 1), randomPrompt(17, 90, 2), randomPrompt(1, 90, 3)];
    const alone = prompts.map((p) => runPrompt(harness(dir, be), p, p.length).logits);
    // Batched: sequence 0 first gets its first 4 tokens alone, then all three share one step
    // (sequence 0 decodes its 5th token while 1 and 2 prefill).
    const h: Harness = harness(dir, be);
    const s0 = runPrompt(h, prompts[0].slice(0, 4), 4);
    const seqs = [s0.seq, h.cache.allocSeq()!, h.cache.allocSeq()!];
    const parts = [prompts[0].slice(4), prompts[1], prompts[2]];
    const got = forwardMixed(h, seqs, parts, [4, 0, 0]);
    for (let i = 0; i < 3; i++) {
      const want = alone[i][alone[i].length - 1];
      const s = compare(got[i], want, 1);
      assert.ok(s.maxRel < 1e-5, `sequence ${i}: ${fmtStats(s)}`);
    }
  } finally {
    be.dispose();
  }
});
