/**
 * Tensor-parallel benchmark (issue 6): the Ling-2.6-flash geometry (dummy bf16 weights made on
 * each GPU) cut to --layers, over --tp GPUs, one process per GPU. Measures the all-reduce of one
 * decode step's [B, C] f32 residual, decode tokens/s at batch 1/16/64 (context --ctx), prefill of
 * --prefill tokens, and each one's ratio to its floor. Decode floor: the bytes this rank reads per
 * step over the D2D copy bandwidth measured on GPU 0 in this run, plus the measured all-reduce time
 * of the step's 2·L + 1 all-reduces. Prefill floor: the prefill's FLOPs / tp over the cuBLASLt
 * bf16 GEMM rate measured here, plus its measured all-reduce time. Decode runs eagerly and as CUDA
 * graphs with the collectives captured inside (Model.step, on every rank). --matmul-inputs as the
 * engine's (default bf16 on CUDA; f32: f32-faithful split GEMMs).
 *   node dist/bench/tp-bench.js --tp 2 --layers 16 [--prefill N] [--matmul-inputs bf16|f32] [--out FILE]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { TpGroup } from '../src/api/tp.js';
import { HybridCache } from '../src/cache/hybrid-cache.js';
import { cacheGeometry } from '../src/model/cache-spec.js';
import { buildSpec, parseConfig } from '../src/model/config.js';
import { dummySource } from '../src/model/dummy-source.js';
import { Model } from '../src/model/forward.js';
import { lingFlashConfig } from '../src/model/known-configs.js';
import { loadWeights } from '../src/model/weights.js';
import { eventTimer } from './event-timer.js';
import { prefillFlops } from './geometry.js';

const { values } = parseArgs({ options: { tp: { type: 'string', default: '2' }, layers: { type: 'string', default: '16' }, ctx: { type: 'string', default: '512' }, prefill: { type: 'string', default: '8192' }, out: { type: 'string' }, 'matmul-inputs': { type: 'string', default: 'bf16' } } });
const tp = Number(values.tp), L = Number(values.layers), ctx = Number(values.ctx), P = Number(values.prefill);
const raw = lingFlashConfig(L);
const maxSeqs = 64, maxBatchTokens = P, blockSize = 16;
const open = { maxSeqs, maxBatchTokens, blockSize, maxModelLen: Math.max(P, ctx) + 64, cacheTokens: maxSeqs * (ctx + 64) + P };
const log = (s: string): void => void process.stdout.write(s + '\n');

const t0 = performance.now();
const matmulInputs = values['matmul-inputs'] === 'f32' ? 'f32' : 'bf16';
const group = await TpGroup.start(tp, { config: raw, dummySeed: 1, matmulInputs }, open);
const { config, naming } = parseConfig(raw);
const spec = buildSpec(config, naming, 'default', { rank: 0, size: tp });
const be = group.be;
const weights = loadWeights(spec, dummySource(spec), be);
const model = new Model(be, spec, weights, maxBatchTokens, Math.min(maxSeqs, maxBatchTokens), blockSize, group);
const cache = new HybridCache(be, cacheGeometry(spec), { maxSeqs, numBlocks: Math.ceil(open.cacheTokens / blockSize), blockSize });
be.sync();
const mem = be.c.driver.memInfo();
log(`tp ${tp}, ${L} layers, ${matmulInputs} matmul inputs: loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s; GPU 0 uses ${((mem.total - mem.free) / 1e9).toFixed(1)} GB`);

const C = config.hidden_size;
// Ceilings measured on GPU 0 in this run: D2D copy (bytes read + written) and a bf16 cuBLASLt GEMM.
const c0 = be.c, d0 = c0.driver;
const timeIt = eventTimer(d0, c0.stream);
const GiB = 1 << 30;
const src = c0.mem.alloc(GiB, 'bench'), dst = c0.mem.alloc(GiB, 'bench');
d0.memsetD8(src.ptr, 1, GiB, c0.stream);
const BW = (2 * GiB) / (timeIt(() => d0.dtod(dst.ptr, src.ptr, GiB, c0.stream), 10) * 1e-3);
c0.mem.free(src);
c0.mem.free(dst);
const G = 8192, A = c0.mem.alloc(G * G * 2, 'bench'), Bm = c0.mem.alloc(G * G * 2, 'bench'), D = c0.mem.alloc(G * G * 4, 'bench');
const fill = c0.kernel('src/backend/cuda/fill.cu', 'fill_uniform_bf16', 'pluff');
for (const [i, t] of [A, Bm].entries()) c0.launch(fill, [8192, 1, 1], 256, 0, [t.ptr, G * G, BigInt(77 + i), 0, 1]);
const gemmFlops = (2 * G ** 3) / (timeIt(() => void c0.gemm('bf16', D.ptr, A.ptr, Bm.ptr, G, G, G), 10) * 1e-3);
for (const t of [A, Bm, D]) c0.mem.free(t);
// Datasheet HBM bandwidth, for reference only.
const sheetBW = /H200/.test(be.device.name) ? 4.8e12 : 3.35e12;
log(`device ${be.device.name}; measured on GPU 0: copy ${(BW / 1e9).toFixed(0)} GB/s (datasheet ${(sheetBW / 1e12).toFixed(2)} TB/s), bf16 GEMM 8192³ ${(gemmFlops / 1e12).toFixed(0)} TFLOP/s`);

function decode(B: number, steps: number, profile = false, graphs = false): { ms: number } {
  const seqs = Array.from({ length: B }, () => cache.allocSeq()!);
  const warm = 3; // graphs: eager warm-up, capture, first replay
  // Prefill every sequence to ctx in chunks that fit maxBatchTokens.
  for (const s of seqs) {
    cache.reserve(s, ctx + steps + warm);
    for (let at = 0; at < ctx; at += maxBatchTokens) {
      const n = Math.min(maxBatchTokens, ctx - at);
      model.forward({ ids: new Int32Array(n).fill(7), positions: Int32Array.from({ length: n }, (_, j) => at + j), seqs: [{ seq: s, start: 0, len: n, ctxStart: at }], sampleRows: Int32Array.of(n - 1) }, cache);
    }
  }
  const step = (i: number): void => {
    const batch = { ids: new Int32Array(B).fill(11), positions: new Int32Array(B).fill(ctx + i), seqs: seqs.map((seq, b) => ({ seq, start: b, len: 1, ctxStart: ctx + i })), sampleRows: Int32Array.from({ length: B }, (_, b) => b) };
    if (graphs) model.step(batch, cache);
    else model.forward(batch, cache);
  };
  for (let i = 0; i < warm; i++) step(i);
  if (profile) be.c.startProfile();
  const s = performance.now();
  for (let i = warm; i < warm + steps; i++) step(i);
  const ms = (performance.now() - s) / steps;
  for (const q of seqs) cache.free(q);
  return { ms };
}

// Bytes one rank reads per decode step of batch B: its shard of every non-expert matrix, the
// experts the batch activates (≤ min(E, B·K) per MoE layer) and the lm_head piece.
function floorBytes(B: number): number {
  const c = config, H = c.num_attention_heads / tp, D = c.head_dim, bf = 2;
  let bytes = (c.vocab_size / tp) * C * bf;
  for (const l of spec.layers) {
    if (l.mixer === 'lightning') bytes += (4 * H * D * C + C * H * D) * bf;
    else bytes += ((c.q_lora_rank ?? 0) * C + (c.kv_lora_rank + 64) * C + H * 192 * (c.q_lora_rank ?? C) + H * 256 * c.kv_lora_rank + C * H * 128) * bf;
    if (l.ffn === 'dense') bytes += (3 * C * (c.intermediate_size ?? 0) / tp) * bf;
    else bytes += (Math.min(c.num_experts, B * c.num_experts_per_tok) * 3 * C * c.moe_intermediate_size / tp + 3 * C * spec.sharedFfn / tp + c.num_experts * C * 2) * bf;
  }
  return bytes;
}

// All-reduce time inside a decode step, measured with the per-kernel profile of rank 0.
function profiled(B: number): Map<string, { ms: number; launches: number }> {
  decode(B, 5, true);
  return be.c.stopProfile();
}

const results: Record<string, unknown>[] = [];
const gs = be.graphs!.stats;
for (const B of [1, 16, 64]) {
  const { ms } = decode(B, 20);
  const r0 = gs.replays, d0 = gs.direct, dms0 = gs.directMs;
  const { ms: gms } = decode(B, 20, false, true);
  const replays = gs.replays - r0, direct = gs.direct - d0, hostMs = direct ? (gs.directMs - dms0) / direct : 0;
  const prof = profiled(B);
  const ar = prof.get('nccl_all_reduce');
  const arMsPerStep = ar ? ar.ms / 5 : 0; // 5 profiled eager decode steps (events add a little per launch)
  const floorMs = (floorBytes(B) / BW) * 1000 + arMsPerStep;
  const sheetFloorMs = (floorBytes(B) / sheetBW) * 1000 + arMsPerStep;
  results.push({ batch: B, ms_per_step: ms, tokens_per_s: (B * 1000) / ms, graph_ms_per_step: gms, graph_tokens_per_s: (B * 1000) / gms, graph_replays: replays, graph_direct: direct, graph_host_ms: hostMs, floor_ms: floorMs, ratio_to_floor: floorMs / ms, graph_ratio_to_floor: floorMs / gms, datasheet_floor_ms: sheetFloorMs, graph_ratio_to_datasheet_floor: sheetFloorMs / gms, all_reduce_ms_per_step: arMsPerStep, bytes_per_rank: floorBytes(B) });
  const pct = (t: number): string => `${((100 * floorMs) / t).toFixed(0)}%`;
  log(`decode batch ${B}: eager ${ms.toFixed(2)} ms/step (${((B * 1000) / ms).toFixed(1)} tok/s, ${pct(ms)}), graph ${gms.toFixed(2)} ms/step (${((B * 1000) / gms).toFixed(1)} tok/s, ${pct(gms)}; ${replays} replays, ${direct} direct, host ${hostMs.toFixed(3)} ms); floor ${floorMs.toFixed(2)} ms (bytes/${(BW / 1e12).toFixed(2)}TB/s measured + all-reduce ${arMsPerStep.toFixed(3)} ms)`);
}
{
  const s0 = cache.allocSeq()!;
  cache.reserve(s0, P);
  const run = (): number => {
    const s = performance.now();
    model.forward({ ids: new Int32Array(P).fill(5), positions: Int32Array.from({ length: P }, (_, j) => j), seqs: [{ seq: s0, start: 0, len: P, ctxStart: 0 }], sampleRows: Int32Array.of(P - 1) }, cache);
    return performance.now() - s;
  };
  run();
  const ms = run();
  be.c.startProfile();
  run();
  const ar = be.c.stopProfile().get('nccl_all_reduce');
  const arMs = ar ? ar.ms : 0;
  // FLOPs of the whole model / tp: replicated parts (router, MLA down-projections) make a rank's
  // real share a little larger, so this floor is a little low (the ratio a little pessimistic).
  const flops = prefillFlops(buildSpec(config, naming), P) / tp;
  const floorMs = (flops / gemmFlops) * 1000 + arMs;
  log(`prefill ${P}: ${ms.toFixed(0)} ms, ${((P * 1000) / ms).toFixed(0)} tok/s; floor ${floorMs.toFixed(1)} ms (${(flops / 1e12).toFixed(2)} TFLOP per rank at ${(gemmFlops / 1e12).toFixed(0)} TFLOP/s + all-reduce ${arMs.toFixed(1)} ms) = ${((100 * floorMs) / ms).toFixed(1)}% of floor`);
  results.push({ prefill: P, ms, tokens_per_s: (P * 1000) / ms, flops_per_rank: flops, all_reduce_ms: arMs, floor_ms: floorMs, ratio_to_floor: floorMs / ms });
}
if (values.out) writeFileSync(values.out, JSON.stringify({ tp, layers: L, ctx, device: be.device.name, copy_bytes_per_s: BW, gemm_flops_per_s: gemmFlops, results, date: new Date().toISOString() }, null, 2));
await group.shutdown();
process.exit(0);
