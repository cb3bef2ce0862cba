/**
 * CUDA decode benchmark at batch 1 on the Ling-2.6-flash 8-layer cut (issue 4's geometry) with
 * dummy weights made on the GPU (`--load-format dummy`). Measures, in one run: the device copy
 * bandwidth (the decode floor's denominator), decode tokens/s after a prompt of --ctx tokens, the
 * ratio to the byte floor, and a per-kernel breakdown from events around every launch.
 *
 *   node dist/bench/cuda-decode-bench.js [--ctx 1024] [--steps 30] [--out bench/results/cuda-decode.json]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { HybridCache } from '../src/cache/hybrid-cache.js';
import { cacheGeometry } from '../src/model/cache-spec.js';
import { buildSpec, parseConfig, type ModelSpec } from '../src/model/config.js';
import { Model } from '../src/model/forward.js';
import { tinyConfig } from '../src/model/tiny-checkpoint.js';
import { loadWeights, type TensorSource } from '../src/model/weights.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const log = (s: string): void => void process.stdout.write(s + '\n');

/** Ling-2.6-flash cut to 8 layers (7 lightning + 1 MLA, first layer dense), per issue 4. */
function flashCutConfig(): Record<string, unknown> {
  return tinyConfig({
    vocab_size: 157184, hidden_size: 4096, intermediate_size: 9216, num_hidden_layers: 8, num_attention_heads: 32, head_dim: 128,
    layer_group_size: 8, group_norm_size: 8, first_k_dense_replace: 1, num_experts: 256, num_experts_per_tok: 8, n_group: 8, topk_group: 4,
    moe_intermediate_size: 1024, moe_shared_expert_intermediate_size: 1024, num_shared_experts: 1, rope_theta: 1e6, max_position_embeddings: 131072,
    q_lora_rank: 1536, kv_lora_rank: 512, qk_nope_head_dim: 128, qk_rope_head_dim: 64, v_head_dim: 128, eos_token_id: 156892, pad_token_id: 156892,
  });
}

/** Official tensor names and shapes of a spec, with no data (dummy weights ignore the bytes). */
function dummySource(spec: ModelSpec): TensorSource {
  const c = spec.config;
  const C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim, HD = H * D, E = c.num_experts, F = c.moe_intermediate_size;
  const shapes = new Map<string, number[]>();
  const mlp = (p: string, w: number): void => {
    shapes.set(p + 'gate_proj.weight', [w, C]).set(p + 'up_proj.weight', [w, C]).set(p + 'down_proj.weight', [C, w]);
  };
  shapes.set('model.word_embeddings.weight', [c.vocab_size, C]).set('model.norm.weight', [C]).set('lm_head.weight', [c.vocab_size, C]);
  for (const l of spec.layers) {
    const p = `model.layers.${l.index}.`, a = p + 'attention.';
    shapes.set(p + 'input_layernorm.weight', [C]).set(p + 'post_attention_layernorm.weight', [C]);
    if (l.mixer === 'lightning') {
      shapes.set(a + 'query_key_value.weight', [3 * HD, C]).set(a + 'query_layernorm.weight', [D]).set(a + 'key_layernorm.weight', [D]);
      shapes.set(a + 'g_proj.weight', [HD, C]).set(a + 'g_norm.weight', [HD]).set(a + 'dense.weight', [C, HD]);
    } else {
      const ql = c.q_lora_rank ?? 0, L = c.kv_lora_rank, Dr = c.qk_rope_head_dim;
      shapes.set(a + 'q_a_proj.weight', [ql, C]).set(a + 'q_a_layernorm.weight', [ql]).set(a + 'q_b_proj.weight', [H * (c.qk_nope_head_dim + Dr), ql]);
      shapes.set(a + 'kv_a_proj_with_mqa.weight', [L + Dr, C]).set(a + 'kv_a_layernorm.weight', [L]);
      shapes.set(a + 'kv_b_proj.weight', [H * (c.qk_nope_head_dim + c.v_head_dim), L]).set(a + 'dense.weight', [C, H * c.v_head_dim]);
    }
    if (l.ffn === 'dense') mlp(p + 'mlp.', c.intermediate_size ?? 0);
    else {
      shapes.set(p + 'mlp.gate.weight', [E, C]).set(p + 'mlp.gate.expert_bias', [E]);
      for (let e = 0; e < E; e++) mlp(`${p}mlp.experts.${e}.`, F);
      mlp(p + 'mlp.shared_experts.', spec.sharedFfn);
    }
  }
  const empty = new Uint8Array(0);
  return { names: () => [...shapes.keys()], info: (n) => ({ dtype: 'BF16', shape: shapes.get(n)! }), read: () => empty, location: '(dummy weights)' };
}

/** Bytes a batch-1 decode step must move in this backend's storage (weights touched, state, latent cache). */
function decodeBytes(spec: ModelSpec, ctx: number): { total: number; bf16Ideal: number } {
  const c = spec.config;
  const C = c.hidden_size, H = c.num_attention_heads, D = c.head_dim, HD = H * D;
  let bf16 = 0, f32 = 0; // parameter counts by storage
  for (const l of spec.layers) {
    if (l.mixer === 'lightning') {
      bf16 += 5 * HD * C;
      f32 += 2 * H * D * D; // state read + write
    } else {
      const ql = c.q_lora_rank ?? 0, L = c.kv_lora_rank, Dr = c.qk_rope_head_dim;
      bf16 += ql * C + H * (c.qk_nope_head_dim + Dr) * ql + (L + Dr) * C + C * H * c.v_head_dim;
      f32 += H * (c.qk_nope_head_dim + c.v_head_dim) * L + ctx * (L + Dr); // kvB, latent cache
    }
    if (l.ffn === 'dense') bf16 += 3 * (c.intermediate_size ?? 0) * C;
    else {
      f32 += c.num_experts * C; // router
      bf16 += 3 * C * (c.num_experts_per_tok * c.moe_intermediate_size + spec.sharedFfn);
    }
  }
  bf16 += c.vocab_size * C; // lm_head (the embedding reads one row)
  return { total: 2 * bf16 + 4 * f32, bf16Ideal: 2 * (bf16 + f32) };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

function main(): void {
  const { values } = parseArgs({ options: { ctx: { type: 'string', default: '1024' }, steps: { type: 'string', default: '30' }, out: { type: 'string', default: 'bench/results/cuda-decode.json' } } });
  const ctx = Number(values.ctx), steps = Number(values.steps);
  const be = new CudaBackend({ dummyWeights: { seed: 1 } });
  const c = be.c, d = c.driver;
  log(`device: ${be.device.name} (sm_${be.device.major}${be.device.minor}, ${be.device.sms} SMs, ${(be.device.totalBytes / 2 ** 30).toFixed(1)} GiB)`);

  // Copy bandwidth: 1 GiB device-to-device, bytes read + written.
  const n = 1 << 30;
  const src = c.mem.alloc(n, 'bench'), dst = c.mem.alloc(n, 'bench');
  d.memsetD8(src.ptr, 1, n, c.stream);
  const e0 = d.eventCreate(), e1 = d.eventCreate();
  const copyMs: number[] = [];
  for (let i = 0; i < 12; i++) {
    d.eventRecord(e0, c.stream);
    d.dtod(dst.ptr, src.ptr, n, c.stream);
    d.eventRecord(e1, c.stream);
    d.eventSync(e1);
    if (i >= 2) copyMs.push(d.eventElapsed(e0, e1));
  }
  const copyGBs = (2 * n) / (median(copyMs) * 1e-3) / 1e9;
  c.mem.free(src);
  c.mem.free(dst);
  log(`copy bandwidth (1 GiB D2D, read+write): ${copyGBs.toFixed(0)} GB/s`);

  const { config, naming } = parseConfig(flashCutConfig());
  const spec = buildSpec(config, naming);
  let t0 = performance.now();
  const weights = loadWeights(spec, dummySource(spec), be);
  be.sync();
  const usage = c.mem.usage();
  log(`dummy weights: ${((usage.get('weights') ?? 0) / 1e9).toFixed(2)} GB in ${(performance.now() - t0).toFixed(0)} ms`);

  const chunk = 256, blockSize = 16;
  const model = new Model(be, spec, weights, chunk, 1, blockSize);
  const cache = new HybridCache(be, cacheGeometry(spec), { maxSeqs: 1, numBlocks: Math.ceil((ctx + steps + 8) / blockSize), blockSize });
  const seq = cache.allocSeq()!;
  cache.reserve(seq, ctx + steps + 8);
  const step = (ids: number[], pos0: number): Float32Array => {
    const T = ids.length;
    const logits = model.forward({ ids: Int32Array.from(ids), positions: Int32Array.from({ length: T }, (_, j) => pos0 + j), seqs: [{ seq, start: 0, len: T, ctxStart: pos0 }], sampleRows: Int32Array.of(T - 1) }, cache);
    return be.download(logits);
  };
  t0 = performance.now();
  for (let p = 0; p < ctx; p += chunk) step(Array.from({ length: Math.min(chunk, ctx - p) }, (_, j) => (p + j) % 1000), p);
  log(`prefill of ${ctx} tokens (chunks of ${chunk}, correctness-first kernels): ${(performance.now() - t0).toFixed(0)} ms; kernels compiled ${c.kernels.stats.compiled} (${c.kernels.stats.compileMs.toFixed(0)} ms), cache hits ${c.kernels.stats.cacheHits}`);

  let pos = ctx, tok = 1;
  const wall: number[] = [], dev: number[] = [];
  for (let i = 0; i < steps; i++) {
    const w0 = performance.now();
    d.eventRecord(e0, c.stream);
    const l = step([tok], pos++);
    d.eventRecord(e1, c.stream);
    d.eventSync(e1);
    wall.push(performance.now() - w0);
    dev.push(d.eventElapsed(e0, e1));
    tok = 0;
    for (let v = 1; v < l.length; v++) if (l[v] > l[tok]) tok = v;
  }
  const wallMs = median(wall.slice(3)), devMs = median(dev.slice(3));
  const bytes = decodeBytes(spec, ctx);
  const floorMs = (bytes.total / (copyGBs * 1e9)) * 1e3;
  const idealFloorMs = (bytes.bf16Ideal / (copyGBs * 1e9)) * 1e3;

  // Per-kernel breakdown of a few decode steps.
  c.startProfile();
  const profSteps = 5;
  for (let i = 0; i < profSteps; i++) step([tok], pos++);
  const prof = [...c.stopProfile().entries()].map(([name, v]) => ({ name, msPerStep: v.ms / profSteps, launchesPerStep: v.launches / profSteps })).sort((a, b) => b.msPerStep - a.msPerStep);
  const kernelMs = prof.reduce((a, p) => a + p.msPerStep, 0);

  log(`\ndecode, batch 1, context ${ctx}: ${wallMs.toFixed(2)} ms/token wall (${(1000 / wallMs).toFixed(1)} tok/s), ${devMs.toFixed(2)} ms between stream events`);
  log(`byte floor: ${(bytes.total / 1e9).toFixed(2)} GB in this storage → ${floorMs.toFixed(2)} ms (${((floorMs / wallMs) * 100).toFixed(1)}% of floor reached); all-bf16 floor ${(bytes.bf16Ideal / 1e9).toFixed(2)} GB → ${idealFloorMs.toFixed(2)} ms`);
  log(`per-kernel (events around each launch, ${profSteps} steps; sum ${kernelMs.toFixed(2)} ms/step of ${wallMs.toFixed(2)} wall):`);
  log('| kernel | ms/step | launches/step | share |');
  log('| --- | --- | --- | --- |');
  for (const p of prof) log(`| ${p.name} | ${p.msPerStep.toFixed(3)} | ${p.launchesPerStep} | ${((p.msPerStep / kernelMs) * 100).toFixed(1)}% |`);
  const result = { device: be.device, ctx, steps, copyGBs, wallMsPerToken: wallMs, deviceMsPerToken: devMs, tokensPerSecond: 1000 / wallMs, floorBytes: bytes.total, floorMs, bf16FloorBytes: bytes.bf16Ideal, bf16FloorMs: idealFloorMs, kernels: prof, date: new Date().toISOString() };
  const outPath = resolve(ROOT, values.out!);
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, JSON.stringify(result, null, 2) + '\n');
  log(`wrote ${outPath}`);
  d.eventDestroy(e0);
  d.eventDestroy(e1);
  be.dispose();
}

main();
