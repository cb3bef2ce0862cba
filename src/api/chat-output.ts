/**
 * Splits streamed chat text into reasoning, content and tool calls:
 *  - `<think>…</think>` at the start of the output (or output that starts inside a thinking
 *    block the template opened) is reasoning; `<think>` is an ordinary token, so this works on
 *    text, not ids;
 *  - `<tool_call>{"name":…, "arguments":…}</tool_call>` (the Bailing template's tool format) is
 *    a tool call when the request has tools; a block that is not valid JSON stays content.
 * Text that might be the start of a marker is held back until it is known either way, so a
 * marker split across deltas is never half-emitted.
 */

export interface ParsedToolCall {
  readonly name: string;
  /** JSON text, as OpenAI's function.arguments. */
  readonly arguments: string;
}

export interface ChatPiece {
  reasoning: string;
  content: string;
  toolCalls: ParsedToolCall[];
}

export interface ChatOutputOptions {
  /** Parse `<think>` blocks (the tokenizer has the think markers). */
  readonly reasoning: boolean;
  /** The prompt ends inside an opened `<think>`: output starts as reasoning. */
  readonly startInReasoning: boolean;
  /** Parse tool calls (the request has tools and tool_choice is not none). */
  readonly tools: boolean;
}

const THINK = '<think>';
const END_THINK = '</think>';
const TOOL = '<tool_call>';
const END_TOOL = '</tool_call>';

type State = 'start' | 'reasoning' | 'content' | 'tool';

/** Length of the longest suffix of `s` that is a proper prefix of `marker`. */
function partial(s: string, marker: string): number {
  for (let n = Math.min(marker.length - 1, s.length); n > 0; n--) if (s.endsWith(marker.slice(0, n))) return n;
  return 0;
}

/** A tool call from the JSON inside one block, or null when it is not one. */
export function parseToolCall(json: string): ParsedToolCall | null {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const o = v as { name?: unknown; arguments?: unknown; parameters?: unknown };
  if (typeof o.name !== 'string' || o.name.length === 0) return null;
  const args = o.arguments ?? o.parameters ?? {};
  return { name: o.name, arguments: typeof args === 'string' ? args : JSON.stringify(args) };
}

export class ChatOutputParser {
  private state: State;
  private buf = '';

  constructor(private readonly opts: ChatOutputOptions) {
    this.state = !opts.reasoning ? 'content' : opts.startInReasoning ? 'reasoning' : 'start';
  }

  push(text: string): ChatPiece {
    this.buf += text;
    const out: ChatPiece = { reasoning: '', content: '', toolCalls: [] };
    for (;;) {
      const b = this.buf;
      if (this.state === 'start') {
        const t = b.trimStart();
        if (t.startsWith(THINK)) {
          this.buf = t.slice(THINK.length);
          this.state = 'reasoning';
        } else if (THINK.startsWith(t)) return out; // still could be <think>
        else this.state = 'content';
      } else if (this.state === 'reasoning') {
        const i = b.indexOf(END_THINK);
        if (i < 0) {
          const keep = partial(b, END_THINK);
          out.reasoning += b.slice(0, b.length - keep);
          this.buf = b.slice(b.length - keep);
          return out;
        }
        out.reasoning += b.slice(0, i);
        this.buf = b.slice(i + END_THINK.length);
        this.state = 'content';
      } else if (this.state === 'content') {
        const i = this.opts.tools ? b.indexOf(TOOL) : -1;
        if (i < 0) {
          const keep = this.opts.tools ? partial(b, TOOL) : 0;
          out.content += b.slice(0, b.length - keep);
          this.buf = b.slice(b.length - keep);
          return out;
        }
        out.content += b.slice(0, i);
        this.buf = b.slice(i + TOOL.length);
        this.state = 'tool';
      } else {
        const i = b.indexOf(END_TOOL);
        if (i < 0) return out;
        const call = parseToolCall(b.slice(0, i).trim());
        if (call) out.toolCalls.push(call);
        else out.content += TOOL + b.slice(0, i + END_TOOL.length);
        this.buf = b.slice(i + END_TOOL.length);
        this.state = 'content';
      }
    }
  }

  /** End of output: held-back text goes where its state says; an unclosed tool block is content. */
  flush(): ChatPiece {
    const out: ChatPiece = { reasoning: '', content: '', toolCalls: [] };
    if (this.state === 'reasoning') out.reasoning = this.buf;
    else if (this.state === 'tool') {
      const call = parseToolCall(this.buf.trim());
      if (call) out.toolCalls.push(call);
      else out.content = TOOL + this.buf;
    } else out.content = this.buf;
    this.buf = '';
    return out;
  }
}

/** Parse a whole output at once (non-streamed responses). */
export function parseChatOutput(text: string, opts: ChatOutputOptions): ChatPiece {
  const p = new ChatOutputParser(opts);
  const a = p.push(text);
  const b = p.flush();
  return { reasoning: a.reasoning + b.reasoning, content: a.content + b.content, toolCalls: [...a.toolCalls, ...b.toolCalls] };
}
