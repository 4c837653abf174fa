// GPTQ with the column loop fused into WGSL kernels (quant/gptq_fused.ts) against the float64
// TypeScript core (gptq.ts, golden-tested), on a real WebGPU device: Dawn (the `webgpu` package) over
// SwiftShader, Chromium's Vulkan-on-CPU driver, here and in CI (the same WGSL and Dawn as on a GPU).
// Float32 kernels: codes ≥ 99 % equal, loss within 1e-3, group params within 1e-3, Q exactly the
// dequantized codes. Without an adapter the tests skip, unless LOPRO_REQUIRE_DAWN=1 (CI sets it) —
// then the missing device is a failure, so CI cannot pass by skipping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DawnGpu } from '../../../src/engine/compute/dawn';
import { gptqQuantize, type GptqOptions } from '../../../src/engine/quant/gptq';
import { choleskyInverseUpper } from '../../../src/engine/quant/gptq_linalg';
import { fusedSupports, gptqQuantizeFused } from '../../../src/engine/quant/gptq_fused';
import { gptqBatchWgsl } from '../../../src/engine/quant/gptq_fused_wgsl';
import { syntheticLayer } from '../quant/synthetic';
import { testDawn as device } from '../dawn_device';

const chol = async (h: Float64Array, n: number) => choleskyInverseUpper(h, n);

/** Measured agreement of the last agree() call (for the mse cases' diagnostics). */
let lastAgreement = '';

/**
 * codes ≥ minCodes equal, loss within 1e-3, scales within 1e-3 — all of them, or (clip mse, where a
 * near-tie of the shrink search may go the other way: one step is ~1e-2) ≥ minScales of them.
 */
function agree(ref: { codes: Uint8Array; loss: number; scale: Float32Array }, got: { codes: Uint8Array; loss: number; scale: Float32Array }, minCodes = 0.99, minScales = 1) {
  let same = 0;
  for (let i = 0; i < ref.codes.length; i++) if (ref.codes[i] === got.codes[i]) same++;
  assert.ok(same / ref.codes.length >= minCodes, `codes agree ${same / ref.codes.length}`);
  assert.ok(Math.abs(got.loss - ref.loss) / ref.loss < 1e-3, `loss ${got.loss} vs ${ref.loss}`);
  let sd = 0, close = 0;
  for (let i = 0; i < ref.scale.length; i++) {
    const d = Math.abs(got.scale[i] - ref.scale[i]) / ref.scale[i];
    if (d < 1e-3) close++;
    else sd = Math.max(sd, d);
  }
  if (minScales === 1) assert.ok(sd === 0, `scale rel diff ${sd}`);
  else assert.ok(close / ref.scale.length >= minScales, `scales within 1e-3: ${close / ref.scale.length} (others up to ${sd})`);
  lastAgreement = `codes ${same}/${ref.codes.length}, loss rel. diff ${(Math.abs(got.loss - ref.loss) / ref.loss).toExponential(1)}, scales within 1e-3 ${close}/${ref.scale.length}`;
}

/**
 * No column may lose its codes: ≥ 90 % of the rows agree in every column (float32 flips are scattered;
 * a code word dropped at a batch boundary is a whole column, which the overall ≥ 99 % would not see).
 */
function everyColumn(ref: { codes: Uint8Array }, got: { codes: Uint8Array }, rows: number, cols: number) {
  let worst = 1, at = -1;
  for (let c = 0; c < cols; c++) {
    let same = 0;
    for (let r = 0; r < rows; r++) if (ref.codes[r * cols + c] === got.codes[r * cols + c]) same++;
    if (same / rows < worst) [worst, at] = [same / rows, c];
  }
  assert.ok(worst >= 0.9, `codes of column ${at} agree in ${worst} of the rows`);
}

// clip mse: the device's float32 shrink search may break a near-tie of two candidates differently from
// the reference's float64 one (quant/quantize_wgsl.ts's header: 0.009 % of the fits on random rows), and
// W itself differs by float32 rounding after the lazy updates. Measured on SwiftShader, both Hinv sources:
// every code equal and every scale within 1e-3 in the four mse cases below (loss rel. diff ≤ 2.5e-7), so the
// minmax cases' codes threshold holds; 2 % of the groups may still differ by a shrink step.
const MSE_MIN_CODES = 0.99;
const MSE_MIN_SCALES = 0.98;

/** label, rows, cols, options; hooksOnly: not with the Dawn Cholesky (30–50 s for 1100 columns on SwiftShader; the batch kernel does not care where Hinv came from). */
const cases: [string, number, number, GptqOptions, { hooksOnly?: boolean }?][] = [
  ['per-row params, W3', 48, 256, { bits: 3, groupSize: -1, blockSize: 128 }],
  ['groups 64 in batches of 128, W2, partial last batch (300 cols)', 40, 300, { bits: 2, groupSize: 64, blockSize: 128 }],
  ['groups = batch = 32, sym W4', 40, 160, { bits: 4, groupSize: 32, blockSize: 32, sym: true }],
  ['groups of 96 across batches of 64 (neither divides), W2', 33, 288, { bits: 2, groupSize: 96, blockSize: 64 }],
  ['static groups with act-order, W3', 24, 192, { bits: 3, groupSize: 64, blockSize: 64, staticGroups: true, actOrder: true }],
  ['batch of 30 (codes words straddle batches), 70 rows (a partial update tile), W2', 70, 150, { bits: 2, groupSize: -1, blockSize: 30 }],
  // clip mse: dynamic groups fitted in the batch kernel (quantize_wgsl.ts findParamsWgsl); −1: on the host.
  ['clip mse, groups 128, W2', 40, 256, { bits: 2, groupSize: 128, blockSize: 128, clip: 'mse' }],
  ['clip mse, groups 64 across batches of 96, sym W3', 33, 288, { bits: 3, groupSize: 64, blockSize: 96, clip: 'mse', sym: true }],
  ['clip mse, per-row params (groupSize −1), W2', 48, 256, { bits: 2, groupSize: -1, blockSize: 128, clip: 'mse' }],
  // Batches wider than FUSED_MAX_BLOCK = 256: the row slices live in the storage scratch buffer.
  ['batch of 512 (storage row slices), groups 128, W2', 40, 700, { bits: 2, groupSize: 128, blockSize: 512 }],
  ['batch of 1000 (storage row slices), groups 128 with clip mse, W3', 24, 1100, { bits: 3, groupSize: 128, blockSize: 1000, clip: 'mse' }, { hooksOnly: true }],
  // 1000 = 4·250 keeps the code words inside batches; 1001 makes them straddle the batch boundaries.
  ['batch of 1001 (storage row slices, code words straddle batches), per-row params, W2', 24, 1100, { bits: 2, groupSize: -1, blockSize: 1001 }, { hooksOnly: true }],
];

for (const hinvFrom of ['dawn', 'hooks'] as const) for (const [label, rows, cols, opts, only] of cases) {
  if (only?.hooksOnly && hinvFrom === 'dawn') continue;
  test(`fused GPTQ kernels (Hinv from ${hinvFrom === 'dawn' ? 'the Dawn Cholesky' : 'the float64 hook'}) ≈ TypeScript GPTQ: ${label}`, async (t) => {
    const gpu = await device(t);
    if (!gpu) return;
    const { W, H } = syntheticLayer(rows, cols, 600, rows + cols);
    assert.ok(fusedSupports(opts, rows, cols, gpu.maxBindingBytes));
    const ref = gptqQuantize(W, rows, cols, H, opts);
    const got = await gptqQuantizeFused(gpu, W, rows, cols, H, { ...opts, hinvFrom, choleskyInverseUpperAsync: hinvFrom === 'hooks' ? chol : async () => assert.fail('hook called') });
    if (opts.clip === 'mse') {
      agree(ref, got, MSE_MIN_CODES, MSE_MIN_SCALES);
      t.diagnostic(lastAgreement);
    } else agree(ref, got);
    everyColumn(ref, got, rows, cols);
    assert.deepEqual(Array.from(got.gIdx), Array.from(ref.gIdx));
    assert.deepEqual(Array.from(got.perm), Array.from(ref.perm));
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
      const gi = got.gIdx[c], s = got.scale[r * got.groups + gi], z = got.zero[r * got.groups + gi];
      assert.equal(got.Q[r * cols + c], Math.fround(s * (got.codes[r * cols + c] - z)));
    }
  });
}

test('fused GPTQ: caller permutation and dead columns as the TypeScript core; Hinv given as float32', async (t) => {
  const gpu = await device(t);
  if (!gpu) return;
  const rows = 32, cols = 192;
  const { W, H } = syntheticLayer(rows, cols, 500, 77);
  for (const j of [5, 100]) for (let k = 0; k < cols; k++) H[j * cols + k] = H[k * cols + j] = 0;
  const perm = Int32Array.from({ length: cols }, (_, k) => (k * 67) % cols);
  const opts: GptqOptions = { bits: 2, groupSize: 64, blockSize: 64, perm };
  const ref = gptqQuantize(W, rows, cols, H, opts);
  let f32Calls = 0;
  const got = await gptqQuantizeFused(gpu, W, rows, cols, H, {
    ...opts,
    hinvFrom: 'hooks',
    choleskyInverseUpperAsync: async () => assert.fail('the float32 hook is preferred'),
    choleskyInverseUpperF32: async (h, n) => (f32Calls++, Float32Array.from(choleskyInverseUpper(h, n))),
  });
  assert.equal(f32Calls, 1);
  assert.equal(got.deadColumns, 2);
  for (const j of [5, 100]) for (let r = 0; r < rows; r++) assert.equal(got.Q[r * cols + j], ref.Q[r * cols + j]);
  agree(ref, got);
  // dequantized: false (LoPRo reconstructs from the codes): the same codes and params, no Q.
  const noQ = await gptqQuantizeFused(gpu, W, rows, cols, H, { ...opts, hinvFrom: 'hooks', choleskyInverseUpperAsync: chol, dequantized: false });
  assert.equal(noQ.Q.length, 0);
  assert.deepEqual(noQ.codes, got.codes);
  assert.deepEqual(noQ.scale, got.scale);
  // f32Inputs (LoPRo's pool-made float32 copies): used as W and H, same result; wrong lengths are refused.
  const f32 = await gptqQuantizeFused(gpu, W, rows, cols, H, { ...opts, hinvFrom: 'hooks', choleskyInverseUpperAsync: chol, f32Inputs: { W: Float32Array.from(W), H: Float32Array.from(H) } });
  assert.deepEqual(f32.codes, got.codes);
  const poisoned = { W: Float32Array.from(W).fill(0), H: Float32Array.from(H) };
  const zeroW = await gptqQuantizeFused(gpu, W, rows, cols, H, { ...opts, hinvFrom: 'hooks', choleskyInverseUpperAsync: chol, f32Inputs: poisoned });
  assert.notDeepEqual(zeroW.codes, got.codes, 'the given float32 W is what gets quantized');
  await assert.rejects(gptqQuantizeFused(gpu, W, rows, cols, H, { ...opts, choleskyInverseUpperAsync: chol, f32Inputs: { W: new Float32Array(3), H: Float32Array.from(H) } }), /f32Inputs/);
});

test('fused GPTQ: a failed Cholesky falls back to RTN with a warning; only layers past the binding limit are refused', async (t) => {
  const gpu = await device(t);
  if (!gpu) return;
  assert.equal(fusedSupports({ bits: 2, clip: 'mse' }, 16, 256), true);
  assert.equal(fusedSupports({ bits: 2, blockSize: 512 }, 16, 1024), true);
  assert.equal(fusedSupports({ bits: 2, blockSize: 100_000 }, 16, 1024), true);
  assert.equal(fusedSupports({ bits: 2 }, 4096, 4096, 32 * 2 ** 20), false); // W is 64 MiB
  const { W, H } = syntheticLayer(16, 64, 300, 5);
  const tiny = { maxBindingBytes: 1024 } as unknown as DawnGpu; // W is 4 KiB: refused before the device is used
  await assert.rejects(gptqQuantizeFused(tiny, W, 16, 64, H, { bits: 2, clip: 'mse', choleskyInverseUpperAsync: chol }), /do not implement/);
  const warnings: string[] = [];
  const npd = async (): Promise<Float64Array> => {
    const e = new Error('pivot 3 is -1');
    e.name = 'NotPositiveDefiniteError';
    throw e;
  };
  const got = await gptqQuantizeFused(gpu, W, 16, 64, H, { bits: 2, groupSize: 32, blockSize: 32, hinvFrom: 'hooks', choleskyInverseUpperAsync: npd, onWarning: (m) => warnings.push(m) });
  assert.equal(got.choleskyFallback, true);
  assert.match(warnings[0], /not positive definite/);
  const rtn = gptqQuantize(W, 16, 64, H, { bits: 2, groupSize: 32, blockSize: 32, choleskyInverseUpper: () => { const e = new Error('x'); e.name = 'NotPositiveDefiniteError'; throw e; }, onWarning: () => {} });
  agree(rtn, got);
  // The Dawn Cholesky's own failure takes the same path: a negative diagonal survives 1 % damping.
  const Hbad = Float64Array.from(H);
  Hbad[10 * 64 + 10] = -1e3;
  const warned: string[] = [];
  const viaDawn = await gptqQuantizeFused(gpu, W, 16, 64, Hbad, { bits: 2, groupSize: 32, blockSize: 32, onWarning: (m) => warned.push(m) });
  assert.equal(viaDawn.choleskyFallback, true);
  assert.match(warned[0], /not positive definite/);
  agree(rtn, viaDawn);
});

test('fused GPTQ: a WGSL error is reported with its line, not swallowed', async (t) => {
  const gpu = await device(t);
  if (!gpu) return;
  const broken = gptqBatchWgsl({ B: 32, maxq: 3, sym: false, dynamic: true, G: 32 }).replace('let q = clamp(', 'let q = clampx(');
  await assert.rejects(gpu.pipeline(broken), /WGSL compilation failed: \d+:\d+/);
});
