// The GPU pipeline's Hessian path (running sums kept on the device, H = (XᵀX + XᵀXᵀ)/N and mean|x|
// finished there, float32) against the host path (float64 sums, symmetrised on the host), both on the
// CPU EP: LOPRO_TEST_DEVICE_PATHS=1 takes the pipeline's device paths (Hessian sums and activations) with
// host tensors. The cached Hessians must agree to float32 rounding and be exactly symmetric; the run must
// complete with both. A device without room for the calibration activations (injected failure) falls back
// to the host path with the same bytes. And the layers' reported proxy losses are tr(ΔHΔᵀ) of the written
// layers with the cached H, whatever the CPU backend's thread count (which changes no output byte).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile } from '../../src/engine/io/safetensors';
import { cachedWeights, openModel } from '../../src/engine/model/loader';
import { proxyLoss } from '../../src/engine/quant/gptq_kernels';
import { openNativeModel } from '../../src/engine/run/native';
import { RunDir } from '../../src/engine/run/rundir';
import { runCli, sha256, tmp, TINY, TRAIN } from './helpers';

// 6 windows: 1/N is inexact, so the float32 finish on the "device" really differs from the float64 one.
const ARGS = ['quantize', TINY, '--method', 'gptq', '--bits', '3', '--calib', TRAIN, '--samples', '6', '--ctx', '64', '--ep', 'cpu'];

const DEVICE_PATHS = { LOPRO_TEST_DEVICE_PATHS: '1' };

test('Hessians finished on the device (LOPRO_TEST_DEVICE_PATHS=1) = host Hessians to float32 rounding, exactly symmetric', () => {
  const base = tmp('devsums');
  const host = join(base, 'host'),
    dev = join(base, 'dev');
  const a = runCli([...ARGS, '--out', host]);
  assert.equal(a.code, 0, a.stderr);
  const b = runCli([...ARGS, '--out', dev], DEVICE_PATHS);
  assert.equal(b.code, 0, b.stderr);
  assert.doesNotMatch(b.stderr, /summing on the host/); // the device path ran, it did not fall back
  const fa = SafetensorsFile.open(new RunDir(host).hessianFile(0)),
    fb = SafetensorsFile.open(new RunDir(dev).hessianFile(0));
  let anyDiff = false;
  try {
    for (const input of ['attn_in', 'attn_out', 'mlp_in', 'mlp_act']) {
      const ha = fa.readFloat32(`${input}::H`),
        hb = fb.readFloat32(`${input}::H`);
      const n = Math.round(Math.sqrt(ha.length));
      let maxDiff = 0,
        maxAbs = 0;
      for (let i = 0; i < ha.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(ha[i] - hb[i]));
        maxAbs = Math.max(maxAbs, Math.abs(ha[i]));
      }
      anyDiff ||= maxDiff > 0;
      assert.ok(maxDiff / maxAbs < 1e-5, `${input}: H differs by ${maxDiff / maxAbs} (relative to max |H|)`);
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) assert.equal(hb[i * n + j], hb[j * n + i], `${input}: H not symmetric at ${i},${j}`);
      const ma = fa.readFloat32(`${input}::abs_mean`),
        mb = fb.readFloat32(`${input}::abs_mean`);
      for (let i = 0; i < ma.length; i++) assert.ok(Math.abs(ma[i] - mb[i]) <= 1e-5 * Math.abs(ma[i]) + 1e-12, `${input}: abs_mean ${i}`);
    }
  } finally {
    fa.close();
    fb.close();
  }
  assert.ok(anyDiff, 'the two paths gave bit-identical Hessians: the device path did not run');
});

test('activations that do not fit on the device: one warning, the host path, the same bytes', () => {
  const base = tmp('devacts-oom');
  const args = ['quantize', TINY, '--method', 'lopro', '--bits', '2', '--calib', TRAIN, '--samples', '4', '--ctx', '64', '--ep', 'cpu'];
  // Both runs take the device paths (the same device-finished Hessians, so the same quantization); the
  // reference keeps its activations on the "device", the other's upload fails as a full device would.
  const ref = runCli([...args, '--out', join(base, 'ref')], DEVICE_PATHS);
  assert.equal(ref.code, 0, ref.stderr);
  assert.match(ref.stderr, /calibration activations kept on the cpu device/);
  const oom = runCli([...args, '--out', join(base, 'oom')], { ...DEVICE_PATHS, LOPRO_FAIL_UPLOAD_SCOPE: 'activations' });
  assert.equal(oom.code, 0, oom.stderr);
  assert.equal(oom.stderr.match(/do not fit on the cpu device \(injected: no device memory/g)?.length, 1, oom.stderr);
  assert.equal(sha256(join(base, 'oom', 'native', 'model.safetensors')), sha256(join(base, 'ref', 'native', 'model.safetensors')));
});

// With the activations on the "device", a dense block's passes start from what the pass before kept there
// (kept_stages.ts); a device that refuses those is warned about once and every pass computes the block from its input.
test('intermediates kept between passes = recomputed from the block input; refused: one warning, the same bytes', () => {
  const base = tmp('devkept');
  const args = ['quantize', TINY, '--method', 'lopro', '--bits', '2', '--calib', TRAIN, '--samples', '4', '--ctx', '64', '--ep', 'cpu'];
  const ref = runCli([...args, '--out', join(base, 'ref')], DEVICE_PATHS);
  assert.equal(ref.code, 0, ref.stderr);
  assert.match(ref.stderr, /intermediates kept on the cpu device between passes/);
  assert.doesNotMatch(ref.stderr, /intermediates on the cpu device failed/);
  const oom = runCli([...args, '--out', join(base, 'oom')], { ...DEVICE_PATHS, LOPRO_FAIL_UPLOAD_SCOPE: 'intermediates' });
  assert.equal(oom.code, 0, oom.stderr);
  assert.equal(oom.stderr.match(/keeping block 0's intermediates on the cpu device failed \(injected: no device memory/g)?.length, 1, oom.stderr);
  assert.equal(oom.stderr.match(/intermediates on the cpu device failed/g)?.length, 1, 'one warning for the run');
  assert.equal(sha256(join(base, 'oom', 'native', 'model.safetensors')), sha256(join(base, 'ref', 'native', 'model.safetensors')));
});

test('reported proxy losses = tr(ΔHΔᵀ) of the written layers with the cached H; --threads 2 = --threads 1 byte for byte', async () => {
  const base = tmp('devloss');
  // LoPRo with both device paths (H = the float32 device finish, widened: exactly what the Hessian file caches).
  const args = ['quantize', TINY, '--method', 'lopro', '--bits', '2', '--calib', TRAIN, '--samples', '4', '--ctx', '64', '--ep', 'cpu', '--backend', 'cpu'];
  const one = runCli([...args, '--out', join(base, 't1'), '--threads', '1'], DEVICE_PATHS);
  assert.equal(one.code, 0, one.stderr);
  const two = runCli([...args, '--out', join(base, 't2'), '--threads', '2'], DEVICE_PATHS);
  assert.equal(two.code, 0, two.stderr);
  assert.equal(sha256(join(base, 't2', 'native', 'model.safetensors')), sha256(join(base, 't1', 'native', 'model.safetensors')));
  const layers = (d: string) => JSON.parse(readFileSync(join(base, d, 'run.json'), 'utf8')).layers as { name: string; proxyLoss: number; relProxyLoss: number }[];
  const a = layers('t2'),
    b = layers('t1');
  assert.deepEqual(
    a.map((l) => [l.name, l.proxyLoss, l.relProxyLoss]),
    b.map((l) => [l.name, l.proxyLoss, l.relProxyLoss]),
  );
  // Recompute every layer's loss from the files: W from the model, Ŵ from the native layer, H from the Hessian cache.
  const m = openModel(TINY);
  const native = openNativeModel(join(base, 't2', 'native'));
  const run = new RunDir(join(base, 't2'));
  const read = cachedWeights(m.weights);
  try {
    for (const l of m.linears) {
      const rep = a.find((x) => x.name === l.name);
      assert.ok(rep, `${l.name} has no report`);
      const hf = SafetensorsFile.open(run.hessianFile(l.block));
      let H: Float64Array;
      try {
        H = Float64Array.from(hf.readFloat32(`${l.input}::H`));
      } finally {
        hf.close();
      }
      const loss = proxyLoss(await read(l.weight), native.readFloat32(l.weight), H, l.rows, l.cols);
      // Measured: equal on all 28 layers of the tiny model (another input's H of the same width: ≥ 2.4 % off).
      assert.ok(Math.abs(rep.proxyLoss - loss) <= 1e-9 * loss, `${l.name}: reported ${rep.proxyLoss}, recomputed ${loss}`);
    }
    assert.equal(m.linears.length, a.length);
  } finally {
    native.close();
    m.close();
  }
});
