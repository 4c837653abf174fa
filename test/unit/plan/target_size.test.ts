// --target-size: sizes parsed with their units, converted to the bits per weight of the quantized linears that
// give that output size (everything else at its stored width), rounded down; too small is refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { bpwForSize, parseSize } from '../../../src/engine/plan/target_size';
import { inspectModel } from '../../../src/engine/run/inspect';
import { ProtocolError } from '../../../src/protocol/rpc';

test('parseSize: decimal and binary units, bytes, and what is not a size', () => {
  assert.equal(parseSize('7.5GB'), 7.5e9);
  assert.equal(parseSize('800 MiB'), 800 * 2 ** 20);
  assert.equal(parseSize('2gib'), 2 * 2 ** 30);
  assert.equal(parseSize('123456'), 123456);
  for (const bad of ['', 'GB', '-1GB', '1.5 parsecs', '0MB', '1e9'])
    assert.throws(
      () => parseSize(bad),
      (e: unknown) => e instanceof ProtocolError && e.where === '--target-size' && e.message.includes(`"${bad}"`),
      bad,
    );
});

test('bpwForSize on the embedded tiny model: the size of a 2.6-bpw output gives 2.6 back; less than the float rest is refused', async () => {
  const s = await inspectModel(join(__dirname, '../../../fixtures/tiny'));
  const weights = s.linears.reduce((a, l) => a + l.rows * l.cols, 0);
  const rest = (s.params - weights) * (s.totalBytes / s.params);
  const bytes = rest + (2.6 * weights) / 8;
  const bpw = bpwForSize(s, bytes);
  assert.ok(bpw <= 2.6 && bpw > 2.6 - 1e-4, `${bpw}`);
  assert.throws(
    () => bpwForSize(s, rest * 0.9),
    (e: unknown) => e instanceof ProtocolError && e.where === '--target-size' && /keeps unquantized/.test(e.message),
  );
});
