import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../../backend/cpu/cpu-backend.js';
import { ReferenceBackend } from '../../backend/reference/reference-backend.js';
import { compare, fmtStats } from '../../util/compare.js';
import { Prng } from '../../util/prng.js';
import { toF64 } from '../../tensor/tensor.js';
import { pair, randn } from '../test-util.js';
import { refMatmul } from './matmul.js';

const shapes: [number, number, number][] = [
  [1, 1, 1],
  [1, 33, 17],
  [3, 64, 128],
  [5, 257, 96],
  [9, 512, 300], // large enough to use the worker pool
];

for (const wDtype of ['f32', 'bf16'] as const)
  for (const withBias of [false, true])
    test(`matmul cpu vs reference, w ${wDtype}, bias ${withBias}`, () => {
      const be = new CpuBackend({ threads: 2 });
      try {
        const rng = new Prng(7);
        for (const [T, N, K] of shapes) {
          const x = pair([T, K], randn(rng, T * K));
          const w = pair([N, K], randn(rng, N * K, 0.1), wDtype);
          const b = withBias ? pair([N], randn(rng, N)) : null;
          const out = pair([T, N], new Float64Array(T * N));
          refMatmul(out.ref, x.ref, w.ref, b ? b.ref : null);
          be.ops.matmul(out.cpu, x.cpu, w.cpu, b ? b.cpu : null);
          const s = compare(toF64(out.cpu), toF64(out.ref));
          assert.ok(s.maxRel < 2e-5, `T=${T} N=${N} K=${K}: ${fmtStats(s)}`);
        }
      } finally {
        be.dispose();
      }
    });

test('matmul with bf16 inputs (MatmulInputs): cpu vs reference round x the same way, and the rounding shows', () => {
  const be = new CpuBackend({ threads: 2, matmulInputs: 'bf16' });
  const ref = new ReferenceBackend({ matmulInputs: 'bf16' });
  try {
    const rng = new Prng(9);
    for (const [T, N, K] of shapes) {
      const x = pair([T, K], randn(rng, T * K));
      const w = pair([N, K], randn(rng, N * K, 0.1), 'bf16');
      const out = pair([T, N], new Float64Array(T * N)), plain = pair([T, N], new Float64Array(T * N));
      ref.ops.matmul(out.ref, x.ref, w.ref, null);
      be.ops.matmul(out.cpu, x.cpu, w.cpu, null);
      refMatmul(plain.ref, x.ref, w.ref, null);
      const s = compare(toF64(out.cpu), toF64(out.ref));
      assert.ok(s.maxRel < 2e-5, `T=${T} N=${N} K=${K}: ${fmtStats(s)}`);
      // Rounding K inputs to 8 bits moves a dot product by ~2^-9·sqrt(K)/sqrt(K) relative: far above f32.
      if (K > 1) assert.ok(compare(toF64(out.ref), toF64(plain.ref)).maxRel > 1e-4, `T=${T} N=${N} K=${K}: bf16 inputs changed nothing`);
    }
  } finally {
    be.dispose();
  }
});

test('matmul on a row-range view of the weight and output', () => {
  const be = new CpuBackend({ threads: 2 });
  try {
    const rng = new Prng(3);
    const x = pair([4, 64], randn(rng, 256));
    const w = pair([96, 64], randn(rng, 96 * 64));
    const full = pair([4, 96], new Float64Array(384));
    refMatmul(full.ref, x.ref, w.ref, null);
    const part = pair([4, 32], new Float64Array(128));
    be.ops.matmul(part.cpu, x.cpu, w.cpu.rows(32, 32), null);
    const want = toF64(full.ref);
    const got = toF64(part.cpu);
    for (let t = 0; t < 4; t++) for (let n = 0; n < 32; n++) assert.ok(Math.abs(got[t * 32 + n] - want[t * 96 + 32 + n]) < 1e-4);
  } finally {
    be.dispose();
  }
});
