// The device-resident LoPRo layer (quant/lopro_dawn.ts: every stage as WGSL on the engine's own Dawn
// device) against the float64 LoPRo of quant/lopro.ts, on a real WebGPU device (SwiftShader here and in
// CI; LOPRO_REQUIRE_DAWN=1 makes a missing device a failure). What must hold:
//  - the decoder: Ŵ from the device = dequantizeLoPRo(stored) on the host, to float32 rounding — the
//    stored bits are what a checkpoint holds, so this is the check that the dequant/FWHT/scatter/low-rank
//    kernels implement the format;
//  - the decisions: α bits identical, importance to float32-sum rounding, the permutation, the rotation
//    plan; codes ≥ 97 % equal to the float64 driver and the proxy loss within 2 % (float32 GPTQ);
//  - the sampled rows of R and R′ the layer view reads: R = W − W_r, R′ = R_p·Q recomputed on the host;
//  - bad input: NaN in W, ±Inf in H → non-finite errors naming the flat index; H not positive definite →
//    the round-to-nearest fallback with its note.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import { quantizeLayerLoPRo } from '../../../src/engine/quant/lopro';
import { dequantizeLoPRo, decodeLowRank } from '../../../src/engine/quant/lopro_dequant';
import { loproDawnSupports, quantizeLayerLoPRoDawn } from '../../../src/engine/quant/lopro_dawn';
import { lowRankWeight } from '../../../src/engine/quant/r1svd';
import { rotateRowsInPlace } from '../../../src/engine/quant/rotation';
import { proxyLoss } from '../../../src/engine/quant/gptq';
import { syntheticLayer } from '../quant/synthetic';
import { testDawn as device } from '../dawn_device';

const cfgOf = (o: Partial<LayerConfig>): LayerConfig => ({ ...DEFAULT_LAYER_CONFIG, rank: 4, powerIters: 2, salientBlock: 64, hadamardBlock: 32, groupSize: 32, blockSize: 64, ...o });

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
const maxAbs = (a: ArrayLike<number>) => maxAbsDiff(a, new Float64Array(a.length));

const cases: [string, number, number, Partial<LayerConfig>][] = [
  ['partial rotation (head 64, blocks of 32), rank 4, W2', 48, 192, {}],
  ['full rotation with blocks of 64, rank 6, W3, sym', 40, 256, { rotation: 'full', hadamardBlock: 64, rank: 6, bits: 3, sym: true }],
  ['no rotation, rank 0, W4, groups across batches (48 in 64)', 36, 160, { rotation: 'none', rank: 0, bits: 4, groupSize: 48 }],
  ['(n − b_I) not a multiple of b_H: b_H 64 → 32, 70 rows', 70, 160, { hadamardBlock: 64 }],
];

for (const [label, rows, cols, over] of cases)
  test(`device-resident LoPRo ≈ quant/lopro.ts: ${label}`, async (t) => {
    const gpu = await device(t);
    if (!gpu) return;
    const cfg = cfgOf(over);
    const { W, H, absMean } = syntheticLayer(rows, cols, 2 * cols, 11 + rows);
    assert.ok(loproDawnSupports(cfg, rows, cols, gpu.maxBindingBytes));
    const ref = quantizeLayerLoPRo(W, rows, cols, H, absMean, cfg, 5, { baselines: false, name: 'L' });
    const got = await quantizeLayerLoPRoDawn(gpu, W, rows, cols, H, absMean, cfg, 5, 'L');
    const s = got.stored;

    // The decoder: device Ŵ = the host's dequantizeLoPRo of the same stored bits.
    const host = dequantizeLoPRo(s);
    assert.ok(maxAbsDiff(got.reconstructed, host) <= 2e-6 * maxAbs(host) + 1e-7, `Ŵ vs dequantizeLoPRo: ${maxAbsDiff(got.reconstructed, host)}`);

    // The decisions.
    assert.deepEqual(s.alphaBits, ref.stored.alphaBits);
    assert.equal(s.rank, ref.stored.rank);
    assert.equal(s.hadamardBlock, ref.stored.hadamardBlock);
    assert.equal(s.salientBlock, ref.stored.salientBlock);
    assert.deepEqual(got.notes.filter((n) => n.includes('b_H')), ref.report.notes.filter((n) => n.includes('b_H')));
    let samePerm = 0;
    for (let k = 0; k < cols; k++) if (s.perm[k] === ref.stored.perm[k]) samePerm++;
    assert.ok(samePerm / cols >= 0.97, `perm agrees at ${samePerm}/${cols}`);
    let sameCodes = 0;
    for (let i = 0; i < s.codes!.length; i++) if (s.codes![i] === ref.stored.codes![i]) sameCodes++;
    assert.ok(sameCodes / s.codes!.length >= 0.97, `codes agree ${sameCodes / s.codes!.length}`);
    const lossGot = proxyLoss(W, got.reconstructed, H, rows, cols), lossRef = proxyLoss(W, ref.reconstructed, H, rows, cols);
    assert.ok(Math.abs(lossGot - lossRef) / lossRef < 0.02, `proxy loss ${lossGot} vs ${lossRef}`);
    if (s.rank > 0) assert.ok(Math.abs(got.factors!.energy - ref.report.lowRankEnergy!) < 1e-3, `energy ${got.factors!.energy} vs ${ref.report.lowRankEnergy}`);

    // The rows the layer view reads: R = W − W_r (the stored factors) and R′ = R_p·Q, from the host.
    const { step, R: sR, Rt: sRt } = got.sampled;
    const f = decodeLowRank(s);
    const Wr = s.rank > 0 ? lowRankWeight(f.U, f.sigma, f.V, rows, cols, s.rank, f.alpha) : new Float64Array(rows * cols);
    const rs = Math.ceil(rows / step);
    const R = new Float64Array(rs * cols), Rt = new Float64Array(rs * cols);
    for (let r = 0; r < rs; r++) for (let j = 0; j < cols; j++) R[r * cols + j] = W[r * step * cols + j] - Wr[r * step * cols + j];
    for (let r = 0; r < rs; r++) for (let k = 0; k < cols; k++) Rt[r * cols + k] = R[r * cols + s.perm[k]];
    rotateRowsInPlace(Rt, rs, got.plan);
    assert.ok(maxAbsDiff(sR, R) <= 1e-5 * maxAbs(R), `sampled R ${maxAbsDiff(sR, R)}`);
    assert.ok(maxAbsDiff(sRt, Rt) <= 1e-5 * maxAbs(Rt), `sampled R′ ${maxAbsDiff(sRt, Rt)}`);
  });

// lopro_v: GPTVQ with W′ and Hinv on the device (quant/gptvq_dawn.ts: lazy updates as the WGSL GEMM, k-means and
// codeword search on the host over the batches read back). k-means starts from the float32 values, so codebooks
// and codes may drift from the float64 path: the loss must match within 3 %, most codes agree, and the decoder
// (unrotate + scatter + low rank on the device) must equal dequantizeLoPRo of the stored codebooks exactly to float32.
const vqCases: [string, number, number, Partial<LayerConfig>][] = [
  ['d = 2, W2 (K = 16), groups of 32 in batches of 64', 48, 192, { method: 'lopro_v', vqDim: 2 }],
  ['d = 2, groups of 128 spanning batches of 64 (the window reads ahead), W3 vqBits 2', 40, 256, { method: 'lopro_v', vqDim: 2, groupSize: 128, bits: 3, vqBits: 2 }],
  ['d = 1, one codebook per layer (groupSize −1), full rotation', 32, 128, { method: 'lopro_v', vqDim: 1, groupSize: -1, rotation: 'full', hadamardBlock: 64 }],
];
for (const [label, rows, cols, over] of vqCases)
  test(`device-resident lopro_v ≈ quant/lopro.ts: ${label}`, async (t) => {
    const gpu = await device(t);
    if (!gpu) return;
    const cfg = cfgOf(over);
    const { W, H, absMean } = syntheticLayer(rows, cols, 2 * cols, 31 + rows);
    assert.ok(loproDawnSupports(cfg, rows, cols, gpu.maxBindingBytes));
    const ref = quantizeLayerLoPRo(W, rows, cols, H, absMean, cfg, 5, { baselines: false, name: 'V' });
    const got = await quantizeLayerLoPRoDawn(gpu, W, rows, cols, H, absMean, cfg, 5, 'V');
    const s = got.stored;
    assert.equal(s.method, 'lopro_v');
    assert.equal(s.bits, ref.stored.bits);
    assert.equal(s.groups, ref.stored.groups);
    assert.equal(s.codebookBits!.length, ref.stored.codebookBits!.length);
    const host = dequantizeLoPRo(s);
    assert.ok(maxAbsDiff(got.reconstructed, host) <= 2e-6 * maxAbs(host) + 1e-7, `Ŵ vs dequantizeLoPRo: ${maxAbsDiff(got.reconstructed, host)}`);
    let same = 0;
    for (let i = 0; i < s.vqCodes!.length; i++) if (s.vqCodes![i] === ref.stored.vqCodes![i]) same++;
    assert.ok(same / s.vqCodes!.length >= 0.8, `codes agree ${same / s.vqCodes!.length}`);
    const lossGot = proxyLoss(W, got.reconstructed, H, rows, cols), lossRef = proxyLoss(W, ref.reconstructed, H, rows, cols);
    assert.ok(Math.abs(lossGot - lossRef) / lossRef < 0.03, `proxy loss ${lossGot} vs ${lossRef}`);
  });

test('device-resident LoPRo: a dead input column (H_jj = 0, no rotation) is zeroed like gptqPrepare; H not positive definite → RTN with a note', async (t) => {
  const gpu = await device(t);
  if (!gpu) return;
  const rows = 24, cols = 96, cfg = cfgOf({ rotation: 'none', rank: 2 });
  const { W, H, absMean } = syntheticLayer(rows, cols, 200, 3);
  const Hd = H.slice();
  for (let i = 0; i < cols; i++) Hd[i * cols + 7] = Hd[7 * cols + i] = 0;
  const ref = quantizeLayerLoPRo(W, rows, cols, Hd, absMean, cfg, 1, { baselines: false });
  const got = await quantizeLayerLoPRoDawn(gpu, W, rows, cols, Hd, absMean, cfg, 1);
  assert.equal(got.gptq.deadColumns, 1);
  const k = got.stored.perm.indexOf(7); // the dead column's transformed position: its residual quantizes to 0
  for (let i = 0; i < rows; i++) {
    const r = got.stored.codes![i * cols + k], g = Math.floor(k / got.stored.groupSize);
    assert.equal(r, got.stored.zeros![i * got.stored.groups + g], `row ${i}: the dead column's code is the zero point`);
  }
  assert.ok(maxAbsDiff(got.reconstructed, dequantizeLoPRo(got.stored)) <= 1e-5 * maxAbs(got.reconstructed));
  assert.ok(Math.abs(got.gptq.damp - 0.01 * Array.from({ length: cols }, (_, j) => (j === 7 ? 1 : Hd[j * cols + j])).reduce((a, v) => a + v, 0) / cols) < 1e-4 * got.gptq.damp);
  assert.equal(ref.stored.perm.indexOf(7), k);
  // float32(H) handed over as is (the pipeline's Hessians) = H converted on the way up: the same layer.
  const viaH32 = await quantizeLayerLoPRoDawn(gpu, W, rows, cols, Hd, absMean, cfg, 1, 'layer', { H32: Float32Array.from(Hd) });
  assert.deepEqual(viaH32.stored.codes, got.stored.codes);
  assert.deepEqual(viaH32.reconstructed, got.reconstructed);

  const Hneg = new Float64Array(cols * cols);
  for (let j = 0; j < cols; j++) Hneg[j * cols + j] = -1;
  const npd = await quantizeLayerLoPRoDawn(gpu, W, rows, cols, Hneg, absMean, cfg, 1);
  assert.equal(npd.gptq.choleskyFallback, true);
  assert.ok(npd.notes.some((n) => n.includes('not positive definite')));
  assert.ok(maxAbsDiff(npd.reconstructed, dequantizeLoPRo(npd.stored)) <= 1e-5 * maxAbs(npd.reconstructed));
});

test('device-resident LoPRo: NaN in W and Inf in H are non-finite errors naming the flat index', async (t) => {
  const gpu = await device(t);
  if (!gpu) return;
  const rows = 16, cols = 96, cfg = cfgOf({});
  const { W, H, absMean } = syntheticLayer(rows, cols, 200, 4);
  const Wn = W.slice();
  Wn[5 * cols + 9] = NaN;
  await assert.rejects(quantizeLayerLoPRoDawn(gpu, Wn, rows, cols, H, absMean, cfg, 1, 'L'), (e: Error & { code?: string }) => e.code === 'E_NON_FINITE' && e.message.includes(`flat index ${5 * cols + 9}`) && e.message.startsWith('W'));
  const Hn = H.slice();
  Hn[3 * cols + 4] = Infinity;
  await assert.rejects(quantizeLayerLoPRoDawn(gpu, W, rows, cols, Hn, absMean, cfg, 1, 'L'), (e: Error & { code?: string }) => e.code === 'E_NON_FINITE' && e.message.includes(`flat index ${3 * cols + 4}`) && e.message.startsWith('H'));
  const Hbig = H.slice();
  Hbig[0] = 1e39; // finite in float64, +Inf as float32
  await assert.rejects(quantizeLayerLoPRoDawn(gpu, W, rows, cols, Hbig, absMean, cfg, 1, 'L'), (e: Error & { code?: string }) => e.code === 'E_NON_FINITE' && e.message.includes('flat index 0'));
  assert.ok(!loproDawnSupports(cfgOf({ actOrder: true }), rows, cols, gpu.maxBindingBytes), 'act-order is the pool driver\'s');
  assert.ok(!loproDawnSupports(cfgOf({ groupSize: -1 }), rows, cols, gpu.maxBindingBytes), 'per-row params are the pool driver\'s');
});
