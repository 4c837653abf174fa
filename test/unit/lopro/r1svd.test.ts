import { test } from 'node:test';
import assert from 'node:assert/strict';
import { columnScaleAlpha, r1svd, lowRankWeight, scaleColumns } from '../../../src/engine/quant/r1svd';
import { r1svd_ref, svd_ref, truncatedSvdError_ref } from '../../../src/engine/quant/r1svd_ref';
import { SeededRng, matmul, frob2 } from '../../../src/engine/quant/lopro_mat';
import { roundF16, roundF8E4M3 } from '../../../src/engine/quant/fp8';

/** A = U·diag(decay^k)·Vᵀ with Haar-ish U, V (from the exact SVD of Gaussian matrices). */
const cache = new Map<string, Float64Array>();
function decaying(m: number, n: number, seed: number, decay: number): Float64Array {
  const key = `${m}x${n}:${seed}:${decay}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const A = makeDecaying(m, n, seed, decay);
  cache.set(key, A);
  return A;
}
function makeDecaying(m: number, n: number, seed: number, decay: number): Float64Array {
  const rng = new SeededRng(seed);
  const U = svd_ref(
    Float64Array.from({ length: m * m }, () => rng.gaussian()),
    m,
    m,
  ).U;
  const V = svd_ref(
    Float64Array.from({ length: n * n }, () => rng.gaussian()),
    n,
    n,
  ).U;
  const S = new Float64Array(m * n);
  for (let i = 0; i < Math.min(m, n); i++) S[i * n + i] = decay ** i;
  const Vt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) Vt[j * n + i] = V[i * n + j];
  return matmul(matmul(U, S, m, m, n), Vt, m, n, n);
}

function approxError(A: Float64Array, m: number, n: number, r: number, powerIters: number, seed: number, roundFactors = true): number {
  const f = r1svd(A, m, n, { rank: r, powerIters, seed, roundFactors });
  const Ar = lowRankWeight(f.U, f.sigma, f.V, m, n, f.rank, null);
  return Math.sqrt(frob2(A.map((v, i) => v - Ar[i])));
}

test('svd_ref reconstructs A = U·diag(s)·Vᵀ with orthonormal U, V, s descending (odd sizes)', () => {
  for (const [m, n] of [
    [7, 5],
    [5, 9],
    [17, 17],
  ]) {
    const rng = new SeededRng(m * 31 + n);
    const A = Float64Array.from({ length: m * n }, () => rng.gaussian());
    const { s, U, V, k } = svd_ref(A, m, n);
    for (let i = 1; i < k; i++) assert.ok(s[i] <= s[i - 1]);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let t = 0;
        for (let c = 0; c < k; c++) t += U[i * k + c] * s[c] * V[j * k + c];
        assert.ok(Math.abs(t - A[i * n + j]) < 1e-10, `${m}x${n} (${i},${j})`);
      }
    for (let a = 0; a < k; a++)
      for (let b = 0; b < k; b++) {
        let t = 0;
        for (let j = 0; j < n; j++) t += V[j * k + a] * V[j * k + b];
        assert.ok(Math.abs(t - (a === b ? 1 : 0)) < 1e-10);
      }
  }
});

test('R1SVD (FP8 factors, 4 power iterations) is within 5% of the exact truncated SVD, spectra decaying 0.95^k', () => {
  // 18 matrices: two shapes × r ∈ {4, 8, 16} × 3 seeds. Measured worst ratio 1.021, mean ≈ 1.011.
  let worst = 0;
  for (const [m, n] of [
    [96, 64],
    [64, 160],
  ])
    for (const r of [4, 8, 16])
      for (const seed of [1, 2, 3]) {
        const A = decaying(m, n, seed, 0.95);
        const ratio = approxError(A, m, n, r, 4, 11 * seed) / truncatedSvdError_ref(A, m, n, r);
        assert.ok(ratio >= 1 - 1e-9, `cannot beat Eckart–Young (${ratio})`);
        worst = Math.max(worst, ratio);
      }
  assert.ok(worst < 1.05, `worst ratio ${worst}`);
});

test('R1SVD with the default 2 power iterations: mean error within 5% of the truncated SVD (0.95^k spectra)', () => {
  // Measured: mean 1.034, worst 1.063 (2 iterations leave some power-method error).
  let sum = 0,
    worst = 0,
    count = 0;
  for (const [m, n] of [
    [96, 64],
    [64, 160],
  ])
    for (const r of [4, 8, 16])
      for (const seed of [1, 2, 3]) {
        const A = decaying(m, n, seed, 0.95);
        const ratio = approxError(A, m, n, r, 2, 11 * seed) / truncatedSvdError_ref(A, m, n, r);
        sum += ratio;
        worst = Math.max(worst, ratio);
        count++;
      }
  assert.ok(sum / count < 1.05, `mean ratio ${sum / count}`);
  assert.ok(worst < 1.1, `worst ratio ${worst}`);
});

test('FP8 factors cost little when the tail dominates: FP8 vs plain R1SVD error within 1% (0.95^k, r = 8)', () => {
  // Measured ratio fp8/plain ≈ 1.001 here; with fast-decaying spectra FP8 is the floor (≈3% of σ₁), by design.
  const A = decaying(96, 64, 4, 0.95);
  const a = approxError(A, 96, 64, 8, 2, 3, true),
    b = approxError(A, 96, 64, 8, 2, 3, false);
  assert.ok(a / b < 1.01, `fp8 ${a} plain ${b}`);
});

test('stored factors are exactly FP8 / FP16 values and W_r·diag(α) = U·diag(σ̂)·V; energy matches', () => {
  const m = 33,
    n = 47,
    rng = new SeededRng(9);
  const W = Float32Array.from({ length: m * n }, () => rng.gaussian());
  const f = r1svd(W, m, n, { rank: 5, powerIters: 2, seed: 1 });
  assert.equal(f.rank, 5);
  for (const v of f.U) assert.equal(roundF8E4M3(v), v);
  for (const v of f.V) assert.equal(roundF8E4M3(v), v);
  for (const v of f.sigma) assert.equal(roundF16(v), v);
  assert.equal(f.uCodes.length, m * 5);
  assert.equal(f.vCodes.length, 5 * n);
  const Ar = lowRankWeight(f.U, f.sigma, f.V, m, n, 5, null);
  const energy = 1 - frob2(Float64Array.from(W, (v, i) => v - Ar[i])) / frob2(W);
  assert.ok(Math.abs(energy - f.energy) < 1e-5, `${energy} vs ${f.energy}`);
  assert.ok(f.energy > 0 && f.energy < 1);
});

test('r1svd (float32 working copy) matches r1svd_ref (float64) closely', () => {
  const A = decaying(40, 56, 7, 0.8);
  const f = r1svd(A, 40, 56, { rank: 6, powerIters: 2, seed: 2, roundFactors: false });
  const g = r1svd_ref(A, 40, 56, { rank: 6, powerIters: 2, seed: 2, roundFactors: false });
  const a = lowRankWeight(f.U, f.sigma, f.V, 40, 56, 6, null),
    b = lowRankWeight(g.U, g.sigma, g.V, 40, 56, 6, null);
  const diff = Math.sqrt(frob2(a.map((v, i) => v - b[i]))) / Math.sqrt(frob2(b));
  assert.ok(diff < 1e-5, `relative difference ${diff}`); // measured ≈ 1e-7
});

test('an exactly rank-1 matrix gives finite factors; an all-zero matrix stops R1SVD at rank 0', () => {
  const m = 12,
    n = 10;
  const A = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) A[i * n + j] = (i + 1) * (j % 3);
  const f = r1svd_ref(A, m, n, { rank: 6, powerIters: 2, seed: 0, roundFactors: false });
  assert.ok(f.rank <= 6);
  for (const v of f.U) assert.ok(Number.isFinite(v));
  const Z = r1svd(new Float32Array(m * n), m, n, { rank: 4, powerIters: 2, seed: 0 });
  assert.equal(Z.rank, 0);
  assert.equal(Z.energy, 0);
});

test('α: geometric mean 1 (before FP16), β = 0 or data-free gives 1, dead inputs floored, FP16-exact', () => {
  const meanAbs = [1, 4, 0.25, 16, 0];
  const { alpha, alphaBits } = columnScaleAlpha(meanAbs, 5, 0.5);
  assert.equal(alphaBits.length, 5);
  for (const a of alpha) assert.ok(a > 0 && roundF16(a) === a);
  // Column 1 over column 0: (4/1)^0.5 = 2 (FP16 rounding aside).
  assert.ok(Math.abs(alpha[1] / alpha[0] - 2) < 2e-3);
  assert.ok(alpha[4] < alpha[2]);
  assert.deepEqual(Array.from(columnScaleAlpha(null, 3, 0.5).alpha), [1, 1, 1]);
  assert.deepEqual(Array.from(columnScaleAlpha(meanAbs, 5, 0).alpha), [1, 1, 1, 1, 1]);
  assert.throws(() => columnScaleAlpha([1, 2], 3, 0.5), /columns/);
  const sc = scaleColumns([1, 2, 3, 4], 2, 2, [2, 0.5]);
  assert.deepEqual(Array.from(sc), [2, 1, 6, 2]);
});
