/**
 * Runs the choices of one API request on the engine: n > 1 and several prompts become separate
 * engine requests (the prompt is recomputed per choice; no prefix sharing yet). A client that
 * disconnects aborts all of them, which frees their cache at once. Records TTFT / ITL / e2e
 * and outcomes per engine request.
 */
import type { ServerResponse } from 'node:http';
import type { EngineDriver } from '../engine/driver.js';
import type { GenerateResult, LogprobEntry } from '../engine/engine.js';
import type { SamplingParams } from '../engine/sampler.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { Logger } from '../util/logger.js';
import { HttpError } from './http.js';
import type { ServerMetrics } from './metrics.js';

export interface ServeContext {
  readonly driver: EngineDriver;
  readonly tokenizer: Tokenizer;
  readonly maxModelLen: number;
  readonly vocabSize: number;
  readonly modelName: string;
  readonly metrics: ServerMetrics;
  readonly logger: Logger;
  readonly keepAliveMs: number;
}

export interface ChoiceSpec {
  readonly promptIds: readonly number[];
  readonly params: SamplingParams;
}

export type DeltaFn = (choice: number, text: string, ids: readonly number[], lps: readonly LogprobEntry[] | null) => void;

/** What the per-request log line reports. */
export interface RunStats {
  promptTokens: number;
  completionTokens: number;
  /** ms from arrival to the first token of any choice; null if none came. */
  ttftMs: number | null;
  finish: string[];
  disconnected: boolean;
}

/** Context-length checks the engine does not do (it stops at the context instead). */
export function checkLengths(ctx: ServeContext, specs: readonly ChoiceSpec[], promptParam: string): void {
  for (const s of specs) {
    const n = s.promptIds.length;
    if (n >= ctx.maxModelLen)
      throw new HttpError(400, `the prompt has ${n} tokens; this model's context is ${ctx.maxModelLen} tokens`, 'invalid_request_error', 'context_length_exceeded', promptParam);
    const mt = s.params.maxTokens;
    if (mt !== null && n + mt > ctx.maxModelLen)
      throw new HttpError(
        400,
        `the prompt (${n} tokens) plus max_tokens (${mt}) exceeds this model's context of ${ctx.maxModelLen} tokens`,
        'invalid_request_error',
        'context_length_exceeded',
        'max_tokens',
      );
  }
}

/** n choices per prompt; with a seed, choice j uses seed + j so they differ but stay reproducible. */
export function expandChoices(prompts: readonly (readonly number[])[], params: SamplingParams, n: number): ChoiceSpec[] {
  const out: ChoiceSpec[] = [];
  for (const promptIds of prompts)
    for (let j = 0; j < n; j++) out.push({ promptIds, params: params.seed === null || j === 0 ? params : { ...params, seed: params.seed + j } });
  return out;
}

/**
 * Submits every choice and waits for all; `null` when the client went away (everything was
 * aborted). Throws InvalidRequestError / EngineUnavailableError before anything runs, and the
 * engine's failure if the step loop dies.
 */
export async function runChoices(
  ctx: ServeContext,
  res: ServerResponse,
  arrival: number,
  specs: readonly ChoiceSpec[],
  onDelta: DeltaFn,
  stats: RunStats,
): Promise<GenerateResult[] | null> {
  const handles: { id: number; result: Promise<GenerateResult> }[] = [];
  const abortAll = (): void => void handles.forEach((h) => ctx.driver.abort(h.id));
  const m = ctx.metrics;
  try {
    specs.forEach((spec, i) => {
      let last = 0;
      handles.push(
        ctx.driver.submit({
          promptIds: spec.promptIds,
          params: spec.params,
          onDelta: (text, ids, lps) => {
            if (ids.length > 0) {
              const now = performance.now();
              if (last === 0) {
                m.ttft.observe((now - arrival) / 1000);
                if (stats.ttftMs === null) stats.ttftMs = now - arrival;
              } else m.itl.observe((now - last) / 1000 / ids.length);
              last = now;
            }
            if (!stats.disconnected) onDelta(i, text, ids, lps);
          },
        }),
      );
    });
  } catch (e) {
    abortAll();
    throw e;
  }
  stats.promptTokens = specs.reduce((a, s) => a + s.promptIds.length, 0);
  let settled = false;
  const onClose = (): void => {
    if (settled) return;
    stats.disconnected = true;
    abortAll();
  };
  res.on('close', onClose);
  try {
    const results = await Promise.all(handles.map((h) => h.result));
    for (const r of results) {
      m.e2e.observe((performance.now() - arrival) / 1000);
      stats.completionTokens += r.tokenIds.length;
    }
    stats.finish = results.map((r) => r.finishReason);
    return stats.disconnected ? null : results;
  } catch (e) {
    m.outcome('error');
    throw e;
  } finally {
    settled = true;
    res.off('close', onClose);
  }
}
