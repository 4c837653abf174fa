// Bit packing of integer codes, the layout of `<layer>.lopro.codes` (and of the packed zeros and
// vector codes) in the native LoPRo checkpoint. Documented in docs/lopro-format.md too.
//
// ┌─ Layout (pinned; changing it is a format version bump) ──────────────────────────────────────┐
// │ A rows×cols matrix of b-bit codes (1 ≤ b ≤ 16; LoPRo uses 2, 3, 4, 8; lopro_v codes d·b).   │
// │ Every row starts on a fresh 32-bit word: wordsPerRow = ceil(cols·b / 32).                    │
// │ Within a row, code k occupies stream bits [k·b, (k+1)·b), least significant bit first;       │
// │ stream bit t is bit (t mod 32) of word ⌊t/32⌋ of the row. Unused high bits of the last word  │
// │ are 0. Words are stored little-endian, so the byte stream is the same as LSB-first packing   │
// │ into bytes. For b ∈ {2, 4, 8} no code straddles a word (16, 8, 4 codes per word); for b = 3  │
// │ (10⅔ codes per word) a code may straddle two words. Stored as I32 [rows, wordsPerRow]        │
// │ (the bit pattern; the sign is meaningless).                                                   │
// └──────────────────────────────────────────────────────────────────────────────────────────────┘

export function wordsPerRow(cols: number, bits: number): number {
  return Math.ceil((cols * bits) / 32);
}

function checkBits(bits: number): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) throw new RangeError(`bit width must be an integer in [1, 16], got ${bits}`);
}

/** Packs rows×cols codes (each < 2^bits) into rows × wordsPerRow uint32 words. */
export function packRows(codes: ArrayLike<number>, rows: number, cols: number, bits: number): Uint32Array {
  checkBits(bits);
  if (codes.length !== rows * cols) throw new RangeError(`codes has ${codes.length} values, expected ${rows}×${cols}`);
  const wpr = wordsPerRow(cols, bits),
    out = new Uint32Array(rows * wpr),
    lim = 1 << bits;
  // Integer-typed codes and b ∈ {1, 2, 4, 8, 16} (no code straddles a word): each word assembled in a register,
  // the range checked once by OR-ing all codes (≥ 2^b somewhere ⇔ a bit at or above b set): a 7B MLP layer's
  // 45 M codes are on the commit path of every layer.
  if ((codes instanceof Uint8Array || codes instanceof Uint16Array) && 32 % bits === 0) {
    const per = 32 / bits;
    let any = 0;
    for (let r = 0; r < rows; r++) {
      const o = r * cols,
        base = r * wpr;
      for (let w = 0; w < wpr; w++) {
        const k0 = w * per,
          k1 = Math.min(cols, k0 + per);
        let word = 0;
        for (let k = k0, sh = 0; k < k1; k++, sh += bits) {
          const c = codes[o + k];
          any |= c;
          word |= c << sh;
        }
        out[base + w] = word;
      }
    }
    if (any < lim) return out;
    out.fill(0); // a code out of range: the loop below names it
  }
  for (let r = 0; r < rows; r++) {
    const base = r * wpr;
    for (let k = 0; k < cols; k++) {
      const c = codes[r * cols + k];
      if (!(c >= 0 && c < lim) || !Number.isInteger(c)) throw new RangeError(`code ${c} at row ${r}, column ${k} does not fit in ${bits} bits`);
      const t = k * bits,
        w = base + (t >>> 5),
        s = t & 31;
      out[w] |= c << s;
      if (s + bits > 32) out[w + 1] |= c >>> (32 - s);
    }
  }
  return out;
}

/** Inverse of packRows. `out` defaults to a Uint16Array (Uint8Array is fine for bits ≤ 8). */
export function unpackRows<T extends Uint8Array | Uint16Array = Uint16Array>(words: Uint32Array, rows: number, cols: number, bits: number, out?: T): T {
  checkBits(bits);
  const wpr = wordsPerRow(cols, bits);
  if (words.length !== rows * wpr) throw new RangeError(`packed codes have ${words.length} words, expected ${rows}×${wpr} for ${cols} columns of ${bits} bits`);
  const res = (out ?? new Uint16Array(rows * cols)) as T;
  const mask = (1 << bits) - 1;
  for (let r = 0; r < rows; r++) {
    const base = r * wpr;
    for (let k = 0; k < cols; k++) {
      const t = k * bits,
        w = base + (t >>> 5),
        s = t & 31;
      let v = words[w] >>> s;
      if (s + bits > 32) v |= words[w + 1] << (32 - s);
      res[r * cols + k] = v & mask;
    }
  }
  return res;
}

/** Bit-by-bit twin of packRows (the layout stated literally), for tests. */
export function packRows_ref(codes: ArrayLike<number>, rows: number, cols: number, bits: number): Uint32Array {
  const wpr = wordsPerRow(cols, bits),
    out = new Uint32Array(rows * wpr);
  for (let r = 0; r < rows; r++)
    for (let k = 0; k < cols; k++)
      for (let b = 0; b < bits; b++) {
        if (!((codes[r * cols + k] >> b) & 1)) continue;
        const t = k * bits + b;
        out[r * wpr + Math.floor(t / 32)] |= 1 << (t % 32);
      }
  return out;
}

/** Packed words as little-endian bytes (the safetensors payload). */
export function wordsToBytes(words: Uint32Array): Uint8Array {
  const out = new Uint8Array(words.length * 4);
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    out[4 * i] = w & 0xff;
    out[4 * i + 1] = (w >>> 8) & 0xff;
    out[4 * i + 2] = (w >>> 16) & 0xff;
    out[4 * i + 3] = w >>> 24;
  }
  return out;
}

export function bytesToWords(bytes: Uint8Array): Uint32Array {
  if (bytes.length % 4 !== 0) throw new RangeError(`packed payload of ${bytes.length} bytes is not a whole number of 32-bit words`);
  const out = new Uint32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = (bytes[4 * i] | (bytes[4 * i + 1] << 8) | (bytes[4 * i + 2] << 16) | (bytes[4 * i + 3] << 24)) >>> 0;
  return out;
}
