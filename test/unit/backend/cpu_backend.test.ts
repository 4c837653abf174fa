// The CPU backend against the float64 twins: GPTQ (gptq_ref.ts), RTN (rtn_ref.ts) and LoPRo / lopro_v
// (lopro_ref.ts) give the same bits on one thread and on three workers — the drivers and the row/column
// splits of backend/cpu change nothing but where the loops run. This is what makes a run's native output
// byte-identical whatever the machine's core count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import type { GptqOptions } from '../../../src/engine/quant/gptq';
import { gptqQuantize_ref } from '../../../src/engine/quant/gptq_ref';
import { rtnQuantize_ref } from '../../../src/engine/quant/rtn_ref';
import { quantizeLayerLoPRo_ref } from '../../../src/engine/quant/lopro_ref';
import { proxyLoss_ref } from '../../../src/engine/quant/gptq_kernels';
import { syntheticLayer } from '../quant/synthetic';
import { cpuBackend, gptqOn, loproOn, rtnOn } from './backends';

const rows = 70,
  cols = 200;
const { W, H, absMean } = syntheticLayer(rows, cols, 500, 41);

const gptqCases: [string, GptqOptions][] = [
  ['g64 asym, batches of 48', { bits: 3, groupSize: 64, blockSize: 48 }],
  ['act-order g32 sym', { bits: 2, groupSize: 32, blockSize: 64, actOrder: true, sym: true }],
  ['static groups with act-order', { bits: 4, groupSize: 50, blockSize: 64, actOrder: true, staticGroups: true }],
  ['per-row params (groupSize −1)', { bits: 2, groupSize: -1, blockSize: 32 }],
  ['clip mse, groups of 64 across batches of 96', { bits: 2, groupSize: 64, blockSize: 96, clip: 'mse' }],
  ['clip mse per row, act-order', { bits: 3, groupSize: -1, blockSize: 64, clip: 'mse', actOrder: true }],
];

for (const threads of [1, 3])
  for (const [name, opts] of gptqCases)
    test(`CPU backend GPTQ (${threads} thread${threads > 1 ? 's' : ''}) = gptqQuantize_ref, bit for bit: ${name}`, async () => {
      const ref = gptqQuantize_ref(W, rows, cols, H, opts);
      const got = await gptqOn(cpuBackend(threads), W, rows, cols, H, opts);
      assert.deepEqual(got.codes, ref.codes);
      assert.deepEqual(got.scale, ref.scale);
      assert.deepEqual(got.zero, ref.zero);
      assert.deepEqual(got.Q, ref.Q);
      assert.deepEqual(got.gIdx, ref.gIdx);
      assert.deepEqual(got.perm, ref.perm);
      assert.equal(got.damp, ref.damp);
      // The loss is a sum over rows: three workers add their partial sums, so only its rounding may differ.
      assert.ok(Math.abs(got.loss - ref.loss) <= 1e-12 * ref.loss, `loss ${got.loss} vs ${ref.loss}`);
    });

test('CPU backend GPTQ: dead inputs and a Hessian that is not positive definite, as the reference', async () => {
  const Hd = Float64Array.from(H);
  for (const j of [3, 77]) for (let i = 0; i < cols; i++) Hd[i * cols + j] = Hd[j * cols + i] = 0;
  for (const threads of [1, 3]) {
    const ref = gptqQuantize_ref(W, rows, cols, Hd, { bits: 3, groupSize: 64 });
    const got = await gptqOn(cpuBackend(threads), W, rows, cols, Hd, { bits: 3, groupSize: 64 });
    assert.equal(got.deadColumns, 2);
    assert.deepEqual(got.codes, ref.codes);
    assert.equal(got.damp, ref.damp);
  }
  const bad = new Float64Array(cols * cols).fill(1); // rank 1: not positive definite even after damping
  const warnings: string[] = [];
  const ref = gptqQuantize_ref(W, rows, cols, bad, { bits: 3, groupSize: 64, percDamp: 0, onWarning: () => {} });
  const got = await gptqOn(cpuBackend(3), W, rows, cols, bad, { bits: 3, groupSize: 64, percDamp: 0, onWarning: (m) => warnings.push(m) });
  assert.ok(ref.choleskyFallback && got.choleskyFallback);
  assert.deepEqual(got.codes, ref.codes);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /not positive definite.*round-to-nearest/);
});

for (const threads of [1, 3])
  test(`CPU backend RTN (${threads} thread${threads > 1 ? 's' : ''}) = rtnQuantize_ref, bit for bit`, async () => {
    for (const o of [
      { bits: 2, groupSize: 64, sym: false },
      { bits: 3, groupSize: -1, sym: true },
      { bits: 4, groupSize: 48, sym: false, clip: 'mse' as const },
    ]) {
      const ref = rtnQuantize_ref(W, rows, cols, o);
      const got = await rtnOn(cpuBackend(threads), W, rows, cols, o);
      assert.deepEqual(got.codes, ref.codes, JSON.stringify(o));
      assert.deepEqual(got.scale, ref.scale);
      assert.deepEqual(got.zero, ref.zero);
      assert.deepEqual(got.Q, ref.Q);
    }
  });

const cfgOf = (o: Partial<LayerConfig>): LayerConfig => ({ ...DEFAULT_LAYER_CONFIG, rank: 4, salientBlock: 64, hadamardBlock: 32, groupSize: 32, blockSize: 64, ...o });
const loproCases: [string, Partial<LayerConfig>][] = [
  ['partial rotation, rank 4, W2', {}],
  ['full rotation, rank 0, W3 sym', { rotation: 'full', rank: 0, bits: 3, sym: true, hadamardBlock: 64 }],
  ['no rotation, clip mse, groups of 48', { rotation: 'none', clip: 'mse', groupSize: 48 }],
  ['act-order and static groups on R′', { actOrder: true, staticGroups: true }],
  ['per-row params (groupSize −1)', { groupSize: -1 }],
  ['lopro_v d = 2, W2', { method: 'lopro_v', vqDim: 2 }],
  ['lopro_v d = 1, one codebook per row group (−1)', { method: 'lopro_v', vqDim: 1, groupSize: -1, bits: 3 }],
  [
    "the authors' levers: rank chosen per layer, α clampRange β 2.4, log-Hessian score, 8 power iterations",
    { rank: -1, beta: 2.4, alphaNorm: 'clampRange', columnScore: 'logHessian', powerIters: 8 },
  ],
];

for (const threads of [1, 3])
  for (const [name, over] of loproCases)
    test(`CPU backend LoPRo (${threads} thread${threads > 1 ? 's' : ''}) = quantizeLayerLoPRo_ref, bit for bit: ${name}`, async () => {
      const cfg = cfgOf(over);
      const ref = quantizeLayerLoPRo_ref(W, rows, cols, H, absMean, cfg, 5);
      const got = await loproOn(cpuBackend(threads), W, rows, cols, H, absMean, { ...cfg }, 5);
      assert.deepEqual(got.stored, ref.stored);
      assert.deepEqual(got.reconstructed, ref.reconstructed);
      assert.deepEqual(got.importance, ref.importance);
      assert.equal(got.factors?.energy, ref.factors?.energy);
      assert.deepEqual(Array.from(got.sampled.R), Array.from(ref.R));
      assert.deepEqual(Array.from(got.sampled.Rt), Array.from(ref.Rt));
    });

test('CPU backend LoPRo, data-free (H = I, α = 1) = the reference', async () => {
  const cfg = cfgOf({ rank: 2 });
  const ref = quantizeLayerLoPRo_ref(W, rows, cols, null, null, cfg, 9);
  const got = await loproOn(cpuBackend(3), W, rows, cols, null, null, cfg, 9);
  assert.deepEqual(got.stored, ref.stored);
  assert.ok(got.notes.includes('data-free: α = 1'));
});

test('CPU backend proxy losses = proxyLoss_ref (tr ΔHΔᵀ and tr WHWᵀ), the same bits on 1 and 3 threads, rows not a multiple of 8', async () => {
  const Q = Float32Array.from(W, (w, i) => w + 0.01 * Math.sin(i));
  const lossRef = proxyLoss_ref(W, Q, H, rows, cols),
    refRef = proxyLoss_ref(W, new Float32Array(rows * cols), H, rows, cols);
  const got: [number, number][] = [];
  for (const threads of [1, 3]) {
    const b = cpuBackend(threads);
    const s = b.session();
    try {
      const Wm = await s.upload(W, rows, cols, 'W', 't'),
        Qm = await s.upload(Q, rows, cols, 'Q', 't'),
        Hm = await s.upload(H, cols, cols, 'H', 't');
      got.push(await s.proxyLosses(Wm, Qm, Hm));
    } finally {
      s.close();
    }
  }
  assert.ok(rows % 8 !== 0);
  assert.deepEqual(got[0], got[1]);
  assert.ok(Math.abs(got[0][0] - lossRef) <= 1e-10 * lossRef, `${got[0][0]} vs ${lossRef}`);
  assert.ok(Math.abs(got[0][1] - refRef) <= 1e-10 * refRef, `${got[0][1]} vs ${refRef}`);
});
