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
 * Direct replay (step-args.ts): at capture, each staged argument's hint becomes a writer over the
 * graph's own copy of the arena; later steps with the same (scope, rows, sample rows) run only
 * the writers (ids, positions, slots, cache rows, block tables, sample rows: O(batch) host work),
 * one HtoD copy and the graph launch — the model's host code does not run at all. A step the
 * writers reject (a block table crossing a power of two) takes the staging pass below.
 *
 * A graph is keyed by (scope: model and cache, rows, sample rows, staged layout): the layout lists each argument's name
 * and size in order, so any change in the host control flow (batch size, a block table crossing
 * a power of two) selects another graph. The first step of a new key runs eagerly (compiling
 * kernels, growing scratch, planning GEMMs); the second is captured; later ones replay. Nothing
 * is allocated or compiled after that (BAILING_NO_COMPILE=1 turns a compile into an error then).
 *
 * Tensor parallelism: the NCCL calls are captured with the kernels. NCCL requires that whether a
 * call is captured be the same on every rank, and that a graph launch pair with the graphs the
 * other ranks captured in the same step; so rank 0 announces each step's mode (eager, capture,
 * replay) before enqueueing anything and the other ranks follow it (StepSync). The decisions are
 * deterministic (same steps, same shapes, same scratch growth), so a follower finds the graph
 * rank 0 replays; where it does not, it throws (the rank dies and rank 0 reports it) rather than
 * launch collectives that would not pair.
 */
import type { StepMode, StepShape, StepSync } from '../backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { CudaContext } from './context.js';
import { StagingMiss } from './context.js';
import type { Handle } from './driver.js';
import { InternalError } from '../../util/errors.js';
import { ReplayPlan } from './step-args.js';

/** Largest decode batch captured (larger steps run eagerly; they are GPU-bound anyway). */
export const GRAPH_MAX_ROWS = 256;

interface Captured {
  readonly graph: Handle;
  readonly exec: Handle;
  readonly layout: string;
  /** The step's output (a view into preallocated activations: the same for every replay). */
  readonly out: Tensor;
  /** This graph's own copy of the argument arena and its writers (null plan: staging pass only). */
  readonly image: Uint8Array;
  readonly words: Int32Array;
  readonly plan: ReplayPlan | null;
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
  /** Replays that wrote the step's arguments directly (no model host code). */
  direct: number;
  /** Host milliseconds of direct replays (writers + copy + launch). */
  directMs: number;
}

export class CudaStepGraphs {
  private readonly graphs = new Map<string, Captured>();
  /** (scope, rows, sample rows) → graphs with a replay plan, most recently captured first. */
  private readonly direct = new Map<string, Captured[]>();
  private readonly warmed = new Set<string>();
  /** Model and cache objects → small ids for graph keys (weak: a dropped model's entry goes too). */
  private readonly scopes = new WeakMap<object, number>();
  private nextScope = 0;
  private generation: number;
  readonly stats: GraphStats = { eager: 0, captures: 0, replays: 0, misses: 0, invalidations: 0, fillMs: 0, direct: 0, directMs: 0 };
  /** BAILING_NO_COMPILE=1: a kernel compile during a replayed step is an error. */
  private readonly noCompile = process.env.BAILING_NO_COMPILE === '1';
  /** Direct replays off (BAILING_GRAPH_DIRECT=0): every replay takes the staging pass. */
  directReplay = process.env.BAILING_GRAPH_DIRECT !== '0';
  /**
   * Tests: each direct replay also runs the staging pass and checks that it would have staged the
   * same layout and bytes (BAILING_GRAPH_VERIFY=1).
   */
  verify = process.env.BAILING_GRAPH_VERIFY === '1';

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

  /**
   * Run `forward` (the model's step on this context's stream) as a graph where possible. `tp`:
   * rank 0 announces the mode it picks before any GPU work; the other ranks run in that mode.
   */
  run(batch: StepShape, forward: () => Tensor, scope: readonly object[], tp?: StepSync): Tensor {
    const c = this.c;
    const follow = tp && 'follow' in tp ? tp.follow : null;
    const announce = (m: StepMode): void => {
      if (tp && 'announce' in tp) tp.announce(m);
    };
    // An eager step (a larger prefill) replaced a scratch buffer that captured launches point into.
    if (c.scratchGeneration !== this.generation) this.dropAll();
    if (follow === 'eager') return this.eager(forward);
    const t0 = performance.now();
    const scopeKey = `${scope.map((o) => this.scopeId(o)).join(',')}/${batch.ids.length}/${batch.sampleRows.length}`;
    if (this.directReplay && follow !== 'capture')
      for (const g of this.direct.get(scopeKey) ?? []) {
        if (!g.plan!.write(batch, g.words)) continue;
        // What the model's host code would have done besides staging: advance the sequences.
        for (const s of batch.seqs) s.seq.length = s.ctxStart + s.len;
        if (this.verify) this.check(g, forward);
        announce('replay');
        c.uploadImage(g.image);
        c.driver.graphLaunch(g.exec, c.stream);
        this.stats.replays++;
        this.stats.direct++;
        this.stats.directMs += performance.now() - t0;
        return g.out;
      }
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
      if (follow !== null) throw this.diverged(follow, `staging pass missed (${e.message})`);
      announce('eager');
      return this.eager(forward);
    }
    const key = `${scopeKey}|${layout}`;
    const hit = this.graphs.get(key);
    if (hit && follow !== 'capture') {
      // Keep recently used graphs at the end of the eviction order.
      this.graphs.delete(key);
      this.graphs.set(key, hit);
      // A hit is the steady state: a kernel compiled on the way there is a bug (scratch growth
      // cannot happen here: a staging pass throws StagingMiss instead of allocating).
      if (this.noCompile && c.kernels.stats.compiled !== compiled) throw new InternalError(`BAILING_NO_COMPILE: a kernel was compiled in a replayed decode step (${key.slice(0, 80)})`);
      this.stats.fillMs += performance.now() - t0;
      announce('replay');
      c.uploadStaged();
      c.driver.graphLaunch(hit.exec, c.stream);
      this.stats.replays++;
      return out;
    }
    if (follow === 'replay') throw this.diverged(follow, 'no graph captured for this layout');
    if (follow === null && !this.warmed.has(key)) {
      // Layouts that never repeat (GQA decode uploads a row list that grows with the context) must not pile up.
      if (this.warmed.size >= 4 * this.maxGraphs) this.warmed.clear();
      this.warmed.add(key);
      announce('eager');
      return this.eager(forward);
    }
    announce('capture');
    return this.capture(key, scopeKey, layout, batch, forward);
  }

  /** A follower cannot run a step the way rank 0 announced it (the graph caches went apart). */
  private diverged(mode: StepMode, why: string): InternalError {
    return new InternalError(`tensor-parallel decode graphs diverged: rank 0 runs this step as ${mode}, this rank cannot (${why})`);
  }

  /** Verification: the staging pass must stage exactly what the writers wrote. */
  private check(g: Captured, forward: () => Tensor): void {
    const c = this.c;
    try {
      c.beginStaging('fill');
      forward();
    } finally {
      c.endStaging();
    }
    const layout = c.staged().map((a) => `${a.key}:${a.bytes}`).join(';');
    const img = c.stagedImage();
    if (layout !== g.layout || img.length !== g.image.length || img.some((v, i) => v !== g.image[i]))
      throw new InternalError(`direct graph replay staged other arguments than the model's host code (layout ${layout === g.layout ? 'same' : 'differs'})`);
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

  private capture(key: string, scopeKey: string, layout: string, batch: StepShape, forward: () => Tensor): Tensor {
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
    if (this.graphs.has(key)) this.drop(key); // a follower told to capture again what it already has
    if (this.graphs.size >= this.maxGraphs) this.drop(this.graphs.keys().next().value as string);
    const image = c.stagedImage();
    const plan = ReplayPlan.build(c.staged(), image, batch);
    const g: Captured = { graph, exec, layout, out, image, words: new Int32Array(image.buffer, 0, image.byteLength >> 2), plan };
    this.graphs.set(key, g);
    if (plan) this.direct.set(scopeKey, [g, ...(this.direct.get(scopeKey) ?? [])]);
    this.stats.captures++;
    c.uploadImage(image);
    d.graphLaunch(exec, c.stream);
    return out;
  }

  private dropAll(): void {
    this.c.sync();
    for (const g of this.graphs.values()) this.c.driver.graphDestroy(g.graph, g.exec);
    this.graphs.clear();
    this.direct.clear();
    this.warmed.clear();
    this.generation = this.c.scratchGeneration;
    this.stats.invalidations++;
  }

  private drop(k: string): void {
    const g = this.graphs.get(k)!;
    this.c.sync(); // it may still be running
    this.c.driver.graphDestroy(g.graph, g.exec);
    this.graphs.delete(k);
    for (const [dk, list] of this.direct) {
      const rest = list.filter((x) => x !== g);
      if (rest.length) this.direct.set(dk, rest);
      else this.direct.delete(dk);
    }
  }

  dispose(): void {
    this.c.sync();
    for (const g of this.graphs.values()) this.c.driver.graphDestroy(g.graph, g.exec);
    this.graphs.clear();
    this.direct.clear();
  }
}
