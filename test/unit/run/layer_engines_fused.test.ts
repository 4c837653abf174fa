// The pipeline's layer engines (run/layer_engines.ts) on a GPU EP with a Dawn device: GPTQ (alone and as
// LoPRo's stage C) goes through the fused WGSL kernels (quant/gptq_fused.ts), LoPRo's R1SVD through
// r1svd_dawn.ts — Dawn's submit counter moves — or a LoPRo layer whole through quant/lopro_dawn.ts (the
// default, lopro_v too; LOPRO_RESIDENT=off for the pool driver), and the layer outcome matches the single-threaded
// float64 path to float32 rounding (Ŵ ≥ 99 % within 1e-5 of the largest weight — the resident path rebuilds
// Ŵ in float32 on the device — proxy loss within 1e-3). LOPRO_GPTQ_LOOP=ort with LOPRO_R1SVD=ort keeps
// Dawn out. The device is
// SwiftShader (see test/unit/perf/gptq_fused.test.ts); the EP is the CPU EP claiming 'webgpu'.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { quantizeLayer, quantizeLayerAsync, type LayerInput } from '../../../src/engine/run/quantize_layer';
import { createLayerEngines } from '../../../src/engine/run/layer_engines';
import { syntheticLayer } from '../quant/synthetic';
import { testDawn } from '../dawn_device';

const rows = 96, cols = 384;
const { W, H, absMean } = syntheticLayer(rows, cols, 1024, 21, 8);
const layer: LayerInput = { name: 'model.layers.1.mlp.up_proj', block: 1, module: 'up_proj', rows, cols, W, H, absMean };

test('GPU EP with a Dawn device: gptq and lopro layers through the fused kernels ≈ the single-threaded path', async (t) => {
  const gpu = await testDawn(t);
  if (!gpu) return;
  const cpu = await ComputeRuntime.create({ ep: 'cpu' });
  const asWebgpu = new Proxy(cpu, { get: (target, prop, recv) => (prop === 'ep' ? 'webgpu' : Reflect.get(target, prop, recv)) }) as ComputeRuntime;
  const warnings: string[] = [];
  const engines = createLayerEngines(asWebgpu, (m) => warnings.push(m), { threads: 2, deviceMinWeights: 1 });
  assert.ok(engines);
  try {
    for (const lc of [
      { ...DEFAULT_LAYER_CONFIG, method: 'gptq', bits: 2 },
      { ...DEFAULT_LAYER_CONFIG, method: 'lopro', bits: 2, rank: 4 },
      { ...DEFAULT_LAYER_CONFIG, method: 'lopro_v', bits: 2, rank: 4, vqDim: 2 },
    ] as LayerConfig[]) {
      for (const loop of [undefined, 'resident-off', 'ort'] as const) {
        if (loop === 'ort') process.env.LOPRO_GPTQ_LOOP = process.env.LOPRO_R1SVD = loop;
        else delete process.env.LOPRO_GPTQ_LOOP, delete process.env.LOPRO_R1SVD;
        if (loop === 'resident-off') process.env.LOPRO_RESIDENT = 'off';
        else delete process.env.LOPRO_RESIDENT;
        const submits: number = gpu.counters.submits;
        let resident = false;
        const e = engines!, whole = e.loproResident;
        e.loproResident = async (...a) => {
          const r = await whole.apply(e, a);
          resident = r !== null;
          return r;
        };
        const sync = quantizeLayer(layer, lc, { seed: 3 });
        const dev = await quantizeLayerAsync(layer, lc, { seed: 3, engines });
        e.loproResident = whole;
        const used: boolean = gpu.counters.submits > submits;
        // lopro_v has no pool driver: without the resident path it is the single-threaded quant/lopro.ts (no Dawn).
        assert.equal(used, loop === undefined || (loop === 'resident-off' && lc.method !== 'lopro_v'), `${lc.method}, ${loop}: Dawn used = ${used}`);
        assert.equal(resident, lc.method !== 'gptq' && loop === undefined, `${lc.method}, ${loop}: the whole layer on Dawn = ${resident}`);
        if (lc.method === 'lopro_v' && resident) {
          // GPTVQ's k-means starts from float32 values on this path: codebooks may drift, the loss may not.
          const rel = Math.abs(dev.report.proxyLoss - sync.report.proxyLoss) / sync.report.proxyLoss;
          assert.ok(rel < 0.03, `lopro_v: proxy loss ${dev.report.proxyLoss} vs ${sync.report.proxyLoss}`);
          assert.equal(dev.details?.rows, rows);
          continue;
        }
        let same = 0, big = 0;
        for (let i = 0; i < sync.wHat.length; i++) big = Math.max(big, Math.abs(sync.wHat[i]));
        for (let i = 0; i < sync.wHat.length; i++) if (Math.abs(sync.wHat[i] - dev.wHat[i]) <= 1e-5 * big) same++;
        assert.ok(same / sync.wHat.length >= 0.99, `${lc.method} ${loop}: Ŵ agrees ${same / sync.wHat.length}`);
        if (lc.method !== 'gptq') assert.equal(dev.details?.rows, rows, 'the layer view\'s details come with either driver');
        const rel = Math.abs(dev.report.proxyLoss - sync.report.proxyLoss) / sync.report.proxyLoss;
        assert.ok(rel < 1e-3, `${lc.method} ${loop}: proxy loss ${dev.report.proxyLoss} vs ${sync.report.proxyLoss}`);
      }
    }
    assert.deepEqual(warnings, []);
  } finally {
    delete process.env.LOPRO_GPTQ_LOOP;
    delete process.env.LOPRO_R1SVD;
    delete process.env.LOPRO_RESIDENT;
    await engines!.close();
  }
});
