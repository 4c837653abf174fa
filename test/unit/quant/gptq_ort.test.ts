import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gptqQuantize, gptqQuantizeAsync, proxyLoss } from '../../../src/engine/quant/gptq';
import { createOrtLazyUpdate, gptqQuantizeOrt, proxyLossOrt } from '../../../src/engine/quant/gptq_ort';
import { HessianAccumulator } from '../../../src/engine/quant/hessian';
import { syntheticActivations, syntheticWeights } from './synthetic';

const rows = 40, cols = 300;
const W = syntheticWeights(rows, cols, 31);
const acc = new HessianAccumulator(cols);
acc.add(syntheticActivations(600, cols, 32), 600, 4);
const H = acc.finish();
const opts = { bits: 3, groupSize: 64, blockSize: 64, actOrder: true };
const ts = gptqQuantize(W, rows, cols, H, opts);

for (const dtype of ['float64', 'float32'] as const) {
  test(`ORT ${dtype} lazy update (CPU EP) reproduces the TypeScript kernel`, async () => {
    const ort = await createOrtLazyUpdate({ dtype, minMacs: 0 });
    try {
      const r = await gptqQuantizeAsync(W, rows, cols, H, { ...opts, lazySpan: 128, lazyUpdateAsync: (q) => ort.update(q) });
      assert.equal(ort.stats.calls, 4); // 300 columns: blocks of 64 in spans of 128 → 2 near + 2 far updates
      let diff = 0;
      for (let i = 0; i < r.codes.length; i++) if (r.codes[i] !== ts.codes[i]) diff++;
      const rel = Math.abs(r.loss - ts.loss) / ts.loss;
      if (dtype === 'float64') {
        assert.equal(diff, 0);
        assert.ok(rel < 1e-12, `loss rel ${rel}`); // measured 0 (bit-identical loss)
      } else {
        assert.ok(diff <= 0.001 * r.codes.length, `${diff} codes differ`); // measured 0; f32 rounding may flip a near-tie
        assert.ok(rel < 1e-4, `loss rel ${rel}`); // measured 1.6e-9
      }
    } finally {
      await ort.release();
    }
  });
}

test('gptqQuantizeOrt (linalg ORT Cholesky + ORT lazy updates, lazySpan) matches gptqQuantize', async () => {
  const r = await gptqQuantizeOrt(W, rows, cols, H, { ...opts, blockSize: 32 });
  const t = gptqQuantize(W, rows, cols, H, { ...opts, blockSize: 32 });
  let diff = 0;
  for (let i = 0; i < r.codes.length; i++) if (r.codes[i] !== t.codes[i]) diff++;
  assert.equal(diff, 0);
  assert.ok(Math.abs(r.loss - t.loss) <= 1e-6 * t.loss); // Cholesky products in f32: measured 2.5e-7
});

test('proxyLossOrt = proxyLoss (float64; chunked rows)', async () => {
  const want = proxyLoss(W, ts.Q, H, rows, cols);
  const got = await proxyLossOrt(W, ts.Q, H, rows, cols, { rowChunk: 7 });
  assert.ok(Math.abs(got - want) <= 1e-12 * want, `${got} vs ${want}`);
  const got32 = await proxyLossOrt(W, ts.Q, H, rows, cols, { dtype: 'float32' });
  assert.ok(Math.abs(got32 - want) <= 1e-4 * want, `${got32} vs ${want}`); // measured 8.3e-8
});
