/**
 * Stop strings over streamed text. Text that could be the start of a stop string is held back
 * until it is known not to be one; when a stop string completes, the text before it is emitted
 * and the stop string itself is not (OpenAI semantics). The earliest match in the text wins.
 */

export interface StopResult {
  /** Text safe to emit now. */
  text: string;
  /** The stop string that ended generation, or null. */
  stop: string | null;
}

export class StopMatcher {
  private readonly stops: readonly string[];
  private held = '';
  private done = false;

  constructor(stops: readonly string[]) {
    // An empty stop string would match everywhere; the request validator rejects it, skip it here.
    this.stops = stops.filter((s) => s.length > 0);
  }

  get stopped(): boolean {
    return this.done;
  }

  /** Consumes a chunk of generated text. After a stop, further pushes return nothing. */
  push(chunk: string): StopResult {
    if (this.done) return { text: '', stop: null };
    if (this.stops.length === 0) return { text: chunk, stop: null };
    const buf = this.held + chunk;
    // Earliest occurrence; among stops starting at the same place, the shortest completes first.
    let at = -1;
    let hit: string | null = null;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at || (i === at && s.length < (hit?.length ?? 0)))) {
        at = i;
        hit = s;
      }
    }
    if (hit !== null) {
      this.done = true;
      this.held = '';
      return { text: buf.slice(0, at), stop: hit };
    }
    const keep = this.partialSuffix(buf);
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stop: null };
  }

  /** End of generation without a stop: the held-back text is ordinary output. */
  flush(): string {
    const out = this.done ? '' : this.held;
    this.held = '';
    return out;
  }

  /** Length of the longest suffix of buf that is a proper prefix of some stop string. */
  private partialSuffix(buf: string): number {
    let best = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > best; n--) {
        if (buf.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
