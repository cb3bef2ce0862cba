/**
 * Prometheus text exposition (format 0.0.4) for the server. Names follow vLLM's with a
 * `bailing:` prefix, so dashboards built for vLLM port by renaming the prefix. Engine gauges and
 * token counters are read from an EngineStats snapshot at scrape time; latencies and outcomes
 * are recorded by the request handlers.
 */
import type { EngineStats } from '../engine/engine.js';

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];

export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[] = LATENCY_BUCKETS,
  ) {
    this.counts = buckets.map(() => 0);
  }

  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) this.counts[i]++;
  }

  render(labels: string): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket{${labels},le="${b}"} ${this.counts[i]}`));
    lines.push(`${this.name}_bucket{${labels},le="+Inf"} ${this.count}`, `${this.name}_sum{${labels}} ${this.sum}`, `${this.name}_count{${labels}} ${this.count}`);
    return lines.join('\n');
  }
}

/** Label values escaped per the exposition format. */
const esc = (s: string): string => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

export class ServerMetrics {
  readonly ttft = new Histogram('bailing:time_to_first_token_seconds', 'Time from request arrival to its first generated token.');
  readonly itl = new Histogram('bailing:inter_token_latency_seconds', 'Time between consecutive generated tokens of a request.');
  readonly e2e = new Histogram('bailing:e2e_request_latency_seconds', 'Time from request arrival to its last token.');
  /** Finished engine requests by finish reason (stop, length, tool_calls, abort, error). */
  private readonly outcomes = new Map<string, number>();
  /** HTTP responses by status code. */
  private readonly statuses = new Map<number, number>();

  constructor(readonly modelName: string) {}

  outcome(reason: string): void {
    this.outcomes.set(reason, (this.outcomes.get(reason) ?? 0) + 1);
  }

  status(code: number): void {
    this.statuses.set(code, (this.statuses.get(code) ?? 0) + 1);
  }

  render(s: EngineStats): string {
    const m = `model_name="${esc(this.modelName)}"`;
    const out: string[] = [];
    const scalar = (name: string, type: 'gauge' | 'counter', help: string, v: number): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name}{${m}} ${v}`);
    };
    scalar('bailing:num_requests_running', 'gauge', 'Requests in the running batch.', s.running);
    scalar('bailing:num_requests_waiting', 'gauge', 'Requests waiting to be scheduled (including preempted ones).', s.waiting);
    scalar('bailing:kv_cache_usage_perc', 'gauge', 'Fraction of MLA latent-cache blocks in use (1 = full).', s.cacheUsage);
    scalar('bailing:cache_blocks_total', 'gauge', 'MLA latent-cache blocks.', s.totalBlocks);
    scalar('bailing:cache_blocks_free', 'gauge', 'Free MLA latent-cache blocks.', s.freeBlocks);
    scalar('bailing:state_slots_total', 'gauge', 'Lightning state slots (max concurrent sequences).', s.totalSlots);
    scalar('bailing:state_slots_free', 'gauge', 'Free lightning state slots.', s.freeSlots);
    scalar('bailing:num_preemptions_total', 'counter', 'Requests preempted (cache freed, recomputed later).', s.preemptions);
    scalar('bailing:prompt_tokens_total', 'counter', 'Prompt tokens of accepted requests.', s.promptTokens);
    scalar('bailing:generation_tokens_total', 'counter', 'Generated tokens.', s.generationTokens);
    scalar('bailing:engine_steps_total', 'counter', 'Forward steps run.', s.steps);
    out.push(this.ttft.render(m), this.itl.render(m), this.e2e.render(m));
    out.push('# HELP bailing:request_success_total Finished requests by finish reason.', '# TYPE bailing:request_success_total counter');
    for (const [r, n] of [...this.outcomes].sort()) out.push(`bailing:request_success_total{${m},finished_reason="${esc(r)}"} ${n}`);
    out.push('# HELP bailing:http_responses_total HTTP responses by status code.', '# TYPE bailing:http_responses_total counter');
    for (const [c, n] of [...this.statuses].sort((a, b) => a[0] - b[0])) out.push(`bailing:http_responses_total{${m},code="${c}"} ${n}`);
    return out.join('\n') + '\n';
  }
}
