// R1SVD with A resident on the EP and never deflated (r1svd_device.ts) against r1svd.ts, on the CPU EP.
// Device sums are float32 and the found factors are applied as a correction instead of deflating A, so
// the factors agree to float32 rounding; FP8 codes may flip at rounding boundaries, so the tests compare
// σ̂, the unrounded vectors and the reconstruction error, not bit-identity.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG } from '../../../src/protocol/config';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { r1svd } from '../../../src/engine/quant/r1svd';
import { r1svdDevice, chunkRows } from '../../../src/engine/quant/r1svd_device';
import { GptqPool, gptqQuantizeParallel } from '../../../src/engine/quant/gptq_parallel';
import { quantizeLayerLoPRoParallel } from '../../../src/engine/quant/gptq_parallel_lopro';
import { assertR1svdAgrees, lowRankTestMatrix as testMatrix, syntheticLayer } from '../quant/synthetic';

const rtP = ComputeRuntime.create({ ep: 'cpu', intraOpNumThreads: 1 });
after(async () => (await rtP).dispose());

for (const [label, chunkBytes] of [['one chunk', undefined], ['4 row chunks', 4 * 300 * 40]] as const) {
  test(`r1svdDevice = r1svd to float32 rounding (${label})`, async () => {
    const rt = await rtP;
    const m = 150, n = 300;
    if (chunkBytes) assert.equal(chunkRows(m, n, chunkBytes).length, 4);
    const A = testMatrix(m, n, 11);
    for (const roundFactors of [false, true]) {
      const opts = { rank: 6, powerIters: 2, seed: 3, roundFactors };
      const ref = r1svd(A, m, n, opts);
      const dev = await r1svdDevice(rt, A, m, n, { ...opts, chunkBytes });
      assertR1svdAgrees(A, ref, dev, roundFactors);
    }
  });
}

test('LoPRo on the pool with the device R1SVD ≈ the pool R1SVD (reconstruction error)', async () => {
  const rt = await rtP;
  const rows = 64, cols = 256, T = 700;
  const { W, H, absMean } = syntheticLayer(rows, cols, T, 81);
  const cfg = { ...DEFAULT_LAYER_CONFIG, method: 'lopro' as const, bits: 2, rank: 4 };
  const pool = GptqPool.create(2);
  try {
    const eng = (w: Float64Array, r: number, c: number, h: Float64Array, o: Parameters<typeof gptqQuantizeParallel>[4]) => gptqQuantizeParallel(w, r, c, h, { ...o, pool });
    const ref = await quantizeLayerLoPRoParallel(pool, eng, W, rows, cols, H, absMean, cfg, 5);
    const dev = await quantizeLayerLoPRoParallel(pool, eng, W, rows, cols, H, absMean, cfg, 5, 'layer', (A, m, n, o) => r1svdDevice(rt, A, m, n, o));
    const err = (Q: Float32Array) => { let s = 0; for (let i = 0; i < Q.length; i++) s += (Q[i] - W[i]) ** 2; return s; };
    const eRef = err(ref.reconstructed), eDev = err(dev.reconstructed);
    assert.ok(Math.abs(eDev - eRef) / eRef < 0.02, `reconstruction error ${eDev} vs ${eRef}`);
    assert.equal(dev.stored.rank, ref.stored.rank);
  } finally {
    await pool.close();
  }
});
