// The resident updater keeps W as row chunks (≤ LOPRO_DEVICE_CHUNK_MB each, for WebGPU's buffer
// limits): with tiny chunks it must give the same slabs as with one chunk.
import { test } from 'node:test';
import assert from 'node:assert/strict';

test('resident updater: W in many row chunks = W in one chunk', async () => {
  process.env.LOPRO_DEVICE_CHUNK_MB = String(16 * 100 * 4 / 2 ** 20); // 16 rows of 100 columns per chunk
  const { createResidentUpdater } = await import('../../../src/engine/quant/gptq_device');
  const { createHostUpdater } = await import('../../../src/engine/quant/gptq_device');
  const { ComputeRuntime } = await import('../../../src/engine/compute/runtime');
  const rt = await ComputeRuntime.create({ ep: 'cpu', intraOpNumThreads: 1 });
  const rows = 50, cols = 100, B = 20, S = 40;
  const hinv = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) for (let j = i; j < cols; j++) hinv[i * cols + j] = Math.cos(i * 3 + j) / (1 + j - i);
  const w0 = Float32Array.from({ length: rows * cols }, (_, k) => Math.sin(k * 0.1));
  const a = await createResidentUpdater(rt, rows, cols, hinv, S), b = await createHostUpdater(rt, rows, cols, hinv, S); // b: one host copy
  await a.init(w0);
  await b.init(w0);
  for (let i1 = 0; i1 + B < cols; i1 += B) {
    const e = Float32Array.from({ length: rows * B }, (_, k) => Math.cos(k + i1));
    const ra = await a.update(e, B, i1, i1 + B), rb = await b.update(e, B, i1, i1 + B);
    assert.equal(ra.slab.length, rb.slab.length);
    let md = 0;
    for (let k = 0; k < ra.slab.length; k++) md = Math.max(md, Math.abs(ra.slab[k] - rb.slab[k]));
    assert.ok(md < 1e-4, `max diff ${md}`); // float32, different summation order
  }
  await a.release();
  await b.release();
  await rt.dispose();
});
