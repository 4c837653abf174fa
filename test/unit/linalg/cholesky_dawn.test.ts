// The Dawn Cholesky (backend/gpu/cholesky.ts: U with UᵀU = H⁻¹, float32 on the engine's WebGPU
// device) against the float64 twin (quant/gptq_linalg.ts choleskyInverseUpper), on SwiftShader here
// and in CI (see test/unit/dawn_device.ts for the device set-up). Sizes cover one block (64),
// ragged panels, and ragged doubling pairs (200: the second pair of level 64 has 8 rows).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { choleskyInverseUpper } from '../../../src/engine/quant/gptq_linalg';
import { choleskyInverseUpperDawn } from '../../../src/engine/backend/gpu/cholesky';
import { syntheticLayer } from '../quant/synthetic';
import { testDawn as device } from '../dawn_device';

/** A damped Hessian as GPTQ feeds it (1 % of the mean diagonal). */
function dampedHessian(n: number, seed: number): Float64Array {
  const { H } = syntheticLayer(4, n, 2 * n, seed);
  let tr = 0;
  for (let i = 0; i < n; i++) tr += H[i * n + i];
  for (let i = 0; i < n; i++) H[i * n + i] += (0.01 * tr) / n;
  return H;
}

for (const n of [64, 130, 200, 300])
  test(`Dawn Cholesky: U of H⁻¹ equals the float64 twin (n = ${n})`, async (t) => {
    const gpu = await device(t);
    if (!gpu) return;
    const H = dampedHessian(n, n);
    const ref = choleskyInverseUpper(H, n);
    const buf = await choleskyInverseUpperDawn(gpu, H, n);
    const U = new Float32Array(await gpu.read(buf, 4 * n * n));
    buf.destroy();
    let maxRef = 0,
      maxErr = 0;
    for (let i = 0; i < n; i++)
      for (let j = i; j < n; j++) {
        maxRef = Math.max(maxRef, Math.abs(ref[i * n + j]));
        maxErr = Math.max(maxErr, Math.abs(U[i * n + j] - ref[i * n + j]));
      }
    assert.ok(maxErr <= 1e-3 * maxRef, `max |U − U_ref| = ${maxErr} against max |U_ref| = ${maxRef}`);
    // Strictly lower part: zero (the fused loop never reads it, but a stale value would mean a wrong flip).
    for (let i = 1; i < n; i++) for (let j = 0; j < i; j++) assert.equal(U[i * n + j], 0, `U[${i}, ${j}]`);
  });

test('Dawn Cholesky: a matrix that is not positive definite throws NotPositiveDefiniteError', async (t) => {
  const gpu = await device(t);
  if (!gpu) return;
  const n = 100;
  const H = dampedHessian(n, 3);
  H[40 * n + 40] = -1; // J·H·J's pivot 59
  await assert.rejects(choleskyInverseUpperDawn(gpu, H, n), (e: Error) => e.name === 'NotPositiveDefiniteError' && /pivot 59 /.test(e.message));
});
