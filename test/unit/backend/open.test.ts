// The run's backend is chosen once (QuantizeConfig.backend): cpu as asked; gpu only where a WebGPU adapter
// exists (else exit-2 error naming why); auto = a hardware adapter, else the CPU with the reason in one line.
// And a CPU-only machine sees that one line, none of the native noise of probing (ONNX Runtime's provider
// library errors, the Vulkan drivers' XDG_RUNTIME_DIR and adapter warnings).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultThreads, openBackend } from '../../../src/engine/backend/open';
import { vulkanLoaderMissing } from '../../../src/engine/backend/gpu/vulkan';
import { ProtocolError } from '../../../src/protocol/rpc';
import { spawnSync } from 'node:child_process';
import { MAIN, ROOT, SMALL, tmp, TINY, TRAIN } from '../../integration/helpers';
import { testDawn } from '../dawn_device';

test("CPU threads: one per core from 4 cores up, else the engine's own thread", () => {
  assert.equal(defaultThreads(2), 1);
  assert.equal(defaultThreads(3), 1);
  assert.equal(defaultThreads(4), 4);
  assert.equal(defaultThreads(16), 16);
});

test('backend cpu: the CPU, whatever the machine has', async () => {
  const { backend, why } = await openBackend('cpu', 3, { adapter: 'NVIDIA H100' });
  try {
    assert.equal(backend.kind, 'cpu');
    assert.equal(backend.label, 'cpu: 3 threads');
    assert.equal(why, 'asked for');
  } finally {
    await backend.close();
  }
});

test('backend auto without a hardware adapter: the CPU, with the reason; gpu: an error naming it', async () => {
  for (const probe of [
    { reason: 'no Vulkan loader (libvulkan.so.1): install it (Debian/Ubuntu: apt-get install libvulkan1)' },
    { adapter: 'Google SwiftShader', fallback: true },
  ]) {
    const { backend, why } = await openBackend('auto', 1, probe);
    try {
      assert.equal(backend.kind, 'cpu');
      assert.equal(backend.label, 'cpu: 1 thread');
      assert.match(why, probe.adapter ? /^auto: the only WebGPU adapter is a CPU emulation \(Google SwiftShader\)$/ : /^auto: no Vulkan loader .*libvulkan1/);
    } finally {
      await backend.close();
    }
  }
  await assert.rejects(
    openBackend('gpu', 1, { reason: 'no WebGPU adapter: the Vulkan drivers found no GPU' }),
    (e: unknown) => e instanceof ProtocolError && e.code === 'E_BAD_CONFIG' && /^--backend gpu: no WebGPU adapter/.test(e.message) && e.hint === 'use --backend cpu or auto',
  );
});

test('backend gpu takes a CPU emulation when asked for it by name (SwiftShader: how CI tests the GPU backend)', async (t) => {
  if (!(await testDawn(t))) return;
  const { backend, why } = await openBackend('gpu', 1, { adapter: 'SwiftShader', fallback: true });
  try {
    assert.equal(backend.kind, 'gpu');
    assert.match(backend.label, /^gpu: /);
    assert.match(why, /CPU emulation/);
  } finally {
    await backend.close();
  }
});

test('the Vulkan loader check names the package to install, and finds the loader on LD_LIBRARY_PATH too', { skip: process.platform !== 'linux' }, () => {
  const none = () => false;
  assert.match(vulkanLoaderMissing({}, none)!, /libvulkan\.so\.1.*apt-get install libvulkan1/);
  assert.equal(
    vulkanLoaderMissing({}, (p) => p === '/usr/lib/x86_64-linux-gnu/libvulkan.so.1'),
    undefined,
  );
  assert.equal(
    vulkanLoaderMissing({ LD_LIBRARY_PATH: '/opt/x:/opt/vk/lib' }, (p) => p === '/opt/vk/lib/libvulkan.so.1'),
    undefined,
  );
});

test('a run with --ep auto --backend auto on this machine prints one plain line for each choice and no native noise', () => {
  // Without the tests' SwiftShader ICD (VK_ICD_FILENAMES): the Vulkan drivers a user's CPU-only machine has.
  const env: NodeJS.ProcessEnv = { ...process.env, LOPRO_ENGINE_IPC: '', XDG_RUNTIME_DIR: '' };
  delete env.VK_ICD_FILENAMES;
  const spawned = spawnSync(
    process.execPath,
    ['--import', 'tsx', MAIN, 'quantize', TINY, '--calib', TRAIN, ...SMALL, '--ep', 'auto', '--backend', 'auto', '--method', 'rtn', '--out', tmp('quiet')],
    { cwd: ROOT, encoding: 'utf8', env, timeout: 170_000 },
  );
  const r = { code: spawned.status, stderr: spawned.stderr };
  assert.equal(r.code, 0, r.stderr);
  for (const noise of ['XDG_RUNTIME_DIR', 'Warning:', 'vkCreateInstance', 'provider_bridge', '\x1b[', 'InitializeImpl', 'ONNXRuntimeError'])
    assert.ok(!r.stderr.includes(noise), `stderr shows "${noise}":\n${r.stderr}`);
  const backendLines = r.stderr.split('\n').filter((l) => l.startsWith('backend '));
  assert.equal(backendLines.length, 1, r.stderr);
  // This machine may have a GPU (a developer's) or not (CI): either way the line says which and why.
  assert.match(backendLines[0], /^backend (cpu: \d+ threads? \(auto: .+\)|gpu: .+ \(auto: a WebGPU adapter\))$/);
});
