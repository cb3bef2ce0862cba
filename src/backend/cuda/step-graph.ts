/**
 * Decode steps as CUDA graphs (DESIGN §4). A batch-1 step is ~180 kernel launches, and each
 * cuLaunchKernel through koffi costs ~12 µs of host time: the step is bound by the host, not the
 * GPU. Here a pure-decode step's launches are captured once per argument layout and replayed with
 * one cuGraphLaunch.
 *
 * Every per-step host argument (ids, positions, lightning slots, cache rows, MLA block tables,
 * sample rows) reaches kernels through CudaContext.hostArg. During capture ('record') and replay
 * ('fill') hostArg writes into one step-argument arena instead of uploading, so a replay is:
 * run the model's host code with launches skipped (refilling the arena with this step's values),
 * one HtoD copy of the arena, one graph launch. Kernels whose shape would depend on the step's
 * values (MLA split count, MoE segment count) take them from device memory (ops-attention.ts,
 * ops-moe.ts).
 *
 * A graph is keyed by (scope: model and cache, rows, sample rows, staged layout): the layout lists each argument's name
 * and size in order, so any change in the host control flow (batch size, a block table crossing
 * a power of two) selects another graph. The first step of a new key runs eagerly (compiling
 * kernels, growing scratch, planning GEMMs); the second is captured; later ones replay. Nothing
 * is allocated or compiled after that (BAILING_NO_COMPILE=1 turns a compile into an error then).
 */
import type { StepShape } from '../backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { CudaContext } from './context.js';
import { StagingMiss } from './context.js';
import type { Handle } from './driver.js';
import { InternalError } from '../../util/errors.js';

/** Largest decode batch captured (larger steps run eagerly; they are GPU-bound anyway). */
export const GRAPH_MAX_ROWS = 256;

interface Captured {
  readonly graph: Handle;
  readonly exec: Handle;
}

export interface GraphStats {
  eager: number;
  captures: number;
  replays: number;
  /** Staging passes that had to fall back to an eager step (StagingMiss). */
  misses: number;
  /** Times every graph was dropped because a scratch buffer moved. */
  invalidations: number;
  /** Host milliseconds spent in the staging passes of replayed steps. */
  fillMs: number;
}

export class CudaStepGraphs {
  private readonly graphs = new Map<string, Captured>();
  private readonly warmed = new Set<string>();
  /** Model and cache objects → small ids for graph keys (weak: a dropped model's entry goes too). */
  private readonly scopes = new WeakMap<object, number>();
  private nextScope = 0;
  private generation: number;
  readonly stats: GraphStats = { eager: 0, captures: 0, replays: 0, misses: 0, invalidations: 0, fillMs: 0 };
  /** BAILING_NO_COMPILE=1: a kernel compile during a replayed step is an error. */
  private readonly noCompile = process.env.BAILING_NO_COMPILE === '1';

  constructor(
    private readonly c: CudaContext,
    /** Graphs kept (oldest dropped first); each holds only launch records, no memory of its own. */
    private readonly maxGraphs = 64,
  ) {
    this.generation = c.scratchGeneration;
  }

  /** Whether a batch is a pure decode step this runner can capture (rows in sequence order). */
  static eligible(batch: StepShape): boolean {
    const T = batch.ids.length;
    if (T < 1 || T > GRAPH_MAX_ROWS || batch.seqs.length !== T) return false;
    return batch.seqs.every((s, i) => s.len === 1 && s.start === i);
  }

  /** Run `forward` (the model's step on this context's stream) as a graph where possible. */
  run(batch: StepShape, forward: () => Tensor, scope: readonly object[]): Tensor {
    const c = this.c;
    // An eager step (a larger prefill) replaced a scratch buffer that captured launches point into.
    if (c.scratchGeneration !== this.generation) this.dropAll();
    const t0 = performance.now();
    let out: Tensor;
    let layout: string;
    const compiled = c.kernels.stats.compiled;
    try {
      c.beginStaging('fill');
      out = forward();
      layout = c.endStaging();
    } catch (e) {
      c.endStaging();
      if (!(e instanceof StagingMiss)) throw e;
      this.stats.misses++;
      return this.eager(forward);
    }
    const key = `${scope.map((o) => this.scopeId(o)).join(',')}/${batch.ids.length}/${batch.sampleRows.length}|${layout}`;
    const hit = this.graphs.get(key);
    if (hit) {
      // Keep recently used graphs at the end of the eviction order.
      this.graphs.delete(key);
      this.graphs.set(key, hit);
      // A hit is the steady state: a kernel compiled on the way there is a bug (scratch growth
      // cannot happen here: a staging pass throws StagingMiss instead of allocating).
      if (this.noCompile && c.kernels.stats.compiled !== compiled) throw new InternalError(`BAILING_NO_COMPILE: a kernel was compiled in a replayed decode step (${key.slice(0, 80)})`);
      this.stats.fillMs += performance.now() - t0;
      c.uploadStaged();
      c.driver.graphLaunch(hit.exec, c.stream);
      this.stats.replays++;
      return out;
    }
    if (!this.warmed.has(key)) {
      // Layouts that never repeat (GQA decode uploads a row list that grows with the context) must not pile up.
      if (this.warmed.size >= 4 * this.maxGraphs) this.warmed.clear();
      this.warmed.add(key);
      return this.eager(forward);
    }
    return this.capture(key, forward);
  }

  private scopeId(o: object): number {
    let id = this.scopes.get(o);
    if (id === undefined) this.scopes.set(o, (id = this.nextScope++));
    return id;
  }

  private eager(forward: () => Tensor): Tensor {
    this.stats.eager++;
    return forward();
  }

  private capture(key: string, forward: () => Tensor): Tensor {
    const c = this.c, d = c.driver;
    d.beginCapture(c.stream);
    let out: Tensor;
    let graph: Handle | null = null;
    try {
      c.beginStaging('record');
      out = forward();
    } finally {
      c.endStaging();
      // Always end the capture, or the stream stays unusable; a failed capture rethrows below.
      try {
        graph = d.endCapture(c.stream);
      } catch (e) {
        graph = null;
        if (!(e instanceof Error)) throw e;
      }
    }
    if (graph === null) throw new StagingMiss('graph capture was invalidated');
    const exec = d.graphInstantiate(graph);
    if (this.graphs.size >= this.maxGraphs) this.evictOldest();
    this.graphs.set(key, { graph, exec });
    this.stats.captures++;
    c.uploadStaged();
    d.graphLaunch(exec, c.stream);
    return out;
  }

  private dropAll(): void {
    this.c.sync();
    for (const g of this.graphs.values()) this.c.driver.graphDestroy(g.graph, g.exec);
    this.graphs.clear();
    this.warmed.clear();
    this.generation = this.c.scratchGeneration;
    this.stats.invalidations++;
  }

  private evictOldest(): void {
    const [k, g] = this.graphs.entries().next().value as [string, Captured];
    this.c.sync(); // it may still be running
    this.c.driver.graphDestroy(g.graph, g.exec);
    this.graphs.delete(k);
  }

  dispose(): void {
    this.c.sync();
    for (const g of this.graphs.values()) this.c.driver.graphDestroy(g.graph, g.exec);
    this.graphs.clear();
  }
}
