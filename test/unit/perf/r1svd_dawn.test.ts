// R1SVD's mat-vecs on the Dawn device (quant/r1svd_dawn.ts) against r1svd.ts, on SwiftShader (see
// test/unit/perf/gptq_fused.test.ts). Float32 sums with the found factors as a correction, like the ORT
// backend (r1svd_device.test.ts): σ̂, the unrounded vectors, the residual and the energy to float32
// rounding; FP8 codes may flip at rounding boundaries. Shapes cover several row slabs and a short one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { r1svd } from '../../../src/engine/quant/r1svd';
import { r1svdDawn } from '../../../src/engine/quant/r1svd_dawn';
import { lowRankResidual2 as residual2, lowRankTestMatrix as testMatrix } from '../quant/synthetic';
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
      assert.equal(dev.rank, ref.rank);
      for (let k = 0; k < ref.rank; k++) {
        const rel = Math.abs(dev.sigma[k] - ref.sigma[k]) / ref.sigma[k];
        assert.ok(rel < (roundFactors ? 1.5e-3 : 1e-4), `sigma ${k} rel ${rel}`);
      }
      if (!roundFactors) {
        let d = 0, s = 0;
        for (let i = 0; i < ref.U.length; i++) { d += (dev.U[i] - ref.U[i]) ** 2; s += ref.U[i] ** 2; }
        assert.ok(Math.sqrt(d / s) < 1e-3, `U rel diff ${Math.sqrt(d / s)}`);
        d = 0; s = 0;
        for (let i = 0; i < ref.V.length; i++) { d += (dev.V[i] - ref.V[i]) ** 2; s += ref.V[i] ** 2; }
        assert.ok(Math.sqrt(d / s) < 1e-3, `V rel diff ${Math.sqrt(d / s)}`);
      } else {
        let same = 0;
        for (let i = 0; i < ref.uCodes.length; i++) if (ref.uCodes[i] === dev.uCodes[i]) same++;
        assert.ok(same / ref.uCodes.length > 0.98, `uCodes agree ${same / ref.uCodes.length}`);
      }
      const eRef = residual2(A, ref), eDev = residual2(A, dev);
      assert.ok(Math.abs(eDev - eRef) / eRef < 1e-3, `residual ${eDev} vs ${eRef}`);
      assert.ok(Math.abs(dev.energy - ref.energy) < 1e-4, `energy ${dev.energy} vs ${ref.energy}`);
    }
  });
