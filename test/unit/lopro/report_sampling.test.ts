// A layer above DETAIL_MAX_VALUES: the layer view's histograms and error tile come from every step-th row
// (detailRowStep; the session's sampleRows hands the driver those rows of R and R′, permuted columns in
// loproReport), and the report keeps the layer's real shape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG } from '../../../src/protocol/config';
import { DETAIL_MAX_VALUES, detailRowStep } from '../../../src/engine/quant/lopro';
import { planRotation } from '../../../src/engine/quant/rotation';
import { histogram, loproReport, maxAbs } from '../../../src/engine/quant/report';
import type { LoproStoredLayer } from '../../../src/engine/quant/lopro_dequant';
import { mulberry32 } from '../../../src/engine/util/random';
import { cpuBackend } from '../backend/backends';

test('layers above DETAIL_MAX_VALUES: details from every 2nd row, counts and rows as expected', async () => {
  const cols = 2048,
    rows = Math.floor(DETAIL_MAX_VALUES / cols) + 50; // just over: step 2
  assert.equal(detailRowStep(rows, cols), 2);
  assert.equal(detailRowStep(rows - 50, cols), 1); // exactly DETAIL_MAX_VALUES: every row
  const u = mulberry32(8);
  const W = Float32Array.from({ length: rows * cols }, () => u() - 0.5);
  const wHat = W.map((v) => v + 0.01 * (u() - 0.5));
  const R = Float64Array.from(W, (v) => v * 0.9),
    Rt = Float64Array.from({ length: rows * cols }, () => 2 * (u() - 0.5));
  const perm = Int32Array.from({ length: cols }, (_, k) => cols - 1 - k);
  const cfg = { ...DEFAULT_LAYER_CONFIG, rank: 0 };
  const plan = planRotation(cols, cfg.rotation, cfg.salientBlock, cfg.hadamardBlock);
  const stored = { rows, cols, perm, rank: 0 } as unknown as LoproStoredLayer;
  // The rows the driver samples (lopro.ts: sampleRows(R, step), sampleRows(R′, step)) on the CPU backend.
  const step = detailRowStep(rows, cols);
  const s = cpuBackend(1).session();
  let sR: ArrayLike<number>, sRt: ArrayLike<number>;
  try {
    sR = await s.sampleRows(await s.upload(R, rows, cols, 'R', 't'), step);
    sRt = await s.sampleRows(await s.upload(Rt, rows, cols, 'Rt', 't'), step);
  } finally {
    s.close();
  }
  const rs = Math.ceil(rows / 2);
  assert.equal(sR.length, rs * cols);
  assert.equal(sRt.length, rs * cols);
  for (const i of [0, 1, rs - 1]) for (const k of [0, 7, cols - 1]) assert.equal(sR[i * cols + k], R[2 * i * cols + k], `sampled row ${i} is row ${2 * i}`);
  const { report, details } = loproReport({
    W,
    cfg,
    name: 'model.layers.0.mlp.up_proj',
    stored,
    reconstructed: wHat,
    factors: null,
    importance: new Float64Array(cols).fill(1),
    plan,
    sampled: { step, R: sR, Rt: sRt },
    losses: [1, 2],
    notes: [],
    seconds: {},
  });
  assert.equal(details.rows, rows);
  assert.equal(report.rows, rows);
  assert.equal(report.relProxyLoss, 0.5);
  const sum = (h: number[]) => h.reduce((a, b) => a + b, 0);
  for (const k of ['residualBefore', 'residualAfter', 'error'] as const) assert.equal(sum(details.histograms[k]), rs * cols, k);
  // The "before" histogram is R_p of rows 0, 2, 4, … with the shared edges.
  const before: number[] = [],
    after: number[] = [];
  for (let i = 0; i < rows; i += 2)
    for (let k = 0; k < cols; k++) {
      before.push(R[i * cols + perm[k]]);
      after.push(Rt[i * cols + k]);
    }
  const lim = Math.max(maxAbs(before), maxAbs(after));
  assert.deepEqual(details.histograms.residualBefore, histogram(before, lim, details.histograms.residualBefore.length));
  assert.deepEqual(details.histograms.residualAfter, histogram(after, lim, details.histograms.residualAfter.length));
  assert.ok(
    details.errorTile.values.every((v) => v > 0 && v < 0.01),
    'tile = mean |Δ| of the sampled rows',
  );
});
