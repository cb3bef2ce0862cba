/**
 * koffi bindings to NCCL (tensor parallelism, issue 6), in the manner of driver.ts (whose library
 * loading and result helpers it shares): the communicator, the two collectives, the abort, and the
 * NcclGate words shared with rank 0's watcher thread.
 */
import * as koffi from 'koffi';
import { CudaError } from '../../util/errors.js';
import { big, num, openLibrary, type Handle, type Native } from './driver.js';

// Loaded only when tp > 1, so single-GPU users need no libnccl. NVLink multicast (NVLS) is forced
// off: on shared hosts it can take every GPU of the machine out of service.
//
// Communicators are blocking (ncclCommInitRank), and a dead peer is handled by ncclCommAbort called
// from a watcher thread (api/tp-guard.ts) that holds its own binding of libnccl and the
// communicator's address. Why not non-blocking communicators (ncclCommInitRankConfig with
// blocking = 0): every enqueue may then return ncclInProgress and finish on an NCCL thread, and
// must be polled to completion before the next launch, which makes it blocking in effect for our
// strictly ordered streams and CUDA-graph captures (a capture must hold each collective at its
// place in the stream), and it does not remove the hang that matters: ncclCommAbort on any
// communicator waits until every CUDA graph holding its captured collectives is destroyed (NCCL
// >= 2.26 polls for them in commDestroySync), which only the thread that owns the graphs may do.
// So: the watcher raises NCCL's abort flag (the first thing ncclCommAbort does; a collective
// kernel waiting on the dead rank then returns), the main thread, once its stream drains,
// destroys the graphs, and the abort finishes. The NcclGate below keeps the main thread from
// enqueueing on a communicator the watcher is tearing down.

const NCCL_FLOAT32 = 7;
const NCCL_SUM = 0;
const CUDA_ERROR_NOT_READY = 600;

/** Words of an NcclGate's Int32Array (over a SharedArrayBuffer shared with the watcher thread). */
export const GATE_STATE = 0, GATE_LOCK = 1, GATE_DEAD = 2, GATE_RC = 3, GATE_WORDS = 4;
/**
 * Gate states: running; closed (normal shutdown: the watcher has stopped); failed (a rank died or
 * a step failed: abort requested); aborting (the watcher is inside ncclCommAbort: the abort flag
 * is up); aborted (ncclCommAbort returned: the communicator is freed).
 */
export const GATE_RUNNING = 0, GATE_CLOSED = 1, GATE_FAILED = 2, GATE_ABORTING = 3, GATE_ABORTED = 4;
/** Lock word: free, held by the enqueueing thread for one call, taken for good by the watcher before it aborts. */
export const LOCK_FREE = 0, LOCK_CALL = 1, LOCK_ABORT = 2;

/** Where pip wheels put libnccl (torch's nvidia-nccl-cu* dependency), tried after the usual dirs. */
function ncclCandidates(): string[] {
  const names = ['libnccl.so.2', 'libnccl.so'];
  const explicit = process.env.BAILING_LIBNCCL;
  return explicit ? [explicit, ...names] : names;
}

/** A 128-byte ncclUniqueId: rank 0 makes it, every rank passes it to init. */
export type NcclId = Uint8Array;

export class Nccl {
  private readonly fn: Record<string, Native> = {};
  private readonly cuStreamQuery: Native;
  /** Shared with a watcher thread that may abort the communicator (null: no watcher). */
  private gate: Int32Array | null = null;

  private constructor() {
    process.env.NCCL_NVLS_ENABLE = '0';
    const lib = openLibrary('NCCL (libnccl, set BAILING_LIBNCCL to its path)', ncclCandidates());
    const uid = koffi.struct({ internal: koffi.array('uint8_t', 128, 'Typed') });
    const voidOut = koffi.out(koffi.pointer('void', 2));
    this.fn.ncclGetUniqueId = lib.func('ncclGetUniqueId', 'int', [koffi.out(koffi.pointer(uid))]) as Native;
    this.fn.ncclCommInitRank = lib.func('ncclCommInitRank', 'int', [voidOut, 'int', uid, 'int']) as Native;
    for (const d of [
      'const char *ncclGetErrorString(int r)',
      'int ncclGetVersion(_Out_ int *v)',
      'int ncclAllReduce(uint64_t send, uint64_t recv, size_t count, int dtype, int op, void *comm, void *stream)',
      'int ncclAllGather(uint64_t send, uint64_t recv, size_t count, int dtype, void *comm, void *stream)',
      'int ncclCommDestroy(void *comm)',
      'int ncclCommGetAsyncError(void *comm, _Out_ int *err)',
    ])
      this.fn[/([A-Za-z0-9_]+)\s*\(/.exec(d)![1]] = lib.func(d) as Native;
    // By address: the watcher thread has the communicator as a number, not as this thread's handle.
    this.fn.ncclCommAbortAt = lib.func('int ncclCommAbort(uint64_t comm)') as Native;
    const cuda = openLibrary('driver (libcuda)', ['libcuda.so.1', 'libcuda.so']);
    this.cuStreamQuery = cuda.func('int cuStreamQuery(void *s)') as Native;
  }

  static open(): Nccl {
    return new Nccl();
  }

  private check(api: string, rc: unknown): void {
    const code = num(rc);
    if (code !== 0) throw new CudaError(api, code, String(this.fn.ncclGetErrorString(code)));
  }

  /**
   * From now on every call on a communicator takes the gate's lock and is skipped once the gate
   * has left 'running' (or 'closed'): the group has failed, the step's results are discarded by
   * the caller (it throws at its next wait), and the communicator may already be freed.
   */
  useGate(words: Int32Array): void {
    this.gate = words;
  }

  /** Take the gate for one call; false: skip the call (the communicator is being aborted). */
  private enter(): boolean {
    const g = this.gate;
    if (!g) return true;
    if (Atomics.compareExchange(g, GATE_LOCK, LOCK_FREE, LOCK_CALL) !== LOCK_FREE) return false;
    const st = Atomics.load(g, GATE_STATE);
    if (st === GATE_RUNNING || st === GATE_CLOSED) return true;
    Atomics.store(g, GATE_LOCK, LOCK_FREE);
    return false;
  }

  private leave(): void {
    if (this.gate) Atomics.store(this.gate, GATE_LOCK, LOCK_FREE);
  }

  private gated(call: () => void): void {
    if (!this.enter()) return;
    try {
      call();
    } finally {
      this.leave();
    }
  }

  version(): number {
    const v = [0];
    this.check('ncclGetVersion', this.fn.ncclGetVersion(v));
    return num(v[0]);
  }

  uniqueId(): NcclId {
    const out: { internal?: Uint8Array } = {};
    this.check('ncclGetUniqueId', this.fn.ncclGetUniqueId(out));
    return Uint8Array.from(out.internal!);
  }

  /** Blocks until all `size` ranks have called it with the same id (the caller's CUDA context is current). */
  commInitRank(size: number, id: NcclId, rank: number): Handle {
    const out: unknown[] = [null];
    this.check('ncclCommInitRank', this.fn.ncclCommInitRank(out, size, { internal: id }, rank));
    return out[0] as Handle;
  }

  /** The communicator's address, for a watcher thread's abortAt. */
  static address(comm: Handle): bigint {
    return big(koffi.address(comm));
  }

  /** In place, f32, stream-ordered. */
  allReduceSumF32(ptr: bigint, count: number, comm: Handle, s: Handle): void {
    this.gated(() => this.check('ncclAllReduce', this.fn.ncclAllReduce(ptr, ptr, count, NCCL_FLOAT32, NCCL_SUM, comm, s)));
  }

  /** recv [size · count] = every rank's send [count], rank order; stream-ordered. */
  allGatherF32(send: bigint, recv: bigint, count: number, comm: Handle, s: Handle): void {
    this.gated(() => this.check('ncclAllGather', this.fn.ncclAllGather(send, recv, count, NCCL_FLOAT32, comm, s)));
  }

  /** NCCL's asynchronous error of a communicator (0 = none, also once it is being aborted). */
  asyncError(comm: Handle): number {
    const e = [0];
    this.gated(() => this.check('ncclCommGetAsyncError', this.fn.ncclCommGetAsyncError(comm, e)));
    return num(e[0]);
  }

  /** True when all work queued on the stream has finished (never blocks). */
  streamIdle(s: Handle): boolean {
    const rc = num(this.cuStreamQuery(s));
    if (rc === CUDA_ERROR_NOT_READY) return false;
    if (rc !== 0) throw new CudaError('cuStreamQuery', rc, `CUresult ${rc}`);
    return true;
  }

  /** Normal teardown (every rank alive and idle); skipped once the communicator is being aborted. */
  destroy(comm: Handle): void {
    this.gated(() => this.check('ncclCommDestroy', this.fn.ncclCommDestroy(comm)));
  }

  /**
   * ncclCommAbort by address, for the watcher thread; returns NCCL's result instead of throwing.
   * It raises the abort flag at once (collectives waiting on a dead peer return), then frees the
   * communicator, which first waits until every CUDA graph that captured its collectives is
   * destroyed. Never call it while another thread may still enqueue on the communicator (NcclGate).
   */
  abortAt(comm: bigint): number {
    return num(this.fn.ncclCommAbortAt(comm));
  }
}

/**
 * End the process now with `code` (libc _exit: no exit handlers, no joining of threads). The last
 * resort when a thread is stuck inside NCCL and a normal exit would wait on it forever.
 */
export function hardExit(code: number): never {
  const libc = koffi.load('libc.so.6');
  (libc.func('void _exit(int code)') as Native)(code);
  throw new Error('unreachable: _exit returned');
}
