// GPTQ with the column loop on the device (quant/gptq_device_loop.ts) against the float64 TypeScript
// core (gptq.ts, itself golden-tested), on the CPU EP. The device loop runs in float32 and rounds codes
// half up, so the tests compare codes (≥ 99 % equal), the loss (relative 1e-3) and the group params,
// not bit-identity; configs cover per-row params, dynamic groups dividing the batch, sym, a partial
// last batch, a caller permutation, dead columns and the not-positive-definite fallback.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { gptqQuantize, type GptqOptions } from '../../../src/engine/quant/gptq';
import { choleskyInverseUpper } from '../../../src/engine/quant/gptq_linalg';
import { choleskyInverseUpperTensor } from '../../../src/engine/linalg/cholesky';
import { deviceLoopSupports, gptqQuantizeDeviceLoop } from '../../../src/engine/quant/gptq_device_loop';
import { syntheticLayer } from '../quant/synthetic';

const rtP = ComputeRuntime.create({ ep: 'cpu', intraOpNumThreads: 1 });
after(async () => (await rtP).dispose());
const chol = async (h: Float64Array, n: number) => choleskyInverseUpper(h, n);

const cases: [string, number, number, GptqOptions][] = [
  ['per-row params, W3', 48, 256, { bits: 3, groupSize: -1, blockSize: 128 }],
  ['groups 64 in batches of 128, W2, partial last batch (300 cols)', 40, 300, { bits: 2, groupSize: 64, blockSize: 128 }],
  ['groups = batch = 32, sym W4', 40, 160, { bits: 4, groupSize: 32, blockSize: 32, sym: true }],
];

// Both graph forms ('shifted' falls back to 'direct' where a batch holds several groups), with Hinv's
// rows fed from the host or sliced from U kept on the device (the blocked ORT Cholesky, leaf 32).
const variants = [['direct', 'host'], ['shifted', 'host'], ['shifted', 'device']] as const;
const deviceU = async (h: Float64Array, n: number) => choleskyInverseUpperTensor(h, n, { rt: await rtP, leaf: 32 });
const hooks = (form: 'direct' | 'shifted', hFrom: 'host' | 'device') =>
  ({ choleskyInverseUpperAsync: chol, loopForm: form, ...(hFrom === 'device' ? { choleskyInverseUpperTensor: deviceU } : {}) });

for (const [form, hFrom] of variants) for (const [label, rows, cols, opts] of cases)
  test(`device loop (${form}, Hinv on the ${hFrom}) ≈ TypeScript GPTQ: ${label}`, async () => {
    const rt = await rtP;
    const { W, H } = syntheticLayer(rows, cols, 600, rows + cols);
    assert.ok(deviceLoopSupports(opts, cols));
    const ref = gptqQuantize(W, rows, cols, H, opts);
    const dev = await gptqQuantizeDeviceLoop(rt, W, rows, cols, H, { ...opts, ...hooks(form, hFrom) });
    let same = 0;
    for (let i = 0; i < ref.codes.length; i++) if (ref.codes[i] === dev.codes[i]) same++;
    assert.ok(same / ref.codes.length > 0.99, `codes agree ${same / ref.codes.length}`);
    assert.ok(Math.abs(dev.loss - ref.loss) / ref.loss < 1e-3, `loss ${dev.loss} vs ${ref.loss}`);
    assert.deepEqual(Array.from(dev.gIdx), Array.from(ref.gIdx));
    let sd = 0;
    for (let i = 0; i < ref.scale.length; i++) sd = Math.max(sd, Math.abs(dev.scale[i] - ref.scale[i]) / ref.scale[i]);
    assert.ok(sd < 1e-3, `scale rel diff ${sd}`);
    // Q is the dequantized code under the stored params.
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
      const gi = dev.gIdx[c], s = dev.scale[r * dev.groups + gi], z = dev.zero[r * dev.groups + gi];
      assert.equal(dev.Q[r * cols + c], Math.fround(s * (dev.codes[r * cols + c] - z)));
    }
  });

for (const [form, hFrom] of variants) test(`device loop (${form}, Hinv on the ${hFrom}): caller permutation and dead columns as the TypeScript core`, async () => {
  const rt = await rtP;
  const rows = 32, cols = 192;
  const { W, H } = syntheticLayer(rows, cols, 500, 77);
  for (const j of [5, 100]) for (let k = 0; k < cols; k++) H[j * cols + k] = H[k * cols + j] = 0;
  const perm = Int32Array.from({ length: cols }, (_, k) => (k * 67) % cols);
  const opts: GptqOptions = { bits: 2, groupSize: 64, blockSize: 64, perm };
  const ref = gptqQuantize(W, rows, cols, H, opts);
  const dev = await gptqQuantizeDeviceLoop(rt, W, rows, cols, H, { ...opts, ...hooks(form, hFrom) });
  assert.equal(dev.deadColumns, 2);
  assert.deepEqual(Array.from(dev.perm), Array.from(perm));
  for (const j of [5, 100]) for (let r = 0; r < rows; r++) assert.equal(dev.Q[r * cols + j], ref.Q[r * cols + j]);
  let same = 0;
  for (let i = 0; i < ref.codes.length; i++) if (ref.codes[i] === dev.codes[i]) same++;
  assert.ok(same / ref.codes.length > 0.99, `codes agree ${same / ref.codes.length}`);
  assert.ok(Math.abs(dev.loss - ref.loss) / ref.loss < 1e-3, `loss ${dev.loss} vs ${ref.loss}`);
});

test('device loop: unsupported configs are refused (the caller uses the hybrid driver), a failed Cholesky falls back to RTN', async () => {
  const rt = await rtP;
  assert.equal(deviceLoopSupports({ bits: 2, clip: 'mse' }, 256), false);
  assert.equal(deviceLoopSupports({ bits: 2, groupSize: 96, blockSize: 128 }, 256), false);
  assert.equal(deviceLoopSupports({ bits: 2, groupSize: 64, staticGroups: true }, 256), false);
  const { W, H } = syntheticLayer(16, 64, 300, 5);
  await assert.rejects(gptqQuantizeDeviceLoop(rt, W, 16, 64, H, { bits: 2, clip: 'mse', choleskyInverseUpperAsync: chol }), /does not implement/);
  const warnings: string[] = [];
  const npd = async () => {
    const e = new Error('pivot 3 is -1');
    e.name = 'NotPositiveDefiniteError';
    throw e;
  };
  const dev = await gptqQuantizeDeviceLoop(rt, W, 16, 64, H, { bits: 2, groupSize: 32, blockSize: 32, choleskyInverseUpperAsync: npd, choleskyInverseUpperTensor: npd, onWarning: (m) => warnings.push(m) });
  assert.equal(dev.choleskyFallback, true);
  assert.match(warnings[0], /not positive definite/);
  // Hinv = I: every column is rounded to nearest with params from W at its batch start (no updates).
  const rtn = gptqQuantize(W, 16, 64, H, { bits: 2, groupSize: 32, blockSize: 32, choleskyInverseUpper: () => { const e = new Error('x'); e.name = 'NotPositiveDefiniteError'; throw e; }, onWarning: () => {} });
  let same = 0;
  for (let i = 0; i < rtn.codes.length; i++) if (rtn.codes[i] === dev.codes[i]) same++;
  assert.ok(same / rtn.codes.length > 0.99, `RTN codes agree ${same / rtn.codes.length}`);
});

test('device loop: W held in row chunks on the device (the >128 MiB slow path avoided) gives the same result as one piece', async () => {
  const rt = await rtP;
  const rows = 70, cols = 256;
  const { W, H } = syntheticLayer(rows, cols, 600, 31);
  const opts: GptqOptions = { bits: 2, groupSize: 128, blockSize: 128 };
  const one = await gptqQuantizeDeviceLoop(rt, W, rows, cols, H, { ...opts, ...hooks('shifted', 'device') });
  // 25 rows × 256 columns × 4 bytes per chunk: chunks of 25, 25 and 20 rows.
  const three = await gptqQuantizeDeviceLoop(rt, W, rows, cols, H, { ...opts, ...hooks('shifted', 'device'), chunkBytes: 25 * cols * 4 });
  let same = 0;
  for (let i = 0; i < one.codes.length; i++) if (one.codes[i] === three.codes[i]) same++;
  assert.ok(same / one.codes.length > 0.999, `codes agree ${same / one.codes.length}`);
  assert.ok(Math.abs(three.loss - one.loss) <= 1e-5 * one.loss, `loss ${three.loss} vs ${one.loss}`);
  const ref = gptqQuantize(W, rows, cols, H, opts);
  assert.ok(Math.abs(three.loss - ref.loss) / ref.loss < 1e-3, `loss ${three.loss} vs the float64 core ${ref.loss}`);
});
