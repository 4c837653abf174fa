// LoPRo with a pluggable GPTQ engine (gptq_device_lopro.ts) against quant/lopro.ts: with the
// synchronous TypeScript GPTQ, or the row-parallel one, the stored parts must be identical.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG } from '../../../src/protocol/config';
import { gptqQuantize } from '../../../src/engine/quant/gptq';
import { GptqPool, gptqQuantizeParallel } from '../../../src/engine/quant/gptq_parallel';
import { quantizeLayerLoPRoParallel, r1svdParallel } from '../../../src/engine/quant/gptq_parallel_lopro';
import { r1svd } from '../../../src/engine/quant/r1svd';
import { quantizeLayerLoPRoWith } from '../../../src/engine/quant/gptq_device_lopro';
import { quantizeLayerLoPRo } from '../../../src/engine/quant/lopro';
import { syntheticLayer } from '../quant/synthetic';

const rows = 64, cols = 384, T = 900;
const { W, H, absMean } = syntheticLayer(rows, cols, T, 71);
const cfg = { ...DEFAULT_LAYER_CONFIG, method: 'lopro' as const, bits: 2, rank: 4 };

test('LoPRo with a pluggable GPTQ engine = quant/lopro.ts (sync TS and row-parallel engines)', async () => {
  const ref = quantizeLayerLoPRo(W, rows, cols, H, absMean, cfg, 5, { baselines: false });
  const sync = await quantizeLayerLoPRoWith(async (w, r, c, h, o) => gptqQuantize(w, r, c, h, o), W, rows, cols, H, absMean, cfg, 5);
  const par = await quantizeLayerLoPRoWith((w, r, c, h, o) => gptqQuantizeParallel(w, r, c, h, { ...o, threads: 2 }), W, rows, cols, H, absMean, cfg, 5);
  for (const x of [sync, par]) {
    assert.deepEqual(x.stored.perm, ref.stored.perm);
    assert.deepEqual(x.stored.uCodes, ref.stored.uCodes);
    assert.deepEqual(x.stored.codes, ref.stored.codes);
    assert.deepEqual(x.stored.scaleBits, ref.stored.scaleBits);
    assert.deepEqual(x.stored.zeros, ref.stored.zeros);
    assert.deepEqual(x.reconstructed, ref.reconstructed);
  }
  for (const k of ['lowrank', 'permute', 'rotate', 'gptq', 'reconstruct']) assert.ok(sync.seconds[k] >= 0, k);
});

test('row/column-parallel LoPRo stages (R1SVD, residual, importance, rotation, dequant) = quant/lopro.ts', async () => {
  const pool = GptqPool.create(3);
  try {
    const ref = quantizeLayerLoPRo(W, rows, cols, H, absMean, cfg, 9, { baselines: false });
    const par = await quantizeLayerLoPRoParallel(pool, (w, r, c, h, o) => gptqQuantizeParallel(w, r, c, h, { ...o, pool }), W, rows, cols, H, absMean, cfg, 9);
    assert.deepEqual(par.stored.uCodes, ref.stored.uCodes);
    assert.deepEqual(par.stored.vCodes, ref.stored.vCodes);
    assert.deepEqual(par.stored.sigmaBits, ref.stored.sigmaBits);
    assert.deepEqual(par.stored.perm, ref.stored.perm);
    assert.deepEqual(par.stored.codes, ref.stored.codes);
    assert.deepEqual(par.stored.scaleBits, ref.stored.scaleBits);
    assert.deepEqual(par.reconstructed, ref.reconstructed);
    // R1SVD alone, odd sizes, more ranks than workers' slices divide evenly.
    const m = 37, n = 53, A = Float32Array.from({ length: m * n }, (_, i) => Math.sin(i * 0.37) + (i % 7) * 0.1);
    const a = r1svd(A, m, n, { rank: 5, powerIters: 3, seed: 4 });
    const sh = new Float32Array(new SharedArrayBuffer(m * n * 4) as unknown as ArrayBuffer);
    sh.set(A);
    const b = await r1svdParallel(pool, sh, m, n, { rank: 5, powerIters: 3, seed: 4 });
    assert.deepEqual(b.U, a.U);
    assert.deepEqual(b.V, a.V);
    assert.deepEqual(b.sigma, a.sigma);
    assert.equal(b.energy, a.energy);
  } finally {
    await pool.close();
  }
});

test('float32 engines get R′ and H′ as float32 copies made on the pool (f32Inputs); a value beyond float32 is a NonFinite error', async () => {
  const pool = GptqPool.create(2);
  try {
    type Seen = { Rt: Float64Array; Ht: Float64Array; f32?: { W: Float32Array; H: Float32Array } };
    let seen: Seen | undefined;
    const lastSeen = (): Seen => seen!; // read through a call: TypeScript does not see the engine's closure assign it
    const spy = (w: Float64Array, r: number, c: number, h: Float64Array, o: Parameters<typeof gptqQuantizeParallel>[4]) => {
      seen = { Rt: Float64Array.from(w), Ht: Float64Array.from(h), f32: o.f32Inputs && { W: Float32Array.from(o.f32Inputs.W), H: Float32Array.from(o.f32Inputs.H) } };
      return gptqQuantizeParallel(w, r, c, h, { ...o, pool });
    };
    const plain = await quantizeLayerLoPRoParallel(pool, spy, W, rows, cols, H, absMean, cfg, 9);
    assert.equal(lastSeen().f32, undefined, 'no float32 copies unless asked for');
    const f32 = await quantizeLayerLoPRoParallel(pool, spy, W, rows, cols, H, absMean, cfg, 9, 'layer', undefined, { float32Engine: true });
    const withF32 = lastSeen();
    assert.ok(withF32.f32);
    assert.deepEqual(withF32.f32.W, Float32Array.from(withF32.Rt));
    assert.deepEqual(withF32.f32.H, Float32Array.from(withF32.Ht));
    assert.deepEqual(f32.stored.codes, plain.stored.codes); // a float64 engine ignores them
    // 1e39 is finite in float64 but not in float32: the float32 engine must not get an Infinity.
    const Hbig = Float64Array.from(H);
    Hbig[0] = 1e39;
    await assert.rejects(
      quantizeLayerLoPRoParallel(pool, spy, W, rows, cols, Hbig, absMean, cfg, 9, 'layer', undefined, { float32Engine: true }),
      (e: Error & { code?: string }) => e.code === 'E_NON_FINITE' && /H′/.test(e.message),
    );
  } finally {
    await pool.close();
  }
});
