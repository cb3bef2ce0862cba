/**
 * Tensor parallelism over N GPUs of one host (issue 6, DESIGN §4): one process per GPU. This
 * process is rank 0 (GPU 0: scheduler, server, sampling); ranks 1..N-1 are forked children
 * (tp-worker.ts) on GPUs 1..N-1 that load only their shards and run every forward rank 0 runs.
 * Step inputs go to them over a FIFO with blocking writes, so a step is fully handed over before
 * rank 0 waits on its GPU (an IPC message could still sit in Node's queue while rank 0 blocks).
 * Each frame also says how rank 0 runs the step: pure decode steps are CUDA graphs with the NCCL
 * calls captured inside, captured and replayed on every rank in lockstep (step-graph.ts).
 *
 * Failures. Rank 0 polls its stream instead of blocking on it, and a watcher thread (tp-guard.ts)
 * polls the other ranks' processes, so a rank that dies at any time — also in the middle of a
 * collective, also while this thread is blocked in native code — is seen within a millisecond:
 * the watcher kills the other ranks and aborts this rank's communicator (NCCL's abort flag makes
 * the orphaned collective kernels return), this thread settles the failure (its stream drains,
 * its CUDA graphs are destroyed so the abort can finish) and the step throws TpRankError. The
 * device is then released as usual; a process whose group failed exits non-zero, and a rank that
 * dies while no step runs ends this process (SIGTERM to itself: the server drains and exits 1).
 */
import { fork, execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CudaBackend, cudaUnavailableReason } from '../backend/cuda/cuda-backend.js';
import { CudaDriver } from '../backend/cuda/driver.js';
import { GATE_ABORTED, GATE_ABORTING, GATE_RUNNING, hardExit, Nccl } from '../backend/cuda/nccl.js';
import type { Backend, MatmulInputs, StepMode } from '../backend/backend.js';
import type { OpenOptions } from '../engine/open.js';
import { encodeStep } from '../engine/tp-step.js';
import type { StepBatch, StepPeers } from '../model/step.js';
import { BailingError } from '../util/errors.js';
import { alive, TpGuard } from './tp-guard.js';

/** GPUs this process could run tensor parallelism on: 0 without a usable CUDA device or libnccl. */
export function tpGpuCount(): number {
  if (cudaUnavailableReason() !== null) return 0;
  try {
    Nccl.open();
  } catch {
    return 0;
  }
  return CudaDriver.open().deviceCount();
}

/** A tensor-parallel rank died or stopped answering. */
export class TpRankError extends BailingError {}

/**
 * What every rank loads: a model directory, or a raw config with dummy weights (benchmarks); a
 * directory with dummySeed is its config.json with dummy weights (`--load-format dummy`).
 */
export interface TpModelSource {
  readonly dir?: string;
  readonly config?: Record<string, unknown>;
  readonly dummySeed?: number;
  /** Every rank's weight-matmul inputs (CudaBackendOptions.matmulInputs; default f32). */
  readonly matmulInputs?: MatmulInputs;
}

/** Sent to each child over IPC at start. */
export interface TpInit {
  readonly rank: number;
  readonly size: number;
  readonly ncclId: string; // base64
  readonly fifo: string;
  readonly source: TpModelSource;
  readonly open: OpenOptions;
}

const STEP_TIMEOUT_MS = Number(process.env.BAILING_TP_TIMEOUT_MS ?? 600_000);

/** Report and end this process: the server's SIGTERM handler drains (failing in-flight requests) and exits. */
function defaultRankExit(e: TpRankError): void {
  process.stderr.write(`bailing: ${e.message}\n`);
  process.exitCode = 1;
  process.kill(process.pid, 'SIGTERM');
}

/** Bounds of settling a failure (each is milliseconds of an already failed group's life). */
const ABORT_START_MS = 2000, DRAIN_MS = 5000, ABORT_END_MS = 5000;

export class TpGroup implements StepPeers {
  private failure: TpRankError | null = null;
  private reported = false;
  private closing = false;
  /** null: no failure settled yet; true: communicator aborted, graphs gone, stream idle; false: gave up. */
  private settled: boolean | null = null;

  private constructor(
    readonly be: CudaBackend,
    private readonly nccl: Nccl,
    private readonly guard: TpGuard,
    private readonly children: ChildProcess[],
    private readonly fds: number[],
    private readonly tmp: string,
    /** Started with the default onRankExit: a failure ends this process, with a non-zero code. */
    private readonly endsProcess: boolean,
  ) {}

  /**
   * Fork ranks 1..size-1, make the NCCL communicator (rank 0 on GPU 0) and wait until every child
   * has loaded its shards. `open` must be the options rank 0 opens its model with.
   */
  static async start(size: number, source: TpModelSource, open: OpenOptions, onRankExit: (e: TpRankError) => void = defaultRankExit): Promise<TpGroup> {
    process.env.NCCL_NVLS_ENABLE = '0'; // inherited by the children; never NVLink multicast here
    const nccl = Nccl.open();
    const id = nccl.uniqueId();
    const tmp = mkdtempSync(join(tmpdir(), 'bailing-tp-'));
    const worker = join(dirname(fileURLToPath(import.meta.url)), 'tp-worker.js');
    const children: ChildProcess[] = [];
    const ready: Promise<void>[] = [];
    for (let rank = 1; rank < size; rank++) {
      const fifo = join(tmp, `steps-${rank}`);
      execFileSync('mkfifo', [fifo]);
      const child = fork(worker, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      children.push(child);
      ready.push(
        new Promise((ok, fail) => {
          child.on('message', (m: { type: string; message?: string }) => (m.type === 'ready' ? ok() : m.type === 'error' ? fail(new TpRankError(`rank ${rank}: ${m.message}`)) : undefined));
          child.once('exit', (code, sig) => fail(new TpRankError(`rank ${rank} exited during start (${sig ?? `code ${code}`})`)));
        }),
      );
      const init: TpInit = { rank, size, ncclId: Buffer.from(id).toString('base64'), fifo, source, open };
      child.send(init);
    }
    const kill = (): void => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL'));
    let group: TpGroup | null = null;
    let guard: TpGuard | null = null;
    process.once('exit', (code) => {
      // Stop the watcher before the children go (it would take their deaths for a failure).
      if (guard && !guard.close()) group?.atExit(code);
      kill();
    });
    try {
      const be = new CudaBackend({ device: 0, dummyWeights: source.dummySeed !== undefined ? { seed: source.dummySeed } : undefined, matmulInputs: source.matmulInputs, tp: () => ({ nccl, comm: nccl.commInitRank(size, id, 0), rank: 0, size }) });
      guard = TpGuard.start(
        children.map((c) => c.pid ?? -1),
        Nccl.address(be.tp!.comm),
      );
      nccl.useGate(guard.words);
      // Blocks until each child has opened its end for reading (they do so before anything else).
      const fds = children.map((_, i) => openSync(join(tmp, `steps-${i + 1}`), 'w'));
      const g = (group = new TpGroup(be, nccl, guard, children, fds, tmp, onRankExit === defaultRankExit));
      children.forEach((c, i) =>
        c.on('exit', (code, sig) => {
          if (g.closing) return;
          // The watcher may have killed this rank because another one died first: name that one.
          const first = g.guard.deadRank;
          const e = g.fail(`tensor-parallel rank ${first > 0 && first !== i + 1 ? `${first} died` : `${i + 1} exited (${sig ?? `code ${code}`})`}; the model cannot continue`);
          if (g.reported) return;
          g.reported = true;
          onRankExit(e);
        }),
      );
      await Promise.all(ready);
      return g;
    } catch (e) {
      kill();
      guard?.fail(); // a rank that died while loading: the communicator is aborted (nothing captured yet)
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** Rank 0's backend for the engine; dispose() shuts the whole group down. */
  backend(): Backend {
    const be = this.be;
    return {
      name: be.name,
      actDtype: be.actDtype,
      ops: be.ops,
      alloc: (d, s) => be.alloc(d, s),
      loadWeight: (s, u) => be.loadWeight(s, u),
      upload: (t, s) => be.upload(t, s),
      download: (t) => be.download(t),
      sync: () => be.sync(),
      runStep: (b, f, s, t) => be.runStep(b, f, s, t),
      // Rank 0 holds the whole vocabulary's logits after the step (all-gathered): it samples alone.
      sampleRows: (l, a) => be.sampleRows(l, a),
      dispose: () => void this.shutdown(),
    };
  }

  /** Process ids of ranks 1..size-1. */
  get pids(): number[] {
    return this.children.map((c) => c.pid ?? -1);
  }

  get size(): number {
    return this.children.length + 1;
  }

  /** True once a failure has been settled: communicator aborted, CUDA graphs destroyed, stream idle. */
  get aborted(): boolean {
    return this.settled === true;
  }

  send(batch: StepBatch, mode: StepMode): void {
    if (this.failure) throw this.failure;
    if (this.guard.state !== GATE_RUNNING) throw this.fail(this.guardMessage());
    const frame = encodeStep(batch, mode);
    for (const [i, fd] of this.fds.entries()) {
      try {
        for (let at = 0; at < frame.length; ) at += writeSync(fd, frame, at);
      } catch (e) {
        throw this.fail(`rank ${i + 1}: step not delivered (${(e as Error).message})`);
      }
    }
  }

  wait(): void {
    const t0 = Date.now();
    const nap = new Int32Array(new SharedArrayBuffer(4));
    const tp = this.be.tp!;
    for (;;) {
      // Read the watcher first: a stream that went idle because the watcher aborted the
      // communicator (its collectives returned early) is a failed step, not a finished one.
      const watched = this.guard.state;
      if (watched !== GATE_RUNNING) throw this.fail(this.guardMessage());
      if (this.nccl.streamIdle(this.be.c.stream)) {
        if (this.guard.state !== GATE_RUNNING) throw this.fail(this.guardMessage());
        return;
      }
      const dead = this.children.findIndex((c) => !alive(c.pid));
      const late = Date.now() - t0 > STEP_TIMEOUT_MS;
      const nccl = dead < 0 && !late ? this.nccl.asyncError(tp.comm) : 0;
      if (dead >= 0 || late || nccl !== 0)
        throw this.fail(dead >= 0 ? `tensor-parallel rank ${dead + 1} died during a step` : late ? `a tensor-parallel step took over ${STEP_TIMEOUT_MS} ms` : `NCCL error ${nccl}`);
      Atomics.wait(nap, 0, 0, 0.05); // 50 µs between polls
    }
  }

  private guardMessage(): string {
    const r = this.guard.deadRank;
    return this.failure?.message ?? (r > 0 ? `tensor-parallel rank ${r} died` : 'the tensor-parallel group failed');
  }

  /** Record the group's failure (the first message wins), have the communicator aborted and settle it. */
  private fail(message: string): TpRankError {
    this.failure ??= new TpRankError(message);
    this.guard.fail();
    this.settle();
    return this.failure;
  }

  /**
   * After a failure, on this thread: wait until the watcher has raised NCCL's abort flag, until
   * this rank's stream has drained (the collectives waiting on the dead rank return; what follows
   * them runs on garbage nobody reads), destroy the CUDA graphs (NCCL's abort waits until every
   * graph that captured its collectives is gone, and only this thread may destroy them), and wait
   * for the abort to return. Bounded; false: the device is left to the process's exit (atExit).
   */
  private settle(): boolean {
    if (this.settled !== null) return this.settled;
    let ok = this.guard.waitFor(GATE_ABORTING, ABORT_START_MS);
    const nap = new Int32Array(new SharedArrayBuffer(4));
    const end = Date.now() + DRAIN_MS;
    try {
      while (ok && !this.nccl.streamIdle(this.be.c.stream)) {
        if (Date.now() > end) ok = false;
        else Atomics.wait(nap, 0, 0, 0.1);
      }
      if (ok) this.be.graphs?.dispose();
    } catch (e) {
      process.stderr.write(`bailing: releasing the failed tensor-parallel group: ${(e as Error).message}\n`);
      ok = false;
    }
    this.settled = ok && this.guard.waitFor(GATE_ABORTED, ABORT_END_MS);
    if (!this.settled) process.stderr.write(`bailing: the tensor-parallel communicator could not be aborted in time (state ${this.guard.state}); the process will end without releasing GPU 0 itself\n`);
    return this.settled;
  }

  /**
   * Process exit after a failure. A watcher still inside ncclCommAbort (the failure could not be
   * settled) would make Node's exit wait on that thread forever, so the process then ends with
   * _exit. With the default onRankExit the failure ends the process, and never with code 0 (the
   * server's SIGTERM path exits 0 otherwise; the exit code is read again after these handlers).
   */
  private atExit(code: number): void {
    if (this.guard.state !== GATE_ABORTED) this.fail(this.guardMessage());
    const exit = code || (this.endsProcess ? 1 : 0);
    process.exitCode = exit;
    if (this.guard.state !== GATE_ABORTED) hardExit(exit || 1);
  }

  /** Stop the children (they exit on 'exit' or when this process goes) and free rank 0's GPU. */
  async shutdown(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    // A failure first settles (communicator aborted, graphs destroyed); then nothing may touch NCCL.
    const clean = !this.failure && this.guard.close();
    if (!clean) this.fail(this.guardMessage());
    // A child killed by a signal has signalCode set and exitCode null: both mean it is gone.
    const exited = this.children.map((c) => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once('exit', () => r()))));
    // With a callback a failed send (EPIPE: the rank is dead, its channel not yet closed) is not an 'error' event.
    for (const c of this.children) if (c.connected) c.send({ type: 'exit' }, () => {});
    for (const fd of this.fds) closeSync(fd);
    const timer = setTimeout(() => this.children.forEach((c) => c.kill('SIGKILL')), 10_000);
    await Promise.all(exited);
    clearTimeout(timer);
    // After a settled failure the gate skips ncclCommDestroy (the abort freed the communicator).
    if (clean || this.settled) this.be.dispose();
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
