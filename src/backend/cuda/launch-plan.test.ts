/**
 * Which kernels and GEMMs the prefill launchers (MLA and lightning attention, the MoE grouped GEMMs)
 * and the MLA decode choose in each numeric mode and cache dtype, on a recording driver (recording-driver.ts: every kernel named must be declared in its .cu file, every
 * launch must pass one argument per signature letter). This runs in CI without a GPU; what the
 * chosen kernels compute is tested against the CPU on the GPU (ops.gpu.test.ts,
 * matmul-inputs.gpu.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LightningParams, MlaParams } from '../backend.js';
import { CUDA_R_16BF, CUDA_R_32F } from './driver.js';
import { cudaLightningPrefill, cudaMlaAttention, cudaMlaDecodeBatch, cudaMlaPrefill } from './ops-attention.js';
import { moeExpertsFast } from './ops-moe.js';
import { recordingContext } from './recording-driver.js';

const [H, Dn, Dr, Dv, L] = [4, 128, 64, 128, 512];
const p: MlaParams = { nHeads: H, qkNope: Dn, qkRope: Dr, vHead: Dv, kvLora: L, scale: (Dn + Dr) ** -0.5, blockSize: 16 };

interface MlaCase {
  what: string;
  bf16Inputs: boolean;
  mode: 'flash-split' | 'flash-bf16';
  cache: 'f32' | 'bf16';
  twin: boolean;
  /** Expected: the flash kernel's variant, the expansion GEMM's operand type, the gather kernel and its roundF argument. */
  variant: string;
  gemm: number;
  gather: string;
  roundF: number;
}

const mlaCases: MlaCase[] = [
  { what: 'f32 inputs (default)', bf16Inputs: false, mode: 'flash-split', cache: 'bf16', twin: true, variant: 'split', gemm: CUDA_R_32F, gather: 'mla_flash_gather_bf16', roundF: 0 },
  { what: 'bf16 inputs, kv_b with a twin, bf16 cache', bf16Inputs: true, mode: 'flash-split', cache: 'bf16', twin: true, variant: 'bf16ops', gemm: CUDA_R_16BF, gather: 'mla_flash_gather_bf16', roundF: 0 },
  { what: 'bf16 inputs, kv_b with a twin, f32 cache', bf16Inputs: true, mode: 'flash-split', cache: 'f32', twin: true, variant: 'bf16ops', gemm: CUDA_R_16BF, gather: 'mla_flash_gather', roundF: 0 },
  { what: 'bf16 inputs, f32 kv_b, f32 cache', bf16Inputs: true, mode: 'flash-split', cache: 'f32', twin: false, variant: 'bf16ops', gemm: CUDA_R_32F, gather: 'mla_flash_gather', roundF: 1 },
  { what: 'bf16 inputs, f32 kv_b, bf16 cache', bf16Inputs: true, mode: 'flash-split', cache: 'bf16', twin: false, variant: 'bf16ops', gemm: CUDA_R_32F, gather: 'mla_flash_gather_bf16', roundF: 0 },
  { what: 'flash-bf16 (measurement mode)', bf16Inputs: false, mode: 'flash-bf16', cache: 'bf16', twin: false, variant: 'bf16', gemm: CUDA_R_16BF, gather: 'mla_flash_gather_bf16', roundF: 0 },
];

for (const m of mlaCases)
  test(`MLA prefill launch plan: ${m.what} → mla_flash_128_64_128_${m.variant}, ${m.gemm === CUDA_R_16BF ? 'bf16' : 'f32'} expansion GEMM`, () => {
    const { c, d, t } = recordingContext();
    c.bf16Inputs = m.bf16Inputs;
    c.mlaPrefill = m.mode;
    const n = 100;
    const q = t('f32', [n, H * (Dn + Dr)]), out = t('f32', [n, H * Dv]), cache = t(m.cache, [128, L + Dr]), kvB = t('f32', [H * (Dn + Dv), L]);
    if (m.twin) c.addBf16Twin(kvB, t('bf16', [H * (Dn + Dv), L]));
    const blockTable = Int32Array.from({ length: 8 }, (_, b) => b);
    cudaMlaPrefill(c, out, q, cache, kvB, { blockTable, ctxStart: 0 }, p);
    const names = d.names();
    assert.equal(names.at(-1), `mla_flash_128_64_128_${m.variant}`, names.join(' '));
    const gather = d.launches.find((l) => l.name.startsWith('mla_flash_gather'))!;
    assert.equal(gather.name, m.gather);
    assert.equal(gather.args.at(-1), m.roundF, 'gather roundF');
    assert.equal(d.gemms.length, 1);
    assert.equal(d.gemms[0].abType, m.gemm);
    if (m.twin && m.bf16Inputs) assert.equal(d.gemms[0].A, c.bf16Twin(kvB), 'the expansion reads the twin');
    assert.equal(names.includes('mla_flash_tobf16'), m.variant === 'bf16', 'kv_b converted per call only in flash-bf16');
  });

for (const [D, mode, bf16Inputs, stateBf16, kernel, flags] of [
  [128, 'tc-split', false, false, 'lightning_chunked_d128_split', null],
  [128, 'tc-split', true, true, 'lightning_chunked_d128_bf16ops', null],
  [128, 'tc-bf16', false, false, 'lightning_chunked_d128_bf16', null],
  [128, 'recurrent', true, false, 'lightning_prefill_d128_f32', 2],
  [128, 'recurrent', false, true, 'lightning_prefill_d128_f32', 1],
  [16, 'tc-split', true, true, 'lightning_prefill_f32', 3],
  [16, 'tc-split', false, false, 'lightning_prefill_f32', 0],
] as const)
  test(`lightning prefill launch plan: D ${D}, ${mode}, ${bf16Inputs ? 'bf16' : 'f32'} inputs${stateBf16 ? ', bf16 state' : ''} → ${kernel}${flags === null ? '' : ` flags ${flags}`}`, () => {
    const { c, d, t } = recordingContext();
    c.bf16Inputs = bf16Inputs;
    c.lightningPrefill = mode;
    const n = 300, Hl = 4;
    const lp: LightningParams = { nHeads: Hl, headDim: D, decay: Float64Array.from({ length: Hl }, (_, h) => 0.1 * (h + 1)), scale: D ** -0.5, chunk: 64, vllmPrefillQuirk: false, stateBf16 };
    const [o, q, k, v] = [0, 1, 2, 3].map(() => t('f32', [n, Hl * D]));
    cudaLightningPrefill(c, o, q, k, v, t('f32', [Hl, D, D]), lp);
    assert.deepEqual(d.names(), [kernel]);
    if (flags !== null) assert.equal(d.launches[0].args.at(-1), flags, 'flags: 1 bf16 state, 2 bf16 q/k/v');
    else assert.ok(d.launches[0].smem <= 227 * 1024, `shared memory ${d.launches[0].smem}`);
  });

test('MoE prefill launch plan: one grouped GEMM pair per moeChunk tokens (wgmma kernels on sm_90), bf16 or split', () => {
  for (const [moeChunk, bf16Inputs, passes] of [[512, false, 2], [1024, false, 1], [1024, true, 1]] as const) {
    const { c, d, t } = recordingContext();
    c.moeChunk = moeChunk;
    if (bf16Inputs) {
      c.bf16Inputs = true;
      c.gemmSplit = c.moeSplit = false;
    }
    const [T, C, E, K, F] = [1024, 256, 16, 4, 128];
    const x = t('f32', [T, C]), out = t('f32', [T, C]), ids = t('i32', [T, K]), w = t('f32', [T, K]);
    c.moeGemmMinT = 512;
    assert.ok(moeExpertsFast(c, out, x, ids, w, t('bf16', [E * 2 * F, C]), t('bf16', [E * C, F]), F));
    const v = bf16Inputs ? 'bf16' : 'split';
    const names = d.names();
    assert.equal(names.filter((n) => n === `moe_gw_glu_${v}`).length, passes, names.join(' '));
    assert.equal(names.filter((n) => n === `moe_gw_down_${v}`).length, passes);
    for (const l of d.launches.filter((x) => x.name.startsWith('moe_gw'))) assert.ok(l.smem <= 227 * 1024, `${l.name}: ${l.smem} bytes of shared memory`);
  }
});

for (const [what, Hd, Ld, Drd, cache, mode, kernel, grid] of [
  ['flash heads, bf16 cache', 32, 512, 64, 'bf16', 'tc', 'mla_decode_tc_bf16', [64, 1, 1]],
  ['40 heads: two head groups', 40, 512, 64, 'bf16', 'tc', 'mla_decode_tc_bf16', [64, 2, 1]],
  ['f32 cache', 32, 512, 64, 'f32', 'tc', 'mla_attend_paged_f32', [32, 1, 32]],
  ['kv_lora_rank 64', 4, 64, 32, 'bf16', 'tc', 'mla_attend_paged_bf16', [4, 1, 32]],
  ['rope 16 (row width 528, not whole k32 steps)', 4, 512, 16, 'bf16', 'tc', 'mla_attend_paged_bf16', [4, 1, 32]],
  ['BAILING_MLA_DECODE=cuda-core', 32, 512, 64, 'bf16', 'cuda-core', 'mla_attend_paged_bf16', [32, 1, 32]],
] as const)
  test(`MLA decode launch plan: ${what} → ${kernel}, grid ${grid.join('×')}`, () => {
    const { c, d, t } = recordingContext();
    c.mlaDecode = mode;
    const pd: MlaParams = { nHeads: Hd, qkNope: 128, qkRope: Drd, vHead: 128, kvLora: Ld, scale: 0.07, blockSize: 16 };
    const q = t('f32', [1, Hd * (128 + Drd)]), out = t('f32', [1, Hd * 128]), kvB = t('f32', [Hd * 256, Ld]);
    cudaMlaAttention(c, out, q, t(cache, [4096, Ld + Drd]), kvB, { blockTable: Int32Array.from({ length: 256 }, (_, b) => b), ctxStart: 3000 }, pd);
    assert.deepEqual(d.names(), ['mla_absorbq_f32', kernel, 'mla_combine_f32', 'mla_outproj_f32']);
    const l = d.launches[1];
    assert.deepEqual(l.grid, grid);
    assert.ok(l.smem <= 227 * 1024, `shared memory ${l.smem}`);
  });

test('MLA batched decode launch plan: tensor-core kernel → one launch per kernel for all sequences (grid z = sequence), per-sequence meta at a common stride; f32 cache → each sequence alone', () => {
  const pd: MlaParams = { nHeads: 32, qkNope: 128, qkRope: 64, vHead: 128, kvLora: 512, scale: 0.07, blockSize: 16 };
  const ctxs = [5, 2000, 70]; // tables of 1, 126 and 5 blocks: the batch's stride is 1 + 128
  const seqs = ctxs.map((ctxStart, i) => ({ blockTable: Int32Array.from({ length: 130 }, (_, b) => 1000 * i + b), ctxStart }));
  for (const cache of ['bf16', 'f32'] as const) {
    const { c, d, t } = recordingContext();
    const n = seqs.length;
    const q = t('f32', [n, 32 * 192]), out = t('f32', [n, 32 * 128]), kvB = t('f32', [32 * 256, 512]);
    const staged: Int32Array[] = [];
    const hostArg = c.hostArg.bind(c);
    c.hostArg = (key, a, hint) => (staged.push(Int32Array.from(a as Int32Array)), hostArg(key, a, hint));
    cudaMlaDecodeBatch(c, out, q, t(cache, [200000, 576]), kvB, seqs, pd);
    if (cache === 'bf16') {
      assert.deepEqual(d.names(), ['mla_absorbq_f32', 'mla_decode_tc_bf16', 'mla_combine_f32', 'mla_outproj_f32']);
      const tc = d.launches[1];
      assert.deepEqual(tc.grid, [64, 1, n]);
      assert.deepEqual(d.launches[0].grid, [32, n, 4], 'absorption: heads × sequences × column blocks');
      const stride = 1 + 128;
      assert.equal(tc.args[5], stride, 'meta stride');
      const meta = staged[0];
      assert.equal(meta.length, n * stride);
      ctxs.forEach((ctx, i) => {
        const used = Math.ceil((ctx + 1) / 16);
        assert.equal(meta[i * stride], ctx, `sequence ${i}: ctxStart`);
        assert.deepEqual(Array.from(meta.subarray(i * stride + 1, i * stride + 1 + used)), Array.from(seqs[i].blockTable.subarray(0, used)), `sequence ${i}: block table`);
        assert.ok(meta.subarray(i * stride + 1 + used, (i + 1) * stride).every((v) => v === 0), `sequence ${i}: zero padding`);
      });
    } else assert.equal(d.names().filter((x) => x === 'mla_attend_paged_f32').length, n, 'f32 cache: one per-head kernel launch per sequence');
  }
});
