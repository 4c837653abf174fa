// loproReport's layer-view data for a layer above DETAIL_MAX_VALUES: histograms and the error tile come
// from every step-th row (permuted columns), the report keeps the layer's real shape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG } from '../../../src/protocol/config';
import { DETAIL_MAX_VALUES, loproReport } from '../../../src/engine/quant/lopro';
import { planRotation } from '../../../src/engine/quant/rotation';
import { histogram, maxAbs } from '../../../src/engine/quant/report';
import type { LoproStoredLayer } from '../../../src/engine/quant/lopro_dequant';
import { mulberry32 } from '../../../src/engine/util/random';

test('layers above DETAIL_MAX_VALUES: details from every 2nd row, counts and rows as expected', () => {
  const cols = 2048, rows = Math.floor(DETAIL_MAX_VALUES / cols) + 50; // just over: step 2
  const u = mulberry32(8);
  const W = Float32Array.from({ length: rows * cols }, () => u() - 0.5);
  const wHat = W.map((v) => v + 0.01 * (u() - 0.5));
  const R = Float64Array.from(W, (v) => v * 0.9), Rt = Float64Array.from({ length: rows * cols }, () => 2 * (u() - 0.5));
  const perm = Int32Array.from({ length: cols }, (_, k) => cols - 1 - k);
  const cfg = { ...DEFAULT_LAYER_CONFIG, rank: 0 };
  const plan = planRotation(cols, cfg.rotation, cfg.salientBlock, cfg.hadamardBlock);
  const stored = { rows, cols, perm, rank: 0 } as unknown as LoproStoredLayer;
  const { report, details } = loproReport(
    { W, H: new Float64Array(0), cfg, name: 'model.layers.0.mlp.up_proj', stored, reconstructed: wHat, factors: null, importance: new Float64Array(cols).fill(1), plan, R, Rt, notes: [], seconds: {}, losses: [1, 2] },
    { baselines: false },
  );
  assert.equal(details.rows, rows);
  assert.equal(report.relProxyLoss, 0.5);
  const rs = Math.ceil(rows / 2);
  const sum = (h: number[]) => h.reduce((a, b) => a + b, 0);
  for (const k of ['residualBefore', 'residualAfter', 'error'] as const) assert.equal(sum(details.histograms[k]), rs * cols, k);
  // The "before" histogram is R_p of rows 0, 2, 4, … with the shared edges.
  const before: number[] = [], after: number[] = [];
  for (let i = 0; i < rows; i += 2) for (let k = 0; k < cols; k++) {
    before.push(R[i * cols + perm[k]]);
    after.push(Rt[i * cols + k]);
  }
  const lim = Math.max(maxAbs(before), maxAbs(after));
  assert.deepEqual(details.histograms.residualBefore, histogram(before, lim, details.histograms.residualBefore.length));
  assert.ok(details.errorTile.values.every((v) => v > 0 && v < 0.01), 'tile = mean |Δ| of the sampled rows');
});
