/**
 * Tokenizer: HF `tokenizer.json` through @huggingface/tokenizers (pure JS) plus the Jinja chat
 * template through @huggingface/jinja. Everything the rest of bailing needs from a tokenizer goes
 * through this class, so the library's quirks stay here:
 *  - its `decode([])` throws, and its clean_up_tokenization_spaces defaults to true (HF
 *    transformers now defaults to false, and clean-up breaks streaming prefix stability), so we
 *    pass the flag explicitly, false unless tokenizer_config.json says true;
 *  - it expects special tokens in the config as plain strings, so {content} objects are
 *    flattened before the config is handed over.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { InvalidRequestError, ModelLoadError } from '../util/errors.js';

export interface ChatMessage {
  role: string;
  content?: string | null;
  /** Other fields (tool_calls, name, tool_call_id, reasoning_content…) reach the template as is. */
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  addGenerationPrompt?: boolean;
  tools?: readonly unknown[];
  /** Extra template variables (vLLM's `chat_template_kwargs`, e.g. enable_thinking). */
  kwargs?: Readonly<Record<string, unknown>>;
}

export interface SpecialIds {
  bos: number | null;
  eos: number | null;
  pad: number | null;
  unk: number | null;
  /** Ids of added tokens marked special (what skipSpecialTokens drops). */
  special: readonly number[];
}

export interface SpecialTokens {
  bos: string | null;
  eos: string | null;
  pad: string | null;
  unk: string | null;
}

export interface DecodeOptions {
  /** Default false (keep special tokens), as HF. */
  skipSpecialTokens?: boolean;
  /** HF's clean_up_tokenization_spaces; default from tokenizer_config.json, else false. */
  cleanUpSpaces?: boolean;
}

export class Tokenizer {
  readonly vocabSize: number;
  readonly specialIds: SpecialIds;
  readonly specialTokens: SpecialTokens;
  /** The chat template source, or null for a base model without one. */
  readonly chatTemplate: string | null;
  private readonly template: Template | null;
  private readonly cleanUpDefault: boolean;

  constructor(
    private readonly hf: HfTokenizer,
    config: Readonly<Record<string, unknown>>,
    chatTemplate: string | null,
    /** For error messages: where the template came from. */
    templateFile = 'chat template',
  ) {
    let maxId = -1;
    for (const id of hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.specialTokens = {
      bos: tokenString(config.bos_token),
      eos: tokenString(config.eos_token),
      pad: tokenString(config.pad_token),
      unk: tokenString(config.unk_token),
    };
    const idOf = (t: string | null): number | null => (t === null ? null : (hf.token_to_id(t) ?? null));
    const special = [...hf.get_added_tokens_decoder().entries()].filter(([, t]) => t.special).map(([id]) => id);
    this.specialIds = {
      bos: idOf(this.specialTokens.bos),
      eos: idOf(this.specialTokens.eos),
      pad: idOf(this.specialTokens.pad),
      unk: idOf(this.specialTokens.unk),
      special: special.sort((a, b) => a - b),
    };
    this.cleanUpDefault = config.clean_up_tokenization_spaces === true;
    this.chatTemplate = chatTemplate;
    try {
      // Parse once at load so a broken template fails at start, not on the first request.
      this.template = chatTemplate === null ? null : new Template(chatTemplate);
    } catch (e) {
      throw new ModelLoadError(`chat template does not parse: ${errorText(e)}`, templateFile, 'chat_template');
    }
  }

  /** Token ids of `text`. addSpecialTokens (default true, as HF) runs the post-processor (BOS etc.). */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  /** Text of `ids`. Invalid UTF-8 decodes to U+FFFD, never throws; unknown ids decode as nothing. */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    if (ids.length === 0) return '';
    return this.hf.decode(ids as number[], {
      skip_special_tokens: opts.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: opts.cleanUpSpaces ?? this.cleanUpDefault,
    });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  /**
   * Renders the chat template (HF apply_chat_template(tokenize=False)). The template sees
   * messages, add_generation_prompt, tools (when given), bos/eos/pad/unk_token, and kwargs.
   * Template errors (raise_exception, bad message shapes) are the request's fault: they throw
   * InvalidRequestError on `messages`.
   */
  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
    if (this.template === null) {
      throw new InvalidRequestError('this model has no chat template; use the completions API', 'messages');
    }
    const vars: Record<string, unknown> = {
      bos_token: this.specialTokens.bos ?? '',
      eos_token: this.specialTokens.eos ?? '',
      pad_token: this.specialTokens.pad ?? '',
      unk_token: this.specialTokens.unk ?? '',
      ...opts.kwargs,
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    };
    if (opts.tools !== undefined) vars.tools = opts.tools;
    try {
      return this.template.render(vars);
    } catch (e) {
      throw new InvalidRequestError(`chat template failed: ${errorText(e)}`, 'messages');
    }
  }
}

/**
 * Loads `dir/tokenizer.json`, `dir/tokenizer_config.json` (optional) and the chat template:
 * tokenizer_config.json `chat_template` (a string, or a list of {name, template} where "default"
 * is taken), else `dir/chat_template.jinja`, else none.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const tokFile = join(dir, 'tokenizer.json');
  const cfgFile = join(dir, 'tokenizer_config.json');
  const tokJson = await readJsonObject(tokFile, true);
  const config = (await readJsonObject(cfgFile, false)) ?? {};
  let template = chatTemplateFromConfig(config.chat_template, cfgFile);
  let templateFile = cfgFile;
  if (template === null) {
    templateFile = join(dir, 'chat_template.jinja');
    template = await readOptionalText(templateFile);
  }
  return tokenizerFromJson(tokJson, config, template, tokFile, templateFile);
}

/** Builds a Tokenizer from already-parsed JSON (tests, embedded models). */
export function tokenizerFromJson(
  tokenizerJson: Readonly<Record<string, unknown>>,
  config: Readonly<Record<string, unknown>> = {},
  chatTemplate: string | null = null,
  file = 'tokenizer.json',
  templateFile = 'chat template',
): Tokenizer {
  for (const key of ['model', 'added_tokens']) {
    if (!(key in tokenizerJson)) throw new ModelLoadError(`missing "${key}"; is this a Hugging Face tokenizer.json?`, file, key);
  }
  const model = tokenizerJson.model;
  if (typeof model !== 'object' || model === null || !('vocab' in model)) {
    throw new ModelLoadError('expected an object with a vocab', file, 'model');
  }
  // The library requires these keys to exist (null is fine); older files omit some.
  const full: Record<string, unknown> = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...tokenizerJson };
  const libConfig: Record<string, unknown> = { ...config, clean_up_tokenization_spaces: config.clean_up_tokenization_spaces === true };
  for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
    if (key in config) libConfig[key] = tokenString(config[key]);
  }
  if (Array.isArray(config.additional_special_tokens)) {
    libConfig.additional_special_tokens = config.additional_special_tokens.map(tokenString).filter((t) => t !== null);
  }
  delete libConfig.chat_template;
  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(full, libConfig);
  } catch (e) {
    throw new ModelLoadError(`cannot build the tokenizer: ${errorText(e)}`, file);
  }
  return new Tokenizer(hf, config, chatTemplate, templateFile);
}

/** tokenizer_config special tokens are a string, an AddedToken object {content, …}, or null. */
function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && 'content' in v && typeof v.content === 'string') return v.content;
  return null;
}

function chatTemplateFromConfig(v: unknown, file: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    for (const entry of v as unknown[]) {
      if (typeof entry === 'object' && entry !== null && 'name' in entry && entry.name === 'default') {
        if ('template' in entry && typeof entry.template === 'string') return entry.template;
      }
    }
    throw new ModelLoadError('expected a list of {name, template} with name "default"', file, 'chat_template');
  }
  throw new ModelLoadError(`expected a string or a list of {name, template}, found ${typeof v}`, file, 'chat_template');
}

async function readJsonObject(file: string, required: true): Promise<Record<string, unknown>>;
async function readJsonObject(file: string, required: false): Promise<Record<string, unknown> | null>;
async function readJsonObject(file: string, required: boolean): Promise<Record<string, unknown> | null> {
  const text = required ? await readRequired(file) : await readOptionalText(file);
  if (text === null) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new ModelLoadError(`not valid JSON: ${errorText(e)}`, file);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ModelLoadError(`expected a JSON object, found ${Array.isArray(parsed) ? 'an array' : typeof parsed}`, file);
  }
  return parsed as Record<string, unknown>;
}

async function readRequired(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new ModelLoadError(`cannot read: ${errorText(e)}`, file);
  }
}

async function readOptionalText(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    if (typeof e === 'object' && e !== null && 'code' in e && e.code === 'ENOENT') return null;
    throw new ModelLoadError(`cannot read: ${errorText(e)}`, file);
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
