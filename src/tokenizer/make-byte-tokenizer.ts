/**
 * Builds the tiny byte-level BPE tokenizer of the embedded random-weight model
 * (models/tiny-random). Same family as Ling's real tokenizer (GPT-2 byte-to-unicode, ByteLevel
 * pre-tokenizer and decoder), small enough to read: ids 0..255 are the bytes, then the added
 * special tokens, then a handful of merges so the BPE path is exercised.
 *
 * Run after building: `node dist/src/tokenizer/make-byte-tokenizer.js [outDir]`
 * (default outDir models/tiny-random). Writes tokenizer.json and tokenizer_config.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Special tokens of the tiny model, in id order after the 256 bytes. */
export const TINY_SPECIALS = ['<|endoftext|>', '<role>', '</role>', '<|role_end|>', '<think>', '</think>'];

/**
 * Added tokens that are not "special": skip_special_tokens keeps them, as Qwen3/DeepSeek-R1
 * tokenizers do, so a reasoning parser still sees `<think>`…`</think>` in the decoded text.
 */
const NOT_SPECIAL = new Set(['<think>', '</think>']);

/** A few merges (all pieces are in the vocab) so the tiny tokenizer is real BPE, not bytes only. */
const MERGES: ReadonlyArray<readonly [string, string]> = [
  ['Ġ', 't'],
  ['h', 'e'],
  ['Ġt', 'he'],
  ['i', 'n'],
  ['e', 'r'],
];

/** GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards. */
export function bytesToUnicode(): string[] {
  const printable = (b: number): boolean => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(printable(b) ? b : 256 + n++);
  return out;
}

/**
 * A valid HF tokenizer.json: BPE over the 256 byte-level symbols (ids 0..255 in byte order),
 * `specials` as added tokens right after the bytes (ids 256..), then the merge results.
 */
export function byteLevelTokenizerJson(specials: readonly string[]): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  const bytes = bytesToUnicode();
  bytes.forEach((ch, i) => (vocab[ch] = i));
  let next = 256;
  const added = specials.map((content) => {
    const id = next++;
    // Added tokens also sit in the model vocab (as GPT-2 does) so the vocab has no id gaps.
    vocab[content] = id;
    return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: !NOT_SPECIAL.has(content) };
  });
  for (const [a, b] of MERGES) vocab[a + b] = next++;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: MERGES.map(([a, b]) => [a, b]),
    },
  };
}

/**
 * Bailing-style chat template (written here; the real Ling-2.5 template text is unverified, see
 * model-spec §10). Roles: system → SYSTEM, user → HUMAN, assistant → ASSISTANT, tool → OBSERVATION.
 * `tools` go into the system turn inside <tools>…</tools>; assistant tool calls render as
 * <tool_call>{json}</tool_call>; `enable_thinking` (when defined) adds the
 * "detailed thinking on|off" system line used by the Bailing family.
 */
export const TINY_CHAT_TEMPLATE = [
  "{%- set sys = namespace(text='') -%}",
  "{%- if messages and messages[0]['role'] == 'system' -%}",
  "{%- set sys.text = messages[0]['content'] -%}",
  "{%- set rest = messages[1:] -%}",
  '{%- else -%}',
  '{%- set rest = messages -%}',
  '{%- endif -%}',
  '{%- if enable_thinking is defined -%}',
  "{%- set sys.text = ('detailed thinking on' if enable_thinking else 'detailed thinking off') + ('\\n' + sys.text if sys.text else '') -%}",
  '{%- endif -%}',
  '{%- if tools -%}',
  "{%- set sys.text = sys.text + ('\\n' if sys.text else '') + '<tools>' -%}",
  "{%- for tool in tools -%}{%- set sys.text = sys.text + '\\n' + (tool | tojson) -%}{%- endfor -%}",
  "{%- set sys.text = sys.text + '\\n</tools>' -%}",
  '{%- endif -%}',
  "{%- if sys.text -%}{{- '<role>SYSTEM</role>' + sys.text + '<|role_end|>' -}}{%- endif -%}",
  '{%- for message in rest -%}',
  "{%- set content = message['content'] if message['content'] is string else '' -%}",
  "{%- if message['role'] == 'user' -%}",
  "{{- '<role>HUMAN</role>' + content + '<|role_end|>' -}}",
  "{%- elif message['role'] == 'assistant' -%}",
  "{{- '<role>ASSISTANT</role>' + content -}}",
  "{%- if message['tool_calls'] -%}{%- for call in message['tool_calls'] -%}",
  "{%- set fn = call['function'] if call['function'] is defined else call -%}",
  "{{- '<tool_call>' + ({'name': fn['name'], 'arguments': fn['arguments']} | tojson) + '</tool_call>' -}}",
  '{%- endfor -%}{%- endif -%}',
  "{{- '<|role_end|>' -}}",
  "{%- elif message['role'] == 'tool' -%}",
  "{{- '<role>OBSERVATION</role>' + content + '<|role_end|>' -}}",
  "{%- elif message['role'] == 'system' -%}",
  "{{- '<role>SYSTEM</role>' + content + '<|role_end|>' -}}",
  '{%- else -%}',
  "{{- raise_exception('unknown role: ' + message['role']) -}}",
  '{%- endif -%}',
  '{%- endfor -%}',
  "{%- if add_generation_prompt -%}{{- '<role>ASSISTANT</role>' -}}{%- endif -%}",
].join('\n');

/** tokenizer_config.json of the tiny model: eos `<|role_end|>`, pad `<|endoftext|>`, no bos. */
export function tinyTokenizerConfig(): Record<string, unknown> {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: null,
    eos_token: { content: '<|role_end|>', lstrip: false, normalized: false, rstrip: false, single_word: false },
    pad_token: '<|endoftext|>',
    unk_token: null,
    add_bos_token: false,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: 4096,
    chat_template: TINY_CHAT_TEMPLATE,
  };
}

/** Writes tokenizer.json and tokenizer_config.json of the tiny model into `dir`. */
export function writeTinyTokenizer(dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJson(TINY_SPECIALS), null, 1) + '\n');
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tinyTokenizerConfig(), null, 2) + '\n');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeTinyTokenizer(process.argv[2] ?? 'models/tiny-random');
}
