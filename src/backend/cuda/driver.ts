/**
 * The FFI file (DESIGN §4): koffi bindings to the CUDA driver API, NVRTC and cuBLASLt, each
 * call's status checked and turned into a CudaError naming the API. NCCL, loaded only for tensor
 * parallelism, is bound the same way in nccl.ts (split off to keep each file readable). Everything else in
 * backend/cuda talks to the GPU through a CudaDriver instance; there is no module-level state.
 *
 * koffi's functions are untyped; they are bound here as `(...args: unknown[]) => unknown` and
 * every result is read through num()/big() so nothing `any` escapes this file. Handles (context,
 * stream, module, cuBLASLt descriptors) are opaque koffi pointer values typed `Handle`.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as koffi from 'koffi';
import { CudaError } from '../../util/errors.js';

/** A koffi-bound native function (untyped; results are read through num()/big()). */
export type Native = (...args: unknown[]) => unknown;
/** An opaque native handle (CUcontext, CUstream, CUmodule, cublasLt descriptors, ...). */
export type Handle = bigint | object;

export interface DeviceInfo {
  readonly ordinal: number;
  readonly name: string;
  readonly major: number;
  readonly minor: number;
  readonly sms: number;
  readonly totalBytes: number;
  /** Largest dynamic shared memory a block may opt in to. */
  readonly smemOptin: number;
}

/** CUDA data types (library_types.h) and cuBLASLt enums used here. */
export const CUDA_R_32F = 0;
export const CUDA_R_16BF = 14;
const CUBLAS_COMPUTE_32F = 68;
const DESC_TRANSA = 3, DESC_TRANSB = 4;
const PREF_MAX_WORKSPACE = 1, PREF_ALIGN_A = 5; // B, C, D follow at 6, 7, 8
const HEURISTIC_BYTES = 96; // cublasLtMatmulHeuristicResult_t: algo (64) + size_t + int + float + int[4]

const LIB_DIRS = ['/usr/local/cuda/targets/x86_64-linux/lib', '/usr/local/cuda/lib64', '/usr/lib/x86_64-linux-gnu', '/usr/local/nvidia/lib64', '/usr/lib64'];

/** First existing file among names × (LD_LIBRARY_PATH dirs, LIB_DIRS); else the bare soname for dlopen's own search. */
function findLibrary(names: readonly string[]): string[] {
  const dirs = [...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d !== ''), ...LIB_DIRS];
  const found: string[] = [];
  for (const n of names) for (const d of dirs) if (existsSync(join(d, n))) found.push(join(d, n));
  return [...found, ...names];
}

export function openLibrary(what: string, names: readonly string[]): koffi.LibraryHandle {
  const errors: string[] = [];
  for (const path of findLibrary(names)) {
    try {
      return koffi.load(path);
    } catch (e) {
      errors.push(`${path}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw new CudaError(`load ${what}`, -1, `none of ${names.join(', ')} could be loaded (searched LD_LIBRARY_PATH and ${LIB_DIRS.join(', ')}); is this a machine with an NVIDIA GPU and the CUDA ${what} installed? Tried: ${errors.slice(0, 3).join('; ')}`);
}

export function num(v: unknown): number {
  return typeof v === 'bigint' ? Number(v) : (v as number);
}
export function big(v: unknown): bigint {
  return typeof v === 'bigint' ? v : BigInt(v as number);
}

/** Alignment in bytes of a device address (a power of two, capped at 256) for cuBLASLt's preferences. */
export function alignmentOf(ptr: bigint): number {
  let a = 1;
  while (a < 256 && (ptr & BigInt(a * 2 - 1)) === 0n) a *= 2;
  return a;
}

export class CudaDriver {
  private readonly cu: Record<string, Native> = {};
  private readonly nv: Record<string, Native> = {};
  private readonly lt: Record<string, Native> = {};
  /** Kernel-argument block: 64 pointer slots then 64 8-byte value slots, reused by every launch. */
  private readonly argMem: unknown;
  private readonly argView: DataView;
  private readonly argBase: bigint;

  private constructor() {
    const cuda = openLibrary('driver (libcuda)', ['libcuda.so.1', 'libcuda.so']);
    const bindAll = (lib: koffi.LibraryHandle, into: Record<string, Native>, decls: string[]): void => {
      for (const d of decls) {
        const name = /([A-Za-z0-9_]+)\s*\(/.exec(d)![1];
        into[name] = lib.func(d) as Native;
      }
    };
    bindAll(cuda, this.cu, [
      'int cuInit(unsigned int flags)',
      'int cuDriverGetVersion(_Out_ int *v)',
      'int cuGetErrorName(int code, _Out_ const char **s)',
      'int cuGetErrorString(int code, _Out_ const char **s)',
      'int cuDeviceGetCount(_Out_ int *n)',
      'int cuDeviceGet(_Out_ int *dev, int ordinal)',
      'int cuDeviceGetName(void *name, int len, int dev)',
      'int cuDeviceGetAttribute(_Out_ int *v, int attr, int dev)',
      'int cuDeviceTotalMem_v2(_Out_ size_t *bytes, int dev)',
      'int cuDevicePrimaryCtxRetain(_Out_ void **ctx, int dev)',
      'int cuDevicePrimaryCtxRelease_v2(int dev)',
      'int cuCtxSetCurrent(void *ctx)',
      'int cuCtxSynchronize()',
      'int cuStreamCreate(_Out_ void **s, unsigned int flags)',
      'int cuStreamSynchronize(void *s)',
      'int cuStreamDestroy_v2(void *s)',
      'int cuEventCreate(_Out_ void **e, unsigned int flags)',
      'int cuEventRecord(void *e, void *s)',
      'int cuEventSynchronize(void *e)',
      'int cuEventDestroy_v2(void *e)',
      'int cuMemAlloc_v2(_Out_ uint64_t *p, size_t bytes)',
      'int cuMemFree_v2(uint64_t p)',
      'int cuMemGetInfo_v2(_Out_ size_t *free, _Out_ size_t *total)',
      'int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t bytes, void *s)',
      'int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *s)',
      'int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *s)',
      'int cuMemsetD8Async(uint64_t dst, uint8_t v, size_t n, void *s)',
      'int cuModuleLoadData(_Out_ void **m, const void *image)',
      'int cuModuleGetFunction(_Out_ void **f, void *m, const char *name)',
      'int cuModuleUnload(void *m)',
      'int cuFuncSetAttribute(void *f, int attr, int value)',
      'int cuLaunchKernel(void *f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int smem, void *s, void *params, void *extra)',
      // CUDA graphs (decode steps captured once per batch shape, replayed with one launch)
      'int cuStreamBeginCapture_v2(void *s, int mode)',
      'int cuStreamEndCapture(void *s, _Out_ void **g)',
      'int cuGraphInstantiateWithFlags(_Out_ void **e, void *g, unsigned long long flags)',
      'int cuGraphLaunch(void *e, void *s)',
      'int cuGraphExecDestroy(void *e)',
      'int cuGraphDestroy(void *g)',
    ]);
    // CUDA 12.8 added the _v2 elapsed-time entry point; older drivers only have the first.
    try {
      this.cu.cuEventElapsedTime = cuda.func('int cuEventElapsedTime_v2(_Out_ float *ms, void *a, void *b)') as Native;
    } catch {
      this.cu.cuEventElapsedTime = cuda.func('int cuEventElapsedTime(_Out_ float *ms, void *a, void *b)') as Native;
    }
    const nvrtc = openLibrary('NVRTC (libnvrtc)', ['libnvrtc.so.13', 'libnvrtc.so.12', 'libnvrtc.so']);
    bindAll(nvrtc, this.nv, [
      'const char *nvrtcGetErrorString(int r)',
      'int nvrtcVersion(_Out_ int *major, _Out_ int *minor)',
      'int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, const char **headers, const char **includeNames)',
      'int nvrtcCompileProgram(void *prog, int numOptions, const char **options)',
      'int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *n)',
      'int nvrtcGetProgramLog(void *prog, void *log)',
      'int nvrtcGetCUBINSize(void *prog, _Out_ size_t *n)',
      'int nvrtcGetCUBIN(void *prog, void *cubin)',
      'int nvrtcDestroyProgram(_Inout_ void **prog)',
    ]);
    const cublasLt = openLibrary('cuBLASLt (libcublasLt)', ['libcublasLt.so.13', 'libcublasLt.so.12', 'libcublasLt.so']);
    bindAll(cublasLt, this.lt, [
      'const char *cublasLtGetStatusName(int status)',
      'int cublasLtCreate(_Out_ void **h)',
      'int cublasLtDestroy(void *h)',
      'int cublasLtMatmulDescCreate(_Out_ void **d, int computeType, int scaleType)',
      'int cublasLtMatmulDescDestroy(void *d)',
      'int cublasLtMatmulDescSetAttribute(void *d, int attr, const void *buf, size_t n)',
      'int cublasLtMatrixLayoutCreate(_Out_ void **l, int type, uint64_t rows, uint64_t cols, int64_t ld)',
      'int cublasLtMatrixLayoutDestroy(void *l)',
      'int cublasLtMatmulPreferenceCreate(_Out_ void **p)',
      'int cublasLtMatmulPreferenceDestroy(void *p)',
      'int cublasLtMatmulPreferenceSetAttribute(void *p, int attr, const void *buf, size_t n)',
      'int cublasLtMatmulAlgoGetHeuristic(void *h, void *d, void *a, void *b, void *c, void *dd, void *pref, int requested, void *results, _Out_ int *returned)',
      'int cublasLtMatmul(void *h, void *d, const void *alpha, uint64_t A, void *Ad, uint64_t B, void *Bd, const void *beta, uint64_t C, void *Cd, uint64_t D, void *Dd, const void *algo, uint64_t ws, size_t wsBytes, void *s)',
    ]);
    this.argMem = koffi.alloc('uint8_t', 1024);
    this.argView = new DataView(koffi.view(this.argMem, 1024));
    this.argBase = big(koffi.address(this.argMem));
  }

  /** Load the libraries (throws CudaError naming what is missing) and initialise the driver. */
  static open(): CudaDriver {
    const d = new CudaDriver();
    d.check('cuInit', d.cu.cuInit(0));
    return d;
  }

  // ---- errors -------------------------------------------------------------------------------

  private check(api: string, rc: unknown): void {
    const code = num(rc);
    if (code === 0) return;
    const name = [null];
    const msg = [null];
    let detail = `CUresult ${code}`;
    if (num(this.cu.cuGetErrorName(code, name)) === 0 && num(this.cu.cuGetErrorString(code, msg)) === 0) detail = `${String(name[0])}: ${String(msg[0])}`;
    throw new CudaError(api, code, detail);
  }

  private checkNvrtc(api: string, rc: unknown): void {
    const code = num(rc);
    if (code !== 0) throw new CudaError(api, code, String(this.nv.nvrtcGetErrorString(code)));
  }

  private checkLt(api: string, rc: unknown): void {
    const code = num(rc);
    if (code !== 0) throw new CudaError(api, code, String(this.lt.cublasLtGetStatusName(code)));
  }

  private outHandle(api: string, call: (out: unknown[]) => unknown, check = (a: string, rc: unknown) => this.check(a, rc)): Handle {
    const out: unknown[] = [null];
    check(api, call(out));
    return out[0] as Handle;
  }

  // ---- device, context, streams, events ------------------------------------------------------

  deviceCount(): number {
    const n = [0];
    this.check('cuDeviceGetCount', this.cu.cuDeviceGetCount(n));
    return n[0];
  }

  deviceInfo(ordinal: number): DeviceInfo {
    const dev = [0];
    this.check('cuDeviceGet', this.cu.cuDeviceGet(dev, ordinal));
    const nameBuf = new Uint8Array(256);
    this.check('cuDeviceGetName', this.cu.cuDeviceGetName(nameBuf, 256, dev[0]));
    const attr = (a: number, what: string): number => {
      const v = [0];
      this.check(`cuDeviceGetAttribute(${what})`, this.cu.cuDeviceGetAttribute(v, a, dev[0]));
      return v[0];
    };
    const total = [0];
    this.check('cuDeviceTotalMem_v2', this.cu.cuDeviceTotalMem_v2(total, dev[0]));
    const end = nameBuf.indexOf(0);
    return {
      ordinal,
      name: new TextDecoder().decode(nameBuf.subarray(0, end < 0 ? 256 : end)),
      major: attr(75, 'COMPUTE_CAPABILITY_MAJOR'),
      minor: attr(76, 'COMPUTE_CAPABILITY_MINOR'),
      sms: attr(16, 'MULTIPROCESSOR_COUNT'),
      totalBytes: num(total[0]),
      smemOptin: attr(97, 'MAX_SHARED_MEMORY_PER_BLOCK_OPTIN'),
    };
  }

  /** Retain the device's primary context and make it current on this thread. */
  contextRetain(ordinal: number): Handle {
    const ctx = this.outHandle('cuDevicePrimaryCtxRetain', (o) => this.cu.cuDevicePrimaryCtxRetain(o, ordinal));
    this.check('cuCtxSetCurrent', this.cu.cuCtxSetCurrent(ctx));
    return ctx;
  }

  contextRelease(ordinal: number): void {
    this.check('cuDevicePrimaryCtxRelease_v2', this.cu.cuDevicePrimaryCtxRelease_v2(ordinal));
  }

  /** A stream that does not synchronise with the legacy default stream (graph capture needs one). */
  streamCreate(): Handle {
    return this.outHandle('cuStreamCreate', (o) => this.cu.cuStreamCreate(o, 1));
  }
  streamSync(s: Handle): void {
    this.check('cuStreamSynchronize', this.cu.cuStreamSynchronize(s));
  }
  streamDestroy(s: Handle): void {
    this.check('cuStreamDestroy_v2', this.cu.cuStreamDestroy_v2(s));
  }

  eventCreate(): Handle {
    return this.outHandle('cuEventCreate', (o) => this.cu.cuEventCreate(o, 0));
  }
  eventRecord(e: Handle, s: Handle): void {
    this.check('cuEventRecord', this.cu.cuEventRecord(e, s));
  }
  eventSync(e: Handle): void {
    this.check('cuEventSynchronize', this.cu.cuEventSynchronize(e));
  }
  /** Milliseconds between two recorded (and completed) events. */
  eventElapsed(a: Handle, b: Handle): number {
    const ms = [0];
    this.check('cuEventElapsedTime', this.cu.cuEventElapsedTime(ms, a, b));
    return ms[0];
  }
  eventDestroy(e: Handle): void {
    this.check('cuEventDestroy_v2', this.cu.cuEventDestroy_v2(e));
  }

  // ---- memory ------------------------------------------------------------------------------

  memAlloc(bytes: number): bigint {
    const p = [0];
    this.check(`cuMemAlloc_v2(${bytes} bytes)`, this.cu.cuMemAlloc_v2(p, bytes));
    return big(p[0]);
  }
  memFree(ptr: bigint): void {
    this.check('cuMemFree_v2', this.cu.cuMemFree_v2(ptr));
  }
  memInfo(): { free: number; total: number } {
    const f = [0], t = [0];
    this.check('cuMemGetInfo_v2', this.cu.cuMemGetInfo_v2(f, t));
    return { free: num(f[0]), total: num(t[0]) };
  }
  /** Host → device. Pageable source: the driver stages it before returning, so src may be reused at once. */
  htod(dst: bigint, src: ArrayBufferView, s: Handle): void {
    if (src.byteLength === 0) return;
    this.check('cuMemcpyHtoDAsync_v2', this.cu.cuMemcpyHtoDAsync_v2(dst, src, src.byteLength, s));
  }
  /** Device → host, complete when this returns (the stream is synchronised). */
  dtoh(dst: ArrayBufferView, src: bigint, s: Handle): void {
    if (dst.byteLength === 0) return;
    this.check('cuMemcpyDtoHAsync_v2', this.cu.cuMemcpyDtoHAsync_v2(dst, src, dst.byteLength, s));
    this.streamSync(s);
  }
  dtod(dst: bigint, src: bigint, bytes: number, s: Handle): void {
    if (bytes > 0) this.check('cuMemcpyDtoDAsync_v2', this.cu.cuMemcpyDtoDAsync_v2(dst, src, bytes, s));
  }
  memsetD8(dst: bigint, value: number, bytes: number, s: Handle): void {
    if (bytes > 0) this.check('cuMemsetD8Async', this.cu.cuMemsetD8Async(dst, value, bytes, s));
  }

  // ---- modules and launches ----------------------------------------------------------------

  moduleLoad(image: Uint8Array, what: string): Handle {
    return this.outHandle(`cuModuleLoadData(${what})`, (o) => this.cu.cuModuleLoadData(o, image));
  }
  moduleFunction(mod: Handle, name: string): Handle {
    return this.outHandle(`cuModuleGetFunction(${name})`, (o) => this.cu.cuModuleGetFunction(o, mod, name));
  }
  moduleUnload(mod: Handle): void {
    this.check('cuModuleUnload', this.cu.cuModuleUnload(mod));
  }
  /** Allow a kernel more than 48 KiB of dynamic shared memory. */
  funcMaxDynamicSmem(f: Handle, bytes: number): void {
    this.check('cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)', this.cu.cuFuncSetAttribute(f, 8, bytes));
  }

  /**
   * Launch with packed arguments. `sig` has one letter per argument: p (device pointer, bigint),
   * i (int32), l (int64), f (float32), d (float64), u (uint64). The driver copies the argument
   * values at launch, so one argument block serves every launch.
   */
  launch(f: Handle, name: string, grid: readonly [number, number, number], block: readonly [number, number, number], smem: number, s: Handle, sig: string, args: readonly (number | bigint)[]): void {
    if (sig.length !== args.length || args.length > 64) throw new CudaError(`launch ${name}`, -1, `signature "${sig}" has ${sig.length} arguments, got ${args.length}`);
    const v = this.argView;
    for (let i = 0; i < args.length; i++) {
      const off = 512 + 8 * i;
      const a = args[i];
      switch (sig[i]) {
        case 'p':
        case 'u':
          v.setBigUint64(off, big(a), true);
          break;
        case 'l':
          v.setBigInt64(off, big(a), true);
          break;
        case 'i':
          v.setInt32(off, num(a), true);
          break;
        case 'f':
          v.setFloat32(off, num(a), true);
          break;
        case 'd':
          v.setFloat64(off, num(a), true);
          break;
        default:
          throw new CudaError(`launch ${name}`, -1, `unknown argument kind "${sig[i]}"`);
      }
      v.setBigUint64(8 * i, this.argBase + BigInt(off), true);
    }
    for (const g of grid) if (!(g >= 1 && g < 2 ** 31)) throw new CudaError(`launch ${name}`, -1, `grid [${grid.join(', ')}] out of range`);
    this.check(`cuLaunchKernel(${name})`, this.cu.cuLaunchKernel(f, grid[0], grid[1], grid[2], block[0], block[1], block[2], smem, s, this.argMem, null));
  }

  // ---- CUDA graphs -------------------------------------------------------------------------

  /**
   * Record what is enqueued on `s` into a graph instead of running it. Thread-local mode: other
   * threads' CUDA calls are unaffected, and an unsafe call on this thread (a synchronous copy, a
   * stream sync) fails the capture instead of silently running.
   */
  beginCapture(s: Handle): void {
    this.check('cuStreamBeginCapture_v2', this.cu.cuStreamBeginCapture_v2(s, 1));
  }
  /** End the capture on `s`; the recorded graph (throws if the capture was invalidated). */
  endCapture(s: Handle): Handle {
    return this.outHandle('cuStreamEndCapture', (o) => this.cu.cuStreamEndCapture(s, o));
  }
  graphInstantiate(g: Handle): Handle {
    return this.outHandle('cuGraphInstantiateWithFlags', (o) => this.cu.cuGraphInstantiateWithFlags(o, g, 0));
  }
  graphLaunch(exec: Handle, s: Handle): void {
    this.check('cuGraphLaunch', this.cu.cuGraphLaunch(exec, s));
  }
  graphDestroy(g: Handle, exec: Handle | null): void {
    if (exec !== null) this.check('cuGraphExecDestroy', this.cu.cuGraphExecDestroy(exec));
    this.check('cuGraphDestroy', this.cu.cuGraphDestroy(g));
  }

  // ---- NVRTC -------------------------------------------------------------------------------

  nvrtcVersion(): string {
    const a = [0], b = [0];
    this.checkNvrtc('nvrtcVersion', this.nv.nvrtcVersion(a, b));
    return `${a[0]}.${b[0]}`;
  }

  /** Compile CUDA C++ to a cubin; on failure returns the log instead (the caller names the file). */
  nvrtcCompile(source: string, name: string, headers: readonly { name: string; source: string }[], options: readonly string[]): { cubin: Uint8Array } | { log: string } {
    const prog = [null] as unknown[];
    this.checkNvrtc(
      'nvrtcCreateProgram',
      this.nv.nvrtcCreateProgram(prog, source, name, headers.length, headers.map((h) => h.source), headers.map((h) => h.name)),
    );
    try {
      const rc = num(this.nv.nvrtcCompileProgram(prog[0], options.length, [...options]));
      const logSize = [0];
      this.checkNvrtc('nvrtcGetProgramLogSize', this.nv.nvrtcGetProgramLogSize(prog[0], logSize));
      const logBuf = new Uint8Array(Math.max(1, num(logSize[0])));
      this.checkNvrtc('nvrtcGetProgramLog', this.nv.nvrtcGetProgramLog(prog[0], logBuf));
      const log = new TextDecoder().decode(logBuf).replace(/\0+$/, '');
      if (rc !== 0) return { log: `${String(this.nv.nvrtcGetErrorString(rc))}\n${log}` };
      const size = [0];
      this.checkNvrtc('nvrtcGetCUBINSize', this.nv.nvrtcGetCUBINSize(prog[0], size));
      const cubin = new Uint8Array(num(size[0]));
      this.checkNvrtc('nvrtcGetCUBIN', this.nv.nvrtcGetCUBIN(prog[0], cubin));
      return { cubin };
    } finally {
      this.nv.nvrtcDestroyProgram(prog);
    }
  }

  // ---- cuBLASLt ----------------------------------------------------------------------------

  ltCreate(): Handle {
    return this.outHandle('cublasLtCreate', (o) => this.lt.cublasLtCreate(o), (a, rc) => this.checkLt(a, rc));
  }
  ltDestroy(h: Handle): void {
    this.checkLt('cublasLtDestroy', this.lt.cublasLtDestroy(h));
  }

  /**
   * A planned GEMM: D [m×n] = op(A) [m×k] · B [k×n], column-major, fp32 accumulate and scale,
   * A transposed (row-major weights), given alignments of the four pointers. Null when cuBLASLt
   * has no algorithm for it.
   */
  ltPlan(h: Handle, abType: number, dType: number, m: number, n: number, k: number, align: readonly [number, number, number, number], wsBytes: number): LtPlan | null {
    const ck = (a: string, rc: unknown): void => this.checkLt(a, rc);
    const desc = this.outHandle('cublasLtMatmulDescCreate', (o) => this.lt.cublasLtMatmulDescCreate(o, CUBLAS_COMPUTE_32F, CUDA_R_32F), ck);
    ck('cublasLtMatmulDescSetAttribute(TRANSA)', this.lt.cublasLtMatmulDescSetAttribute(desc, DESC_TRANSA, Int32Array.of(1), 4));
    ck('cublasLtMatmulDescSetAttribute(TRANSB)', this.lt.cublasLtMatmulDescSetAttribute(desc, DESC_TRANSB, Int32Array.of(0), 4));
    const layout = (type: number, rows: number, cols: number, ld: number): Handle =>
      this.outHandle('cublasLtMatrixLayoutCreate', (o) => this.lt.cublasLtMatrixLayoutCreate(o, type, rows, cols, ld), ck);
    const a = layout(abType, k, m, k); // stored k×m (row-major [m,k]), used transposed
    const b = layout(abType, k, n, k);
    const d = layout(dType, m, n, m);
    const pref = this.outHandle('cublasLtMatmulPreferenceCreate', (o) => this.lt.cublasLtMatmulPreferenceCreate(o), ck);
    try {
      ck('cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)', this.lt.cublasLtMatmulPreferenceSetAttribute(pref, PREF_MAX_WORKSPACE, BigUint64Array.of(BigInt(wsBytes)), 8));
      for (let i = 0; i < 4; i++) ck('cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)', this.lt.cublasLtMatmulPreferenceSetAttribute(pref, PREF_ALIGN_A + i, Uint32Array.of(align[i]), 4));
      const results = new Uint8Array(HEURISTIC_BYTES);
      const count = [0];
      const rc = num(this.lt.cublasLtMatmulAlgoGetHeuristic(h, desc, a, b, d, d, pref, 1, results, count));
      if (rc !== 0 || count[0] < 1) {
        for (const l of [a, b, d]) this.lt.cublasLtMatrixLayoutDestroy(l);
        this.lt.cublasLtMatmulDescDestroy(desc);
        return null;
      }
      return { desc, a, b, d, algo: results.slice(0, 64), wsBytes: num(new DataView(results.buffer).getBigUint64(64, true)) };
    } finally {
      this.lt.cublasLtMatmulPreferenceDestroy(pref);
    }
  }

  ltPlanDestroy(p: LtPlan): void {
    for (const l of [p.a, p.b, p.d]) this.checkLt('cublasLtMatrixLayoutDestroy', this.lt.cublasLtMatrixLayoutDestroy(l));
    this.checkLt('cublasLtMatmulDescDestroy', this.lt.cublasLtMatmulDescDestroy(p.desc));
  }

  /** Run a plan: D = A·B + beta·D (D also passed as C). */
  ltMatmul(h: Handle, p: LtPlan, A: bigint, B: bigint, D: bigint, beta: number, ws: bigint, wsBytes: number, s: Handle): void {
    this.checkLt(
      'cublasLtMatmul',
      this.lt.cublasLtMatmul(h, p.desc, Float32Array.of(1), A, p.a, B, p.b, Float32Array.of(beta), D, p.d, D, p.d, p.algo, ws, wsBytes, s),
    );
  }
}

export interface LtPlan {
  readonly desc: Handle;
  readonly a: Handle;
  readonly b: Handle;
  readonly d: Handle;
  /** cublasLtMatmulAlgo_t bytes from the heuristic. */
  readonly algo: Uint8Array;
  /** Workspace the algorithm needs. */
  readonly wsBytes: number;
}
