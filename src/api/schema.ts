/**
 * Request validation for the OpenAI-compatible API: an untrusted JSON value in, a typed request
 * out, or InvalidRequestError naming the offending field (`param`, OpenAI's dotted/indexed
 * style, e.g. `messages[2].content`). Shared by the HTTP server and the library API, so neither
 * re-validates. Unknown fields are ignored (clients send vendor extras); known fields of the
 * wrong type or out of range are errors; features we do not implement are refused, not ignored.
 */
import { MAX_TOP_LOGPROBS, resolveSamplingParams, type SamplingParams, type SamplingParamsInput } from '../engine/sampler.js';
import type { ChatMessage } from '../tokenizer/tokenizer.js';
import { InvalidRequestError } from '../util/errors.js';

/** Deeper JSON than this is refused before any validation walks it. */
export const MAX_JSON_DEPTH = 64;
/** Most completions one request may ask for (n × prompts). */
export const MAX_CHOICES = 128;

export type PromptInput = { readonly text: string } | { readonly ids: readonly number[] };

interface Common {
  readonly model: string | null;
  readonly params: SamplingParams;
  readonly n: number;
  readonly stream: boolean;
  readonly includeUsage: boolean;
}

export interface CompletionRequest extends Common {
  readonly kind: 'completion';
  readonly prompts: readonly PromptInput[];
}

export type ToolChoice = 'none' | 'auto' | 'required' | { readonly name: string };

export interface ChatRequest extends Common {
  readonly kind: 'chat';
  readonly messages: readonly ChatMessage[];
  /** Tool definitions as sent (they reach the template verbatim); null when none. */
  readonly tools: readonly Record<string, unknown>[] | null;
  readonly toolChoice: ToolChoice;
  /** logprobs: true; the number of top alternatives is params.logprobs. */
  readonly logprobs: boolean;
  readonly addGenerationPrompt: boolean;
  readonly templateKwargs: Readonly<Record<string, unknown>>;
}

export interface TokenizeRequest {
  readonly prompt: string | null;
  readonly messages: readonly ChatMessage[] | null;
  readonly addSpecialTokens: boolean;
  readonly addGenerationPrompt: boolean;
}

export interface Limits {
  readonly vocabSize: number;
}

type Obj = Record<string, unknown>;

const fail = (message: string, param: string): never => {
  throw new InvalidRequestError(message, param);
};

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const show = (v: unknown): string => {
  const s = typeof v === 'number' ? String(v) : JSON.stringify(v) ?? String(v);
  return s.length > 40 ? s.slice(0, 40) + '…' : s;
};

/** Nesting depth check without recursion, so hostile input cannot overflow the stack. */
export function checkDepth(v: unknown, max = MAX_JSON_DEPTH): void {
  const stack: [unknown, number][] = [[v, 1]];
  while (stack.length > 0) {
    const [x, d] = stack.pop()!;
    if (typeof x !== 'object' || x === null) continue;
    if (d > max) fail(`the JSON body is nested deeper than ${max} levels`, 'body');
    for (const c of Array.isArray(x) ? x : Object.values(x)) if (typeof c === 'object' && c !== null) stack.push([c, d + 1]);
  }
}

function body(v: unknown): Obj {
  if (!isObj(v)) fail(`the request body must be a JSON object, found ${Array.isArray(v) ? 'an array' : show(v)}`, 'body');
  return v as Obj;
}

function optBool(o: Obj, key: string, def: boolean): boolean {
  const v = o[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'boolean') fail(`${key} must be a boolean, found ${show(v)}`, key);
  return v as boolean;
}

function optString(o: Obj, key: string): string | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') fail(`${key} must be a string, found ${show(v)}`, key);
  return v as string;
}

function optInt(o: Obj, key: string, lo: number, hi: number): number | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) fail(`${key} must be an integer in [${lo}, ${hi}], found ${show(v)}`, key);
  return v as number;
}

function optObj(o: Obj, key: string): Obj | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (!isObj(v)) fail(`${key} must be an object, found ${show(v)}`, key);
  return v as Obj;
}

/** Fields both endpoints share; `maxTokens` and `logprobs` differ and are passed in. */
function common(o: Obj, limits: Limits, maxTokens: unknown, logprobs: number | null): Common {
  const model = optString(o, 'model');
  const n = optInt(o, 'n', 1, MAX_CHOICES) ?? 1;
  const stream = optBool(o, 'stream', false);
  const so = optObj(o, 'stream_options');
  if (so && !stream) fail('stream_options is only allowed when stream is true', 'stream_options');
  const includeUsage = so ? optBool(so, 'include_usage', false) : false;
  const bestOf = optInt(o, 'best_of', 1, MAX_CHOICES);
  if (bestOf !== null && bestOf !== n) fail(`best_of other than n is not supported (best_of ${bestOf}, n ${n})`, 'best_of');
  const bias = optObj(o, 'logit_bias');
  if (bias && Object.keys(bias).length > 0) fail('logit_bias is not supported', 'logit_bias');
  optString(o, 'user');
  optBool(o, 'skip_special_tokens', true);
  const input: SamplingParamsInput = {
    temperature: o.temperature,
    topK: o.top_k,
    topP: o.top_p,
    minP: o.min_p,
    repetitionPenalty: o.repetition_penalty,
    presencePenalty: o.presence_penalty,
    frequencyPenalty: o.frequency_penalty,
    seed: o.seed,
    maxTokens,
    stop: o.stop,
    stopTokenIds: o.stop_token_ids,
    ignoreEos: o.ignore_eos,
    logprobs,
  };
  return { model, n, stream, includeUsage, params: resolveSamplingParams(input, { vocabSize: limits.vocabSize }) };
}

function tokenList(v: unknown, param: string, vocab: number): number[] | null {
  if (!Array.isArray(v) || v.length === 0 || typeof v[0] !== 'number') return null;
  for (const t of v) if (!Number.isInteger(t) || t < 0 || t >= vocab) fail(`${param} token ids must be integers in [0, ${vocab}), found ${show(t)}`, param);
  return v as number[];
}

function prompts(v: unknown, vocab: number): PromptInput[] {
  const bad = 'prompt must be a string, a list of strings, a list of token ids or a list of token-id lists';
  if (typeof v === 'string') return [{ text: v }];
  if (!Array.isArray(v) || v.length === 0) return fail(v === undefined || v === null ? 'prompt is required' : bad, 'prompt');
  const ids = tokenList(v, 'prompt', vocab);
  if (ids) return [{ ids }];
  return (v as unknown[]).map((p, i) => {
    if (typeof p === 'string') return { text: p };
    const list = tokenList(p, `prompt[${i}]`, vocab);
    return list ? { ids: list } : fail(bad, `prompt[${i}]`);
  });
}

export function parseCompletionRequest(raw: unknown, limits: Limits): CompletionRequest {
  const o = body(raw);
  if (optBool(o, 'echo', false)) fail('echo is not supported', 'echo');
  if (optString(o, 'suffix')) fail('suffix is not supported', 'suffix');
  // Legacy completions: logprobs is the number of alternatives; OpenAI's max is 5, vLLM's 20.
  const lp = optInt(o, 'logprobs', 0, MAX_TOP_LOGPROBS);
  // OpenAI's legacy default is 16 tokens.
  const c = common(o, limits, o.max_tokens === undefined ? 16 : o.max_tokens, lp);
  const ps = prompts(o.prompt, limits.vocabSize);
  if (ps.length * c.n > MAX_CHOICES) fail(`prompts × n = ${ps.length * c.n} exceeds ${MAX_CHOICES}`, 'n');
  return { kind: 'completion', ...c, prompts: ps };
}

function content(v: unknown, param: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (!Array.isArray(v)) return fail(`${param} must be a string or a list of content parts, found ${show(v)}`, param);
  return v
    .map((part, j) => {
      if (!isObj(part) || part.type !== 'text' || typeof part.text !== 'string')
        fail(isObj(part) && part.type !== 'text' ? `content part type ${show(part.type)} is not supported (text only)` : 'a content part must be {type:"text", text}', `${param}[${j}]`);
      return (part as { text: string }).text;
    })
    .join('');
}

/** Validate chat messages (OpenAI shape; text content parts only). */
export function parseMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) return fail(v === undefined ? 'messages is required' : 'messages must be a non-empty list', 'messages');
  return v.map((m, i) => {
    const p = `messages[${i}]`;
    if (!isObj(m)) return fail(`${p} must be an object`, p);
    if (typeof m.role !== 'string' || !['system', 'developer', 'user', 'assistant', 'tool'].includes(m.role))
      fail(`${p}.role must be system, developer, user, assistant or tool, found ${show(m.role)}`, `${p}.role`);
    const out: ChatMessage = { ...m, role: m.role === 'developer' ? 'system' : (m.role as string), content: content(m.content, `${p}.content`) };
    if (m.tool_calls !== undefined && m.tool_calls !== null) {
      if (!Array.isArray(m.tool_calls)) fail(`${p}.tool_calls must be a list`, `${p}.tool_calls`);
      out.tool_calls = (m.tool_calls as unknown[]).map((c, j) => {
        const f = isObj(c) ? c.function : undefined;
        if (!isObj(f) || typeof f.name !== 'string') return fail('a tool call must be {type:"function", function:{name, arguments}}', `${p}.tool_calls[${j}]`);
        // Templates render arguments as JSON; OpenAI sends them as a JSON string.
        let args: unknown = f.arguments ?? {};
        if (typeof args === 'string') {
          try {
            args = JSON.parse(args);
          } catch {
            /* keep the string: the template renders it as is */
          }
        }
        return { ...(c as Obj), function: { name: f.name, arguments: args } };
      });
    }
    if (out.role !== 'assistant' && out.content === null) fail(`${p}.content is required for role ${out.role}`, `${p}.content`);
    return out;
  });
}

/** Validate tool definitions ({type:'function', function:{name, parameters?}}). */
export function parseTools(v: unknown): Record<string, unknown>[] | null {
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v)) return fail('tools must be a list', 'tools');
  return v.map((t, i) => {
    const f = isObj(t) ? t.function : undefined;
    if (!isObj(t) || t.type !== 'function' || !isObj(f) || typeof f.name !== 'string' || f.name.length === 0)
      return fail('a tool must be {type:"function", function:{name, description?, parameters?}}', `tools[${i}]`);
    if (f.parameters !== undefined && !isObj(f.parameters)) fail('function.parameters must be a JSON schema object', `tools[${i}].function.parameters`);
    return t;
  });
}

export function parseToolChoice(v: unknown, hasTools: boolean): ToolChoice {
  if (v === undefined || v === null) return hasTools ? 'auto' : 'none';
  if (v === 'none' || v === 'auto' || v === 'required') {
    if (v !== 'none' && !hasTools) fail(`tool_choice "${v}" needs tools`, 'tool_choice');
    return v;
  }
  const f = isObj(v) ? v.function : undefined;
  if (!isObj(v) || v.type !== 'function' || !isObj(f) || typeof f.name !== 'string')
    return fail('tool_choice must be none, auto, required or {type:"function", function:{name}}', 'tool_choice');
  if (!hasTools) fail('tool_choice names a function but no tools are given', 'tool_choice');
  return { name: f.name };
}

export function parseChatRequest(raw: unknown, limits: Limits): ChatRequest {
  const o = body(raw);
  const msgs = parseMessages(o.messages);
  const ts = parseTools(o.tools);
  const choice = parseToolChoice(o.tool_choice, ts !== null && ts.length > 0);
  const rf = optObj(o, 'response_format');
  if (rf && rf.type !== 'text') fail(`response_format ${show(rf.type)} is not supported (text only)`, 'response_format');
  const logprobs = optBool(o, 'logprobs', false);
  const top = optInt(o, 'top_logprobs', 0, MAX_TOP_LOGPROBS);
  if (top !== null && !logprobs) fail('top_logprobs needs logprobs: true', 'top_logprobs');
  const maxTokens = o.max_completion_tokens ?? o.max_tokens;
  let c: Common;
  try {
    c = common(o, limits, maxTokens, logprobs ? (top ?? 0) : null);
  } catch (e) {
    // The sampler names max_tokens; say which field the client actually sent.
    if (e instanceof InvalidRequestError && e.param === 'max_tokens' && o.max_completion_tokens != null)
      throw new InvalidRequestError(e.message.replace('max_tokens', 'max_completion_tokens'), 'max_completion_tokens');
    throw e;
  }
  const kwargs = optObj(o, 'chat_template_kwargs') ?? {};
  return {
    kind: 'chat',
    ...c,
    messages: msgs,
    tools: ts,
    toolChoice: choice,
    logprobs,
    addGenerationPrompt: optBool(o, 'add_generation_prompt', true),
    templateKwargs: kwargs,
  };
}

/** vLLM's /tokenize: {prompt} or {messages}, add_special_tokens. */
export function parseTokenizeRequest(raw: unknown): TokenizeRequest {
  const o = body(raw);
  const prompt = optString(o, 'prompt');
  const msgs = o.messages === undefined || o.messages === null ? null : parseMessages(o.messages);
  if ((prompt === null) === (msgs === null)) fail('give exactly one of prompt or messages', prompt === null ? 'prompt' : 'messages');
  return {
    prompt,
    messages: msgs,
    addSpecialTokens: optBool(o, 'add_special_tokens', msgs === null),
    addGenerationPrompt: optBool(o, 'add_generation_prompt', true),
  };
}

/** vLLM's /detokenize: {tokens}. */
export function parseDetokenizeRequest(raw: unknown, limits: Limits): readonly number[] {
  const o = body(raw);
  if (!Array.isArray(o.tokens)) return fail('tokens must be a list of token ids', 'tokens');
  if (o.tokens.length === 0) return [];
  return tokenList(o.tokens, 'tokens', limits.vocabSize) ?? fail('tokens must be a list of token ids', 'tokens');
}
