/**
 * A last-resort exit. The CLI starts the watchdog thread at startup and arms it once it has
 * decided to exit (shutdown, fatal error): a main thread blocked in native code — e.g. a CUDA
 * call waiting on a collective whose peer rank died — can never run a timer or finish its exit
 * handlers, but this thread, already running, can still kill the process. Started early because
 * a worker cannot finish starting while the main thread is blocked. Unref'ed: it never delays a
 * normal exit.
 */
import { Worker } from 'node:worker_threads';

const WHY_BYTES = 256;

export class ExitWatchdog {
  private readonly ctrl = new Int32Array(new SharedArrayBuffer(12));
  private readonly why = new Uint8Array(new SharedArrayBuffer(WHY_BYTES));
  /** Resolves once the thread runs (the unref'ed worker does not keep the event loop alive meanwhile). */
  readonly ready: Promise<void>;

  constructor() {
    const w = new Worker(new URL('./watchdog-worker.js', import.meta.url), { workerData: { ctrl: this.ctrl.buffer, why: this.why.buffer }, execArgv: [] });
    w.unref();
    this.ready = new Promise((r) => w.once('online', () => r()));
  }

  /** Kill the process `ms` from now unless it has exited by then. The first call wins. */
  arm(ms: number, why: string): void {
    if (Atomics.load(this.ctrl, 0) !== 0) return;
    this.why.set(Buffer.from(why, 'utf8').subarray(0, WHY_BYTES));
    Atomics.store(this.ctrl, 1, Math.max(1, Math.floor(ms)));
    Atomics.store(this.ctrl, 0, 1);
    Atomics.notify(this.ctrl, 0);
  }
}
