/**
 * Tensor parallelism over N GPUs of one host (issue 6, DESIGN §4): one process per GPU. This
 * process is rank 0 (GPU 0: scheduler, server, sampling); ranks 1..N-1 are forked children
 * (tp-worker.ts) on GPUs 1..N-1 that load only their shards and run every forward rank 0 runs.
 * Step inputs go to them over a FIFO with blocking writes, so a step is fully handed over before
 * rank 0 waits on its GPU (an IPC message could still sit in Node's queue while rank 0 blocks).
 * Each frame also says how rank 0 runs the step: pure decode steps are CUDA graphs with the NCCL
 * calls captured inside, captured and replayed on every rank in lockstep (step-graph.ts).
 * Rank 0 never blocks inside a CUDA call while peers may be dead: it polls its stream and the
 * children's /proc state, and on a dead rank throws (an NCCL error or a timeout also aborts the
 * communicator). A rank that dies
 * at any time is reported and ends this process (SIGTERM to itself: the server drains and exits).
 */
import { fork, execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CudaBackend } from '../backend/cuda/cuda-backend.js';
import { Nccl } from '../backend/cuda/driver.js';
import type { Backend, StepMode } from '../backend/backend.js';
import type { OpenOptions } from '../engine/open.js';
import { encodeStep } from '../engine/tp-step.js';
import type { StepBatch, StepPeers } from '../model/step.js';
import { BailingError } from '../util/errors.js';

/** A tensor-parallel rank died or stopped answering. */
export class TpRankError extends BailingError {}

/** What every rank loads: a model directory, or a raw config with dummy weights (benchmarks). */
export interface TpModelSource {
  readonly dir?: string;
  readonly config?: Record<string, unknown>;
  readonly dummySeed?: number;
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

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    // A crashed child stays a zombie until the event loop reaps it: read its state instead of kill(0).
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Report and end this process: the server's SIGTERM handler drains (failing in-flight requests) and exits. */
function defaultRankExit(e: TpRankError): void {
  process.stderr.write(`bailing: ${e.message}\n`);
  process.kill(process.pid, 'SIGTERM');
}

export class TpGroup implements StepPeers {
  private failure: TpRankError | null = null;
  private closing = false;

  private constructor(
    readonly be: CudaBackend,
    private readonly nccl: Nccl,
    private readonly children: ChildProcess[],
    private readonly fds: number[],
    private readonly tmp: string,
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
    process.once('exit', kill);
    try {
      const be = new CudaBackend({ device: 0, dummyWeights: source.dummySeed !== undefined ? { seed: source.dummySeed } : undefined, tp: () => ({ nccl, comm: nccl.commInitRank(size, id, 0), rank: 0, size }) });
      // Blocks until each child has opened its end for reading (they do so before anything else).
      const fds = children.map((_, i) => openSync(join(tmp, `steps-${i + 1}`), 'w'));
      const group = new TpGroup(be, nccl, children, fds, tmp);
      children.forEach((c, i) =>
        c.on('exit', (code, sig) => {
          if (group.closing) return;
          group.failure ??= new TpRankError(`tensor-parallel rank ${i + 1} exited (${sig ?? `code ${code}`}); the model cannot continue`);
          kill();
          onRankExit(group.failure);
        }),
      );
      await Promise.all(ready);
      return group;
    } catch (e) {
      kill();
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

  send(batch: StepBatch, mode: StepMode): void {
    if (this.failure) throw this.failure;
    const frame = encodeStep(batch, mode);
    for (const [i, fd] of this.fds.entries()) {
      try {
        for (let at = 0; at < frame.length; ) at += writeSync(fd, frame, at);
      } catch (e) {
        throw (this.failure ??= new TpRankError(`rank ${i + 1}: step not delivered (${(e as Error).message})`));
      }
    }
  }

  wait(): void {
    const t0 = Date.now();
    const nap = new Int32Array(new SharedArrayBuffer(4));
    const tp = this.be.tp!;
    while (!this.nccl.streamIdle(this.be.c.stream)) {
      const dead = this.children.findIndex((c) => !alive(c.pid));
      const late = Date.now() - t0 > STEP_TIMEOUT_MS;
      if (dead >= 0 || late || this.nccl.asyncError(tp.comm) !== 0) {
        this.failure ??= new TpRankError(dead >= 0 ? `tensor-parallel rank ${dead + 1} died during a step` : late ? `a tensor-parallel step took over ${STEP_TIMEOUT_MS} ms` : `NCCL error ${this.nccl.asyncError(tp.comm)}`);
        // Not with a dead rank: ncclCommAbort then blocks (its teardown syncs with every rank, NVIDIA/nccl#863)
        // while this rank's collective waits on the dead one. The group is over either way: the
        // stream is never used again (shutdown skips dispose after a failure) and this process ends.
        if (dead < 0) this.nccl.abort(tp.comm);
        throw this.failure;
      }
      Atomics.wait(nap, 0, 0, 0.05); // 50 µs between polls
    }
  }

  /** Stop the children (they exit on 'exit' or when this process goes) and free rank 0's GPU. */
  async shutdown(): Promise<void> {
    this.closing = true;
    // A child killed by a signal has signalCode set and exitCode null: both mean it is gone.
    const exited = this.children.map((c) => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once('exit', () => r()))));
    for (const c of this.children) if (c.connected) c.send({ type: 'exit' });
    for (const fd of this.fds) closeSync(fd);
    const timer = setTimeout(() => this.children.forEach((c) => c.kill('SIGKILL')), 10_000);
    await Promise.all(exited);
    clearTimeout(timer);
    if (!this.failure) this.be.dispose();
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
