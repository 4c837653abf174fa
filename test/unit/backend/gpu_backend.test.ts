// The GPU backend (WGSL on the engine's own Dawn device; SwiftShader here and in CI, LOPRO_REQUIRE_DAWN=1
// makes a missing device a failure) against the float64 twins, for every configuration the panel offers:
// GPTQ and LoPRo with clip mse, act-order, static groups, per-row params (groupSize −1), batches wider than
// 256; lopro_v; RTN. Float32 kernels, so what must hold:
//  - the decoder: Ŵ from the device = the host's dequantizeLoPRo / dequantizeStored of the same stored bits
//    (to float32 rounding) — the stored bits are what a checkpoint holds;
//  - the decisions: α bits, the rotation plan, the permutation (≥ 97 %), group indices;
//  - codes ≥ 97 % equal to the float64 driver (every column ≥ 90 %: a lost code word is a whole column), the
//    proxy loss within 2 % (lopro_v: 3 %, its k-means starts from float32 values);
//  - the proxy losses computed on the device = the float64 kernel to 1e-4;
//  - bad input: NaN/±Inf (also 1e39, +Inf as float32) name the flat index; H not positive definite falls back
//    to round-to-nearest with a note.
import { test } from 'node:test';
import { ErrorCode } from '../../../src/protocol/messages';
import { ProtocolError } from '../../../src/protocol/rpc';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import type { GptqOptions } from '../../../src/engine/quant/gptq';
import { gptqQuantize_ref } from '../../../src/engine/quant/gptq_ref';
import { rtnQuantize_ref } from '../../../src/engine/quant/rtn_ref';
import { quantizeLayerLoPRo_ref } from '../../../src/engine/quant/lopro_ref';
import { dequantizeLoPRo, decodeLowRank } from '../../../src/engine/quant/lopro_dequant';
import { proxyLoss } from '../../../src/engine/quant/gptq_kernels';
import { choleskyInverseUpper } from '../../../src/engine/quant/gptq_linalg';
import { lowRankWeight } from '../../../src/engine/quant/r1svd';
import { rotateRowsInPlace } from '../../../src/engine/quant/rotation';
import { assertBackendHolds, quantizeLayer } from '../../../src/engine/run/quantize_layer';
import { gptqBatchWgsl } from '../../../src/engine/backend/gpu/gptq_wgsl';
import { dequantizeStored } from '../../../src/engine/run/stored';
import { syntheticLayer } from '../quant/synthetic';
import { cpuBackend, gpuBackend, gptqOn, loproOn, rtnOn } from './backends';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
const maxAbs = (a: ArrayLike<number>) => maxAbsDiff(a, new Float64Array(a.length));

function sameFraction(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

/** ≥ 90 % of the rows agree in every column (a code word dropped at a batch boundary is a whole column). */
function everyColumn(ref: ArrayLike<number>, got: ArrayLike<number>, rows: number, cols: number): void {
  let worst = 1,
    at = -1;
  for (let c = 0; c < cols; c++) {
    let same = 0;
    for (let r = 0; r < rows; r++) if (ref[r * cols + c] === got[r * cols + c]) same++;
    if (same / rows < worst) [worst, at] = [same / rows, c];
  }
  assert.ok(worst >= 0.9, `codes of column ${at} agree in ${worst} of the rows`);
}

// GPTQ: the Cholesky, the damping and dead inputs, act-order's gathers, the group params and the fused loop
// on the device. Measured on SwiftShader: every code equal in every case below (mse included), loss rel. diff
// ≤ 1.3e-7; LoPRo's cases likewise (proxy loss ≤ 3.1e-8). The thresholds leave room for real layers, whose
// float32 sums over thousands of columns do move codes at rounding boundaries.
const gptqCases: [string, number, number, GptqOptions][] = [
  ['per-row params, W3', 48, 256, { bits: 3, groupSize: -1, blockSize: 128 }],
  ['groups 64 in batches of 128, W2, partial last batch (300 cols)', 40, 300, { bits: 2, groupSize: 64, blockSize: 128 }],
  ['groups = batch = 32, sym W4', 40, 160, { bits: 4, groupSize: 32, blockSize: 32, sym: true }],
  ['groups of 96 across batches of 64 (neither divides), W2', 33, 288, { bits: 2, groupSize: 96, blockSize: 64 }],
  ['static groups with act-order, W3', 24, 192, { bits: 3, groupSize: 64, blockSize: 64, staticGroups: true, actOrder: true }],
  ['act-order, groups of 32, W2', 36, 160, { bits: 2, groupSize: 32, blockSize: 64, actOrder: true }],
  ['batch of 30 (code words straddle batches), 70 rows, W2', 70, 150, { bits: 2, groupSize: -1, blockSize: 30 }],
  ['clip mse, groups 128, W2', 40, 256, { bits: 2, groupSize: 128, blockSize: 128, clip: 'mse' }],
  ['clip mse, groups 64 across batches of 96, sym W3', 33, 288, { bits: 3, groupSize: 64, blockSize: 96, clip: 'mse', sym: true }],
  ['clip mse, per-row params, act-order, W2', 48, 256, { bits: 2, groupSize: -1, blockSize: 128, clip: 'mse', actOrder: true }],
  ['batch of 512 (row slices in storage), groups 128, W2', 40, 700, { bits: 2, groupSize: 128, blockSize: 512 }],
];

for (const [label, rows, cols, opts] of gptqCases)
  test(`GPU backend GPTQ ≈ gptqQuantize_ref: ${label}`, async (t) => {
    const gpu = await gpuBackend(t);
    if (!gpu) return;
    const { W, H } = syntheticLayer(rows, cols, 600, rows + cols);
    const ref = gptqQuantize_ref(W, rows, cols, H, opts);
    const got = await gptqOn(gpu, W, rows, cols, H, opts);
    t.diagnostic(`codes equal ${sameFraction(got.codes, ref.codes).toFixed(4)}, loss rel. diff ${(Math.abs(got.loss - ref.loss) / ref.loss).toExponential(1)}`);
    assert.ok(sameFraction(got.codes, ref.codes) >= 0.99, `codes agree ${sameFraction(got.codes, ref.codes)}`);
    everyColumn(ref.codes, got.codes, rows, cols);
    assert.ok(Math.abs(got.loss - ref.loss) / ref.loss < 1e-3, `loss ${got.loss} vs ${ref.loss}`);
    assert.deepEqual(Array.from(got.gIdx), Array.from(ref.gIdx));
    assert.deepEqual(Array.from(got.perm), Array.from(ref.perm));
    assert.ok(Math.abs(got.damp - ref.damp) <= 1e-6 * ref.damp, `damp ${got.damp} vs ${ref.damp}`);
  });

test('GPU backend GPTQ column loop: a batch of 1001 (code words straddle the batches in storage row slices) = the CPU loop on the same Hinv', async (t) => {
  const gpu = await gpuBackend(t);
  if (!gpu) return;
  const rows = 24,
    cols = 1100;
  const { W, H } = syntheticLayer(rows, cols, 1200, 7);
  for (let i = 0; i < cols; i++) H[i * cols + i] += 0.01 * H[i * cols + i];
  const U = choleskyInverseUpper(H, cols); // from the host: the Dawn Cholesky of 1100 columns takes 30–50 s on SwiftShader
  const order = Int32Array.from({ length: cols }, (_, k) => k);
  const spec = {
    blockSize: 1001,
    maxq: 3,
    sym: false,
    clip: 'minmax' as const,
    groupSize: 128,
    dynamic: true,
    groups: Math.ceil(cols / 128),
    slot: Int32Array.from(order, (k) => Math.floor(k / 128)),
    order,
  };
  const run = async (b: typeof gpu | ReturnType<typeof cpuBackend>) => {
    const s = b.session();
    try {
      return await s.gptqColumnLoop(await s.upload(Float64Array.from(W), rows, cols, 'W', 't'), await s.upload(U, cols, cols, 'Hinv', 't'), spec);
    } finally {
      s.close();
    }
  };
  const [ref, got] = [await run(cpuBackend(1)), await run(gpu)];
  assert.ok(sameFraction(got.codes, ref.codes) >= 0.99, `codes agree ${sameFraction(got.codes, ref.codes)}`);
  everyColumn(ref.codes, got.codes, rows, cols);
  assert.ok(Math.abs(got.loss - ref.loss) / ref.loss < 1e-3, `loss ${got.loss} vs ${ref.loss}`);
});

test('GPU backend: a WGSL error is reported with its line, not swallowed', async (t) => {
  const gpu = await gpuBackend(t);
  if (!gpu) return;
  const broken = gptqBatchWgsl({ B: 32, maxq: 3, sym: false, dynamic: true, G: 32 }).replace('let q = clamp(', 'let q = clampx(');
  await assert.rejects(gpu.gpu.pipeline(broken), /WGSL compilation failed: \d+:\d+/);
});

test("GPU backend: a model whose weight exceeds the device's largest binding, or whose Hessian exceeds a few, is refused before any work, naming the layer", async (t) => {
  const gpu = await gpuBackend(t);
  if (!gpu) return;
  const limit = gpu.gpu.maxBindingBytes;
  assert.equal(gpu.maxMatrixBytes, limit);
  const n = gpu.maxSquareCols; // the widest input whose n×n float32 Hessian still binds (in parts: gpu_split.test.ts)
  assert.ok(n >= Math.floor(Math.sqrt(limit / 4)), `at least a Hessian of one binding: ${n}`);
  assert.doesNotThrow(() => assertBackendHolds(gpu, [{ name: 'fits', rows: 8, cols: n }]));
  assert.throws(
    () =>
      assertBackendHolds(gpu, [
        { name: 'fits', rows: 8, cols: n },
        { name: 'model.layers.0.mlp.down_proj', rows: 8, cols: n + 1 },
      ]),
    (e: unknown) => e instanceof ProtocolError && e.code === ErrorCode.OutOfMemory && e.where === 'model.layers.0.mlp.down_proj' && /its Hessian/.test(e.message),
  );
  assert.throws(() => assertBackendHolds(gpu, [{ name: 'tall', rows: Math.floor(limit / 4 / 16) + 1, cols: 16 }]), /tall: its weight/);
  assert.doesNotThrow(
    () => assertBackendHolds({ kind: 'cpu', label: 'cpu', session: () => undefined as never, close: async () => {} }, [{ name: 'huge', rows: 1e5, cols: 1e5 }]),
    'no limit on the CPU',
  );
});

test('GPU backend GPTQ: dead inputs as the reference; H not positive definite → round-to-nearest with a warning', async (t) => {
  const gpu = await gpuBackend(t);
  if (!gpu) return;
  const rows = 16,
    cols = 64;
  const { W, H } = syntheticLayer(rows, cols, 300, 5);
  const Hd = Float64Array.from(H);
  for (const j of [5, 40]) for (let i = 0; i < cols; i++) Hd[i * cols + j] = Hd[j * cols + i] = 0;
  const ref = gptqQuantize_ref(W, rows, cols, Hd, { bits: 2, groupSize: 32, actOrder: true });
  const got = await gptqOn(gpu, W, rows, cols, Hd, { bits: 2, groupSize: 32, actOrder: true });
  assert.equal(got.deadColumns, 2);
  assert.deepEqual(Array.from(got.perm), Array.from(ref.perm));
  assert.ok(sameFraction(got.codes, ref.codes) >= 0.99);
  const Hbad = Float64Array.from(H);
  Hbad[10 * cols + 10] = -1e3; // a negative diagonal survives 1 % damping
  const warnings: string[] = [];
  const npd = await gptqOn(gpu, W, rows, cols, Hbad, { bits: 2, groupSize: 32, blockSize: 32, onWarning: (m) => warnings.push(m) });
  assert.equal(npd.choleskyFallback, true);
  assert.match(warnings[0], /not positive definite.*round-to-nearest/);
  const rtn = rtnQuantize_ref(W, rows, cols, { bits: 2, groupSize: 32, sym: false });
  assert.ok(sameFraction(npd.codes, rtn.codes) >= 0.99, 'Hinv = I is round-to-nearest');
});

for (const [label, o] of [
  ['min-max', { bits: 2, groupSize: 64, sym: false }],
  ['min-max sym per row', { bits: 3, groupSize: -1, sym: true }],
  ['mse', { bits: 2, groupSize: 48, sym: false, clip: 'mse' }],
] as const)
  test(`GPU backend RTN = rtnQuantize_ref: ${label}`, async (t) => {
    const gpu = await gpuBackend(t);
    if (!gpu) return;
    const rows = 37,
      cols = 200;
    const { W } = syntheticLayer(rows, cols, 300, 3);
    const ref = rtnQuantize_ref(W, rows, cols, o);
    const got = await rtnOn(gpu, W, rows, cols, o);
    if (!('clip' in o)) {
      // Min-max is deterministic float32 arithmetic with a correctly rounded division: bit-exact.
      assert.deepEqual(got.codes, ref.codes);
      assert.deepEqual(got.scale, ref.scale);
      assert.deepEqual(got.zero, ref.zero);
    } else assert.ok(sameFraction(got.codes, ref.codes) >= 0.999, `codes ${sameFraction(got.codes, ref.codes)}`); // measured: all equal
  });

const cfgOf = (o: Partial<LayerConfig>): LayerConfig => ({
  ...DEFAULT_LAYER_CONFIG,
  rank: 4,
  powerIters: 2,
  salientBlock: 64,
  hadamardBlock: 32,
  groupSize: 32,
  blockSize: 64,
  ...o,
});

const loproCases: [string, number, number, Partial<LayerConfig>][] = [
  ['partial rotation (head 64, blocks of 32), rank 4, W2', 48, 192, {}],
  ['full rotation with blocks of 64, rank 6, W3, sym', 40, 256, { rotation: 'full', hadamardBlock: 64, rank: 6, bits: 3, sym: true }],
  ['no rotation, rank 0, W4, groups across batches (48 in 64)', 36, 160, { rotation: 'none', rank: 0, bits: 4, groupSize: 48 }],
  ['(n − b_I) not a multiple of b_H: b_H 64 → 32, 70 rows', 70, 160, { hadamardBlock: 64 }],
  [
    "the authors' levers: rank chosen per layer, α clampRange β 2.4, log-Hessian score",
    48,
    192,
    { rank: -1, beta: 2.4, alphaNorm: 'clampRange', columnScore: 'logHessian', powerIters: 8 },
  ],
  ['clip mse', 48, 192, { clip: 'mse' }],
  ['act-order on R′', 48, 192, { actOrder: true }],
  ['static groups with act-order', 48, 192, { actOrder: true, staticGroups: true }],
  ['per-row params (groupSize −1)', 48, 192, { groupSize: -1 }],
  ['lazy batch of 300 (row slices in storage)', 24, 320, { blockSize: 300, groupSize: 64 }],
];

for (const [label, rows, cols, over] of loproCases)
  test(`GPU backend LoPRo ≈ quantizeLayerLoPRo_ref: ${label}`, async (t) => {
    const gpu = await gpuBackend(t);
    if (!gpu) return;
    const cfg = cfgOf(over);
    const { W, H, absMean } = syntheticLayer(rows, cols, 2 * cols, 11 + rows);
    const ref = quantizeLayerLoPRo_ref(W, rows, cols, H, absMean, cfg, 5, { name: 'L' });
    const got = await loproOn(gpu, W, rows, cols, H, absMean, cfg, 5, { name: 'L' });
    const s = got.stored;

    // The decoder: device Ŵ = the host's dequantizeLoPRo of the same stored bits.
    const host = dequantizeLoPRo(s);
    assert.ok(maxAbsDiff(got.reconstructed, host) <= 2e-6 * maxAbs(host) + 1e-7, `Ŵ vs dequantizeLoPRo: ${maxAbsDiff(got.reconstructed, host)}`);

    // The decisions.
    assert.deepEqual(s.alphaBits, ref.stored.alphaBits);
    assert.equal(s.rank, ref.stored.rank);
    assert.equal(s.hadamardBlock, ref.stored.hadamardBlock);
    assert.equal(s.salientBlock, ref.stored.salientBlock);
    assert.deepEqual(
      got.notes.filter((n) => n.includes('b_H')),
      ref.notes.filter((n) => n.includes('b_H')),
    );
    assert.ok(sameFraction(s.perm, ref.stored.perm) >= 0.97, `perm agrees ${sameFraction(s.perm, ref.stored.perm)}`);
    assert.equal(!!s.gIdx, !!ref.stored.gIdx);
    assert.ok(sameFraction(s.codes!, ref.stored.codes!) >= 0.97, `codes agree ${sameFraction(s.codes!, ref.stored.codes!)}`);
    const lossGot = proxyLoss(W, got.reconstructed, H, rows, cols),
      lossRef = proxyLoss(W, ref.reconstructed, H, rows, cols);
    t.diagnostic(
      `codes equal ${sameFraction(s.codes!, ref.stored.codes!).toFixed(4)}, perm ${sameFraction(s.perm, ref.stored.perm).toFixed(4)}, proxy loss rel. diff ${(Math.abs(lossGot - lossRef) / lossRef).toExponential(1)}`,
    );
    assert.ok(Math.abs(lossGot - lossRef) / lossRef < 0.02, `proxy loss ${lossGot} vs ${lossRef}`);
    if (s.rank > 0) assert.ok(Math.abs(got.factors!.energy - ref.factors!.energy) < 1e-3, `energy ${got.factors!.energy} vs ${ref.factors!.energy}`);

    // The rows the layer view reads: R = W − W_r (the stored factors) and R′ = R_p·Q, recomputed on the host.
    const { step, R: sR, Rt: sRt } = got.sampled;
    const f = decodeLowRank(s);
    const Wr = s.rank > 0 ? lowRankWeight(f.U, f.sigma, f.V, rows, cols, s.rank, f.alpha) : new Float64Array(rows * cols);
    const rs = Math.ceil(rows / step);
    const R = new Float64Array(rs * cols),
      Rt = new Float64Array(rs * cols);
    for (let r = 0; r < rs; r++) for (let j = 0; j < cols; j++) R[r * cols + j] = W[r * step * cols + j] - Wr[r * step * cols + j];
    for (let r = 0; r < rs; r++) for (let k = 0; k < cols; k++) Rt[r * cols + k] = R[r * cols + s.perm[k]];
    rotateRowsInPlace(Rt, rs, got.plan);
    assert.ok(maxAbsDiff(sR, R) <= 1e-5 * maxAbs(R), `sampled R ${maxAbsDiff(sR, R)}`);
    assert.ok(maxAbsDiff(sRt, Rt) <= 1e-5 * maxAbs(Rt), `sampled R′ ${maxAbsDiff(sRt, Rt)}`);
  });

// lopro_v: k-means starts from float32 values, so codebooks and codes may drift from the float64 path:
// the loss must match within 3 %, most codes agree, and the decoder must equal dequantizeLoPRo exactly to float32.
const vqCases: [string, number, number, Partial<LayerConfig>][] = [
  ['d = 2, W2 (K = 16), groups of 32 in batches of 64', 48, 192, { method: 'lopro_v', vqDim: 2 }],
  ['d = 2, groups of 128 spanning batches of 64, W3 vqBits 2', 40, 256, { method: 'lopro_v', vqDim: 2, groupSize: 128, bits: 3, vqBits: 2 }],
  ['d = 1, one codebook per layer (groupSize −1), full rotation', 32, 128, { method: 'lopro_v', vqDim: 1, groupSize: -1, rotation: 'full', hadamardBlock: 64 }],
];
for (const [label, rows, cols, over] of vqCases)
  test(`GPU backend lopro_v ≈ quantizeLayerLoPRo_ref: ${label}`, async (t) => {
    const gpu = await gpuBackend(t);
    if (!gpu) return;
    const cfg = cfgOf(over);
    const { W, H, absMean } = syntheticLayer(rows, cols, 2 * cols, 31 + rows);
    const ref = quantizeLayerLoPRo_ref(W, rows, cols, H, absMean, cfg, 5, { name: 'V' });
    const got = await loproOn(gpu, W, rows, cols, H, absMean, cfg, 5, { name: 'V' });
    const s = got.stored;
    assert.equal(s.method, 'lopro_v');
    assert.equal(s.bits, ref.stored.bits);
    assert.equal(s.groups, ref.stored.groups);
    assert.equal(s.codebookBits!.length, ref.stored.codebookBits!.length);
    const host = dequantizeLoPRo(s);
    assert.ok(maxAbsDiff(got.reconstructed, host) <= 2e-6 * maxAbs(host) + 1e-7, `Ŵ vs dequantizeLoPRo: ${maxAbsDiff(got.reconstructed, host)}`);
    assert.ok(sameFraction(s.vqCodes!, ref.stored.vqCodes!) >= 0.8, `codes agree ${sameFraction(s.vqCodes!, ref.stored.vqCodes!)}`);
    const lossGot = proxyLoss(W, got.reconstructed, H, rows, cols),
      lossRef = proxyLoss(W, ref.reconstructed, H, rows, cols);
    assert.ok(Math.abs(lossGot - lossRef) / lossRef < 0.03, `proxy loss ${lossGot} vs ${lossRef}`);
  });

test("GPU backend LoPRo: a dead input column is zeroed like GPTQ's; float32(H) handed over = H converted on the way up; H not positive definite → RTN with a note", async (t) => {
  const gpu = await gpuBackend(t);
  if (!gpu) return;
  const rows = 24,
    cols = 96,
    cfg = cfgOf({ rotation: 'none', rank: 2 });
  const { W, H, absMean } = syntheticLayer(rows, cols, 200, 3);
  const Hd = H.slice();
  for (let i = 0; i < cols; i++) Hd[i * cols + 7] = Hd[7 * cols + i] = 0;
  const got = await loproOn(gpu, W, rows, cols, Hd, absMean, cfg, 1);
  assert.equal(got.stageC.deadColumns, 1);
  const k = got.stored.perm.indexOf(7); // the dead column's transformed position: its residual quantizes to 0
  for (let i = 0; i < rows; i++) {
    const g = Math.floor(k / got.stored.groupSize);
    assert.equal(got.stored.codes![i * cols + k], got.stored.zeros![i * got.stored.groups + g], `row ${i}: the dead column's code is the zero point`);
  }
  const viaH32 = await loproOn(gpu, W, rows, cols, Hd, absMean, cfg, 1, { H32: Float32Array.from(Hd) });
  assert.deepEqual(viaH32.stored.codes, got.stored.codes);
  assert.deepEqual(viaH32.reconstructed, got.reconstructed);
  const Hneg = new Float64Array(cols * cols);
  for (let j = 0; j < cols; j++) Hneg[j * cols + j] = -1;
  const npd = await loproOn(gpu, W, rows, cols, Hneg, absMean, cfg, 1);
  assert.equal(npd.stageC.choleskyFallback, true);
  assert.ok(npd.notes.some((n) => n.includes('not positive definite')));
  assert.ok(maxAbsDiff(npd.reconstructed, dequantizeLoPRo(npd.stored)) <= 1e-5 * maxAbs(npd.reconstructed));
});

test('GPU backend: NaN in W and ±Inf in H (1e39 is +Inf as float32) are non-finite errors naming the flat index', async (t) => {
  const gpu = await gpuBackend(t);
  if (!gpu) return;
  const rows = 16,
    cols = 96,
    cfg = cfgOf({});
  const { W, H, absMean } = syntheticLayer(rows, cols, 200, 4);
  const Wn = W.slice();
  Wn[5 * cols + 9] = NaN;
  const nonFinite = (index: number, what: string) => (e: Error & { code?: string }) =>
    e.code === 'E_NON_FINITE' && e.message.includes(`flat index ${index}`) && e.message.startsWith(what);
  await assert.rejects(loproOn(gpu, Wn, rows, cols, H, absMean, cfg, 1), nonFinite(5 * cols + 9, 'W'));
  const Hn = H.slice();
  Hn[3 * cols + 4] = Infinity;
  await assert.rejects(loproOn(gpu, W, rows, cols, Hn, absMean, cfg, 1), nonFinite(3 * cols + 4, 'H'));
  const Hbig = H.slice();
  Hbig[0] = 1e39;
  await assert.rejects(loproOn(gpu, W, rows, cols, Hbig, absMean, cfg, 1), nonFinite(0, 'H'));
});

// A whole layer as the pipeline runs it: the stored parts, Ŵ as their decoder gives it, and the report's
// proxy losses and compare baselines computed on the device.
for (const method of ['rtn', 'gptq', 'lopro', 'lopro_v'] as const)
  test(`GPU backend quantizeLayer (${method}): Ŵ = the stored parts' decoder, proxy losses = the float64 kernel, compare baselines`, async (t) => {
    const gpu = await gpuBackend(t);
    if (!gpu) return;
    const rows = 40,
      cols = 192;
    const { W, H, absMean } = syntheticLayer(rows, cols, 400, 21);
    const lc = cfgOf({ method, actOrder: method === 'gptq' });
    const out = await quantizeLayer(gpu, { name: 'model.layers.0.mlp.up_proj', block: 0, module: 'up_proj', rows, cols, W, H, absMean }, lc, { seed: 0, compare: true });
    const host = dequantizeStored(out.stored);
    assert.ok(maxAbsDiff(out.wHat, host) <= 2e-6 * maxAbs(host) + 1e-7, `Ŵ vs the host decoder: ${maxAbsDiff(out.wHat, host)}`);
    const loss = proxyLoss(W, out.wHat, H, rows, cols),
      ref = proxyLoss(W, new Float32Array(rows * cols), H, rows, cols);
    assert.ok(Math.abs(out.report.proxyLoss - loss) <= 1e-4 * loss, `proxy loss ${out.report.proxyLoss} vs ${loss}`);
    assert.ok(Math.abs(out.report.relProxyLoss - loss / ref) <= 1e-4 * (loss / ref));
    const b = out.report.baselines!;
    assert.ok(b.rtn! > 0 && (method === 'rtn' || b.gptq! > 0), JSON.stringify(b));
    if (method === 'lopro') assert.ok(out.report.proxyLoss < b.gptq! && b.gptq! < b.rtn!, JSON.stringify(b));
    // The same layer on the CPU backend: the same method at float32 precision.
    const cpu = await quantizeLayer(cpuBackend(1), { name: 'model.layers.0.mlp.up_proj', block: 0, module: 'up_proj', rows, cols, W, H, absMean }, lc, { seed: 0 });
    assert.ok(Math.abs(cpu.report.proxyLoss - out.report.proxyLoss) / cpu.report.proxyLoss < 0.03, `cpu ${cpu.report.proxyLoss} vs gpu ${out.report.proxyLoss}`);
    assert.equal(cpu.report.baselines, undefined, 'no compare: no baselines');
  });

test('GPU backend quantizeLayer data-free (H = I): the identity never goes through a GEMM; Ŵ and losses as the CPU', async (t) => {
  const gpu = await gpuBackend(t);
  if (!gpu) return;
  const rows = 32,
    cols = 128;
  const { W } = syntheticLayer(rows, cols, 200, 2);
  for (const method of ['rtn', 'lopro'] as const) {
    const lc = cfgOf({ method, rank: 2 });
    const g = await quantizeLayer(gpu, { name: 'w', block: 0, module: 'w', rows, cols, W }, lc, { seed: 1 });
    const c = await quantizeLayer(cpuBackend(1), { name: 'w', block: 0, module: 'w', rows, cols, W }, lc, { seed: 1 });
    assert.ok(Math.abs(g.report.proxyLoss - c.report.proxyLoss) / c.report.proxyLoss < 0.03, `${method}: gpu ${g.report.proxyLoss} cpu ${c.report.proxyLoss}`);
    let d = 0,
      w2 = 0;
    for (let i = 0; i < W.length; i++) {
      d += (W[i] - g.wHat[i]) ** 2;
      w2 += W[i] ** 2;
    }
    assert.ok(Math.abs(g.report.proxyLoss - d) <= 1e-4 * d && Math.abs(g.report.relProxyLoss - d / w2) <= 1e-4 * (d / w2));
  }
});

test('GPU backend: a layer taller than 65535 rows (one workgroup row per matrix row is dispatched in chunks) = the CPU backend', async (t) => {
  const gpu = await gpuBackend(t);
  if (!gpu) return;
  const rows = 70_000,
    cols = 32;
  const { W, H, absMean } = syntheticLayer(rows, cols, 200, 17);
  for (const i of [0, 65534, 65535, 65536, rows - 1]) W[i * cols + 3] = 0.5; // rows on both sides of the chunk edge
  // The rotation kernels (gather + FWHT, and the decoder's dequantize + FWHT + scatter) on every row.
  const lc = cfgOf({ rank: 0, salientBlock: 8, hadamardBlock: 8, groupSize: 16, blockSize: 16 });
  const [g, c] = [await loproOn(gpu, W, rows, cols, H, absMean, lc, 3), await loproOn(cpuBackend(1), W, rows, cols, H, absMean, lc, 3)];
  assert.ok(sameFraction(g.stored.codes!, c.stored.codes!) >= 0.99, `codes ${sameFraction(g.stored.codes!, c.stored.codes!)}`);
  const host = dequantizeLoPRo(g.stored);
  assert.ok(maxAbsDiff(g.reconstructed, host) <= 2e-6 * maxAbs(host) + 1e-7, 'the last rows are rotated and scattered too');
  // The dead-column kernel on every row: an input that never fired is zeroed (no rotation: it stays dead in H′).
  const Hd = H.slice();
  for (let i = 0; i < cols; i++) Hd[i * cols + 5] = Hd[5 * cols + i] = 0;
  const d = await loproOn(gpu, W, rows, cols, Hd, absMean, { ...lc, rotation: 'none' }, 3);
  const k = d.stored.perm.indexOf(5);
  for (const r of [0, 65535, rows - 1])
    assert.equal(d.stored.codes![r * cols + k], d.stored.zeros![r * d.stored.groups + Math.floor(k / 16)], `row ${r}: the dead column quantizes to the zero point`);
});

test('GPU backend: the alternating refinement (A − B, the factors added back, re-quantized rounds) as on the CPU backend', async (t) => {
  const gpu = await gpuBackend(t);
  if (!gpu) return;
  const rows = 48,
    cols = 192;
  const { W, H, absMean } = syntheticLayer(rows, cols, 2 * cols, 23);
  const lc = cfgOf({ rank: 4, refineRounds: 6 });
  const [g, c] = [await loproOn(gpu, W, rows, cols, H, absMean, lc, 3), await loproOn(cpuBackend(1), W, rows, cols, H, absMean, lc, 3)];
  const note = (n: string[]) => n.find((x) => x.startsWith('refinement:'));
  assert.ok(note(g.notes) && note(c.notes), `${g.notes} | ${c.notes}`);
  const [lg, lcpu] = [proxyLoss(W, g.reconstructed, H, rows, cols), proxyLoss(W, c.reconstructed, H, rows, cols)];
  t.diagnostic(`GPU ${note(g.notes)}; CPU ${note(c.notes)}`);
  assert.ok(Math.abs(lg - lcpu) / lcpu < 0.03, `refined loss GPU ${lg} vs CPU ${lcpu}`);
  const plain = await loproOn(gpu, W, rows, cols, H, absMean, { ...lc, refineRounds: 0 }, 3);
  assert.ok(lg <= proxyLoss(W, plain.reconstructed, H, rows, cols) * (1 + 1e-6), 'never worse than the first pass');
});
