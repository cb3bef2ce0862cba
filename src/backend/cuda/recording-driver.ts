/**
 * A stand-in for CudaDriver in CPU tests of the launchers' host-side choices (cast-memo.test.ts,
 * launch-plan.test.ts): it hands out fake addresses and handles, records every launch and GEMM,
 * and checks what it can without a GPU: a requested kernel is declared in its .cu file (literally
 * or by a macro instantiation) and a launch passes one argument per signature letter. What the
 * kernels compute is tested against the CPU on the GPU (*.gpu.test.ts).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tensor, type Dtype } from '../../tensor/tensor.js';
import { CudaContext } from './context.js';
import type { CudaDriver, Handle } from './driver.js';

/** The package root (kernel files are named relative to it). */
let root = dirname(fileURLToPath(import.meta.url));
while (!existsSync(join(root, 'package.json')) && dirname(root) !== root) root = dirname(root);

export interface Launch {
  readonly name: string;
  readonly grid: readonly [number, number, number];
  readonly smem: number;
  readonly args: readonly (number | bigint)[];
}

/**
 * Kernels declared by token pasting: `#define M(P) ... void [__launch_bounds__(...)] pre##P(` and
 * each instantiation line `M(v)` declare `pre` + v (matmul.cu's GEMV2(T)).
 */
function pastedKernels(src: string): Set<string> {
  const out = new Set<string>();
  for (const [, mac, param, body] of src.matchAll(/#define\s+([A-Z_][A-Z0-9_]*)\(\s*(\w+)\s*\)((?:.*\\\n)*.*)/g)) {
    const pres = [...body.matchAll(new RegExp(`void\\s+(?:__launch_bounds__\\([^)]*\\)\\s+)?(\\w+)##${param}\\s*\\(`, 'g'))].map((x) => x[1]);
    for (const inst of src.matchAll(new RegExp(`^\\s*${mac}\\(\\s*(\\w+)\\s*\\)`, 'gm'))) for (const pre of pres) out.add(pre + inst[1]);
  }
  return out;
}

export class RecordingDriver {
  readonly launches: Launch[] = [];
  readonly gemms: { abType: number; A: bigint; B: bigint; m: number; n: number; k: number }[] = [];
  private next = 0x100000n;
  private readonly plans = new Map<object, { abType: number; m: number; n: number; k: number }>();
  deviceCount(): number {
    return 1;
  }
  deviceInfo(ordinal: number): object {
    return { ordinal, name: 'recording driver', major: 9, minor: 0, sms: 132, totalBytes: 80e9, smemOptin: 227 * 1024 };
  }
  memAlloc(bytes: number): bigint {
    const p = this.next;
    this.next += BigInt(Math.ceil(bytes / 256) * 256 + 256);
    return p;
  }
  moduleLoad(_image: Uint8Array, file: string): Handle {
    return file as unknown as Handle;
  }
  moduleFunction(mod: Handle, name: string): Handle {
    const file = mod as unknown as string;
    const src = readFileSync(join(root, file), 'utf8');
    const literal = new RegExp(`__global__\\s+void\\s+(?:__launch_bounds__\\([^)]*\\)\\s+)?${name}\\s*\\(`);
    const macro = new RegExp(`^\\s*[A-Z_][A-Z0-9_]*\\(\\s*${name}\\s*,`, 'm');
    if (!literal.test(src) && !macro.test(src) && !pastedKernels(src).has(name)) throw new Error(`kernel ${name} is not declared in ${file}`);
    return name as unknown as Handle;
  }
  launch(_f: Handle, name: string, grid: readonly [number, number, number], _block: readonly [number, number, number], smem: number, _s: Handle, sig: string, args: readonly (number | bigint)[]): void {
    if (args.length !== sig.length) throw new Error(`${name}: ${args.length} arguments for signature "${sig}"`);
    this.launches.push({ name, grid, smem, args });
  }
  ltPlan(_h: Handle, abType: number, _dType: number, m: number, n: number, k: number): object {
    const plan = {};
    this.plans.set(plan, { abType, m, n, k });
    return plan;
  }
  ltMatmul(_h: Handle, p: object, A: bigint, B: bigint): void {
    this.gemms.push({ ...this.plans.get(p)!, A, B });
  }
  nvrtcVersion(): string {
    return 'recording';
  }
  nvrtcCompile(): { cubin: Uint8Array } {
    return { cubin: new Uint8Array(4) };
  }
  /** Launched kernel names, in order. */
  names(): string[] {
    return this.launches.map((l) => l.name);
  }
}
// Everything else the context may call (handles, copies, syncs) does nothing here.
for (const m of ['contextRetain', 'streamCreate', 'ltCreate', 'memFree', 'memsetD8', 'htod', 'streamSync', 'funcMaxDynamicSmem', 'ltPlanDestroy', 'ltDestroy', 'streamDestroy', 'contextRelease', 'moduleUnload'])
  (RecordingDriver.prototype as unknown as Record<string, unknown>)[m] = (): unknown => ({});

/** A CudaContext on a RecordingDriver (kernel "cubins" in a temporary folder), and device tensors of it. */
export function recordingContext(): { c: CudaContext; d: RecordingDriver; t: (dtype: Dtype, shape: number[]) => Tensor } {
  const cacheDir = mkdtempSync(join(tmpdir(), 'bailing-recording-'));
  process.once('exit', () => rmSync(cacheDir, { recursive: true, force: true }));
  const d = new RecordingDriver();
  const c = new CudaContext(d as unknown as CudaDriver, 0, cacheDir);
  const t = (dtype: Dtype, shape: number[]): Tensor => {
    const bytes = shape.reduce((a, b) => a * b, 1) * (dtype === 'bf16' ? 2 : dtype === 'f64' ? 8 : 4);
    return new Tensor(dtype, shape, { kind: 'device', ptr: c.mem.alloc(bytes, 'test').ptr, bytes });
  };
  return { c, d, t };
}
