/**
 * Rank 0's dead-rank watcher (issue 6): a thread, independent of the main thread, that polls the
 * other ranks' processes every millisecond and, when one has died, kills the rest and aborts this
 * rank's NCCL communicator with its own binding of libnccl (tp-guard-worker.ts). The main thread
 * may at that moment be blocked in native code (a launch into a full queue, a download waiting on
 * a collective whose peer is gone); the abort releases it. The state lives in an NcclGate's words
 * (nccl.ts), which the main thread's Nccl also checks before every call on the communicator.
 *
 * The main thread then settles the failure (TpGroup.settle): waits for the abort flag, for its
 * stream to drain, destroys its CUDA graphs (NCCL's abort waits for the graphs that captured its
 * collectives) and waits for the abort to return. Followers need no watcher: rank 0 kills them,
 * and they kill themselves when rank 0 is gone (tp-worker.ts).
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { GATE_ABORTED, GATE_ABORTING, GATE_CLOSED, GATE_DEAD, GATE_FAILED, GATE_LOCK, GATE_RC, GATE_RUNNING, GATE_STATE, GATE_WORDS, LOCK_ABORT, LOCK_FREE } from '../backend/cuda/nccl.js';

/** What the watcher thread is given. */
export interface GuardData {
  readonly words: SharedArrayBuffer;
  /** Process ids of ranks 1..size-1. */
  readonly pids: readonly number[];
  /** The communicator's address (decimal). */
  readonly comm: string;
  readonly pollMs: number;
  /** How long the watcher waits for a call in flight on the main thread before it aborts anyway. */
  readonly lockMs: number;
}

/** False once the process is gone or a zombie (a crashed child stays one until its parent's event loop reaps it). */
export function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

export class TpGuard {
  readonly words: Int32Array;

  private constructor(words: Int32Array) {
    this.words = words;
  }

  /**
   * Start watching `pids` (ranks 1..) for the communicator at `comm`. `thread`: the module the
   * watcher runs (tp-guard-worker.ts; the CPU test runs runWatcher with an abort that records).
   */
  static start(pids: readonly number[], comm: bigint, opts: { pollMs?: number; lockMs?: number; thread?: URL } = {}): TpGuard {
    const sab = new SharedArrayBuffer(4 * GATE_WORDS);
    const data: GuardData = { words: sab, pids, comm: comm.toString(), pollMs: opts.pollMs ?? 1, lockMs: opts.lockMs ?? 2000 };
    const w = new Worker(opts.thread ?? new URL('./tp-guard-worker.js', import.meta.url), { workerData: data, execArgv: [] });
    w.on('error', (e) => process.stderr.write(`bailing: tensor-parallel watcher thread failed: ${e.stack ?? e.message}\n`));
    w.unref(); // never keeps the process alive; the exit hook in tp.ts deals with a watcher stuck in NCCL
    return new TpGuard(new Int32Array(sab));
  }

  get state(): number {
    return Atomics.load(this.words, GATE_STATE);
  }

  /** The rank whose death the watcher saw first (0: none). */
  get deadRank(): number {
    return Atomics.load(this.words, GATE_DEAD);
  }

  /** ncclCommAbort's result once aborted. */
  get abortResult(): number {
    return Atomics.load(this.words, GATE_RC);
  }

  /** Ask for the abort (idempotent): a step failed or a rank died as the main thread saw it. */
  fail(): void {
    if (Atomics.compareExchange(this.words, GATE_STATE, GATE_RUNNING, GATE_FAILED) === GATE_RUNNING) Atomics.notify(this.words, GATE_STATE);
  }

  /** Normal shutdown: the watcher stops. False when a failure came first (then settle it instead). */
  close(): boolean {
    const was = Atomics.compareExchange(this.words, GATE_STATE, GATE_RUNNING, GATE_CLOSED);
    Atomics.notify(this.words, GATE_STATE);
    return was === GATE_RUNNING || was === GATE_CLOSED;
  }

  /** Wait until the state is at least `state` (failed, aborting, aborted: a failure's states only grow); false after `ms`. */
  waitFor(state: number, ms: number): boolean {
    const end = Date.now() + ms;
    for (;;) {
      const st = this.state;
      if (st >= state) return true;
      const left = end - Date.now();
      if (left <= 0) return false;
      Atomics.wait(this.words, GATE_STATE, st, Math.min(left, 50));
    }
  }

  get aborted(): boolean {
    return this.state === GATE_ABORTED;
  }
}

/** Until closed, or until a rank dies or the main thread asks: true then (abort), false when closed. */
function watch(w: Int32Array, data: GuardData): boolean {
  for (;;) {
    const st = Atomics.load(w, GATE_STATE);
    if (st === GATE_CLOSED) return false;
    if (st !== GATE_RUNNING) return true;
    const dead = data.pids.findIndex((p) => !alive(p));
    if (dead >= 0) {
      if (Atomics.compareExchange(w, GATE_STATE, GATE_RUNNING, GATE_FAILED) !== GATE_RUNNING) continue; // closed or failed meanwhile
      Atomics.store(w, GATE_DEAD, dead + 1);
      Atomics.notify(w, GATE_STATE);
      return true;
    }
    Atomics.wait(w, GATE_STATE, GATE_RUNNING, data.pollMs);
  }
}

/**
 * The watcher thread's whole life (tp-guard-worker.ts passes ncclCommAbort as `abort`): watch;
 * on a failure SIGKILL the other ranks (they are stuck in the same collective), take the gate's
 * lock so no call of the main thread is inside NCCL, and abort.
 */
export function runWatcher(data: GuardData, abort: () => number): void {
  const w = new Int32Array(data.words);
  if (!watch(w, data)) return;
  for (const p of data.pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  // A call of the main thread holds the lock for microseconds, unless that call is blocked (a launch
  // into a queue stalled behind the dead rank's collective). Then abort anyway: the abort is what
  // unblocks it, and the group is over either way.
  const end = Date.now() + data.lockMs;
  while (Atomics.compareExchange(w, GATE_LOCK, LOCK_FREE, LOCK_ABORT) !== LOCK_FREE && Date.now() < end) Atomics.wait(w, GATE_STATE, GATE_FAILED, 0.1);
  Atomics.store(w, GATE_LOCK, LOCK_ABORT);
  Atomics.store(w, GATE_STATE, GATE_ABORTING);
  Atomics.notify(w, GATE_STATE);
  const rc = abort();
  Atomics.store(w, GATE_RC, rc);
  Atomics.store(w, GATE_STATE, GATE_ABORTED);
  Atomics.notify(w, GATE_STATE);
}
