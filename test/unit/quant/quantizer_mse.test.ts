// clip 'mse': the range search of the original GPTQ quant.py (mse=True: grid 100, maxshrink 0.8,
// norm 2.4), checked against a float64 brute force over the same candidates, and its effect on
// RTN and GPTQ at 2 bits (lower weighted error on heavy-tailed weights).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findParamsRow, findParamsRowMse, maxqFor } from '../../../src/engine/quant/quantizer';
import { rtnQuantize_ref as rtnQuantize } from '../../../src/engine/quant/rtn_ref';
import { gptqQuantize_ref as gptqQuantize } from '../../../src/engine/quant/gptq_ref';
import { proxyLoss } from '../../../src/engine/quant/gptq';
import { hessianNaive, normal, rng, syntheticActivations, syntheticWeights } from './synthetic';

/** Σ|Q(x) − x|^2.4 for one (scale, zero), float64 (clamp(round(x/s) + z)). */
function err_ref(x: number[], s: number, z: number, maxq: number): number {
  let e = 0;
  for (const v of x) {
    const q = Math.min(maxq, Math.max(0, Math.round(v / s) + z));
    e += Math.abs(s * (q - z) - v) ** 2.4;
  }
  return e;
}

/** The brute force: every shrink p = 1 − i/100, i < 80, of the min-max range (asymmetric). */
function bestShrink_ref(x: number[], maxq: number): { i: number; err: number } {
  const xmin = Math.min(0, ...x),
    xmax = Math.max(0, ...x);
  let best = { i: -1, err: Infinity };
  for (let i = 0; i < 80; i++) {
    const p = 1 - i / 100,
      s = (p * xmax - p * xmin) / maxq,
      z = Math.round(-(p * xmin) / s);
    const e = err_ref(x, s, z, maxq);
    if (e < best.err) best = { i, err: e };
  }
  return best;
}

test('findParamsRowMse picks the shrink a float64 brute force picks, and never does worse than min-max', () => {
  const u = rng(11),
    g = normal(u);
  let shrunk = 0;
  for (let t = 0; t < 200; t++) {
    const bits = t % 2 ? 2 : 3,
      maxq = maxqFor(bits);
    // Heavy-tailed groups of 128 (a Student-t-like spread: normal / sqrt(uniform)).
    const x = Array.from({ length: 128 }, () => Math.fround(g() / Math.sqrt(0.05 + u())));
    const [s, z] = findParamsRowMse(x, 0, x.length, maxq, false);
    const [s0, z0] = findParamsRow(x, 0, x.length, maxq, false);
    const got = err_ref(x, s, z, maxq),
      minmax = err_ref(x, s0, z0, maxq);
    assert.ok(got <= minmax * (1 + 1e-9), `case ${t}: mse fit ${got} worse than min-max ${minmax}`);
    const ref = bestShrink_ref(x, maxq);
    assert.ok(Math.abs(got - ref.err) <= 1e-6 * ref.err, `case ${t}: error ${got} vs brute force ${ref.err} (shrink index ${ref.i})`);
    if (ref.i > 0) shrunk++;
  }
  assert.ok(shrunk > 100, `only ${shrunk} of 200 heavy-tailed groups were shrunk: the search is not searching`);
});

test("clip 'mse' lowers RTN's weight error and GPTQ's proxy loss at 2 bits (g128, asymmetric)", () => {
  const rows = 64,
    cols = 256,
    tokens = 2048;
  const W = syntheticWeights(rows, cols, 5);
  const H = hessianNaive(syntheticActivations(tokens, cols, 6), tokens, cols, 8);
  const I = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) I[i * cols + i] = 1;
  const opts = { bits: 2, groupSize: 128, sym: false };
  const rtnMinmax = proxyLoss(W, rtnQuantize(W, rows, cols, opts).Q, I, rows, cols);
  const rtnMse = proxyLoss(W, rtnQuantize(W, rows, cols, { ...opts, clip: 'mse' }).Q, I, rows, cols);
  assert.ok(rtnMse < 0.95 * rtnMinmax, `RTN ‖ΔW‖²: mse ${rtnMse} vs min-max ${rtnMinmax}`);
  const gMinmax = proxyLoss(W, gptqQuantize(W, rows, cols, H, opts).Q, H, rows, cols);
  const gMse = proxyLoss(W, gptqQuantize(W, rows, cols, H, { ...opts, clip: 'mse' }).Q, H, rows, cols);
  assert.ok(gMse < gMinmax, `GPTQ tr(ΔHΔᵀ): mse ${gMse} vs min-max ${gMinmax}`);
});
