// Row-parallel GPTQ (worker_threads) against the single-threaded core: the same code runs on each
// row chunk with the shared Hinv, so codes, params and Q must be identical, and loss equal up to the
// order of the float64 sum.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { gptqQuantize } from '../../../src/engine/quant/gptq';
import { GptqPool, gptqQuantizeParallel } from '../../../src/engine/quant/gptq_parallel';
import { HessianAccumulator } from '../../../src/engine/quant/hessian';
import { syntheticActivations, syntheticWeights } from '../quant/synthetic';

const rows = 70, cols = 200;
const W = syntheticWeights(rows, cols, 41);
const acc = new HessianAccumulator(cols);
acc.add(syntheticActivations(500, cols, 42), 500, 4);
const H = acc.finish();
const pool = GptqPool.create(3);
after(() => pool.close());

const cases: [string, object][] = [
  ['g64 asym', { bits: 3, groupSize: 64, blockSize: 48 }],
  ['act-order g32 sym', { bits: 2, groupSize: 32, blockSize: 64, actOrder: true, sym: true }],
  ['static groups', { bits: 4, groupSize: 50, blockSize: 64, actOrder: true, staticGroups: true }],
  ['per-row', { bits: 2, groupSize: -1, blockSize: 32 }],
];

for (const [name, o] of cases) {
  test(`parallel GPTQ = gptqQuantize (${name})`, async () => {
    const opts = { bits: 3, ...o };
    const ref = gptqQuantize(W, rows, cols, H, opts);
    const par = await gptqQuantizeParallel(W, rows, cols, H, { ...opts, pool, threads: 3 });
    assert.equal(par.parallel.threads, 3);
    assert.deepEqual(par.codes, ref.codes);
    assert.deepEqual(par.scale, ref.scale);
    assert.deepEqual(par.zero, ref.zero);
    assert.deepEqual(par.Q, ref.Q);
    assert.deepEqual(par.gIdx, ref.gIdx);
    assert.deepEqual(par.perm, ref.perm);
    assert.equal(par.damp, ref.damp);
    assert.ok(Math.abs(par.loss - ref.loss) <= 1e-12 * ref.loss, `loss ${par.loss} vs ${ref.loss}`); // sum order only
  });
}

test('parallel GPTQ with dead columns and a non-PD Hessian falls back like the core', async () => {
  const Hd = Float64Array.from(H);
  for (const j of [3, 77]) for (let i = 0; i < cols; i++) { Hd[i * cols + j] = 0; Hd[j * cols + i] = 0; }
  const ref = gptqQuantize(W, rows, cols, Hd, { bits: 3, groupSize: 64 });
  const par = await gptqQuantizeParallel(W, rows, cols, Hd, { bits: 3, groupSize: 64, pool });
  assert.equal(par.deadColumns, 2);
  assert.deepEqual(par.codes, ref.codes);
  const bad = new Float64Array(cols * cols).fill(1); // rank 1: not PD even after damping
  const warnings: string[] = [];
  const parBad = await gptqQuantizeParallel(W, rows, cols, bad, { bits: 3, groupSize: 64, pool, percDamp: 0, onWarning: (m) => warnings.push(m) });
  const refBad0 = gptqQuantize(W, rows, cols, bad, { bits: 3, groupSize: 64, percDamp: 0, onWarning: () => {} });
  assert.ok(refBad0.choleskyFallback && parBad.choleskyFallback);
  assert.deepEqual(parBad.codes, refBad0.codes);
  assert.equal(warnings.length, 1);
});

test('a temporary pool (no pool passed) gives the same codes', async () => {
  const ref = gptqQuantize(W, rows, cols, H, { bits: 2, groupSize: 64 });
  const par = await gptqQuantizeParallel(W, rows, cols, H, { bits: 2, groupSize: 64, threads: 2 });
  assert.deepEqual(par.codes, ref.codes);
});

test('without a worker script (a bundle without the worker entry) it runs on one thread, same codes', async () => {
  const saved = process.env.LOPRO_GPTQ_WORKER;
  process.env.LOPRO_GPTQ_WORKER = 'none';
  try {
    const warnings: string[] = [];
    const ref = gptqQuantize(W, rows, cols, H, { bits: 3, groupSize: 64 });
    const r = await gptqQuantizeParallel(W, rows, cols, H, { bits: 3, groupSize: 64, onWarning: (m) => warnings.push(m) });
    assert.equal(r.parallel.threads, 1);
    assert.deepEqual(r.codes, ref.codes);
    assert.equal(warnings.length, 1);
  } finally {
    if (saved === undefined) delete process.env.LOPRO_GPTQ_WORKER;
    else process.env.LOPRO_GPTQ_WORKER = saved;
  }
});

test('a worker error (non-finite W) rejects with the core message and leaves the pool usable', async () => {
  const bad = Float32Array.from(W);
  bad[5 * cols + 7] = NaN;
  await assert.rejects(gptqQuantizeParallel(bad, rows, cols, H, { bits: 3, groupSize: 64, pool }), /non-finite/);
  const ref = gptqQuantize(W, rows, cols, H, { bits: 3, groupSize: 64 });
  const again = await gptqQuantizeParallel(W, rows, cols, H, { bits: 3, groupSize: 64, pool });
  assert.deepEqual(again.codes, ref.codes);
});
