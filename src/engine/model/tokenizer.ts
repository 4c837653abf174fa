// The model's own tokenizer.json through @huggingface/tokenizers (pure JS), applied per the
// protocol: the whole file as one string, no special tokens (no BOS/EOS).
// A whole calibration text (train.txt: 4.9 M chars → 1.40 M tokens) takes seconds, so no chunking is
// needed; ids are cached on disk per (tokenizer.json hash, text hash) because the pipeline tokenizes the
// same calibration text on every run.

import { engineEnv } from '../env';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';

/** Bump when the tokenizer library (package.json pin) changes: cached ids are keyed by it. */
export const TOKENIZER_IMPL = '@huggingface/tokenizers@0.2.0';

export interface LoadedTokenizer {
  /** tokenizer.json path. */
  source: string;
  /** sha256 of tokenizer.json (cache key). */
  hash: string;
  /** Size of the token id space (model vocab + added tokens). */
  idCount: number;
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
}

function readRaw(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new ProtocolError(ErrorCode.BadCheckpoint, `cannot read ${file}: ${(e as Error).message}`, file, 'the model folder must hold tokenizer.json');
  }
}

function parseJson(file: string, raw: Buffer): unknown {
  const text = raw.toString('utf8');
  try {
    return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (e) {
    throw new ProtocolError(ErrorCode.BadCheckpoint, `${file} is not valid JSON: ${(e as Error).message}`, file);
  }
}

/** Loads `<dir>/tokenizer.json` (+ tokenizer_config.json when present). */
export function loadTokenizer(dir: string): LoadedTokenizer {
  const source = join(dir, 'tokenizer.json');
  const raw = readRaw(source);
  const tj = parseJson(source, raw);
  if (typeof tj !== 'object' || tj === null || Array.isArray(tj) || typeof (tj as Record<string, unknown>).model !== 'object')
    throw new ProtocolError(
      ErrorCode.BadCheckpoint,
      `${source}: not a tokenizers JSON file (no "model" object)`,
      source,
      'tokenizer.json must come from the Hugging Face tokenizers library',
    );
  let tc: unknown = {};
  try {
    tc = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
  } catch {
    tc = {}; // optional: only carries metadata the protocol does not use (we add no special tokens)
  }
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tj as object, tc as object);
  } catch (e) {
    throw new ProtocolError(ErrorCode.BadCheckpoint, `${source}: unsupported tokenizer: ${(e as Error).message}`, source);
  }
  const model = (tj as Record<string, unknown>).model as { vocab?: Record<string, number> } | undefined;
  let idCount = 0;
  for (const id of Object.values(model?.vocab ?? {})) idCount = Math.max(idCount, id + 1);
  for (const a of ((tj as Record<string, unknown>).added_tokens as { id: number }[] | undefined) ?? []) idCount = Math.max(idCount, a.id + 1);
  return {
    source,
    hash: createHash('sha256').update(raw).digest('hex'),
    idCount,
    encode: (text) => {
      try {
        return Int32Array.from(tok.encode(text, { add_special_tokens: false }).ids);
      } catch (e) {
        // A tokenizer.json that constructs but cannot encode (broken merges, unknown pieces).
        throw new ProtocolError(ErrorCode.BadCheckpoint, `${source}: the tokenizer failed to encode the text: ${(e as Error).message}`, source);
      }
    },
    // The tokens' own text: no "clean-up" of spaces before punctuation (the library's default when tokenizer_config.json
    // is silent; transformers no longer does it by default), which would rewrite text already streamed to the user.
    decode: (ids) => tok.decode(Array.from(ids), { clean_up_tokenization_spaces: false }),
  };
}

export interface TokenizeResult {
  ids: Int32Array;
  /** Seconds spent tokenizing (0 when served from the cache). */
  seconds: number;
  cached: boolean;
}

/** Default cache: $LOPRO_CACHE_DIR or <tmp>/lopro-cache; `null` disables caching. */
export function defaultCacheDir(): string {
  return engineEnv().cacheDir ?? join(tmpdir(), 'lopro-cache');
}

/**
 * Tokenizes a text file per the protocol; ids are checked against `vocabSize` (the model's
 * embedding rows) so a tokenizer/model mismatch fails here, not as a garbage perplexity.
 */
export function tokenizeFile(tok: LoadedTokenizer, textFile: string, vocabSize: number, cacheDir: string | null = defaultCacheDir()): TokenizeResult {
  let buf: Buffer;
  try {
    buf = readFileSync(textFile);
  } catch (e) {
    throw new ProtocolError(ErrorCode.Io, `cannot read ${textFile}: ${(e as Error).message}`, textFile);
  }
  if (buf.length === 0) throw new ProtocolError(ErrorCode.BadCalibration, `text file ${textFile} is empty`, textFile, 'pass a UTF-8 text file with at least one window of tokens');
  const textHash = createHash('sha256').update(buf).digest('hex');
  // The key covers the tokenizer file, the text and the library that turned one into the other.
  const key = createHash('sha256').update(`${TOKENIZER_IMPL}\0${tok.hash}\0${textHash}`).digest('hex').slice(0, 32);
  const cacheFile = cacheDir ? join(cacheDir, `tokens-${key}.i32`) : null;
  if (cacheFile) {
    try {
      const b = readFileSync(cacheFile);
      if (b.byteLength % 4 === 0) {
        const ids = new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
        checkIds(ids, vocabSize, tok.source, textFile);
        return { ids, seconds: 0, cached: true };
      }
    } catch (e) {
      if (e instanceof ProtocolError) throw e; // a cached list that no longer fits the model
    }
  }
  const t0 = performance.now();
  const ids = tok.encode(buf.toString('utf8'));
  const seconds = (performance.now() - t0) / 1000;
  checkIds(ids, vocabSize, tok.source, textFile);
  if (cacheFile && cacheDir) {
    try {
      mkdirSync(cacheDir, { recursive: true });
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      writeFileSync(tmp, new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength));
      renameSync(tmp, cacheFile); // atomic: a concurrent reader never sees half a file
    } catch {
      // caching is an optimisation; a read-only cache dir must not fail the run
    }
  }
  return { ids, seconds, cached: false };
}

export function checkIds(ids: Int32Array, vocabSize: number, tokenizerFile: string, textFile: string): void {
  // A non-empty text that encodes to nothing: the tokenizer (empty vocabulary, no byte fallback)
  // dropped it all, which would otherwise be reported as a too-short text.
  if (ids.length === 0)
    throw new ProtocolError(
      ErrorCode.BadCheckpoint,
      `${tokenizerFile} encodes ${textFile} to no tokens at all`,
      tokenizerFile,
      'the tokenizer has no usable vocabulary: use the tokenizer.json of this model',
    );
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (id < 0 || id >= vocabSize)
      throw new ProtocolError(
        ErrorCode.BadConfig,
        `token id ${id} at position ${i} of ${textFile} is outside the model's vocabulary (vocab_size ${vocabSize}); tokenizer ${tokenizerFile}`,
        tokenizerFile,
        'the tokenizer.json does not belong to this model (or config.json vocab_size is wrong)',
      );
  }
}
