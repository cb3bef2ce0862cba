/**
 * safetensors writer: tests of other modules use it to build tiny random checkpoints, and the
 * tools use it to save fixtures. Layout matches what HF `safetensors` writes.
 */
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { assert } from '../util/assert.js';
import { safetensorsDtypeBytes } from './safetensors.js';
import type { WritableDtype } from './codec.js';

export { encodeTensor, decodeTensor, type WritableDtype } from './codec.js';

export interface TensorToWrite {
  readonly name: string;
  readonly dtype: WritableDtype;
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

/** Write one file; tensors are laid out contiguously in the given order. */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    assert(t.name !== '__metadata__' && !Object.hasOwn(header, t.name), () => `writeSafetensors: duplicate or reserved name '${t.name}'`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const bytes = numel * safetensorsDtypeBytes[t.dtype];
    assert(t.data.byteLength === bytes, () => `writeSafetensors: '${t.name}' ${t.dtype} [${t.shape.join(', ')}] needs ${bytes} bytes, got ${t.data.byteLength}`);
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  // Pad with spaces so the data section starts 8-byte aligned (as the reference writer does).
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));

  const fd = openSync(path, 'w');
  try {
    writeAll(fd, len);
    writeAll(fd, json);
    for (const t of tensors) writeAll(fd, t.data);
  } finally {
    closeSync(fd);
  }
}

/** writeSync may write less than asked; also keep each call under the 2 GiB I/O limit. */
function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.byteLength) done += writeSync(fd, data, done, Math.min(1 << 30, data.byteLength - done));
}

export function shardFileName(i: number, n: number): string {
  const p = (x: number): string => String(x).padStart(5, '0');
  return `model-${p(i + 1)}-of-${p(n)}.safetensors`;
}

/**
 * HF-style sharded checkpoint: `model-0000i-of-0000n.safetensors` (tensors split into
 * shardCount contiguous, near-equal groups) plus `model.safetensors.index.json`.
 */
export function writeShardedCheckpoint(
  dir: string,
  tensors: readonly TensorToWrite[],
  shardCount: number,
  metadata: Record<string, string> = { format: 'pt' },
): void {
  assert(Number.isInteger(shardCount) && shardCount >= 1, () => `writeShardedCheckpoint: shardCount ${shardCount}`);
  mkdirSync(dir, { recursive: true });
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (let s = 0; s < shardCount; s++) {
    const part = tensors.slice(Math.floor((s * tensors.length) / shardCount), Math.floor(((s + 1) * tensors.length) / shardCount));
    const file = shardFileName(s, shardCount);
    writeSafetensors(join(dir, file), part, metadata);
    for (const t of part) {
      weightMap[t.name] = file;
      totalSize += t.data.byteLength;
    }
  }
  const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index, null, 2) + '\n');
}
