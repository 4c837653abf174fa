// R1SVD's mat-vecs on the Dawn device (quant/r1svd_dawn.ts) against r1svd.ts, on SwiftShader (see
// test/unit/perf/gptq_fused.test.ts). Float32 sums with the found factors as a correction, like the ORT
// backend (r1svd_device.test.ts): σ̂, the unrounded vectors, the residual and the energy to float32
// rounding; FP8 codes may flip at rounding boundaries. Shapes cover several row slabs and a short one.
import { test } from 'node:test';
import { r1svd } from '../../../src/engine/quant/r1svd';
import { r1svdDawn } from '../../../src/engine/quant/r1svd_dawn';
import { assertR1svdAgrees, lowRankTestMatrix as testMatrix } from '../quant/synthetic';
import { testDawn } from '../dawn_device';

for (const [m, n] of [[150, 300], [300, 130]])
  test(`r1svdDawn = r1svd to float32 rounding (${m}×${n})`, async (t) => {
    const gpu = await testDawn(t);
    if (!gpu) return;
    const A = testMatrix(m, n, 11);
    for (const roundFactors of [false, true]) {
      const opts = { rank: 6, powerIters: 2, seed: 3, roundFactors };
      const ref = r1svd(A, m, n, opts);
      const dev = await r1svdDawn(gpu, A, m, n, opts);
      assertR1svdAgrees(A, ref, dev, roundFactors);
    }
  });
