/**
 * Streaming detokenisation (the vLLM/TGI prefix-offset method). Byte-level tokens can end in
 * the middle of a UTF-8 character, and decoding such a tail gives U+FFFD, so text is emitted only
 * once it is stable. Each push decodes a small window `ids[prefixOffset:]`, never the whole
 * sequence: `ids[prefixOffset:readOffset]` is already-emitted context (kept so decoders that
 * strip a leading space at the start of a decode, e.g. Metaspace, see it), the rest is new.
 *
 * Unlike the plain method, text is tracked per character inside the window, so a long run of
 * tokens that all end mid-character (BPE merges across character boundaries) still streams, and
 * invalid bytes become U+FFFD in the output instead of being held forever or throwing.
 */

/** What the decoder needs from a tokenizer (the Tokenizer class satisfies it). */
export interface TokenTextDecoder {
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean; cleanUpSpaces?: boolean }): string;
}

export interface StreamDecoderOptions {
  skipSpecialTokens?: boolean;
  /** Prompt ids: the last few become decode context so the first token's leading space survives. */
  promptIds?: readonly number[];
}

const REPLACEMENT = '\uFFFD';
/** vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET: prompt tokens kept as context. */
const PROMPT_CONTEXT = 5;
/**
 * A window this long without a clean UTF-8 end means garbage bytes; slide anyway so decoding
 * stays O(window) per token. At worst one character at the cut becomes U+FFFD.
 */
const MAX_WINDOW = 64;

export class StreamDecoder {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  /** UTF-16 units of decode(ids[prefixOffset:]) already emitted; -1: recompute from the prefix. */
  private emitted = -1;
  private readonly skip: boolean;

  constructor(
    private readonly tokenizer: TokenTextDecoder,
    opts: StreamDecoderOptions = {},
  ) {
    this.skip = opts.skipSpecialTokens ?? false;
    const ctx = opts.promptIds ? opts.promptIds.slice(Math.max(0, opts.promptIds.length - PROMPT_CONTEXT)) : [];
    this.ids.push(...ctx);
    this.readOffset = this.ids.length;
  }

  /** Adds one generated token; returns the newly safe text (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.decodeWindow();
    if (this.emitted < 0) this.emitted = this.prefixLength();
    // The WHATWG UTF-8 decoder turns an incomplete trailing sequence into exactly one U+FFFD,
    // so only the last U+FFFD can still become a character; earlier ones are final.
    const pendingTail = text.endsWith(REPLACEMENT);
    const forced = pendingTail && this.ids.length - this.prefixOffset > MAX_WINDOW;
    const end = pendingTail && !forced ? text.length - 1 : text.length;
    let out = '';
    if (end > this.emitted) {
      out = text.slice(this.emitted, end);
      this.emitted = end;
    }
    if (!pendingTail || forced) {
      // Clean end: the tokens read so far become the next window's context.
      if (forced) {
        this.prefixOffset = this.ids.length;
        this.emitted = 0;
      } else {
        this.prefixOffset = this.readOffset;
        this.emitted = -1;
      }
      this.readOffset = this.ids.length;
    }
    return out;
  }

  /** End of stream: whatever is left, an unfinished character as U+FFFD. Resets nothing else. */
  flush(): string {
    const text = this.decodeWindow();
    if (this.emitted < 0) this.emitted = this.prefixLength();
    const out = text.length > this.emitted ? text.slice(this.emitted) : '';
    this.emitted = Math.max(this.emitted, text.length);
    return out;
  }

  private decodeWindow(): string {
    return this.tokenizer.decode(this.ids.slice(this.prefixOffset), { skipSpecialTokens: this.skip, cleanUpSpaces: false });
  }

  private prefixLength(): number {
    if (this.readOffset <= this.prefixOffset) return 0;
    return this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), {
      skipSpecialTokens: this.skip,
      cleanUpSpaces: false,
    }).length;
  }
}
