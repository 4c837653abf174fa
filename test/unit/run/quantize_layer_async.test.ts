// The pipeline's layer engines (run/layer_engines.ts): on the CPU EP the worker-thread drivers give the
// same stored parts, Ŵ, proxy loss and bpw as the single-threaded quantizeLayer, and the same kind of
// layer details; on a GPU EP whose device calls fail, each layer falls back to the workers (warned once)
// with the same result.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { quantizeLayer, quantizeLayerAsync, type LayerInput } from '../../../src/engine/run/quantize_layer';
import { createLayerEngines } from '../../../src/engine/run/layer_engines';
import { syntheticLayer } from '../quant/synthetic';

const rows = 96, cols = 384, tokens = 1024;
const { W, H, absMean } = syntheticLayer(rows, cols, tokens, 21, 8);
const layer: LayerInput = { name: 'model.layers.1.mlp.up_proj', block: 1, module: 'up_proj', rows, cols, W, H, absMean };

function assertSameOutcome(a: Awaited<ReturnType<typeof quantizeLayerAsync>>, b: ReturnType<typeof quantizeLayer>, what: string) {
  assert.deepEqual(a.wHat, b.wHat, `${what}: Ŵ`);
  assert.deepEqual(a.stored, b.stored, `${what}: stored parts`);
  assert.equal(a.report.proxyLoss, b.report.proxyLoss, `${what}: proxy loss`);
  assert.equal(a.report.bpw, b.report.bpw, `${what}: bpw`);
  assert.deepEqual(a.report.notes, b.report.notes, `${what}: notes`);
  assert.equal(!!a.details, !!b.details, `${what}: details`);
  if (b.details) assert.deepEqual(a.details, b.details, `${what}: layer details`);
}

test('worker engines on the CPU EP: lopro (r=4, clip mse) and gptq layers identical to the single-threaded path', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  const engines = createLayerEngines(rt, () => assert.fail('no warning expected on the CPU EP'), { threads: 2 });
  assert.ok(engines, 'the worker script is found under tsx');
  try {
    for (const lc of [
      { ...DEFAULT_LAYER_CONFIG, method: 'lopro', bits: 2, rank: 4, clip: 'mse' },
      { ...DEFAULT_LAYER_CONFIG, method: 'lopro', bits: 3, rank: 0 },
      { ...DEFAULT_LAYER_CONFIG, method: 'gptq', bits: 2 },
    ] as LayerConfig[]) {
      const what = `${lc.method} W${lc.bits} r${lc.rank} ${lc.clip}`;
      const sync = quantizeLayer(layer, lc, { seed: 3 });
      const par = await quantizeLayerAsync(layer, lc, { seed: 3, engines });
      assertSameOutcome(par, sync, what);
    }
  } finally {
    await engines!.close();
  }
});

test('GPU EP whose device calls fail: every layer falls back to the workers, one warning per stage, same result', async () => {
  const cpu = await ComputeRuntime.create({ ep: 'cpu' });
  // A runtime that claims WebGPU but refuses to run anything (a lost device, a missing kernel).
  const broken = new Proxy(cpu, {
    get(target, prop, recv) {
      if (prop === 'ep') return 'webgpu';
      if (prop === 'session' || prop === 'run' || prop === 'upload') return async () => { throw new Error('device lost'); };
      return Reflect.get(target, prop, recv);
    },
  }) as ComputeRuntime;
  const warnings: string[] = [];
  const engines = createLayerEngines(broken, (m) => warnings.push(m), { threads: 2, deviceMinWeights: 1 });
  try {
    const lc = { ...DEFAULT_LAYER_CONFIG, method: 'lopro', bits: 2, rank: 4 } as LayerConfig;
    const sync = quantizeLayer(layer, lc, { seed: 5 });
    for (let i = 0; i < 2; i++) assertSameOutcome(await quantizeLayerAsync(layer, lc, { seed: 5, engines }), sync, `fallback run ${i}`);
    // The device column loop falls back to the hybrid driver, which falls back to the workers; R1SVD to the pool.
    assert.equal(warnings.length, 3, `one warning each for the GPTQ column loop, the hybrid GPTQ and R1SVD, got: ${warnings.join(' | ')}`);
    assert.ok(warnings.some((w) => w.startsWith('GPTQ column loop')) && warnings.some((w) => w.startsWith('GPTQ on')) && warnings.some((w) => w.startsWith('R1SVD')), warnings.join(' | '));
    assert.ok(warnings.every((w) => w.includes('device lost') && w.includes('webgpu')), warnings.join(' | '));
  } finally {
    await engines!.close();
  }
});
