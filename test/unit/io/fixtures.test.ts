// Files written by other safetensors writers (torch/safetensors via the golden generator, HF
// model exports) must load, every tensor, with values matching the independent decoder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../../../src/engine/io/checkpoint';
import { isFloatDtype } from '../../../src/engine/io/safetensors';
import { referenceDecode, referenceFloats, sameFloats, bytesEqual } from './helpers';

const REPO = path.resolve(__dirname, '../../..');

function checkAll(p: string, file: string): { tensors: number; bytes: number } {
  const c = openCheckpoint(p);
  const ref = referenceDecode(new Uint8Array(fs.readFileSync(file)));
  try {
    assert.equal(c.entries.length, ref.size);
    let bytes = 0;
    for (const e of c.entries) {
      const r = ref.get(e.name)!;
      assert.equal(e.dtype, r.dtype);
      assert.deepEqual(e.shape, r.shape);
      const got = c.readBytes(e.name);
      assert.ok(bytesEqual(got, r.bytes), `${file}: ${e.name}`);
      if (isFloatDtype(e.dtype)) assert.ok(sameFloats(c.readFloat32(e.name), referenceFloats(e.dtype, r.bytes)), `${file}: ${e.name} as float32`);
      bytes += got.length;
    }
    return { tensors: c.entries.length, bytes };
  } finally {
    c.close();
  }
}

test('all golden cases load (written by the reference generator)', () => {
  const dir = path.join(REPO, 'test/golden/cases');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  assert.ok(files.length >= 20, `found ${files.length} golden files`);
  for (const f of files) {
    const { tensors } = checkAll(path.join(dir, f), path.join(dir, f));
    assert.ok(tensors >= 3, f);
  }
});

test('embedded tiny model (F16) loads', () => {
  const dir = path.join(REPO, 'fixtures/tiny');
  const c = openCheckpoint(dir);
  assert.equal(c.kind, 'folder');
  assert.ok(c.entries.every((e) => e.dtype === 'F16'));
  assert.ok(c.has('model.embed_tokens.weight'));
  c.close();
  checkAll(dir, path.join(dir, 'model.safetensors'));
});

const SMALL = '/work/shared/fixtures/models/small';
test('shared small model (BF16) loads', { skip: fs.existsSync(path.join(SMALL, 'model.safetensors')) ? false : `${SMALL} is absent on this machine` }, () => {
  const { tensors, bytes } = checkAll(SMALL, path.join(SMALL, 'model.safetensors'));
  assert.ok(tensors > 10 && bytes > 1e7);
  const c = openCheckpoint(SMALL);
  assert.ok(c.entries.some((e) => e.dtype === 'BF16'));
  c.close();
});
