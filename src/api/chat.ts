/** Chat prompt rendering shared by the library API and the server: template → ids + how to parse the output. */
import type { Tokenizer, ChatMessage } from '../tokenizer/tokenizer.js';
import type { ChatOutputOptions } from './chat-output.js';
import type { ToolChoice } from './schema.js';

export interface RenderedChat {
  readonly promptIds: number[];
  readonly parse: ChatOutputOptions;
}

export interface RenderChatOptions {
  readonly tools: readonly Record<string, unknown>[] | null;
  readonly toolChoice: ToolChoice;
  readonly addGenerationPrompt: boolean;
  readonly templateKwargs: Readonly<Record<string, unknown>>;
}

export function renderChat(tk: Tokenizer, messages: readonly ChatMessage[], o: RenderChatOptions): RenderedChat {
  const rendered = tk.applyChatTemplate(messages, { addGenerationPrompt: o.addGenerationPrompt, tools: o.tools ?? undefined, kwargs: o.templateKwargs });
  // Reasoning is parsed only when the vocabulary has the think markers (thinking models).
  const reasoning = tk.tokenToId('<think>') !== undefined && tk.tokenToId('</think>') !== undefined;
  return {
    promptIds: tk.encode(rendered, { addSpecialTokens: false }),
    parse: { reasoning, startInReasoning: reasoning && rendered.trimEnd().endsWith('<think>'), tools: o.tools !== null && o.toolChoice !== 'none' },
  };
}
