// Row-sliced data-free RTN stores exactly what whole-matrix RTN stores, with the same loss, on the CPU
// backend with one thread and with three workers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import { loproLayerTensors } from '../../../src/engine/io/lopro_format';
import { rtnByRows } from '../../../src/engine/run/rtn_rows';
import { quantizeLayer } from '../../../src/engine/run/quantize_layer';
import { cpuBackend } from '../backend/backends';

for (const threads of [1, 3])
  test(`rtnByRows = quantizeLayer(rtn) byte for byte, odd shapes and slices (CPU backend, ${threads} thread${threads > 1 ? 's' : ''})`, async () => {
    const backend = cpuBackend(threads);
    for (const [rows, cols, g, slice] of [
      [37, 200, 64, 7 * 200],
      [64, 96, -1, 1000],
      [5, 130, 128, 1],
      [9, 45, 16, 90],
    ] as const) {
      const W = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)) * 0.01);
      const lc: LayerConfig = { ...DEFAULT_LAYER_CONFIG, method: 'rtn', bits: 3, groupSize: g };
      const shape = `${rows}×${cols} g${g} slice ${slice}`;
      const whole = await quantizeLayer(backend, { name: 'x', block: 0, module: 'x', rows, cols, W }, lc, { seed: 0 });
      const sliced = await rtnByRows(backend, (r0, n) => W.slice(r0 * cols, (r0 + n) * cols), 'x', 0, 'x', rows, cols, lc, slice);
      assert.equal(sliced.stored.codes?.length, rows * cols, shape);
      const bytes = (t: ReturnType<typeof loproLayerTensors>) => t.map((x) => [x.name, Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength).toString('hex')]);
      assert.deepEqual(bytes(loproLayerTensors('x', sliced.stored)), bytes(loproLayerTensors('x', whole.stored)), shape);
      assert.ok(Math.abs(sliced.report.proxyLoss / whole.report.proxyLoss - 1) < 1e-9, `${shape}: ${sliced.report.proxyLoss} vs ${whole.report.proxyLoss}`);
      assert.ok(Math.abs(sliced.report.relProxyLoss / whole.report.relProxyLoss - 1) < 1e-9);
      assert.equal(sliced.report.bpw, whole.report.bpw);
    }
  });
