/**
 * MatmulInputs 'bf16' (backend.ts): the CPU backend rounds every weight matmul's input to bf16 the
 * way the float64 reference does (and the CUDA backend, tested in model.gpu.test.ts), and the mode
 * really changes the numbers. Rounding is discontinuous: where the CPU's f32 value and the
 * reference's f64 value of an input straddle a bf16 rounding boundary they round one bf16 ulp
 * apart (2^-8 relative), which moves a tiny model's logits by NMSE ~1e-6..2e-5 from there on, as
 * much as the mode itself moves some of them (f32 inputs: 1e-4..4e-1 away); so this holds the bf16
 * bound (1e-4) and reports the rest, and the rounding itself is checked exactly at op level
 * (ops/matmul/matmul.test.ts, ops/moe/moe.test.ts). Where no input lands on a boundary the two
 * agree to ~1e-15 (odd, port, softmax).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../backend/cpu/cpu-backend.js';
import { ReferenceBackend } from '../backend/reference/reference-backend.js';
import { compare } from '../util/compare.js';
import { Prng } from '../util/prng.js';
import { harness, RouteTape, runPrompt } from './test-harness.js';
import { writeTinyModel } from './tiny-checkpoint.js';
import { tinyVariants } from './tiny-configs.js';

const root = mkdtempSync(join(tmpdir(), 'bailing-matmul-inputs-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

/** Per-position NMSE bound, CPU vs reference, both rounding (one-ulp boundary flips, above). */
const NMSE_MAX = 1e-4;

for (const v of tinyVariants) {
  const dir = join(root, v.name);
  writeTinyModel(dir, v.config, v.opts);

  test(`${v.name}: CPU with bf16 matmul inputs = the float64 reference with the same rounding (routing imposed)`, (t) => {
    const bf = new CpuBackend({ threads: 2, matmulInputs: 'bf16' });
    const f32 = new CpuBackend({ threads: 2 });
    try {
      const rng = new Prng(17);
      const ids = Array.from({ length: 40 }, () => rng.int(90));
      const tape = new RouteTape();
      const ref = runPrompt(harness(dir, tape.record(new ReferenceBackend({ matmulInputs: 'bf16' }))), ids, 16, undefined, tape);
      const cpu = runPrompt(harness(dir, tape.replay(bf)), ids, 16, undefined, tape);
      for (const f of tape.flips) assert.ok(f.explained, `routing flip at position ${f.pos} not a near-tie: gap ${f.gap} vs noise ${f.noise}`);
      const plain = runPrompt(harness(dir, f32), ids, 16);
      let worst = 0, moved = 0;
      for (let i = 0; i < ids.length; i++) {
        const s = compare(cpu.logits[i], ref.logits[i]);
        worst = Math.max(worst, s.nmse);
        assert.ok(s.nmse <= NMSE_MAX, `position ${i}: NMSE ${s.nmse.toExponential(2)}`);
        moved = Math.max(moved, compare(plain.logits[i], ref.logits[i]).nmse);
      }
      t.diagnostic(`worst NMSE vs reference ${worst.toExponential(2)} (f32 inputs vs the bf16 reference: ${moved.toExponential(2)}); ${tape.flips.length} routing rows would have differed`);
    } finally {
      bf.dispose();
      f32.dispose();
    }
  });
}
