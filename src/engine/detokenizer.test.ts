import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StreamDecoder, type TokenTextDecoder } from './detokenizer.js';
import { tokenizerFromJson } from '../tokenizer/tokenizer.js';
import { byteLevelTokenizerJson, TINY_SPECIALS, tinyTokenizerConfig } from '../tokenizer/make-byte-tokenizer.js';
import { Prng } from '../util/prng.js';

const tok = tokenizerFromJson(byteLevelTokenizerJson(TINY_SPECIALS), tinyTokenizerConfig());
const bytesOf = (s: string): number[] => [...new TextEncoder().encode(s)]; // ids 0..255 are the bytes

function stream(ids: readonly number[], dec = new StreamDecoder(tok)): string[] {
  const out = ids.map((id) => dec.push(id));
  out.push(dec.flush());
  return out;
}

test('multi-byte text fed one byte token at a time streams exactly, never U+FFFD', () => {
  for (const s of ['é', '中文', '😀', 'a é 中文 😀 👍🏽 ok', 'naïve café — 日本語テキスト 🎉🎉']) {
    const chunks = stream(bytesOf(s));
    assert.equal(chunks.join(''), s);
    for (const c of chunks) assert.ok(!c.includes('\uFFFD'), `${JSON.stringify(c)} in ${s}`);
  }
});

test('a character is emitted as soon as its last byte arrives', () => {
  const dec = new StreamDecoder(tok);
  const [a, b, c, d] = bytesOf('😀');
  assert.deepEqual([dec.push(0x41), dec.push(a), dec.push(b), dec.push(c), dec.push(d)], ['A', '', '', '', '😀']);
  assert.equal(dec.flush(), '');
});

test('BPE tokens mixed with byte tokens and specials', () => {
  const s = 'the cat<|role_end|> in 中 her';
  const ids = tok.encode(s, { addSpecialTokens: false });
  assert.equal(stream(ids).join(''), s);
  const skipped = stream(ids, new StreamDecoder(tok, { skipSpecialTokens: true })).join('');
  assert.equal(skipped, 'the cat in 中 her');
});

test('random UTF-8 split at random byte-token boundaries matches a full decode', () => {
  const rng = new Prng(3);
  const alphabet = [...'ab é中😀 \n🏽ß'];
  for (let k = 0; k < 100; k++) {
    let s = '';
    for (let i = rng.int(30); i >= 0; i--) s += alphabet[rng.int(alphabet.length)];
    const chunks = stream(tok.encode(s, { addSpecialTokens: false }));
    assert.equal(chunks.join(''), s);
    assert.ok(!chunks.some((c) => c.includes('\uFFFD')));
  }
});

test('invalid bytes become U+FFFD in the output, never throw, and do not stall the stream', () => {
  // A lone 0xC3 then 'A': the broken lead byte is final once 'A' arrives.
  assert.equal(stream([0xc3, 0x41]).join(''), '\uFFFDA');
  // A truncated character at the very end comes out at flush.
  const dec = new StreamDecoder(tok);
  assert.equal(dec.push(0x41) + dec.push(0xe4) + dec.push(0xb8), 'A');
  assert.equal(dec.flush(), '\uFFFD');
  // A long run of stray continuation bytes streams (not held to the end) and keeps its length.
  const garbage = new Array<number>(200).fill(0x80);
  const d2 = new StreamDecoder(tok);
  const early = garbage.map((id) => d2.push(id)).join('');
  assert.ok(early.length >= 190, `held back ${200 - early.length}`);
  assert.equal(early + d2.flush(), '\uFFFD'.repeat(200));
});

test('decodes a bounded window, not the whole sequence', () => {
  let maxLen = 0;
  const counting: TokenTextDecoder = {
    decode(ids, opts) {
      maxLen = Math.max(maxLen, ids.length);
      return tok.decode(ids, opts);
    },
  };
  const text = 'the quick 中文 fox 😀 '.repeat(50);
  const chunks = stream(tok.encode(text, { addSpecialTokens: false }), new StreamDecoder(counting));
  assert.equal(chunks.join(''), text);
  assert.ok(maxLen <= 8, `window grew to ${maxLen}`);
});

test('prompt context: only new text is emitted', () => {
  const prompt = tok.encode('<role>HUMAN</role>hi<|role_end|><role>ASSISTANT</role>', { addSpecialTokens: false });
  const dec = new StreamDecoder(tok, { promptIds: prompt });
  const out = tok.encode(' the answer', { addSpecialTokens: false }).map((id) => dec.push(id));
  assert.equal(out.join('') + dec.flush(), ' the answer');
});
