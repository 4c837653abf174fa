// The rank of stage A chosen per layer (config rank −1, the LoPRo authors' rule): each rank-1 term of the R1SVD
// shrinks the residual's largest magnitude max|W − W_k|, and a quantizer's step shrinks with it — log2 of the
// shrink is the bits per weight it saves over the m·n weights. A term costs 8·(m + n) + 16 bits (FP8 û and v̂, FP16
// σ̂). The rank kept is the k with the largest saving net of cost (k = 0: no low rank), over the terms computed.

import type { LowRankFactors } from './r1svd';

/** Bits one rank-1 term of an m×n layer costs in the native format (spec §3). */
export const rankTermBits = (rows: number, cols: number): number => 8 * (rows + cols) + 16;

export interface RankScan {
  /** max_ij |W − W_k|, k = 0 … f.rank (W_k from the stored, rounded factors). */
  maxAbs: Float64Array;
  /** Fraction of ‖A‖²_F the first k terms capture, k = 0 … f.rank (A = W·diag(α)). */
  energy: Float64Array;
}

/**
 * The residual's largest magnitude and A's captured energy after each of f's terms, one pass of O(m·n) per term.
 * The terms are subtracted in A = W·diag(α) (where R1SVD factored them); W's residual is A's divided by α.
 */
export function scanRanks(W: ArrayLike<number>, f: LowRankFactors, alpha: ArrayLike<number>): RankScan {
  const { rows: m, cols: n, rank: r } = f;
  const RA = new Float64Array(m * n);
  const inv = Float64Array.from(alpha, (a) => 1 / a);
  let total = 0;
  for (let i = 0; i < m * n; i++) {
    RA[i] = W[i] * alpha[i % n];
    total += RA[i] * RA[i];
  }
  const maxAbs = new Float64Array(r + 1),
    energy = new Float64Array(r + 1);
  const measure = (k: number) => {
    let mx = 0,
      e = 0;
    for (let i = 0; i < m; i++) {
      const o = i * n;
      for (let j = 0; j < n; j++) {
        const v = RA[o + j];
        e += v * v;
        const a = Math.abs(v * inv[j]);
        if (a > mx) mx = a;
      }
    }
    maxAbs[k] = mx;
    energy[k] = total > 0 ? 1 - e / total : 0;
  };
  measure(0);
  for (let k = 0; k < r; k++) {
    const s = f.sigma[k];
    for (let i = 0; i < m; i++) {
      const us = f.U[i * r + k] * s,
        o = i * n,
        vo = k * n;
      for (let j = 0; j < n; j++) RA[o + j] -= us * f.V[vo + j];
    }
    measure(k + 1);
  }
  return { maxAbs, energy };
}

/** argmax_k log2(maxAbs[0] / maxAbs[k])·m·n − k·rankTermBits (the smallest k on ties; 0 when nothing pays; the first k that leaves nothing). */
export function chooseRank(maxAbs: ArrayLike<number>, rows: number, cols: number): number {
  const cost = rankTermBits(rows, cols);
  let best = 0,
    bestNet = 0;
  if (!(maxAbs[0] > 0)) return 0;
  for (let k = 1; k < maxAbs.length; k++) {
    if (!(maxAbs[k] > 0)) return k; // exactly rank k: nothing is left to quantize
    const net = Math.log2(maxAbs[0] / maxAbs[k]) * rows * cols - k * cost;
    if (net > bestNet) {
      bestNet = net;
      best = k;
    }
  }
  return best;
}
