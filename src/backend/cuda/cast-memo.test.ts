/**
 * The host-side choices of cudaMatmul, on a recording driver (no GPU: the real kernels and GEMMs
 * are checked against the CPU in ops.gpu.test.ts and matmul-inputs.gpu.test.ts). Checked here,
 * in CI: consecutive GEMMs of one activation convert it to bf16 once (CudaContext.castMemo); any
 * launch, GEMM, host write or overlapping output in between forces a new conversion; a staging
 * pass ('fill', the CUDA-graph argument refresh) makes the same choices as the eager step it
 * stands for; with bf16 matmul inputs an f32 weight that has a bf16 twin runs a bf16 GEMM on the
 * twin's address (a view of it at the matching offset), and one without a twin an f32 GEMM.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../../tensor/tensor.js';
import { CUDA_R_16BF, CUDA_R_32F } from './driver.js';
import { cudaMatmul } from './ops-basic.js';
import { recordingContext } from './recording-driver.js';

function setup(bf16Inputs: boolean): ReturnType<typeof recordingContext> & { d: { casts(): number } } {
  const r = recordingContext();
  if (bf16Inputs) {
    r.c.bf16Inputs = true;
    r.c.gemmSplit = false;
  }
  const d = Object.assign(r.d, { casts: (): number => r.d.names().filter((n) => n.startsWith('matmul_cast')).length });
  return { ...r, d };
}

const T = 40, K = 64, N = 32;

for (const bf16Inputs of [false, true])
  test(`cudaMatmul (${bf16Inputs ? 'bf16 inputs: one GEMM' : 'f32 inputs: hi + lo GEMMs'}): one conversion for consecutive GEMMs of one x; any write in between forces another`, () => {
    const { c, d, t } = setup(bf16Inputs);
    const x = t('f32', [T, K]), w1 = t('bf16', [N, K]), w2 = t('bf16', [N, K]);
    const outs = Array.from({ length: 4 }, () => t('f32', [T, N]));
    const perMatmul = bf16Inputs ? 1 : 2;
    cudaMatmul(c, outs[0], x, w1, null);
    cudaMatmul(c, outs[1], x, w2, null);
    cudaMatmul(c, outs[2], x, w1, null);
    assert.equal(d.casts(), 1, 'three GEMMs of one x: one conversion');
    assert.equal(d.gemms.length, 3 * perMatmul);
    // Another x, then back: each is converted again (the scratch holds one conversion).
    const y = t('f32', [T, K]);
    cudaMatmul(c, outs[0], y, w1, null);
    cudaMatmul(c, outs[1], x, w1, null);
    assert.equal(d.casts(), 3);
    // A write from outside launch / gemm (an upload), a kernel launch, a GEMM elsewhere.
    for (const write of [(): void => c.noteWrite(), (): void => c.launch(c.kernel('src/ops/elementwise/elementwise.cu', 'elementwise_add_f32', 'pppl'), [1, 1, 1], 32, 0, [0n, 0n, 0n, 0]), (): void => void c.gemm('f32', 0n, 0n, 0n, 9, 9, 9)]) {
      const before = d.casts();
      write();
      cudaMatmul(c, outs[2], x, w2, null);
      cudaMatmul(c, outs[3], x, w2, null);
      assert.equal(d.casts() - before, 1, 'a write between two GEMMs of x: converted again, once');
    }
    // A bias launches after the GEMM: the conversion stays valid (the bias kernel writes out only).
    const bias = t('f32', [N]);
    c.noteWrite();
    const before = d.casts();
    cudaMatmul(c, outs[0], x, w1, bias);
    cudaMatmul(c, outs[1], x, w1, null);
    assert.equal(d.casts() - before, 1, 'bias: x converted once for both');
    // An output overlapping x (written in place): the next GEMM of x converts it again.
    const xo = new Tensor('f32', [T, N], x.storage);
    const w3 = t('bf16', [N, K]);
    cudaMatmul(c, xo, x, w3, null);
    const again = d.casts();
    cudaMatmul(c, outs[0], x, w1, null);
    assert.equal(d.casts() - again, 1, 'out overlapping x: converted again');
  });

test('cudaMatmul: a CUDA-graph capture (record) and its argument refresh (fill) make the same conversion choices as an eager step', () => {
  const { c, d, t } = setup(true);
  const x = t('f32', [T, K]), h = t('f32', [T, K]), w = t('bf16', [N, K]);
  const o = t('f32', [T, N]);
  const add = c.kernel('src/ops/elementwise/elementwise.cu', 'elementwise_add_f32', 'pppl');
  // A step starts with a launch (the embedding), as every model step does.
  const step = (): { writes: number; launches: string[] } => {
    const w0 = c.writes, l0 = d.names().length;
    c.launch(add, [1, 1, 1], 32, 0, [0n, 0n, 0n, 0]);
    cudaMatmul(c, o, x, w, null);
    cudaMatmul(c, o, x, w, null);
    c.launch(add, [1, 1, 1], 32, 0, [0n, 0n, 0n, 0]);
    cudaMatmul(c, o, h, w, null);
    cudaMatmul(c, o, x, w, null);
    return { writes: c.writes - w0, launches: d.names().slice(l0) };
  };
  step(); // plans made and kernels loaded, as a warm-up step does
  const eager = step();
  c.beginStaging('record');
  const record = step();
  c.endStaging();
  c.beginStaging('fill');
  const fill = step();
  c.endStaging();
  assert.deepEqual(record, eager, 'the capture pass chose differently from the eager step');
  assert.equal(fill.writes, eager.writes, 'the fill pass counted different writes');
  assert.deepEqual(fill.launches, [], 'the fill pass launched nothing');
  assert.equal(eager.launches.filter((n) => n.startsWith('matmul_cast')).length, 3, 'x, h, then x again after h');
});

test('cudaMatmul with bf16 inputs: an f32 weight with a bf16 twin runs a bf16 GEMM on the twin (views at their offset); one without, an f32 GEMM', () => {
  const { c, d, t } = setup(true);
  const x = t('f32', [T, K]), o = t('f32', [T, N]);
  const router = t('f32', [2 * N, K]), twin = t('bf16', [2 * N, K]);
  c.addBf16Twin(router, twin);
  cudaMatmul(c, o, x, router.rows(N, N), null);
  assert.equal(d.gemms.at(-1)!.abType, CUDA_R_16BF);
  assert.equal(d.gemms.at(-1)!.A, c.ptr(twin) + BigInt(N * K * 2), 'the twin of rows N.. starts N·K bf16 values in');
  const plain = t('f32', [N, K]);
  assert.equal(c.bf16Twin(plain), null);
  cudaMatmul(c, o, x, plain, null);
  assert.equal(d.gemms.at(-1)!.abType, CUDA_R_32F);
  assert.equal(d.gemms.at(-1)!.A, c.ptr(plain));
  assert.ok(d.names().includes('matmul_round_f32'), 'the f32 GEMM reads a rounded copy of x');
  // Without bf16 inputs the twin is not used: the f32 weight's GEMM stays f32.
  c.bf16Inputs = false;
  cudaMatmul(c, o, x, router.rows(0, N), null);
  assert.equal(d.gemms.at(-1)!.abType, CUDA_R_32F);
});

test('cudaMatmul GEMV (T ≤ 8) with bf16 inputs: x rounded once into a copy for consecutive GEMVs at T ≥ 2, in the kernel at T = 1; f32 inputs never round', () => {
  for (const [bf16Inputs, Tg, rounds, rx] of [[true, 4, 1, 0], [true, 8, 1, 0], [true, 1, 0, 1], [false, 4, 0, 0]] as const) {
    const { c, d, t } = setup(bf16Inputs);
    c.gemvMaxT = 8; // steps of 2..8 rows on the GEMV kernels (with bf16 inputs they go to cuBLASLt by default)
    const x = t('f32', [Tg, K]), w1 = t('bf16', [N, K]), w2 = t('bf16', [N, K]), o1 = t('f32', [Tg, N]), o2 = t('f32', [Tg, N]);
    cudaMatmul(c, o1, x, w1, null);
    cudaMatmul(c, o2, x, w2, null);
    const what = `${bf16Inputs ? 'bf16' : 'f32'} inputs, T = ${Tg}`;
    assert.equal(d.names().filter((n) => n === 'matmul_round_f32').length, rounds, `${what}: ${d.names().join(' ')}`);
    const gemvs = d.launches.filter((l) => l.name === `matmul_gemv2_bf16_t${Tg}`);
    assert.equal(gemvs.length, 2, what);
    for (const l of gemvs) assert.equal(l.args.at(-1), rx, `${what}: the kernel's own rounding flag`);
    if (rounds > 0) {
      assert.equal(gemvs[0].args[1], gemvs[1].args[1], `${what}: both GEMVs read the one rounded copy`);
      assert.notEqual(gemvs[0].args[1], c.ptr(x), `${what}: the GEMVs read the copy, not x`);
      // A write in between: rounded again.
      c.noteWrite();
      cudaMatmul(c, o1, x, w1, null);
      assert.equal(d.names().filter((n) => n === 'matmul_round_f32').length, 2, `${what}: a write between two GEMVs of x`);
    }
  }
  // The recording driver finds GEMV2(T)'s token-pasted names, and only the instantiated ones.
  assert.throws(() => setup(true).c.kernel('src/ops/matmul/matmul.cu', 'matmul_gemv2_bf16_t9', 'ppppiiii'), /not declared/);
});

test('cudaMatmul picks GEMV or cuBLASLt by CudaContext.gemvRows(): 1 row with bf16 inputs, up to 8 with f32 inputs (exact f32 products), BAILING_GEMV_MAX_T / gemvMaxT overriding', () => {
  for (const [bf16Inputs, override, Tg, gemv] of [[true, null, 1, true], [true, null, 2, false], [false, null, 8, true], [false, null, 9, false], [true, 8, 4, true], [false, 1, 4, false]] as const) {
    const { c, d, t } = setup(bf16Inputs);
    c.gemvMaxT = override;
    cudaMatmul(c, t('f32', [Tg, N]), t('f32', [Tg, K]), t('bf16', [N, K]), null);
    const what = `${bf16Inputs ? 'bf16' : 'f32'} inputs, gemvMaxT ${override}, T = ${Tg}`;
    assert.equal(d.names().includes(`matmul_gemv2_bf16_t${Tg}`), gemv, `${what}: ${d.names().join(' ')}`);
    assert.equal(d.gemms.length > 0, !gemv, `${what}: cuBLASLt GEMMs ${d.gemms.length}`);
  }
});
