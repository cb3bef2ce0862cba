/**
 * The decoder forward pass (spec §1.2), top to bottom like the reference:
 *   r = embed(ids); for each layer: r += mixer(norm_in(r)); r += ffn(norm_post(r));
 *   logits = lm_head(norm_f(r)) on the rows that sample.
 * The residual adds are fused into the next norm (addRmsnorm).
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
import type { StepBatch } from './step.js';
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

  constructor(
    readonly be: Backend,
    readonly spec: ModelSpec,
    readonly weights: ModelWeights,
    readonly maxBatchTokens: number,
    readonly maxSampleRows: number,
    cacheBlockSize: number,
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

    ops.embedding(r, w.embed, batch.ids);
    for (const layer of w.layers) {
      const l = layer.index;
      if (l === 0) ops.rmsnorm(x, r, layer.inputNorm, eps);
      else ops.addRmsnorm(x, r, mix, layer.inputNorm, eps);
      if (layer.mixer.kind === 'lightning') lightningLayer(be, spec, l, layer.mixer, this.lightning[l]!, act, batch, cache, x, mix);
      else if (layer.mixer.kind === 'gqa') gqaLayer(be, spec, l, layer.mixer, this.gqa, act, batch, cache, x, mix);
      else mlaLayer(be, spec, l, layer.mixer, this.mla, act, batch, cache, x, mix);
      ops.addRmsnorm(x, r, mix, layer.postNorm, eps);
      if (layer.ffn.kind === 'dense') denseFfn(be, layer.ffn, act, x, mix);
      else moeFfn(be, spec, layer.ffn, this.router, act, x, mix);
      if (opts.onLayer) {
        // Materialise r + ffn for the tap without disturbing the fused stream.
        const hidden = act.shared.prefix([T, C]);
        ops.add(hidden, r, mix);
        opts.onLayer(l, hidden);
      }
    }
    ops.addRmsnorm(x, r, mix, w.finalNorm, eps);
    for (const s of batch.seqs) s.seq.length = s.ctxStart + s.len;
    if (S === 0) return act.logits.prefix([0, spec.config.vocab_size]);
    const sel = act.sel.prefix([S, C]);
    ops.gatherRows(sel, x, batch.sampleRows);
    const logits = act.logits.prefix([S, spec.config.vocab_size]);
    ops.matmul(logits, sel, w.lmHead, null);
    return logits;
  }
}
