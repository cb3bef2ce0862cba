/**
 * Kernel sources → loaded CUDA functions. `.cu` files are runtime assets (src/ops/<op>/<op>.cu,
 * shipped with the package); NVRTC compiles each to a cubin for the device's sm_XX, cached on
 * disk under sha256(source and included headers, options, arch) so later runs skip the ~100 ms
 * compile. A compile error throws KernelCompileError with the full log.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InternalError, KernelCompileError } from '../../util/errors.js';
import type { CudaDriver, Handle } from './driver.js';

/** A kernel ready to launch: its function handle and argument signature (see CudaDriver.launch). */
export interface Kernel {
  readonly name: string;
  readonly fn: Handle;
  readonly sig: string;
}

/** Package root: dist/src/backend/cuda/compile.js or src/backend/cuda/compile.ts → ../../.. (+1 under dist). */
function packageRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, 'src'))) return d;
    d = dirname(d);
  }
  throw new InternalError(`cannot find the package root (with src/*.cu) above ${fileURLToPath(import.meta.url)}`);
}

export function defaultCacheDir(): string {
  return process.env.BAILING_CACHE_DIR ? join(process.env.BAILING_CACHE_DIR, 'kernels') : join(homedir(), '.cache', 'bailing', 'kernels');
}

export interface CompileStats {
  compiled: number;
  cacheHits: number;
  compileMs: number;
}

export class KernelCache {
  private readonly root = packageRoot();
  private readonly modules = new Map<string, Handle>();
  private readonly kernels = new Map<string, Kernel>();
  readonly stats: CompileStats = { compiled: 0, cacheHits: 0, compileMs: 0 };
  /**
   * When set, any compile is an error (a caller that knows it is warm sets it). BAILING_NO_COMPILE=1
   * is enforced per step by step-graph.ts: a compile inside a replayed decode step throws.
   */
  frozen = false;

  constructor(
    private readonly driver: CudaDriver,
    /** e.g. 'sm_90' */
    readonly arch: string,
    readonly cacheDir: string = defaultCacheDir(),
  ) {}

  /** The kernel `name` of `file` (path relative to the package root), compiled and loaded once. */
  get(file: string, name: string, sig: string): Kernel {
    const key = `${file}:${name}`;
    const hit = this.kernels.get(key);
    if (hit) return hit;
    const mod = this.module(file);
    const k: Kernel = { name, fn: this.driver.moduleFunction(mod, name), sig };
    this.kernels.set(key, k);
    return k;
  }

  private module(file: string): Handle {
    const m = this.modules.get(file);
    if (m !== undefined) return m;
    const path = join(this.root, file);
    const source = readFileSync(path, 'utf8');
    const headers = this.headersOf(path, source);
    const options = [`--gpu-architecture=${this.arch}`, '--std=c++17', '-lineinfo'];
    const h = createHash('sha256');
    for (const part of [source, ...headers.flatMap((x) => [x.name, x.source]), options.join(' '), this.arch, this.driver.nvrtcVersion()]) h.update(part).update('\0');
    const cached = join(this.cacheDir, `${posix.basename(file, '.cu')}-${h.digest('hex').slice(0, 32)}.cubin`);
    let cubin: Uint8Array;
    if (existsSync(cached)) {
      cubin = readFileSync(cached);
      this.stats.cacheHits++;
    } else {
      if (this.frozen) throw new InternalError(`kernel compile of ${file} requested after warm-up (BAILING_NO_COMPILE or a frozen cache)`);
      const t0 = performance.now();
      const r = this.driver.nvrtcCompile(source, file, headers, options);
      if ('log' in r) throw new KernelCompileError(file, r.log);
      cubin = r.cubin;
      this.stats.compiled++;
      this.stats.compileMs += performance.now() - t0;
      // Write then rename: concurrent processes never read a half-written cubin.
      mkdirSync(this.cacheDir, { recursive: true });
      const tmp = `${cached}.${process.pid}.tmp`;
      writeFileSync(tmp, cubin);
      renameSync(tmp, cached);
    }
    const mod = this.driver.moduleLoad(cubin, file);
    this.modules.set(file, mod);
    return mod;
  }

  /** `#include "relative"` headers of a source (one level), under the exact names NVRTC will look up. */
  private headersOf(path: string, source: string): { name: string; source: string }[] {
    const out: { name: string; source: string }[] = [];
    for (const m of source.matchAll(/^\s*#include\s+"([^"]+)"/gm)) out.push({ name: m[1], source: readFileSync(resolve(dirname(path), m[1]), 'utf8') });
    return out;
  }

  dispose(): void {
    for (const m of this.modules.values()) this.driver.moduleUnload(m);
    this.modules.clear();
    this.kernels.clear();
  }
}
