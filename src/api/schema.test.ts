import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidRequestError } from '../util/errors.js';
import { checkDepth, parseChatRequest, parseCompletionRequest, parseDetokenizeRequest, parseTokenizeRequest } from './schema.js';

const L = { vocabSize: 300 };
const msgs = [{ role: 'user', content: 'hi' }];

function refused(fn: () => unknown, param: string): void {
  assert.throws(fn, (e: unknown) => e instanceof InvalidRequestError && e.param === param, `expected an error on ${param}`);
}

test('completions: prompt forms, defaults, sampling fields mapped from OpenAI names', () => {
  const r = parseCompletionRequest({ prompt: 'a', temperature: 0.5, top_k: 4, min_p: 0.1, repetition_penalty: 1.1, stop: 'x', seed: 3, ignore_eos: true }, L);
  assert.deepEqual(r.prompts, [{ text: 'a' }]);
  assert.equal(r.params.maxTokens, 16, "OpenAI's legacy default");
  assert.equal(r.params.temperature, 0.5);
  assert.equal(r.params.topK, 4);
  assert.deepEqual(r.params.stop, ['x']);
  assert.equal(r.params.ignoreEos, true);
  assert.equal(r.params.logprobs, null);
  assert.equal(r.n, 1);
  assert.equal(r.stream, false);
  assert.deepEqual(parseCompletionRequest({ prompt: ['a', 'b'] }, L).prompts, [{ text: 'a' }, { text: 'b' }]);
  assert.deepEqual(parseCompletionRequest({ prompt: [1, 2] }, L).prompts, [{ ids: [1, 2] }]);
  assert.deepEqual(parseCompletionRequest({ prompt: [[1], [2, 3]] }, L).prompts, [{ ids: [1] }, { ids: [2, 3] }]);
  assert.equal(parseCompletionRequest({ prompt: 'a', logprobs: 2 }, L).params.logprobs, 2);
  const s = parseCompletionRequest({ prompt: 'a', stream: true, stream_options: { include_usage: true }, max_tokens: null }, L);
  assert.equal(s.includeUsage, true);
  assert.equal(s.params.maxTokens, null);
});

test('completions: every malformed field names itself', () => {
  refused(() => parseCompletionRequest([], L), 'body');
  refused(() => parseCompletionRequest({}, L), 'prompt');
  refused(() => parseCompletionRequest({ prompt: [] }, L), 'prompt');
  refused(() => parseCompletionRequest({ prompt: [1, 300] }, L), 'prompt');
  refused(() => parseCompletionRequest({ prompt: ['a', 5] }, L), 'prompt[1]');
  refused(() => parseCompletionRequest({ prompt: [[1], [-1]] }, L), 'prompt[1]');
  refused(() => parseCompletionRequest({ prompt: 'a', n: 0 }, L), 'n');
  refused(() => parseCompletionRequest({ prompt: Array(65).fill('a'), n: 2 }, L), 'n');
  refused(() => parseCompletionRequest({ prompt: 'a', stream_options: {} }, L), 'stream_options');
  refused(() => parseCompletionRequest({ prompt: 'a', stream: 'yes' }, L), 'stream');
  refused(() => parseCompletionRequest({ prompt: 'a', echo: true }, L), 'echo');
  refused(() => parseCompletionRequest({ prompt: 'a', logit_bias: { 1: 2 } }, L), 'logit_bias');
  refused(() => parseCompletionRequest({ prompt: 'a', top_p: 0 }, L), 'top_p');
  refused(() => parseCompletionRequest({ prompt: 'a', max_tokens: Infinity }, L), 'max_tokens');
  refused(() => parseCompletionRequest({ prompt: 'a', stop_token_ids: [300] }, L), 'stop_token_ids');
  refused(() => parseCompletionRequest({ prompt: 'a', model: 5 }, L), 'model');
});

test('chat: messages, content parts, developer role, tools, logprobs, max_completion_tokens', () => {
  const r = parseChatRequest(
    {
      messages: [
        { role: 'developer', content: 'sys' },
        { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{"x":1}' } }] },
        { role: 'tool', content: '42', tool_call_id: 'c' },
      ],
      tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }],
      logprobs: true,
      top_logprobs: 3,
      max_completion_tokens: 7,
      max_tokens: 99,
    },
    L,
  );
  assert.equal(r.messages[0].role, 'system');
  assert.equal(r.messages[1].content, 'ab');
  assert.deepEqual((r.messages[2].tool_calls as { function: unknown }[])[0].function, { name: 'f', arguments: { x: 1 } });
  assert.equal(r.toolChoice, 'auto');
  assert.equal(r.params.logprobs, 3);
  assert.equal(r.logprobs, true);
  assert.equal(r.params.maxTokens, 7, 'max_completion_tokens wins');
  assert.equal(parseChatRequest({ messages: msgs }, L).params.maxTokens, null, 'chat default: up to the context');
  assert.equal(parseChatRequest({ messages: msgs, logprobs: true }, L).params.logprobs, 0);
});

test('chat: malformed fields name themselves', () => {
  refused(() => parseChatRequest({}, L), 'messages');
  refused(() => parseChatRequest({ messages: [{ role: 'x', content: 'a' }] }, L), 'messages[0].role');
  refused(() => parseChatRequest({ messages: [{ role: 'user' }] }, L), 'messages[0].content');
  refused(() => parseChatRequest({ messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }, L), 'messages[0].content[0]');
  refused(() => parseChatRequest({ messages: msgs, top_logprobs: 2 }, L), 'top_logprobs');
  refused(() => parseChatRequest({ messages: msgs, tool_choice: 'required' }, L), 'tool_choice');
  refused(() => parseChatRequest({ messages: msgs, tools: [{ type: 'function' }] }, L), 'tools[0]');
  refused(() => parseChatRequest({ messages: msgs, response_format: { type: 'json_object' } }, L), 'response_format');
  refused(() => parseChatRequest({ messages: msgs, max_completion_tokens: 0 }, L), 'max_completion_tokens');
  refused(() => parseChatRequest({ messages: msgs, chat_template_kwargs: 'x' }, L), 'chat_template_kwargs');
});

test('tokenize / detokenize bodies; depth limit without recursion', () => {
  assert.deepEqual(parseTokenizeRequest({ prompt: 'a' }), { prompt: 'a', messages: null, addSpecialTokens: true, addGenerationPrompt: true });
  refused(() => parseTokenizeRequest({}), 'prompt');
  refused(() => parseTokenizeRequest({ prompt: 'a', messages: msgs }), 'messages');
  assert.deepEqual(parseDetokenizeRequest({ tokens: [1, 2] }, L), [1, 2]);
  refused(() => parseDetokenizeRequest({ tokens: [1, 300] }, L), 'tokens');
  let deep: unknown = 1;
  for (let i = 0; i < 100_000; i++) deep = [deep];
  refused(() => checkDepth(deep), 'body');
  checkDepth({ a: [[[1]]] });
});
