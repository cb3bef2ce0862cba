import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { loadTokenizer, tokenizerFromJson } from './tokenizer.js';
import { byteLevelTokenizerJson, bytesToUnicode, TINY_SPECIALS, tinyTokenizerConfig, TINY_CHAT_TEMPLATE } from './make-byte-tokenizer.js';
import { InvalidRequestError, ModelLoadError } from '../util/errors.js';
import { Prng } from '../util/prng.js';

// Tests run from the repository root (npm test, node --test).
const TINY_DIR = resolve(process.cwd(), 'models/tiny-random');

function tiny() {
  return tokenizerFromJson(byteLevelTokenizerJson(TINY_SPECIALS), tinyTokenizerConfig(), TINY_CHAT_TEMPLATE);
}

/** Random UTF-8 text mixing ASCII, accents, CJK, emoji, controls and whitespace. */
function randomText(rng: Prng, n: number): string {
  const pools = ['abc XYZ the in er 0123 ,.!?\n\t  ', 'éüñçß', '中文字测试', '😀🎉👍🏽', '\u0000\u0001\u007f', '<role'];
  let s = '';
  for (let i = 0; i < n; i++) {
    const pool = [...pools[rng.int(pools.length)]];
    s += pool[rng.int(pool.length)];
  }
  return s;
}

test('byte tokenizer: ids 0..255 are the GPT-2 byte symbols, specials follow', () => {
  const t = tiny();
  const b2u = bytesToUnicode();
  assert.equal(new Set(b2u).size, 256);
  for (let b = 0; b < 256; b++) assert.equal(t.tokenToId(b2u[b]), b);
  TINY_SPECIALS.forEach((s, i) => assert.equal(t.tokenToId(s), 256 + i));
  assert.equal(t.vocabSize, 256 + TINY_SPECIALS.length + 5);
  assert.equal(t.specialIds.eos, t.tokenToId('<|role_end|>'));
  assert.equal(t.specialIds.pad, t.tokenToId('<|endoftext|>'));
  assert.equal(t.specialIds.bos, null);
  assert.equal(t.idToToken(256), '<|endoftext|>');
});

test('byte tokenizer: round-trips arbitrary UTF-8 and uses the merges', () => {
  const t = tiny();
  const rng = new Prng(7);
  for (let k = 0; k < 200; k++) {
    const s = randomText(rng, 1 + rng.int(40));
    const ids = t.encode(s, { addSpecialTokens: false });
    assert.equal(t.decode(ids), s, JSON.stringify(s));
  }
  const the = t.encode(' the', { addSpecialTokens: false });
  assert.deepEqual(the, [t.tokenToId('Ġthe')]);
  // Multi-byte characters are several byte tokens.
  assert.equal(t.encode('é', { addSpecialTokens: false }).length, 2);
  assert.equal(t.encode('😀', { addSpecialTokens: false }).length, 4);
  assert.equal(t.decode([]), '');
});

test('special tokens are recognised in text and skipped on request', () => {
  const t = tiny();
  const ids = t.encode('<role>HUMAN</role>hi<|role_end|><think>x</think>', { addSpecialTokens: false });
  assert.equal(ids[0], t.tokenToId('<role>'));
  assert.ok(ids.includes(t.specialIds.eos ?? -1));
  assert.equal(t.decode(ids), '<role>HUMAN</role>hi<|role_end|><think>x</think>');
  // <think> tokens are added but not special: skipSpecialTokens keeps them for the reasoning parser.
  assert.equal(t.decode(ids, { skipSpecialTokens: true }), 'HUMANhi<think>x</think>');
  assert.ok(!t.specialIds.special.includes(t.tokenToId('<think>') ?? -1));
});

test('invalid UTF-8 byte tokens decode to U+FFFD without throwing', () => {
  const t = tiny();
  // 0xC3 alone, then 'A': "\uFFFDA"; a lone continuation byte 0x80.
  assert.equal(t.decode([0xc3, 0x41]), '\uFFFDA');
  assert.equal(t.decode([0x80]), '\uFFFD');
});

test('chat template: Bailing shape, generation prompt, system, tools, kwargs', () => {
  const t = tiny();
  const msgs = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi' },
    { role: 'assistant', content: 'Hello.' },
    { role: 'user', content: '中文?' },
  ];
  assert.equal(
    t.applyChatTemplate(msgs, { addGenerationPrompt: true }),
    '<role>SYSTEM</role>Be brief.<|role_end|><role>HUMAN</role>Hi<|role_end|><role>ASSISTANT</role>Hello.<|role_end|>' +
      '<role>HUMAN</role>中文?<|role_end|><role>ASSISTANT</role>',
  );
  assert.equal(t.applyChatTemplate([{ role: 'user', content: 'Hi' }]), '<role>HUMAN</role>Hi<|role_end|>');
  assert.equal(
    t.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true, kwargs: { enable_thinking: false } }),
    '<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Hi<|role_end|><role>ASSISTANT</role>',
  );
  const tools = [{ type: 'function', function: { name: 'f', parameters: {} } }];
  const withTools = t.applyChatTemplate(
    [
      { role: 'user', content: 'call f' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
      { role: 'tool', content: '42', tool_call_id: 'c1' },
    ],
    { tools, addGenerationPrompt: true },
  );
  assert.match(withTools, /^<role>SYSTEM<\/role><tools>\n\{.*"name": ?"f".*\}\n<\/tools><\|role_end\|>/s);
  assert.match(withTools, /<role>ASSISTANT<\/role><tool_call>\{"name": ?"f", ?"arguments": ?"\{\}"\}<\/tool_call><\|role_end\|>/);
  assert.match(withTools, /<role>OBSERVATION<\/role>42<\|role_end\|><role>ASSISTANT<\/role>$/);
  // The rendered prompt tokenises with the role tokens as single ids.
  const ids = t.encode(t.applyChatTemplate(msgs, { addGenerationPrompt: true }), { addSpecialTokens: false });
  assert.equal(ids.filter((i) => i === t.specialIds.eos).length, 4);
  assert.throws(() => t.applyChatTemplate([{ role: 'wizard', content: 'x' }]), (e: unknown) => e instanceof InvalidRequestError && e.param === 'messages');
});

test('no chat template: applyChatTemplate is a request error', () => {
  const t = tokenizerFromJson(byteLevelTokenizerJson(TINY_SPECIALS), {});
  assert.equal(t.chatTemplate, null);
  assert.throws(() => t.applyChatTemplate([{ role: 'user', content: 'x' }]), InvalidRequestError);
});

test('loadTokenizer: the embedded tiny-random files match the generator', async () => {
  const t = await loadTokenizer(TINY_DIR);
  assert.deepEqual(JSON.parse(readFileSync(join(TINY_DIR, 'tokenizer.json'), 'utf8')), byteLevelTokenizerJson(TINY_SPECIALS));
  assert.deepEqual(JSON.parse(readFileSync(join(TINY_DIR, 'tokenizer_config.json'), 'utf8')), tinyTokenizerConfig());
  assert.equal(t.decode(t.encode('héllo 中文 😀')), 'héllo 中文 😀');
  assert.equal(t.chatTemplate, TINY_CHAT_TEMPLATE);
  // The library loads the file directly too.
  const hf = new HfTokenizer(JSON.parse(readFileSync(join(TINY_DIR, 'tokenizer.json'), 'utf8')), {});
  assert.equal(hf.decode(hf.encode('a b').ids), 'a b');
});

test('loadTokenizer: template sources and errors name the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bailing-tok-'));
  try {
    await assert.rejects(loadTokenizer(dir), (e: unknown) => e instanceof ModelLoadError && e.file === join(dir, 'tokenizer.json'));
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
    await assert.rejects(loadTokenizer(dir), (e: unknown) => e instanceof ModelLoadError && /not valid JSON/.test(e.message));
    writeFileSync(join(dir, 'tokenizer.json'), '{"version": "1.0"}');
    await assert.rejects(loadTokenizer(dir), (e: unknown) => e instanceof ModelLoadError && e.key === 'model');
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJson(TINY_SPECIALS)));
    // No config, no template file: loads, no template.
    assert.equal((await loadTokenizer(dir)).chatTemplate, null);
    // chat_template.jinja fallback.
    writeFileSync(join(dir, 'chat_template.jinja'), '{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}');
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: { content: '<|endoftext|>' } }));
    const t1 = await loadTokenizer(dir);
    assert.equal(t1.specialIds.bos, 256);
    assert.equal(t1.applyChatTemplate([{ role: 'user', content: 'x' }]), '<|endoftext|>x');
    // A list of named templates: "default" wins over the file.
    writeFileSync(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify({ chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D{{ add_generation_prompt }}' }] }),
    );
    assert.equal((await loadTokenizer(dir)).applyChatTemplate([], { addGenerationPrompt: true }), 'Dtrue');
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{% for %}' }));
    await assert.rejects(loadTokenizer(dir), (e: unknown) => e instanceof ModelLoadError && e.key === 'chat_template');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
