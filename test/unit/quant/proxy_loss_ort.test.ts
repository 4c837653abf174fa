// The ORT proxy loss (one graph, float32 products) against the float64 TypeScript kernel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { proxyLossesOrt, proxyLoss_ref } from '../../../src/engine/quant/proxy_loss_ort';
import { rtnQuantize } from '../../../src/engine/quant/rtn';
import { hessianNaive, syntheticActivations, syntheticWeights } from './synthetic';

test('proxyLossesOrt: tr(ΔHΔᵀ) and tr(WHWᵀ) within 1e-5 of the float64 kernel (W2 RTN error, correlated H)', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  for (const [rows, cols] of [[64, 256], [200, 384]]) {
    const W = syntheticWeights(rows, cols, rows);
    const H = hessianNaive(syntheticActivations(1024, cols, cols), 1024, cols, 8);
    const Q = rtnQuantize(W, rows, cols, { bits: 2, groupSize: 128, sym: false }).Q;
    const [loss, ref] = await proxyLossesOrt(rt, W, Q, H, rows, cols);
    const wantLoss = proxyLoss_ref(W, Q, H, rows, cols), wantRef = proxyLoss_ref(W, new Float32Array(rows * cols), H, rows, cols);
    assert.ok(Math.abs(loss - wantLoss) <= 1e-5 * wantLoss, `${rows}×${cols} loss ${loss} vs ${wantLoss}`);
    assert.ok(Math.abs(ref - wantRef) <= 1e-5 * wantRef, `${rows}×${cols} ref ${ref} vs ${wantRef}`);
    assert.ok(loss < ref, 'a 2-bit RTN error is smaller than W itself');
  }
});
