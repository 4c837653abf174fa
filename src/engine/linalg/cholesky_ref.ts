// Naive float64 references for the Cholesky family. Row-major n×n flat arrays.
// These are the twins the fast versions (quant/gptq_linalg.ts, backend/gpu/cholesky.ts) are tested against. GPTQ needs `choleskyInverseUpper_ref`: the upper factor U of H⁻¹
// (H⁻¹ = Uᵀ·U), i.e. torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).

import { NotPositiveDefiniteError } from './not_positive_definite';

export { NotPositiveDefiniteError };

/** Lower L with A = L·Lᵀ. Throws NotPositiveDefiniteError on a non-positive pivot. */
export function choleskyLower_ref(aVals: ArrayLike<number>, n: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = aVals[j * n + j];
    const Lj = j * n;
    for (let k = 0; k < j; k++) d -= L[Lj + k] * L[Lj + k];
    if (!(d > 0) || !Number.isFinite(d)) throw new NotPositiveDefiniteError(j, d);
    const ljj = Math.sqrt(d);
    L[Lj + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      const Li = i * n;
      let s = aVals[Li + j];
      for (let k = 0; k < j; k++) s -= L[Li + k] * L[Lj + k];
      L[Li + j] = s / ljj;
    }
  }
  return L;
}

/** Inverse of a lower-triangular matrix (forward substitution per column). */
export function invertLower_ref(L: ArrayLike<number>, n: number): Float64Array {
  const X = new Float64Array(n * n);
  for (let c = 0; c < n; c++) {
    for (let i = c; i < n; i++) {
      let s = i === c ? 1 : 0;
      for (let k = c; k < i; k++) s -= L[i * n + k] * X[k * n + c];
      X[i * n + c] = s / L[i * n + i];
    }
  }
  return X;
}

/** A⁻¹ from A's lower Cholesky factor: A⁻¹ = L⁻ᵀ·L⁻¹ (torch.cholesky_inverse). */
export function inverseFromCholesky_ref(L: ArrayLike<number>, n: number): Float64Array {
  const Li = invertLower_ref(L, n);
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = i; k < n; k++) s += Li[k * n + i] * Li[k * n + j];
      out[i * n + j] = s;
      out[j * n + i] = s;
    }
  return out;
}

/** Upper U with H⁻¹ = Uᵀ·U (the `Hinv` of GPTQ's fasterquant). */
export function choleskyInverseUpper_ref(hVals: ArrayLike<number>, n: number): Float64Array {
  const Hinv = inverseFromCholesky_ref(choleskyLower_ref(hVals, n), n);
  const L2 = choleskyLower_ref(Hinv, n);
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) U[i * n + j] = L2[j * n + i];
  return U;
}
