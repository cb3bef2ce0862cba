/**
 * Direct replay of captured decode steps (step-graph.ts): each host argument a captured step staged
 * carries a hint saying how it follows from the step (ids, positions, a sequence's cache rows…).
 * At capture the hints become writers over the graph's own copy of the argument arena; a replay
 * runs only the writers on the next step (O(batch) host work) instead of the model's host code
 * (O(kernels)). A hint that cannot be resolved, or a writer that does not reproduce the capture's
 * own bytes, leaves the graph to the staging pass — so a wrong hint can cost speed, never results.
 */
import type { StepShape } from '../backend.js';

/** How a staged argument follows from the step; null: unknown (no direct replay). */
export type ArgHint =
  | null
  /** The same bytes every step (inverse frequencies, decay rates). */
  | 'const'
  | 'ids'
  /** Rows of a vocab-parallel embedding piece for the step's ids (pieceIds). */
  | { readonly kind: 'vocabPiece'; readonly start: number; readonly count: number; readonly zeroRow: number }
  | 'positions'
  | 'sampleRows'
  /** Lightning state slots of consecutive sequences of the step. */
  | 'slots'
  /** Paged cache rows of positions [from, from + n) of the sequence owning `table`. */
  | { readonly kind: 'cacheRows'; readonly table: Int32Array; readonly blockSize: number; readonly from: number }
  /** MLA decode metadata of the sequences owning `tables` (mlaDecodeMeta). */
  | { readonly kind: 'mlaMeta'; readonly tables: readonly Int32Array[]; readonly blockSize: number };

/** One argument of a staging pass: where it sits in the arena and how to recompute it. */
export interface StagedArg {
  readonly key: string;
  readonly off: number;
  readonly bytes: number;
  readonly hint: ArgHint;
}

/** Writes this step's value into the image (Int32 view); false when the step needs another layout. */
type Writer = (b: StepShape, img: Int32Array) => boolean;

/** Padded MLA block-table length of a decode token at position ctxStart (ops-attention.ts). */
export function mlaMetaLength(ctxStart: number, blockSize: number): number {
  const used = Math.ceil((ctxStart + 1) / blockSize);
  return 1 + Math.max(64, 2 ** Math.ceil(Math.log2(used)));
}

/** One-token sequences as MLA decode metadata sees them. */
export interface MlaMetaSeq {
  readonly ctxStart: number;
  readonly blockTable: Int32Array;
}

/**
 * Words per sequence of MLA decode metadata: the longest sequence's mlaMetaLength, so the layout
 * keeps its shape as contexts grow (a captured graph replays until that crosses a power of two).
 */
export function mlaMetaStride(seqs: readonly MlaMetaSeq[], blockSize: number): number {
  return Math.max(...seqs.map((s) => mlaMetaLength(s.ctxStart, blockSize)));
}

/**
 * MLA decode metadata into dst from `off`: per sequence [ctxStart, block table zero-padded],
 * `stride` words apart. False when a sequence's table is shorter than its context.
 */
export function fillMlaMeta(dst: Int32Array, off: number, seqs: readonly MlaMetaSeq[], blockSize: number, stride: number): boolean {
  for (let i = 0; i < seqs.length; i++) {
    const s = seqs[i], used = Math.ceil((s.ctxStart + 1) / blockSize), at = off + i * stride;
    if (used > s.blockTable.length) return false;
    dst[at] = s.ctxStart;
    dst.set(s.blockTable.subarray(0, used), at + 1);
    dst.fill(0, at + 1 + used, at + stride);
  }
  return true;
}

function writer(a: StagedArg, batch: StepShape): Writer | null {
  const at = a.off / 4, n = a.bytes / 4;
  const h = a.hint;
  if (h === null || h === 'const') return null;
  if (h === 'ids' || h === 'positions' || h === 'sampleRows')
    return (b, img) => {
      const v = b[h];
      if (v.length !== n) return false;
      img.set(v, at);
      return true;
    };
  if (h === 'slots') return null; // resolved in ReplayPlan.build from the captured values
  if (h.kind === 'vocabPiece')
    return (b, img) => {
      if (b.ids.length !== n) return false;
      for (let i = 0; i < n; i++) {
        const id = b.ids[i];
        img[at + i] = id >= h.start && id < h.start + h.count ? id - h.start : h.zeroRow;
      }
      return true;
    };
  if (h.kind === 'mlaMeta') {
    const ks = h.tables.map((t) => batch.seqs.findIndex((s) => s.seq.blockTable === t));
    if (ks.some((k) => k < 0) || n % ks.length !== 0) return null;
    const stride = n / ks.length;
    return (b, img) => {
      const seqs = ks.map((k) => ({ ctxStart: b.seqs[k].ctxStart, blockTable: b.seqs[k].seq.blockTable }));
      // Another stride is another layout: the graph is captured again.
      return mlaMetaStride(seqs, h.blockSize) === stride && fillMlaMeta(img, at, seqs, h.blockSize, stride);
    };
  }
  // Paged cache rows.
  const k = batch.seqs.findIndex((s) => s.seq.blockTable === h.table);
  if (k < 0) return null;
  const bs = h.blockSize, d0 = h.from - batch.seqs[k].ctxStart;
  return (b, img) => {
    const s = b.seqs[k];
    const t = s.seq.blockTable;
    for (let i = 0; i < n; i++) {
      const pos = s.ctxStart + d0 + i, blk = Math.floor(pos / bs);
      if (blk >= t.length) return false;
      img[at + i] = t[blk] * bs + (pos % bs);
    }
    return true;
  };
}

/** The writers of one captured graph. */
export class ReplayPlan {
  private constructor(private readonly writers: readonly Writer[]) {}

  /**
   * Writers for a capture's staged arguments, or null when one is unknown or does not reproduce
   * what the model's host code staged for the capture's own step (`image`).
   */
  static build(args: readonly StagedArg[], image: Uint8Array, batch: StepShape): ReplayPlan | null {
    const img = new Int32Array(image.buffer, image.byteOffset, image.byteLength >> 2);
    const writers: Writer[] = [];
    for (const a of args) {
      if (a.hint === 'const') continue;
      if (a.off % 4 !== 0 || a.bytes % 4 !== 0) return null;
      let w: Writer | null;
      const at = a.off / 4, n = a.bytes / 4;
      if (a.hint === 'slots') {
        // Slots are unique per sequence, so the captured first slot locates the first sequence.
        const first = batch.seqs.findIndex((s) => s.seq.slot === img[at]);
        w =
          first < 0
            ? null
            : (b, im) => {
                if (first + n > b.seqs.length) return false;
                for (let i = 0; i < n; i++) im[at + i] = b.seqs[first + i].seq.slot;
                return true;
              };
      } else w = writer(a, batch);
      if (!w) return null;
      // Check against the capture's own values: the writer must reproduce them bit for bit.
      const probe = img.slice();
      if (!w(batch, probe)) return null;
      for (let i = at; i < at + n; i++) if (probe[i] !== img[i]) return null;
      writers.push(w);
    }
    return new ReplayPlan(writers);
  }

  /** This step's values into img; false when the step needs another graph (e.g. a longer block table). */
  write(b: StepShape, img: Int32Array): boolean {
    for (const w of this.writers) if (!w(b, img)) return false;
    return true;
  }
}
