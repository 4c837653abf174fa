import { test } from 'node:test';
import assert from 'node:assert/strict';
import { choleskyLower_ref, choleskyInverseUpper_ref, NotPositiveDefiniteError } from '../../../src/engine/linalg/cholesky_ref';

// A seeded SPD matrix: A = BᵀB/k + n·δ·I with B from a cos generator (ggml-style deterministic data).
function spd(n: number): Float64Array {
  const k = n + 3,
    B = new Float64Array(k * n);
  for (let i = 0; i < B.length; i++) B[i] = 0.1 + 2 * Math.cos(i * 1.7 + 0.3);
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let r = 0; r < k; r++) s += B[r * n + i] * B[r * n + j];
      A[i * n + j] = s / k + (i === j ? 0.01 : 0);
    }
  return A;
}

test('choleskyLower_ref reproduces A = L·Lᵀ and is lower-triangular (odd sizes)', () => {
  for (const n of [1, 3, 7, 17]) {
    const A = spd(n),
      L = choleskyLower_ref(A, n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        if (j > i) assert.equal(L[i * n + j], 0);
        let s = 0;
        for (let k = 0; k < n; k++) s += L[i * n + k] * L[j * n + k];
        assert.ok(Math.abs(s - A[i * n + j]) < 1e-9 * (1 + Math.abs(A[i * n + j])), `n=${n} (${i},${j})`);
      }
  }
});

test('choleskyInverseUpper_ref: Uᵀ·U·A = I', () => {
  const n = 9,
    A = spd(n),
    U = choleskyInverseUpper_ref(A, n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      if (i > j) assert.equal(U[i * n + j], 0);
      let s = 0;
      for (let k = 0; k < n; k++) {
        let uu = 0;
        for (let r = 0; r < n; r++) uu += U[r * n + i] * U[r * n + k];
        s += uu * A[k * n + j];
      }
      assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-8, `(${i},${j}) = ${s}`);
    }
});

test('a non-positive-definite matrix throws with the pivot index', () => {
  assert.throws(
    () => choleskyLower_ref([1, 2, 2, 1], 2),
    (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivotIndex === 1,
  );
});
