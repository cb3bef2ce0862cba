/**
 * Runs the engine on the event loop: one step, then setImmediate, so HTTP handling (new
 * requests, aborts, socket writes) waits at most one step. Sleeps while idle and wakes on
 * submit. drain() stops taking requests and resolves once the queued ones have finished.
 * A step that throws fails every pending request with that error and stops the loop (DESIGN §5:
 * a broken invariant is not recoverable in place).
 */
import { setImmediate as tick } from 'node:timers/promises';
import { BailingError } from '../util/errors.js';
import type { Engine, GenerateRequest, GenerateResult } from './engine.js';

/** The driver takes no more requests (draining, stopped, or failed). */
export class EngineUnavailableError extends BailingError {}

export class EngineDriver {
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  private accepting = true;
  private stopped = false;
  /** The error that stopped the loop, if one did. */
  failure: unknown = null;

  constructor(
    readonly engine: Engine,
    /** Told when a step fails (after every pending request was failed); the server logs it. */
    public onError: (e: unknown) => void = () => {},
  ) {}

  /** True until drain(), stop() or a failed step. */
  get available(): boolean {
    return this.accepting && !this.stopped;
  }

  start(): void {
    if (!this.loop) this.loop = this.run();
  }

  /** Queue a request (throws InvalidRequestError for an impossible one, EngineUnavailableError when closed). */
  submit(req: GenerateRequest): { id: number; result: Promise<GenerateResult> } {
    if (!this.available) throw new EngineUnavailableError(this.failure ? 'the engine failed and takes no more requests' : 'the server is shutting down');
    const h = this.engine.enqueue(req);
    this.start();
    this.poke();
    return h;
  }

  abort(id: number): boolean {
    return this.engine.abort(id);
  }

  /** Stop taking requests; resolve when every queued one is done. After timeoutMs, abort the rest. */
  async drain(timeoutMs = Infinity): Promise<void> {
    this.accepting = false;
    this.start();
    this.poke();
    const timer = Number.isFinite(timeoutMs) ? setTimeout(() => this.engine.abortAll(), timeoutMs) : null;
    try {
      await this.loop;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** Abort everything and stop the loop. */
  async stop(): Promise<void> {
    this.accepting = false;
    this.engine.abortAll();
    this.stopped = true;
    this.poke();
    await this.loop;
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async run(): Promise<void> {
    // Start on a later turn of the event loop: submit() returns at once instead of running a
    // whole step (a long prefill) inside the caller.
    await tick();
    while (!this.stopped) {
      if (this.engine.pending === 0) {
        if (!this.accepting) break;
        await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      try {
        this.engine.step();
      } catch (e) {
        this.failure = e;
        this.stopped = true;
        this.engine.failAll(e);
        this.onError(e);
        break;
      }
      await tick();
    }
  }
}
