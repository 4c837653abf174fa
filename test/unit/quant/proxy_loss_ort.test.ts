// The ORT proxy loss (one graph, float32 products) against the float64 TypeScript kernel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { proxyLossesOnDevice, proxyLossesOrt, proxyLoss_ref } from '../../../src/engine/quant/proxy_loss_ort';
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

test('proxyLossesOnDevice: the same from tensors in either weight layout (out_in, and in_out as the forward keeps them)', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  const rows = 48, cols = 160;
  const W = syntheticWeights(rows, cols, 5);
  const H = hessianNaive(syntheticActivations(512, cols, 9), 512, cols, 8);
  const Q = rtnQuantize(W, rows, cols, { bits: 3, groupSize: 32, sym: false }).Q;
  const wantLoss = proxyLoss_ref(W, Q, H, rows, cols), wantRef = proxyLoss_ref(W, new Float32Array(rows * cols), H, rows, cols);
  const transpose = (a: Float32Array) => {
    const t = new Float32Array(a.length);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c];
    return t;
  };
  const h = rt.host(Float32Array.from(H), [cols, cols]);
  for (const layout of ['out_in', 'in_out'] as const) {
    const [w, q] = layout === 'out_in' ? [W, Q] : [transpose(W), transpose(Q)];
    const dims = layout === 'out_in' ? [rows, cols] : [cols, rows];
    const [loss, ref] = await proxyLossesOnDevice(rt, rt.host(w, dims), rt.host(q, dims), h, rows, layout);
    assert.ok(Math.abs(loss - wantLoss) <= 1e-5 * wantLoss, `${layout}: loss ${loss} vs ${wantLoss}`);
    assert.ok(Math.abs(ref - wantRef) <= 1e-5 * wantRef, `${layout}: ref ${ref} vs ${wantRef}`);
  }
  await rt.dispose();
});
