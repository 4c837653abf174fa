// Each validation rule, one malformed file each: right error code, message names file (and tensor).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsFile } from '../../../src/engine/io/safetensors';
import { ProtocolError } from '../../../src/protocol/rpc';
import { tmpDir, rmDir, rawFile } from './helpers';

const dir = tmpDir('val');
after(() => rmDir(dir));

const t = (dtype: string, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });
const hdr = (o: unknown) => JSON.stringify(o).padEnd(8, ' ');

interface Case {
  name: string;
  bytes: Uint8Array;
  code: string;
  match: RegExp;
  tensor?: string;
}
const cases: Case[] = [
  { name: 'empty', bytes: new Uint8Array(0), code: 'E_BAD_CHECKPOINT', match: /0 bytes, too small/ },
  { name: 'seven', bytes: new Uint8Array(7), code: 'E_BAD_CHECKPOINT', match: /7 bytes, too small/ },
  { name: 'len-too-small', bytes: rawFile('{}', new Uint8Array(0)), code: 'E_BAD_CHECKPOINT', match: /header length 2 is below the minimum/ },
  { name: 'len-past-eof', bytes: rawFile('{}      ', new Uint8Array(0), 64), code: 'E_BAD_CHECKPOINT', match: /runs past the end of the file/ },
  { name: 'len-huge', bytes: rawFile('{}      ', new Uint8Array(0), 2 ** 62), code: 'E_BAD_CHECKPOINT', match: /exceeds the 100000000-byte limit/ },
  { name: 'bad-utf8', bytes: rawFile(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d, 32, 32, 32, 32]), new Uint8Array(0)), code: 'E_BAD_CHECKPOINT', match: /not valid UTF-8/ },
  { name: 'bad-json', bytes: rawFile('{"a": [1,}   ', new Uint8Array(0)), code: 'E_BAD_CHECKPOINT', match: /not valid JSON/ },
  { name: 'array-header', bytes: rawFile('[1, 2, 3]   ', new Uint8Array(0)), code: 'E_BAD_CHECKPOINT', match: /must be a JSON object, got an array/ },
  {
    name: 'meta-not-string',
    bytes: rawFile(hdr({ __metadata__: { a: 1 } }), new Uint8Array(0)),
    code: 'E_BAD_CHECKPOINT',
    match: /"__metadata__" value for key "a" must be a string/,
  },
  { name: 'meta-not-object', bytes: rawFile(hdr({ __metadata__: 'x' }), new Uint8Array(0)), code: 'E_BAD_CHECKPOINT', match: /"__metadata__" must be an object/ },
  { name: 'entry-not-object', bytes: rawFile(hdr({ w: 5 }), new Uint8Array(0)), code: 'E_BAD_CHECKPOINT', match: /entry must be an object/, tensor: 'w' },
  {
    name: 'missing-dtype',
    bytes: rawFile(hdr({ w: { shape: [1], data_offsets: [0, 4] } }), new Uint8Array(4)),
    code: 'E_BAD_CHECKPOINT',
    match: /"dtype" must be a string/,
    tensor: 'w',
  },
  { name: 'unknown-dtype', bytes: rawFile(hdr({ w: t('F4', [2], [0, 1]) }), new Uint8Array(1)), code: 'E_UNSUPPORTED_DTYPE', match: /unsupported dtype "F4"/, tensor: 'w' },
  { name: 'shape-not-array', bytes: rawFile(hdr({ w: t('F32', 4, [0, 16]) }), new Uint8Array(16)), code: 'E_BAD_CHECKPOINT', match: /"shape" must be an array/, tensor: 'w' },
  { name: 'negative-dim', bytes: rawFile(hdr({ w: t('F32', [-1, 4], [0, 16]) }), new Uint8Array(16)), code: 'E_BAD_CHECKPOINT', match: /invalid dimension -1/, tensor: 'w' },
  { name: 'fractional-dim', bytes: rawFile(hdr({ w: t('F32', [1.5], [0, 6]) }), new Uint8Array(6)), code: 'E_BAD_CHECKPOINT', match: /invalid dimension 1.5/, tensor: 'w' },
  { name: 'string-dim', bytes: rawFile(hdr({ w: t('F32', ['4'], [0, 16]) }), new Uint8Array(16)), code: 'E_BAD_CHECKPOINT', match: /invalid dimension "4"/, tensor: 'w' },
  {
    name: 'offsets-missing',
    bytes: rawFile(hdr({ w: { dtype: 'F32', shape: [1] } }), new Uint8Array(4)),
    code: 'E_BAD_CHECKPOINT',
    match: /"data_offsets" must be \[begin, end\]/,
    tensor: 'w',
  },
  { name: 'offsets-reversed', bytes: rawFile(hdr({ w: t('F32', [1], [4, 0]) }), new Uint8Array(4)), code: 'E_BAD_CHECKPOINT', match: /ends before it begins/, tensor: 'w' },
  {
    name: 'size-mismatch',
    bytes: rawFile(hdr({ w: t('F32', [3], [0, 16]) }), new Uint8Array(16)),
    code: 'E_BAD_CHECKPOINT',
    match: /byte size 16 does not match dtype F32 × shape \[3\] = 12 bytes/,
    tensor: 'w',
  },
  // 2^31·2^31·2^2 wraps to 0 in 32-bit and loses bits in float64 arithmetic: BigInt keeps it honest
  { name: 'overflow-dims', bytes: rawFile(hdr({ w: t('U8', [2 ** 31, 2 ** 31, 4], [0, 0]) }), new Uint8Array(0)), code: 'E_BAD_CHECKPOINT', match: /does not match/, tensor: 'w' },
  {
    name: 'overlap',
    bytes: rawFile(hdr({ a: t('F32', [2], [0, 8]), b: t('F32', [2], [4, 12]) }), new Uint8Array(12)),
    code: 'E_BAD_CHECKPOINT',
    match: /overlap tensor "a"/,
    tensor: 'b',
  },
  {
    name: 'hole',
    bytes: rawFile(hdr({ a: t('F32', [1], [0, 4]), b: t('F32', [1], [8, 12]) }), new Uint8Array(12)),
    code: 'E_BAD_CHECKPOINT',
    match: /hole of 4 bytes/,
    tensor: 'b',
  },
  { name: 'not-from-zero', bytes: rawFile(hdr({ a: t('F32', [1], [4, 8]) }), new Uint8Array(8)), code: 'E_BAD_CHECKPOINT', match: /hole of 4 bytes/, tensor: 'a' },
  {
    name: 'trailing-bytes',
    bytes: rawFile(hdr({ a: t('F32', [1], [0, 4]) }), new Uint8Array(9)),
    code: 'E_BAD_CHECKPOINT',
    match: /5 bytes at the end of the data section belong to no tensor/,
  },
  {
    name: 'truncated',
    bytes: rawFile(hdr({ a: t('F32', [4], [0, 16]) }), new Uint8Array(10)),
    code: 'E_BAD_CHECKPOINT',
    match: /run past the end of the data section \(10 bytes\)/,
    tensor: 'a',
  },
  {
    name: 'offset-unsafe-int',
    bytes: rawFile(hdr({ a: t('U8', [1], [2 ** 60, 2 ** 60 + 1]) }), new Uint8Array(1)),
    code: 'E_BAD_CHECKPOINT',
    match: /"data_offsets" must be/,
    tensor: 'a',
  },
];

for (const c of cases) {
  test(`rejects ${c.name}`, () => {
    const file = path.join(dir, `${c.name}.safetensors`);
    fs.writeFileSync(file, c.bytes);
    assert.throws(
      () => SafetensorsFile.open(file),
      (e: unknown) => {
        assert.ok(e instanceof ProtocolError, `not a ProtocolError: ${String(e)}`);
        assert.equal(e.code, c.code, e.message);
        assert.match(e.message, c.match);
        assert.ok(e.message.includes(file), `message names the file: ${e.message}`);
        if (c.tensor) assert.ok(e.message.includes(`"${c.tensor}"`) && e.where?.includes(c.tensor), `message names the tensor: ${e.message}`);
        return true;
      },
    );
  });
}

test('accepts the edge cases that are valid', () => {
  const ok: [string, Uint8Array][] = [
    ['no tensors', rawFile('{}      ', new Uint8Array(0))],
    ['metadata only', rawFile(hdr({ __metadata__: { a: 'b' } }), new Uint8Array(0))],
    ['zero-size tensors anywhere in order', rawFile(hdr({ e: t('F32', [0], [4, 4]), a: t('F32', [1], [0, 4]), z: t('F16', [3, 0], [4, 4]) }), new Uint8Array(4))],
    ['out-of-order header keys', rawFile(hdr({ b: t('U8', [2], [3, 5]), a: t('U8', [3], [0, 3]) }), new Uint8Array([1, 2, 3, 4, 5]))],
    ['unpadded header, trailing whitespace and newline', rawFile(hdr({ a: t('I8', [1], [0, 1]) }) + ' \n\t ', new Uint8Array([255]))],
  ];
  for (const [name, bytes] of ok) {
    const file = path.join(dir, 'ok.safetensors');
    fs.writeFileSync(file, bytes);
    const f = SafetensorsFile.open(file);
    for (const e of f.entries) assert.equal(f.readBytes(e.name).length, e.byteLength, name);
    f.close();
  }
});

test('missing file and directory give E_IO naming the path', () => {
  const missing = path.join(dir, 'nope.safetensors');
  assert.throws(
    () => SafetensorsFile.open(missing),
    (e: unknown) => e instanceof ProtocolError && e.code === 'E_IO' && e.message.includes(missing),
  );
  assert.throws(
    () => SafetensorsFile.open(dir),
    (e: unknown) => e instanceof ProtocolError && e.code === 'E_IO' && e.message.includes(dir),
  );
});

test('a file truncated after open gives E_BAD_CHECKPOINT on read, naming file and tensor', () => {
  const file = path.join(dir, 'shrinks.safetensors');
  fs.writeFileSync(file, rawFile(hdr({ a: t('F32', [4], [0, 16]) }), new Uint8Array(16)));
  const f = SafetensorsFile.open(file);
  fs.truncateSync(file, 20);
  assert.throws(
    () => f.readBytes('a'),
    (e: unknown) =>
      e instanceof ProtocolError && e.code === 'E_BAD_CHECKPOINT' && e.message.includes(file) && e.message.includes('"a"') && /unexpected end of file/.test(e.message),
  );
  f.close();
});
