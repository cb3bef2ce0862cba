/**
 * Tensor-parallel step inputs on the wire: rank 0 encodes each StepBatch into one Int32 frame
 * (ids, positions, sample rows, and each sequence's state slot, row range, context start and block
 * table) and how rank 0 runs it (eagerly, or capturing / replaying a CUDA graph), and the other
 * ranks decode it and run the same forward, the same way, on their own shards. The followers
 * keep no scheduler: rank 0's cache bookkeeping (slots, blocks) is authoritative and travels with
 * every step; a sequence whose context starts at 0 gets its state slot zeroed first, as
 * HybridCache.allocSeq does on rank 0.
 */
import type { StepMode } from '../backend/backend.js';
import { CacheSeq, type HybridCache } from '../cache/hybrid-cache.js';
import type { Model } from '../model/forward.js';
import type { StepBatch, StepSeq } from '../model/step.js';
import type { Tensor } from '../tensor/tensor.js';
import { assert } from '../util/assert.js';
import { InternalError } from '../util/errors.js';

const MAGIC = 0x7470_0002;
const HEAD = 5; // magic, T, seqs, sampleRows, mode
const MODES: readonly StepMode[] = ['eager', 'capture', 'replay'];

/** One frame: [byteLength (u32 LE)] then the Int32 words. */
export function encodeStep(b: StepBatch, mode: StepMode): Uint8Array {
  const T = b.ids.length, S = b.sampleRows.length;
  const words = HEAD + 2 * T + S + b.seqs.reduce((a, s) => a + 5 + s.seq.blockTable.length, 0);
  const buf = new Uint8Array(4 + 4 * words);
  new DataView(buf.buffer).setUint32(0, 4 * words, true);
  const w = new Int32Array(buf.buffer, 4, words);
  w.set([MAGIC, T, b.seqs.length, S, MODES.indexOf(mode)]);
  w.set(b.ids, HEAD);
  w.set(b.positions, HEAD + T);
  w.set(b.sampleRows, HEAD + 2 * T);
  let at = HEAD + 2 * T + S;
  for (const s of b.seqs) {
    const bt = s.seq.blockTable;
    w.set([s.seq.slot, s.start, s.len, s.ctxStart, bt.length], at);
    w.set(bt, at + 5);
    at += 5 + bt.length;
  }
  return buf;
}

/** Runs the steps rank 0 sends, on this rank's model and cache. */
export class StepFollower {
  private readonly zeros: Float64Array;

  constructor(
    readonly model: Model,
    readonly cache: HybridCache,
  ) {
    const st = [...cache.states.values()][0];
    this.zeros = new Float64Array(st ? st.rowSize : 0);
  }

  /** Decode one frame's words (without the length prefix) and run its forward the way rank 0 does. */
  run(words: Int32Array): void {
    const step = decodeStep(words);
    const { model, cache } = this, be = model.be;
    for (const s of step.batch.seqs) if (s.ctxStart === 0) for (const st of cache.states.values()) be.upload(st.rows(s.seq.slot, 1), this.zeros);
    const forward = (): Tensor => model.forward(step.batch, cache); // no peers here: this rank's part only
    if (step.mode === 'eager') forward();
    else if (be.runStep) be.runStep(step.batch, forward, [model, cache], { follow: step.mode });
    else throw new InternalError(`rank 0 runs a step as a graph (${step.mode}); this rank's backend has no step runner`);
  }
}

/** A frame's words (without the length prefix) back into a StepBatch over fresh sequences, and its mode. */
export function decodeStep(words: Int32Array): { batch: StepBatch; mode: StepMode } {
  assert(words[0] === MAGIC, () => `tensor-parallel step frame: bad magic ${words[0]}`);
  const T = words[1], nSeqs = words[2], S = words[3], mode = MODES[words[4]];
  assert(mode !== undefined, () => `tensor-parallel step frame: bad mode ${words[4]}`);
  const ids = words.subarray(HEAD, HEAD + T), positions = words.subarray(HEAD + T, HEAD + 2 * T);
  const sampleRows = words.subarray(HEAD + 2 * T, HEAD + 2 * T + S);
  const seqs: StepSeq[] = [];
  let at = HEAD + 2 * T + S;
  for (let i = 0; i < nSeqs; i++) {
    const [slot, start, len, ctxStart, nb] = words.subarray(at, at + 5);
    const seq = new CacheSeq(i, slot);
    for (const b of words.subarray(at + 5, at + 5 + nb)) seq.blocks.push(b);
    seq.length = ctxStart;
    seqs.push({ seq, start, len, ctxStart });
    at += 5 + nb;
  }
  return { batch: { ids, positions, seqs, sampleRows }, mode };
}

/** Splits a byte stream into frames (each handed over as its Int32 words). */
export class FrameReader {
  private buf = new Uint8Array(0);

  push(chunk: Uint8Array, onFrame: (words: Int32Array) => void): void {
    const all = new Uint8Array(this.buf.length + chunk.length);
    all.set(this.buf);
    all.set(chunk, this.buf.length);
    let at = 0;
    while (all.length - at >= 4) {
      const n = new DataView(all.buffer, all.byteOffset + at).getUint32(0, true);
      if (all.length - at - 4 < n) break;
      onFrame(new Int32Array(all.slice(at + 4, at + 4 + n).buffer));
      at += 4 + n;
    }
    this.buf = all.slice(at);
  }
}
