/**
 * RouteTape (test-harness.ts): recording on one backend and replaying on another imposes the
 * recorded experts, finds every row where the replaying backend chose differently, and tells a
 * near-tie (gap within the measured score noise) from a real disagreement. A replay may cut the
 * recorded positions into other steps.
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

const root = mkdtempSync(join(tmpdir(), 'bailing-route-tape-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const rng = new Prng(5);
const ids = Array.from({ length: 40 }, () => rng.int(90));

for (const name of ['base', 'odd']) {
  const v = tinyVariants.find((x) => x.name === name)!;
  const dir = join(root, v.name);
  writeTinyModel(dir, v.config, v.opts);

  test(`${name}: replaying the reference's routing on the CPU changes nothing and finds no flip; a tampered row is found, unexplained, and moves only its own and later positions`, () => {
    const cpu = new CpuBackend({ threads: 2 });
    try {
      const tape = new RouteTape();
      const ref = runPrompt(harness(dir, tape.record(new ReferenceBackend())), ids, 16, undefined, tape);
      assert.ok(tape.calls.length > 0, 'no moeRoute call was recorded');
      const free = runPrompt(harness(dir, cpu), ids, 16);
      const forced = runPrompt(harness(dir, tape.replay(cpu)), ids, 16, undefined, tape);
      const clean = tape.flips.map((f) => ({ ...f }));
      assert.deepEqual(clean, [], 'flips between the CPU and the reference');
      for (let i = 0; i < ids.length; i++) {
        assert.ok(compare(forced.logits[i], free.logits[i]).nmse === 0, `position ${i}: forced routing changed the CPU's own result`);
        assert.ok(compare(forced.logits[i], ref.logits[i]).nmse < 1e-10, `position ${i}: CPU vs reference`);
      }

      // Swap one expert of row 5 of the second recorded call for one it did not choose.
      const call = tape.calls[1], K = call.K, row = 5;
      const chosen = new Set(call.ids.subarray(row * K, (row + 1) * K));
      const other = Array.from({ length: call.E }, (_, e) => e).find((e) => !chosen.has(e))!;
      call.ids[row * K] = other;
      const bad = runPrompt(harness(dir, tape.replay(cpu)), ids, 16, undefined, tape);
      const f = tape.firstFlip();
      // Later rows may flip too, downstream of the tampered one (their inputs moved).
      assert.ok(f !== null && f.call === 1 && f.pos === call.pos0 + row, `expected the first flip at call 1 row ${row}, found ${JSON.stringify(tape.flips)}`);
      assert.ok(tape.flips.every((x) => x.pos >= f.pos), 'a flip before the tampered row');
      assert.equal(f.explained, false, `a forced wrong expert passed as a near-tie: ${JSON.stringify(f)}`);
      for (let i = 0; i < f.pos; i++) assert.ok(compare(bad.logits[i], free.logits[i]).nmse === 0, `position ${i} before the flip moved`);
      assert.ok(compare(bad.logits[f.pos], free.logits[f.pos]).nmse > 1e-6, 'the tampered position did not move');
    } finally {
      cpu.dispose();
    }
  });

  test(`${name}: a recording of one whole prefill replays onto chunks of 5 and 40 positions (rows found by layer and position); an unrecorded position is refused by name`, () => {
    const cpu = new CpuBackend({ threads: 2 });
    try {
      const tape = new RouteTape();
      const whole = runPrompt(harness(dir, tape.record(cpu)), ids, ids.length, undefined, tape);
      for (const chunk of [5, 40]) {
        const cut = runPrompt(harness(dir, tape.replay(cpu)), ids, chunk, undefined, tape);
        assert.deepEqual(tape.flips.map((f) => ({ ...f })), [], `chunk ${chunk}: flips against the CPU's own whole-prefill routing`);
        for (let i = 0; i < ids.length; i++) assert.ok(compare(cut.logits[i], whole.logits[i]).nmse < 1e-10, `chunk ${chunk}, position ${i}`);
      }
      assert.throws(() => runPrompt(harness(dir, tape.replay(cpu)), [...ids, 7], 64, undefined, tape), /MoE layer 0 at position 40 .*was not recorded/);
    } finally {
      cpu.dispose();
    }
  });
}
