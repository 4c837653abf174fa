import { test } from 'node:test';
import assert from 'node:assert/strict';
import { roundHalfEven, findParamsRow, quantizeCode, dequantizeCode, maxqFor } from '../../../src/engine/quant/quantizer';
import { groupCount } from '../../../src/engine/quant/rtn';
import { rtnQuantize_ref as rtnQuantize } from '../../../src/engine/quant/rtn_ref';
import { cpuBackend, rtnOn } from '../backend/backends';
import { ProtocolError } from '../../../src/protocol/rpc';
import { syntheticWeights } from './synthetic';

test('roundHalfEven is torch.round (ties to even), unlike Math.round', () => {
  const cases: [number, number][] = [
    [-7.5, -8],
    [-6.5, -6],
    [2.5, 2],
    [3.5, 4],
    [0.5, 0],
    [-0.5, -0],
    [1.4999, 1],
    [-2.5000001, -3],
    [7, 7],
  ];
  for (const [x, want] of cases) assert.equal(roundHalfEven(x), want, `round(${x})`);
});

test('findParams: all-zero row → [-1, 1]; sym zero = (maxq+1)/2; asym zero = round(−xmin/scale)', () => {
  const maxq = maxqFor(4);
  const [s0, z0] = findParamsRow([0, 0, 0], 0, 3, maxq, false);
  assert.equal(s0, Math.fround(2 / 15));
  assert.equal(z0, roundHalfEven(Math.fround(1 / s0)));
  const [s1, z1] = findParamsRow([-3, 1, 2], 0, 3, maxq, true);
  assert.equal(s1, Math.fround(6 / 15));
  assert.equal(z1, 8);
  // Positive-only input: xmin clamps to 0 (the range always contains 0).
  const [s2, z2] = findParamsRow([1, 2, 3], 0, 3, maxq, false);
  assert.equal(s2, Math.fround(3 / 15));
  assert.ok(z2 === 0); // −0 in torch too (round(−0/scale))
});

test('sym: the most negative element lands on the −maxq/2 tie and takes code 0 (half-to-even)', () => {
  const maxq = maxqFor(4),
    x = [-1.5, 0.25, 1];
  const [s, z] = findParamsRow(x, 0, 3, maxq, true); // scale = 3/15 = 0.2 exactly in f32 terms: −1.5/0.2 = −7.5
  assert.equal(Math.fround(Math.fround(-1.5) / s), -7.5);
  assert.equal(quantizeCode(-1.5, s, z, maxq), 0);
  assert.equal(dequantizeCode(0, s, z), Math.fround(-8 * s));
});

test('RTN invariants over bits 2/3/4/8, group sizes −1/7/16/64, sym and asym (odd shape 17×45)', () => {
  const rows = 17,
    cols = 45,
    W = syntheticWeights(rows, cols, 7);
  for (const bits of [2, 3, 4, 8])
    for (const groupSize of [-1, 7, 16, 64])
      for (const sym of [false, true]) {
        const r = rtnQuantize(W, rows, cols, { bits, groupSize, sym });
        const maxq = (1 << bits) - 1,
          G = groupCount(cols, groupSize);
        assert.equal(r.scale.length, rows * G);
        for (let i = 0; i < rows; i++)
          for (let c = 0; c < cols; c++) {
            const k = i * G + r.gIdx[c],
              idx = i * cols + c;
            assert.ok(r.codes[idx] <= maxq);
            assert.equal(r.Q[idx], Math.fround(r.scale[k] * (r.codes[idx] - r.zero[k])), 'Q = scale·(code − zero) in f32');
            // Q is the nearest point of the grid scale·(0..maxq − zero) (slack: f32 w/scale is off by ≤ 2^-24·maxq steps).
            const err = Math.abs(W[idx] - r.Q[idx]);
            for (let q = 0; q <= maxq; q++)
              assert.ok(err <= Math.abs(W[idx] - r.scale[k] * (q - r.zero[k])) + 2e-5 * r.scale[k], `bits ${bits} g ${groupSize} sym ${sym}: not the nearest grid point`);
            // Asym grids cover [xmin, xmax] (0 included): error ≤ scale/2.
            if (!sym) assert.ok(err <= r.scale[k] * 0.5000001, `asym |w−q| ${err} > scale/2`);
          }
      }
});

test('RTN error shrinks with bits (mean squared error, 64×128, g128)', () => {
  const W = syntheticWeights(64, 128, 3);
  const mse = (bits: number) => {
    const r = rtnQuantize(W, 64, 128, { bits, groupSize: 128, sym: false });
    let s = 0;
    for (let i = 0; i < W.length; i++) s += (W[i] - r.Q[i]) ** 2;
    return s / W.length;
  };
  const e = [2, 3, 4, 8].map(mse);
  for (let i = 1; i < e.length; i++) assert.ok(e[i] < e[i - 1] / 2.5, `mse bits: ${e.join(', ')}`); // measured ratios ≈ 4
});

test('RTN rejects NaN with E_NON_FINITE naming W (the reference, and the CPU backend driver at its upload)', async () => {
  const W = new Float32Array(12).fill(0.5);
  W[5] = NaN;
  const isNonFiniteW = (e: unknown) => e instanceof ProtocolError && e.code === 'E_NON_FINITE' && /W/.test(e.message);
  assert.throws(() => rtnQuantize(W, 3, 4, { bits: 4, groupSize: -1, sym: false }), isNonFiniteW);
  await assert.rejects(rtnOn(cpuBackend(1), W, 3, 4, { bits: 4, groupSize: -1, sym: false }), isNonFiniteW);
});
