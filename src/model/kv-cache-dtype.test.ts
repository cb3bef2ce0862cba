/**
 * The bf16 paged cache (kvCacheDtype 'bf16') on the host backends: the CPU equals the float64
 * reference with the same rounding (logits, cache rows), every cached value is a bf16 value, and
 * the option really changes the numbers (bf16 logits differ from f32 ones). The CUDA backend stores
 * the same values in a bf16 tensor (model.gpu.test.ts compares it with this CPU configuration).
 *
 * Rounding to bf16 amplifies tiny differences the way routing does: where the CPU's f32 value and
 * the reference's float64 value straddle a rounding midpoint they round one bf16 step (2^-8
 * relative) apart. So the reference replays the CPU's roundings (RoundTape): where its own
 * rounding differs, the CPU's must be the other neighbour of a value within 1e-6 (of its row's
 * scale) of the midpoint (a near-tie, counted), and the reference then takes the CPU's value; everything else is compared strictly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { CpuBackend } from '../backend/cpu/cpu-backend.js';
import { ReferenceBackend } from '../backend/reference/reference-backend.js';
import { toF64, type Tensor } from '../tensor/tensor.js';
import { compare } from '../util/compare.js';
import { roundBf16 } from '../util/numeric.js';
import { harness, kvOf, latentsOf, randomPrompt, rowsClose, runPrompt, withOps, type Harness } from './test-harness.js';
import { writeTinyModel } from './tiny-checkpoint.js';
import { ringLinearVariants, tinyVariants } from './tiny-configs.js';

/** Records one backend's roundBf16 results; replays them on another (see the file comment). */
class RoundTape {
  readonly calls: Float64Array[] = [];
  nearTies = 0;
  values = 0;
  private next = 0;

  record(be: Backend): Backend {
    return withOps(be, {
      ...be.ops,
      roundBf16: (x: Tensor) => {
        be.ops.roundBf16(x);
        this.calls.push(toF64(x));
      },
    });
  }

  replay(be: Backend): Backend {
    this.next = 0;
    return withOps(be, {
      ...be.ops,
      roundBf16: (x: Tensor) => {
        const i = this.next++;
        const rec = this.calls[i];
        assert.ok(rec !== undefined && rec.length === x.numel, `RoundTape: call ${i} of ${x.numel} values does not match the recording`);
        const before = toF64(x);
        be.ops.roundBf16(x);
        const own = toF64(x);
        this.values += own.length;
        for (let j = 0; j < own.length; j++) {
          if (own[j] === rec[j]) continue;
          const mid = (own[j] + rec[j]) / 2, step = Math.abs(own[j] - rec[j]);
          // rec must be own's bf16 neighbour (no value strictly between them rounds to a third one)...
          assert.ok(roundBf16(mid + step / 4) === Math.max(own[j], rec[j]) && roundBf16(mid - step / 4) === Math.min(own[j], rec[j]), `RoundTape call ${i} value ${j}: ${rec[j]} vs own ${own[j]} are not bf16 neighbours`);
          // ...and the unrounded value must sit within 1e-6 of their midpoint, relative to its row's
          // scale (the CPU's f32 error is relative to the row's magnitudes, not to one small element).
          const w = x.rowSize, r0 = j - (j % w);
          let scale = 0;
          for (let e = r0; e < r0 + w; e++) scale = Math.max(scale, Math.abs(before[e]));
          assert.ok(Math.abs(before[j] - mid) <= 1e-6 * scale, `RoundTape call ${i} value ${j}: ${before[j]} rounds to ${own[j]}, the recording has ${rec[j]} (row scale ${scale}): not a near-tie`);
          this.nearTies++;
        }
        be.upload(x, rec);
      },
    });
  }
}


const root = mkdtempSync(join(tmpdir(), 'bailing-kv-dtype-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));



/** Every cached value of a sequence, per paged layer (MLA latents, then GQA k/v). */
const cacheOf = (h: Harness, seq: Parameters<typeof latentsOf>[1]): Float64Array[] => [...latentsOf(h, seq), ...kvOf(h, seq)];

for (const v of [tinyVariants[0], ...ringLinearVariants.slice(0, 1)]) {
  test(`${v.name}: kvCacheDtype bf16 — CPU equals the float64 reference with the same rounding; cache values are bf16; logits differ from the f32 cache`, (t) => {
    const dir = join(root, v.name);
    writeTinyModel(dir, v.config, v.opts);
    const cpu = new CpuBackend({ threads: 2 });
    try {
      const tape = new RoundTape();
      const hc = harness(dir, tape.record(cpu), 'default', 512, 16, undefined, 'bf16');
      const hr = harness(dir, tape.replay(new ReferenceBackend()), 'default', 512, 16, undefined, 'bf16');
      const hf = harness(dir, cpu, 'default', 512, 16, undefined, 'f32');
      assert.ok(hc.cache.roundsKvOnWrite && hr.cache.roundsKvOnWrite && !hf.cache.roundsKvOnWrite);
      const ids = randomPrompt(v.name === 'base' ? 200 : 40, 90, 5);
      // Prefill in chunks, then decode steps (both attention forms read the rounded rows).
      const feed = (h: Harness): ReturnType<typeof runPrompt> => {
        const r = runPrompt(h, ids.slice(0, -8), 64);
        const decodes = ids.slice(-8).map((id) => runPrompt(h, [id], 1, r.seq).logits[0]);
        return { logits: [...r.logits, ...decodes], seq: r.seq };
      };
      const c = feed(hc), r = feed(hr), f = feed(hf);
      assert.ok(tape.calls.length > 0, `${v.name}: the bf16 cache rounded nothing`);
      const logitErr = rowsClose(c.logits, r.logits, 1e-5, `${v.name} bf16 logits`);
      const cached = cacheOf(hc, c.seq);
      assert.ok(cached.length > 0, `${v.name}: no paged layer`);
      // With the near-ties imposed both caches hold the very same bf16 values.
      assert.deepEqual(cached, cacheOf(hr, r.seq), `${v.name}: bf16 cache rows differ`);
      for (const [l, rows] of cached.entries())
        for (let i = 0; i < rows.length; i++) assert.equal(rows[i], roundBf16(rows[i]), `${v.name} paged layer ${l}: value ${rows[i]} at ${i} is not bf16`);
      // The option does something: f32 cache values are not all bf16, and the logits move well
      // beyond the CPU/reference agreement.
      assert.ok(cacheOf(hf, f.seq).some((rows) => rows.some((x) => x !== roundBf16(x))), `${v.name}: the f32 cache holds only bf16 values`);
      let moved = 0;
      for (let i = 0; i < c.logits.length; i++) moved = Math.max(moved, compare(c.logits[i], f.logits[i], 1).maxRel);
      assert.ok(moved > 100 * Math.max(logitErr, 1e-9), `${v.name}: bf16 vs f32 cache logits differ by only ${moved.toExponential(2)} (cpu vs reference ${logitErr.toExponential(2)})`);
      t.diagnostic(`bf16 cache: cpu vs reference worst row ${logitErr.toExponential(2)} (${tape.nearTies} near-tie roundings of ${tape.values} taken from the cpu); bf16 vs f32 cache worst row ${moved.toExponential(2)}`);
    } finally {
      cpu.dispose();
    }
  });
}
