// R1SVD's mat-vecs on the Dawn device (backend/gpu/r1svd.ts r1svdOnDawn, A resident on the device) against
// r1svd.ts, on SwiftShader (test/unit/dawn_device.ts). Float32 sums with the found factors as a correction:
// σ̂, the unrounded vectors, the residual and the energy to float32 rounding; FP8 codes may flip at
// rounding boundaries. Shapes cover several row slabs and a short one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { r1svd } from '../../../src/engine/quant/r1svd';
import { frob2 } from '../../../src/engine/quant/lopro_mat';
import { r1svdOnDawn } from '../../../src/engine/backend/gpu/r1svd';
import { assertR1svdAgrees, lowRankTestMatrix as testMatrix } from '../quant/synthetic';
import { testDawn } from '../dawn_device';

for (const [m, n] of [
  [150, 300],
  [300, 130],
])
  test(`r1svdOnDawn = r1svd to float32 rounding (${m}×${n})`, async (t) => {
    const gpu = await testDawn(t);
    if (!gpu) return;
    const A = testMatrix(m, n, 11);
    const buf = await gpu.bufferFrom(A);
    try {
      for (const roundFactors of [false, true]) {
        const opts = { rank: 6, powerIters: 2, seed: 3, roundFactors };
        const ref = r1svd(A, m, n, opts);
        const dev = await r1svdOnDawn(gpu, buf, frob2(A), m, n, opts);
        assertR1svdAgrees(A, ref, dev, roundFactors);
      }
      // A is read only: both runs above used the same buffer, and it still holds A.
      const back = new Float32Array(await gpu.read(buf, 4 * m * n));
      assert.ok(
        back.every((v, i) => v === A[i]),
        'r1svdOnDawn modified A',
      );
    } finally {
      buf.destroy();
    }
  });
