// Tight float64 kernels for the diagonal blocks of the blocked Cholesky (cholesky.ts).
// They work on a square block of side m stored at `off` inside a row-major buffer with row stride `ld`,
// so the caller does not have to copy blocks out. Inner loops run over contiguous rows.

import { NotPositiveDefiniteError } from './cholesky_ref';

/**
 * In-place lower Cholesky of the m×m block: on return its lower triangle holds L (the strict upper
 * triangle is left untouched and never read). `pivotBase` is added to the pivot index of the error.
 */
export function cholLowerBlock(a: Float64Array, off: number, ld: number, m: number, pivotBase = 0): void {
  for (let j = 0; j < m; j++) {
    const rj = off + j * ld;
    let d = a[rj + j];
    for (let k = 0; k < j; k++) d -= a[rj + k] * a[rj + k];
    if (!(d > 0) || !Number.isFinite(d)) throw new NotPositiveDefiniteError(pivotBase + j, d);
    const ljj = Math.sqrt(d);
    a[rj + j] = ljj;
    const inv = 1 / ljj;
    for (let i = j + 1; i < m; i++) {
      const ri = off + i * ld;
      let s = a[ri + j];
      for (let k = 0; k < j; k++) s -= a[ri + k] * a[rj + k];
      a[ri + j] = s * inv;
    }
  }
}

/**
 * X = L⁻¹ for the lower-triangular m×m block `l` (at lOff, stride ld) into block `x` (at xOff, same
 * stride), lower triangle only. Row i of X is −(Σ_k<i L[i,k]·X[k,:])/L[i,i], built as axpys over the
 * contiguous rows of X already computed.
 */
export function invertLowerBlock(l: Float64Array, lOff: number, x: Float64Array, xOff: number, ld: number, m: number): void {
  for (let i = 0; i < m; i++) {
    const li = lOff + i * ld;
    const xi = xOff + i * ld;
    for (let c = 0; c < i; c++) x[xi + c] = 0;
    for (let k = 0; k < i; k++) {
      const lik = l[li + k];
      if (lik === 0) continue;
      const xk = xOff + k * ld;
      for (let c = 0; c <= k; c++) x[xi + c] += lik * x[xk + c];
    }
    const inv = 1 / l[li + i];
    for (let c = 0; c < i; c++) x[xi + c] = -x[xi + c] * inv;
    x[xi + i] = inv;
  }
}

/** Copy the rows×cols block at (r0, c0) of the n-wide f64 matrix into a contiguous f32 array. */
export function packF32(src: Float64Array, n: number, r0: number, c0: number, rows: number, cols: number, out = new Float32Array(rows * cols)): Float32Array {
  for (let i = 0; i < rows; i++) {
    const s = (r0 + i) * n + c0;
    const d = i * cols;
    for (let j = 0; j < cols; j++) out[d + j] = src[s + j];
  }
  return out;
}

/** dst[(r0+i)*n + c0+j] = sign·src[i*cols + j]. */
export function unpackF32(src: Float32Array, dst: Float64Array, n: number, r0: number, c0: number, rows: number, cols: number, sign = 1): void {
  for (let i = 0; i < rows; i++) {
    const d = (r0 + i) * n + c0;
    const s = i * cols;
    for (let j = 0; j < cols; j++) dst[d + j] = sign * src[s + j];
  }
}

/** Lower triangle (incl. diagonal) of the p×p block at (o, o): dst -= src (the Schur-complement update). */
export function subtractLowerF32(dst: Float64Array, n: number, o: number, src: Float32Array, p: number): void {
  for (let i = 0; i < p; i++) {
    const d = (o + i) * n + o;
    const s = i * p;
    for (let j = 0; j <= i; j++) dst[d + j] -= src[s + j];
  }
}
