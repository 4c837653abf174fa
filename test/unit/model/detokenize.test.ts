// Streaming detokenization: the pieces of IncrementalDetokenizer, joined, are the whole continuation's
// decode (less a trailing incomplete character) for byte-level BPE (random ids split UTF-8 sequences)
// and for a SentencePiece-style Metaspace tokenizer (a token's leading "▁" is a space only after
// something), while each step decodes a short window, not the whole continuation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IncrementalDetokenizer } from '../../../src/engine/model/detokenize';
import { type LoadedTokenizer, loadTokenizer } from '../../../src/engine/model/tokenizer';
import { mulberry32 } from '../../../src/engine/util/random';

function stream(tok: LoadedTokenizer, ids: readonly number[]): { pieces: string[]; longestWindow: number } {
  let longestWindow = 0;
  const d = new IncrementalDetokenizer((t) => {
    longestWindow = Math.max(longestWindow, t.length);
    return tok.decode(t);
  });
  const pieces: string[] = [];
  for (let k = 1; k <= ids.length; k++) pieces.push(d.next(ids.slice(0, k)));
  pieces.push(d.flush(ids));
  return { pieces, longestWindow };
}

function check(tok: LoadedTokenizer, ids: readonly number[], label: string): number {
  const { pieces, longestWindow } = stream(tok, ids);
  assert.equal(pieces.join(''), tok.decode(ids).replace(/\uFFFD+$/, ''), `${label}: ${JSON.stringify(ids)}`);
  return longestWindow;
}

const METASPACE = {
  version: '1.0',
  added_tokens: [],
  normalizer: null,
  pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
  post_processor: null,
  decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
  model: {
    type: 'BPE',
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    vocab: { '▁': 0, a: 1, b: 2, c: 3, '▁a': 4, '▁b': 5, ab: 6, é: 7, '▁é': 8 },
    merges: ['▁ a', '▁ b', 'a b', '▁ é'],
  },
};

test('byte-level BPE (tiny, qwen3b): text and random ids stream to the whole decode; each step decodes a short window', () => {
  const r = mulberry32(3);
  for (const dir of ['fixtures/tiny', 'fixtures/arch/qwen3b']) {
    const tok = loadTokenizer(dir);
    const text = 'Sir Walter Elliot — naïve café 🙂 日本語のテキスト\n\n  spaces\tand tabs, ünïcödé.';
    const ids = [...tok.encode(text)];
    assert.ok(check(tok, ids, dir) <= 8, 'a window of a few tokens, not the continuation');
    for (let i = 0; i < 200; i++) {
      const n = 1 + Math.floor(r() * 40);
      check(
        tok,
        Array.from({ length: n }, () => Math.floor(r() * Math.min(tok.idCount, 4096))),
        `${dir} random`,
      );
    }
  }
});

test('a Metaspace (SentencePiece-style) tokenizer keeps its spaces when streamed token by token', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lopro-spm-'));
  try {
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(METASPACE));
    const tok = loadTokenizer(dir);
    const ids = [...tok.encode('ab a éb c ab')];
    assert.equal(tok.decode([5, 3]), 'bc', 'a leading ▁ is no space at the start');
    assert.equal(stream(tok, ids).pieces.join(''), 'ab a éb c ab');
    const r = mulberry32(9);
    for (let i = 0; i < 300; i++)
      check(
        tok,
        Array.from({ length: 1 + Math.floor(r() * 12) }, () => Math.floor(r() * 9)),
        'metaspace random',
      );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
