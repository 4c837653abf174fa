// GPTVQ's kernels on the GPU backend's device (SwiftShader here and in CI; LOPRO_REQUIRE_DAWN=1 makes a missing
// device a failure) against their float64 twins on the same float32-representable inputs:
//  - the FP16 rounding of the codebooks = io/dtypes.ts's encoder, bit for bit (ties, subnormals, overflow);
//  - the codeword search with in-batch feedback (gptvq_wgsl.ts) = quant/gptvq.ts VqStep.run: every code equal,
//    E and the fed-back W to 1e-5 of their scale, the loss to 1e-5 relative;
//  - the k-means (kmeans_wgsl.ts) = quant/kmeans.ts weightedKMeans: on well-separated clusters the same
//    assignment and centres to 1e-5; on degenerate data (fewer distinct points than centres: the zero-total
//    seeding draw and the empty-cluster re-seed, weights that keep the sums exact) the same centres exactly; on
//    random data the inertia within 1e-4 relative (measured here: ≤ 2e-8; float32 sums can move a boundary
//    point, and Lloyd then walks another path);
//  - the whole loop (gptvq_loop.ts) ≈ vqLoopSteps: codes ≥ 97 % equal, loss within 1 % (measured: all codes
//    equal, loss 4e-8 relative; the margin is for devices whose float32 arithmetic contracts differently).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DawnGpu } from '../../../src/engine/backend/gpu/dawn';
import { LayerKernels } from '../../../src/engine/backend/gpu/kernels';
import { F16_ROUND_WGSL } from '../../../src/engine/backend/gpu/kmeans_wgsl';
import { DawnKMeans, seedDraws } from '../../../src/engine/backend/gpu/kmeans_dawn';
import { vqStepWgsl, vqWords } from '../../../src/engine/backend/gpu/gptvq_wgsl';
import { gptvqOnDawn } from '../../../src/engine/backend/gpu/gptvq_loop';
import { rowWindow } from '../../../src/engine/backend/gpu/split';
import { VqStep, vqLoopSteps } from '../../../src/engine/quant/gptvq';
import { weightedKMeans } from '../../../src/engine/quant/kmeans';
import { encodeF16 } from '../../../src/engine/quant/fp8';
import { SeededRng } from '../../../src/engine/quant/lopro_mat';
import { choleskyInverseUpper } from '../../../src/engine/quant/gptq_linalg';
import { syntheticLayer } from '../quant/synthetic';
import { testDawn } from '../dawn_device';

const f32 = (a: ArrayLike<number>) => Float32Array.from(a);
const f64 = (a: ArrayLike<number>) => Float64Array.from(a);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
const maxAbs = (a: ArrayLike<number>) => maxAbsDiff(a, new Float64Array(a.length));

/** U = Hinv's upper factor of a synthetic H (float32 values), and a W. */
function layer(rows: number, cols: number, seed: number): { W: Float32Array; U: Float32Array } {
  const { W, H } = syntheticLayer(rows, cols, 2 * cols, seed);
  for (let j = 0; j < cols; j++) H[j * cols + j] += 0.01 * H[j * cols + j];
  return { W: f32(W), U: f32(choleskyInverseUpper(f64(H), cols)) };
}

/** A codebook of K×d FP16 values around the scale of W. */
function codebook(K: number, d: number, scale: number, rng: SeededRng): Float32Array {
  const cb = new Float64Array(K * d);
  for (let i = 0; i < cb.length; i++) cb[i] = scale * rng.gaussian();
  encodeF16(cb, cb);
  return f32(cb);
}

test('GPTVQ FP16 rounding on the device = encodeF16, bit for bit', async (t) => {
  const gpu = await testDawn(t);
  if (!gpu) return;
  const rng = new SeededRng(5);
  const vals: number[] = [0, -0, 1, -1, 65504, 65519.99, 65520, 1e6, -1e6, 6.1e-5, 6.0e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-9, Infinity, -Infinity];
  // Exact ties between neighbouring FP16 values (even and odd mantissas), normal and subnormal; just above a tie.
  for (const [lo, hi] of [
    [1, 1 + 2 ** -10],
    [1 + 2 ** -10, 1 + 2 ** -9],
    [2 ** -24, 2 ** -23],
    [2 ** -23, 3 * 2 ** -24],
    [65472, 65504],
  ])
    vals.push((lo + hi) / 2, Math.fround((lo + hi) / 2 + 1e-12), -(lo + hi) / 2);
  for (let i = 0; i < 2000; i++) vals.push(Math.fround(rng.gaussian() * 10 ** (rng.next() * 12 - 8)));
  const x = f32(vals);
  const k = new LayerKernels(gpu);
  try {
    const out = k.own(gpu.buffer(4 * x.length));
    const code = `@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
${F16_ROUND_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) { if (g.x < arrayLength(&X)) { Y[g.x] = f16_round(X[g.x]); } }`;
    await k.run(code, [k.f32(x), out], [Math.ceil(x.length / 64), 1, 1]);
    const got = new Float32Array(await gpu.read(out, 4 * x.length));
    const want = new Float32Array(x.length);
    encodeF16(x, want);
    const gb = new Uint32Array(got.buffer),
      wb = new Uint32Array(want.buffer);
    for (let i = 0; i < x.length; i++) assert.equal(gb[i], wb[i], `f16(${x[i]}): ${got[i]} vs ${want[i]}`);
  } finally {
    k.release();
  }
});

/** Runs the search kernel on segments of one batch; returns what it wrote. */
async function vqOnDevice(
  gpu: DawnGpu,
  W: Float32Array,
  U: Float32Array,
  cbs: Float32Array,
  sh: { rows: number; cols: number; d: number; K: number; g: number; B: number; i1: number; i2: number },
  segments: [number, number][],
): Promise<{ W: Float32Array; E: Float32Array; codes: Uint16Array; loss: Float32Array }> {
  const { rows, cols, d, K, g, B, i1, i2 } = sh;
  const k = new LayerKernels(gpu);
  try {
    const wpr = Math.ceil(cols / d / 2);
    const [Wb, Ub, cb] = [k.f32(W), k.f32(U), k.f32(cbs)];
    const [Eb, codesB, lossB] = [k.own(gpu.buffer(4 * rows * B)), k.own(gpu.buffer(4 * rows * wpr)), k.own(gpu.buffer(4 * rows))];
    const pipe = await gpu.pipeline(vqStepWgsl({ D: d, K, g, B }));
    const hw = rowWindow(Ub, cols, i1, i2);
    await gpu.dispatchAll(
      segments.map(([s0, s1]) => ({
        pipe,
        group: gpu.bindGroup(pipe, [k.own(gpu.uniforms(vqWords({ rows, cols, i1, i2, s0, s1, uOff: hw.skip, wpr }))), Wb, hw.binding, Eb, codesB, lossB, cb]),
        size: [Math.ceil(rows / 64), 1, 1] as [number, number, number],
      })),
    );
    const words = new Uint32Array(rows * wpr);
    await gpu.readInto(codesB, words);
    const halves = new Uint16Array(words.buffer),
      V = cols / d;
    const codes = new Uint16Array(rows * V);
    for (let r = 0; r < rows; r++) codes.set(halves.subarray(2 * r * wpr, 2 * r * wpr + V), r * V);
    return {
      W: new Float32Array(await gpu.read(Wb, 4 * rows * cols)),
      E: new Float32Array(await gpu.read(Eb, 4 * rows * B)),
      codes,
      loss: new Float32Array(await gpu.read(lossB, 4 * rows)),
    };
  } finally {
    k.release();
  }
}

for (const [d, K, g, B, i1, cols] of [
  [2, 16, 32, 64, 64, 192], // two codebook groups in the batch: segments [64, 96) and [96, 128)
  [1, 8, 48, 48, 0, 192],
  [4, 256, 64, 64, 64, 192],
  [2, 16, 128, 320, 0, 384], // wider than a private array: the row's batch part read and written in W
])
  test(`GPTVQ codeword search + in-batch feedback on the device = VqStep.run (d ${d}, K ${K}, groups of ${g}, batch [${i1}, ${i1 + B}))`, async (t) => {
    const gpu = await testDawn(t);
    if (!gpu) return;
    const rows = 72,
      i2 = i1 + B;
    const { W, U } = layer(rows, cols, 7 + d);
    const rng = new SeededRng(11 + d);
    const G = cols / g;
    const cbs = new Float32Array(G * K * d);
    const scale = maxAbs(W) / 3;
    for (let gi = 0; gi < G; gi++) cbs.set(codebook(K, d, scale, rng), gi * K * d);
    // The segments: split where a group starts inside the batch.
    const cuts = [i1];
    for (let j = Math.ceil((i1 + 1) / g) * g; j < i2; j += g) cuts.push(j);
    cuts.push(i2);
    const segs = cuts.slice(1).map((s1, i) => [cuts[i], s1] as [number, number]);
    // Twin: VqStep over the same float32 values, codebook by codebook.
    const Wr = f64(W),
      Ur = f64(U),
      Err = new Float64Array(rows * B),
      codes = new Uint16Array((rows * cols) / d),
      Q = new Float32Array(rows * cols);
    const step = new VqStep(rows, cols, d, K);
    const bits = new Uint16Array(G * K * d),
      vals = new Float32Array(G * K * d);
    let loss = 0,
      gi = -1;
    let afterFirst: Float64Array | undefined;
    for (let j = i1; j < i2; j += d) {
      if (Math.floor(j / g) !== gi) {
        gi = Math.floor(j / g);
        if (j !== i1 && !afterFirst) afterFirst = Wr.slice();
        step.setCodebook(f64(cbs.subarray(gi * K * d, (gi + 1) * K * d)), vals, bits, gi);
      }
      loss += step.run(Wr, cols, 0, Ur, cols, 0, j, i1, i2, Err, B, codes, Q);
    }
    const got = await vqOnDevice(gpu, W, U, cbs, { rows, cols, d, K, g, B, i1, i2 }, segs);
    const V = cols / d;
    for (let r = 0; r < rows; r++) for (let v = i1 / d; v < i2 / d; v++) assert.equal(got.codes[r * V + v], codes[r * V + v], `code of row ${r}, vector ${v}`);
    assert.ok(maxAbsDiff(got.E, Err) <= 1e-5 * maxAbs(Err), `E: ${maxAbsDiff(got.E, Err)} of ${maxAbs(Err)}`);
    const lossGot = got.loss.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(lossGot - loss) <= 1e-5 * loss, `loss ${lossGot} vs ${loss}`);
    if (afterFirst) {
      // The first segment alone writes its feedback on the rest of the batch back into W (the next k-means reads it).
      const s1 = segs[0][1];
      const one = await vqOnDevice(gpu, W, U, cbs, { rows, cols, d, K, g, B, i1, i2 }, [segs[0]]);
      const a = new Float64Array(rows * (i2 - s1)),
        b = new Float64Array(rows * (i2 - s1));
      for (let r = 0; r < rows; r++)
        for (let c = s1; c < i2; c++) {
          a[r * (i2 - s1) + c - s1] = afterFirst[r * cols + c];
          b[r * (i2 - s1) + c - s1] = one.W[r * cols + c];
        }
      assert.ok(maxAbsDiff(a, b) <= 1e-5 * maxAbs(a), `W after the first segment: ${maxAbsDiff(a, b)}`);
    }
  });

/** weightedKMeans on the device: the points are W (rows × perRow·d, one group), weights per column. */
async function kmeansOnDevice(gpu: DawnGpu, pts: Float32Array, colW: Float32Array, rows: number, d: number, K: number, iters: number, seed: number, maxChunks?: number) {
  const cols = colW.length,
    perRow = cols / d,
    N = rows * perRow;
  const k = new LayerKernels(gpu);
  try {
    const codebooks = k.own(gpu.buffer(4 * K * d));
    const km = await DawnKMeans.create(
      gpu,
      k,
      { W: k.f32(pts), colW: k.f32(colW), draws: k.u32(seedDraws([{ j: 0, N }], K, seed)), codebooks },
      rows,
      cols,
      d,
      K,
      perRow,
      iters,
      maxChunks,
    );
    await gpu.dispatchAll(km.steps(0, perRow, 0));
    const [C, assign, cb] = [await km.centres(), await km.assignment(N), new Float32Array(await gpu.read(codebooks, 4 * K * d))];
    km.release();
    return { C, assign, cb };
  } finally {
    k.release();
  }
}

function inertia(pts: ArrayLike<number>, wts: ArrayLike<number>, C: ArrayLike<number>, N: number, d: number, K: number): number {
  let s = 0;
  for (let p = 0; p < N; p++) {
    let bv = Infinity;
    for (let c = 0; c < K; c++) {
      let v = 0;
      for (let t = 0; t < d; t++) v += wts[p * d + t] * (pts[p * d + t] - C[c * d + t]) ** 2;
      bv = Math.min(bv, v);
    }
    s += bv;
  }
  return s;
}

/** Points of `rows` rows × perRow vectors and their per-column weights, as weightedKMeans takes them. */
function twin(pts: Float32Array, colW: Float32Array, rows: number, d: number) {
  const cols = colW.length,
    N = (rows * cols) / d;
  const wts = new Float64Array(N * d);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) wts[r * cols + c] = colW[c];
  return { P: f64(pts), wts, N };
}

test('GPTVQ k-means on the device = weightedKMeans: well-separated clusters give the same assignment and centres', async (t) => {
  const gpu = await testDawn(t);
  if (!gpu) return;
  const rng = new SeededRng(21);
  const [rows, cols, d, K] = [96, 64, 2, 16];
  const N = (rows * cols) / d;
  const pts = new Float32Array(N * d);
  for (let p = 0; p < N; p++) {
    const c = Math.floor(rng.next() * K);
    pts[p * 2] = 10 * (c % 4) + 0.2 * rng.gaussian();
    pts[p * 2 + 1] = 10 * Math.floor(c / 4) + 0.2 * rng.gaussian();
  }
  const colW = f32(Array.from({ length: cols }, () => 0.5 + rng.next()));
  const { P, wts } = twin(pts, colW, rows, d);
  const ref = weightedKMeans(P, wts, N, d, K, { iters: 20, seed: 9 });
  const got = await kmeansOnDevice(gpu, pts, colW, rows, d, K, 20, 9);
  assert.deepEqual(Array.from(got.assign), Array.from(ref.assign), 'assignment');
  assert.ok(maxAbsDiff(got.C, ref.centroids) <= 1e-5 * maxAbs(ref.centroids), `centres ${maxAbsDiff(got.C, ref.centroids)}`);
  const rounded = new Float64Array(ref.centroids);
  encodeF16(ref.centroids, rounded);
  assert.ok(maxAbsDiff(got.cb, rounded) <= 2 ** -10 * maxAbs(rounded), 'the FP16 codebook');
});

test('GPTVQ k-means on the device = weightedKMeans: fewer distinct points than centres (zero-total draws, empty clusters re-seeded)', async (t) => {
  const gpu = await testDawn(t);
  if (!gpu) return;
  const rng = new SeededRng(22);
  const [rows, cols, d, K] = [40, 24, 2, 16];
  const N = (rows * cols) / d;
  const distinct = [
    [1, 2],
    [-3, 0.5],
    [0.25, -4],
    [7, 7],
    [-1, -1],
  ];
  const pts = new Float32Array(N * d);
  for (let p = 0; p < N; p++) pts.set(distinct[Math.floor(rng.next() * distinct.length)], p * d);
  // Every distinct point becomes a seed, so all distances end at 0 and an empty centre goes to the first point:
  // a value of its own there tells the first from any later one.
  pts.set([9, -9], 0);
  // Weights that keep every sum exact in float32: the means are the points themselves, the distances exactly 0.
  const colW = f32(Array.from({ length: cols }, () => 2 ** Math.floor(rng.next() * 3 - 1)));
  const { P, wts } = twin(pts, colW, rows, d);
  for (const seed of [1, 2, 3]) {
    const ref = weightedKMeans(P, wts, N, d, K, { iters: 20, seed });
    const got = await kmeansOnDevice(gpu, pts, colW, rows, d, K, 20, seed);
    assert.deepEqual(Array.from(got.C), Array.from(f32(ref.centroids)), `seed ${seed}: centres`);
    assert.deepEqual(Array.from(got.assign), Array.from(ref.assign), `seed ${seed}: assignment`);
  }
});

test('GPTVQ k-means on the device ≈ weightedKMeans on random data: inertia within 1e-4, several chunks and a ragged last one', async (t) => {
  const gpu = await testDawn(t);
  if (!gpu) return;
  const rng = new SeededRng(23);
  for (const [rows, cols, d, K, maxChunks] of [
    [77, 64, 2, 16, 1024],
    [50, 36, 1, 8, 1024],
    [33, 64, 4, 64, 1024], // K·D = 256 slots: each invocation sums four
    [77, 64, 2, 16, 3], // 13 points per invocation: the seeding's scan inside a chunk of 832 points
  ]) {
    const N = (rows * cols) / d;
    const pts = f32(Array.from({ length: N * d }, () => rng.gaussian()));
    const colW = f32(Array.from({ length: cols }, () => 0.2 + rng.next()));
    const { P, wts } = twin(pts, colW, rows, d);
    const ref = weightedKMeans(P, wts, N, d, K, { iters: 20, seed: 4 });
    const got = await kmeansOnDevice(gpu, pts, colW, rows, d, K, 20, 4, maxChunks);
    const a = inertia(P, wts, got.C, N, d, K),
      b = inertia(P, wts, ref.centroids, N, d, K);
    assert.ok(Math.abs(a - b) <= 1e-4 * b, `${rows}×${cols} d ${d} K ${K}: inertia ${a} vs ${b}`);
  }
});

for (const [rows, cols, groupSize] of [
  [64, 256, 96], // groups across batches of 64, a narrower last group
  [40, 250, 50], // an odd number of codes per row (two per word on the device)
])
  test(`GPTVQ loop on the device ≈ vqLoopSteps on the same float32 W and U (${rows}×${cols}, groups of ${groupSize}): codes ≥ 97 % equal, loss within 1 %`, async (t) => {
    const gpu = await testDawn(t);
    if (!gpu) return;
    const { W, U } = layer(rows, cols, 41);
    const spec = { vqDim: 2, bits: 2, groupSize, blockSize: 64, kmeansIters: 20, seed: 3 };
    // Twin: the CPU loop with its k-means and the lazy update in float64.
    const Wr = f64(W),
      Ur = f64(U);
    const steps = vqLoopSteps(Wr, rows, cols, Ur, spec);
    let r = steps.next(undefined);
    while (!r.done) {
      const q = r.value;
      if (q.kind === 'kmeans') r = steps.next(weightedKMeans(q.pts, q.wts, q.N, q.d, q.K, { iters: q.iters, seed: q.seed }).centroids);
      else {
        for (let i = 0; i < rows; i++)
          for (let a = 0; a < q.count; a++) {
            const e = q.err[i * q.count + a];
            for (let c = q.i2; c < cols; c++) Wr[i * cols + c] -= e * Ur[(q.i1 + a) * cols + c];
          }
        r = steps.next(undefined);
      }
    }
    const ref = r.value;
    const k = new LayerKernels(gpu);
    try {
      const got = await gptvqOnDawn(gpu, k, k.f32(W), k.f32(U), rows, cols, spec, 'test');
      assert.equal(got.groups, ref.groups);
      let same = 0;
      for (let i = 0; i < ref.codes.length; i++) if (got.codes[i] === ref.codes[i]) same++;
      assert.ok(same / ref.codes.length >= 0.97, `codes agree ${same / ref.codes.length}`);
      assert.ok(Math.abs(got.loss - ref.loss) / ref.loss < 0.01, `loss ${got.loss} vs ${ref.loss}`);
      assert.deepEqual(got.codebookBits, encodeF16(got.codebooks), 'the codebooks are FP16 values');
    } finally {
      k.release();
    }
  });
