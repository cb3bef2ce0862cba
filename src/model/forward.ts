/**
 * The decoder forward pass (spec §1.2), top to bottom like the reference:
 *   r = embed(ids); for each layer: r += mixer(norm_in(r)); r += ffn(norm_post(r));
 *   logits = lm_head(norm_f(r)) on the rows that sample.
 * The residual adds are fused into the next norm (addRmsnorm).
 * Tensor parallel (spec §7): each rank holds its heads / FFN slices / vocabulary piece; the
 * row-parallel outputs (mixer, FFN, embedding) are summed over the ranks with allReduceSum and the
 * logits pieces put side by side with allGatherCols. At tp 1 no collective is called.
 */
import type { Backend, GqaParams, LightningParams, MlaParams, RouterParams } from '../backend/backend.js';
import type { HybridCache } from '../cache/hybrid-cache.js';
import type { Tensor } from '../tensor/tensor.js';
import { assert } from '../util/assert.js';
import { allocActivations, type Activations } from './activations.js';
import type { ModelSpec } from './config.js';
import { gqaLayer, gqaParams } from './gqa.js';
import { lightningLayer, lightningParams } from './lightning.js';
import { mlaLayer, mlaParams } from './mla.js';
import { denseFfn, moeFfn, routerParams } from './moe.js';
import type { StepBatch, StepPeers } from './step.js';
import type { ModelWeights } from './weights.js';

export interface ForwardOptions {
  /** Called with the residual stream [T, C] after each layer (tests name the first diverging layer). */
  onLayer?: (layer: number, hidden: Tensor) => void;
}

export class Model {
  readonly act: Activations;
  private readonly lightning: (LightningParams | null)[];
  private readonly mla: MlaParams;
  private readonly gqa: GqaParams;
  private readonly router: RouterParams;
  /** Tensor parallel: ids mapped into this rank's vocabulary piece (scratch for maxBatchTokens). */

  constructor(
    readonly be: Backend,
    readonly spec: ModelSpec,
    readonly weights: ModelWeights,
    readonly maxBatchTokens: number,
    readonly maxSampleRows: number,
    cacheBlockSize: number,
    /** Set on rank 0 of a multi-process tensor-parallel group. */
    readonly peers: StepPeers | null = null,
  ) {
    this.act = allocActivations(be, spec, maxBatchTokens, maxSampleRows);
    this.lightning = spec.layers.map((l) => (l.mixer === 'lightning' ? lightningParams(spec, l.index) : null));
    this.mla = mlaParams(spec, cacheBlockSize);
    this.gqa = gqaParams(spec, cacheBlockSize);
    this.router = routerParams(spec);
  }

  /**
   * Run one step. Returns logits [sampleRows, V] (a view into preallocated memory, valid until
   * the next call). The cache must already hold room for every sequence's new tokens.
   */
  forward(batch: StepBatch, cache: HybridCache, opts: ForwardOptions = {}): Tensor {
    this.peers?.send(batch, 'eager');
    const logits = this.local(batch, cache, opts);
    this.peers?.wait();
    return logits;
  }

  /**
   * forward() through the backend's step runner where it has one (CUDA graphs for pure decode
   * steps). Under tensor parallelism rank 0 announces how the step runs with its inputs, so every
   * rank captures or replays the same graph (the NCCL calls inside it must match).
   */
  step(batch: StepBatch, cache: HybridCache): Tensor {
    const { be, peers } = this;
    if (!be.runStep) return this.forward(batch, cache);
    const logits = be.runStep(batch, () => this.local(batch, cache, {}), [this, cache], peers ? { announce: (m) => peers.send(batch, m) } : undefined);
    peers?.wait();
    return logits;
  }

  /** This rank's part of a step (tensor parallel: the other ranks run theirs from the same inputs). */
  private local(batch: StepBatch, cache: HybridCache, opts: ForwardOptions): Tensor {
    const { be, spec, weights: w, act } = this;
    const ops = be.ops;
    const T = batch.ids.length;
    const S = batch.sampleRows.length;
    assert(T >= 1 && T <= this.maxBatchTokens, () => `step of ${T} tokens exceeds maxBatchTokens ${this.maxBatchTokens}`);
    assert(S <= this.maxSampleRows, () => `${S} sample rows exceed ${this.maxSampleRows}`);
    assert(batch.positions.length === T, 'positions length');
    assert(cache.blockSize === this.mla.blockSize, 'cache block size differs from the model\'s');
    const C = spec.config.hidden_size;
    const eps = spec.config.rms_norm_eps;
    const x = act.x.prefix([T, C]), r = act.residual.prefix([T, C]), mix = act.mix.prefix([T, C]);
    const tp = spec.shard.size;
    const reduce = (t: Tensor): void => (tp > 1 ? ops.allReduceSum(t) : undefined);

    this.embed(r, batch.ids);
    for (const layer of w.layers) {
      const l = layer.index;
      if (l === 0) ops.rmsnorm(x, r, layer.inputNorm, eps);
      else ops.addRmsnorm(x, r, mix, layer.inputNorm, eps);
      if (layer.mixer.kind === 'lightning') lightningLayer(be, spec, l, layer.mixer, this.lightning[l]!, act, batch, cache, x, mix);
      else if (layer.mixer.kind === 'gqa') gqaLayer(be, spec, l, layer.mixer, this.gqa, act, batch, cache, x, mix);
      else mlaLayer(be, spec, l, layer.mixer, this.mla, act, batch, cache, x, mix);
      reduce(mix); // row-parallel o_proj / dense: sum the ranks' partial outputs
      ops.addRmsnorm(x, r, mix, layer.postNorm, eps);
      if (layer.ffn.kind === 'dense') denseFfn(be, layer.ffn, act, x, mix);
      else moeFfn(be, spec, layer.ffn, this.router, act, x, mix);
      reduce(mix); // row-parallel down projections (dense, shared and routed experts) in one sum
      if (opts.onLayer) {
        // Materialise r + ffn for the tap without disturbing the fused stream.
        const hidden = act.shared.prefix([T, C]);
        ops.add(hidden, r, mix);
        opts.onLayer(l, hidden);
      }
    }
    ops.addRmsnorm(x, r, mix, w.finalNorm, eps);
    for (const s of batch.seqs) s.seq.length = s.ctxStart + s.len;
    const logits = act.logits.prefix([S, spec.config.vocab_size]);
    if (S > 0) {
      const sel = act.sel.prefix([S, C]);
      ops.gatherRows(sel, x, batch.sampleRows);
      if (tp === 1) ops.matmul(logits, sel, w.lmHead, null);
      else {
        // Vocab-parallel lm_head: this rank's V/tp logits, then the pieces side by side.
        const part = act.logitsLocal.prefix([S, spec.local.vocab]);
        ops.matmul(part, sel, w.lmHead, null);
        ops.allGatherCols(logits, part);
      }
    }
    return logits;
  }

  /** r [T, C] = embedding rows of ids; vocab-parallel under TP (ids outside this rank's piece read its zero row, then the sum). */
  private embed(r: Tensor, ids: Int32Array): void {
    const { spec, be } = this;
    if (spec.shard.size === 1) return be.ops.embedding(r, this.weights.embed, ids);
    const { vocabStart, vocabCount, vocab: zeroRow } = spec.local;
    be.ops.embedding(r, this.weights.embed, ids, { start: vocabStart, count: vocabCount, zeroRow });
    be.ops.allReduceSum(r);
  }
}
