// Float64 twins for stage A: the same R1SVD over a float64 working copy, and an exact SVD
// (one-sided Jacobi, Hestenes) giving the truncated-SVD optimum R1SVD is measured against.

import { r1svdInPlace, type LowRankFactors, type R1svdOptions } from './r1svd';

export function r1svd_ref(aVals: ArrayLike<number>, m: number, n: number, opts: R1svdOptions): LowRankFactors {
  return r1svdInPlace(Float64Array.from(aVals as ArrayLike<number>), m, n, opts);
}

/**
 * Exact thin SVD of A (m×n) by one-sided Jacobi: rotate column pairs of a working copy until all
 * are mutually orthogonal; then A·V = U·diag(s). Returns s descending, U (m×k), V (n×k) with
 * k = min(m, n) (computed on Aᵀ when m < n so that the column count is the smaller side).
 */
export function svd_ref(aVals: ArrayLike<number>, m: number, n: number): { s: Float64Array; U: Float64Array; V: Float64Array; k: number } {
  if (m < n) {
    const At = new Float64Array(n * m);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) At[j * m + i] = aVals[i * n + j];
    const t = svd_ref(At, n, m);
    return { s: t.s, U: t.V, V: t.U, k: t.k };
  }
  // Column-major copy G (n columns of length m) and V = I (n×n, column-major).
  const G = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) G[j * m + i] = aVals[i * n + j];
  const Vc = new Float64Array(n * n);
  for (let j = 0; j < n; j++) Vc[j * n + j] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0,
          beta = 0,
          gamma = 0;
        for (let i = 0; i < m; i++) {
          const a = G[p * m + i],
            b = G[q * m + i];
          alpha += a * a;
          beta += b * b;
          gamma += a * b;
        }
        if (gamma === 0) continue;
        const rel = Math.abs(gamma) / Math.sqrt(alpha * beta);
        if (rel > off) off = rel;
        if (rel < 1e-15) continue;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t),
          s = c * t;
        for (let i = 0; i < m; i++) {
          const a = G[p * m + i],
            b = G[q * m + i];
          G[p * m + i] = c * a - s * b;
          G[q * m + i] = s * a + c * b;
        }
        for (let i = 0; i < n; i++) {
          const a = Vc[p * n + i],
            b = Vc[q * n + i];
          Vc[p * n + i] = c * a - s * b;
          Vc[q * n + i] = s * a + c * b;
        }
      }
    }
    if (off < 1e-14) break;
  }
  const sv = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let t = 0;
    for (let i = 0; i < m; i++) t += G[j * m + i] ** 2;
    sv[j] = Math.sqrt(t);
  }
  const order = Array.from({ length: n }, (_, j) => j).sort((a, b) => sv[b] - sv[a]);
  const k = n;
  const s = new Float64Array(k),
    U = new Float64Array(m * k),
    V = new Float64Array(n * k);
  order.forEach((j, c) => {
    s[c] = sv[j];
    for (let i = 0; i < m; i++) U[i * k + c] = sv[j] > 0 ? G[j * m + i] / sv[j] : 0;
    for (let i = 0; i < n; i++) V[i * k + c] = Vc[j * n + i];
  });
  return { s, U, V, k };
}

/** ‖A − A_r‖_F of the best rank-r approximation (Eckart–Young: √(Σ_{k>r} s_k²)). */
export function truncatedSvdError_ref(aVals: ArrayLike<number>, m: number, n: number, r: number): number {
  const { s } = svd_ref(aVals, m, n);
  let t = 0;
  for (let k = r; k < s.length; k++) t += s[k] * s[k];
  return Math.sqrt(t);
}
