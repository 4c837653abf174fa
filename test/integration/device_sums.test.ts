// The GPU pipeline's Hessian path (running sums kept on the device, H = (XᵀX + XᵀXᵀ)/N and mean|x|
// finished there, float32) against the host path (float64 sums, symmetrised on the host), both on the
// CPU EP: LOPRO_DEVICE_SUMS=always takes the device path with host tensors. The cached Hessians must
// agree to float32 rounding and be exactly symmetric; the run must complete with both. And a device without
// room for the calibration activations (injected failure) falls back to the host path with the same bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile } from '../../src/engine/io/safetensors';
import { RunDir } from '../../src/engine/run/rundir';
import { runCli, sha256, tmp, TINY, TRAIN } from './helpers';

// 6 windows: 1/N is inexact, so the float32 finish on the "device" really differs from the float64 one.
const ARGS = ['quantize', TINY, '--method', 'gptq', '--bits', '3', '--calib', TRAIN, '--samples', '6', '--ctx', '64', '--ep', 'cpu'];

test('Hessians finished on the device (LOPRO_DEVICE_SUMS=always) = host Hessians to float32 rounding, exactly symmetric', () => {
  const base = tmp('devsums');
  const host = join(base, 'host'), dev = join(base, 'dev');
  const a = runCli([...ARGS, '--out', host]);
  assert.equal(a.code, 0, a.stderr);
  const b = runCli([...ARGS, '--out', dev], { LOPRO_DEVICE_SUMS: 'always' });
  assert.equal(b.code, 0, b.stderr);
  assert.doesNotMatch(b.stderr, /summing on the host/); // the device path ran, it did not fall back
  const fa = SafetensorsFile.open(new RunDir(host).hessianFile(0)), fb = SafetensorsFile.open(new RunDir(dev).hessianFile(0));
  let anyDiff = false;
  try {
    for (const input of ['attn_in', 'attn_out', 'mlp_in', 'mlp_act']) {
      const ha = fa.readFloat32(`${input}::H`), hb = fb.readFloat32(`${input}::H`);
      const n = Math.round(Math.sqrt(ha.length));
      let maxDiff = 0, maxAbs = 0;
      for (let i = 0; i < ha.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(ha[i] - hb[i]));
        maxAbs = Math.max(maxAbs, Math.abs(ha[i]));
      }
      anyDiff ||= maxDiff > 0;
      assert.ok(maxDiff / maxAbs < 1e-5, `${input}: H differs by ${maxDiff / maxAbs} (relative to max |H|)`);
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) assert.equal(hb[i * n + j], hb[j * n + i], `${input}: H not symmetric at ${i},${j}`);
      const ma = fa.readFloat32(`${input}::abs_mean`), mb = fb.readFloat32(`${input}::abs_mean`);
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
  const ref = runCli([...args, '--out', join(base, 'ref')]);
  assert.equal(ref.code, 0, ref.stderr);
  // LOPRO_DEVICE_ACTS=always takes the device-activations path; the injected failure stands for a full device.
  const oom = runCli([...args, '--out', join(base, 'oom')], { LOPRO_DEVICE_ACTS: 'always', LOPRO_FAIL_UPLOAD_SCOPE: 'activations' });
  assert.equal(oom.code, 0, oom.stderr);
  assert.equal(oom.stderr.match(/do not fit on the cpu device \(injected: no device memory/g)?.length, 1, oom.stderr);
  assert.equal(sha256(join(base, 'oom', 'native', 'model.safetensors')), sha256(join(base, 'ref', 'native', 'model.safetensors')));
});

test('proxy losses from the device copies (W and Ŵ as the forward holds them, H as finished there) = the float64 kernel to 1e-5; same bytes', () => {
  const base = tmp('devloss');
  // Both runs take the device Hessian path (same H, so the same quantization); workers on, so the
  // pipeline's async layer path runs. Threshold 0: every layer's losses come from the device copies;
  // threshold 1e12: from the float64 TypeScript kernel on the host.
  const args = ['quantize', TINY, '--method', 'lopro', '--bits', '2', '--calib', TRAIN, '--samples', '4', '--ctx', '64', '--ep', 'cpu'];
  const env = { LOPRO_DEVICE_SUMS: 'always', LOPRO_THREADS: '2' };
  const dev = runCli([...args, '--out', join(base, 'dev')], { ...env, LOPRO_PROXY_LOSS_MIN_WEIGHTS: '0' });
  assert.equal(dev.code, 0, dev.stderr);
  assert.doesNotMatch(dev.stderr, /proxy loss on the cpu device failed/);
  const host = runCli([...args, '--out', join(base, 'host')], { ...env, LOPRO_PROXY_LOSS_MIN_WEIGHTS: '1e12' });
  assert.equal(host.code, 0, host.stderr);
  assert.equal(sha256(join(base, 'dev', 'native', 'model.safetensors')), sha256(join(base, 'host', 'native', 'model.safetensors')));
  const layers = (d: string) => JSON.parse(readFileSync(join(base, d, 'run.json'), 'utf8')).layers as { name: string; proxyLoss: number; relProxyLoss: number }[];
  const a = layers('dev'), b = layers('host');
  assert.equal(a.length, b.length);
  let anyDiff = false;
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i].name, b[i].name);
    anyDiff ||= a[i].proxyLoss !== b[i].proxyLoss;
    assert.ok(Math.abs(a[i].proxyLoss - b[i].proxyLoss) <= 1e-5 * b[i].proxyLoss, `${a[i].name}: ${a[i].proxyLoss} vs ${b[i].proxyLoss}`);
    assert.ok(Math.abs(a[i].relProxyLoss - b[i].relProxyLoss) <= 1e-5 * b[i].relProxyLoss, `${a[i].name}: rel ${a[i].relProxyLoss} vs ${b[i].relProxyLoss}`);
  }
  assert.ok(anyDiff, 'bit-identical losses: the device path did not run');
});
