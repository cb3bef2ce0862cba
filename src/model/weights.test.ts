import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReferenceBackend } from '../backend/reference/reference-backend.js';
import { encodeTensor, writeSafetensors, type TensorToWrite } from '../loader/writer.js';
import { ModelLoadError, UnsupportedError } from '../util/errors.js';
import { buildSpec, parseConfig } from './config.js';
import { loadModelDir } from './load.js';
import { tinyConfig, tinyTensors, writeTinyModel } from './tiny-checkpoint.js';

const root = mkdtempSync(join(tmpdir(), 'bailing-weights-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
const be = new ReferenceBackend();

/** Write a model whose tensors are edited by `edit`, then try to load it. */
function loadEdited(name: string, edit: (t: TensorToWrite[]) => TensorToWrite[]): () => unknown {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const cfg = tinyConfig();
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  const { config, naming } = parseConfig(cfg);
  writeSafetensors(join(dir, 'model.safetensors'), edit(tinyTensors(buildSpec(config, naming))));
  return () => loadModelDir(dir, be);
}

function loadError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ModelLoadError || e instanceof UnsupportedError, `got ${String(e)}`);
    for (const p of patterns) assert.match((e as Error).message, p);
    return true;
  });
}

test('official and port names, single file and 3 shards, F32/BF16/F16 all load', () => {
  for (const [i, opts] of [{}, { portNames: true, shards: 3 }, { dtype: 'BF16' as const }, { dtype: 'F16' as const, shards: 2 }].entries()) {
    const dir = join(root, `ok${i}`);
    const over = opts.portNames ? { model_type: 'bailing2_5_moe', head_dim: 4 } : {};
    writeTinyModel(dir, { ...tinyConfig(over), ...(opts.portNames ? { moe_router_enable_expert_bias: undefined, score_function: undefined } : {}) }, opts);
    const m = loadModelDir(dir, be);
    assert.equal(m.weights.layers.length, 4);
    assert.equal(m.weights.layers[1].mixer.kind, 'mla');
    const ffn = m.weights.layers[1].ffn;
    assert.ok(ffn.kind === 'moe' && ffn.w13.shape[0] === 8 * 2 * 16 && ffn.shared !== null);
  }
});

test('stacked experts keep gate rows then up rows per expert', () => {
  const dir = join(root, 'stack');
  const spec = writeTinyModel(dir, tinyConfig(), { seed: 9 });
  const tensors = tinyTensors(spec, { seed: 9 });
  const m = loadModelDir(dir, be);
  const ffn = m.weights.layers[1].ffn;
  assert.ok(ffn.kind === 'moe');
  const w13 = be.downloadF64(ffn.w13);
  const up3 = tensors.find((t) => t.name === 'model.layers.1.mlp.experts.3.up_proj.weight')!;
  const want = new Float32Array(up3.data.buffer.slice(up3.data.byteOffset, up3.data.byteOffset + up3.data.byteLength));
  const C = 32, F = 16;
  for (let i = 0; i < F * C; i++) assert.equal(w13[(3 * 2 * F + F) * C + i], want[i]);
});

test('missing, unexpected, wrong-shape and wrong-dtype tensors are all listed in one error', () => {
  loadError(
    loadEdited('bad', (ts) => {
      const out = ts.filter((t) => t.name !== 'model.layers.2.attention.g_proj.weight');
      const di = out.findIndex((t) => t.name === 'model.layers.0.mlp.down_proj.weight');
      out[di] = { ...out[di], shape: [16, 96] };
      const qn = out.findIndex((t) => t.name === 'model.layers.0.attention.query_layernorm.weight');
      out[qn] = { name: out[qn].name, dtype: 'I32', shape: [8], data: encodeTensor('I32', [1, 2, 3, 4, 5, 6, 7, 8]) };
      out.push({ name: 'model.layers.0.attention.surprise', dtype: 'F32', shape: [2], data: encodeTensor('F32', [1, 2]) });
      return out;
    }),
    /4 problems/,
    /missing tensor model\.layers\.2\.attention\.g_proj\.weight/,
    /model\.layers\.0\.mlp\.down_proj\.weight: expected shape \[32, 48\], found \[16, 96\]/,
    /query_layernorm\.weight: unsupported dtype I32/,
    /unexpected tensor model\.layers\.0\.attention\.surprise/,
  );
});

test('MTP tensors are set aside and reported, not unexpected', () => {
  const load = loadEdited('mtp', (ts) => [
    ...ts,
    { name: 'model.layers.4.eh_proj.weight', dtype: 'F32', shape: [2, 2], data: encodeTensor('F32', [1, 2, 3, 4]) },
    { name: 'model.mtp.norm.weight', dtype: 'F32', shape: [2], data: encodeTensor('F32', [1, 2]) },
  ]);
  const m = load() as ReturnType<typeof loadModelDir>;
  assert.deepEqual([...m.weights.setAside].sort(), ['model.layers.4.eh_proj.weight', 'model.mtp.norm.weight']);
});

test('a truncated checkpoint and a corrupt header give a ModelLoadError naming the file', () => {
  const dir = join(root, 'trunc');
  writeTinyModel(dir, tinyConfig());
  const file = join(dir, 'model.safetensors');
  truncateSync(file, statSync(file).size - 100);
  loadError(() => loadModelDir(dir, be), /model\.safetensors/, /truncat/i);
  writeFileSync(file, Buffer.concat([Buffer.from([16, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"a": [1, 2, 3')]));
  loadError(() => loadModelDir(dir, be), /model\.safetensors/);
  loadError(() => loadModelDir(join(root, 'nope'), be), /config\.json/);
});

test('an FP8 tensor is refused with a clear message', () => {
  const dir = join(root, 'fp8');
  writeTinyModel(dir, tinyConfig());
  const file = join(dir, 'model.safetensors');
  const header = JSON.stringify({ 'x.weight': { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } });
  const n = Buffer.alloc(8);
  n.writeBigUInt64LE(BigInt(header.length));
  writeFileSync(file, Buffer.concat([n, Buffer.from(header), Buffer.from([1, 2])]));
  loadError(() => loadModelDir(dir, be), /FP8/);
});
