/**
 * A fixed pool of worker threads that run kernel slices synchronously: the caller posts one
 * job message per worker, wakes them through a shared control word, runs its own slice, then
 * blocks until all slices are done. Ops stay synchronous and destination-passing; the data
 * lives in SharedArrayBuffers (the CPU backend allocates every tensor there).
 */
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { assert } from '../../util/assert.js';
import type { WorkerJob } from './worker-job.js';

const GEN = 0;
const PENDING = 1;
const FAILED = 2;

export class ThreadPool {
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];
  private readonly ctrl = new Int32Array(new SharedArrayBuffer(12));
  private disposed = false;

  /** threads counts the calling thread: threads = 1 means no workers. */
  constructor(readonly threads: number) {
    assert(threads >= 1, `thread count must be >= 1, got ${threads}`);
    for (let i = 0; i < threads - 1; i++) {
      const { port1, port2 } = new MessageChannel();
      const w = new Worker(new URL('./worker.js', import.meta.url), {
        workerData: { port: port2, ctrl: this.ctrl },
        transferList: [port2],
      });
      w.unref();
      this.workers.push(w);
      this.ports.push(port1);
    }
  }

  /**
   * Run jobs[0] on this thread and jobs[1..] on workers (at most `threads` jobs), returning when
   * all are done. run(i) executes job i locally.
   */
  run<J extends WorkerJob>(jobs: J[], local: (job: J) => void): void {
    assert(!this.disposed, 'thread pool used after dispose()');
    assert(jobs.length >= 1 && jobs.length <= this.threads, () => `pool of ${this.threads} given ${jobs.length} jobs`);
    const remote = jobs.length - 1;
    if (remote > 0) {
      for (let i = 0; i < remote; i++) this.ports[i].postMessage(jobs[i + 1]);
      // Workers without a job this round get a no-op so that every worker sees each generation.
      for (let i = remote; i < this.workers.length; i++) this.ports[i].postMessage({ kind: 'noop' } satisfies WorkerJob);
      Atomics.store(this.ctrl, PENDING, this.workers.length);
      Atomics.add(this.ctrl, GEN, 1);
      Atomics.notify(this.ctrl, GEN);
    }
    local(jobs[0]);
    if (remote > 0) {
      for (;;) {
        const p = Atomics.load(this.ctrl, PENDING);
        if (p === 0) break;
        Atomics.wait(this.ctrl, PENDING, p);
      }
      assert(Atomics.exchange(this.ctrl, FAILED, 0) === 0, 'a CPU worker thread failed its job slice');
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const w of this.workers) void w.terminate();
    for (const p of this.ports) p.close();
  }
}
