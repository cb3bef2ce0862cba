import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync, readFileSync, unlinkSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelLoadError, UnsupportedError } from '../util/errors.js';
import { roundBf16, f16ToF32, f32ToF16 } from '../util/numeric.js';
import { Prng } from '../util/prng.js';
import { Checkpoint } from './checkpoint.js';
import { SafetensorsFile } from './safetensors.js';
import { decodeTensor, encodeTensor, writeSafetensors, writeShardedCheckpoint, type TensorToWrite, type WritableDtype } from './writer.js';

/** Run body with a fresh temp dir, removed afterwards. */
function withTmp(body: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'bailing-loader-'));
  try {
    body(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A file with an arbitrary header (for corrupt cases the writer refuses to make). */
function rawFile(path: string, header: unknown, dataBytes: number, headerLen?: number): void {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerLen ?? json.length));
  writeFileSync(path, Buffer.concat([len, json, Buffer.alloc(dataBytes)]));
}

/** Expected f32 values after a round trip through dtype. */
function rounded(dtype: WritableDtype, v: readonly number[]): number[] {
  if (dtype === 'BF16') return v.map(roundBf16);
  if (dtype === 'F16') return v.map((x) => f16ToF32(f32ToF16(x)));
  return [...Float32Array.from(v)];
}

function sampleTensors(seed: number): { t: TensorToWrite; values: number[] }[] {
  const rng = new Prng(seed);
  const specs: [string, WritableDtype, number[]][] = [
    ['model.embed.weight', 'F32', [5, 3]],
    ['model.layers.0.w', 'BF16', [4, 7]],
    ['model.layers.0.b', 'F16', [7]],
    ['model.layers.1.w', 'BF16', [3, 2, 2]],
    ['model.norm.weight', 'F32', [1]],
    ['scalar', 'F16', []],
    ['empty', 'F32', [0, 4]],
  ];
  return specs.map(([name, dtype, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = Array.from({ length: n }, () => rng.normal());
    return { t: { name, dtype, shape, data: encodeTensor(dtype, values) }, values };
  });
}

function checkAll(read: (name: string) => Uint8Array, info: (name: string) => { dtype: string; shape: readonly number[] }, items: ReturnType<typeof sampleTensors>): void {
  for (const { t, values } of items) {
    const i = info(t.name);
    assert.equal(i.dtype, t.dtype, t.name);
    assert.deepEqual(i.shape, t.shape, t.name);
    const bytes = read(t.name);
    assert.deepEqual(bytes, t.data, t.name);
    assert.deepEqual([...decodeTensor(t.dtype, bytes)], rounded(t.dtype, values), t.name);
  }
}

/** Assert fn throws cls and the message contains every needle. */
function throwsWith(fn: () => unknown, cls: new (...a: never[]) => Error, ...needles: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    for (const n of needles) assert.ok(e.message.includes(n), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(n)}`);
    return true;
  });
}

test('encodeTensor rounds to nearest even and keeps I32 exact', () => {
  assert.deepEqual([...decodeTensor('BF16', encodeTensor('BF16', [1 + 2 ** -8, 1 + 3 * 2 ** -8]))], [1, 1 + 2 ** -6]);
  assert.deepEqual([...decodeTensor('F16', encodeTensor('F16', [1 + 2 ** -11, 65504, 1e6]))], [1, 65504, Infinity]);
  assert.deepEqual([...new Int32Array(encodeTensor('I32', [-3, 0, 2 ** 31 - 1]).buffer)], [-3, 0, 2 ** 31 - 1]);
});

test('single file round trip with metadata, header padded to 8', () =>
  withTmp((dir) => {
    const items = sampleTensors(1);
    const path = join(dir, 'model.safetensors');
    writeSafetensors(path, items.map((x) => x.t), { format: 'pt', note: 'hi' });
    const n = Number(readFileSync(path).readBigUInt64LE(0));
    assert.equal(n % 8, 0);

    const f = SafetensorsFile.open(path);
    try {
      assert.deepEqual(f.metadata, { format: 'pt', note: 'hi' });
      assert.deepEqual(f.names(), items.map((x) => x.t.name));
      assert.equal(f.info('model.embed.weight').byteOffset, 8 + n);
      checkAll((k) => f.read(k), (k) => f.info(k), items);
      // Ranges: into a caller buffer, and a fresh one.
      const dst = new Uint8Array(64);
      const w = items[1].t;
      assert.deepEqual(f.readRange(w.name, 6, 10, dst), w.data.subarray(6, 16));
      assert.deepEqual(f.readRange(w.name, 0, w.data.length), w.data);
      throwsWith(() => f.readRange(w.name, 50, 20), ModelLoadError, path, w.name, '56');
      throwsWith(() => f.info('nope'), ModelLoadError, path, 'nope');
    } finally {
      f.close();
    }

    const ck = Checkpoint.open(dir);
    try {
      assert.equal(ck.files.length, 1);
      assert.ok(ck.has('scalar') && !ck.has('nope'));
      assert.equal(ck.info('scalar').file, path);
      checkAll((k) => ck.read(k), (k) => ck.info(k), items);
      throwsWith(() => ck.read('nope'), ModelLoadError, dir, 'nope');
    } finally {
      ck.close();
    }
  }));

test('sharded checkpoint (3 shards) round trip', () =>
  withTmp((dir) => {
    const items = sampleTensors(2);
    writeShardedCheckpoint(dir, items.map((x) => x.t), 3);
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    assert.equal(index.metadata.total_size, items.reduce((a, x) => a + x.t.data.length, 0));
    assert.deepEqual(new Set(Object.values(index.weight_map)), new Set([1, 2, 3].map((i) => `model-0000${i}-of-00003.safetensors`)));
    const ck = Checkpoint.open(dir);
    try {
      assert.equal(ck.files.length, 3);
      assert.deepEqual(ck.names(), items.map((x) => x.t.name));
      assert.ok(ck.info('empty').file.endsWith('model-00003-of-00003.safetensors'));
      checkAll((k) => ck.read(k), (k) => ck.info(k), items);
      assert.deepEqual(ck.readRange('model.layers.0.w', 2, 4), items[1].t.data.subarray(2, 6));
    } finally {
      ck.close();
    }
  }));

test('loose *.safetensors files: all used, repeated names refused', () =>
  withTmp((dir) => {
    const items = sampleTensors(3);
    writeSafetensors(join(dir, 'a.safetensors'), items.slice(0, 3).map((x) => x.t));
    writeSafetensors(join(dir, 'b.safetensors'), items.slice(3).map((x) => x.t));
    const ck = Checkpoint.open(dir);
    checkAll((k) => ck.read(k), (k) => ck.info(k), items);
    ck.close();
    writeSafetensors(join(dir, 'c.safetensors'), [items[0].t]);
    throwsWith(() => Checkpoint.open(dir), ModelLoadError, 'c.safetensors', 'a.safetensors', items[0].t.name);
  }));

test('corrupt files are refused with the file and the thing named', () =>
  withTmp((dir) => {
    const p = join(dir, 'x.safetensors');
    const okEntry = { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] };

    writeFileSync(p, Buffer.alloc(0));
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '0 bytes', 'at least 8');
    writeFileSync(p, Buffer.alloc(7));
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '7 bytes', 'at least 8');

    rawFile(p, { w: okEntry }, 16, 1000);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, 'header length 1000');
    rawFile(p, { w: okEntry }, 16, 2 ** 40);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, 'header length 1099511627776');

    rawFile(p, '{"w": {"dtype": "F32",', 16);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, 'not valid UTF-8 JSON');
    rawFile(p, '[1, 2]', 0);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, 'JSON object', 'an array');

    // Data cut short: the header promises 16 bytes, the file holds 10.
    rawFile(p, { w: okEntry }, 10);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '[w]', 'expected end <= 10', 'truncated');
    rawFile(p, { w: { ...okEntry, data_offsets: [8, 24] } }, 16);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '[w]', '[8, 24]', 'expected end <= 16');
    rawFile(p, { w: { ...okEntry, data_offsets: [12, 4] } }, 16);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '[w]', 'begin is after end');
    rawFile(p, { w: { ...okEntry, data_offsets: [0, 12] } }, 16);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '[w]', 'span 12 bytes', 'needs 16');
    rawFile(p, { w: { ...okEntry, shape: [2, -1] } }, 16);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '[w]', 'shape');
    rawFile(p, { w: okEntry, v: { dtype: 'F16', shape: [4], data_offsets: [8, 16] } }, 16);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '[v]', 'overlap', "'w'");
    rawFile(p, { w: { ...okEntry, dtype: 'Q4_K' } }, 16);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '[w]', "unknown dtype 'Q4_K'", 'BF16');
    rawFile(p, { 'layers.0.experts.w': { dtype: 'F8_E4M3', shape: [4, 4], data_offsets: [0, 16] } }, 16);
    throwsWith(() => SafetensorsFile.open(p), UnsupportedError, p, 'layers.0.experts.w', 'F8_E4M3', 'FP8 checkpoints are not supported yet');
    rawFile(p, { w: { ...okEntry, dtype: 'F8_E8M0', shape: [16] } }, 16);
    throwsWith(() => SafetensorsFile.open(p), UnsupportedError, p, 'FP8');
    rawFile(p, { __metadata__: { n: 3 }, w: okEntry }, 16);
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '__metadata__', 'strings');

    // Integer and bool dtypes parse; their bytes read as-is.
    rawFile(p, { ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] }, m: { dtype: 'BOOL', shape: [3], data_offsets: [16, 19] } }, 19);
    const f = SafetensorsFile.open(p);
    assert.equal(f.read('m').length, 3);
    assert.equal(f.info('ids').dtype, 'I64');
    f.close();
  }));

test('a file truncated after open is a ModelLoadError, not a hang', () =>
  withTmp((dir) => {
    const p = join(dir, 'model.safetensors');
    const data = encodeTensor('F32', [1, 2, 3, 4, 5, 6, 7, 8]);
    writeSafetensors(p, [{ name: 'w', dtype: 'F32', shape: [8], data }]);
    const f = SafetensorsFile.open(p);
    try {
      truncateSync(p, statSync(p).size - 5);
      throwsWith(() => f.read('w'), ModelLoadError, p, '[w]', 'truncated', 'expected 32 bytes');
    } finally {
      f.close();
    }
    throwsWith(() => SafetensorsFile.open(p), ModelLoadError, p, '[w]', 'truncated');
  }));

test('checkpoint directory errors', () =>
  withTmp((dir) => {
    throwsWith(() => Checkpoint.open(dir), ModelLoadError, `no safetensors files in ${dir}`);
    throwsWith(() => Checkpoint.open(join(dir, 'absent')), ModelLoadError, join(dir, 'absent'), 'does not exist');

    const items = sampleTensors(4).map((x) => x.t);
    writeShardedCheckpoint(dir, items, 3);
    const indexPath = join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(indexPath, 'utf8')) as { weight_map: Record<string, string> };

    // An index naming tensors its shard does not hold.
    const ghost = { ...index, weight_map: { ...index.weight_map, 'ghost.a': 'model-00002-of-00003.safetensors', 'ghost.b': 'model-00002-of-00003.safetensors' } };
    writeFileSync(indexPath, JSON.stringify(ghost));
    throwsWith(() => Checkpoint.open(dir), ModelLoadError, 'model-00002-of-00003.safetensors', 'ghost.a', 'ghost.b', '2 tensor(s)');

    // A shard file that does not exist.
    writeFileSync(indexPath, JSON.stringify(index));
    unlinkSync(join(dir, 'model-00003-of-00003.safetensors'));
    throwsWith(() => Checkpoint.open(dir), ModelLoadError, 'model-00003-of-00003.safetensors', 'does not exist');

    writeFileSync(indexPath, JSON.stringify({ ...index, weight_map: { w: '../elsewhere.safetensors' } }));
    throwsWith(() => Checkpoint.open(dir), ModelLoadError, indexPath, '[w]', 'inside the checkpoint directory');
    writeFileSync(indexPath, '{"metadata": {}');
    throwsWith(() => Checkpoint.open(dir), ModelLoadError, indexPath, 'not valid JSON');
    writeFileSync(indexPath, '{"metadata": {}}');
    throwsWith(() => Checkpoint.open(dir), ModelLoadError, indexPath, 'weight_map');
  }));

test('a tensor over 2 GiB is refused by read() and streamed by readRange() (sparse file)', () =>
  withTmp((dir) => {
    const p = join(dir, 'big.safetensors');
    const big = 2 ** 31 + 16;
    rawFile(p, { big: { dtype: 'U8', shape: [big], data_offsets: [0, big] } }, 0);
    truncateSync(p, statSync(p).size + big); // sparse: no disk or memory used
    const f = SafetensorsFile.open(p);
    try {
      throwsWith(() => f.read('big'), ModelLoadError, p, '[big]', 'readRange');
      const dst = new Uint8Array(32).fill(7);
      assert.deepEqual(f.readRange('big', big - 16, 16, dst), new Uint8Array(16));
      assert.equal(dst[16], 7);
    } finally {
      f.close();
    }
  }));
