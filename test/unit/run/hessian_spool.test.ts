// The Hessian spool's file holds what a safetensors file written from memory holds (in place: the same
// data bytes behind a padded header; past its header reservation: the very same bytes), nothing appears
// at the target before the commit, and no temp file stays behind (committed or disposed).
// atomicWriteFileAsync's file ranges: copied across chunk boundaries; a range past the end of its
// file fails without leaving a temp file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { atomicWriteFileAsync } from '../../../src/engine/io/atomic';
import { SafetensorsFile } from '../../../src/engine/io/safetensors';
import { type TensorData, writeSafetensorsAtomic } from '../../../src/engine/io/safetensors_writer';
import { HessianSpool } from '../../../src/engine/run/hessian_spool';
import { randomBytes, rmDir, rng, tmpDir } from '../io/helpers';

function hessianPass(r: () => number, key: string, n: number): TensorData[] {
  return [
    { name: `${key}::H`, dtype: 'F32', shape: [n, n], data: Float32Array.from({ length: n * n }, () => r() - 0.5) },
    { name: `${key}::abs_mean`, dtype: 'F32', shape: [n], data: Float32Array.from({ length: n }, () => r()) },
  ];
}

function samePadded(spooled: Uint8Array, memory: Uint8Array): void {
  // The same tensors and metadata, the same data bytes; only the header's padding may differ.
  const len = (f: Uint8Array) => Number(new DataView(f.buffer, f.byteOffset).getBigUint64(0, true));
  const [ls, lm] = [len(spooled), len(memory)];
  assert.deepEqual(JSON.parse(Buffer.from(spooled.subarray(8, 8 + ls)).toString()), JSON.parse(Buffer.from(memory.subarray(8, 8 + lm)).toString()));
  assert.ok(Buffer.from(spooled.subarray(8 + ls)).equals(Buffer.from(memory.subarray(8 + lm))), 'data bytes');
}

for (const [label, maxTensors] of [
  ['written in place behind its reserved header', 8],
  ['copied when its header outgrows the reservation', 0],
] as const) {
  test(`a spooled Hessian cache holds the tensors a file written from memory holds (${label})`, async () => {
    const dir = tmpDir('spool');
    try {
      const r = rng(7);
      const passes = [hessianPass(r, 'attn_in', 24), hessianPass(r, 'attn_out', 24), [...hessianPass(r, 'mlp_in', 24), ...hessianPass(r, 'mlp_act', 56)]];
      const meta = { nsamples: '128', ctx: '512' };
      writeSafetensorsAtomic(join(dir, 'memory.safetensors'), passes.flat(), meta);
      const target = join(dir, 'block-00003.safetensors');
      const spool = new HessianSpool(target, maxTensors);
      for (const p of passes) spool.add(p);
      assert.equal(spool.count, 8);
      assert.equal(existsSync(target), false, 'nothing at the target before the commit');
      await spool.commitTo(meta);
      const spooled = readFileSync(target);
      const memory = readFileSync(join(dir, 'memory.safetensors'));
      if (maxTensors === 0) assert.ok(spooled.equals(memory), 'a copied file is byte for byte the memory-written one');
      else samePadded(spooled, memory);
      const f = SafetensorsFile.open(target);
      try {
        assert.deepEqual(f.readFloat32('mlp_act::H'), passes[2][2].data);
        assert.deepEqual(f.readFloat32('attn_in::abs_mean'), passes[0][1].data);
      } finally {
        f.close();
      }
      assert.deepEqual(readdirSync(dir).sort(), ['block-00003.safetensors', 'memory.safetensors'], 'no temp file left');
    } finally {
      rmDir(dir);
    }
  });
}

test('a disposed spool (a failed block) leaves no file; disposing twice is harmless', () => {
  const dir = tmpDir('spool-dispose');
  try {
    const spool = new HessianSpool(join(dir, 'block-00000.safetensors'), 4);
    spool.add(hessianPass(rng(1), 'attn_in', 8));
    assert.equal(readdirSync(dir).length, 1, 'the temp file');
    spool.dispose();
    spool.dispose();
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmDir(dir);
  }
});

test('atomicWriteFileAsync copies file ranges in chunks and fails whole on a short source', async () => {
  const dir = tmpDir('range');
  try {
    const src = randomBytes(rng(3), 40 * 2 ** 20 + 13); // past two 16 MiB chunks
    writeFileSync(join(dir, 'src.bin'), src);
    const head = Uint8Array.of(1, 2, 3);
    await atomicWriteFileAsync(join(dir, 'out.bin'), [head, { file: join(dir, 'src.bin'), offset: 5, length: src.length - 5 }]);
    const out = readFileSync(join(dir, 'out.bin'));
    assert.equal(out.length, 3 + src.length - 5);
    assert.deepEqual(out.subarray(0, 3), Buffer.from(head));
    assert.ok(Buffer.from(src.subarray(5)).equals(out.subarray(3)));
    await assert.rejects(atomicWriteFileAsync(join(dir, 'short.bin'), [{ file: join(dir, 'src.bin'), offset: 10, length: src.length }]), /short/);
    assert.deepEqual(readdirSync(dir).sort(), ['out.bin', 'src.bin'], 'no temp file and no partial output');
  } finally {
    rmDir(dir);
  }
});
