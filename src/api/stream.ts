/**
 * A push-fed async iterable with a final result: the engine pushes chunks from its step loop,
 * a consumer iterates them (or only awaits `result`). Chunks are buffered until read, so a
 * consumer that never iterates still gets the result (the buffer is bounded by the output).
 */
export class ChunkStream<C, R> implements AsyncIterable<C> {
  private readonly queue: C[] = [];
  private waiter: (() => void) | null = null;
  private ended = false;
  private error: unknown = null;
  private iterating = false;
  /** Settles with the whole output once generation ends (rejects on error or abort). */
  readonly result: Promise<R>;
  private settle!: { resolve: (r: R) => void; reject: (e: unknown) => void };

  constructor(private readonly onReturn: () => void = () => {}) {
    this.result = new Promise<R>((resolve, reject) => (this.settle = { resolve, reject }));
    // A consumer that only iterates must not see an unhandled rejection from `result`.
    this.result.catch(() => {});
  }

  push(chunk: C): void {
    if (this.ended) return;
    this.queue.push(chunk);
    this.wake();
  }

  end(result: R): void {
    if (this.ended) return;
    this.ended = true;
    this.settle.resolve(result);
    this.wake();
  }

  fail(e: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.error = e;
    this.settle.reject(e);
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<C> {
    if (this.iterating) throw new TypeError('a generation stream can be iterated once');
    this.iterating = true;
    try {
      for (;;) {
        if (this.queue.length > 0) {
          yield this.queue.shift()!;
          continue;
        }
        if (this.ended) {
          if (this.error !== null) throw this.error;
          return;
        }
        await new Promise<void>((r) => (this.waiter = r));
      }
    } finally {
      // Leaving the loop early (break, throw in the body) cancels the generation.
      if (!this.ended) this.onReturn();
    }
  }
}
