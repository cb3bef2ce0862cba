/**
 * Reader for one .safetensors file: a u64 LE header length N, N bytes of JSON, then the data.
 * Only the header is read at open; tensors are read one at a time with positioned reads, so a
 * checkpoint never needs a buffer the size of a shard (Node caps buffers at 4 GiB).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { Dtype } from '../tensor/tensor.js';
import { assert } from '../util/assert.js';
import { ModelLoadError, UnsupportedError } from '../util/errors.js';

/** Dtype names of the safetensors spec that this reader parses (FP8 is refused, see below). */
export type SafetensorsDtype = 'F64' | 'F32' | 'BF16' | 'F16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

export const safetensorsDtypeBytes: Record<SafetensorsDtype, number> = {
  F64: 8, F32: 4, BF16: 2, F16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

/** The engine's tensor dtype for a checkpoint dtype, or undefined where the engine has none. */
export function toTensorDtype(dt: SafetensorsDtype): Dtype | undefined {
  const m: Partial<Record<SafetensorsDtype, Dtype>> = { F64: 'f64', F32: 'f32', BF16: 'bf16', F16: 'f16', I32: 'i32' };
  return m[dt];
}

export interface TensorInfo {
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** Absolute position of the tensor's first byte in the file (ready for pread or mmap). */
  readonly byteOffset: number;
  readonly byteLength: number;
}

/** A real header is a few MB at most; this bound keeps a corrupt length from allocating GBs. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Largest buffer read() returns; bigger tensors go through readRange() in pieces. */
export const MAX_READ_BYTES = 2 ** 31;
/** One fs.readSync call moves at most 2 GiB − 1; stay well under it. */
const READ_CHUNK = 1 << 30;

export class SafetensorsFile {
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    readonly fileSize: number,
    /** Position of the data section (8 + N). */
    readonly dataStart: number,
    private readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Readonly<Record<string, string>>,
  ) {
    this.fd = fd;
  }

  /** Open and validate the header; the fd stays open until close(). */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new ModelLoadError(`cannot open safetensors file: ${(e as Error).message}`, path);
    }
    try {
      const fileSize = fstatSync(fd).size;
      const { tensors, metadata, dataStart } = parseHeader(path, fd, fileSize);
      return new SafetensorsFile(path, fd, fileSize, dataStart, tensors, metadata);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new ModelLoadError(`no tensor named '${name}' in this file (it holds ${this.tensors.size})`, this.path, name);
    return t;
  }

  /** All bytes of one tensor in a fresh, 8-byte-aligned buffer (tensors ≤ 2 GiB). */
  read(name: string): Uint8Array {
    const t = this.info(name);
    if (t.byteLength > MAX_READ_BYTES)
      throw new ModelLoadError(
        `tensor is ${t.byteLength} bytes, over the ${MAX_READ_BYTES}-byte limit of read(); stream it with readRange(name, byteStart, byteLength, dst)`,
        this.path,
        name,
      );
    return this.readRange(name, 0, t.byteLength);
  }

  /**
   * Bytes [byteStart, byteStart+byteLength) of one tensor, into dst when given (it must hold
   * byteLength bytes) — the streaming path for large tensors and pinned staging buffers.
   */
  readRange(name: string, byteStart: number, byteLength: number, dst?: Uint8Array): Uint8Array {
    const t = this.info(name);
    if (!Number.isSafeInteger(byteStart) || !Number.isSafeInteger(byteLength) || byteStart < 0 || byteLength < 0 || byteStart + byteLength > t.byteLength)
      throw new ModelLoadError(`readRange(${byteStart}, ${byteLength}) is outside the tensor's ${t.byteLength} bytes`, this.path, name);
    if (byteLength > MAX_READ_BYTES)
      throw new ModelLoadError(`readRange of ${byteLength} bytes is over the ${MAX_READ_BYTES}-byte limit; read in smaller pieces`, this.path, name);
    if (dst && dst.length < byteLength)
      throw new ModelLoadError(`readRange destination holds ${dst.length} bytes, needs ${byteLength}`, this.path, name);
    // allocUnsafeSlow is unpooled, so the view starts at offset 0 and typed views over it are aligned.
    const out = dst ? dst.subarray(0, byteLength) : new Uint8Array(Buffer.allocUnsafeSlow(byteLength).buffer, 0, byteLength);
    readFully(this.path, this.requireFd(), out, t.byteOffset + byteStart, name);
    return out;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private requireFd(): number {
    assert(this.fd !== null, () => `${this.path}: read after close()`);
    return this.fd;
  }
}

/** Fill dst from the file at position; a short read means the file shrank under us. */
function readFully(path: string, fd: number, dst: Uint8Array, position: number, key?: string): void {
  let done = 0;
  while (done < dst.length) {
    const n = readSync(fd, dst, done, Math.min(READ_CHUNK, dst.length - done), position + done);
    if (n <= 0)
      throw new ModelLoadError(
        `file truncated: expected ${dst.length} bytes at byte ${position}, got ${done} before end of file`,
        path,
        key,
      );
    done += n;
  }
}

function parseHeader(
  path: string,
  fd: number,
  fileSize: number,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string>; dataStart: number } {
  const fail = (msg: string, key?: string): never => {
    throw new ModelLoadError(msg, path, key);
  };
  if (fileSize < 8) fail(`file is ${fileSize} bytes; a safetensors file needs at least 8 (the header length)`);

  const lenBuf = new Uint8Array(8);
  readFully(path, fd, lenBuf, 0);
  const n = new DataView(lenBuf.buffer).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) fail(`header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
  const headerLen = Number(n);
  if (headerLen > fileSize - 8) fail(`header length ${headerLen} is larger than the ${fileSize - 8} bytes after the length field (file truncated or corrupt)`);

  const headerBytes = new Uint8Array(headerLen);
  readFully(path, fd, headerBytes, 8);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    fail(`header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    fail(`header must be a JSON object, found ${json === null ? 'null' : Array.isArray(json) ? 'an array' : typeof json}`);
  const header = json as Record<string, unknown>;

  const dataStart = 8 + headerLen;
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const spans: { begin: number; end: number; name: string }[] = [];

  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('__metadata__ must be an object of strings', name);
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__ values must be strings, found ${typeof v} for '${k}'`, name);
        metadata[k] = v as string;
      }
      continue;
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('tensor entry must be an object {dtype, shape, data_offsets}', name);
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;

    if (typeof dtype !== 'string') fail(`dtype must be a string, found ${JSON.stringify(dtype)}`, name);
    const dt = dtype as string;
    if (dt.startsWith('F8_'))
      throw new UnsupportedError(`${path} [${name}]: dtype ${dt}: FP8 checkpoints are not supported yet (need F32, BF16 or F16 weights)`);
    if (!Object.hasOwn(safetensorsDtypeBytes, dt))
      fail(`unknown dtype '${dt}' (expected one of ${Object.keys(safetensorsDtypeBytes).join(', ')})`, name);
    const sdt = dt as SafetensorsDtype;

    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0))
      fail(`shape must be an array of non-negative integers, found ${JSON.stringify(shape)}`, name);
    const dims = shape as number[];
    let numel = 1;
    for (const d of dims) {
      numel *= d;
      if (!Number.isSafeInteger(numel)) fail(`shape [${dims.join(', ')}] has too many elements`, name);
    }

    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0))
      fail(`data_offsets must be [begin, end] non-negative integers, found ${JSON.stringify(offsets)}`, name);
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(`data_offsets [${begin}, ${end}]: begin is after end`, name);
    if (end > dataSize)
      fail(`data_offsets [${begin}, ${end}] end past the data section: expected end <= ${dataSize} bytes (file truncated?)`, name);
    const expected = numel * safetensorsDtypeBytes[sdt];
    if (end - begin !== expected)
      fail(`data_offsets [${begin}, ${end}] span ${end - begin} bytes, but ${sdt} [${dims.join(', ')}] needs ${expected}`, name);

    tensors.set(name, { dtype: sdt, shape: dims, byteOffset: dataStart + begin, byteLength: end - begin });
    if (end > begin) spans.push({ begin, end, name });
  }

  spans.sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < spans.length; i++) {
    const a = spans[i - 1];
    const b = spans[i];
    if (b.begin < a.end) fail(`data_offsets [${b.begin}, ${b.end}] overlap '${a.name}' [${a.begin}, ${a.end}]`, b.name);
  }
  return { tensors, metadata, dataStart };
}
