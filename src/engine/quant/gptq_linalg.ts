// The one place GPTQ picks its "upper Cholesky factor of the inverse": the upper U with UᵀU = H⁻¹,
// torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).
//
// The synchronous float64 TypeScript version (gptqQuantize's default; the blocked ORT one of
// src/engine/linalg is async and plugs into gptqQuantizeAsync / gptqQuantizeOrt). It needs one
// Cholesky and one triangular inverse instead of the reference's three O(n³) steps. With J the reversal permutation, factor J·H·J = L̃·L̃ᵀ; then H = R·Rᵀ with
// R = J·L̃·J upper triangular, so H⁻¹ = R⁻ᵀ·R⁻¹ and U = R⁻¹ = J·L̃⁻¹·J is upper triangular with a
// positive diagonal. The Cholesky factor is unique, so this is the same U as the reference's
// (checked against choleskyInverseUpper_ref in test/unit/quant/gptq_linalg.test.ts).

import { NotPositiveDefiniteError } from '../linalg/not_positive_definite';

/** Upper U with UᵀU = H⁻¹ (H symmetric positive definite, n×n row-major). Throws NotPositiveDefiniteError. */
export function choleskyInverseUpper(hVals: ArrayLike<number>, n: number): Float64Array {
  // A = J·H·J (row i of A is row n−1−i of H reversed), then A = L̃·L̃ᵀ in place.
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0, src = (n - 1 - i) * n + n - 1; j <= i; j++) L[i * n + j] = hVals[src - j];
  choleskyLowerInPlace(L, n);
  const Y = lowerInverseTransposed(L, n);
  // U = J·L̃⁻¹·J: U[a][b] = L̃⁻¹[n−1−a][n−1−b] = Y[n−1−b][n−1−a] (upper because L̃⁻¹ is lower).
  const U = L; // reuse the buffer
  for (let a = 0; a < n; a++) {
    const Ua = a * n;
    for (let b = 0; b < a; b++) U[Ua + b] = 0;
    for (let b = a; b < n; b++) U[Ua + b] = Y[(n - 1 - b) * n + (n - 1 - a)];
  }
  return U;
}

/** Rows per block: NB rows of L (or columns of Y) stay in L2 while the earlier rows stream past once. */
const NB = 32;

/**
 * Row-oriented Cholesky–Crout on the lower triangle of L (row-major, upper triangle zero):
 * L[i][j] = (A[i][j] − Σ_{k<j} L[i][k]·L[j][k]) / L[j][j]. Rows go in blocks of NB; for each j the
 * block's rows take their inner products with row j four at a time, so row j is read once per
 * block (not once per row) and each of its loads serves four multiply-adds.
 */
function choleskyLowerInPlace(L: Float64Array, n: number): void {
  for (let b0 = 0; b0 < n; b0 += NB) {
    const b1 = Math.min(b0 + NB, n);
    for (let j = 0; j < b1; j++) {
      const Lj = j * n;
      if (j >= b0) {
        const d = L[Lj + j] - dot(L, Lj, L, Lj, j);
        if (!(d > 0) || !Number.isFinite(d)) throw new NotPositiveDefiniteError(n - 1 - j, d); // index in H's order
        L[Lj + j] = Math.sqrt(d);
      }
      const inv = 1 / L[Lj + j];
      let i = Math.max(b0, j + 1);
      for (; i + 4 <= b1; i += 4) {
        const a0 = i * n,
          a1 = a0 + n,
          a2 = a1 + n,
          a3 = a2 + n;
        let s0 = 0,
          s1 = 0,
          s2 = 0,
          s3 = 0;
        for (let k = 0; k < j; k++) {
          const x = L[Lj + k];
          s0 += L[a0 + k] * x;
          s1 += L[a1 + k] * x;
          s2 += L[a2 + k] * x;
          s3 += L[a3 + k] * x;
        }
        L[a0 + j] = (L[a0 + j] - s0) * inv;
        L[a1 + j] = (L[a1 + j] - s1) * inv;
        L[a2 + j] = (L[a2 + j] - s2) * inv;
        L[a3 + j] = (L[a3 + j] - s3) * inv;
      }
      for (; i < b1; i++) L[i * n + j] = (L[i * n + j] - dot(L, i * n, L, Lj, j)) * inv;
    }
  }
}

/**
 * Y = (L⁻¹)ᵀ (upper, row-major) for lower-triangular L: L⁻¹[i][j] = −(Σ_{j≤k<i} L[i][k]·L⁻¹[k][j]) / L[i][i],
 * i.e. Y[j][i] = −dot(L row i, Y row j, k ∈ [j, i)) / L[i][i]. Column i of Y needs columns < i of the
 * same rows, so columns go in order; rows j go four at a time (sharing the loads of L row i), and
 * columns in blocks of NB so the four rows of Y are reused from cache across the block.
 * Y[j][k] = 0 for k < j, so the four rows can all start at the first one's j.
 */
function lowerInverseTransposed(L: Float64Array, n: number): Float64Array {
  const Y = new Float64Array(n * n);
  for (let i0 = 0; i0 < n; i0 += NB) {
    const i1 = Math.min(i0 + NB, n);
    for (let i = i0; i < i1; i++) Y[i * n + i] = 1 / L[i * n + i];
    for (let j = 0; j < i1 - 1; j += 4) {
      const y0 = j * n,
        y1 = y0 + n,
        y2 = y1 + n,
        y3 = y2 + n;
      for (let i = Math.max(i0, j + 1); i < i1; i++) {
        const Li = i * n,
          inv = 1 / L[Li + i];
        if (j + 3 < i) {
          let s0 = 0,
            s1 = 0,
            s2 = 0,
            s3 = 0;
          for (let k = j; k < i; k++) {
            const x = L[Li + k];
            s0 += x * Y[y0 + k];
            s1 += x * Y[y1 + k];
            s2 += x * Y[y2 + k];
            s3 += x * Y[y3 + k];
          }
          Y[y0 + i] = -s0 * inv;
          Y[y1 + i] = -s1 * inv;
          Y[y2 + i] = -s2 * inv;
          Y[y3 + i] = -s3 * inv;
        } else {
          for (let jj = j; jj < Math.min(j + 4, i); jj++) Y[jj * n + i] = -dot(L, Li + jj, Y, jj * n + jj, i - jj) * inv;
        }
      }
    }
  }
  return Y;
}

/** Σ_{k<len} a[ao+k]·b[bo+k], four accumulators (hides the add latency). */
function dot(a: Float64Array, ao: number, b: Float64Array, bo: number, len: number): number {
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0,
    k = 0;
  for (; k + 4 <= len; k += 4) {
    s0 += a[ao + k] * b[bo + k];
    s1 += a[ao + k + 1] * b[bo + k + 1];
    s2 += a[ao + k + 2] * b[bo + k + 2];
    s3 += a[ao + k + 3] * b[bo + k + 3];
  }
  for (; k < len; k++) s0 += a[ao + k] * b[bo + k];
  return s0 + s1 + (s2 + s3);
}
