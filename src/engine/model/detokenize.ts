// Streaming text from generated tokens without decoding the whole continuation at every token (which
// is quadratic in its length). Each step decodes a short window: the tokens after `prefix`, and the
// same window without the ones not yet shown (from `read` on); the new text is the difference. A step
// whose text ends in U+FFFD (a character whose bytes are not all generated yet) shows nothing and the
// window grows until the character is whole. Decoding from `prefix` rather than from `read` keeps the
// context a tokenizer needs to space a token (SentencePiece's leading "▁", byte-level merges).

export class IncrementalDetokenizer {
  private prefix = 0;
  private read = 0;

  private readonly decode: (ids: readonly number[]) => string;

  constructor(decode: (ids: ArrayLike<number>) => string) {
    this.decode = (ids) => (ids.length ? decode(ids) : ''); // the tokenizer library refuses an empty list
  }

  /** The text `tokens` (all generated so far) add to what earlier calls returned; '' while a character is incomplete. */
  next(tokens: readonly number[]): string {
    const shown = this.decode(tokens.slice(this.prefix, this.read));
    const window = this.decode(tokens.slice(this.prefix));
    if (window.length <= shown.length || window.endsWith('\uFFFD')) return '';
    this.prefix = this.read;
    this.read = tokens.length;
    return window.slice(shown.length);
  }

  /** At the end: whatever whole characters are still held back (a trailing incomplete one is dropped). */
  flush(tokens: readonly number[]): string {
    const shown = this.decode(tokens.slice(this.prefix, this.read));
    const window = this.decode(tokens.slice(this.prefix)).replace(/\uFFFD+$/, '');
    this.prefix = this.read = tokens.length;
    return window.length > shown.length ? window.slice(shown.length) : '';
  }
}
