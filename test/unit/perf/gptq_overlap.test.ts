// Workers started before the Cholesky (gptq_parallel.ts `overlapCholesky`): Hinv reaches them by
// message, so the result must be the same as without overlap — bit-identical codes/Q with the
// TypeScript updates, the same Cholesky fallback, the same input errors, and a usable pool afterwards.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { gptqQuantize } from '../../../src/engine/quant/gptq';
import { createResidentUpdater } from '../../../src/engine/quant/gptq_device';
import { choleskyInverseUpper as gptqHinv } from '../../../src/engine/quant/gptq_linalg';
import { GptqPool, gptqQuantizeParallel } from '../../../src/engine/quant/gptq_parallel';
import { HessianAccumulator } from '../../../src/engine/quant/hessian';
import { syntheticActivations, syntheticWeights } from '../quant/synthetic';

const rows = 66, cols = 224;
const W = syntheticWeights(rows, cols, 101);
const acc = new HessianAccumulator(cols);
acc.add(syntheticActivations(600, cols, 102), 600, 4);
const H = acc.finish();
const pool = GptqPool.create(3);
const rtP = ComputeRuntime.create({ ep: 'cpu', intraOpNumThreads: 1 });
after(async () => {
  await pool.close();
  await (await rtP).dispose();
});
// A slow Cholesky, so the workers really are waiting for Hinv when it arrives.
const slowChol = (u: (h: Float64Array, n: number) => Float64Array) => async (h: Float64Array, n: number) => {
  await new Promise((r) => setTimeout(r, 150));
  return u(h, n);
};

test('overlapped Cholesky: same codes, Q and loss as gptqQuantize (TS updates in the workers)', async () => {
  for (const opts of [{ bits: 3, groupSize: 64, blockSize: 48 }, { bits: 2, groupSize: 32, blockSize: 64, actOrder: true }]) {
    const ref = gptqQuantize(W, rows, cols, H, opts);
    const par = await gptqQuantizeParallel(W, rows, cols, H, { ...opts, pool, overlapCholesky: true, choleskyInverseUpperAsync: slowChol(gptqHinv) });
    assert.deepEqual(par.codes, ref.codes);
    assert.deepEqual(par.Q, ref.Q);
    assert.ok(Math.abs(par.loss - ref.loss) <= 1e-12 * ref.loss);
  }
});

test('overlapped Cholesky with the device updater (CPU EP) = without overlap', async () => {
  const rt = await rtP;
  const opts = { bits: 2, groupSize: 32, blockSize: 32 };
  const lazy = (r: number, c: number, h: Float64Array, s: number) => createResidentUpdater(rt, r, c, h, s);
  const a = await gptqQuantizeParallel(W, rows, cols, H, { ...opts, pool, lazy });
  const b = await gptqQuantizeParallel(W, rows, cols, H, { ...opts, pool, lazy, overlapCholesky: true });
  assert.deepEqual(b.codes, a.codes);
  assert.equal(b.loss, a.loss);
});

test('overlapped Cholesky: non-PD fallback like the core, a bad H throws, and the pool still works after', async () => {
  const bad = new Float64Array(cols * cols).fill(1);
  const warnings: string[] = [];
  const parBad = await gptqQuantizeParallel(W, rows, cols, bad, { bits: 3, groupSize: 64, pool, percDamp: 0, overlapCholesky: true, onWarning: (m) => warnings.push(m) });
  const ref = gptqQuantize(W, rows, cols, bad, { bits: 3, groupSize: 64, percDamp: 0, onWarning: () => {} });
  assert.ok(parBad.choleskyFallback);
  assert.deepEqual(parBad.codes, ref.codes);
  assert.equal(warnings.length, 1);
  const nan = Float64Array.from(H);
  nan[5] = NaN;
  await assert.rejects(gptqQuantizeParallel(W, rows, cols, nan, { bits: 3, groupSize: 64, pool, overlapCholesky: true }));
  const failing = gptqQuantizeParallel(W, rows, cols, H, { bits: 3, groupSize: 64, pool, overlapCholesky: true, choleskyInverseUpperAsync: async () => { throw new Error('device lost'); } });
  await assert.rejects(failing, /device lost/);
  const again = await gptqQuantizeParallel(W, rows, cols, H, { bits: 3, groupSize: 64, pool, overlapCholesky: true });
  assert.deepEqual(again.codes, gptqQuantize(W, rows, cols, H, { bits: 3, groupSize: 64 }).codes);
});
