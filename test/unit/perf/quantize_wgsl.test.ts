// The WGSL quantizer (backend/gpu/quantize_wgsl.ts: findParamsWgsl, groupParams, rtnCodes) against the
// reference (quant/quantizer.ts findParams, rtn_ref.ts rtnQuantize_ref) on Dawn over SwiftShader (see
// test/unit/dawn_device.ts). clip 'minmax': params, codes and dequantized values bit-exact. clip 'mse':
// the error that ranks the 80 candidates is a float32 sum on the device and a float64 one in the
// reference, so near-ties may go the other way (thresholds below, with the measured numbers).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DawnGpu } from '../../../src/engine/backend/gpu/dawn';
import {
  DIV_RN_WGSL,
  findParamsWgsl,
  groupParamsDawn,
  quantGeometry,
  rtnCodesDawn,
  shrinkFactors,
  type Clip,
  type LaunchOptions,
} from '../../../src/engine/backend/gpu/quantize_wgsl';
import { dequantizeCode, findParams, maxqFor, quantizeCode } from '../../../src/engine/quant/quantizer';
import { rtnQuantize_ref as rtnQuantize } from '../../../src/engine/quant/rtn_ref';
import { mulberry32 } from '../../../src/engine/util/random';
import { testDawn as device } from '../dawn_device';

const fround = Math.fround;

/** Seeded rows×cols weights: normal with per-row log-normal scales and Student-t (ν = 3) tails in every third row. */
function weights(rows: number, cols: number, seed: number): Float32Array {
  const u = mulberry32(seed);
  const n = () => Math.sqrt(-2 * Math.log(u() || 1e-12)) * Math.cos(2 * Math.PI * u());
  const t3 = () => n() / Math.sqrt((n() ** 2 + n() ** 2 + n() ** 2) / 3);
  const W = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const rs = 0.02 * Math.exp(0.5 * n());
    for (let c = 0; c < cols; c++) W[r * cols + c] = (r % 3 === 2 ? t3() : n()) * rs;
  }
  return W;
}

interface Run {
  scale: Float32Array;
  zero: Float32Array;
  codes: Uint8Array;
  Q: Float32Array;
}

/** groupParams then rtnCodes on the device; `given` params (rows×G each) replace the device's in rtnCodes. */
async function onDevice(
  gpu: DawnGpu,
  W: Float32Array,
  rows: number,
  cols: number,
  groupSize: number,
  bits: number,
  sym: boolean,
  clip: Clip,
  given?: { scale: Float32Array; zero: Float32Array },
  o?: LaunchOptions,
): Promise<Run> {
  const maxq = maxqFor(bits),
    l = { rows, cols, groupSize };
  const { G, wpr } = quantGeometry(l);
  const bufs: GPUBuffer[] = [];
  const own = (b: GPUBuffer) => (bufs.push(b), b);
  try {
    const Wb = own(gpu.buffer(W));
    const Pb = own(gpu.buffer(4 * rows * G * 2));
    await groupParamsDawn(gpu, Wb, l, { maxq, sym, clip }, Pb, o);
    const P = new Float32Array(rows * G * 2);
    await gpu.readInto(Pb, P);
    const scale = new Float32Array(rows * G),
      zero = new Float32Array(rows * G);
    for (let i = 0; i < rows * G; i++) [scale[i], zero[i]] = [P[2 * i], P[2 * i + 1]];
    let Pq = Pb;
    if (given) {
      const P2 = new Float32Array(rows * G * 2);
      for (let i = 0; i < rows * G; i++) [P2[2 * i], P2[2 * i + 1]] = [given.scale[i], given.zero[i]];
      Pq = own(gpu.buffer(P2));
    }
    const Cb = own(gpu.buffer(4 * rows * wpr)),
      Qb = own(gpu.buffer(4 * rows * cols));
    await rtnCodesDawn(gpu, Wb, Pq, l, maxq, Cb, Qb, o);
    const words = new Uint32Array(rows * wpr),
      Q = new Float32Array(rows * cols);
    await Promise.all([gpu.readInto(Cb, words), gpu.readInto(Qb, Q)]);
    // Codes-only launch (no Q binding): the same words.
    const Cb2 = own(gpu.buffer(4 * rows * wpr));
    await rtnCodesDawn(gpu, Wb, Pq, l, maxq, Cb2, undefined, o);
    const words2 = new Uint32Array(rows * wpr);
    await gpu.readInto(Cb2, words2);
    assert.deepEqual(words2, words, 'codes without Q = codes with Q');
    const bytes = new Uint8Array(words.buffer),
      codes = new Uint8Array(rows * cols);
    for (let r = 0; r < rows; r++) codes.set(bytes.subarray(r * wpr * 4, r * wpr * 4 + cols), r * cols);
    // The padding bytes of each row's last word stay 0.
    for (let r = 0; r < rows; r++) for (let c = cols; c < wpr * 4; c++) assert.equal(bytes[r * wpr * 4 + c], 0);
    return { scale, zero, codes, Q };
  } finally {
    for (const b of bufs) b.destroy();
  }
}

test('div_rn is the correctly rounded float32 quotient, also when the device\'s "/" is a few ulp off', async (t) => {
  const gpu = await device(t);
  if (!gpu) return;
  const u = mulberry32(11),
    N = 1 << 15;
  const x = new Float32Array(N),
    y = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    y[i] = (u() + 0.01) * 2 ** Math.floor(u() * 40 - 20);
    const k = i % 4;
    if (k === 0)
      x[i] = (u() - 0.5) * 2 ** Math.floor(u() * 40 - 20); // random
    else if (k === 1)
      x[i] = fround((Math.floor(u() * 512) - 256 + 0.5) * y[i]); // next to a code's tie x/s = k + ½
    else if (k === 2) {
      y[i] = [1, 3, 7, 15, 255][i % 5];
      x[i] = (u() + 1e-3) * 2 ** Math.floor(u() * 20 - 10);
    } // range / maxq
    else x[i] = fround(Math.floor(u() * 64 - 32) * y[i]); // exact integer quotients
  }
  const code = (perturb: number) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> Y: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
${perturb === 0 ? DIV_RN_WGSL : DIV_RN_WGSL.replace('let q0 = x / y;', `let q0 = select(bitcast<f32>(u32(i32(bitcast<u32>(x / y)) + ${perturb})), 0.0, x == 0.0);`)}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) { O[g.x] = div_rn(X[g.x], Y[g.x]); }
`;
  assert.notEqual(DIV_RN_WGSL.indexOf('let q0 = x / y;'), -1);
  const Xb = gpu.buffer(x),
    Yb = gpu.buffer(y),
    Ob = gpu.buffer(4 * N);
  try {
    // perturb: the first guess off by that many ulp (Vulkan allows 2.5 ulp for '/').
    for (const perturb of [0, 1, -1, 3, -3]) {
      const pipe = await gpu.pipeline(code(perturb));
      const bg = gpu.bindGroup(pipe, [Xb, Yb, Ob]);
      await gpu.submit((enc) => {
        const p = enc.beginComputePass();
        p.setPipeline(pipe);
        p.setBindGroup(0, bg);
        p.dispatchWorkgroups(N / 64);
        p.end();
      });
      const O = new Float32Array(N);
      await gpu.readInto(Ob, O);
      let bad = 0;
      for (let i = 0; i < N; i++) if (O[i] !== fround(x[i] / y[i])) bad++;
      assert.equal(bad, 0, `perturb ${perturb}: ${bad} of ${N} quotients not correctly rounded`);
    }
  } finally {
    for (const b of [Xb, Yb, Ob]) b.destroy();
  }
});

test("findParamsWgsl: one function per call, reading the named array; the mse shrink factors are the reference's float32 values", () => {
  const mse = findParamsWgsl({ maxq: 3, sym: false, clip: 'mse', src: 'Wq', name: 'fit_a' });
  assert.match(mse, /fn fit_a\(base: u32, len: u32\) -> vec2f/);
  assert.match(mse, /Wq\[base \+ j\]/);
  assert.match(mse, /const fit_a_shrink = array<f32, 80>\(1\.0f, 0\.9900000095367432f, /);
  const p = shrinkFactors();
  assert.equal(p.length, 80);
  for (let i = 0; i < 80; i++) assert.equal(p[i], fround(1 - i / 100));
  assert.doesNotMatch(findParamsWgsl({ maxq: 3, sym: true, clip: 'minmax', src: 'W' }), /shrink|pow/);
});

// Aggregated over every shape of a clip/sym/bits combination (one row can be 100 % of a tiny case).
const mseStats = { groups: 0, groupsSame: 0, values: 0, codesSame: 0, maxRel: 0 };

for (const clip of ['minmax', 'mse'] as const)
  for (const sym of [false, true])
    for (const bits of [2, 3, 4, 8])
      test(`groupParams + rtnCodes = findParams + rtnQuantize: clip ${clip}, ${sym ? 'sym' : 'asym'}, W${bits}, rows 1/7/33/257 × cols 5/128/300 × groups 32/128/−1`, async (t) => {
        const gpu = await device(t);
        if (!gpu) return;
        const maxq = maxqFor(bits);
        for (const rows of [1, 7, 33, 257])
          for (const cols of [5, 128, 300]) {
            const W = weights(rows, cols, rows * 1000 + cols);
            if (rows >= 7 && cols >= 64) {
              for (let c = 0; c < 32; c++) W[1 * cols + c] = 0; // row 1: an all-zero group (of 32) — params [−1, 1]
              for (let c = 0; c < 32; c++) W[2 * cols + c] = c === 17 ? -0.5 : 0; // row 2: a group with one nonzero
            }
            for (const groupSize of [32, 128, -1]) {
              const what = `${rows}×${cols}, groups ${groupSize}`;
              const ref = rtnQuantize(W, rows, cols, { bits, groupSize, sym, clip });
              const got = await onDevice(gpu, W, rows, cols, groupSize, bits, sym, clip, clip === 'mse' ? ref : undefined);
              if (clip === 'minmax') {
                assert.deepEqual(got.scale, ref.scale, `scales, ${what}`);
                assert.deepEqual(got.zero, ref.zero, `zeros, ${what}`);
                assert.deepEqual(got.codes, ref.codes, `codes, ${what}`);
                assert.deepEqual(got.Q, ref.Q, `dequantized, ${what}`);
                continue;
              }
              // mse: rtnCodes ran with the reference params here, so its codes and Q must be exact…
              assert.deepEqual(got.codes, ref.codes, `codes with the reference params, ${what}`);
              assert.deepEqual(got.Q, ref.Q, `dequantized with the reference params, ${what}`);
              // …and the device's own params are compared in aggregate (below) and through their codes.
              for (let i = 0; i < ref.scale.length; i++) {
                mseStats.groups++;
                if (got.scale[i] === ref.scale[i] && got.zero[i] === ref.zero[i]) mseStats.groupsSame++;
                else mseStats.maxRel = Math.max(mseStats.maxRel, Math.abs(got.scale[i] - ref.scale[i]) / ref.scale[i]);
              }
              const { g } = quantGeometry({ rows, cols, groupSize });
              for (let r = 0; r < rows; r++)
                for (let c = 0; c < cols; c++) {
                  const k = r * ref.groups + Math.floor(c / g),
                    i = r * cols + c;
                  mseStats.values++;
                  if (quantizeCode(W[i], got.scale[k], got.zero[k], maxq) === ref.codes[i]) mseStats.codesSame++;
                }
              if (rows >= 7 && cols >= 64 && groupSize === 32) {
                // The degenerate groups have one answer (candidate 0 has zero error there and nothing beats 0).
                for (const r of [1, 2]) assert.equal(got.scale[r * ref.groups], ref.scale[r * ref.groups], `degenerate group of row ${r}, ${what}`);
              }
            }
          }
      });

test('clip mse: device params agree with findParamsRowMse on ≥ 99 % of the groups, their codes on ≥ 99.9 % of the values', (t) => {
  if (mseStats.groups === 0) return t.skip('no device');
  const groups = mseStats.groupsSame / mseStats.groups,
    codes = mseStats.codesSame / mseStats.values;
  t.diagnostic(
    `mse params equal in ${mseStats.groupsSame}/${mseStats.groups} groups (${(100 * groups).toFixed(3)} %), max scale rel. diff ${mseStats.maxRel.toExponential(2)}; codes equal ${mseStats.codesSame}/${mseStats.values}`,
  );
  // Measured on SwiftShader: 54 829 of 54 832 groups equal (99.995 %; the other 3 one shrink step apart,
  // scale rel. diff ≤ 1.15e-2) and all 3 096 816 codes (the 3 fits give the same codes as the reference's).
  // On 16 × 4096 rows of 128 (quant/quantize_wgsl.ts's header): 99.991 % of the fits equal.
  assert.ok(groups >= 0.99, `params equal in ${groups}`);
  assert.ok(codes >= 0.999, `codes equal in ${codes}`);
});

test('special groups: all zero, one nonzero, huge and tiny magnitudes, one sign only, exact ties (minmax bit-exact; mse = reference)', async (t) => {
  const gpu = await device(t);
  if (!gpu) return;
  const rows = 9,
    cols = 64;
  const base = weights(1, cols, 5);
  const W = new Float32Array(rows * cols);
  for (let c = 0; c < cols; c++) {
    W[0 * cols + c] = 0; // all zero
    W[1 * cols + c] = c % 32 === 5 ? 3.25 : 0; // one (positive) nonzero per group
    W[2 * cols + c] = base[c] * 1e30; // huge
    W[3 * cols + c] = base[c] * 1e-20; // tiny (products of div_rn's pieces stay normal floats)
    W[4 * cols + c] = -Math.abs(base[c]); // negatives only
    W[5 * cols + c] = Math.abs(base[c]); // positives only
    W[6 * cols + c] = (c % 16) * 0.5 - 3.75; // multiples of ½ from −3.75: x/s lands on k + ½ exactly for several maxq
    W[7 * cols + c] = c === 9 ? -1e-3 : c === 40 ? 1e-3 : 0; // one nonzero of either sign
    W[8 * cols + c] = base[c] + (c === 3 ? 50 : 0); // one outlier: mse clips it
  }
  for (const clip of ['minmax', 'mse'] as const)
    for (const sym of [false, true])
      for (const bits of [2, 3, 4, 8])
        for (const groupSize of [32, -1]) {
          const what = `${clip} ${sym ? 'sym' : 'asym'} W${bits} groups ${groupSize}`;
          const ref = rtnQuantize(W, rows, cols, { bits, groupSize, sym, clip });
          const got = await onDevice(gpu, W, rows, cols, groupSize, bits, sym, clip);
          for (let i = 0; i < ref.scale.length; i++) assert.ok(Number.isFinite(got.scale[i]) && got.scale[i] > 0, `scale ${i}, ${what}`);
          // These fits have no near-ties: the device matches the reference exactly for mse too.
          assert.deepEqual(got.scale, ref.scale, `scales, ${what}`);
          assert.deepEqual(got.zero, ref.zero, `zeros, ${what}`);
          assert.deepEqual(got.codes, ref.codes, `codes, ${what}`);
          assert.deepEqual(got.Q, ref.Q, `dequantized, ${what}`);
        }
});

test('groupParams / rtnCodes stride over a capped grid (WebGPU allows 65535 workgroups per dimension)', async (t) => {
  const gpu = await device(t);
  if (!gpu) return;
  const rows = 37,
    cols = 301,
    W = weights(rows, cols, 99);
  for (const clip of ['minmax', 'mse'] as const) {
    const ref = rtnQuantize(W, rows, cols, { bits: 3, groupSize: 16, sym: false, clip });
    // 37·19 = 703 fits on 2 workgroups of 64 and 37·76 words on 3 workgroups of 256: every invocation loops.
    const got = await onDevice(gpu, W, rows, cols, 16, 3, false, clip, clip === 'mse' ? ref : undefined, { maxWorkgroups: 2 });
    if (clip === 'minmax') assert.deepEqual(got.scale, ref.scale);
    assert.deepEqual(got.codes, ref.codes);
    assert.deepEqual(got.Q, ref.Q);
  }
  // A real grid past the limit: 4200 × 1024 groups of 1 column = 4.3 M fits > 65535 · 64.
  const big = { rows: 4200, cols: 1024, groupSize: 1 };
  const Wbig = weights(big.rows, big.cols, 3);
  const Wb = gpu.buffer(Wbig),
    Pb = gpu.buffer(4 * big.rows * big.cols * 2);
  try {
    await groupParamsDawn(gpu, Wb, big, { maxq: 15, sym: false, clip: 'minmax' }, Pb);
    const P = new Float32Array(big.rows * big.cols * 2);
    await gpu.readInto(Pb, P);
    for (const i of [0, 1, 65535 * 64 - 1, 65535 * 64, 65535 * 64 + 1, big.rows * big.cols - 1]) {
      const s = new Float32Array(1),
        z = new Float32Array(1),
        r = Math.floor(i / big.cols),
        c = i % big.cols;
      findParams(Wbig.subarray(r * big.cols, (r + 1) * big.cols), 1, big.cols, c, c + 1, 15, false, s, z, 1, 0);
      assert.deepEqual([P[2 * i], P[2 * i + 1]], [s[0], z[0]], `fit ${i}`);
    }
  } finally {
    Wb.destroy();
    Pb.destroy();
  }
});

test('rtnCodes: Q is exactly dequantizeCode of the packed codes', async (t) => {
  const gpu = await device(t);
  if (!gpu) return;
  const rows = 5,
    cols = 11,
    W = weights(rows, cols, 8);
  const got = await onDevice(gpu, W, rows, cols, 4, 2, true, 'minmax');
  const G = Math.ceil(cols / 4);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const k = r * G + Math.floor(c / 4);
      assert.equal(got.Q[r * cols + c], dequantizeCode(got.codes[r * cols + c], got.scale[k], got.zero[k]));
    }
});
