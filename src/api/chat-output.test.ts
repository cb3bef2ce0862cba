import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatOutputParser, parseChatOutput, parseToolCall, type ChatPiece } from './chat-output.js';

const all = { reasoning: true, startInReasoning: false, tools: true };

/** Feed `text` split at every position set in `cuts`; the pieces must add up to the whole-text parse. */
function streamed(text: string, opts: typeof all, step: number): ChatPiece {
  const p = new ChatOutputParser(opts);
  const out: ChatPiece = { reasoning: '', content: '', toolCalls: [] };
  const add = (x: ChatPiece): void => {
    out.reasoning += x.reasoning;
    out.content += x.content;
    out.toolCalls.push(...x.toolCalls);
  };
  for (let i = 0; i < text.length; i += step) add(p.push(text.slice(i, i + step)));
  add(p.flush());
  return out;
}

const CASES: [string, typeof all, ChatPiece][] = [
  ['plain answer', all, { reasoning: '', content: 'plain answer', toolCalls: [] }],
  ['<think>hmm, 2+2</think>\n\nIt is 4.', all, { reasoning: 'hmm, 2+2', content: '\n\nIt is 4.', toolCalls: [] }],
  ['  <think>a</think>b', all, { reasoning: 'a', content: 'b', toolCalls: [] }],
  ['still thinking', { ...all, startInReasoning: true }, { reasoning: 'still thinking', content: '', toolCalls: [] }],
  ['x</think>y', { ...all, startInReasoning: true }, { reasoning: 'x', content: 'y', toolCalls: [] }],
  ['mid <think> is content', all, { reasoning: '', content: 'mid <think> is content', toolCalls: [] }],
  ['<think>r</think>', { ...all, reasoning: false }, { reasoning: '', content: '<think>r</think>', toolCalls: [] }],
  [
    'Let me check.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
    all,
    { reasoning: '', content: 'Let me check.', toolCalls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }] },
  ],
  [
    '<think>need two</think><tool_call>{"name":"a","arguments":"{\\"x\\":1}"}</tool_call>\n<tool_call>{"name":"b"}</tool_call>',
    all,
    { reasoning: 'need two', content: '\n', toolCalls: [{ name: 'a', arguments: '{"x":1}' }, { name: 'b', arguments: '{}' }] },
  ],
  ['<tool_call>not json</tool_call> ok', all, { reasoning: '', content: '<tool_call>not json</tool_call> ok', toolCalls: [] }],
  ['<tool_call>{"name":"a"}</tool_call>', { ...all, tools: false }, { reasoning: '', content: '<tool_call>{"name":"a"}</tool_call>', toolCalls: [] }],
  ['<tool_call>{"name":"cut", "arguments":{}}', all, { reasoning: '', content: '', toolCalls: [{ name: 'cut', arguments: '{}' }] }],
  ['<tool_call>{"name":"cu', all, { reasoning: '', content: '<tool_call>{"name":"cu', toolCalls: [] }],
  ['ends with <tool_ca', all, { reasoning: '', content: 'ends with <tool_ca', toolCalls: [] }],
  ['<thi', all, { reasoning: '', content: '<thi', toolCalls: [] }],
];

test('reasoning and tool calls: whole-text parse, and the same result at every streaming split', () => {
  for (const [text, opts, want] of CASES) {
    assert.deepEqual(parseChatOutput(text, opts), want, text);
    for (const step of [1, 2, 3, 7]) assert.deepEqual(streamed(text, opts, step), want, `${text} (step ${step})`);
  }
});

test('a marker split across deltas is never half-emitted', () => {
  const p = new ChatOutputParser(all);
  assert.deepEqual(p.push('<th'), { reasoning: '', content: '', toolCalls: [] });
  assert.deepEqual(p.push('ink>abc</th'), { reasoning: 'abc', content: '', toolCalls: [] });
  assert.deepEqual(p.push('ink>ok <tool'), { reasoning: '', content: 'ok ', toolCalls: [] });
  assert.deepEqual(p.push('s are fine'), { reasoning: '', content: '<tools are fine', toolCalls: [] });
});

test('parseToolCall: name required; arguments as JSON text; parameters accepted as an alias', () => {
  assert.equal(parseToolCall('{"arguments":{}}'), null);
  assert.equal(parseToolCall('[1]'), null);
  assert.equal(parseToolCall('{"name":""}'), null);
  assert.deepEqual(parseToolCall('{"name":"f","parameters":{"a":[1,2]}}'), { name: 'f', arguments: '{"a":[1,2]}' });
});
