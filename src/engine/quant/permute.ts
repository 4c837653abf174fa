// Stage B, step 6 of LoPRo (spec §1): column importance of the residual, the importance-descending
// column permutation with its inverse, and the gathers that apply it to R (columns) and H (both
// sides). Convention: perm[k] = the original column placed at position k, so R_p[:, k] = R[:, perm[k]]
// and invPerm[perm[k]] = k; applying `invPerm` with the same gather undoes it.

import type { ColumnScore } from '../../protocol/config';

/**
 * imp_j = h_j / (mean_i |R_ij| + ε) with h_j = H_jj ('hessian') or log2 H_jj − min_k log2 H_kk + 1 ('logHessian':
 * the Hessian's spread in bits, so that a few loud inputs do not outrank everything). ε = 1e-8·mean|R| + 1e-30 keeps
 * all-zero columns finite (they then sort by h_j alone, first if their inputs are large: harmless, their codes are 0).
 */
export function columnImportance(hDiag: ArrayLike<number>, rVals: ArrayLike<number>, rows: number, cols: number, score: ColumnScore = 'hessian'): Float64Array {
  const absSums = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    for (let j = 0; j < cols; j++) absSums[j] += Math.abs(rVals[o + j]);
  }
  return importanceFromAbsSums(hDiag, absSums, rows, score);
}

/** columnImportance from the column sums Σ_i |R_ij| (computed elsewhere: the worker pool, a GPU). */
export function importanceFromAbsSums(hDiag: ArrayLike<number>, absSums: ArrayLike<number>, rows: number, score: ColumnScore = 'hessian'): Float64Array {
  const cols = absSums.length;
  const h = score === 'hessian' ? hDiag : logSpread(hDiag);
  const meanAbs = new Float64Array(cols);
  let all = 0;
  for (let j = 0; j < cols; j++) {
    meanAbs[j] = absSums[j] / rows;
    all += meanAbs[j];
  }
  const eps = (1e-8 * all) / cols + 1e-30;
  const imp = new Float64Array(cols);
  for (let j = 0; j < cols; j++) imp[j] = h[j] / (meanAbs[j] + eps);
  return imp;
}

/** log2 h_j − min log2 h + 1 (≥ 1); a dead input (h_j ≤ 0) counts as the smallest positive one. */
function logSpread(hDiag: ArrayLike<number>): Float64Array {
  let lo = Infinity;
  for (let j = 0; j < hDiag.length; j++) if (hDiag[j] > 0) lo = Math.min(lo, hDiag[j]);
  const out = new Float64Array(hDiag.length);
  if (lo === Infinity) return out.fill(1);
  const l0 = Math.log2(lo);
  for (let j = 0; j < hDiag.length; j++) out[j] = Math.log2(Math.max(hDiag[j], lo)) - l0 + 1;
  return out;
}

/** Indices sorted by value, descending; ties keep the lower index first (stable, deterministic). */
export function argsortDescending(vals: ArrayLike<number>): Int32Array {
  const idx = Array.from({ length: vals.length }, (_, i) => i);
  idx.sort((a, b) => vals[b] - vals[a] || a - b);
  return Int32Array.from(idx);
}

export function invertPermutation(perm: ArrayLike<number>): Int32Array {
  const inv = new Int32Array(perm.length).fill(-1);
  for (let k = 0; k < perm.length; k++) {
    const p = perm[k];
    if (!(p >= 0 && p < perm.length) || inv[p] !== -1) throw new RangeError(`not a permutation: entry ${k} = ${p}`);
    inv[p] = k;
  }
  return inv;
}

/** out[:, k] = in[:, perm[k]] for a rows×cols matrix. The inverse is the same call with invPerm. */
export function gatherColumns<T extends Float32Array | Float64Array>(vals: T, rows: number, cols: number, perm: ArrayLike<number>): T {
  const out = new (vals.constructor as new (n: number) => T)(rows * cols);
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    for (let k = 0; k < cols; k++) out[o + k] = vals[o + perm[k]];
  }
  return out;
}

/** H_p = H[perm][:, perm] (n×n). Inverse: the same call with invPerm. */
export function permuteSymmetric<T extends Float32Array | Float64Array>(hVals: T, n: number, perm: ArrayLike<number>): T {
  const out = new (hVals.constructor as new (n: number) => T)(n * n);
  for (let a = 0; a < n; a++) {
    const src = perm[a] * n,
      dst = a * n;
    for (let b = 0; b < n; b++) out[dst + b] = hVals[src + perm[b]];
  }
  return out;
}

/** x_p = x[perm] (the activation side of the same permutation, spec §4). */
export function gatherVector(x: ArrayLike<number>, perm: ArrayLike<number>): Float64Array {
  const out = new Float64Array(perm.length);
  for (let k = 0; k < perm.length; k++) out[k] = x[perm[k]];
  return out;
}

/** Dense permutation matrix P (n×n, P[perm[k], k] = 1) so that R·P = R_p: the float64 twin. */
export function permutationMatrix_ref(perm: ArrayLike<number>): Float64Array {
  const n = perm.length;
  const P = new Float64Array(n * n);
  for (let k = 0; k < n; k++) P[perm[k] * n + k] = 1;
  return P;
}
