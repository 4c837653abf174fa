// The next block's weights read on a worker thread (run/read_ahead.ts): the same float32 arrays as the direct read
// (tiny's F16, and F32 and BF16 copies of a block), the same error for a non-finite weight (naming the tensor and the
// index), and the direct read where nothing was started for the block asked for.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { openModel } from '../../../src/engine/model/loader';
import { loadBlockWeights } from '../../../src/engine/model/llama_forward';
import { ReadAhead } from '../../../src/engine/run/read_ahead';
import { writeSafetensorsAtomic, type TensorData } from '../../../src/engine/io/safetensors_writer';
import { f32ArrayToBf16 } from '../../../src/engine/io/dtypes';
import { tmpdir } from 'node:os';

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

async function sameAsDirect(dir: string): Promise<void> {
  const m = openModel(dir);
  const read = (n: string) => m.checkpoint.readFloat32(n);
  const ra = ReadAhead.create(m.cfg, m.checkpoint, true);
  try {
    for (let b = 0; b < m.cfg.numLayers; b++) {
      if (b === 0) ra.start(0);
      const got = await ra.take(b, read);
      ra.start(b + 1);
      const want = await loadBlockWeights(m.cfg, b, read);
      assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
      for (const k of Object.keys(want)) assert.deepEqual(bits(got[k]), bits(want[k]), `${dir} block ${b} ${k}`);
    }
    assert.equal(ra.served, m.cfg.numLayers, 'every block came from the worker');
  } finally {
    await ra.close();
    m.close();
  }
}

/** tiny with its block tensors rewritten by `f` (dtype and values), the rest copied. */
function rewrittenTiny(name: string, f: (n: string, v: Float32Array, shape: number[]) => TensorData): string {
  const dir = join(tmpdir(), `lopro-readahead-${name}-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  for (const side of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join('fixtures/tiny', side), join(dir, side));
  const m = openModel('fixtures/tiny');
  const tensors = m.checkpoint.entries.map((e) => f(e.name, m.checkpoint.readFloat32(e.name), [...e.shape]));
  m.close();
  writeSafetensorsAtomic(join(dir, 'model.safetensors'), tensors);
  return dir;
}

test('read ahead on a worker = the direct read, bit for bit: F16 (tiny), F32 and BF16', async () => {
  await sameAsDirect('fixtures/tiny');
  await sameAsDirect(rewrittenTiny('f32', (name, v, shape) => ({ name, dtype: 'F32', shape, data: v })));
  await sameAsDirect(rewrittenTiny('bf16', (name, v, shape) => ({ name, dtype: 'BF16', shape, data: f32ArrayToBf16(v) })));
});

test('a non-finite weight read ahead fails as the direct read does; a block not started is read directly', async () => {
  const bad = 'model.layers.1.mlp.up_proj.weight';
  const dir = rewrittenTiny('nan', (name, v, shape) => {
    if (name === bad) v[777] = Number.NaN;
    return { name, dtype: 'F32', shape, data: v };
  });
  const m = openModel(dir);
  const read = (n: string) => m.checkpoint.readFloat32(n);
  const direct = await loadBlockWeights(m.cfg, 1, read).then(
    () => assert.fail('the direct read accepted a NaN'),
    (e: Error) => e.message,
  );
  assert.match(direct, /model\.layers\.1\.mlp\.up_proj\.weight contains a non-finite value \(NaN\) at flat index 777/);
  const ra = ReadAhead.create(m.cfg, m.checkpoint, true);
  try {
    ra.start(1);
    await assert.rejects(ra.take(1, read), (e: Error) => e.message === direct);
    ra.start(1);
    const w0 = await ra.take(0, read); // block 1 was started, block 0 is asked for: read directly
    assert.equal(ra.served, 0);
    assert.deepEqual(Object.keys(w0).sort(), Object.keys(await loadBlockWeights(m.cfg, 0, read)).sort());
  } finally {
    await ra.close();
    m.close();
  }
});
