// The one place GPTQ picks its "upper Cholesky factor of the inverse": the upper U with UᵀU = H⁻¹,
// torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).
//
// Interim until the blocked, ORT-backed version of src/engine/linalg lands: a cache-friendly float64
// TypeScript version that needs one Cholesky and one triangular inverse instead of the reference's
// three O(n³) steps. With J the reversal permutation, factor J·H·J = L̃·L̃ᵀ; then H = R·Rᵀ with
// R = J·L̃·J upper triangular, so H⁻¹ = R⁻ᵀ·R⁻¹ and U = R⁻¹ = J·L̃⁻¹·J is upper triangular with a
// positive diagonal. The Cholesky factor is unique, so this is the same U as the reference's
// (checked against choleskyInverseUpper_ref in test/unit/quant/gptq_linalg.test.ts).

import { NotPositiveDefiniteError } from '../linalg/cholesky_ref';

export { choleskyInverseUpper_ref } from '../linalg/cholesky_ref';

/** Upper U with UᵀU = H⁻¹ (H symmetric positive definite, n×n row-major). Throws NotPositiveDefiniteError. */
export function choleskyInverseUpper(hVals: ArrayLike<number>, n: number): Float64Array {
  // A = J·H·J (row i of A is row n−1−i of H reversed), then A = L̃·L̃ᵀ in place (row-oriented
  // Cholesky–Crout: every inner product runs over two contiguous rows).
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0, src = (n - 1 - i) * n + n - 1; j <= i; j++) L[i * n + j] = hVals[src - j];
  for (let i = 0; i < n; i++) {
    const Li = i * n;
    for (let j = 0; j < i; j++) {
      const Lj = j * n;
      L[Li + j] = (L[Li + j] - dot(L, Li, L, Lj, j)) / L[Lj + j];
    }
    const d = L[Li + i] - dot(L, Li, L, Li, i);
    if (!(d > 0) || !Number.isFinite(d)) throw new NotPositiveDefiniteError(n - 1 - i, d);
    L[Li + i] = Math.sqrt(d);
  }
  // Y = (L̃⁻¹)ᵀ (upper), built column by column with inner products over contiguous rows:
  // L̃⁻¹[i][j] = −(Σ_{j≤k<i} L̃[i][k]·L̃⁻¹[k][j]) / L̃[i][i] = −dot(L̃ row i, Y row j over k ∈ [j, i)) / L̃[i][i].
  const Y = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const Li = i * n, inv = 1 / L[Li + i];
    Y[i * n + i] = inv;
    for (let j = 0; j < i; j++) Y[j * n + i] = -dot(L, Li + j, Y, j * n + j, i - j) * inv;
  }
  // U = J·L̃⁻¹·J: U[a][b] = L̃⁻¹[n−1−a][n−1−b] = Y[n−1−b][n−1−a] (upper because L̃⁻¹ is lower).
  const U = L; // reuse the buffer
  for (let a = 0; a < n; a++) {
    const Ua = a * n;
    for (let b = 0; b < a; b++) U[Ua + b] = 0;
    for (let b = a; b < n; b++) U[Ua + b] = Y[(n - 1 - b) * n + (n - 1 - a)];
  }
  return U;
}

/** Σ_{k<len} a[ao+k]·b[bo+k], four accumulators (hides the add latency). */
function dot(a: Float64Array, ao: number, b: Float64Array, bo: number, len: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, k = 0;
  for (; k + 4 <= len; k += 4) {
    s0 += a[ao + k] * b[bo + k];
    s1 += a[ao + k + 1] * b[bo + k + 1];
    s2 += a[ao + k + 2] * b[bo + k + 2];
    s3 += a[ao + k + 3] * b[bo + k + 3];
  }
  for (; k < len; k++) s0 += a[ao + k] * b[bo + k];
  return s0 + s1 + (s2 + s3);
}
