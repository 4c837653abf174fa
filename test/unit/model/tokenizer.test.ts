// tokenizer.json through @huggingface/tokenizers, per the protocol (no special tokens), with the
// on-disk id cache and the vocabulary check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '../../../src/protocol/messages';
import { ProtocolError } from '../../../src/protocol/rpc';
import { loadTokenizer, tokenizeFile } from '../../../src/engine/model/tokenizer';

const tok = loadTokenizer('fixtures/tiny');

test('byte-level BPE: no BOS/EOS added, decode inverts encode, id space matches the model', () => {
  const text = 'Sir Walter Elliot, of Kellynch-hall, in Somersetshire — naïve café 🙂\n\n  spaces\tand tabs';
  const ids = tok.encode(text);
  assert.ok(ids.length > 10);
  assert.ok(!ids.includes(0), 'no <|endoftext|> (id 0) added');
  assert.equal(tok.decode(ids), text);
  assert.equal(tok.idCount, 4096);
});

test('whole-file encode equals the concatenation of encodes split at a newline-space boundary', () => {
  // The pre-tokenizer splits before " word" runs, so a boundary before a space-initial line is safe.
  const a = 'It was a truth universally acknowledged,',
    b = '\n that a single man in possession';
  assert.deepEqual([...tok.encode(a + b)], [...tok.encode(a), ...tok.encode(b)]);
});

test('tokenizeFile caches ids per (tokenizer, text) and rejects ids beyond the vocabulary', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lopro-tok-'));
  try {
    const f = join(dir, 'a.txt');
    writeFileSync(f, 'Anne Elliot walked to Uppercross.\n'.repeat(50));
    const first = tokenizeFile(tok, f, 4096, dir);
    assert.equal(first.cached, false);
    assert.equal(readdirSync(dir).filter((n) => n.endsWith('.i32')).length, 1);
    const second = tokenizeFile(tok, f, 4096, dir);
    assert.equal(second.cached, true);
    assert.deepEqual([...second.ids], [...first.ids]);
    const max = Math.max(...first.ids);
    assert.throws(
      () => tokenizeFile(tok, f, max, dir),
      (e: unknown) => e instanceof ProtocolError && e.code === ErrorCode.BadConfig && /outside the model's vocabulary/.test(e.message) && e.message.includes(String(max)),
    );
    assert.throws(
      () => tokenizeFile(tok, join(dir, 'missing.txt'), 4096, null),
      (e: unknown) => e instanceof ProtocolError && e.code === ErrorCode.Io,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
