/**
 * /v1/completions and /v1/chat/completions: validated request → engine choices → OpenAI
 * response objects, whole or as SSE chunks (first chat delta carries the role; with
 * stream_options.include_usage a last chunk with empty choices carries usage; then [DONE]).
 */
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { GenerateResult, LogprobEntry } from '../engine/engine.js';
import { ChatOutputParser, parseChatOutput, type ChatOutputOptions, type ChatPiece } from '../api/chat-output.js';
import { renderChat } from '../api/chat.js';
import { checkLengths, expandChoices, runChoices, type RunStats, type ServeContext } from './generate.js';
import { HttpError, sendJson, SseWriter } from './http.js';
import { parseChatRequest, parseCompletionRequest, type ChatRequest, type CompletionRequest } from '../api/schema.js';

const newId = (prefix: string): string => `${prefix}-${randomBytes(12).toString('hex')}`;

function checkModel(ctx: ServeContext, model: string | null): void {
  if (model !== null && model !== ctx.modelName)
    throw new HttpError(404, `the model "${model}" does not exist; this server serves "${ctx.modelName}"`, 'invalid_request_error', 'model_not_found', 'model');
}

function usage(s: RunStats): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  return { prompt_tokens: s.promptTokens, completion_tokens: s.completionTokens, total_tokens: s.promptTokens + s.completionTokens };
}

/**
 * Token text for logprobs: its decoded text, or its vocabulary piece when it decodes to U+FFFD
 * alone (a byte inside a character), so distinct tokens keep distinct keys in top_logprobs.
 */
function tokenText(ctx: ServeContext, id: number): string {
  const t = ctx.tokenizer.decode([id]);
  return t.includes('\uFFFD') ? (ctx.tokenizer.idToToken(id) ?? t) : t;
}

function chatLogprobs(ctx: ServeContext, lps: readonly LogprobEntry[]): { content: unknown[] } {
  const entry = (token: number, logprob: number): { token: string; logprob: number; bytes: number[] } => {
    const t = tokenText(ctx, token);
    return { token: t, logprob, bytes: [...Buffer.from(t, 'utf8')] };
  };
  return { content: lps.map((e) => ({ ...entry(e.token, e.logprob), top_logprobs: e.top.map((t) => entry(t.token, t.logprob)) })) };
}

function completionLogprobs(ctx: ServeContext, lps: readonly LogprobEntry[], offset: number): { tokens: string[]; token_logprobs: number[]; top_logprobs: Record<string, number>[]; text_offset: number[] } {
  const tokens = lps.map((e) => tokenText(ctx, e.token));
  const text_offset: number[] = [];
  for (const t of tokens) {
    text_offset.push(offset);
    offset += t.length;
  }
  const top_logprobs = lps.map((e) => Object.fromEntries(e.top.map((t) => [tokenText(ctx, t.token), t.logprob])));
  return { tokens, token_logprobs: lps.map((e) => e.logprob), top_logprobs, text_offset };
}

/** Shared shell: parse, check, run, log one line, count outcomes. */
async function serve(
  ctx: ServeContext,
  res: ServerResponse,
  route: string,
  id: string,
  arrival: number,
  run: (stats: RunStats) => Promise<string[] | null>,
): Promise<void> {
  const stats: RunStats = { promptTokens: 0, completionTokens: 0, ttftMs: null, finish: [], disconnected: false };
  let outcome = 'ok';
  try {
    const finish = await run(stats);
    if (finish === null) outcome = 'disconnected';
    for (const f of finish ?? stats.finish.map(() => 'abort')) ctx.metrics.outcome(f);
  } catch (e) {
    outcome = 'error';
    throw e;
  } finally {
    if (stats.promptTokens > 0 || outcome !== 'error')
      ctx.logger.info('request', {
        id,
        route,
        outcome,
        prompt_tokens: stats.promptTokens,
        completion_tokens: stats.completionTokens,
        ttft_ms: stats.ttftMs === null ? null : Math.round(stats.ttftMs * 10) / 10,
        e2e_ms: Math.round((performance.now() - arrival) * 10) / 10,
        finish: stats.finish,
      });
  }
}

export async function handleCompletions(ctx: ServeContext, res: ServerResponse, body: unknown, arrival: number): Promise<void> {
  const r: CompletionRequest = parseCompletionRequest(body, { vocabSize: ctx.vocabSize });
  checkModel(ctx, r.model);
  const prompts = r.prompts.map((p) => ('ids' in p ? p.ids : ctx.tokenizer.encode(p.text)));
  const specs = expandChoices(prompts, r.params, r.n);
  checkLengths(ctx, specs, 'prompt');
  const id = newId('cmpl');
  const created = Math.floor(Date.now() / 1000);
  const head = { id, object: 'text_completion', created, model: ctx.modelName };
  const wantLp = r.params.logprobs !== null;
  await serve(ctx, res, '/v1/completions', id, arrival, async (stats) => {
    if (!r.stream) {
      const results = await runChoices(ctx, res, arrival, specs, () => {}, stats);
      if (!results) return null;
      sendJson(res, 200, {
        ...head,
        choices: results.map((x, index) => ({
          index,
          text: x.text,
          logprobs: wantLp && x.logprobs ? completionLogprobs(ctx, x.logprobs, 0) : null,
          finish_reason: x.finishReason,
          stop_reason: x.stoppedBy,
        })),
        usage: usage(stats),
      });
      return results.map((x) => x.finishReason);
    }
    const sse = new SseWriter(res, ctx.keepAliveMs);
    const offsets = specs.map(() => 0);
    const extra = r.includeUsage ? { usage: null } : {};
    let results: GenerateResult[] | null;
    try {
      results = await runChoices(
        ctx,
        res,
        arrival,
        specs,
        (index, text, _ids, lps) => {
          if (text.length === 0 && !(wantLp && lps)) return;
          const logprobs = wantLp && lps ? completionLogprobs(ctx, lps, offsets[index]) : null;
          offsets[index] += text.length;
          sse.send({ ...head, choices: [{ index, text, logprobs, finish_reason: null }], ...extra });
        },
        stats,
      );
    } catch (e) {
      streamError(sse, e);
      throw e;
    }
    if (!results) return null;
    results.forEach((x, index) => sse.send({ ...head, choices: [{ index, text: '', logprobs: null, finish_reason: x.finishReason, stop_reason: x.stoppedBy }], ...extra }));
    if (r.includeUsage) sse.send({ ...head, choices: [], usage: usage(stats) });
    sse.end();
    await sse.done;
    return results.map((x) => x.finishReason);
  });
}

/** An engine failure after the SSE headers went out: one error event, then the end. */
function streamError(sse: SseWriter, e: unknown): void {
  sse.send({ error: { message: e instanceof Error ? e.message : 'internal server error', type: 'server_error', param: null, code: null } });
  sse.end();
}

interface ChatPlan {
  readonly r: ChatRequest;
  readonly promptIds: number[];
  readonly parse: ChatOutputOptions;
}

function planChat(ctx: ServeContext, body: unknown): ChatPlan {
  const r = parseChatRequest(body, { vocabSize: ctx.vocabSize });
  checkModel(ctx, r.model);
  return { r, ...renderChat(ctx.tokenizer, r.messages, r) };
}

const callId = (): string => `call_${randomBytes(12).toString('hex')}`;

function chatMessage(piece: ChatPiece, reasoning: boolean): Record<string, unknown> {
  const msg: Record<string, unknown> = { role: 'assistant', content: piece.toolCalls.length > 0 && piece.content.trim() === '' ? null : piece.content };
  if (reasoning) msg.reasoning_content = piece.reasoning.length > 0 ? piece.reasoning : null;
  if (piece.toolCalls.length > 0) msg.tool_calls = piece.toolCalls.map((c) => ({ id: callId(), type: 'function', function: { name: c.name, arguments: c.arguments } }));
  return msg;
}

/** 'stop' becomes 'tool_calls' when the output ended in tool calls (OpenAI). */
const chatFinish = (f: string, calls: number): string => (f === 'stop' && calls > 0 ? 'tool_calls' : f);

export async function handleChat(ctx: ServeContext, res: ServerResponse, body: unknown, arrival: number): Promise<void> {
  const { r, promptIds, parse } = planChat(ctx, body);
  const specs = expandChoices([promptIds], r.params, r.n);
  checkLengths(ctx, specs, 'messages');
  const id = newId('chatcmpl');
  const created = Math.floor(Date.now() / 1000);
  const head = { id, object: 'chat.completion.chunk', created, model: ctx.modelName };
  await serve(ctx, res, '/v1/chat/completions', id, arrival, async (stats) => {
    if (!r.stream) {
      const results = await runChoices(ctx, res, arrival, specs, () => {}, stats);
      if (!results) return null;
      const finishes: string[] = [];
      const choices = results.map((x, index) => {
        const piece = parseChatOutput(x.text, parse);
        finishes.push(chatFinish(x.finishReason, piece.toolCalls.length));
        return {
          index,
          message: chatMessage(piece, parse.reasoning),
          logprobs: r.logprobs && x.logprobs ? chatLogprobs(ctx, x.logprobs) : null,
          finish_reason: finishes[index],
          stop_reason: x.stoppedBy,
        };
      });
      sendJson(res, 200, { ...head, object: 'chat.completion', choices, usage: usage(stats) });
      return finishes;
    }
    const sse = new SseWriter(res, ctx.keepAliveMs);
    const extra = r.includeUsage ? { usage: null } : {};
    const parsers = specs.map(() => new ChatOutputParser(parse));
    const calls = specs.map(() => 0);
    const sendPiece = (index: number, p: ChatPiece, lps: readonly LogprobEntry[] | null): void => {
      const delta: Record<string, unknown> = {};
      if (p.reasoning) delta.reasoning_content = p.reasoning;
      if (p.content) delta.content = p.content;
      if (p.toolCalls.length > 0)
        delta.tool_calls = p.toolCalls.map((c) => ({ index: calls[index]++, id: callId(), type: 'function', function: { name: c.name, arguments: c.arguments } }));
      const logprobs = r.logprobs && lps ? chatLogprobs(ctx, lps) : null;
      if (Object.keys(delta).length === 0 && !logprobs) return;
      sse.send({ ...head, choices: [{ index, delta, logprobs, finish_reason: null }], ...extra });
    };
    specs.forEach((_, index) => sse.send({ ...head, choices: [{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }], ...extra }));
    let results: GenerateResult[] | null;
    try {
      results = await runChoices(ctx, res, arrival, specs, (index, text, _ids, lps) => sendPiece(index, parsers[index].push(text), lps), stats);
    } catch (e) {
      streamError(sse, e);
      throw e;
    }
    if (!results) return null;
    const finishes = results.map((x, index) => {
      sendPiece(index, parsers[index].flush(), null);
      const f = chatFinish(x.finishReason, calls[index]);
      sse.send({ ...head, choices: [{ index, delta: {}, logprobs: null, finish_reason: f, stop_reason: x.stoppedBy }], ...extra });
      return f;
    });
    if (r.includeUsage) sse.send({ ...head, choices: [], usage: usage(stats) });
    sse.end();
    await sse.done;
    return finishes;
  });
}
