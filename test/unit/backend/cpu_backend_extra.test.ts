// What the removed pool-driver tests (perf/gptq_parallel.test.ts, perf/lopro_fast.test.ts) checked beyond
// cpu_backend.test.ts, on the CPU backend: R1SVD at odd sizes with more ranks than the slices divide
// evenly, a failing worker slice (its error reaches the caller, and the pool computes the right bits
// afterwards), LoPRo's stage clock; plus the sizes of what the backend hands back where a byte count is
// not a multiple of 8, and the GPTVQ driver with d = 4 and dead inputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import { CpuBackend } from '../../../src/engine/backend/cpu/cpu_backend';
import type { Task } from '../../../src/engine/backend/cpu/tasks';
import { gptvq } from '../../../src/engine/quant/gptvq';
import { gptvqQuantize_ref } from '../../../src/engine/quant/gptvq_ref';
import { gptqQuantize_ref } from '../../../src/engine/quant/gptq_ref';
import { quantizeLayerLoPRo_ref } from '../../../src/engine/quant/lopro_ref';
import { r1svd } from '../../../src/engine/quant/r1svd';
import { rtnQuantize_ref } from '../../../src/engine/quant/rtn_ref';
import { syntheticLayer } from '../quant/synthetic';
import { cpuBackend, gptqOn, loproOn, rtnOn } from './backends';

for (const threads of [1, 3])
  test(`CPU backend R1SVD (${threads} thread${threads > 1 ? 's' : ''}) = r1svd, bit for bit: 37×53, rank 5`, async () => {
    const m = 37,
      n = 53,
      A = Float32Array.from({ length: m * n }, (_, i) => Math.sin(i * 0.37) + (i % 7) * 0.1);
    for (const roundFactors of [true, false]) {
      const opts = { rank: 5, powerIters: 3, seed: 4, roundFactors };
      const ref = r1svd(A, m, n, opts);
      const s = cpuBackend(threads).session();
      try {
        const W = await s.upload(A, m, n, 'W', 't');
        const got = await s.r1svd(await s.scaleColumns(W, new Float64Array(n).fill(1)), opts);
        assert.equal(got.rank, 5);
        assert.deepEqual(got.U, ref.U);
        assert.deepEqual(got.V, ref.V);
        assert.deepEqual(got.sigma, ref.sigma);
        assert.deepEqual(got.uCodes, ref.uCodes);
        assert.equal(got.energy, ref.energy);
      } finally {
        s.close();
      }
    }
  });

const rows = 70,
  cols = 200;
const { W, H, absMean } = syntheticLayer(rows, cols, 500, 41);

test('a worker slice that throws: the run rejects with its error, and the pool computes the right bits afterwards', async () => {
  const backend = CpuBackend.create(3); // its own pool: a broken one must not spill into the other tests
  try {
    const pool = backend.pool;
    // Slice 0 fails at once (no A); slices 1 and 2 are still busy with a long mat-vec when the caller hears of it.
    const big = 3000;
    const A = pool.alloc(Float32Array, big * big).fill(0.5),
      x = pool.alloc(Float64Array, big).fill(1),
      y = pool.alloc(Float64Array, big);
    const ref = gptqQuantize_ref(W, rows, cols, H, { bits: 3, groupSize: 64 });
    const failing = pool.run(
      3,
      (_a, _b, k): Task => (k === 0 ? ({ kind: 'mv', A: undefined, n: 1, x, y, r0: 0, r1: 1 } as unknown as Task) : { kind: 'mv', A, n: big, x, y, r0: 0, r1: big }),
    );
    await assert.rejects(failing, (e: Error) => e.name === 'TypeError');
    // At once, while slices 1 and 2 of the failed run may still be computing: a small mat-vec (A = 1, x = 1: y = n)
    // must come back with every row written, i.e. each slice's reply must be its own, not the failed run's.
    const m = 300,
      n = 40;
    const A1 = pool.alloc(Float32Array, m * n).fill(1),
      x1 = pool.alloc(Float64Array, n).fill(1),
      y1 = pool.alloc(Float64Array, m);
    await pool.run(m, (r0, r1): Task => ({ kind: 'mv', A: A1, n, x: x1, y: y1, r0, r1 }));
    assert.deepEqual(Array.from(y1), new Array(m).fill(n), 'a run right after the failure');
    for (let i = 0; i < 3; i++) assert.deepEqual((await gptqOn(backend, W, rows, cols, H, { bits: 3, groupSize: 64 })).codes, ref.codes, `run ${i} after the failure`);
    // A non-finite W never reaches the workers: the upload names it (E_NON_FINITE), and the pool is untouched.
    const bad = Float32Array.from(W);
    bad[5 * cols + 7] = Number.NaN;
    await assert.rejects(gptqOn(backend, bad, rows, cols, H, { bits: 3, groupSize: 64 }), (e: Error & { code?: string }) => e.code === 'E_NON_FINITE' && /W/.test(e.message));
    assert.deepEqual((await gptqOn(backend, W, rows, cols, H, { bits: 3, groupSize: 64 })).codes, ref.codes);
  } finally {
    await backend.close();
  }
});

const cfg: LayerConfig = { ...DEFAULT_LAYER_CONFIG, rank: 4, salientBlock: 64, hadamardBlock: 32, groupSize: 32, blockSize: 64 };

test("LoPRo on the CPU backend: a time for every stage (the layer report's seconds)", async () => {
  const r = await loproOn(cpuBackend(1), W, rows, cols, H, absMean, cfg, 5);
  for (const k of ['lowrank', 'lowrank.r1svd', 'lowrank.residual', 'permute+rotate', 'quantize', 'reconstruct']) assert.ok(r.seconds[k] >= 0, k);
  for (const k of ['gptq.prep', 'gptq.cholesky', 'gptq.columnLoop']) assert.ok(r.stageC.seconds[k] >= 0, k);
});

for (const threads of [1, 3])
  test(`CPU backend results have exactly rows·cols codes and rows·groups params when the byte counts are not multiples of 8 (${threads} thread${threads > 1 ? 's' : ''})`, async () => {
    // 7×30: 210 one-byte codes, 7 per-row float32 scales; LoPRo's Ŵ 7×45 = 315 float32 values.
    const m = 7,
      n = 30,
      Wm = W.subarray(0, m * n),
      Hm = syntheticLayer(m, n, 100, 3).H;
    const g = await gptqOn(cpuBackend(threads), Wm, m, n, Hm, { bits: 4, groupSize: -1 });
    assert.equal(g.codes.length, m * n, 'GPTQ codes');
    assert.equal(g.scale.length, m, 'GPTQ scales');
    assert.deepEqual(g.codes, gptqQuantize_ref(Wm, m, n, Hm, { bits: 4, groupSize: -1 }).codes);
    const r = await rtnOn(cpuBackend(threads), Wm, m, n, { bits: 3, groupSize: -1, sym: false });
    assert.equal(r.codes.length, m * n, 'RTN codes');
    assert.equal(r.scale.length, m, 'RTN scales');
    assert.deepEqual(r.codes, rtnQuantize_ref(Wm, m, n, { bits: 3, groupSize: -1, sym: false }).codes);
    const n2 = 45,
      L = syntheticLayer(m, n2, 100, 4);
    const c2 = { ...cfg, rotation: 'none' as const, groupSize: 15, rank: 2 };
    const lo = await loproOn(cpuBackend(threads), L.W, m, n2, L.H, L.absMean, c2, 1);
    assert.equal(lo.reconstructed.length, m * n2, 'LoPRo Ŵ');
    assert.deepEqual(lo.reconstructed, quantizeLayerLoPRo_ref(L.W, m, n2, L.H, L.absMean, c2, 1).reconstructed);
  });

for (const threads of [1, 3])
  test(`CPU backend GPTVQ driver (${threads} thread${threads > 1 ? 's' : ''}) = gptvqQuantize_ref, bit for bit: d = 4 with dead inputs, d = 1 per-row codebook`, async () => {
    const Hd = Float64Array.from(H);
    for (const j of [5, 130]) for (let i = 0; i < cols; i++) Hd[i * cols + j] = Hd[j * cols + i] = 0;
    for (const o of [
      { vqDim: 4, bits: 2, groupSize: 40, blockSize: 48, seed: 3 },
      { vqDim: 1, bits: 3, groupSize: -1, blockSize: 64, seed: 4 },
    ]) {
      const ref = gptvqQuantize_ref(W, rows, cols, Hd, { ...o, kmeansIters: 8 });
      const s = cpuBackend(threads).session();
      try {
        const got = await gptvq(s, await s.upload(W, rows, cols, 'W', 't'), await s.upload(Hd, cols, cols, 'H', 't'), { ...o, kmeansIters: 8 });
        assert.equal(got.deadColumns, 2);
        assert.deepEqual(got.codes, ref.codes, JSON.stringify(o));
        assert.deepEqual(got.codebookBits, ref.codebookBits);
        assert.equal(got.damp, ref.damp);
        assert.ok(Math.abs(got.loss - ref.loss) <= 1e-12 * ref.loss, `loss ${got.loss} vs ${ref.loss}`);
      } finally {
        s.close();
      }
    }
  });
