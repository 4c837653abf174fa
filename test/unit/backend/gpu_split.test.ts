// The GPU backend with n×n matrices wider than one binding (split.ts): a 70B down_proj's Hessian (28672²
// float32, 3.06 GiB) exceeds WebGPU's 2 GiB binding, so such matrices are bound in row parts and the GPTQ/GPTVQ
// loops bind windows of Hinv's rows. Here the binding limit is lowered so that small layers' Hessians split in
// three parts while their weights still bind whole: every method must give bit for bit what the unsplit
// backend gives (the same kernels in the same order; only the addressing differs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import { GpuBackend } from '../../../src/engine/backend/gpu/gpu_backend';
import { rowParts, rowWindow } from '../../../src/engine/backend/gpu/split';
import { assertBackendHolds, quantizeLayer } from '../../../src/engine/run/quantize_layer';
import { syntheticLayer } from '../quant/synthetic';
import { gpuBackend, gptqOn, loproOn } from './backends';

const ROWS = 40,
  COLS = 192;
/** 78 rows of a 192-wide float32 matrix: H (192²) binds in 3 parts, W (40×192) whole. */
const BINDING = 60000;

const cfgOf = (o: Partial<LayerConfig>): LayerConfig => ({ ...DEFAULT_LAYER_CONFIG, ...o });

let split: GpuBackend | undefined;
async function backends(t: { skip: (why: string) => void }): Promise<[GpuBackend, GpuBackend] | null> {
  const whole = await gpuBackend(t);
  if (!whole) return null;
  split ??= GpuBackend.create(whole.gpu, { bindingBytes: BINDING });
  return [whole, split];
}

test('rowParts: whole when it fits; else row parts on 256-byte boundaries, each within the binding', () => {
  assert.deepEqual(rowParts(40, 192, BINDING), [0]);
  assert.deepEqual(rowParts(192, 192, BINDING), [0, 78 * 192, 156 * 192]);
  for (const [n, limit] of [
    [28672, 2 ** 31 - 4],
    [28673, 2 ** 31 - 4],
    [1001, 999_999],
    [97, 30000],
  ]) {
    const s = rowParts(n, n, limit);
    assert.ok(s.length > 1, `${n}: split`);
    s.forEach((e, p) => {
      assert.equal((4 * e) % 256, 0, `${n}: part ${p} starts on a 256-byte boundary`);
      assert.equal(e % n, 0, `${n}: part ${p} starts on a row`);
      assert.ok(4 * ((s[p + 1] ?? n * n) - e) <= limit, `${n}: part ${p} within the binding`);
    });
  }
  assert.equal(rowParts(28672, 28672, 2 ** 31 - 4).length, 2);
  assert.deepEqual(rowParts(97, 97, 4096), [], 'no whole number of 64-row units fits: not splittable');
  const w = rowWindow({} as GPUBuffer, 30, 7, 9);
  assert.equal(w.binding.offset! % 256, 0);
  assert.equal(w.binding.offset! / 4 + w.skip, 7 * 30, 'the window starts at or before row 7, skip elements before it');
  assert.equal(w.binding.offset! + w.binding.size!, 4 * 9 * 30, 'and ends with row 8');
});

for (const method of ['rtn', 'gptq', 'lopro', 'lopro_v'] as const)
  test(`GPU backend, Hessian in 3 binding parts (${method}): the stored parts, Ŵ and the losses equal the unsplit backend's bit for bit`, async (t) => {
    const b = await backends(t);
    if (!b) return;
    const { W, H, absMean } = syntheticLayer(ROWS, COLS, 400, 31);
    const lc = cfgOf({ method, actOrder: method === 'gptq' });
    const input = { name: 'model.layers.0.mlp.down_proj', block: 0, module: 'down_proj', rows: ROWS, cols: COLS, W, H, absMean };
    const s = b[1].session();
    assert.equal(((await s.upload(H, COLS, COLS, 'H', 'test')) as unknown as { starts: number[] }).starts.length, 3, 'H is bound in 3 parts');
    s.close();
    const [a, c] = [await quantizeLayer(b[0], input, lc, { seed: 0, compare: true }), await quantizeLayer(b[1], input, lc, { seed: 0, compare: true })];
    assert.deepEqual(c.stored, a.stored);
    assert.deepEqual(c.wHat, a.wHat);
    assert.equal(c.report.proxyLoss, a.report.proxyLoss);
    assert.deepEqual(c.report.baselines, a.report.baselines);
  });

test('GPU backend, Hessian in 3 parts: GPTQ with act-order, dead inputs and batches of 30 (Hinv windows off row boundaries) = unsplit', async (t) => {
  const b = await backends(t);
  if (!b) return;
  const { W, H } = syntheticLayer(ROWS, COLS, 400, 32);
  for (let i = 0; i < COLS; i++) H[i * COLS + 100] = H[100 * COLS + i] = 0; // a dead input in the second part
  const opts = { bits: 2, groupSize: 32, blockSize: 30, actOrder: true };
  const [a, c] = [await gptqOn(b[0], W, ROWS, COLS, H, opts), await gptqOn(b[1], W, ROWS, COLS, H, opts)];
  assert.deepEqual(c.codes, a.codes);
  assert.deepEqual(c.scale, a.scale);
  assert.equal(c.loss, a.loss);
  assert.equal(c.damp, a.damp);
});

test('GPU backend, Hessian in 3 parts: LoPRo with H not positive definite falls back to round-to-nearest (the identity in parts) as unsplit', async (t) => {
  const b = await backends(t);
  if (!b) return;
  const { W, absMean } = syntheticLayer(ROWS, COLS, 200, 33);
  const Hneg = new Float64Array(COLS * COLS);
  for (let j = 0; j < COLS; j++) Hneg[j * COLS + j] = -1;
  const cfg = cfgOf({ rank: 2 });
  const [a, c] = [await loproOn(b[0], W, ROWS, COLS, Hneg, absMean, cfg, 1), await loproOn(b[1], W, ROWS, COLS, Hneg, absMean, cfg, 1)];
  assert.equal(c.stageC.choleskyFallback, true);
  assert.deepEqual(c.stored, a.stored);
  assert.deepEqual(c.reconstructed, a.reconstructed);
});

test('GPU backend, Hessian in 3 parts: a non-finite value in the last part is named by its flat index', async (t) => {
  const b = await backends(t);
  if (!b) return;
  const { W, H, absMean } = syntheticLayer(ROWS, COLS, 200, 34);
  const at = 170 * COLS + 11;
  H[at] = Number.NEGATIVE_INFINITY;
  await assert.rejects(
    loproOn(b[1], W, ROWS, COLS, H, absMean, cfgOf({}), 1),
    (e: Error & { code?: string }) => e.code === 'E_NON_FINITE' && e.message.includes(`flat index ${at}`),
  );
});

test('GPU backend with a lowered binding: a weight must bind whole, a Hessian may span up to 4 parts; wider is refused before any work, by name', async (t) => {
  const b = await backends(t);
  if (!b) return;
  const n = b[1].maxSquareCols!;
  // Widest: n binds in 1–4 parts; n + 1 does not (more than 4 parts, or no whole 64-row unit on a 256-byte boundary fits).
  const parts = (w: number) => rowParts(w, w, BINDING).length;
  assert.ok(parts(n) >= 1 && parts(n) <= 4 && (parts(n + 1) > 4 || parts(n + 1) === 0), `widest square ${n}`);
  const s = b[1].session();
  await assert.doesNotReject(s.identity(n), 'the widest square is one the session binds');
  await assert.rejects(s.identity(n + 1), /exceeds what the GPU backend can bind/);
  s.close();
  assert.doesNotThrow(() => assertBackendHolds(b[1], [{ name: 'wide', rows: 8, cols: n }]));
  assert.throws(() => assertBackendHolds(b[1], [{ name: 'model.layers.0.mlp.down_proj', rows: 8, cols: n + 1 }]), /down_proj: its Hessian .* is wider than/);
  assert.throws(() => assertBackendHolds(b[1], [{ name: 'tall', rows: Math.floor(BINDING / 4 / 16) + 1, cols: 16 }]), /tall: its weight/);
});
