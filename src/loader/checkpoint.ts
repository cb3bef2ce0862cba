/**
 * A checkpoint directory: HF sharded (`model.safetensors.index.json`), one `model.safetensors`,
 * or any set of `*.safetensors` files. Every shard header is read and cross-checked at open, so
 * a broken checkpoint fails before any weight is uploaded. `quantization_config` in config.json
 * is the config parser's business, not this module's.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, normalize } from 'node:path';
import { ModelLoadError } from '../util/errors.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';

export const INDEX_FILE = 'model.safetensors.index.json';

export interface CheckpointTensorInfo extends TensorInfo {
  /** Path of the file holding the tensor. */
  readonly file: string;
}

export class Checkpoint {
  private constructor(
    readonly dir: string,
    /** Open files, in load order. */
    readonly files: readonly SafetensorsFile[],
    private readonly where: Map<string, SafetensorsFile>,
  ) {}

  static open(dir: string): Checkpoint {
    let isDir = false;
    try {
      isDir = statSync(dir).isDirectory();
    } catch {
      isDir = false;
    }
    if (!isDir) throw new ModelLoadError('checkpoint directory does not exist or is not a directory', dir);

    const opened: SafetensorsFile[] = [];
    try {
      const indexPath = join(dir, INDEX_FILE);
      if (existsSync(indexPath)) return new Checkpoint(dir, opened, openIndexed(dir, indexPath, opened));
      const single = join(dir, 'model.safetensors');
      const paths = existsSync(single)
        ? [single]
        : readdirSync(dir)
            .filter((f) => f.endsWith('.safetensors'))
            .sort()
            .map((f) => join(dir, f));
      if (paths.length === 0) throw new ModelLoadError(`no safetensors files in ${dir}`, dir);
      const where = new Map<string, SafetensorsFile>();
      for (const p of paths) {
        const f = SafetensorsFile.open(p);
        opened.push(f);
        for (const name of f.names()) {
          const prev = where.get(name);
          if (prev) throw new ModelLoadError(`tensor also present in ${prev.path}; names must not repeat across files`, p, name);
          where.set(name, f);
        }
      }
      return new Checkpoint(dir, opened, where);
    } catch (e) {
      for (const f of opened) f.close();
      throw e;
    }
  }

  /** Tensor names: index order for sharded checkpoints, else file then header order. */
  names(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  info(name: string): CheckpointTensorInfo {
    const f = this.fileOf(name);
    return { ...f.info(name), file: f.path };
  }

  /** All bytes of one tensor (≤ 2 GiB; larger ones go through readRange). */
  read(name: string): Uint8Array {
    return this.fileOf(name).read(name);
  }

  readRange(name: string, byteStart: number, byteLength: number, dst?: Uint8Array): Uint8Array {
    return this.fileOf(name).readRange(name, byteStart, byteLength, dst);
  }

  close(): void {
    for (const f of this.files) f.close();
  }

  private fileOf(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) throw new ModelLoadError(`no tensor named '${name}' in the checkpoint (${this.where.size} tensors)`, this.dir, name);
    return f;
  }
}

/** Open the shards of an index (pushing each onto `opened`) and map every name to its file. */
function openIndexed(dir: string, indexPath: string, opened: SafetensorsFile[]): Map<string, SafetensorsFile> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new ModelLoadError(`index is not valid JSON: ${(e as Error).message}`, indexPath);
  }
  const wm = typeof json === 'object' && json !== null ? (json as Record<string, unknown>).weight_map : undefined;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm))
    throw new ModelLoadError('expected a "weight_map" object {tensor name: shard file}', indexPath, 'weight_map');

  // Group names by shard, keeping the index's order of first appearance.
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard === '' || isAbsolute(shard) || normalize(shard).startsWith('..'))
      throw new ModelLoadError(`shard must be a file name inside the checkpoint directory, found ${JSON.stringify(shard)}`, indexPath, name);
    const list = byShard.get(shard) ?? [];
    list.push(name);
    byShard.set(shard, list);
  }
  if (byShard.size === 0) throw new ModelLoadError('weight_map is empty', indexPath, 'weight_map');

  const files = new Map<string, SafetensorsFile>();
  for (const shard of byShard.keys()) {
    const p = join(dir, shard);
    if (!existsSync(p))
      throw new ModelLoadError(`shard file ${shard} named by ${INDEX_FILE} does not exist (needed for ${byShard.get(shard)?.length} tensors)`, p);
    const f = SafetensorsFile.open(p);
    opened.push(f);
    files.set(shard, f);
    const missing = byShard.get(shard)?.filter((n) => !f.has(n)) ?? [];
    if (missing.length > 0) {
      const shown = missing.slice(0, 10).join(', ') + (missing.length > 10 ? `, … (${missing.length} in all)` : '');
      throw new ModelLoadError(`${INDEX_FILE} maps ${missing.length} tensor(s) to this shard that it does not hold: ${shown}`, p);
    }
  }
  const where = new Map<string, SafetensorsFile>();
  for (const [name, shard] of Object.entries(wm as Record<string, string>)) where.set(name, files.get(shard) as SafetensorsFile);
  return where;
}
