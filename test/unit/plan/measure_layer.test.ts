// The measurement of one layer: the leading factors of a rank-16 R1SVD are the rank-4 R1SVD's (same seed), a
// candidate's loss from its row sample is the full layer's within sampling error, the grid's bpw are exact, and
// more bits never measure worse at the same method and rank.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG, bitsPerWeight, type LayerConfig } from '../../../src/protocol/config';
import { candidateConfigs, measureLayer } from '../../../src/engine/plan/measure_layer';
import { leadingFactors } from '../../../src/engine/quant/r1svd';
import { quantizeLayer } from '../../../src/engine/run/quantize_layer';
import { cpuBackend } from '../backend/backends';
import { syntheticLayer } from '../quant/synthetic';

test('leadingFactors(rank 16 → 4) equals R1SVD at rank 4 with the same seed', async () => {
  const { W } = syntheticLayer(96, 128, 256, 3);
  const s = cpuBackend().session();
  try {
    const A = await s.upload(W, 96, 128, 'W', 't');
    const f16 = await s.r1svd(await s.copy(A), { rank: 16, powerIters: 2, seed: 11 });
    const f4 = await s.r1svd(await s.copy(A), { rank: 4, powerIters: 2, seed: 11 });
    const t = leadingFactors(f16, 4);
    assert.equal(t.rank, 4);
    assert.deepEqual([...t.U], [...f4.U]);
    assert.deepEqual([...t.V], [...f4.V]);
    assert.deepEqual([...t.sigma], [...f4.sigma]);
    assert.deepEqual([...t.uCodes], [...f4.uCodes]);
    assert.deepEqual([...t.vCodes], [...f4.vCodes]);
    assert.equal(leadingFactors(f16, 32), f16);
  } finally {
    s.close();
  }
});

test('measureLayer: the grid, exact bpw, sampled losses near the full layer’s, monotone in bits', async () => {
  const rows = 512,
    cols = 256;
  const x = syntheticLayer(rows, cols, 1024, 5);
  const lc: LayerConfig = { ...DEFAULT_LAYER_CONFIG, method: 'lopro', groupSize: 64 };
  const backend = cpuBackend();
  const m = await measureLayer(backend, { name: 'model.layers.0.mlp.up_proj', block: 0, module: 'mlp.up_proj', rows, cols, ...x }, lc, 0);
  const grid = candidateConfigs(lc, rows, cols);
  assert.equal(m.candidates.length, grid.length);
  assert.deepEqual(
    m.candidates.map((c) => c.config),
    grid,
  );
  assert.equal(new Set(grid.map((c) => `${c.method}/${c.bits}/${c.rank}`)).size, 12, 'gptq × 3 bits + lopro × 3 ranks × 3 bits');
  assert.equal(m.sampledRows, 128);
  for (const c of m.candidates) assert.equal(c.bpw, bitsPerWeight({ ...lc, ...c.config }, rows, cols));
  for (const c of m.candidates) {
    if (c.config.bits === 2) continue;
    const lower = m.candidates.find((d) => d.config.method === c.config.method && d.config.rank === c.config.rank && d.config.bits === c.config.bits - 1)!;
    assert.ok(c.loss < lower.loss, `${c.config.method} r${c.config.rank}: W${c.config.bits} ${c.loss} vs W${lower.config.bits} ${lower.loss}`);
  }
  // Rank 0: the shared stage B and factorization give exactly what quantizing the row sample on its own gives.
  const step = rows / m.sampledRows;
  const Ws = new Float32Array(m.sampledRows * cols);
  for (let i = 0; i < m.sampledRows; i++) Ws.set(x.W.subarray(i * step * cols, (i * step + 1) * cols), i * cols);
  for (const c of m.candidates.filter((d) => d.config.rank === 0)) {
    const alone = await quantizeLayer(
      backend,
      { name: 'model.layers.0.mlp.up_proj', block: 0, module: 'mlp.up_proj', rows: m.sampledRows, cols, ...x, W: Ws },
      { ...lc, ...c.config },
      { seed: 0 },
    );
    const want = (alone.report.proxyLoss * rows) / m.sampledRows;
    assert.ok(Math.abs(c.loss / want - 1) < 1e-9, `${c.config.method} W${c.config.bits}: ${c.loss} vs ${want}`);
  }
  // The full layer quantized as the run would: the sampled estimate is within sampling error of it.
  for (const c of m.candidates.filter((d) => d.config.bits === 2 && d.config.rank !== 4)) {
    const full = await quantizeLayer(backend, { name: 'model.layers.0.mlp.up_proj', block: 0, module: 'mlp.up_proj', rows, cols, ...x }, { ...lc, ...c.config }, { seed: 0 });
    const ratio = c.loss / full.report.proxyLoss;
    assert.ok(ratio > 0.8 && ratio < 1.25, `${c.config.method} r${c.config.rank} W2: sampled ${c.loss} vs full ${full.report.proxyLoss}`);
  }
});
