// The Dawn device's staged copies (compute/dawn.ts bufferFrom / upload / uploadF32 / readInto): data larger
// than the two 16 MiB staging buffers, lengths that are not multiples of the chunk or of 4 bytes, an
// offset into the destination, float64 → float32 on the way up — byte-exact round trips on a real WebGPU
// device (SwiftShader here and in CI).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testDawn } from '../dawn_device';

test('Dawn staged copies: > 2 staging chunks up and down, odd lengths, offsets, float64 → float32', async (t) => {
  const gpu = await testDawn(t);
  if (!gpu) return;
  const n = 40 * 2 ** 20 + 3; // 2.5 chunks, not a multiple of 4
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = (i * 2654435761) >>> 24;
  const b = await gpu.bufferFrom(bytes, 'bytes');
  const back = new Uint8Array(n);
  await gpu.readInto(b, back);
  assert.ok(Buffer.compare(Buffer.from(bytes), Buffer.from(back)) === 0, 'bytes round trip');
  const part = new Uint8Array(1000);
  await gpu.readInto(b, part, 17 * 2 ** 20 + 4); // a small read at an offset
  assert.deepEqual(part, bytes.subarray(17 * 2 ** 20 + 4, 17 * 2 ** 20 + 1004));
  await gpu.upload(b, bytes.subarray(0, 20 * 2 ** 20), 8); // an upload at an offset, across a chunk border
  const shifted = new Uint8Array(await gpu.read(b, 20 * 2 ** 20 + 8));
  assert.deepEqual(shifted.subarray(8, 8 + 4096), bytes.subarray(0, 4096));
  assert.deepEqual(shifted.subarray(8 + 20 * 2 ** 20 - 4096), bytes.subarray(20 * 2 ** 20 - 4096, 20 * 2 ** 20));
  b.destroy();

  const m = 5 * 2 ** 20 + 1; // 20 MiB + 4 bytes of float32
  const f64 = Float64Array.from({ length: m }, (_, i) => Math.sin(i) * 1e3 + 1 / 3);
  const f = await gpu.bufferFrom(f64, 'f64 as f32');
  const got = new Float32Array(m);
  await gpu.readInto(f, got);
  assert.deepEqual(got, Float32Array.from(f64));
  f.destroy();
});
