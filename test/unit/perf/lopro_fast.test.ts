// LoPRo with a pluggable GPTQ engine (gptq_device_lopro.ts) against quant/lopro.ts: with the
// synchronous TypeScript GPTQ, or the row-parallel one, the stored parts must be identical.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG } from '../../../src/protocol/config';
import { gptqQuantize } from '../../../src/engine/quant/gptq';
import { gptqQuantizeParallel } from '../../../src/engine/quant/gptq_parallel';
import { quantizeLayerLoPRoWith } from '../../../src/engine/quant/gptq_device_lopro';
import { quantizeLayerLoPRo } from '../../../src/engine/quant/lopro';
import { HessianAccumulator } from '../../../src/engine/quant/hessian';
import { syntheticActivations, syntheticWeights } from '../quant/synthetic';

const rows = 64, cols = 384, T = 900;
const W = syntheticWeights(rows, cols, 71);
const X = syntheticActivations(T, cols, 72);
const acc = new HessianAccumulator(cols);
acc.add(X, T, 4);
const H = acc.finish();
const absMean = new Float64Array(cols);
for (let t = 0; t < T; t++) for (let j = 0; j < cols; j++) absMean[j] += Math.abs(X[t * cols + j]) / T;
const cfg = { ...DEFAULT_LAYER_CONFIG, method: 'lopro' as const, bits: 2, rank: 4 };

test('LoPRo with a pluggable GPTQ engine = quant/lopro.ts (sync TS and row-parallel engines)', async () => {
  const ref = quantizeLayerLoPRo(W, rows, cols, H, absMean, cfg, 5, { baselines: false });
  const sync = await quantizeLayerLoPRoWith(async (w, r, c, h, o) => gptqQuantize(w, r, c, h, o), W, rows, cols, H, absMean, cfg, 5);
  const par = await quantizeLayerLoPRoWith((w, r, c, h, o) => gptqQuantizeParallel(w, r, c, h, { ...o, threads: 2 }), W, rows, cols, H, absMean, cfg, 5);
  for (const x of [sync, par]) {
    assert.deepEqual(x.stored.perm, ref.stored.perm);
    assert.deepEqual(x.stored.uCodes, ref.stored.uCodes);
    assert.deepEqual(x.stored.codes, ref.stored.codes);
    assert.deepEqual(x.stored.scaleBits, ref.stored.scaleBits);
    assert.deepEqual(x.stored.zeros, ref.stored.zeros);
    assert.deepEqual(x.reconstructed, ref.reconstructed);
  }
  for (const k of ['lowrank', 'permute', 'rotate', 'gptq', 'reconstruct']) assert.ok(sync.seconds[k] >= 0, k);
});
